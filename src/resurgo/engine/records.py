"""The archive format: encoder and decoder of the record stream (pure, no file system).

The layout is documented in the package docstring (resurgo.engine). In short::

    stream  := start (entry | block)* end
    start   := "RSGOARC\\0" u16:version u16:n set_id[n] u32:crc32
    entry   := "E" u32:n u64:p header[n] u32:crc32(frame+header) payload[p]
    payload := data of each extent, then the 32-byte digest (BLAKE3) of the content (files only)
    block   := "B" u32:n u64:p u32:entries u64:payload_bytes parent[n-12] u32:crc32 entry+[p]
    end     := "Z" u64:entries u64:payload_bytes u32:crc32

All integers are little endian.
"""

from __future__ import annotations

import io
import stat
import struct
import zlib
from collections.abc import Callable, Iterator
from typing import NamedTuple

from resurgo import digest
from resurgo.engine.names import MAX_PATH, ROOT, BadPath, check_path

MAGIC = b"RSGOARC\0"
VERSION = 3
DIGEST_SIZE = digest.SIZE

# kind letters, shared with the manifest
FILE, DIR, SYMLINK, HARDLINK, CHR, BLK, FIFO = "f", "d", "l", "h", "c", "b", "p"
KINDS = frozenset((FILE, DIR, SYMLINK, HARDLINK, CHR, BLK, FIFO))

_FIXED = struct.Struct("<cIIIqqQQIIHI")
_XATTR = struct.Struct("<HI")
EXTENT = struct.Struct("<QQ")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
CRC = _U32  # the crc32 that ends a frame
_END = struct.Struct("<QQ")
FRAME = struct.Struct("<cIQ")  # tag, header length, payload length

# What one entry may hold, the kernel's limits where it has them: a damaged or hostile
# length field is refused before anything is allocated for it, and a header decodes to a
# bounded number of objects. XATTR_NAME_MAX, XATTR_SIZE_MAX and XATTR_LIST_MAX (the names
# of one file, each with its NUL) are <linux/limits.h>'s; a symlink's text is less than
# PATH_MAX; the values of one file's attributes together are bounded here (no file
# system the save reads gives one file more than a few of 64 KiB). A save stores a file
# with more data extents than MAX_EXTENTS with some of its holes as zeros (fsmeta).
XATTR_NAME_MAX = 255
XATTR_SIZE_MAX = 64 << 10
XATTR_LIST_MAX = 64 << 10
MAX_XATTR_VALUES = 1 << 20
MAX_SYMLINK = 4095
MAX_EXTENTS = 1 << 16
MAX_XATTRS = XATTR_LIST_MAX // 2  # each name at least one byte and its NUL
# the fixed part, a path, a hard link's target, the attributes, the extents
MAX_HEADER = (59 + 2 * MAX_PATH + MAX_XATTRS * 6 + XATTR_LIST_MAX + MAX_XATTR_VALUES
              + MAX_EXTENTS * 16)
MAX_SET_ID = 4096

# A block: consecutive entries of one directory, neither directories nor hard links, framed
# together so that a restore hands them on whole (one read, one check of the frame) to
# whoever creates them, which checks each entry.
_BLOCK = struct.Struct("<IQ")  # entries, the sum of their payloads; the parent path follows
MAX_BLOCK = 4 << 20  # bytes of entries in a block
MAX_BLOCK_ENTRIES = 1024


class FormatError(ValueError):
    """The bytes are not a valid archive stream (damaged or not an archive)."""


class Header(NamedTuple):
    """One entry of an archive: everything about a file but its data."""

    kind: str
    path: bytes
    mode: int
    uid: int
    gid: int
    mtime_ns: int
    atime_ns: int
    rdev: int = 0
    size: int = 0
    target: bytes = b""  # symlink target, or the first path of a hard-link group
    xattrs: tuple[tuple[str, bytes], ...] = ()
    extents: tuple[tuple[int, int], ...] = ()  # (offset, length) of the data; holes between

    @property
    def data_size(self) -> int:
        extents = self.extents
        if len(extents) == 1:  # most files
            return extents[0][1]
        return sum(length for _, length in extents)

    @property
    def payload_size(self) -> int:
        return self.data_size + DIGEST_SIZE if self.kind == FILE else 0


#: What the records' i64 nanoseconds hold: 1677-09-21 to 2262-04-11. ext4 and XFS keep
#: times to 2446 and back to 1901; a time outside is stored as the nearest end (in the
#: manifest too, which the restore checks each record against), and the save notes it.
NS_MIN, NS_MAX = -(1 << 63), (1 << 63) - 1


