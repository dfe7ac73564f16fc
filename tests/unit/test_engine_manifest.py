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
        _read(good.replace(b"manifest 3", b"manifest 7"))
    with pytest.raises(ManifestError, match="version 1"):  # sha256 digests: not read
        _read(good.replace(b"manifest 3", b"manifest 1"))
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


def test_changed_files_follow_the_entries_and_are_read_back() -> None:
    header = ManifestHeader(("s0",))
    out = io.BytesIO()
    w = ManifestWriter(out.write, header)
    for path in (b"a", b"b", b"c\n"):
        w.add(_entry(path))
        if path != b"b":
            w.changed(path)
    w.finish()
    raw = out.getvalue()
    assert raw.startswith(b"#resurgo-manifest 3\n")
    assert raw.endswith(b"#changed a\n#changed c\\x0a\n#end 3\n")
    for read in ("iterate", "lines", "byte_lines", "raw"):
        r = ManifestReader(io.BytesIO(raw))
        got = list(r) if read == "iterate" else list(getattr(r, read)())
        assert len(got) == 3 and r.changed == [b"a", b"c\n"], read


def test_a_version_2_manifest_is_still_read_and_has_no_changed_lines() -> None:
    header = ManifestHeader(("s0",))
    v3 = _write(header, [_entry(b"a")])
    v2 = v3.replace(b"manifest 3", b"manifest 2")
    r = ManifestReader(io.BytesIO(v2))
    assert [e.path for e in r] == [b"a"] and r.changed == [] and r.version == "2"
    with pytest.raises(ManifestError, match="header line among the entries"):
        list(ManifestReader(io.BytesIO(v2.replace(b"#end", b"#changed a\n#end"))))


def test_changed_lines_are_checked() -> None:
    header = ManifestHeader(("s0",))
    good = _write(header, [_entry(b"a"), _entry(b"b")])

    def with_lines(*lines: bytes) -> bytes:
        return good.replace(b"#end", b"".join(lines) + b"#end")

    assert ManifestReader(io.BytesIO(with_lines(b"#changed a\n", b"#changed b\n"))).header
    with pytest.raises(ManifestError, match="walk order"):
        list(ManifestReader(io.BytesIO(with_lines(b"#changed b\n", b"#changed a\n"))))
    with pytest.raises(ManifestError, match="more #changed lines than entries"):
        list(ManifestReader(io.BytesIO(with_lines(*[b"#changed %d\n" % i for i in range(3)]))))
    with pytest.raises(ManifestError, match=r"unsafe|relative|bad line"):
        list(ManifestReader(io.BytesIO(with_lines(b"#changed ../etc\n"))))
    with pytest.raises(ManifestError, match="truncated"):
        list(ManifestReader(io.BytesIO(good[: good.index(b"#end")] + b"#changed a\n")))
    with pytest.raises(ManifestError, match="header line among the entries"):
        list(ManifestReader(io.BytesIO(with_lines(b"#other a\n"))))
