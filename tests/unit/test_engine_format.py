"""The archive record format and path rules of resurgo.engine (pure: no file system)."""

from __future__ import annotations

import io
import itertools
import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resurgo.engine.names import (
    ROOT,
    BadPath,
    check_path,
    escape,
    join,
    parent_of,
    unescape,
    walk_key,
)
from resurgo.engine.records import (
    DIGEST_SIZE,
    FILE,
    FORMAT_OF,
    FRAME,
    KINDS,
    MAGIC,
    MAX_BLOCK,
    Block,
    FormatError,
    Header,
    RecordReader,
    block_frame,
    decode_header,
    encode_header,
    end_record,
    entry_record,
    split_records,
    start_record,
    whole_file_record,
)

names = st.binary(min_size=1, max_size=40).filter(
    lambda b: b"/" not in b and b"\0" not in b and b not in (b".", b"..")
)
paths = st.lists(names, min_size=1, max_size=6).map(b"/".join)


@st.composite
def extents_for(draw: st.DrawFn, size: int) -> tuple[tuple[int, int], ...]:
    cuts = sorted(set(draw(st.lists(st.integers(0, size), max_size=8))))
    result = []
    for a, b in zip(cuts[::2], cuts[1::2], strict=False):
        if b > a:
            result.append((a, b - a))
    return tuple(result)


@st.composite
def headers(draw: st.DrawFn) -> Header:
    kind = draw(st.sampled_from(sorted(KINDS)))
    size = draw(st.integers(0, 1 << 40)) if kind == FILE else 0
    return Header(
        kind=kind,
        path=draw(paths),
        mode=FORMAT_OF[kind] | draw(st.integers(0, 0o7777)),
        uid=draw(st.integers(0, 2**32 - 1)),
        gid=draw(st.integers(0, 2**32 - 1)),
        mtime_ns=draw(st.integers(-(2**62), 2**62)),
        atime_ns=draw(st.integers(-(2**62), 2**62)),
        rdev=draw(st.integers(0, 2**64 - 1)),
        size=size,
        target=draw(paths) if kind in ("l", "h") else b"",
        xattrs=tuple(sorted(draw(st.dictionaries(
            st.text(min_size=1, max_size=20).map(lambda s: "user." + s),
            st.binary(max_size=100), max_size=4,
        )).items())),
        extents=draw(extents_for(size)) if kind == FILE else (),
    )


@given(headers())
def test_header_round_trip(h: Header) -> None:
    assert decode_header(encode_header(h)) == h


@given(paths, st.integers(0, 0o177777), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1),
       st.integers(-(2**62), 2**62), st.integers(-(2**62), 2**62), st.integers(0, 1 << 40))
def test_whole_file_record_is_the_general_encoding(
    path: bytes, mode: int, uid: int, gid: int, mtime: int, atime: int, size: int
) -> None:
    general = entry_record(Header(FILE, path, mode, uid, gid, mtime, atime, 0, size, b"", (),
                                  ((0, size),) if size else ()))
    assert whole_file_record(path, mode, uid, gid, mtime, atime, size) == general


@given(paths)
def test_escape_round_trip(path: bytes) -> None:
    text = escape(path)
    assert "\t" not in text and "\n" not in text
    text.encode("utf-8")  # always valid UTF-8
    assert unescape(text) == path


def test_escape_keeps_readable_names() -> None:
    assert escape("grüße/file name.txt".encode()) == "grüße/file name.txt"
    assert escape(b"caf\xe9\tx\\y") == "caf\\xe9\\x09x\\x5cy"


@pytest.mark.parametrize("bad", [b"", b"/etc/passwd", b"a/../b", b"..", b"a//b", b"a/",
                                 b"./a", b"a/.", b"a\0b"])
def test_unsafe_paths_refused(bad: bytes) -> None:
    with pytest.raises(BadPath):
        check_path(bad)


@pytest.mark.parametrize("good", [ROOT, b"a", b"a/b", b".hidden", b"a/..b", b"a/b..",
                                  b"...", b"x/.y/z"])
def test_safe_paths_accepted(good: bytes) -> None:
    assert check_path(good) == good


def test_decode_refuses_unsafe_paths_and_extents() -> None:
    ok = Header(FILE, b"a", 0o100644, 0, 0, 1, 1, 0, 10, b"", (), ((0, 4), (6, 4)))
    assert decode_header(encode_header(ok)) == ok
    for bad in (
        ok._replace(path=b"../evil"),
        ok._replace(path=b"/abs"),
        ok._replace(extents=((0, 4), (2, 4))),  # overlapping
        ok._replace(extents=((8, 4),)),  # past the end
        ok._replace(extents=((0, 0),)),  # empty
        ok._replace(kind="h", target=b"../x", extents=()),
        ok._replace(kind="d"),  # a directory with data
    ):
        with pytest.raises(FormatError):
            decode_header(encode_header(bad))
    with pytest.raises(FormatError):
        decode_header(encode_header(ok)[:-3])
    with pytest.raises(FormatError):
        decode_header(encode_header(ok) + b"x")


