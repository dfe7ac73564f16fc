"""xz streams of several blocks decoded by threads (resurgo.pool.xzblocks), and what is
refused or read as one stream."""

from __future__ import annotations

import io
import lzma
import os
import shutil
import subprocess
import zlib

import pytest

from resurgo.pool import xzblocks
from resurgo.pool.deb import _Xz

pytestmark = pytest.mark.skipif(shutil.which("xz") is None, reason="needs the xz program")
DATA = b"".join(os.urandom(64) * (1 + n % 50) for n in range(300))


def xz(data: bytes, *args: str) -> bytes:
    return subprocess.run(["xz", "-c", "--block-size=65536", *args], input=data,
                          capture_output=True, check=True).stdout


def read_all(stream: bytes, threads: int = 2) -> tuple[bytes, str]:
    reader, close = xzblocks.open_xz(io.BytesIO(stream), _Xz, threads)
    out = bytearray()
    try:
        while chunk := reader.read(7000):
            out += chunk
    finally:
        close()
    return bytes(out), type(reader).__name__


def first_block_header(stream: bytes) -> tuple[int, bytes]:
    size = (stream[12] + 1) * 4
    return size, stream[12:12 + size]


def test_blocks_that_give_their_sizes_are_decoded_by_threads_in_order() -> None:
    stream = xz(DATA, "-T2")
    assert read_all(stream) == (DATA, "BlockReader")
    assert read_all(stream, threads=1) == (DATA, "_Xz")


def test_blocks_without_their_sizes_and_one_block_streams_are_read_as_a_stream() -> None:
    assert read_all(xz(DATA, "-T1")) == (DATA, "_Xz")
    assert read_all(lzma.compress(DATA)) == (DATA, "_Xz")
    assert read_all(lzma.compress(b"")) == (b"", "_Xz")


def test_a_block_larger_than_the_bound_is_never_held_whole(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(xzblocks, "MAX_BLOCK", 65535)
    assert read_all(xz(DATA, "-T2")) == (DATA, "_Xz")


def test_a_block_whose_size_is_not_its_header_s_is_refused() -> None:
    stream = bytearray(xz(DATA, "-T2"))
    size, header = first_block_header(bytes(stream))
    compressed, uncompressed = xzblocks.block_sizes(header) or (0, 0)
    assert uncompressed == 65536
    # The same header saying one byte less (its varint as long), its CRC32 made right.
    pos = 2 + len(xzblocks._enc(compressed))
    assert header[pos:pos + 3] == xzblocks._enc(65536)
    forged = bytearray(header)
    forged[pos:pos + 3] = xzblocks._enc(65535)
    forged[-4:] = zlib.crc32(forged[:-4]).to_bytes(4, "little")
    stream[12:12 + size] = forged
    with pytest.raises(xzblocks.XzError, match=r"not the size its header gives|xz:"):
        read_all(bytes(stream))


def test_damage_in_a_block_and_a_damaged_header_are_refused() -> None:
    stream = xz(DATA, "-T2")
    damaged = bytearray(stream)
    damaged[len(damaged) // 2] ^= 0x40
    with pytest.raises(xzblocks.XzError):
        read_all(bytes(damaged))
    header = bytearray(stream)
    header[14] ^= 1  # inside the first block's header: its CRC32 no longer matches
    with pytest.raises(xzblocks.XzError, match="CRC32"):
        read_all(bytes(header))
    with pytest.raises(xzblocks.XzError, match="ends before"):
        read_all(stream[:len(stream) * 2 // 3])
    with pytest.raises(xzblocks.XzError, match="not an xz stream"):
        read_all(b"\x00" * 100)
