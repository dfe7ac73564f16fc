"""Creating the files of a run of archive records below a restore target.

The restore's reader thread checks each record and collects runs of them (whole records,
as they are in the archive) into slots of a shared memory area; writer processes (this
module's main) create the files of a slot in parallel, each with its own interpreter, so
the many small system calls of small files (open, write, utime, close...) run on every
core and never wait for one another's GIL. The data is copied once, from the
decompressor's pipe into the slot, and once more by the kernel into the file.

The same Applier runs inside the restoring process when there are few records, or when
asked for no writer processes.
"""

from __future__ import annotations

import json
import mmap
import os
import stat
import struct
import sys
from collections.abc import Callable, Iterator

from resurgo import digest as content_digest
from resurgo.engine import fsmeta
from resurgo.engine.errors import ArchiveDamaged, ArchiveError, RestoreFailed, UnsafePath
from resurgo.engine.manifest import Entry, ManifestError, xattr_digest
from resurgo.engine.names import BadPath, components, escape, unescape
from resurgo.engine.records import (
    BLK,
    CHR,
    DIGEST_SIZE,
    DIR,
    FIFO,
    FILE,
    FRAME,
    HARDLINK,
    SYMLINK,
    FormatError,
    Header,
    decode_header,
)
from resurgo.engine.targets import NEW_FILE_FLAGS, DirCache, replace

CHUNK = 1 << 20
_ZEROS = memoryview(bytes(CHUNK))
_MESSAGE = struct.Struct("<QQ")  # slot offset, length (0, 0: stop)
MAX_WARNINGS = 1000


def hash_zeros(h: content_digest.Hasher, n: int) -> None:
    while n > 0:
        step = min(n, CHUNK)
        h.update(_ZEROS[:step])
        n -= step


def pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    n = os.pwrite(fd, data, offset)
    if n == len(data):
        return
    view = memoryview(data)[n:]
    offset += n
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n


def _umask() -> int:
    mask = os.umask(0o22)
    os.umask(mask)
    return mask


