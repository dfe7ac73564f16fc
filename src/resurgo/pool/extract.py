"""Recovery's side of the pool: a tree's pooled files written from their packages.

Runs before the archive's restore into the same target: each package the tree needs is read
once, front to back, and the content of each regular member a pooled file names goes to that
file's path in the set's list, never to a path of the package's own. The file is made as the
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
from resurgo.pool.lists import PackageRef, PooledFile
from resurgo.pool.needs import PoolNeeds

_CHUNK = 1 << 20
NAME = "the package pool"


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
        opened: list[tuple[PooledFile, int, int, bytes]] = []
        try:
            for f in files:
                dir_fd, _ = self.applier.directory(parent_of(f.path))
                name = components(f.path)[-1]
                fd = self.applier.create(dir_fd, name, 0o600)
                opened.append((f, fd, dir_fd, name))
            h = hashlib.sha256()
            offset = 0
            while chunk := body.read(_CHUNK):
                h.update(chunk)
                for _, fd, _, _ in opened:
                    pwrite_all(fd, chunk, offset)
                offset += len(chunk)
            if any(h.hexdigest() != f.sha256 for f in files):
                for _, _, dir_fd, name in opened:
                    with contextlib.suppress(OSError):
                        os.unlink(name, dir_fd=dir_fd)
                raise _damaged(self.ref, f"its {member.path} is not the content saved "
                               "(its sha256 differs)", [f.path for f in files])
            for f, fd, _, _ in opened:
                self.applier.metadata(fd, f.path, f.uid, f.gid, f.mode, f.xattrs,
                                      f.mtime_ns, f.mtime_ns, None)
                self.result.files += 1
                self.result.data_bytes += f.size
        finally:
            for _, fd, _, _ in opened:
                os.close(fd)


def extract(target: Path, files: list[PooledFile], needs: PoolNeeds) -> Extracted:
    """Write the pooled files into the tree at ``target`` (see the module docstring)."""
    by_package: dict[str, dict[str, list[PooledFile]]] = {}
    for f in files:
        if f.package not in needs.packages:
            raise ArchiveDamaged(NAME, f"a pooled file names a package the set does not list "
                                 f"({f.package})", [escape(f.path)])
        member = os.fsdecode(f.member)
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


def _one(needs: PoolNeeds, ref: PackageRef, members: dict[str, list[PooledFile]],
         writer: _Writer) -> None:
    pending = dict(members)

    def on_control(c: deb.Control) -> None:
        if (c.package, c.version, c.architecture) != (ref.name, ref.version, ref.architecture):
            raise deb.DebError(f"it is {c.package} {c.version} ({c.architecture})")

    def on_file(m: deb.Member) -> Callable[[deb.Limited], None] | None:
        wanted = pending.pop(m.path, None)
        if wanted is None:
            return None
        return lambda body: writer.write(wanted, m, body)

    with contextlib.closing(needs.pool.open(ref)) as src:
        hashing = deb.Hashing(src)
        try:
            deb.read_deb(hashing, on_file, on_control)
            hashing.drain()
        except deb.DebError as e:
            raise _damaged(ref, f"not a package this restore reads: {e}") from None
    if hashing.sha256.hexdigest() != ref.sha256 or hashing.size != ref.size:
        raise _damaged(ref, "its sha256 is not the one the set recorded")
    if pending:
        missing = [f.path for fs in pending.values() for f in fs]
        raise _damaged(ref, f"it lacks {len(missing)} file(s) the set takes from it",
                       missing)
