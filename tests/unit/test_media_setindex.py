"""The set index (set.json) and the streams that fill it."""

from __future__ import annotations

import io
import json
import re
from datetime import UTC, datetime

import pytest
from blake3 import blake3

from resurgo.errors import BadInput, ExitCode, OperationFailed
from resurgo.media import setindex
from resurgo.media.setindex import FileEntry, SetKind, SetMeta
from resurgo.media.streams import BytesSource, FileReader, FileWriter

WHEN = datetime(2026, 11, 25, 23, 30, 0, 123456, tzinfo=UTC)
SHA = blake3(b"x").hexdigest()


def index(**meta: object) -> setindex.SetIndex:
    return setindex.build(
        "20261125T233000Z-ab12",
        WHEN,
        SetMeta(**meta),  # type: ignore[arg-type]
        [FileEntry("description.toml", 1, SHA), FileEntry("archives/root.tar.zst", 0, SHA)],
    )


def test_round_trip_and_format() -> None:
    idx = index(
        kind=SetKind.INCREMENTAL,
        parent="20261124T000000Z-0000",
        host="db1",
        labels={"resurgo": "0.1.0"},
    )
    data = setindex.encode(idx)
    assert setindex.decode(data, "here") == idx
    doc = json.loads(data)
    assert doc == {
        "format": "resurgo-set",
        "version": 2,
        "id": "20261125T233000Z-ab12",
        "created": "2026-11-25T23:30:00.123456Z",
        "kind": "incremental",
        "parent": "20261124T000000Z-0000",
        "host": "db1",
        "labels": {"resurgo": "0.1.0"},
        "files": [
            {"name": "archives/root.tar.zst", "size": 0, "blake3": SHA},
            {"name": "description.toml", "size": 1, "blake3": SHA},
        ],
    }
    assert idx.size == 1


def test_created_without_microseconds_is_read() -> None:
    doc = json.loads(setindex.encode(index()))
    doc["created"] = "2026-11-25T23:30:00Z"
    assert setindex.decode(json.dumps(doc).encode(), "x").created == WHEN.replace(microsecond=0)


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"format": "other"}, "not a resurgo-set document"),
        ({"version": "1"}, "no version"),
        ({"id": "nope"}, "bad set id"),
        ({"kind": "weekly"}, "weekly"),
        ({"kind": "incremental"}, "needs the id of its parent"),
        ({"created": "yesterday"}, "bad time"),
        ({"files": [{"name": "../x", "size": 1, "blake3": SHA}]}, "cannot be the name"),
        ({"files": [{"name": "a", "size": -1, "blake3": SHA}]}, "bad size"),
        ({"files": [{"name": "a", "size": True, "blake3": SHA}]}, "bad size"),
        ({"files": [{"name": "a", "size": 1, "blake3": "00"}]}, "bad blake3 digest"),
        ({"files": [{"name": "a", "size": 1, "sha256": SHA}]}, "blake3"),
        ({"files": [{"name": "a", "size": 1, "blake3": SHA}] * 2}, "listed twice"),
        ({"labels": {"a": 1}}, "labels are not strings"),
        # Shown on the rescue's console and by list: no escape sequence, no forged line.
        ({"host": "db1\x1b[2J"}, "host is not a host name"),
        ({"host": "db1\nrecovery set: forged"}, "host is not a host name"),
        ({"host": "x" * 256}, "host is not a host name"),
        ({"labels": {"recipients": "age1\x1b]0;"}}, "labels are not strings"),
    ],
)
def test_damaged_index(change: dict[str, object], why: str) -> None:
    doc = json.loads(setindex.encode(index()))
    doc.update(change)
    with pytest.raises(OperationFailed, match="unreadable") as e:
        setindex.decode(json.dumps(doc).encode(), "m set x")
    assert why in e.value.message
    assert e.value.exit_code == ExitCode.DAMAGED


def test_newer_version_refused_and_not_json() -> None:
    doc = json.loads(setindex.encode(index()))
    doc["version"] = 3
    with pytest.raises(OperationFailed, match="newer than this resurgo reads"):
        setindex.decode(json.dumps(doc).encode(), "x")
    doc["version"] = 1
    with pytest.raises(OperationFailed, match="version 1 by an earlier resurgo"):
        setindex.decode(json.dumps(doc).encode(), "x")
    with pytest.raises(OperationFailed, match="unreadable"):
        setindex.decode(b"\xff{", "x")


def test_ids_and_names() -> None:
    new = setindex.new_set_id(WHEN)
    assert re.fullmatch(r"20261125T233000Z-[0-9a-f]{4}", new)
    assert setindex.is_set_id(new)
    for bad in ("", "20261125T233000Z", "../20261125T233000Z-ab12", "20261125T233000Z-AB12"):
        assert not setindex.is_set_id(bad)
    for good in ("description.toml", "archives/root.tar.zst", "a/b/c/d"):
        assert setindex.check_file_name(good) == good
    for bad in ("set.json", "/abs", "a/../b", ".hidden", "a//b", "a/b/c/d/e", "sp ace", ""):
        with pytest.raises(BadInput):
            setindex.check_file_name(bad)
    with pytest.raises(BadInput):
        SetMeta(SetKind.FULL, parent=new)


class ListSink:
    def __init__(self) -> None:
        self.data = bytearray()
        self.state = "open"

    def write(self, data: bytes) -> None:
        self.data += data

    def finish(self) -> None:
        self.state = "finished"

    def discard(self) -> None:
        self.state = "discarded"


def test_writer_hashes_and_aborts_on_exception() -> None:
    done: list[FileEntry] = []
    sink = ListSink()
    with FileWriter("a", sink, done.append) as f:
        f.write(b"hello ")
        f.write(memoryview(b"world"))
    assert sink.state == "finished" and bytes(sink.data) == b"hello world"
    assert done == [FileEntry("a", 11, blake3(b"hello world").hexdigest())]
    sink2 = ListSink()
    with pytest.raises(RuntimeError), FileWriter("b", sink2, done.append) as f:
        f.write(b"x")
        raise RuntimeError
    assert sink2.state == "discarded" and len(done) == 1
    # io.BufferedWriter on top works, and flushes into the file before it is finished
    sink3 = ListSink()
    raw = FileWriter("c", sink3, done.append)
    with io.BufferedWriter(raw, 4096) as buffered:
        buffered.write(b"z" * 10000)
    assert sink3.state == "finished" and done[-1].size == 10000


def test_reader_checks_size_and_digest_at_the_end() -> None:
    good = FileEntry("a", 5, blake3(b"hello").hexdigest())
    assert FileReader(good, BytesSource(b"hello"), "w").read() == b"hello"
    buffered = io.BufferedReader(FileReader(good, BytesSource(b"hello"), "w"))
    assert buffered.read(2) == b"he" and buffered.read() == b"llo"
    with pytest.raises(OperationFailed, match="has 4 bytes"):
        FileReader(good, BytesSource(b"hell"), "w").read()
    with pytest.raises(OperationFailed, match="longer than"):
        FileReader(good, BytesSource(b"hello!"), "w").read()
    with pytest.raises(OperationFailed, match="digest differs"):
        FileReader(good, BytesSource(b"jello"), "w").read()


def test_the_digest_is_blake3() -> None:
    # The published test value of BLAKE3 ("abc"), and the streaming form agrees.
    from resurgo import digest

    abc = "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"
    assert digest.hex_of(b"abc") == abc
    running = digest.new(b"a")
    running.update(memoryview(b"bc"))
    assert running.hexdigest() == abc and digest.of(b"abc") == bytes.fromhex(abc)
