"""What a package-aware set needs from its medium's pool, checked before any disk is touched.

The set's packages.txt (read through the set's index: its digest, and its signature when
signers are trusted) lists each package by sha256 and size. ``check`` finds every one of
them in the pool with its size, and with ``read`` reads each whole and compares its sha256:
a package damaged or missing is named, and the recovery refused (exit 5), before anything
is written. A tree's pooled list is read whole here too (it is small: a line per file).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from resurgo.engine.pipes import DecompressedReader
from resurgo.engine.source import MAX_LINE, Source
from resurgo.errors import Damaged, ResurgoError
from resurgo.media import Medium, SetReader
from resurgo.pool import lists
from resurgo.pool.store import PackagePool, file_name

_CHUNK = 1 << 20


@dataclass(frozen=True)
class PoolNeeds:
    pool: PackagePool
    # The packages the set needs, by sha256.
    packages: dict[str, lists.PackageRef]


def needs_of(medium: Medium, reader: SetReader) -> PoolNeeds | None:
    """The packages the set needs from the pool; None for a set that needs none."""
    if reader.index.file(lists.PACKAGES_NAME) is None:
        return None
    try:
        refs = lists.decode_packages(reader.read_bytes(lists.PACKAGES_NAME))
    except lists.ListError as e:
        raise Damaged(f"{lists.PACKAGES_NAME} of set {reader.where}: {e}",
                      "use another set") from None
    try:
        pool = PackagePool(medium)
    except ResurgoError as e:
        raise Damaged(f"set {reader.where} needs a package pool: {e.message}") from None
    return PoolNeeds(pool, {r.sha256: r for r in refs})


def check(needs: PoolNeeds, *, read: bool) -> None:
    """Every package there with its size; with ``read``, its content's sha256 as well.
    Damaged (exit 5) naming each that is not."""
    held = needs.pool.file_names()
    problems: list[str] = []
    for ref in sorted(needs.packages.values()):
        name = file_name(ref)
        size = held.get(name)
        if size is None:
            problems.append(f"{ref.label()} is missing ({needs.pool.where(ref)})")
        elif size != ref.size:
            problems.append(f"{ref.label()} has {size} bytes, the set recorded {ref.size} "
                            f"({needs.pool.where(ref)})")
        elif read:
            h = hashlib.sha256()
            try:
                with contextlib.closing(needs.pool.open(ref)) as src:
                    while chunk := src.read(_CHUNK):
                        h.update(chunk)
            except ResurgoError as e:
                problems.append(f"{ref.label()} cannot be read: {e.message}")
                continue
            if h.hexdigest() != ref.sha256:
                problems.append(f"{ref.label()} is damaged: its sha256 is not the one the "
                                f"set recorded ({needs.pool.where(ref)})")
    if problems:
        shown = "; ".join(problems[:10]) + (
            f"; and {len(problems) - 10} more" if len(problems) > 10 else "")
        raise Damaged(f"the package pool of {needs.pool.url} does not hold what the set "
                      f"needs: {shown}",
                      "nothing was written: save the system again to refill the pool, or "
                      "recover from a copy of the medium")


def _lines(plain: DecompressedReader) -> Iterator[bytes]:
    buffered = b""
    while chunk := plain.read(1 << 16):
        buffered += chunk
        parts = buffered.split(b"\n")
        buffered = parts.pop()
        if len(buffered) > max(MAX_LINE, lists.MAX_LINE):
            raise lists.ListError("a line longer than any pooled file's")
        for line in parts:
            yield line + b"\n"
    if buffered:
        raise lists.ListError("the list ends inside a line (truncated)")


def read_pooled(source: Source, identity: Path | str | None) -> list[lists.PooledFile]:
    """A tree's pooled list, whole and checked (Damaged, or the decryptor's error)."""
    stream = source.open()
    plain: DecompressedReader | None = None
    try:
        plain = DecompressedReader(stream, source.name, identity=identity)
        files = list(lists.read_pooled(_lines(plain)))
        plain.finish()
        return files
    except lists.ListError as e:
        assert plain is not None
        raise plain.failure(f"its pooled list is unreadable: {e}") from None
    finally:
        if plain is not None:
            plain.close()
        with contextlib.suppress(OSError):
            stream.close()
