"""Writing a package's pooled files: in a worker process of the extraction, or in-process.

``write_package`` reads one package front to back, up to the last member the set takes from
it, and writes the content of each regular member a pooled file names (of the package's
data archive, or of its control archive for dpkg's copies of its control files) to that
file's path in the set's list, never to a path of the package's own; a file that is the
package itself (a copy in apt's cache) gets every byte read, so such a package is read to
its end. The file is made as the archive's restore makes one (engine.writer.Applier: every
directory opened with O_NOFOLLOW from the target, the file created with O_EXCL|O_NOFOLLOW,
owner, mode, attributes and times set through its descriptor), its digest (BLAKE3) compared with the
one the set recorded before its metadata is set; a file whose content
differs is removed and the restore stopped, naming the package. Links, devices and anything
else in a package are never made; a directory made on the way is 0700 until the archive's
restore gives it its saved metadata.

A worker process (``main``, started by resurgo.pool.extract like the restore's writers:
isolated, opening the restore's target through /proc) is handed packages one after the
other on its standard input: a frame with the package and the files it gives (pickled by
the restoring process, which started this one), then the package's bytes in frames, then an
empty frame. It answers each package with a JSON line, as soon as it has written its last
file (its reader then stops sending the rest) or met a problem.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import struct
import sys
from collections.abc import Callable

from resurgo import digest as content_digest
from resurgo.engine.errors import ArchiveDamaged, ArchiveError, RestoreFailed
from resurgo.engine.names import components, escape, parent_of
from resurgo.engine.writer import Applier, error_reply, pwrite_all
from resurgo.pool import deb
from resurgo.pool.lists import CONTROL, DATA, WHOLE, WHOLE_MEMBER, PackageRef, PooledFile

CHUNK = 1 << 20
NAME = "the package pool"
FRAME = struct.Struct("<I")
# A job's frame: a package and its files' records (a line each, bounded like the list's).
MAX_JOB = 1 << 30

# A file's place in its package: where (lists.DATA, CONTROL, WHOLE) and its path there.
Member = tuple[str, str]
Members = dict[Member, list[PooledFile]]


class Stopped(Exception):
    """The extraction is being stopped (another package failed): this one stops too."""


class _AllTaken(Exception):
    """The package's last member the set takes is written: the rest is not read."""


def archive_of(ref: PackageRef) -> str:
    return f"{ref.label()} of {NAME}"


def _damaged(ref: PackageRef, why: str, paths: list[bytes] | None = None) -> ArchiveDamaged:
    return ArchiveDamaged(archive_of(ref), why, [escape(p) for p in (paths or [])][:10])


class _Out:
    """The files of a tree that get one content: made, written, checked, given metadata."""

    def __init__(self, applier: Applier, ref: PackageRef, files: list[PooledFile], *,
                 long_lived: bool = False) -> None:
        self.applier = applier
        self.ref = ref
        self.files = files
        # BLAKE3, the manifest's digest (the pooled list gives both): three to five times
        # faster than sha256 here, and as strong a check against the signed list.
        self.digest = content_digest.new()
        # (file, its descriptor, its directory's, its name, the mode it was made with)
        self.opened: list[tuple[PooledFile, int, int, bytes, int | None]] = []
        # The applier's directories are a chain that the next file's directory replaces:
        # files that stay open while others are made (several of one content, the copies
        # of a package being read) hold a descriptor of their own directory, so that
        # discard() removes them there and nowhere else.
        self._own_dirs = long_lived or len(files) > 1
        try:
            for f in files:
                dir_fd, setgid = applier.directory(parent_of(f.path))
                name = components(f.path)[-1]
                # As the archive's files: made with their permission bits, so that only
                # what differs is set afterwards (a setgid directory gives its group).
                mode = f.mode & 0o777
                fd = applier.create(dir_fd, name, mode)
                if self._own_dirs:
                    try:
                        dir_fd = os.dup(dir_fd)
                    except OSError:
                        os.close(fd)
                        raise
                self.opened.append((f, fd, dir_fd, name, None if setgid else mode))
        except BaseException:
            self.discard()
            self.close()
            raise

    def write(self, chunk: bytes, offset: int) -> None:
        self.digest.update(chunk)
        for _, fd, _, _, _ in self.opened:
            pwrite_all(fd, chunk, offset)

    def finish(self, what: str) -> tuple[int, int]:
        """The content's digest checked (else the files removed, and refused), then each
        file's saved metadata set: how many files and bytes."""
        if any(self.digest.hexdigest() != f.digest for f in self.files):
            self.discard()
            raise _damaged(self.ref, f"its {what} is not the content saved (its digest "
                           "differs)", [f.path for f in self.files])
        for f, fd, _, _, new_mode in self.opened:
            self.applier.metadata(fd, f.path, f.uid, f.gid, f.mode, f.xattrs, f.mtime_ns,
                                  f.mtime_ns, new_mode)
        return len(self.files), sum(f.size for f in self.files)

    def discard(self) -> None:
        for _, _, dir_fd, name, _ in self.opened:
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=dir_fd)

    def close(self) -> None:
        for _, fd, dir_fd, _, _ in self.opened:
            os.close(fd)
            if self._own_dirs:
                os.close(dir_fd)
        self.opened = []


class _Teeing:
    """A reader of the package that gives every byte read to the files that are it whole."""

    def __init__(self, src: deb.Readable, out: _Out) -> None:
        self._src = src
        self._out = out
        self.size = 0

    def read(self, n: int) -> bytes:
        data = self._src.read(n)
        self._out.write(data, self.size)
        self.size += len(data)
        return data