def test_a_whole_file_decodes_alike_and_is_checked_alike() -> None:
    # The short way through decode_header (one extent, the whole file, no attributes).
    whole = Header(FILE, b"d/f", 0o100644, 1, 2, 3, 4, 0, 10, b"", (), ((0, 10),))
    body = encode_header(whole)
    assert decode_header(body) == whole and decode_header(body, checked=True) == whole
    assert whole.payload_size == 10 + DIGEST_SIZE
    with pytest.raises(FormatError):
        decode_header(encode_header(whole._replace(path=b"../evil")))
    for damaged in (body[:-1], body + b"x", encode_header(whole._replace(extents=((0, 11),)))):
        with pytest.raises(FormatError):
            decode_header(damaged)


@given(st.lists(paths, min_size=2, max_size=30, unique=True))
def test_walk_key_is_depth_first_preorder(ps: list[bytes]) -> None:
    ordered = sorted(ps, key=walk_key)
    for a, b in itertools.pairwise(ordered):
        # a parent always comes before everything below it
        assert not a.startswith(b + b"/")
    # every directory's entries are contiguous: nothing else between a path and its child
    for i, p in enumerate(ordered):
        for j in range(i + 1, len(ordered)):
            if ordered[j].startswith(p + b"/"):
                assert all(o.startswith(p + b"/") for o in ordered[i + 1:j])


def test_walk_key_examples() -> None:
    given_paths = [b"a.c", b"a/b", b"a", b"b", ROOT, b"a/b/c", b"a-"]
    assert sorted(given_paths, key=walk_key) == [ROOT, b"a", b"a/b", b"a/b/c", b"a-", b"a.c",
                                                 b"b"]
    assert join(ROOT, b"x") == b"x" and join(b"x", b"y") == b"x/y"
    assert parent_of(b"x/y") == b"x" and parent_of(b"x") == ROOT


def _stream(*hs: Header, data: dict[bytes, bytes] | None = None, set_id: str = "s") -> bytes:
    out = [start_record(set_id)]
    payload = 0
    for h in hs:
        out.append(entry_record(h))
        if h.kind == FILE:
            body = (data or {}).get(h.path, bytes(h.data_size))
            out.append(body + bytes(DIGEST_SIZE))
            payload += len(body) + DIGEST_SIZE
    out.append(end_record(len(hs), payload))
    return b"".join(out)


def _read_all(raw: bytes) -> list[Header]:
    f = io.BytesIO(raw)
    rr = RecordReader(f.read)
    assert rr.start() == "s"
    found = []
    while (h := rr.next_header()) is not None:
        found.append(h)
        rr.skip(h.payload_size)
    return found


def _file(path: bytes, size: int) -> Header:
    return Header(FILE, path, 0o100644, 0, 0, 1, 1, 0, size, b"", (), ((0, size),) if size else ())


def test_stream_round_trip() -> None:
    hs = [Header("d", ROOT, 0o40755, 0, 0, 1, 1), _file(b"a", 5), _file(b"b", 0),
          Header("l", b"c", 0o120777, 0, 0, 1, 1, 0, 0, b"/target")]
    assert _read_all(_stream(*hs, data={b"a": b"hello"})) == hs


