"""A package's twin: the same .deb with its two tar members recompressed with zstd.

Debian compresses a package's files with xz, which decodes several times slower than zstd:
on two cores the xz of a minimal system's 169 packages took 11.4 s of CPU where the whole
recovery from a full set took 3.9 s, so a recovery from the pool could not be as fast as
one from a full set. A twin is the package's ar container with ``debian-binary`` as it is
and ``control.tar.zst`` and ``data.tar.zst`` (``control.tar``, ``data.tar`` when they
unpack to 256 KiB or less), whose tar streams are the package's byte for byte (dpkg reads
such a package too); a pooled recovery reads it instead of the package.
The pool keeps the package itself beside it: what the package lists vouch for, what apt's
cache holds copies of, and what a twin is made from again.

Nothing trusts a twin for being in the pool. A save that finds one reads it whole, as it
reads a package it adds: its sha256 must be the one its name begins, its control the
package's and each of its control files the package's, or the save makes its own from the
package (under its own name: a twin some set reads is never replaced); and the set takes
from it only the members read in it with the catalog's sha256 (a member of the package
that is a hard link in its tar, or one a planted twin changed, is archived instead). A new twin
passes the same check before it goes into the pool, and is read back. The set lists the
twin's own sha256 and size (packages.txt), which the recovery checks before any disk is
touched, as it checks a package's.

Making twins costs the save the xz decompression it spares the recovery, once per package
and pool (the next hosts' saves find them), and pool space: about 1.3 times the package.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from resurgo.engine.pipes import CompressedWriter
from resurgo.errors import ResurgoError
from resurgo.pool import deb
from resurgo.pool.lists import PackageRef
from resurgo.pool.needs import default_workers
from resurgo.pool.obtain import Candidate, Checked, Key, Obtained, check_package
from resurgo.pool.store import TWIN_DIGITS, TWIN_SUFFIX, PackagePool, twin_name

log = logging.getLogger("resurgo.pool")

# zstd's level for twins: the kernel's package (70 MB of xz) gives 98 MB at 3, 90 MB at 6
# and 86 MB at 9, made in 2.3, 5.2 and 9.3 s; each decodes in under half a second.
LEVEL = 6
# A member that unpacks to no more than this stays uncompressed in the twin: a recovery
# then reads it without starting a decompressor (each start costs a few milliseconds of
# CPU; a control member is a few KiB, and many packages' data a few dozen).
PLAIN_UP_TO = 256 << 10
_CHUNK = 1 << 20
_HEADER = 60
# What a package's members may unpack to before making its twin stops: far above any
# Debian package's ratio (a few times, tens for text), and far below what a crafted one
# (a package in the pool is checked by its name's sha256 and its control, not unpacked)
# could make the save decompress and write.
MAX_RATIO = 50
MAX_EXTRA = 64 << 20
_MEMBERS = ("control.tar", "data.tar")


class TwinError(Exception):
    """A package whose twin cannot be made (not a package this reader knows)."""


def _ar_header(name: str, size: int) -> bytes:
    return f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{size:<10}`\n".encode("ascii")


class _Bounded:
    """A member's decompressed reader that stops past ``limit`` bytes."""

    def __init__(self, reader: deb.Readable, limit: int, label: str) -> None:
        self._reader = reader
        self.left = limit
        self._label = label
        self._back = b""

    def unread(self, data: bytes) -> None:
        self._back = data + self._back
        self.left += len(data)

    def read(self, n: int) -> bytes:
        if self._back:
            data, self._back = self._back[:n], self._back[n:]
        else:
            data = self._reader.read(n)
        self.left -= len(data)
        if self.left < 0:
            raise TwinError(f"{self._label} unpacks to more than any package does")
        return data


