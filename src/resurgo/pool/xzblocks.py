"""An xz stream of several blocks decompressed on several cores, read front to back.

xz compressing with threads (as dpkg-deb does: a kernel package's data.tar.xz is 17 blocks
of 24 MiB) writes each block's compressed and uncompressed sizes in its header. A block is
then decodable alone: this reader reads the blocks in order, hands each to a thread as an
xz stream of its own (the stream's header, the block, an index of that one block and a
footer: liblzma checks the block's header, its check and its sizes), and gives back their
output in order, a few blocks ahead of the reader. Python's lzma lets go of the GIL while it
decodes.

Memory stays bounded: a block whose header does not give both sizes, or gives sizes beyond
MAX_BLOCK, is not decoded this way; the first block decides (a stream of one block, what
xz writes without threads, is decoded as a stream, by ``sequential``), a later one is
refused. At most AHEAD blocks are decoded ahead of the one being read.
"""

from __future__ import annotations

import lzma
import zlib
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol

STREAM_MAGIC = b"\xfd7zXZ\x00"
FOOTER_MAGIC = b"YZ"
HEADER_SIZE = 12
# A block beyond this (dpkg's are 24 MiB: xz's preset 6 with threads; preset 9 makes them
# of 192 MiB) is decoded as part of a stream instead, never held whole.
MAX_BLOCK = 32 << 20
# Blocks being decoded while the one before them is read: a reader holds at most
# AHEAD + 1 blocks' output.
AHEAD = 2
# xz's decoder memory for the 8 MiB dictionary of dpkg's preset is 9 MiB; the largest
# preset's 65 MiB.
MEMLIMIT = 1 << 28


class XzError(Exception):
    """An xz stream that is damaged or not one."""


class Readable(Protocol):
    def read(self, size: int, /) -> bytes: ...