def stored_ns(ns: int) -> int:
    """``ns`` as the records store it (see NS_MIN, NS_MAX)."""
    return min(max(ns, NS_MIN), NS_MAX)


def encode_header(h: Header) -> bytes:
    parts = [
        _FIXED.pack(
            h.kind.encode(), h.mode, h.uid, h.gid, stored_ns(h.mtime_ns),
            stored_ns(h.atime_ns), h.rdev, h.size,
            len(h.path), len(h.target), len(h.xattrs), len(h.extents),
        ),
        h.path,
        h.target,
    ]
    for name, value in h.xattrs:
        raw = name.encode("utf-8", "surrogateescape")
        parts += (_XATTR.pack(len(raw), len(value)), raw, value)
    parts += [EXTENT.pack(offset, length) for offset, length in h.extents]
    return b"".join(parts)


def decode_header(body: bytes, *, checked: bool = False) -> Header:
    """The header encoded in body; FormatError when it is not a valid one. ``checked``:
    its path was checked already (by peek_header, when the record was read)."""
    try:
        (kind_b, mode, uid, gid, mtime, atime, rdev, size,
         npath, ntarget, nxattrs, nextents) = _FIXED.unpack_from(body, 0)
        if (kind_b == b"f" and nextents == 1 and not nxattrs and not ntarget
                and len(body) == _FIXED.size + npath + EXTENT.size
                and mode & _IFMT == stat.S_IFREG):
            # Most entries of a tree: a whole file without attributes (whole_file_record).
            extent = EXTENT.unpack_from(body, _FIXED.size + npath)
            if extent == (0, size) and size:
                path = body[_FIXED.size:_FIXED.size + npath]
                if not checked:
                    check_path(path)
                return Header(FILE, path, mode, uid, gid, mtime, atime, rdev, size, b"", (),
                              (extent,))
        kind = kind_b.decode("ascii")
        _check_counts(len(body), kind, npath, ntarget, nxattrs, nextents)
        pos = _FIXED.size
        path = body[pos:pos + npath]
        pos += npath
        target = body[pos:pos + ntarget]
        pos += ntarget
        xattrs = []
        names = values = 0
        for _ in range(nxattrs):
            nname, nvalue = _XATTR.unpack_from(body, pos)
            names += nname + 1
            values += nvalue
            if (not 0 < nname <= XATTR_NAME_MAX or nvalue > XATTR_SIZE_MAX
                    or names > XATTR_LIST_MAX or values > MAX_XATTR_VALUES):
                raise FormatError(f"extended attributes beyond the kernel's limits "
                                  f"(a name of {nname} bytes, a value of {nvalue}, "
                                  f"{names} bytes of names, {values} of values)")
            pos += _XATTR.size
            name = body[pos:pos + nname].decode("utf-8", "surrogateescape")
            pos += nname
            xattrs.append((name, body[pos:pos + nvalue]))
            pos += nvalue
        if len(body) - pos != nextents * EXTENT.size:
            raise FormatError("entry header length does not match its fields")
        extents = list(EXTENT.iter_unpack(body[pos:]))
        pos = len(body)
    except (struct.error, UnicodeDecodeError) as e:
        raise FormatError(f"malformed entry header ({e})") from None
    except BadPath as e:
        raise FormatError(str(e)) from None
    if pos != len(body) or len(path) != npath or len(target) != ntarget:
        raise FormatError("entry header length does not match its fields")
    if FORMAT_OF[kind] != mode & _IFMT:
        raise FormatError(f"a {kind!r} entry with the mode {mode:o}")
    try:
        if not checked:
            check_path(path)
        if kind == HARDLINK:
            check_path(target)
    except BadPath as e:
        raise FormatError(str(e)) from None
    end = 0
    for offset, length in extents:
        if offset < end or length == 0 or offset + length > size:
            raise FormatError(f"bad data extents ({offset}, {length}) for size {size}")
        end = offset + length
    if kind != FILE and extents:
        raise FormatError(f"a {kind!r} entry has data extents")
    return Header(kind, path, mode, uid, gid, mtime, atime, rdev, size, target,
                  tuple(xattrs), tuple((o, n) for o, n in extents))


_IFMT = 0o170000
# The file type each kind must have in its st_mode: what is made is what the kind says.
FORMAT_OF = {FILE: stat.S_IFREG, DIR: stat.S_IFDIR, SYMLINK: stat.S_IFLNK,
              HARDLINK: stat.S_IFREG, CHR: stat.S_IFCHR, BLK: stat.S_IFBLK,
              FIFO: stat.S_IFIFO}


