"""The index of a recovery set (``set.json``): what a set holds, written last.

A set exists on a medium only once its index is there: every medium writes the
index as the final, atomic step of a save, so an index that can be read names
files that were completely written. The index lists every file with its size
and BLAKE3 digest (resurgo.digest, computed while the file was streamed), and the caller's metadata:
the kind of the set (full or incremental), its parent, the host it describes.

Format (JSON, UTF-8, keys sorted)::

    {
      "format": "resurgo-set",
      "version": 2,
      "id": "20261125T233000Z-ab12",
      "created": "2026-11-25T23:30:00.123456Z",
      "kind": "full",                      # or "incremental"
      "parent": null,                      # the set id an incremental builds on
      "host": "db1",                       # optional
      "labels": {"resurgo": "0.1.0"},      # optional free-form strings
      "files": [{"name": "description.toml", "size": 1234, "blake3": "..."}, ...]
    }

Version policy: a reader refuses a version newer than the one it knows; new
optional keys may be added without a version change and are ignored by older
readers. Version 1 had sha256 digests; it is not read (its archives are version 1 too).
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from resurgo import digest
from resurgo.errors import BadInput, Damaged, OperationFailed
from resurgo.signing import SIGNATURE_NAME

FORMAT = "resurgo-set"
VERSION = 2
INDEX_NAME = "set.json"
# The set's bootable rescue image, when it has one (written last, before the index).
RESCUE = "rescue.iso"

# Set ids sort by time: a UTC timestamp, then a short random part so two saves
# in one second do not collide.
_SET_ID = re.compile(r"^[0-9]{8}T[0-9]{6}Z-[0-9a-z]{4,16}$")
# File names inside a set: relative, a few safe characters, no dot files, no "..".
_NAME_PART = re.compile(r"^[A-Za-z0-9_+-][A-Za-z0-9._+-]{0,127}$")
_DIGEST = re.compile(r"^[0-9a-f]{64}$")


class SetKind(StrEnum):
    FULL = "full"
    INCREMENTAL = "incremental"


@dataclass(frozen=True)
class SetMeta:
    """What the caller says about a set when it begins to write it."""

    kind: SetKind = SetKind.FULL
    parent: str | None = None
    host: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind is SetKind.INCREMENTAL and self.parent is None:
            raise BadInput("an incremental recovery set needs the id of its parent set")
        if self.kind is SetKind.FULL and self.parent is not None:
            raise BadInput("a full recovery set has no parent set")
        if self.parent is not None:
            check_set_id(self.parent)


@dataclass(frozen=True)
class FileEntry:
    name: str
    size: int
    digest: str  # hex BLAKE3 of the stored bytes


@dataclass(frozen=True)
class SetIndex:
    id: str
    created: datetime
    meta: SetMeta
    files: tuple[FileEntry, ...]

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    def file(self, name: str) -> FileEntry | None:
        for f in self.files:
            if f.name == name:
                return f
        return None


def new_set_id(now: datetime | None = None) -> str:
    """A fresh set id: UTC time of the save and 4 random hex digits."""
    when = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{when:%Y%m%dT%H%M%SZ}-{secrets.token_hex(2)}"


def is_set_id(text: str) -> bool:
    return _SET_ID.match(text) is not None


def check_set_id(text: str) -> str:
    if not is_set_id(text):
        raise BadInput(
            f"{text!r} is not a recovery set id",
            "set ids look like 20261125T233000Z-ab12 (see the list of sets on the medium)",
        )
    return text


def check_file_name(name: str) -> str:
    """A file name inside a set: 'description.toml', 'archives/root.tar.zst'."""
    parts = name.split("/")
    reserved = name in (INDEX_NAME, SIGNATURE_NAME)
    if reserved or len(parts) > 4 or not all(_NAME_PART.match(p) for p in parts):
        raise BadInput(
            f"{name!r} cannot be the name of a file in a recovery set",
            "use relative names of letters, digits and . _ + - (e.g. archives/root.tar.zst)",
        )
    return name


def _timestamp(when: datetime) -> str:
    # Microseconds: sets saved within one second still sort by age.
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_timestamp(text: str) -> datetime:
    for fmt in ("%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%SZ"):
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    raise ValueError(f"bad time {text!r}")


def encode(index: SetIndex) -> bytes:
    doc: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "id": index.id,
        "created": _timestamp(index.created),
        "kind": str(index.meta.kind),
        "parent": index.meta.parent,
        "files": [{"name": f.name, "size": f.size, "blake3": f.digest} for f in index.files],
    }
    if index.meta.host is not None:
        doc["host"] = index.meta.host
    if index.meta.labels:
        doc["labels"] = dict(index.meta.labels)
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()


def decode(data: bytes, where: str) -> SetIndex:
    """Parse an index; ``where`` names it in error messages (medium and set)."""

    def bad(why: str) -> Damaged:
        return Damaged(
            f"the index of recovery set {where} is unreadable: {why}",
            "the set is damaged: use another set, or delete this one",
        )

    try:
        doc = json.loads(data.decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise bad(str(e)) from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise bad(f"not a {FORMAT} document")
    version = doc.get("version")
    if not isinstance(version, int) or version < 1:
        raise bad("no version")
    if version > VERSION:
        raise OperationFailed(
            f"recovery set {where} was written in index version {version}, "
            f"newer than this resurgo reads ({VERSION})",
            "use a newer resurgo to read it",
        )
    if version < VERSION:
        raise OperationFailed(
            f"recovery set {where} was written in index version {version} by an earlier "
            f"resurgo (sha256 digests); this one reads version {VERSION}",
            "recover it with the resurgo that saved it, then save a new set",
        )
    try:
        set_id = _str(doc, "id")
        if not is_set_id(set_id):
            raise ValueError(f"bad set id {set_id!r}")
        created = _parse_timestamp(_str(doc, "created"))
        parent = doc.get("parent")
        host = doc.get("host")
        labels = doc.get("labels", {})
        if parent is not None and not isinstance(parent, str):
            raise ValueError("parent is not a string")
        if host is not None and not _shown(host, 255):
            raise ValueError("host is not a host name")
        if not isinstance(labels, dict) or len(labels) > 64 or not all(
            _shown(k, 64) and _shown(v, 4096) for k, v in labels.items()
        ):
            raise ValueError("labels are not strings (short, printable)")
        meta = SetMeta(SetKind(_str(doc, "kind")), parent, host, labels)
        files = _files(doc.get("files"))
    except (ValueError, KeyError, TypeError, BadInput) as e:
        raise bad(str(e)) from None
    return SetIndex(set_id, created, meta, files)


def _shown(value: Any, most: int) -> bool:
    """A string fit to be shown (list, the rescue's console): printable, no escape
    sequence or line break that could forge or hide what an administrator reads."""
    return isinstance(value, str) and 0 < len(value) <= most and value.isprintable()


def _str(doc: Mapping[str, Any], key: str) -> str:
    value = doc[key]
    if not isinstance(value, str):
        raise ValueError(f"{key} is not a string")
    return value


def _files(raw: Any) -> tuple[FileEntry, ...]:
    if not isinstance(raw, list):
        raise ValueError("files is not a list")
    out: list[FileEntry] = []
    seen: set[str] = set()
    for item in raw:
        if not isinstance(item, dict):
            raise ValueError("a file entry is not a table")
        name = check_file_name(_str(item, "name"))
        size = item.get("size")
        digest = _str(item, "blake3")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ValueError(f"bad size for {name}")
        if not _DIGEST.match(digest):
            raise ValueError(f"bad blake3 digest for {name}")
        if name in seen:
            raise ValueError(f"{name} is listed twice")
        seen.add(name)
        out.append(FileEntry(name, size, digest))
    return tuple(out)


def content_pin(set_id: str, files: Iterable[FileEntry], leave_out: str) -> str:
    """A digest of a set's id and every file's name, size and digest but ``leave_out``'s.

    The rescue image that save puts into a set cannot hold the digest of the index that
    lists it, so it holds this: the set's id and all its other files, which the rescue
    compares with a candidate set's index (every file of the set but the image itself).
    """
    lines = [f"resurgo-set-pin 1 {set_id}\n"]
    lines += [f"{f.name} {f.size} {f.digest}\n"
              for f in sorted(files, key=lambda f: f.name) if f.name != leave_out]
    return digest.hex_of("".join(lines).encode())


def build(set_id: str, created: datetime, meta: SetMeta, files: Sequence[FileEntry]) -> SetIndex:
    return SetIndex(set_id, created, meta, tuple(sorted(files, key=lambda f: f.name)))
