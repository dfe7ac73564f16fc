"""A file of a set is read no further than the size its index records, from any medium."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from blake3 import blake3

from resurgo.errors import Damaged, ExitCode, OperationFailed
from resurgo.media import limits
from resurgo.media.setindex import FileEntry
from resurgo.media.streams import FileReader


class Endless:
    """A medium's source that has always more to give, counting what it was asked for."""

    def __init__(self) -> None:
        self.asked = 0
        self.closed = False

    def read(self, size: int) -> bytes:
        self.asked += size
        return b"x" * size

    def close(self) -> None:
        self.closed = True


def entry(name: str, data: bytes) -> FileEntry:
    return FileEntry(name, len(data), blake3(data).hexdigest())


@pytest.mark.parametrize("chunk", [1, 7, 1 << 20])
def test_a_longer_stream_is_read_one_byte_past_its_size(chunk: int) -> None:
    source = Endless()
    reader = FileReader(entry("archives/root.archive", b"x" * 1000), source, "here")
    with pytest.raises(OperationFailed, match="longer than the 1000 bytes recorded"):
        while reader.read(chunk):
            pass
    assert source.asked == 1001


def test_a_file_read_whole_is_refused_beyond_its_cap_unread() -> None:
    source = Endless()
    huge = FileEntry("description.toml", limits.DESCRIPTION + 1, "0" * 64)
    with pytest.raises(OperationFailed, match="refused unread"):
        FileReader(huge, source, "here")
    assert source.asked == 0 and source.closed
    # Any other file: streamed as it may be, but not read whole beyond the largest cap.
    archive = FileEntry("archives/root.archive", 1 << 40, "0" * 64)
    with pytest.raises(OperationFailed, match="refused unread"):
        FileReader(archive, source, "here").read()
    assert source.asked == 0


class LocalSource:
    def __init__(self, path: Path) -> None:
        self._f = open(path, "rb")  # noqa: SIM115 - closed by close()

    def read(self, size: int) -> bytes:
        return self._f.read(size)

    def fileno(self) -> int:
        return self._f.fileno()

    def close(self) -> None:
        self._f.close()


def test_a_local_file_that_grew_is_not_handed_out_nor_hashed_to_its_end(tmp_path: Path) -> None:
    data = b"a" * 5000
    path = tmp_path / "archive"
    path.write_bytes(data)
    reader = FileReader(entry("archives/a", data), LocalSource(path), "here")
    fd = reader.local_file()
    assert fd is not None
    # It grows (sparse, 1 TiB) while a program reads it through the descriptor.
    os.truncate(path, 1 << 40)
    with pytest.raises(OperationFailed, match="has 5001 bytes, the set recorded 5000") as e:
        reader.check_whole()
    assert isinstance(e.value, Damaged) and e.value.exit_code == ExitCode.DAMAGED
    # Grown before it was opened: no descriptor, read() stops one byte past.
    reader = FileReader(entry("archives/a", data), LocalSource(path), "here")
    assert reader.local_file() is None
    with pytest.raises(OperationFailed, match="longer"):
        while reader.read(1 << 20):
            pass


def test_a_filesystem_without_modes_is_named_once_not_refused(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # fchmod fails with EPERM there, as on a vfat USB stick (procfs stands in for it).
    fd = os.open("/proc/self/status", os.O_RDONLY)
    try:
        stick = limits.Private("/media/stick")
        stick.make(fd, limits.FILE_MODE)
        stick.make(fd, limits.FILE_MODE)
        assert caplog.text.count("keeps no Unix file modes") == 1
        assert "fmask=0177" in caplog.text
        # Opened again (by the next command run in the same process): named again.
        limits.Private("/media/stick").make(fd, limits.FILE_MODE)
    finally:
        os.close(fd)
    assert caplog.text.count("keeps no Unix file modes") == 2