def _check_counts(n: int, kind: str, npath: int, ntarget: int, nxattrs: int,
                  nextents: int) -> None:
    """The counts of a header within the format's bounds, before anything is allocated."""
    if kind not in KINDS:
        raise FormatError(f"unknown entry kind {kind!r}")
    if n > MAX_HEADER:
        raise FormatError(f"an entry header of {n} bytes")
    if npath > MAX_PATH:
        raise FormatError(f"a path of {npath} bytes")
    limit = {SYMLINK: MAX_SYMLINK, HARDLINK: MAX_PATH}.get(kind, 0)
    if ntarget > limit:
        raise FormatError(f"a {kind!r} entry with a target of {ntarget} bytes")
    if nextents > MAX_EXTENTS or nxattrs > MAX_XATTRS:
        raise FormatError(f"an entry with {nextents} extents and {nxattrs} attributes")


def start_record(set_id: str) -> bytes:
    raw = set_id.encode()
    if len(raw) > MAX_SET_ID:
        raise ValueError("set id too long")
    body = MAGIC + _U16.pack(VERSION) + _U16.pack(len(raw)) + raw
    return body + _U32.pack(zlib.crc32(body))


def entry_record(h: Header) -> bytes:
    body = encode_header(h)
    head = FRAME.pack(b"E", len(body), h.payload_size) + body
    return head + _U32.pack(zlib.crc32(head))


# The frame and the fixed part of a header at once (whole_file_record, the writers).
ENTRY_START = struct.Struct("<cIQcIIIqqQQIIHI")


def whole_file_record(path: bytes, mode: int, uid: int, gid: int, mtime_ns: int,
                      atime_ns: int, size: int) -> bytes:
    """entry_record of a regular file without extended attributes whose data is stored
    whole (one extent; none when empty): the same bytes, for the many small files of a
    save, with one pack instead of a Header and its general encoder."""
    extent = EXTENT.pack(0, size) if size else b""
    n = _FIXED.size + len(path) + len(extent)
    head = ENTRY_START.pack(b"E", n, size + DIGEST_SIZE, b"f", mode, uid, gid,
                             stored_ns(mtime_ns), stored_ns(atime_ns), 0, size, len(path), 0,
                             0, 1 if size else 0)
    head += path + extent
    return head + _U32.pack(zlib.crc32(head))


_PATH_LENGTH = struct.Struct("<I")
_PATH_AT = 45  # offset of the path length in the fixed part


def peek_header(body: bytes) -> tuple[str, bytes]:
    """The kind and (checked) path of an encoded header, without decoding the rest."""
    try:
        (n,) = _PATH_LENGTH.unpack_from(body, _PATH_AT)
        path = body[_FIXED.size:_FIXED.size + n]
        kind = chr(body[0])
    except (struct.error, IndexError):
        raise FormatError("malformed entry header") from None
    if kind not in KINDS:
        raise FormatError(f"unknown entry kind {kind!r}")
    try:
        return kind, check_path(path)
    except BadPath as e:
        raise FormatError(str(e)) from None


class Block(NamedTuple):
    """A block's frame: ``size`` bytes of ``entries`` entry records follow, all of them
    in the directory ``parent``, their payloads ``payload_bytes`` together."""

    parent: bytes
    entries: int
    payload_bytes: int
    size: int


def block_frame(parent: bytes, entries: int, payload_bytes: int, size: int) -> bytes:
    body = _BLOCK.pack(entries, payload_bytes) + parent
    head = FRAME.pack(b"B", len(body), size) + body
    return head + _U32.pack(zlib.crc32(head))


def in_block(h: Header, block: Block) -> bool:
    """Whether an entry may be in the block: a direct child of its directory, neither a
    directory nor a hard link."""
    if h.kind in (DIR, HARDLINK) or h.path == ROOT:
        return False
    head, slash, _ = h.path.rpartition(b"/")
    return (head if slash else ROOT) == block.parent


def end_record(entries: int, payload_bytes: int) -> bytes:
    body = _END.pack(entries, payload_bytes)
    return b"Z" + body + _U32.pack(zlib.crc32(body))


