"""Secret configuration files in an encrypted recovery set: sealed in the description,
their contents encrypted beside it in ``secrets.age``.

The description stays in clear in every set (``plan`` reads it without a key, and the
rescue image, which must boot, carries it). So when a set is encrypted, ``seal`` takes
the content and digest out of each secret record (model.ConfigFile.secret), and the
contents go into one JSON document, compressed and encrypted with age to the set's
recipients exactly as the archives are (engine.pipes):

    {"secrets": 1, "description_sha256": "<sha256 of the sealed description.toml>",
     "files": {"<config file id>": {"content": "...", "sha256": "..."}, ...}}

``unseal`` puts them back for recover and verify, which have the identity: the document
must name the very description it was written with, and hold exactly the sealed files,
each matching its digest. No digest of a secret is left in clear: a digest of a short key
would let anyone who reads the description try passwords against it.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path

from resurgo.engine.pipes import CompressedWriter, DecompressedReader
from resurgo.errors import OperationFailed
from resurgo.media import SetReader, SetWriter
from resurgo.model import ConfigFile, Description, Encoding
from resurgo.probe.system import MAX_CONFIG_SIZE
from resurgo.recovery import setfiles

VERSION = 1
# What one sealed file may take in the document: describe captures files of at most
# MAX_CONFIG_SIZE bytes, and JSON writes a control character in 6 (\u0001). A document
# longer than its files can make is not ours: it is refused before it fills the memory.
PER_FILE = 6 * MAX_CONFIG_SIZE + 1024
MAX_BYTES = 256 << 20

Sealed = dict[str, dict[str, str]]
# A JSON string (encode writes ASCII: json.dumps escapes the rest).
_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"')


def in_clear(desc: Description) -> list[ConfigFile]:
    """The secret files whose content the description holds."""
    return [cf for cf in desc.config_files if cf.secret and not cf.sealed]


def sealed(desc: Description) -> list[ConfigFile]:
    return [cf for cf in desc.config_files if cf.sealed]


def seal(desc: Description) -> tuple[Description, Sealed]:
    """The description without the content and digest of its secret files, and those."""
    files: Sealed = {}
    records: list[ConfigFile] = []
    for cf in desc.config_files:
        if cf.secret and cf.content is not None:
            files[cf.id] = {"content": cf.content}
            if cf.sha256 is not None:
                files[cf.id]["sha256"] = cf.sha256
            cf = dataclasses.replace(cf, content=None, sha256=None)
        records.append(cf)
    return dataclasses.replace(desc, config_files=tuple(records)), files


def encode(files: Sealed, description_sha256: str) -> bytes:
    doc = {"secrets": VERSION, "description_sha256": description_sha256, "files": files}
    return json.dumps(doc, sort_keys=True).encode()


def _refuse(name: str, why: str) -> OperationFailed:
    return OperationFailed(f"{name} is not the secrets file of this set: {why}",
                           "the set was changed or damaged: use another copy or set")


def decode(raw: bytes, name: str, files: int) -> tuple[str, Sealed]:
    """(description_sha256, files) of a secrets document meant to hold ``files`` sealed
    files; refuses any other shape."""
    # Outside its strings the document is a few bytes a file. JSON of small containers
    # takes some 26 times its size in memory: a document with more structure than its
    # files make is refused before it is parsed.
    outside = _STRINGS.sub(b"", raw)
    if len(outside) > 256 + 64 * files:
        raise _refuse(name, "it has more structure than a secrets document")
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        raise _refuse(name, "not a JSON document") from None
    if not isinstance(doc, dict) or doc.get("secrets") != VERSION:
        raise _refuse(name, f"no version {VERSION} secrets document")
    digest, listed = doc.get("description_sha256"), doc.get("files")
    if not isinstance(digest, str) or not isinstance(listed, dict):
        raise _refuse(name, "it lacks description_sha256 or files")
    out: Sealed = {}
    for cid, entry in listed.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("content"), str) or any(
            not isinstance(v, str) for v in entry.values()
        ) or set(entry) - {"content", "sha256"}:
            raise _refuse(name, f"its entry {cid!r} is not a content with its digest")
        out[cid] = entry
    return digest, out


def unseal(desc: Description, description_sha256: str, raw: bytes, name: str) -> Description:
    """The description with its sealed files' contents and digests back from raw."""
    wanted = {cf.id for cf in sealed(desc)}
    bound, files = decode(raw, name, len(wanted))
    if bound != description_sha256:
        raise _refuse(name, "it was written with another description")
    if set(files) != wanted:
        odd = sorted(set(files) ^ wanted)
        raise _refuse(name, f"it does not hold exactly the sealed files ({', '.join(odd)})")
    records = []
    for cf in desc.config_files:
        entry = files.get(cf.id) if cf.sealed else None
        if entry is not None:
            cf = dataclasses.replace(cf, content=entry["content"], sha256=entry.get("sha256"))
            data = content_bytes(cf)
            if data is None:
                raise _refuse(name, f"the content of {cf.path} is not valid base64 or UTF-8")
            if cf.sha256 is not None and cf.sha256 != hashlib.sha256(data).hexdigest():
                raise _refuse(name, f"the content of {cf.path} does not match its digest")
        records.append(cf)
    return dataclasses.replace(desc, config_files=tuple(records))