def make(src: deb.Readable, size: int, out: BinaryIO) -> None:
    """Write into ``out`` (a seekable file, empty) the twin of the package of ``size``
    bytes read from ``src`` (see the module docstring). TwinError, or the compressor's
    error, when it cannot."""
    try:
        _make(src, size, out)
    except deb.DebError as e:
        raise TwinError(str(e)) from None


def _small_or_none(reader: _Bounded) -> bytes | None:
    """The whole member when it is small (else None, and nothing consumed: the bytes read
    so far are put back)."""
    parts: list[bytes] = []
    got = 0
    while got <= PLAIN_UP_TO:
        chunk = reader.read(PLAIN_UP_TO + 1 - got)
        if not chunk:
            return b"".join(parts)
        parts.append(chunk)
        got += len(chunk)
    reader.unread(b"".join(parts))
    return None


def _compress(reader: _Bounded, out: BinaryIO, name: str) -> None:
    writer = CompressedWriter(out, name, level=LEVEL)
    try:
        while chunk := reader.read(_CHUNK):
            writer.write(chunk)
        writer.close()
    except BaseException:
        writer.abort()
        raise


def _make(src: deb.Readable, size: int, out: BinaryIO) -> None:
    out.write(deb.AR_MAGIC)
    budget = MAX_RATIO * size + MAX_EXTRA
    seen: list[str] = []
    for name, body in deb.ar_members(src):
        base = next((b for b in _MEMBERS if name.startswith(b)), None)
        if name == "debian-binary" and not seen:
            if body.left > 16:
                raise TwinError("its debian-binary member is larger than any package's")
            data = deb.read_exact(body, body.left)
            out.write(_ar_header(name, len(data)) + data + b"\n" * (len(data) % 2))
        elif base is not None and base not in seen and seen:
            start = out.tell()
            out.write(b"\0" * _HEADER)
            opened = deb.decompressed(name, body)
            reader = _Bounded(opened.reader, budget, name)
            try:
                plain = _small_or_none(reader)
                if plain is not None:
                    out.write(plain)
                    member = base
                else:
                    _compress(reader, out, f"{base}.zst")
                    member = f"{base}.zst"
            finally:
                opened.close()
            budget = reader.left
            end = out.tell()
            length = end - start - _HEADER
            out.seek(start)
            out.write(_ar_header(member, length))
            out.seek(end)
            if length % 2:
                out.write(b"\n")
        else:
            raise TwinError(f"a member {name!r} where a package has none")
        seen.append(base or name)
    if seen != ["debian-binary", *_MEMBERS]:
        raise TwinError(f"members {', '.join(seen) or 'none'}, not a package's")


