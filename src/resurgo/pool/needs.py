"""What a package-aware set needs from its medium's pool, checked before any disk is touched.

The set's packages.txt (read through the set's index: its digest, and its signature when
signers are trusted) lists each package by sha256 and size, and the same of its twin where
the recovery reads that instead (resurgo.pool.twins). ``check`` finds every file the
recovery reads in the pool with its size, and with ``read`` reads each whole and compares
its sha256:
a package damaged or missing is named, and the recovery refused (exit 5), before anything
is written. A tree's pooled list is read whole here too (it is small: a line per file).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from resurgo.engine.pipes import DecompressedReader
from resurgo.engine.source import MAX_LINE, Source
from resurgo.errors import Damaged, ResurgoError
from resurgo.media import Medium, SetReader
from resurgo.pool import lists
from resurgo.pool.store import PackagePool, file_name

_CHUNK = 1 << 20
# Threads reading packages at once (each holds a chunk, and in an extraction a
# decompressor): the recovery machine's cores, a few at most.
MAX_WORKERS = 4


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


def default_workers() -> int:
    """Threads reading the pool at once: the machine's cores, a few at most."""
    return max(1, min(MAX_WORKERS, os.cpu_count() or 1))


def _sha256(pool: PackagePool, ref: lists.PackageRef,
            lock: threading.Lock | contextlib.nullcontext[None]) -> str:
    """The package's sha256, read whole (the medium read under ``lock``, the hashing
    beside the other threads': hashlib lets go of the GIL)."""
    h = hashlib.sha256()
    with lock:
        src = pool.open(ref)
    try:
        while True:
            with lock:
                chunk = src.read(_CHUNK)
            if not chunk:
                return h.hexdigest()
            h.update(chunk)
    finally:
        with lock:
            src.close()


def check(needs: PoolNeeds, *, read: bool) -> None:
    """Every package there with its size; with ``read``, its content's sha256 as well
    (packages read by a few threads at once; an SFTP medium one request at a time).
    Damaged (exit 5) naming each that is not."""
    held = needs.pool.file_names()
    problems: list[str] = []
    to_read: list[lists.PackageRef] = []
    for ref in sorted(needs.packages.values()):
        name = file_name(ref)
        size = held.get(name)
        if size is None:
            problems.append(f"{ref.label()} is missing ({needs.pool.where(ref)})")
        elif size != ref.stored_size:
            problems.append(f"{ref.label()} has {size} bytes, the set recorded "
                            f"{ref.stored_size} ({needs.pool.where(ref)})")
        elif read:
            to_read.append(ref)
    lock: threading.Lock | contextlib.nullcontext[None] = (
        contextlib.nullcontext() if needs.pool.local else threading.Lock())

    def one(ref: lists.PackageRef) -> str | None:
        try:
            actual = _sha256(needs.pool, ref, lock)
        except ResurgoError as e:
            return f"{ref.label()} cannot be read: {e.message}"
        if actual != ref.stored_sha256:
            return (f"{ref.label()} is damaged: its sha256 is not the one the set recorded "
                    f"({needs.pool.where(ref)})")
        return None

    if to_read:
        with ThreadPoolExecutor(min(default_workers(), len(to_read)),
                                thread_name_prefix="pool check") as threads:
            problems += [p for p in threads.map(one, to_read) if p is not None]
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
