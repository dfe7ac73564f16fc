"""A local file of a set goes to zstd as its stdin, and the medium still checks it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from blake3 import blake3

from resurgo.engine.pipes import DecompressedReader
from resurgo.errors import OperationFailed
from resurgo.media.directory import LocalFiles
from resurgo.media.setindex import FileEntry
from resurgo.media.streams import FileReader

PLAIN = b"".join(b"line %d of the archive\n" % i for i in range(50000))


def stored(tmp_path: Path) -> Path:
    path = tmp_path / "x.archive"
    path.write_bytes(subprocess.run(["zstd", "-q", "-c"], input=PLAIN, capture_output=True,
                                    check=True).stdout)
    return path


def reader(path: Path, digest: str, size: int | None = None) -> FileReader:
    entry = FileEntry("x.archive", path.stat().st_size if size is None else size, digest)
    return FileReader(entry, LocalFiles("here", str(path.parent)).open_read(str(path)),
                      "here")


def test_a_local_file_is_read_by_zstd_itself_and_checked(tmp_path: Path) -> None:
    path = stored(tmp_path)
    source = reader(path, blake3(path.read_bytes()).hexdigest())
    assert source.local_file() is not None
    plain = DecompressedReader(source, "x.archive")
    try:
        assert plain._direct is not None  # no pump of ours between the file and zstd
        assert plain.read(len(PLAIN)) == PLAIN
        assert plain.finish().size == path.stat().st_size
    finally:
        plain.close()
        source.close()


@pytest.mark.parametrize("what", ["digest", "size"])
def test_a_local_file_unlike_its_index_is_refused_at_the_end(tmp_path: Path, what: str) -> None:
    path = stored(tmp_path)
    good = blake3(path.read_bytes()).hexdigest()
    source = (reader(path, blake3(b"other").hexdigest()) if what == "digest"
              else reader(path, good, path.stat().st_size + 1))
    plain = DecompressedReader(source, "x.archive")
    try:
        assert plain.read(len(PLAIN)) == PLAIN  # zstd finds nothing wrong...
        with pytest.raises(OperationFailed, match="is damaged") as e:
            plain.finish()  # ...the medium's check does
        assert ("digest differs" if what == "digest" else "bytes, the set recorded") \
            in e.value.message
    finally:
        plain.close()
        source.close()


def test_a_source_already_read_from_is_not_handed_over(tmp_path: Path) -> None:
    path = stored(tmp_path)
    source = reader(path, blake3(path.read_bytes()).hexdigest())
    try:
        source.read(10)
        assert source.local_file() is None
    finally:
        source.close()


def test_a_reader_that_stops_early_stops_the_check_unclaimed(tmp_path: Path) -> None:
    path = stored(tmp_path)
    source = reader(path, blake3(b"other").hexdigest())  # would be refused if checked
    assert source.local_file() is not None
    source.stop_check()
    assert source.check_whole() == 0  # stopped before reading: nothing hashed, no claim
    source.close()
    source = reader(path, blake3(path.read_bytes()).hexdigest())
    plain = DecompressedReader(source, "x.archive")
    try:
        assert plain.read(100) == PLAIN[:100]
    finally:
        plain.close()  # neither waits for the whole file to be hashed nor raises
        source.close()
