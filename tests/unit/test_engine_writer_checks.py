"""The writers' compiled path for plain whole files (_plainfiles) changes nothing but
speed: on right runs of entries and on damaged ones, a writer with it makes the same files
and refuses the same way as a writer without it (every entry through the general checks),
and it takes every plain file whose record and manifest line are right."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resurgo import digest as content_digest
from resurgo.engine import _plainfiles, writer
from resurgo.engine.errors import ArchiveDamaged, ArchiveError
from resurgo.engine.manifest import Entry, encode_entry
from resurgo.engine.names import ROOT, escape
from resurgo.engine.records import DIGEST_SIZE, FILE, Header, whole_file_record
from resurgo.engine.writer import Applier, check_line

names = st.one_of(
    st.binary(min_size=1, max_size=12),
    st.text(st.characters(min_codepoint=32, max_codepoint=0x2ff), min_size=1, max_size=12)
    .map(str.encode),
).filter(
    lambda b: b"/" not in b and b"\0" not in b and b not in (b".", b"..")
)
parents = st.one_of(st.just(ROOT), st.lists(names, min_size=1, max_size=2).map(b"/".join))
ROOTED = os.geteuid() == 0
owners = st.integers(0, 70000) if ROOTED else st.just(os.geteuid())
groups = st.integers(0, 70000) if ROOTED else st.just(os.getegid())
FIELDS = ("kind", "path", "mode", "uid", "gid", "size", "mtime_ns", "rdev", "digest",
          "xattr_digest", "target")


def _line(e: Entry) -> bytes:
    return encode_entry(e).encode("utf-8", "surrogateescape").rstrip(b"\n")


def _tree(top: str, times: bool) -> dict[str, tuple[bytes, int, int, int, int]]:
    out = {}
    for d, _, files in os.walk(top):
        for f in files:
            p = os.path.join(d, f)
            st_ = os.lstat(p)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, top)] = (fh.read(), st_.st_mode, st_.st_uid, st_.st_gid,
                                                st_.st_mtime_ns if times else 0)
    return out


def _apply(records: bytes, lines: bytes, parent: bytes, entries: int, payload: int,
           top: str) -> tuple[int, int] | str:
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    applier = Applier(fd, "a")
    try:
        return applier.apply(memoryview(records), lines, parent, entries, payload)
    except ArchiveDamaged as e:
        return f"{e.why} {e.paths}"
    except ArchiveError as e:  # UnsafePath: out of order, twice
        return f"{e.message} {e.paths}"
    finally:
        applier.close()
        os.close(fd)


@settings(max_examples=250, deadline=None)
@given(parent=parents, files=st.lists(
           st.tuples(names, st.sampled_from([0o100644, 0o100755, 0o104755, 0o100600]),
                     owners, groups, st.binary(max_size=3000),
                     st.integers(-(1 << 60), 1 << 60)),
           min_size=1, max_size=4, unique_by=lambda f: f[0]),
       change=st.sampled_from((None, "flip", "raw", *FIELDS)), at=st.integers(0, 1 << 20),
       other=st.binary(min_size=1, max_size=8))
def test_the_compiled_path_changes_nothing_but_speed(
        parent: bytes, files: list[tuple[bytes, int, int, int, bytes, int]],
        change: str | None, at: int, other: bytes) -> None:
    records = bytearray()
    lines = []
    payload = 0
    files = sorted(files)  # a directory's entries in walk order: names as bytes
    for name, mode, uid, gid, data, mtime in files:
        path = name if parent == ROOT else parent + b"/" + name
        digest = content_digest.of(data)
        records += whole_file_record(path, mode, uid, gid, mtime, mtime - 7, len(data))
        records += data + digest
        payload += len(data) + DIGEST_SIZE
        lines.append(Entry(FILE, path, mode, uid, gid, len(data), mtime, 5, 7, 0,
                           digest.hex(), "", 0, b""))
    victim = at % len(files)
    if change == "flip":
        records[at % len(records)] ^= 1 << (at % 8)
    elif change is not None and change != "raw":
        e = lines[victim]
        lines[victim] = e._replace(**{change: {
            "kind": "l", "path": e.path + other.replace(b"/", b"_").replace(b"\0", b"_"),
            "mode": e.mode ^ 0o20, "uid": e.uid + 1, "gid": e.gid + 1, "size": e.size + 1,
            "mtime_ns": e.mtime_ns + 1, "rdev": 1,
            "digest": bytes(b ^ 1 for b in bytes.fromhex(e.digest)).hex(),
            "xattr_digest": "ab" * 32, "target": b"t",
        }[change]})
    texts = [_line(e) for e in lines]
    if change == "raw":  # the path as it is, unescaped: a line split by a tab, say
        fields = texts[victim].split(b"\t")
        texts[victim] = b"\t".join([fields[0], lines[victim].path, *fields[2:]])
    text = b"".join(t + b"\n" for t in texts)
    raw = bytes(records)
    with tempfile.TemporaryDirectory() as fast, tempfile.TemporaryDirectory() as slow:
        with_it = _apply(raw, text, parent, len(files), payload, fast)
        make = writer.make_plain
        writer.make_plain = writer._make_none
        try:
            without = _apply(raw, text, parent, len(files), payload, slow)
        finally:
            writer.make_plain = make
        assert with_it == without
        # A refused file's partial data stays behind, with the time it was made.
        ok = not isinstance(without, str)
        assert _tree(fast, ok) == _tree(slow, ok)
    if change is None:
        # Taken whole by the compiled path, the directory made beforehand.
        with tempfile.TemporaryDirectory() as top:
            d = Path(top, os.fsdecode(parent))
            d.mkdir(parents=True, exist_ok=True)
            fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
            try:
                prefix = b"" if parent == ROOT else parent + b"/"
                pos, index, made, size = _plainfiles.make(
                    raw, 0, [*text.split(b"\n")], 0, fd, prefix, os.geteuid(), os.getegid(),
                    0o22, False, content_digest.of)
            finally:
                os.close(fd)
            if all(escape(p.path).encode("utf-8", "surrogateescape") == p.path
                   for p in lines):  # else its manifest line is escaped: the general way
                assert (pos, index, made) == (len(raw), len(files), len(files))
                assert size == sum(len(f[4]) for f in files)


def test_the_writers_use_the_compiled_path() -> None:
    """Built with resurgo (pip install) and of the API the writer speaks."""
    assert writer.make_plain is _plainfiles.make


def test_it_stops_before_what_it_does_not_take() -> None:
    """A file in the way: the compiled path makes the file before it and stops there."""
    def record(name: bytes, data: bytes) -> tuple[bytes, bytes]:
        digest = content_digest.of(data)
        e = Entry(FILE, name, 0o100644, os.geteuid(), os.getegid(), len(data), 10**18, 5, 7,
                  0, digest.hex(), "", 0, b"")
        return (whole_file_record(name, 0o100644, os.geteuid(), os.getegid(), 10**18, 10**18,
                                  len(data)) + data + digest, _line(e))

    (r1, l1), (r2, l2) = record(b"a", b"one"), record(b"b", b"two")
    with tempfile.TemporaryDirectory() as top:
        Path(top, "b").write_bytes(b"in the way")
        fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
        try:
            got = _plainfiles.make(r1 + r2, 0, [l1, l2, b""], 0, fd, b"", os.geteuid(),
                                   os.getegid(), 0o22, False, content_digest.of)
        finally:
            os.close(fd)
        assert got == (len(r1), 1, 1, 3)
        assert Path(top, "a").read_bytes() == b"one"
        assert Path(top, "a").stat().st_mtime_ns == 10**18
        assert Path(top, "b").read_bytes() == b"in the way"


def test_an_escaped_path_goes_the_general_way() -> None:
    path = b"tab\there\\and\xff"
    e = Entry(FILE, path, 0o100644, 0, 0, 0, 1, 0, 0, 0, bytes(32).hex(), "", 0, b"")
    line = _line(e)
    assert b"\\x09" in line
    check_line(Header(FILE, path, 0o100644, 0, 0, 1, 0, 0, 0), line, memoryview(bytes(32)),
               "a")
    with pytest.raises(ArchiveDamaged):
        check_line(Header(FILE, path + b"x", 0o100644, 0, 0, 1, 0, 0, 0), line,
                   memoryview(bytes(32)), "a")


@settings(max_examples=300, deadline=None)
@given(st.lists(names, max_size=6), st.booleans())
def test_the_compiled_order_check_agrees_with_the_general_one(
        picked: list[bytes], walk: bool) -> None:
    """A run's lines in strict byte order of their paths, each once: the compiled check
    passes exactly those the general one passes (an escaped path is left to it)."""
    if walk:
        picked = sorted(set(picked))
    texts = [_line(Entry(FILE, b"d/" + n, 0o100644, 0, 0, 0, 1, 0, 0, 0, "", "", 0, b""))
             for n in picked] + [b""]

    def general() -> bool:
        saved = writer.lines_ordered
        writer.lines_ordered = None
        try:
            writer.check_order(texts, "a")
            return True
        except ArchiveError:
            return False
        finally:
            writer.lines_ordered = saved

    fast = _plainfiles.ordered(texts)
    assert general() == (picked == sorted(set(picked)))
    if fast < 0:
        assert general()
    elif general():
        assert b"\\" in texts[fast]  # escaped: the general check decides