class Applier:
    """Creates entries (all but directories and hard links) with their metadata."""

    def __init__(self, target_fd: int, archive: str) -> None:
        self.archive = archive
        self.dirs = DirCache(target_fd, archive, track_setgid=True)
        self.warnings: list[str] = []
        self.files = 0
        self._owner = (os.geteuid(), os.getegid())
        self._umask = _umask()
        self._parent: tuple[bytes | None, int, bool] = (None, -1, False)

    def warn(self, path: bytes, refused: list[str]) -> None:
        if refused and len(self.warnings) < MAX_WARNINGS:
            self.warnings.append(f"{escape(path)}: the target refused {', '.join(refused)}")

    def finish_fd(self, fd: int, h: Header, *, new_mode: int | None = None) -> None:
        """Owner, mode, attributes and times of an open file or directory.

        chown first (it clears setuid and capabilities), then the mode, then the
        attributes (ACLs agree with the mode; the capability comes last), then the times.
        ``new_mode`` is the mode a new file was created with: what it already has is not
        set again.
        """
        owner = (h.uid, h.gid)
        chowned = new_mode is None or owner != self._owner
        if chowned:
            os.fchown(fd, h.uid, h.gid)
        mode = h.mode & 0o7777
        if new_mode is None or mode & 0o7000 or (new_mode & ~self._umask) != mode:
            os.fchmod(fd, mode)
        if h.xattrs:
            self.warn(h.path, fsmeta.apply_xattrs(fd, h.xattrs))
        os.utime(fd, ns=(h.atime_ns, h.mtime_ns))

    def create(self, dir_fd: int, name: bytes, mode: int) -> int:
        return replace(lambda: os.open(name, NEW_FILE_FLAGS, mode, dir_fd=dir_fd), dir_fd, name)

    def parent(self, h: Header) -> tuple[int, bytes, bool]:
        head, slash, name = h.path.rpartition(b"/")
        if slash and head == self._parent[0]:
            # Entries come in walk order: the same directory as the last one, mostly.
            return self._parent[1], name, self._parent[2]
        parts = components(h.path)
        fd = self.dirs.fd(parts[:-1], create=True)
        # The cache moved: what it closed may be the last directory's descriptor.
        self._parent = (head if slash else None, fd, self.dirs.setgid)
        return fd, parts[-1], self.dirs.setgid

    def file(self, h: Header, payload: memoryview) -> None:
        dir_fd, name, setgid = self.parent(h)
        # A new file gets the creator's owner and the mode asked for less the umask; only
        # what differs is set afterwards (a setgid directory would give it its group).
        mode = h.mode & 0o777
        fd = self.create(dir_fd, name, mode)
        try:
            data = payload[:-DIGEST_SIZE]
            digest = payload[-DIGEST_SIZE:]
            if len(h.extents) == 1 and h.extents[0][0] == 0 and h.extents[0][1] == h.size:
                pwrite_all(fd, data, 0)
                actual = content_digest.of(data)
            else:
                if h.size:
                    os.ftruncate(fd, h.size)
                hasher = content_digest.new()
                pos = 0
                for offset, length in h.extents:
                    hash_zeros(hasher, offset - pos)
                    chunk = data[:length]
                    data = data[length:]
                    pwrite_all(fd, chunk, offset)
                    hasher.update(chunk)
                    pos = offset + length
                hash_zeros(hasher, h.size - pos)
                actual = hasher.digest()
            if actual != digest:
                raise ArchiveDamaged(self.archive, "a file's content differs from its digest",
                                     [escape(h.path)])
            self.finish_fd(fd, h, new_mode=None if setgid else mode)
        finally:
            os.close(fd)
        self.files += 1

    def other(self, h: Header) -> None:
        dir_fd, name, _ = self.parent(h)
        kind = h.kind

        def make() -> None:
            if kind == SYMLINK:
                os.symlink(h.target, name, dir_fd=dir_fd)
            elif kind == FIFO:
                os.mkfifo(name, 0o600, dir_fd=dir_fd)
            else:
                os.mknod(name, stat.S_IFMT(h.mode) | 0o600, h.rdev, dir_fd=dir_fd)

        replace(make, dir_fd, name)
        os.chown(name, h.uid, h.gid, dir_fd=dir_fd, follow_symlinks=False)
        if kind != SYMLINK:  # a symlink has no mode of its own
            os.chmod(name, h.mode & 0o7777, dir_fd=dir_fd)
        if h.xattrs:
            self.warn(h.path, fsmeta.apply_xattrs(fsmeta.proc_path(dir_fd, name), h.xattrs))
        os.utime(name, ns=(h.atime_ns, h.mtime_ns), dir_fd=dir_fd, follow_symlinks=False)

    def apply(self, records: memoryview) -> None:
        """Create the entries of a slot: each its manifest line and its whole record."""
        raw_path = b""  # escaped only for a message: most slots have none
        try:
            for line, h, payload in split_slot(records):
                raw_path = h.path
                check_line(h, line, payload, self.archive)
                try:
                    if h.kind == FILE:
                        self.file(h, payload)
                    else:
                        self.other(h)
                except OSError as e:
                    path = escape(raw_path)
                    raise RestoreFailed(f"cannot restore {path}: {e.strerror}",
                                        archive=self.archive, paths=(path,)) from None
        except (FormatError, ManifestError) as e:
            raise ArchiveDamaged(self.archive, str(e),
                                 [escape(raw_path) if raw_path else "?"]) from None

    def close(self) -> None:
        self._parent = (None, -1, False)
        self.dirs.close()


_LINE = struct.Struct("<I")


def slot_entry(line: bytes, raw: bytes) -> bytes:
    """How an entry goes into a slot: its manifest line, then its record (the payload
    follows, copied there by the reader)."""
    return _LINE.pack(len(line)) + line + raw


def split_slot(buf: memoryview) -> Iterator[tuple[bytes, Header, memoryview]]:
    """The entries of a slot. Their paths were checked by the reader that filled it."""
    pos = 0
    end = len(buf)
    while pos < end:
        (n,) = _LINE.unpack_from(buf, pos)
        pos += _LINE.size
        line = bytes(buf[pos:pos + n])
        pos += n
        _, hlen, payload = FRAME.unpack_from(buf, pos)
        start = pos + FRAME.size
        h = decode_header(bytes(buf[start:start + hlen]), checked=True)
        if payload != h.payload_size:
            raise FormatError(f"entry payload of {payload} bytes, its header says "
                              f"{h.payload_size}")
        pos = start + hlen + 4
        yield line, h, buf[pos:pos + payload]
        pos += payload


_KIND_BYTES = {kind: kind.encode() for kind in (FILE, HARDLINK, SYMLINK, CHR, BLK, FIFO, DIR)}
_FIELDS = 14


def _same_path(field: bytes, path: bytes) -> bool:
    # A manifest field without a backslash is the path itself (see names.escape).
    if b"\\" not in field:
        return field == path
    try:
        return unescape(field.decode("utf-8", "surrogateescape")) == path
    except BadPath:
        return False