def _failed(ref: PackageRef, files: list[PooledFile], e: OSError) -> RestoreFailed:
    shown = escape(files[0].path)
    return RestoreFailed(f"cannot restore {shown}: {e.strerror}", archive=archive_of(ref),
                         paths=(shown,))


def write_package(applier: Applier, ref: PackageRef, members: Members, src: deb.Readable,
                  xz_threads: int, stopped: Callable[[], bool] = lambda: False
                  ) -> tuple[int, int]:
    """Write the files ``members`` lists from the package read at ``src`` (see the module
    docstring): their number and bytes. ArchiveError on any problem; Stopped when
    ``stopped()`` says so between members."""
    pending = dict(members)
    whole = pending.pop((WHOLE, os.fsdecode(WHOLE_MEMBER)), [])
    if any(f.size != ref.size for f in whole):
        raise _damaged(ref, "it has not the size saved", [f.path for f in whole])
    counts = [0, 0]

    def on_control(c: deb.Control) -> None:
        if (c.package, c.version, c.architecture) != (ref.name, ref.version, ref.architecture):
            raise deb.DebError(f"it is {c.package} {c.version} ({c.architecture})")

    def take(wanted: list[PooledFile], m: deb.Member, body: deb.Limited) -> None:
        if any(f.size != m.size for f in wanted):
            raise _damaged(ref, f"its {m.path} has {m.size} bytes, not the size saved",
                           [f.path for f in wanted])
        try:
            out = _Out(applier, ref, wanted)
            try:
                offset = 0
                while chunk := body.read(CHUNK):
                    out.write(chunk, offset)
                    offset += len(chunk)
                files, data_bytes = out.finish(m.path)
            finally:
                out.close()
        except OSError as e:
            raise _failed(ref, wanted, e) from None
        counts[0] += files
        counts[1] += data_bytes
        if not pending and not whole:
            raise _AllTaken

    def taker(source: str) -> deb.OnFile:
        def on_file(m: deb.Member) -> Callable[[deb.Limited], None] | None:
            if stopped():
                raise Stopped
            wanted = pending.pop((source, m.path), None)
            if wanted is None:
                return None
            return lambda body: take(wanted, m, body)
        return on_file

    copies: _Out | None = None
    try:
        try:
            copies = _Out(applier, ref, whole, long_lived=True) if whole else None
            reader: deb.Readable = src if copies is None else _Teeing(src, copies)
            try:
                deb.read_deb(reader, taker(DATA), on_control, taker(CONTROL),
                             threads=xz_threads)
                while reader.read(CHUNK):  # the rest of a package copied whole
                    pass
            except _AllTaken:
                return counts[0], counts[1]
            except deb.DebError as e:
                if copies is not None:
                    copies.discard()
                raise _damaged(ref, f"not a package this restore reads: {e}") from None
            if copies is not None:
                files, data_bytes = copies.finish("content")
                counts[0] += files
                counts[1] += data_bytes
        finally:
            if copies is not None:
                copies.close()
    except OSError as e:
        raise _failed(ref, whole or [f for fs in members.values() for f in fs], e) from None
    if pending:
        missing = [f.path for fs in pending.values() for f in fs]
        raise _damaged(ref, f"it lacks {len(missing)} file(s) the set takes from it",
                       missing)
    return counts[0], counts[1]


# ---------------------------------------------------------------- the worker process


def frame(data: bytes) -> bytes:
    return FRAME.pack(len(data)) + data


class _Frames:
    """A package's bytes as they come in frames, up to the empty one."""

    def __init__(self, read: Callable[[int], bytes]) -> None:
        self._read = read
        self._buf = b""
        self.ended = False

    def _next(self) -> None:
        head = self._read(FRAME.size)
        if len(head) != FRAME.size:
            raise EOFError
        (size,) = FRAME.unpack(head)
        if not size:
            self.ended = True
            return
        self._buf = self._read(size)
        if len(self._buf) != size:
            raise EOFError

    def read(self, n: int) -> bytes:
        while not self._buf and not self.ended:
            self._next()
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def drain(self) -> None:
        while not self.ended:
            self._buf = b""
            self._next()


def serve(read: Callable[[int], bytes], write: Callable[[bytes], object], applier: Applier,
          xz_threads: int) -> None:
    """The worker's loop: jobs in, a JSON line out for each, until its input ends."""
    while True:
        head = read(FRAME.size)
        if len(head) != FRAME.size:
            return
        (size,) = FRAME.unpack(head)
        if size > MAX_JOB:
            raise EOFError
        # From the process that started this one (never from a medium): its own records.
        ref, members = pickle.loads(read(size))
        src = _Frames(read)
        try:
            files, data_bytes = write_package(applier, ref, members, src, xz_threads)
            reply: dict[str, object] = {"files": files, "bytes": data_bytes}
        except ArchiveError as e:
            reply = {**error_reply(e), "archive": e.archive or archive_of(ref)}
        reply["warnings"] = applier.warnings
        applier.warnings = []
        write(json.dumps(reply).encode() + b"\n")
        src.drain()


def main(argv: list[str]) -> int:
    """python -m resurgo.pool.worker PARENT_PID TARGET_FD XZ_THREADS"""
    pid, target, xz_threads = argv
    # The parent's descriptor, opened again through /proc: the very same directory,
    # whatever became of the target's path meanwhile.
    fd = os.open(f"/proc/{pid}/fd/{target}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    stdin = sys.stdin.buffer
    stdout = sys.stdout.buffer

    def write(data: bytes) -> None:
        stdout.write(data)
        stdout.flush()

    applier = Applier(fd, NAME)
    try:
        serve(stdin.read, write, applier, int(xz_threads))
    except EOFError:
        return 1
    finally:
        applier.close()
        os.close(fd)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
