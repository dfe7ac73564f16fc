"""The writers' checks of an entry against its manifest line: the shortcut for plain
whole files (plain_line) never passes what the general check (check_line) refuses, and
takes every plain file whose line is right."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resurgo.engine.errors import ArchiveDamaged
from resurgo.engine.manifest import Entry, encode_entry
from resurgo.engine.names import escape
from resurgo.engine.records import FILE, Header
from resurgo.engine.writer import check_line, plain_line

names = st.binary(min_size=1, max_size=12).filter(
    lambda b: b"/" not in b and b"\0" not in b and b not in (b".", b"..")
)
paths = st.lists(names, min_size=1, max_size=3).map(b"/".join)
FIELDS = ("kind", "path", "mode", "uid", "gid", "size", "mtime_ns", "rdev", "digest",
          "xattr_digest", "target")


def _line(e: Entry) -> bytes:
    return encode_entry(e).encode("utf-8", "surrogateescape").rstrip(b"\n")


@settings(max_examples=300)
@given(path=paths, mode=st.sampled_from([0o100644, 0o100755, 0o104755, 0o100600]),
       uid=st.integers(0, 70000), gid=st.integers(0, 70000), size=st.integers(0, 1 << 40),
       mtime=st.integers(-(1 << 62), 1 << 62), digest=st.binary(min_size=32, max_size=32),
       change=st.sampled_from((None, *FIELDS)), other=st.binary(min_size=1, max_size=8))
def test_plain_line_passes_only_what_check_line_passes(
        path: bytes, mode: int, uid: int, gid: int, size: int, mtime: int, digest: bytes,
        change: str | None, other: bytes) -> None:
    h = Header(FILE, path, mode, uid, gid, mtime, 0, 0, size, b"", (),
               ((0, size),) if size else ())
    e = Entry(FILE, path, mode, uid, gid, size, mtime, 5, 7, 0, digest.hex(), "", 0, b"")
    if change is not None:
        e = e._replace(**{change: {
            "kind": "l", "path": path + other.replace(b"/", b"_").replace(b"\0", b"_"),
            "mode": mode ^ 0o20, "uid": uid + 1, "gid": gid + 1, "size": size + 1,
            "mtime_ns": mtime + 1, "rdev": 1, "digest": bytes(b ^ 1 for b in digest).hex(),
            "xattr_digest": "ab" * 32, "target": b"t",
        }[change]})
    line = _line(e)
    payload = bytes(size % 7) + digest
    fast = plain_line(line, path, mode, uid, gid, size, mtime, digest)
    try:
        check_line(h, line, memoryview(payload), "a")
        passed = True
    except ArchiveDamaged:
        passed = False
    if fast:
        assert passed
    plain = escape(path).encode("utf-8", "surrogateescape") == path
    if change is None and plain:
        assert fast  # the shortcut is taken for a right line
    if change in ("kind", "mode", "uid", "gid", "size", "mtime_ns", "digest",
                  "xattr_digest") or (change == "path" and other.strip(b"/\0")):
        assert not fast


def test_an_escaped_path_goes_the_general_way() -> None:
    path = b"tab\there\\and\xff"
    e = Entry(FILE, path, 0o100644, 0, 0, 0, 1, 0, 0, 0, bytes(32).hex(), "", 0, b"")
    line = _line(e)
    assert b"\\x09" in line and not plain_line(line, path, 0o100644, 0, 0, 0, 1, bytes(32))
    check_line(Header(FILE, path, 0o100644, 0, 0, 1, 0, 0, 0), line, memoryview(bytes(32)),
               "a")
    with pytest.raises(ArchiveDamaged):
        check_line(Header(FILE, path + b"x", 0o100644, 0, 0, 1, 0, 0, 0), line,
                   memoryview(bytes(32)), "a")
