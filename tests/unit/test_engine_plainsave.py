"""The save's compiled path for plain files (_plainsave) changes nothing but speed: a save
with it makes the very set a save without it makes (every file through the general path),
byte for byte, and it takes the plain files and leaves everything else to that path."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from resurgo import digest as content_digest
from resurgo.engine import plainsave, save, walk
from resurgo.engine.records import MAX_BLOCK_ENTRIES

pytestmark = pytest.mark.skipif(plainsave.save_run is None,
                                reason="the compiled save path is not built")
ROOTED = os.geteuid() == 0
# An ACL granting uid 4242 read access (system.posix_acl_access as the kernel keeps it).
ACL = bytes.fromhex("02000000" "01000600ffffffff" "02000400" "92100000"
                    "04000400ffffffff" "10000400ffffffff" "20000400ffffffff")


def _tree(root: Path) -> None:
    many = root / "many"  # more entries than a block holds
    many.mkdir(parents=True)
    for i in range(MAX_BLOCK_ENTRIES + 80):
        (many / f"f{i:04d}").write_bytes(os.urandom(i % 300))
    big = root / "big"  # more bytes than a block holds
    big.mkdir()
    for i in range(6):
        (big / f"b{i}").write_bytes(os.urandom(900_000))
    (big / "c-over").write_bytes(os.urandom(save.SMALL + 1))  # the streaming path
    mixed = root / "mixed"
    (mixed / "m-sub").mkdir(parents=True)
    (mixed / "m-sub/inside").write_bytes(b"below")
    for name in (b"a", b"caf\xe9", b"tab\there", b"back\\slash", "ünï".encode(), b"z-last"):
        Path(os.fsdecode(bytes(mixed) + b"/" + name)).write_bytes(name * 3)
    (mixed / "empty").write_bytes(b"")
    (mixed / "x-attr").write_bytes(b"with an attribute")
    os.setxattr(mixed / "x-attr", "user.comment", b"hello")
    (mixed / "x-acl").write_bytes(b"with an ACL")
    os.setxattr(mixed / "x-acl", "system.posix_acl_access", ACL)
    (mixed / "h-one").write_bytes(b"linked")
    os.link(mixed / "h-one", mixed / "h-two")
    os.symlink("a", mixed / "l-link")
    os.mkfifo(mixed / "p-fifo")
    with open(mixed / "s-sparse", "wb") as f:
        f.truncate(1 << 20)
        f.seek(600_000)
        f.write(b"data after a hole")
    (mixed / "t-old").write_bytes(b"before 1970")
    os.utime(mixed / "t-old", ns=(-5, -123_456_789))
    (mixed / "w-mode").write_bytes(b"mode 0")
    os.chmod(mixed / "w-mode", 0o4000 if ROOTED else 0o600)
    if ROOTED:
        os.chown(mixed / "a", 4242, 4343)
    (root / "excl").mkdir()
    (root / "excl/keep").write_bytes(b"kept")
    (root / "excl/skip").write_bytes(b"excluded")


def _saved(src: Path, out: Path, progress: list[tuple[int, int]]) -> tuple[
        save.SaveResult, bytes, bytes]:
    out.mkdir()
    with open(out / "a", "wb") as a, open(out / "m", "wb") as m:
        result = save.save_tree(src, a, m, set_id="s", excludes=[b"excl/skip"],
                                progress=lambda n, size: progress.append((n, size)))

    def plain(name: str) -> bytes:
        return subprocess.run(["zstd", "-dc", str(out / name)], capture_output=True,
                              check=True).stdout

    return result, plain("a"), plain("m")


def test_the_compiled_path_makes_the_set_the_general_path_makes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if shutil.which("zstd") is None:
        pytest.skip("zstd is not installed")
    src = tmp_path / "src"
    _tree(src)
    # Listed once before: the first listing of a new directory moves its atime (relatime),
    # a save's listing as much as any (files are read with O_NOATIME).
    for _ in os.walk(src):
        pass
    taken: list[int] = []
    run = plainsave.save_run
    assert run is not None

    def counted(*args: object) -> tuple[int, int, bytes, bytes, int, int]:
        got = run(*args)  # type: ignore[arg-type]
        taken.append(got[4])
        return got

    monkeypatch.setattr(plainsave, "save_run", counted)
    fast_progress: list[tuple[int, int]] = []
    fast = _saved(src, tmp_path / "fast", fast_progress)
    monkeypatch.setattr(plainsave, "save_run", None)
    monkeypatch.setattr(walk, "listed", walk.sorted_names)
    slow_progress: list[tuple[int, int]] = []
    slow = _saved(src, tmp_path / "slow", slow_progress)
    assert fast[1] == slow[1]  # the archive's plaintext
    assert fast[2] == slow[2]  # the manifest's
    assert fast[0] == slow[0]
    assert fast_progress[-1] == slow_progress[-1] == (fast[0].entries, fast[0].data_bytes)
    # Every plain file went the compiled way: the many, the big but the one over 1 MiB,
    # in mixed a, empty, t-old, w-mode, z-last and m-sub/inside, and excl/keep; the rest
    # (names the manifest escapes, attributes, links, holes...) the general path's.
    assert sum(taken) == MAX_BLOCK_ENTRIES + 80 + 6 + 6 + 1
    assert b"user.comment" in fast[1] and b"system.posix_acl_access" in fast[1]
    lines = {line.split(b"\t")[1]: line for line in fast[2].splitlines() if line[:1] != b"#"}
    assert b"excl/skip" not in lines and b"excl/keep" in lines
    assert lines[b"mixed/h-two"].startswith(b"h\t")
    assert lines[b"mixed/caf\\xe9"].startswith(b"f\t")


def test_the_names_come_as_the_general_path_lists_them(tmp_path: Path) -> None:
    names = [b"b", b"a", b"ab", b"a\xff", b"\x01", b"Z", b"a b", b"." * 3, b"x" * 255]
    for name in names:
        Path(os.fsdecode(bytes(tmp_path) + b"/" + name)).write_bytes(b"")
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert plainsave.sorted_names is not None
        assert plainsave.sorted_names(fd) == walk.sorted_names(fd) == sorted(names)
    finally:
        os.close(fd)


def _run(top: Path, names: list[bytes], *, prefix: bytes = b"", room: int = 1 << 22,
         entries: int = 1024) -> tuple[int, int, bytes, bytes, int, int]:
    run = plainsave.save_run
    assert run is not None
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return run(fd, names, 0, len(names), prefix, os.fstat(fd).st_dev, 0, room, entries,
                   content_digest.of)
    finally:
        os.close(fd)


@pytest.mark.parametrize("odd", ["dir", "symlink", "xattr", "link", "name", "missing"])
def test_it_stops_at_what_is_not_a_plain_file(tmp_path: Path, odd: str) -> None:
    (tmp_path / "a").write_bytes(b"one")
    name = b"b"
    if odd == "dir":
        (tmp_path / "b").mkdir()
    elif odd == "symlink":
        os.symlink("a", tmp_path / "b")
    elif odd == "xattr":
        (tmp_path / "b").write_bytes(b"two")
        os.setxattr(tmp_path / "b", "user.x", b"1")
    elif odd == "link":
        os.link(tmp_path / "a", tmp_path / "b")
        (tmp_path / "c").write_bytes(b"three")
        status, index, *_ = _run(tmp_path, [b"c", b"b"])
        assert (status, index) == (plainsave.GENERAL, 1)
        return
    elif odd == "name":
        name = b"b\\x"
        (tmp_path / "b\\x").write_bytes(b"two")
    (tmp_path / "z").write_bytes(b"after")
    status, index, records, lines, files, size = _run(tmp_path, [b"a", name, b"z"])
    assert (status, index, files, size) == (plainsave.GENERAL, 1, 1, 3)
    assert lines.startswith(b"f\ta\t") and lines.count(b"\n") == 1
    assert records.endswith(b"one" + content_digest.of(b"one"))


def test_it_stops_where_the_block_is_full(tmp_path: Path) -> None:
    for name in (b"a", b"b", b"c"):
        (tmp_path / os.fsdecode(name)).write_bytes(name * 1000)
    status, index, records, _, files, _ = _run(tmp_path, [b"a", b"b", b"c"], entries=2)
    assert (status, index, files) == (plainsave.FULL, 2, 2)
    one = len(records) // 2
    status, index, _, _, files, _ = _run(tmp_path, [b"a", b"b", b"c"], room=2 * one + 10)
    assert (status, index, files) == (plainsave.FULL, 2, 2)
    status, index, _, _, files, _ = _run(tmp_path, [b"a", b"b", b"c"], prefix=b"tab\t/")
    assert (status, index, files) == (plainsave.GENERAL, 0, 0)
    status, index, _, _, files, _ = _run(tmp_path, [b"a", b"b", b"c"])
    assert (status, index, files) == (plainsave.REACHED, 3, 3)


def test_a_saver_without_the_compiled_path_takes_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plainsave, "save_run", None)
    saver = save._Saver(None, None, 0)  # type: ignore[arg-type]
    assert saver.plain_files() is None


@pytest.mark.parametrize("at", [0, 1, 9, 30, 63])
def test_a_long_run_stops_at_the_first_file_it_cannot_take(tmp_path: Path, at: int) -> None:
    """Found only once the file is open (an attribute): the files before it are taken
    whole and in order, whichever of the two threads that read a long run read them."""
    names = [b"f%02d" % i for i in range(64)]
    for i, name in enumerate(names):
        (tmp_path / os.fsdecode(name)).write_bytes(name * i)
    os.setxattr(tmp_path / os.fsdecode(names[at]), "user.x", b"1")
    for _ in range(20):
        status, index, records, lines, files, size = _run(tmp_path, names)
        assert (status, index, files) == (plainsave.GENERAL, at, at)
        assert size == sum(len(n) * i for i, n in enumerate(names[:at]))
        assert lines.count(b"\n") == at
        assert [line.split(b"\t")[1] for line in lines.splitlines()] == names[:at]
        for i, name in enumerate(names[:at]):
            data = name * i
            assert data + content_digest.of(data) in records


def test_a_forked_child_reads_with_a_helper_of_its_own(tmp_path: Path) -> None:
    """The helper thread is the parent's: a child made by fork starts its own."""
    names = [b"f%02d" % i for i in range(32)]
    for name in names:
        (tmp_path / os.fsdecode(name)).write_bytes(name)
    assert _run(tmp_path, names)[4] == 32  # the parent's helper is running
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        ok = False
        try:
            ok = _run(tmp_path, names)[4] == 32
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
