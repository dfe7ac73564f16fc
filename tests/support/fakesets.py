"""Sets on a directory medium made in a moment: the example description, a small fake
archive and manifest per tree (their bytes are not an archive: for the checks that read
a set's files, sizes and digests, not its data)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from resurgo import signing
from resurgo.media import Medium, SetKind, SetMeta
from resurgo.media.directory import directory_backend
from resurgo.restoreunits import units
from tests.support.examples import example, example_text

HOST = "web1"


def save(medium_dir: Path, *, parent: str | None = None, host: str = HOST,
         rescue: bool = True, sign_key: Path | None = None,
         rescue_image: bytes = b"\0" * 4096, labels: dict[str, str] | None = None) -> str:
    """A set with the example description and a (fake) archive and manifest per tree."""
    medium = Medium(directory_backend(str(medium_dir)))
    text = example_text().encode()
    meta = SetMeta(SetKind.INCREMENTAL if parent else SetKind.FULL, parent, host,
                   labels or {})
    key = signing.SignKey.load(sign_key) if sign_key else None
    with medium.begin_set(meta, sign_key=key) as w:
        w.write_bytes("description.toml", text)
        w.write_bytes("description.toml.sha256",
                      f"{hashlib.sha256(text).hexdigest()}  description.toml\n".encode())
        for u in units(example()):
            w.write_bytes(u.archive_name, b"archive of " + u.key.encode() * 100)
            w.write_bytes(u.manifest_name, b"manifest of " + u.key.encode())
        if rescue:
            w.write_bytes("rescue.iso", rescue_image)
        return w.commit().id
