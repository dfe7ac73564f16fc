"""The save's read-ahead: small files read in a thread, delivered in walk order."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from resurgo.engine import ahead


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_a_small_file_is_read_hashed_and_closed(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"hello\n" * 100)
    os.setxattr(path, "user.colour", b"blue")
    st = os.lstat(path)
    fd = os.open(path, os.O_RDONLY)
    result = ahead.read_small(fd, st)
    assert isinstance(result, ahead.Read)
    assert result.data == b"hello\n" * 100
    assert result.digest == hashlib.sha256(result.data).digest()
    assert result.xattrs == (("user.colour", b"blue"),)
    assert not result.shrank
    with pytest.raises(OSError):
        os.fstat(fd)  # closed


def test_a_file_that_grew_past_small_is_streamed_with_its_descriptor(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x")
    st = os.lstat(path)
    path.write_bytes(b"y" * (ahead.SMALL + 1))
    fd = os.open(path, os.O_RDONLY)
    result = ahead.read_small(fd, st)
    assert isinstance(result, ahead.Stream) and result.fd == fd
    assert result.st.st_ino == st.st_ino  # the same file: saved as the walk saw it
    os.close(fd)


def test_a_file_that_shrank_is_padded_and_said_so(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"abcdef")
    st = os.lstat(path)
    fd = os.open(path, os.O_RDONLY)
    os.truncate(path, 2)
    result = ahead.read_small(fd, st)
    assert isinstance(result, ahead.Read)
    assert result.shrank and result.data == b"ab\0\0\0\0"


def test_something_else_than_a_file_is_reported_replaced(tmp_path: Path) -> None:
    st = os.lstat(tmp_path)
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    assert ahead.read_small(fd, st) == ahead.Failed("replaced")


def make_files(tmp_path: Path, n: int) -> list[Path]:
    paths = []
    for i in range(n):
        p = tmp_path / f"f{i:04d}"
        p.write_bytes(f"file {i}\n".encode() * (i % 7))
        paths.append(p)
    return paths


def test_files_and_calls_come_back_in_the_order_they_were_queued(tmp_path: Path) -> None:
    paths = make_files(tmp_path, 700)
    big = tmp_path / "big"
    big.write_bytes(b"z" * (ahead.SMALL + 10))
    seen: list[str] = []
    streamed: list[int] = []

    def on_file(rel: bytes, result: ahead.Result) -> None:
        if isinstance(result, ahead.Stream):
            streamed.append(result.fd)
            os.close(result.fd)
        else:
            assert isinstance(result, ahead.Read)
            assert result.data == (tmp_path / rel.decode()).read_bytes()
        seen.append(rel.decode())

    before = open_fds()
    queue = ahead.ReadAhead(on_file)
    want = []
    try:
        for i, p in enumerate(paths):
            queue.file(p.name.encode(), os.open(p, os.O_RDONLY), os.lstat(p))
            want.append(p.name)
            if i % 97 == 0:
                queue.call(lambda i=i: seen.append(f"call {i}"))  # type: ignore[misc]
                want.append(f"call {i}")
            if i == 350:
                queue.file(b"big", os.open(big, os.O_RDONLY), os.lstat(big))
                want.append("big")
        queue.finish()
    finally:
        queue.close()
    assert seen == want
    assert len(streamed) == 1
    assert open_fds() == before


def test_an_error_midway_closes_every_descriptor_not_delivered(tmp_path: Path) -> None:
    paths = make_files(tmp_path, 500)
    big = tmp_path / "big"
    big.write_bytes(b"z" * (ahead.SMALL + 10))
    delivered = 0

    def on_file(rel: bytes, result: ahead.Result) -> None:
        nonlocal delivered
        if isinstance(result, ahead.Stream):
            os.close(result.fd)
        delivered += 1
        if delivered == 100:
            raise RuntimeError("the archive's medium is full")

    before = open_fds()
    queue = ahead.ReadAhead(on_file)
    with pytest.raises(RuntimeError):
        try:
            for i, p in enumerate(paths):
                queue.file(p.name.encode(), os.open(p, os.O_RDONLY), os.lstat(p))
                if i % 50 == 0:  # files that wait with their descriptors open
                    queue.file(b"big", os.open(big, os.O_RDONLY), os.lstat(big))
            queue.finish()
        finally:
            queue.close()
    assert delivered == 100
    assert open_fds() == before