def check_size(check: int) -> int:
    """The size of a block's check for the stream's check type (xz's file format, 2.1.1.2)."""
    if check == 0:
        return 0
    if check > 15:
        raise XzError("an xz stream with an unknown check")
    return 4 << ((check - 1) // 3)


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = 0
    for i in range(9):
        if pos + i >= len(data):
            break
        byte = data[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            if byte == 0 and i:
                break  # not the shortest form: xz refuses it
            return value, pos + i + 1
    raise XzError("an xz block header with a bad size")


def _enc(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def read_exact(src: Readable, n: int) -> bytes:
    parts: list[bytes] = []
    while n > 0:
        chunk = src.read(min(n, 1 << 20))
        if not chunk:
            raise XzError("an xz member ends before its stream does")
        parts.append(chunk)
        n -= len(chunk)
    return b"".join(parts)


def block_sizes(header: bytes) -> tuple[int, int] | None:
    """A block header's (compressed, uncompressed) sizes; None when it lacks one of them.
    XzError for a header that is not one."""
    if zlib.crc32(header[:-4]) != int.from_bytes(header[-4:], "little"):
        raise XzError("an xz block header with a wrong CRC32")
    flags = header[1]
    if flags & 0x3C:
        raise XzError("an xz block header with reserved flags")
    if flags & 0xC0 != 0xC0:
        return None
    compressed, pos = _varint(header, 2)
    uncompressed, _ = _varint(header, pos)
    return compressed, uncompressed


def one_block_stream(stream_header: bytes, block: bytes, unpadded: int,
                     uncompressed: int) -> bytes:
    """An xz stream of this one block (read whole: header, data, padding, check)."""
    flags = stream_header[6:8]
    index = b"\x00" + _enc(1) + _enc(unpadded) + _enc(uncompressed)
    index += b"\x00" * (-len(index) % 4)
    index += zlib.crc32(index).to_bytes(4, "little")
    backward = (len(index) // 4 - 1).to_bytes(4, "little")
    footer = zlib.crc32(backward + flags).to_bytes(4, "little") + backward + flags + FOOTER_MAGIC
    return stream_header + block + index + footer


def _decode(stream: bytes, uncompressed: int) -> bytes:
    d = lzma.LZMADecompressor(lzma.FORMAT_XZ, memlimit=MEMLIMIT)
    try:
        out = d.decompress(stream, uncompressed + 1)
    except lzma.LZMAError as e:
        raise XzError(f"xz: {e}") from None
    if not d.eof or len(out) != uncompressed:
        raise XzError("an xz block that is not the size its header gives")
    return out


class _Prefixed:
    """``head``, then the rest of ``src``."""

    def __init__(self, head: bytes, src: Readable) -> None:
        self._head = head
        self._src = src

    def read(self, n: int) -> bytes:
        if self._head:
            out, self._head = self._head[:n], self._head[n:]
            return out
        return self._src.read(n)


class BlockReader:
    """The decompressed bytes of an xz stream whose blocks give their sizes (see the
    module docstring). ``open_xz`` makes one, or the sequential reader."""

    def __init__(self, src: Readable, stream_header: bytes, first: bytes,
                 first_sizes: tuple[int, int], threads: int) -> None:
        self._src = src
        self._header = stream_header
        self._check = check_size(stream_header[7] & 0x0F)
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="xz")
        self._pending: deque[Future[bytes]] = deque()
        self._out = memoryview(b"")
        self._ended = False
        self._submit(first, first_sizes)

    def _submit(self, header: bytes, sizes: tuple[int, int]) -> None:
        compressed, uncompressed = sizes
        if compressed > MAX_BLOCK or uncompressed > MAX_BLOCK:
            raise XzError("an xz block larger than a package's")
        rest = read_exact(self._src, compressed + (-(len(header) + compressed) % 4)
                          + self._check)
        stream = one_block_stream(self._header, header + rest,
                                  len(header) + compressed + self._check, uncompressed)
        self._pending.append(self._pool.submit(_decode, stream, uncompressed))

    def _next_block(self) -> None:
        """Read the next block's header and hand the block on; at the index, stop."""
        first = read_exact(self._src, 1)
        if first == b"\x00":  # the index: every block was read (their checks by liblzma)
            self._ended = True
            return
        header = first + read_exact(self._src, (first[0] + 1) * 4 - 1)
        sizes = block_sizes(header)
        if sizes is None:
            raise XzError("an xz block without its sizes after blocks with theirs")
        self._submit(header, sizes)

    def _fill(self) -> None:
        while not self._ended and len(self._pending) < AHEAD:
            self._next_block()

    def read(self, n: int) -> bytes:
        while not self._out:
            self._fill()
            if not self._pending:
                return b""
            self._out = memoryview(self._pending.popleft().result())
            self._fill()  # the next ones decode while this one is read
        out = self._out[:n]
        self._out = self._out[n:]
        return bytes(out)

    def close(self) -> None:
        for f in self._pending:
            f.cancel()
        self._pool.shutdown(wait=True)
        self._pending.clear()


def open_xz(src: Readable, sequential: Callable[[Readable], Readable],
            threads: int) -> tuple[Readable, Callable[[], None]]:
    """A reader of the decompressed stream at ``src`` and what closes it: blocks on
    ``threads`` threads when its first block gives its sizes, else ``sequential(src)``."""
    stream_header = read_exact(src, HEADER_SIZE)
    if stream_header[:6] != STREAM_MAGIC:
        raise XzError("an xz member that is not an xz stream")
    first = read_exact(src, 1)
    if first != b"\x00" and threads > 1:
        header = first + read_exact(src, (first[0] + 1) * 4 - 1)
        sizes = block_sizes(header)
        if sizes is not None and max(sizes) <= MAX_BLOCK:
            reader = BlockReader(src, stream_header, header, sizes, threads)
            return reader, reader.close
        first = header
    return sequential(_Prefixed(stream_header + first, src)), lambda: None