class RecordReader:
    """Reads a record stream from ``read`` (which returns fewer bytes only at the end).

    ``next_header()`` returns the next entry, or None after a valid end record; the caller
    then reads exactly ``header.payload_size`` bytes with ``read_exact`` (or ``skip``).
    ``next_raw()`` and ``next_header()`` step into blocks: their entries come one by one,
    checked against the block's frame. ``next_item()`` returns a block's frame instead,
    for a caller that takes the block whole (``read_block_into``) or not (``open_block``).
    """

    def __init__(self, read: Callable[[int], bytes],
                 readinto: Callable[[memoryview], int | None] | None = None) -> None:
        self._read = read
        self._readinto = readinto
        self.entries = 0
        self.payload_bytes = 0
        self.last_path: bytes | None = None
        self._announced: Block | None = None  # returned by next_item, not read yet
        self._inner: _InnerBlock | None = None  # the block whose entries come one by one

    def read_exact(self, n: int) -> bytes:
        data = self._read(n)
        if len(data) != n:
            raise FormatError(f"the stream ends early ({len(data)} of {n} bytes)")
        self.payload_bytes += n
        return data

    def read_into(self, view: memoryview) -> None:
        """Fill view with payload bytes (without a copy when the stream can readinto)."""
        if self._readinto is None:
            view[:] = self.read_exact(len(view))
            return
        got = self._readinto(view)
        if got != len(view):
            raise FormatError(f"the stream ends early ({got} of {len(view)} bytes)")
        self.payload_bytes += got

    def skip(self, n: int) -> None:
        while n:
            chunk = self.read_exact(min(n, 1 << 20))
            n -= len(chunk)

    def _take(self, n: int) -> bytes:
        data = self._read(n)
        if len(data) != n:
            raise FormatError("the stream ends early (truncated: no end record)")
        return data

    def start(self) -> str:
        """The set id of the archive, after checking its magic and version."""
        head = self._take(len(MAGIC) + 4)
        if head[:len(MAGIC)] != MAGIC:
            raise FormatError("not a resurgo archive (bad magic)")
        (version,) = _U16.unpack_from(head, len(MAGIC))
        if version != VERSION:
            raise FormatError(f"archive format version {version}, this resurgo reads {VERSION}")
        (n,) = _U16.unpack_from(head, len(MAGIC) + 2)
        if n > MAX_SET_ID:
            raise FormatError("bad start record")
        raw = self._take(n)
        (crc,) = _U32.unpack(self._take(4))
        if crc != zlib.crc32(head + raw):
            raise FormatError("start record checksum mismatch")
        return raw.decode("utf-8", "replace")

    def next_raw(self) -> tuple[bytes, str, bytes, int] | None:
        """The next entry as it is in the stream (frame, header, crc), its kind, path and
        payload length, after checking the crc and the path; None after a valid end.
        The rest of the header is checked by whoever decodes it."""
        item = self.next_item()
        if isinstance(item, Block):
            self.open_block()
            return self.next_raw()
        return item

    def next_item(self) -> tuple[bytes, str, bytes, int] | Block | None:
        """next_raw, but a block's frame as it comes, unread."""
        if self._announced is not None:
            raise FormatError("a block was neither read nor opened")
        if self._inner is not None:
            found = self._inner_entry()
            if found is not None:
                return found
        frame = self._take(FRAME.size)
        tag, n, payload = FRAME.unpack(frame)
        if tag == b"E":
            return self._entry(frame, n, payload)
        if tag == b"B":
            return self._block(frame, n, payload)
        if tag == b"Z":
            self._end(frame)
            return None
        raise FormatError(f"unknown record tag {tag!r}")

    def _entry(self, frame: bytes, n: int, payload: int) -> tuple[bytes, str, bytes, int]:
        if n > MAX_HEADER:
            raise FormatError(f"entry header of {n} bytes")
        raw = self._checked(frame, n, "entry header")
        kind, path = peek_header(raw[FRAME.size:FRAME.size + n])
        self.entries += 1
        self.last_path = path
        return raw, kind, path, payload

    def _checked(self, frame: bytes, n: int, what: str) -> bytes:
        """The frame, the n bytes after it and their crc, checked."""
        raw = frame + self._take(n + 4)
        if _U32.unpack_from(raw, FRAME.size + n)[0] != zlib.crc32(raw[:FRAME.size + n]):
            raise FormatError(f"{what} checksum mismatch")
        return raw

    def _block(self, frame: bytes, n: int, size: int) -> Block:
        if not _BLOCK.size < n <= _BLOCK.size + MAX_PATH or not 0 < size <= MAX_BLOCK:
            raise FormatError(f"a block frame of {n} and {size} bytes")
        raw = self._checked(frame, n, "block frame")
        entries, payload_bytes = _BLOCK.unpack_from(raw, FRAME.size)
        parent = raw[FRAME.size + _BLOCK.size:FRAME.size + n]
        try:
            check_path(parent)
        except BadPath as e:
            raise FormatError(str(e)) from None
        if not 0 < entries <= MAX_BLOCK_ENTRIES or payload_bytes >= size:
            raise FormatError(f"a block frame of {entries} entries, {payload_bytes} bytes of "
                              f"payload in {size} bytes")
        self.last_path = parent
        self._announced = Block(parent, entries, payload_bytes, size)
        return self._announced

    def read_block_into(self, view: memoryview) -> Block:
        """Read the block next_item announced, whole, into ``view`` (of its size). Its
        entries count as read; whoever takes them checks them against the frame."""
        block = self._announced
        if block is None or len(view) != block.size:
            raise ValueError("no block of that size was announced")
        self._announced = None
        payload_bytes = self.payload_bytes
        self.read_into(view)
        self.entries += block.entries
        self.payload_bytes = payload_bytes + block.payload_bytes
        return block

    def open_block(self) -> None:
        """The block next_item announced comes entry by entry from the next calls."""
        block = self._announced
        if block is None:
            raise ValueError("no block was announced")
        self._announced = None
        stream = io.BytesIO(self._take(block.size))
        self._inner = _InnerBlock(block, stream, self._read, self._readinto, self.payload_bytes)
        self._read, self._readinto = stream.read, stream.readinto

    def _inner_entry(self) -> tuple[bytes, str, bytes, int] | None:
        inner = self._inner
        assert inner is not None
        block = inner.block
        if inner.left:
            frame = self._read(FRAME.size)
            if len(frame) != FRAME.size:
                raise FormatError("a block ends inside its entries")
            tag, n, payload = FRAME.unpack(frame)
            if tag != b"E":
                raise FormatError(f"a record tagged {tag!r} inside a block")
            found = self._entry(frame, n, payload)
            inner.left -= 1
            if found[1] in (DIR, HARDLINK) or found[2] == ROOT or (
                found[2].rpartition(b"/")[0] if b"/" in found[2] else ROOT
            ) != block.parent:
                raise FormatError("an entry that does not belong in its block")
            return found
        if inner.stream.tell() != block.size or (
            self.payload_bytes - inner.payload_before != block.payload_bytes
        ):
            raise FormatError("a block's entries differ from its frame")
        self._read, self._readinto = inner.read, inner.readinto
        self._inner = None
        return None

    def _end(self, frame: bytes) -> None:
        # The end record is shorter than a frame only when truncated: its body is
        # 16 bytes + the crc, of which the frame read 12.
        body = frame[1:] + self._take(_END.size + 4 - (FRAME.size - 1))
        crc = _U32.unpack_from(body, _END.size)[0]
        body = body[:_END.size]
        if crc != zlib.crc32(body):
            raise FormatError("end record checksum mismatch")
        entries, payload_bytes = _END.unpack(body)
        if (entries, payload_bytes) != (self.entries, self.payload_bytes):
            raise FormatError(
                f"end record counts {entries} entries and {payload_bytes} bytes, "
                f"the stream held {self.entries} and {self.payload_bytes}"
            )
        if self._read(1):
            raise FormatError("data after the end record")

    def next_record(self) -> tuple[bytes, Header] | None:
        """The next entry as it is in the stream and decoded; None after a valid end."""
        found = self.next_raw()
        if found is None:
            return None
        raw, _, _, payload = found
        h = decode_raw(raw)
        if payload != h.payload_size:
            raise FormatError(f"entry payload of {payload} bytes, its header says "
                              f"{h.payload_size}")
        return raw, h

    def next_header(self) -> Header | None:
        record = self.next_record()
        return None if record is None else record[1]


class _InnerBlock:
    """A block being read entry by entry, and the stream to go back to after it."""

    def __init__(self, block: Block, stream: io.BytesIO, read: Callable[[int], bytes],
                 readinto: Callable[[memoryview], int | None] | None,
                 payload_before: int) -> None:
        self.block = block
        self.stream = stream
        self.left = block.entries
        self.read = read
        self.readinto = readinto
        self.payload_before = payload_before


def decode_raw(raw: bytes | memoryview) -> Header:
    """The header of an entry record (frame + header + crc) as next_raw returns it."""
    return decode_header(bytes(raw[FRAME.size:-4]))


def split_records(buf: memoryview) -> Iterator[tuple[Header, memoryview]]:
    """The entries of a run of complete entry records (checked already): header, payload."""
    pos = 0
    end = len(buf)
    while pos < end:
        _, n, payload = FRAME.unpack_from(buf, pos)
        start = pos + FRAME.size
        h = decode_header(bytes(buf[start:start + n]))
        if payload != h.payload_size:
            raise FormatError(f"entry payload of {payload} bytes, its header says "
                              f"{h.payload_size}")
        pos = start + n + 4
        yield h, buf[pos:pos + payload]
        pos += payload