@dataclass
class Twins:
    """The twins a save found or made: (sha256, size) by the sha256 of their package."""

    of: dict[str, tuple[str, int]] = field(default_factory=dict)
    # The members each twin was read to give as the system has them (by package sha256).
    gives: dict[str, frozenset[str]] = field(default_factory=dict)
    added: list[tuple[str, int]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _acceptable(checked: Checked, control: dict[str, str]) -> str | None:
    """Why a twin read whole is not its package's (None when it is). What it gives is
    what it was read to give (``checked.good``): the set takes no other file from it."""
    if checked.control != control:
        return "its control files are not the package's"
    if not checked.good:
        return "it gives none of the files as the system has them"
    return None


def _read(path: Path, key: Key, wanted: dict[str, Candidate]) -> Checked:
    with open(path, "rb") as f:
        return check_package(f, key, wanted, data=True)


def _found(pool: PackagePool, name: str, key: Key, control: dict[str, str],
           wanted: dict[str, Candidate]) -> Checked | str:
    """A twin the pool holds, read whole: what it gives, or why it is none."""
    try:
        with contextlib.closing(pool.open_name(name)) as src:
            checked = check_package(src, key, wanted, data=True)
    except (deb.DebError, ResurgoError, OSError) as e:
        return f"it cannot be read ({e})"
    if not name.endswith(f".{checked.sha256[:TWIN_DIGITS]}{TWIN_SUFFIX}"):
        return "its content is not the one its name says"
    return _acceptable(checked, control) or checked


def _one(pool: PackagePool, ref: PackageRef, control: dict[str, str],
         wanted: dict[str, Candidate], held: dict[str, int], work: Path
         ) -> tuple[str, str, Checked | None]:
    """("found" | "made", "", the twin read whole); ("", why not, None) without one."""
    key: Key = (ref.name, ref.version, ref.architecture)
    mine = Path(tempfile.mkdtemp(dir=work))
    try:
        twin = mine / "twin"
        bad: set[str] = set()
        for name in sorted(held):
            found = _found(pool, name, key, control, wanted)
            if not isinstance(found, str):
                return "found", "", found
            # Left where it is (a prune removes what no set reads): a set may read it,
            # if a read failed that was not its fault.
            log.warning("the pool's %s is no twin of %s: %s", name, ref.label(), found)
            bad.add(name)
        with contextlib.closing(pool.open(ref.package())) as src, open(twin, "wb") as out:
            package = deb.Hashing(src)
            make(package, ref.size, out)
            package.drain()
        if package.sha256.hexdigest() != ref.sha256:
            return "", "the package changed in the pool while its twin was made", None
        checked = _read(twin, key, wanted)
        problem = _acceptable(checked, control)
        if problem is not None:
            return "", problem, None
        made = ref.with_twin(checked.sha256, checked.size)
        if twin_name(made) in bad:
            # A damaged copy of this very twin: replaced (an SFTP server renames onto no
            # existing name).
            pool.remove(twin_name(made))
        pool.add_file(made, twin)
        return "made", "", checked
    except TwinError as e:
        return "", str(e), None
    except OSError as e:
        # The spool (/var/tmp) full or unwritable: the recovery reads the package instead.
        return "", f"it could not be made here: {e.strerror or e}", None
    finally:
        shutil.rmtree(mine, ignore_errors=True)


def ensure(pool: PackagePool, obtained: Obtained,
           wanted: dict[Key, dict[str, Candidate]], skip: frozenset[Key] = frozenset()
           ) -> Twins:
    """The twin of every package the save has (but those of ``skip``), found in the pool
    (and checked) or made and added to it. A package whose twin cannot be made is read as
    it is, with a note."""
    out = Twins()
    held = pool.twins()
    jobs = sorted(((k, v) for k, v in obtained.packages.items() if k not in skip),
                  key=lambda kv: (-kv[1][0].size, kv[0]))
    # A local directory is read and written by several threads at once; an SFTP or S3
    # connection carries one stream of requests: twins are then made one at a time.
    workers = default_workers() if pool.local else 1
    # Each twin is made in a file first (an ar member's header, before it, holds its
    # size), as large as its package recompressed: on disk, not in a RAM-backed /tmp.
    spool = "/var/tmp" if os.path.isdir("/var/tmp") else None
    with tempfile.TemporaryDirectory(prefix="resurgo-twins-", dir=spool) as tmp:
        os.chmod(tmp, 0o700)
        work = Path(tmp)

        def one(item: tuple[Key, tuple[PackageRef, frozenset[str]]]) -> None:
            key, (ref, _) = item
            how, why, checked = _one(pool, ref, obtained.controls.get(key, {}),
                                     wanted.get(key, {}), held.get(ref.sha256, {}), work)
            if checked is None:
                text = f"{ref.label()}: no twin ({why}): recovery reads the package"
                log.info("%s", text)
                out.notes.append(text)
                return
            out.of[ref.sha256] = (checked.sha256, checked.size)
            out.gives[ref.sha256] = frozenset(checked.good)
            if how == "made":
                out.added.append((checked.sha256, checked.size))

        with ThreadPoolExecutor(max(1, workers), thread_name_prefix="twin") as threads:
            for _ in threads.map(one, jobs):
                pass
    return out
