"""The manifest of resurgo.engine: its lines, header, order and end (pure)."""

from __future__ import annotations

import io

import pytest
from hypothesis import given
from hypothesis import strategies as st

from resurgo.engine.manifest import (
    Entry,
    ManifestError,
    ManifestHeader,
    ManifestReader,
    ManifestWriter,
    decode_entry,
    encode_entry,
    xattr_digest,
)
from resurgo.engine.names import walk_key

names = st.binary(min_size=1, max_size=30).filter(
    lambda b: b"/" not in b and b"\0" not in b and b not in (b".", b"..")
)
paths = st.lists(names, min_size=1, max_size=5).map(b"/".join)
hexdigests = st.one_of(st.just(""), st.binary(min_size=32, max_size=32).map(bytes.hex))


@st.composite
def entries(draw: st.DrawFn, sets: int = 3) -> Entry:
    kind = draw(st.sampled_from("fdlhcbp"))
    return Entry(
        kind=kind,
        path=draw(paths),
        mode=draw(st.integers(0, 0o177777)),
        uid=draw(st.integers(0, 2**32 - 1)),
        gid=draw(st.integers(0, 2**32 - 1)),
        size=draw(st.integers(0, 2**63)),
        mtime_ns=draw(st.integers(-(2**62), 2**62)),
        ctime_ns=draw(st.integers(0, 2**62)),
        ino=draw(st.integers(0, 2**64 - 1)),
        rdev=draw(st.integers(0, 2**64 - 1)),
        digest=draw(hexdigests),
        xattr_digest=draw(hexdigests),
        set_index=draw(st.integers(0, sets - 1)),
        target=draw(paths) if kind in "lh" else b"",
    )


@given(entries())
def test_entry_round_trip(e: Entry) -> None:
    line = encode_entry(e)
    assert line.endswith("\n") and line.count("\n") == 1
    assert decode_entry(line) == e


def _write(header: ManifestHeader, es: list[Entry]) -> bytes:
    out = io.BytesIO()
    w = ManifestWriter(out.write, header)
    for e in es:
        w.add(e)
    w.finish()
    return out.getvalue()


def _read(raw: bytes) -> tuple[ManifestHeader, list[Entry]]:
    r = ManifestReader(io.BytesIO(raw))
    return r.header, list(r)


@given(st.lists(entries(), max_size=40, unique_by=lambda e: e.path))
def test_manifest_round_trip(es: list[Entry]) -> None:
    es.sort(key=lambda e: walk_key(e.path))
    header = ManifestHeader(("full", "inc1", "inc2"), b"/srv/\xff", (b"backup",), (b"tmp",))
    assert _read(_write(header, es)) == (header, es)


def _entry(path: bytes, set_index: int = 0) -> Entry:
    return Entry("f", path, 0o100644, 0, 0, 1, 1, 1, 1, 0, "ab" * 32, "", set_index, b"")


def test_manifest_refuses_damage() -> None:
    header = ManifestHeader(("s0",))
    good = _write(header, [_entry(b"a"), _entry(b"b")])
    assert len(_read(good)[1]) == 2
    with pytest.raises(ManifestError, match="truncated"):
        _read(good[: good.index(b"#end")])
    with pytest.raises(ManifestError, match="counts"):
        _read(good.replace(b"#end 2", b"#end 3"))
    with pytest.raises(ManifestError, match="walk order"):
        _read(_write(header, [_entry(b"b"), _entry(b"a")]))
    with pytest.raises(ManifestError, match="names set 1"):
        _read(_write(header, [_entry(b"a", set_index=1)]))
    with pytest.raises(ManifestError, match="fields"):
        _read(good.replace(b"\ta\t", b"\ta\tx\t"))
    with pytest.raises(ManifestError, match="not a resurgo manifest"):
        _read(b"hello\n")
    with pytest.raises(ManifestError, match="version 7"):
        _read(good.replace(b"manifest 2", b"manifest 7"))
    with pytest.raises(ManifestError, match="version 1"):  # sha256 digests: not read
        _read(good.replace(b"manifest 2", b"manifest 1"))
    with pytest.raises(ManifestError, match=r"unsafe|relative"):
        _read(good.replace(b"\ta\t", b"\t../a\t"))
    with pytest.raises(ManifestError, match="after the end"):
        _read(good + _write(header, [])[-20:])


def test_xattr_digest_ignores_order_and_separates_values() -> None:
    a = [("user.a", b"1"), ("user.b", b"2")]
    assert xattr_digest(a) == xattr_digest(list(reversed(a)))
    assert xattr_digest([]) == ""
    assert xattr_digest([("user.a", b"12")]) != xattr_digest([("user.a1", b"2")])


def test_lines_are_counted_against_the_end_line() -> None:
    header = ManifestHeader(("s0",))
    good = _write(header, [_entry(b"a"), _entry(b"b")])
    assert [decode_entry(line).path for line in ManifestReader(io.BytesIO(good)).lines()] == [
        b"a", b"b"]
    with pytest.raises(ManifestError, match="counts"):
        list(ManifestReader(io.BytesIO(good.replace(b"#end 2", b"#end 1"))).lines())
    with pytest.raises(ManifestError, match="truncated"):
        list(ManifestReader(io.BytesIO(good[: good.index(b"#end")])).lines())