def content_bytes(cf: ConfigFile) -> bytes | None:
    """The file's bytes; None when its base64 is not valid."""
    assert cf.content is not None
    if cf.encoding != Encoding.BASE64:
        try:
            return cf.content.encode()
        except UnicodeEncodeError:  # a lone surrogate: no file's content
            return None
    try:
        return base64.b64decode(cf.content, validate=True)
    except (binascii.Error, ValueError):
        return None


# ---------------------------------------------------------------- the set's file


def write(w: SetWriter, files: Sealed, description_sha256: str,
          recipients: Sequence[str]) -> None:
    """secrets.age into the set being written: compressed and encrypted like the archives."""
    assert recipients, "secrets are written only into encrypted sets"
    with w.create(setfiles.SECRETS) as sink:
        out = CompressedWriter(sink, setfiles.SECRETS, recipients=recipients)
        try:
            out.write(encode(files, description_sha256))
        except BaseException:
            out.abort()
            raise
        out.close()


def read(reader: SetReader, identity: Path, files: int) -> bytes:
    """The plain secrets document of the set (holding ``files`` sealed files), read
    through age with the identity."""
    name = f"{setfiles.SECRETS} of set {reader.id}"
    limit = min(MAX_BYTES, 4096 + files * PER_FILE)
    if reader.index.file(setfiles.SECRETS) is None:
        raise OperationFailed(f"recovery set {reader.where} has sealed secret files but no "
                              f"{setfiles.SECRETS}", "the set is incomplete: use another set")
    with reader.open(setfiles.SECRETS) as source:
        plain = DecompressedReader(source, name, identity=identity)
        try:
            raw = plain.read(limit + 1)
            if len(raw) > limit:
                raise _refuse(name, f"it holds more than the {limit} bytes that "
                              f"{files} sealed file(s) can make")
            plain.finish()
        except OperationFailed:
            raise
        except OSError as e:
            raise plain.failure(f"reading it failed: {e}") from None
        finally:
            plain.close()
    return raw


def merged(reader: SetReader, desc: Description, description_sha256: str,
           identity: Path | None, warnings: list[str]) -> Description:
    """The description with its sealed files back when the identity is given; else as it
    is, with a warning that says which files are sealed."""
    closed = sealed(desc)
    if not closed:
        return desc
    if identity is None:
        warnings.append(
            f"{len(closed)} secret configuration file(s) are sealed (encrypted in "
            f"{setfiles.SECRETS}): {', '.join(cf.path for cf in closed)}; what finalize "
            "changes in them is not shown, and the plan's hash may differ from the one recover "
            "--identity computes: give --identity to read them")
        return desc
    raw = read(reader, identity, len(closed))
    return unseal(desc, description_sha256, raw, f"{setfiles.SECRETS} of set {reader.id}")