def test_stream_damage_is_found() -> None:
    raw = _stream(_file(b"a", 5), _file(b"b", 3))
    with pytest.raises(FormatError, match="ends early"):
        _read_all(raw[:-10])
    with pytest.raises(FormatError, match=r"truncated|ends early"):
        _read_all(raw[: len(raw) // 2])
    # a flipped bit in the first header (after start record and frame)
    at = len(start_record("s")) + FRAME.size + 2
    damaged = raw[:at] + bytes([raw[at] ^ 0x10]) + raw[at + 1:]
    with pytest.raises(FormatError, match="checksum"):
        _read_all(damaged)
    with pytest.raises(FormatError, match="magic"):
        _read_all(b"X" + raw[1:])
    with pytest.raises(FormatError, match="after the end"):
        _read_all(raw + b"junk")
    # an end record that does not count what came before
    lying = raw[: -(1 + 16 + 4)] + end_record(1, 0)
    with pytest.raises(FormatError, match="end record counts"):
        _read_all(lying)


def test_version_refused() -> None:
    body = MAGIC + struct.pack("<HH", 99, 1) + b"s"
    raw = body + struct.pack("<I", zlib.crc32(body)) + end_record(0, 0)
    with pytest.raises(FormatError, match="version 99"):
        _read_all(raw)


@settings(max_examples=30)
@given(st.lists(st.binary(max_size=50), min_size=1, max_size=10))
def test_split_records(contents: list[bytes]) -> None:
    hs = [_file(b"f%d" % i, len(c)) for i, c in enumerate(contents)]
    raw = b"".join(entry_record(h) + c + bytes(DIGEST_SIZE)
                   for h, c in zip(hs, contents, strict=True))
    got = [(h, bytes(p)) for h, p in split_records(memoryview(raw))]
    assert got == [(h, c + bytes(DIGEST_SIZE)) for h, c in zip(hs, contents, strict=True)]


def _entry(h: Header, data: bytes = b"") -> bytes:
    return entry_record(h) + (data + bytes(DIGEST_SIZE) if h.kind == FILE else b"")


def _blocked(parent: bytes, *entries: tuple[Header, bytes], lie: tuple[int, int] = (0, 0)
             ) -> bytes:
    """A block of entries; ``lie`` is added to the count and payload its frame gives."""
    body = b"".join(_entry(h, d) for h, d in entries)
    payload = sum(h.payload_size for h, _ in entries)
    return block_frame(parent, len(entries) + lie[0], payload + lie[1], len(body)) + body


def _blocked_stream(*parts: bytes, entries: int, payload: int) -> bytes:
    return start_record("s") + b"".join(parts) + end_record(entries, payload)


def test_blocks_come_entry_by_entry_or_whole() -> None:
    a, b = _file(b"d/a", 5), _file(b"d/b", 0)
    link = Header("l", b"d/c", 0o120777, 0, 0, 1, 1, 0, 0, b"a")
    top = Header("d", b"d", 0o40755, 0, 0, 1, 1)
    raw = _blocked_stream(_entry(top), _blocked(b"d", (a, b"hello"), (b, b""), (link, b"")),
                          _blocked(b".", (_file(b"e", 1), b"x")),
                          entries=5, payload=a.payload_size + b.payload_size + 1 + 32)
    assert _read_all(raw) == [top, a, b, link, _file(b"e", 1)]
    rr = RecordReader(io.BytesIO(raw).read)
    rr.start()
    first = rr.next_item()
    assert not isinstance(first, Block) and first is not None and first[2] == b"d"
    block = rr.next_item()
    assert block == Block(b"d", 3, a.payload_size + b.payload_size, block.size)
    view = memoryview(bytearray(block.size))
    rr.read_block_into(view)
    assert [h for h, _ in split_records(view)] == [a, b, link]
    second = rr.next_item()
    assert isinstance(second, Block) and second.parent == b"."
    with pytest.raises(FormatError, match="neither read nor opened"):
        rr.next_item()


@pytest.mark.parametrize("case", ["other directory", "directory", "hard link", "count",
                                  "payload", "frame crc", "too big", "unsafe parent"])
def test_a_block_that_lies_is_refused(case: str) -> None:
    good = (_file(b"d/a", 3), b"abc")
    parts = {
        "other directory": _blocked(b"d", good, (_file(b"e/b", 0), b"")),
        "directory": _blocked(b"d", good, (Header("d", b"d/x", 0o40755, 0, 0, 1, 1), b"")),
        "hard link": _blocked(b"d", good, (Header("h", b"d/y", 0o100644, 0, 0, 1, 1, 0, 3,
                                                 b"d/a"), b"")),
        "count": _blocked(b"d", good, lie=(1, 0)),
        "payload": _blocked(b"d", good, lie=(0, 1)),
        "unsafe parent": _blocked(b"../d", good),
    }
    if case == "frame crc":
        raw = bytearray(_blocked(b"d", good))
        raw[FRAME.size + 13] ^= 1  # a byte of the parent's path
        block = bytes(raw)
    elif case == "too big":
        block = block_frame(b"d", 1, 35, MAX_BLOCK + 1)
    else:
        block = parts[case]
    raw = _blocked_stream(block, entries=2, payload=35)
    with pytest.raises(FormatError):
        _read_all(raw)


@pytest.mark.parametrize("change", [
    {"mode": 0o020644},  # a file whose mode says character device
    {"kind": "c", "mode": 0o100644},  # a device whose mode says regular file
    {"xattrs": (("user." + "n" * 251, b"v"),)},  # a name of 256 bytes
    {"xattrs": (("user.v", bytes((64 << 10) + 1)),)},
    {"xattrs": tuple((f"user.{i:02d}", bytes(64 << 10)) for i in range(17))},
    {"kind": "l", "mode": 0o120777, "target": b"t" * 4096, "extents": (), "size": 0},
    {"kind": "p", "mode": 0o10644, "target": b"t", "extents": (), "size": 0},
    {"path": b"n" * 256},
])
def test_decode_refuses_what_the_kernel_would_not_hold(change: dict[str, object]) -> None:
    ok = Header(FILE, b"a", 0o100644, 0, 0, 1, 1, 0, 10, b"", (), ((0, 10),))
    assert decode_header(encode_header(ok)) == ok
    with pytest.raises(FormatError):
        decode_header(encode_header(ok._replace(**change)))  # type: ignore[arg-type]

