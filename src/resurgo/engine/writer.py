"""Creating the files of a run of archive records below a restore target.

The restore's reader thread puts runs of entries of one directory (a block of the
archive, read whole, or records it collected one by one), as they are in the archive,
into slots of a shared memory area, with their manifest lines; writer processes (this
module's main) check each entry and create the files of a slot in parallel, each with its
own interpreter, so the many small system calls of small files (open, write, utime,
close...) run on every core and never wait for one another's GIL. The data is copied
once, from the decompressor's pipe into the slot, and once more by the kernel into the
file.

The same Applier runs inside the restoring process when there are few records, or when
asked for no writer processes.
"""

from __future__ import annotations

import errno
import json
import logging
import mmap
import os
import stat
import struct
import sys
import zlib
from collections.abc import Callable

from resurgo import digest as content_digest
from resurgo.engine import extensions, fsmeta
from resurgo.engine.errors import ArchiveDamaged, ArchiveError, RestoreFailed, UnsafePath
from resurgo.engine.manifest import Entry, ManifestError, xattr_digest
from resurgo.engine.names import ROOT, BadPath, check_path, components, escape, unescape
from resurgo.engine.records import (
    BLK,
    CHR,
    CRC,
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


def _make_none(records: memoryview | bytes, pos: int, lines: list[bytes], index: int,
               dir_fd: int, prefix: bytes, owner_uid: int, owner_gid: int, umask: int,
               setgid: bool, of: Callable[[memoryview], bytes], /) -> tuple[int, int, int, int]:
    return pos, index, 0, 0


# make's arguments and the entry layout it reads (_plainfiles.c's API). Not built, stale
# or not importable (resurgo.engine.extensions): every entry takes the general path.
API = 2
LOADED = extensions.load("_plainfiles", API)
make_plain = _make_none
lines_ordered: Callable[[list[bytes]], int] | None = None
if LOADED.module is not None:
    make_plain = LOADED.module.make
    lines_ordered = LOADED.module.ordered

_slow_said = False


def compiled() -> bool:
    """Whether the compiled plain-file path is here (pip builds it when a C compiler and
    Python's headers are; without them resurgo installs all the same)."""
    return make_plain is not _make_none


def warn_if_slow() -> None:
    """Say once per process, on standard error (the log), that restoring takes the pure
    Python path: the same files, made more slowly."""
    global _slow_said
    if compiled() or _slow_said:
        return
    _slow_said = True
    logging.getLogger("resurgo.engine").warning(
        "resurgo's compiled restore path is not used (%s): this restore takes the Python "
        "path, slower and the same; %s (see resurgo doctor)",
        LOADED.why or "not built", LOADED.fix or extensions.REINSTALL)


# slot offset, then the lengths of its entries, manifest lines and directory path, and
# the number of entries and their payload bytes; all 0: stop.
_MESSAGE = struct.Struct("<QIIIIQ")
MAX_WARNINGS = 1000


def _failed(path: bytes, e: OSError, archive: str) -> RestoreFailed:
    shown = escape(path)
    return RestoreFailed(f"cannot restore {shown}: {e.strerror}", archive=archive,
                         paths=(shown,))


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


# The holes of sparse files are hashed as zeros (their digest covers them), at several
# GB/s but in time proportional to their size: a tiny archive could ask for days of it.
# Each process hashes at most the target's size or HOLE_FLOOR, whichever is more: no more
# time than filling the target with data would take. The floor keeps files that are
# legitimately sparse beyond their file system's size: /var/log/lastlog reaches 1.2 TiB
# apparent size with 32-bit uids (292 bytes a uid).
HOLE_FLOOR = 2 << 40

# The file type of what other() makes, as fstat must see it.
_FORMAT = {FIFO: stat.S_IFIFO, CHR: stat.S_IFCHR, BLK: stat.S_IFBLK}
_PIN_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC


def pinned(fd: int) -> str:
    """The path of the very inode an O_PATH descriptor holds, for the calls that refuse
    such a descriptor (fchmod, fchown, fsetxattr, futimens give EBADF). The magic link
    /proc/self/fd/N does not name a place that another process could change: following it
    lands on the inode the descriptor pins, whatever is at its name meanwhile; that inode
    is checked not to be a symlink, so nothing is followed any further."""
    return f"/proc/self/fd/{fd}"


def failed_order(archive: str, path: bytes) -> UnsafePath:
    return UnsafePath(archive, escape(path),
                      "listed twice or out of walk order (an archive lists each path once, "
                      "in walk order)")


def check_order(texts: list[bytes], archive: str) -> None:
    """The manifest lines of a run of one directory's entries strictly in walk order (no
    name twice), before anything of it is made. Each entry made is checked to be its
    line's path, and the reader checks the order from one run to the next: so no two
    entries of a restore have one path, and no two processes ever make the same name."""
    if lines_ordered is not None and lines_ordered(texts) < 0:
        return  # the usual case, checked in a few ns a line; else said here which and why
    previous = b""
    try:
        for line in texts[:-1]:
            path = line.split(b"\t", 2)[1]
            if b"\\" in path:
                path = unescape(path.decode("utf-8", "surrogateescape"))
            # In one directory, byte order of the paths is the order of the names.
            if path <= previous:
                raise failed_order(archive, path)
            previous = path
    except (IndexError, BadPath):
        raise ArchiveDamaged(archive, "a malformed manifest line") from None


class Applier:
    """Creates entries (all but directories and hard links) with their metadata."""

    def __init__(self, target_fd: int, archive: str) -> None:
        self.archive = archive
        self.dirs = DirCache(target_fd, archive, track_setgid=True)
        self.warnings: list[str] = []
        self.files = 0
        self._owner = (os.geteuid(), os.getegid())
        self._umask = _umask()
        fs = os.fstatvfs(target_fd)
        self.holes_left = max(HOLE_FLOOR, fs.f_blocks * fs.f_frsize)

    def spend_holes(self, h: Header) -> None:
        """Refuse a sparse file whose holes are beyond what this process still hashes."""
        holes = h.size - h.data_size
        if holes > self.holes_left:
            raise ArchiveDamaged(
                self.archive, f"a sparse file of {h.size} bytes, {holes} of them holes: "
                f"more than a restore onto this target hashes ({self.holes_left} left)",
                [escape(h.path)])
        self.holes_left -= holes

    def truncate(self, fd: int, size: int, path: bytes) -> None:
        """The size of a sparse file, set before any of its data is written or hashed:
        the target's own limit on a file's size is learnt here."""
        try:
            os.ftruncate(fd, size)
        except OSError as e:
            if e.errno == errno.EFBIG:
                raise ArchiveDamaged(self.archive, f"a file of {size} bytes, more than any "
                                     "file on the target can be", [escape(path)]) from None
            raise

    def warn(self, path: bytes, refused: list[str]) -> None:
        if refused and len(self.warnings) < MAX_WARNINGS:
            self.warnings.append(f"{escape(path)}: the target refused {', '.join(refused)}")

    def finish_fd(self, fd: int | str, h: Header, *, new_mode: int | None = None) -> None:
        """Owner, mode, attributes and times of an open file or directory, or of the inode
        a pinned path names (see metadata)."""
        self.metadata(fd, h.path, h.uid, h.gid, h.mode, h.xattrs, h.atime_ns, h.mtime_ns,
                      new_mode)

    def metadata(self, fd: int | str, path: bytes, uid: int, gid: int, st_mode: int,
                 xattrs: tuple[tuple[str, bytes], ...], atime_ns: int, mtime_ns: int,
                 new_mode: int | None) -> None:
        """Always by descriptor (``fd``, or the pinned() path of an O_PATH one), never by a
        name that could be a symlink by now. chown first (it clears setuid and
        capabilities), then the permission bits, then the attributes (ACLs agree with the
        mode), then setuid, setgid and sticky, then the capability: the special bits and
        the capability come last, when the object is complete, on that object only; the
        times at the very end. ``new_mode`` is the mode a new file was created with: what
        it already has is not set again.
        """
        if new_mode is None or uid != self._owner[0] or gid != self._owner[1]:
            os.chown(fd, uid, gid)
        mode = st_mode & 0o7777
        special = mode & 0o7000
        if new_mode is None or (new_mode & ~self._umask) != mode & 0o777:
            os.chmod(fd, mode & 0o777)
        if xattrs:
            self.warn(path, fsmeta.apply_xattrs(fd, xattrs, follow=True, capability=False))
        if special:
            os.chmod(fd, mode)
        if xattrs:
            capability = tuple(x for x in xattrs if x[0] == fsmeta.CAPABILITY)
            if capability:
                self.warn(path, fsmeta.apply_xattrs(fd, capability, follow=True))
        os.utime(fd, ns=(atime_ns, mtime_ns))

    def create(self, dir_fd: int, name: bytes, mode: int) -> int:
        return replace(lambda: os.open(name, NEW_FILE_FLAGS, mode, dir_fd=dir_fd), dir_fd, name)

    def directory(self, parent: bytes) -> tuple[int, bool]:
        """The open directory of a run of entries, and whether it is setgid."""
        fd = self.dirs.fd(components(parent), create=True)
        return fd, self.dirs.setgid

    def file(self, h: Header, payload: memoryview, dir_fd: int, name: bytes,
             setgid: bool) -> None:
        extents = h.extents
        whole = len(extents) == 1 and extents[0][0] == 0 and extents[0][1] == h.size
        if not whole and h.size:
            self.spend_holes(h)
        self.make_file(dir_fd, name, h.path, h.mode, h.uid, h.gid, h.atime_ns, h.mtime_ns,
                       h.size, None if whole or not h.size else extents, h.xattrs, payload,
                       setgid)

    def make_file(self, dir_fd: int, name: bytes, path: bytes, st_mode: int, uid: int,
                  gid: int, atime_ns: int, mtime_ns: int, size: int,
                  extents: tuple[tuple[int, int], ...] | None,
                  xattrs: tuple[tuple[str, bytes], ...], payload: memoryview,
                  setgid: bool) -> None:
        """A regular file from its payload: its data (whole, or the ``extents`` of a
        sparse one), then its digest, which the data must have."""
        # A new file gets the creator's owner and the mode asked for less the umask; only
        # what differs is set afterwards (a setgid directory would give it its group).
        mode = st_mode & 0o777
        fd = self.create(dir_fd, name, mode)
        try:
            data = payload[:-DIGEST_SIZE]
            if extents is None:
                if size:
                    pwrite_all(fd, data, 0)
                actual = content_digest.of(data)
            else:
                self.truncate(fd, size, path)
                hasher = content_digest.new()
                pos = 0
                for offset, length in extents:
                    content_digest.update_zeros(hasher, offset - pos)
                    chunk = data[:length]
                    data = data[length:]
                    pwrite_all(fd, chunk, offset)
                    hasher.update(chunk)
                    pos = offset + length
                content_digest.update_zeros(hasher, size - pos)
                actual = hasher.digest()
            if actual != payload[-DIGEST_SIZE:]:
                raise ArchiveDamaged(self.archive, "a file's content differs from its digest",
                                     [escape(path)])
            self.metadata(fd, path, uid, gid, st_mode, xattrs, atime_ns, mtime_ns,
                          None if setgid else mode)
        finally:
            os.close(fd)
        self.files += 1

    def other(self, h: Header, dir_fd: int, name: bytes) -> None:
        kind = h.kind

        def make() -> None:
            if kind == SYMLINK:
                os.symlink(h.target, name, dir_fd=dir_fd)
            elif kind == FIFO:
                os.mkfifo(name, 0o600, dir_fd=dir_fd)
            else:
                os.mknod(name, _FORMAT[kind] | 0o600, h.rdev, dir_fd=dir_fd)

        replace(make, dir_fd, name)
        if kind == SYMLINK:
            # Every call names the link itself and never follows it (a symlink has no
            # mode of its own): at worst it reaches what stands there now, in the target.
            os.chown(name, h.uid, h.gid, dir_fd=dir_fd, follow_symlinks=False)
            if h.xattrs:
                self.warn(h.path, fsmeta.apply_xattrs(fsmeta.proc_path(dir_fd, name),
                                                      h.xattrs, follow=False))
            os.utime(name, ns=(h.atime_ns, h.mtime_ns), dir_fd=dir_fd, follow_symlinks=False)
            return
        # A fifo or a device: opening it for real could block or wake a driver, and Linux
        # has no chmod that leaves a symlink alone. An O_PATH descriptor pins the inode
        # without opening it; fstat shows it is what was just made, not a symlink put
        # there meanwhile; metadata() then goes through that inode only (see pinned).
        fd = os.open(name, _PIN_FLAGS, dir_fd=dir_fd)
        try:
            st = os.fstat(fd)
            if stat.S_IFMT(st.st_mode) != _FORMAT[kind] or (
                kind != FIFO and st.st_rdev != h.rdev
            ):
                raise UnsafePath(self.archive, escape(h.path),
                                 "something else stands where it was just made")
            self.finish_fd(pinned(fd), h)
        finally:
            os.close(fd)

    def apply(self, records: memoryview, lines: bytes, parent: bytes, entries: int,
              payload_bytes: int) -> tuple[int, int]:
        """Check and create a run of ``entries`` entries of the directory ``parent``: the
        records as they are in the archive, each with the manifest line in ``lines``
        (one per entry, newline-terminated). The run must hold exactly that many entries
        and ``payload_bytes`` of payload, and nothing that belongs elsewhere (another
        directory, a directory, a hard link). Returns the files made and their bytes."""
        texts = lines.split(b"\n")
        raw_path = parent  # escaped only for a message: most runs have none
        files = data_bytes = 0
        try:
            if len(texts) != entries + 1 or texts[-1]:
                raise FormatError(f"{entries} entries, {len(texts) - 1} manifest lines")
            check_path(parent)
            check_order(texts, self.archive)
            prefix = b"" if parent == ROOT else parent + b"/"
            cut = len(prefix)
            dir_fd, setgid = self.directory(parent)
            pos = index = 0
            end = len(records)
            paid = 0
            last = len(texts) - 1
            while True:
                # Most entries are whole files without attributes: the compiled path
                # makes them, and stops at the first it does not (see _plainfiles.c).
                pos, index, made, size = make_plain(
                    records, pos, texts, index, dir_fd, prefix, *self._owner, self._umask,
                    setgid, content_digest.of)
                self.files += made
                files += made
                data_bytes += size
                paid += size + made * DIGEST_SIZE
                if index == last:
                    break
                line = texts[index]
                index += 1
                raw_path = parent  # until the entry's own path is known
                tag, n, payload = FRAME.unpack_from(records, pos)
                body = pos + FRAME.size
                data = body + n + 4
                if tag != b"E" or data + payload > end:
                    raise FormatError("a run of entries is cut or holds other records")
                if CRC.unpack_from(records, body + n)[0] != zlib.crc32(records[pos:body + n]):
                    raise FormatError("entry header checksum mismatch")
                view = records[data:data + payload]
                h = decode_header(bytes(records[body:body + n]))
                path = raw_path = h.path
                name = path[cut:]
                if (not path.startswith(prefix) or b"/" in name or path == ROOT
                        or h.kind == DIR or h.kind == HARDLINK):
                    raise FormatError("an entry that does not belong with its directory's")
                if payload != h.payload_size:
                    raise FormatError(f"entry payload of {payload} bytes, its header says "
                                      f"{h.payload_size}")
                check_line(h, line, view, self.archive)
                try:
                    if h.kind == FILE:
                        self.file(h, view, dir_fd, name, setgid)
                        files += 1
                        data_bytes += payload - DIGEST_SIZE
                    else:
                        self.other(h, dir_fd, name)
                except OSError as e:
                    raise _failed(path, e, self.archive) from None
                paid += payload
                pos = data + payload
            raw_path = parent
            if pos != end or paid != payload_bytes:
                raise FormatError("a run of entries differs from its frame")
        except (FormatError, ManifestError, BadPath, struct.error) as e:
            raise ArchiveDamaged(self.archive, str(e), [escape(raw_path)]) from None
        return files, data_bytes

    def close(self) -> None:
        self.dirs.close()


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
            offset, size, lines, parent, entries, payload = _MESSAGE.unpack(message)
            if not entries:
                write(json.dumps({"warnings": applier.warnings, "files": applier.files})
                      .encode() + b"\n")
                return
            at = offset + size
            try:
                files, data_bytes = applier.apply(
                    area[offset:at], bytes(area[at:at + lines]),
                    bytes(area[at + lines:at + lines + parent]), entries, payload)
                reply: dict[str, object] = {"files": files, "bytes": data_bytes}
            except ArchiveError as e:
                reply = error_reply(e)
            write(json.dumps(reply).encode() + b"\n")
    finally:
        applier.close()


def message(offset: int, size: int, lines: int, parent: int, entries: int,
            payload: int) -> bytes:
    """The message that hands a slot to a writer: where its entries are (``size`` bytes
    at ``offset``, then ``lines`` bytes of manifest lines and ``parent`` bytes of their
    directory's path), how many and with how much payload; ``entries`` 0: stop."""
    return _MESSAGE.pack(offset, size, lines, parent, entries, payload)


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