def check_line(h: Header, line: bytes, payload: memoryview | None, archive: str) -> None:
    """check_against on the manifest line as it is, without decoding it into an Entry:
    the check of every small file of a restore."""
    f = line.rstrip(b"\n").split(b"\t")
    kind = h.kind
    try:
        same = (
            len(f) == _FIELDS and f[0] == _KIND_BYTES[kind] and _same_path(f[1], h.path)
            and int(f[2], 8) == h.mode and int(f[3]) == h.uid and int(f[4]) == h.gid
            and int(f[6]) == h.mtime_ns
            and (kind not in (FILE, HARDLINK) or int(f[5]) == h.size)
            and h.rdev == (int(f[9]) if kind in (CHR, BLK) else 0)
            and (kind not in (SYMLINK, HARDLINK) or _same_path(f[13], h.target))
            and (kind == HARDLINK or f[11] == xattr_digest(h.xattrs).encode())
        )
    except (ValueError, KeyError, UnicodeDecodeError):
        same = False
    if not same:
        raise ArchiveDamaged(archive, "an entry differs from its manifest line",
                             [escape(h.path)])
    if kind == FILE and payload is not None and payload[-DIGEST_SIZE:].hex() != f[10].decode():
        raise ArchiveDamaged(archive, "a file's digest differs from its manifest's",
                             [escape(h.path)])


def check_against(h: Header, e: Entry, payload: memoryview | None, archive: str) -> None:
    """The archive's header (and the digest at the end of the payload, when given) must
    say what the manifest says of the entry."""
    same = (
        h.path == e.path and h.kind == e.kind and h.mode == e.mode and h.uid == e.uid
        and h.gid == e.gid and h.mtime_ns == e.mtime_ns
        and (h.kind not in (FILE, HARDLINK) or h.size == e.size)
        and h.rdev == (e.rdev if h.kind in (CHR, BLK) else 0)
        and (h.kind not in (SYMLINK, HARDLINK) or h.target == e.target)
        and (h.kind == HARDLINK or xattr_digest(h.xattrs) == e.xattr_digest)
    )
    if not same:
        raise ArchiveDamaged(archive, "an entry differs from its manifest line",
                             [escape(h.path)])
    if h.kind == FILE and payload is not None and (
        payload[-DIGEST_SIZE:] != bytes.fromhex(e.digest)
    ):
        raise ArchiveDamaged(archive, "a file's digest differs from its manifest's",
                             [escape(h.path)])


def error_reply(e: ArchiveError) -> dict[str, object]:
    kind = {ArchiveDamaged: "damaged", UnsafePath: "unsafe"}.get(type(e), "failed")
    why = e.why if isinstance(e, ArchiveDamaged) else e.message
    return {"error": kind, "message": why, "paths": list(e.paths)}


def error_from(reply: dict[str, object], archive: str) -> ArchiveError:
    listed = reply.get("paths")
    paths = [str(p) for p in listed] if isinstance(listed, list) else []
    message = str(reply.get("message"))
    if reply["error"] == "damaged":
        return ArchiveDamaged(archive, message, paths)
    if reply["error"] == "unsafe":
        return UnsafePath(archive, paths[0] if paths else "?", message)
    return RestoreFailed(message, archive=archive, paths=paths)


def serve(read: Callable[[int], bytes], write: Callable[[bytes], object], target_fd: int,
          area: memoryview, archive: str) -> None:
    """The writer process's loop: slots in, one JSON line per slot out."""
    applier = Applier(target_fd, archive)
    try:
        while True:
            message = read(_MESSAGE.size)
            if len(message) != _MESSAGE.size:
                return
            offset, length = _MESSAGE.unpack(message)
            if length == 0:
                write(json.dumps({"warnings": applier.warnings, "files": applier.files})
                      .encode() + b"\n")
                return
            try:
                applier.apply(area[offset:offset + length])
                reply: dict[str, object] = {}
            except ArchiveError as e:
                reply = error_reply(e)
            write(json.dumps(reply).encode() + b"\n")
    finally:
        applier.close()


def message(offset: int, length: int) -> bytes:
    return _MESSAGE.pack(offset, length)


def main(argv: list[str]) -> int:
    """python -m resurgo.engine.writer PARENT_PID TARGET_FD AREA_FD AREA_SIZE ARCHIVE"""
    pid, target, area_fd, size, archive = argv
    # The parent's descriptors, opened again through /proc: the very same directory and
    # memory, whatever became of the target's path meanwhile.
    fd = os.open(f"/proc/{pid}/fd/{target}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    mem_fd = os.open(f"/proc/{pid}/fd/{area_fd}", os.O_RDWR | os.O_CLOEXEC)
    area = mmap.mmap(mem_fd, int(size))
    os.close(mem_fd)
    stdin = sys.stdin.buffer
    stdout = sys.stdout.buffer

    def write(data: bytes) -> None:
        stdout.write(data)
        stdout.flush()

    try:
        serve(stdin.read, write, fd, memoryview(area), archive)
    finally:
        os.close(fd)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
