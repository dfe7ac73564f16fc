"""Recovery's side of the pool: a tree's pooled files written from their packages.

Runs before the archive's restore into the same target: each package the tree needs is read
once, front to back, and the content of each regular member a pooled file names (of the
package's data archive, or of its control archive for dpkg's copies of its control files)
goes to that file's path in the set's list, never to a path of the package's own; a file
that is the package itself (a copy in apt's cache) gets every byte read. The file is made as the
archive's restore makes one (engine.writer.Applier: every directory opened with O_NOFOLLOW
from the target, the file created with O_EXCL|O_NOFOLLOW, owner, mode, attributes and times
set through its descriptor), its sha256 compared with the one the set recorded (the
catalog's) before its metadata is set; a file whose content differs is removed and the
restore stopped, naming the package. Links, devices and anything else in a package are never
made; a directory made on the way is 0700 until the archive's restore, which comes next,
gives it its saved metadata.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from resurgo.engine.errors import ArchiveDamaged
from resurgo.engine.names import components, escape, parent_of
from resurgo.engine.writer import Applier, pwrite_all
from resurgo.pool import deb
from resurgo.pool.lists import CONTROL, DATA, WHOLE, WHOLE_MEMBER, PackageRef, PooledFile
from resurgo.pool.needs import PoolNeeds

_CHUNK = 1 << 20
NAME = "the package pool"
# A file's place in its package: where (lists.DATA, CONTROL, WHOLE) and its path there.
Member = tuple[str, str]


@dataclass
class Extracted:
    files: int = 0
    data_bytes: int = 0
    warnings: list[str] = field(default_factory=list)


def _damaged(ref: PackageRef, why: str, paths: list[bytes] | None = None) -> ArchiveDamaged:
    return ArchiveDamaged(f"{ref.label()} of {NAME}", why,
                          [escape(p) for p in (paths or [])][:10])


class _Writer:
    def __init__(self, applier: Applier, ref: PackageRef) -> None:
        self.applier = applier
        self.ref = ref
        self.result = Extracted()

    def write(self, files: list[PooledFile], member: deb.Member, body: deb.Limited) -> None:
        if any(f.size != member.size for f in files):
            raise _damaged(self.ref, f"its {member.path} has {member.size} bytes, not the "
                           "size saved", [f.path for f in files])
        out = _Out(self, files)
        try:
            offset = 0
            while chunk := body.read(_CHUNK):
                out.write(chunk, offset)
                offset += len(chunk)
            out.finish(member.path)
        finally:
            out.close()


class _Out:
    """The files of a tree that get one content: made, written, checked, given metadata."""

    def __init__(self, writer: _Writer, files: list[PooledFile]) -> None:
        self.writer = writer
        self.files = files
        self.sha256 = hashlib.sha256()
        self.opened: list[tuple[PooledFile, int, int, bytes]] = []
        applier = writer.applier
        try:
            for f in files:
                dir_fd, _ = applier.directory(parent_of(f.path))
                name = components(f.path)[-1]
                fd = applier.create(dir_fd, name, 0o600)
                self.opened.append((f, fd, dir_fd, name))
        except BaseException:
            self.close()
            raise

    def write(self, chunk: bytes, offset: int) -> None:
        self.sha256.update(chunk)
        for _, fd, _, _ in self.opened:
            pwrite_all(fd, chunk, offset)

    def finish(self, what: str) -> None:
        """The content's sha256 checked (else the files removed, and refused), then each
        file's saved metadata set."""
        if any(self.sha256.hexdigest() != f.sha256 for f in self.files):
            self.discard()
            raise _damaged(self.writer.ref, f"its {what} is not the content saved "
                           "(its sha256 differs)", [f.path for f in self.files])
        result = self.writer.result
        for f, fd, _, _ in self.opened:
            self.writer.applier.metadata(fd, f.path, f.uid, f.gid, f.mode, f.xattrs,
                                         f.mtime_ns, f.mtime_ns, None)
            result.files += 1
            result.data_bytes += f.size

    def discard(self) -> None:
        for _, _, dir_fd, name in self.opened:
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=dir_fd)

    def close(self) -> None:
        for _, fd, _, _ in self.opened:
            os.close(fd)
        self.opened = []


class _Teeing:
    """A reader of the package that gives every byte read to the files that are it whole."""

    def __init__(self, src: deb.Readable, out: _Out) -> None:
        self._src = src
        self._out = out
        self._offset = 0

    def read(self, n: int) -> bytes:
        data = self._src.read(n)
        self._out.write(data, self._offset)
        self._offset += len(data)
        return data


def extract(target: Path, files: list[PooledFile], needs: PoolNeeds) -> Extracted:
    """Write the pooled files into the tree at ``target`` (see the module docstring)."""
    by_package: dict[str, dict[Member, list[PooledFile]]] = {}
    for f in files:
        if f.package not in needs.packages:
            raise ArchiveDamaged(NAME, f"a pooled file names a package the set does not list "
                                 f"({f.package})", [escape(f.path)])
        member = (f.source, os.fsdecode(f.member))
        by_package.setdefault(f.package, {}).setdefault(member, []).append(f)
    result = Extracted()
    target_fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        applier = Applier(target_fd, NAME)
        try:
            for sha256, members in sorted(by_package.items()):
                ref = needs.packages[sha256]
                writer = _Writer(applier, ref)
                _one(needs, ref, members, writer)
                result.files += writer.result.files
                result.data_bytes += writer.result.data_bytes
        finally:
            applier.dirs.close()
        result.warnings = list(applier.warnings)
    finally:
        os.close(target_fd)
    return result


def _one(needs: PoolNeeds, ref: PackageRef, members: dict[Member, list[PooledFile]],
         writer: _Writer) -> None:
    pending = dict(members)
    whole = pending.pop((WHOLE, os.fsdecode(WHOLE_MEMBER)), [])
    if any(f.size != ref.size for f in whole):
        raise _damaged(ref, "it has not the size saved", [f.path for f in whole])

    def on_control(c: deb.Control) -> None:
        if (c.package, c.version, c.architecture) != (ref.name, ref.version, ref.architecture):
            raise deb.DebError(f"it is {c.package} {c.version} ({c.architecture})")

    def taker(source: str) -> deb.OnFile:
        def on_file(m: deb.Member) -> Callable[[deb.Limited], None] | None:
            wanted = pending.pop((source, m.path), None)
            if wanted is None:
                return None
            return lambda body: writer.write(wanted, m, body)
        return on_file

    with contextlib.closing(needs.pool.open(ref)) as src:
        copies = _Out(writer, whole) if whole else None
        try:
            hashing = deb.Hashing(_Teeing(src, copies) if copies is not None else src)
            try:
                deb.read_deb(hashing, taker(DATA), on_control, taker(CONTROL))
                hashing.drain()
            except deb.DebError as e:
                if copies is not None:
                    copies.discard()
                raise _damaged(ref, f"not a package this restore reads: {e}") from None
            if hashing.sha256.hexdigest() != ref.sha256 or hashing.size != ref.size:
                if copies is not None:
                    copies.discard()
                raise _damaged(ref, "its sha256 is not the one the set recorded")
            if copies is not None:
                copies.finish("content")
        finally:
            if copies is not None:
                copies.close()
    if pending:
        missing = [f.path for fs in pending.values() for f in fs]
        raise _damaged(ref, f"it lacks {len(missing)} file(s) the set takes from it",
                       missing)
