"""Files changed while a save reads them: fstat before and after each read; one that moved
is read once more, one that moves again is listed as changed (the manifest's #changed
lines, SaveResult.changed), and what was stored still restores and verifies."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from resurgo.engine import Source, plainsave, restore_tree, save, verify_tree
from resurgo.engine.manifest import Entry
from resurgo.engine.source import ManifestStream
from tests.support.trees import assert_same_trees, snapshot, without, write

pytestmark = [pytest.mark.storage, pytest.mark.usefixtures("engine_tools")]

MIB = 1 << 20


def _saved(src: Path, out: Path) -> tuple[save.SaveResult, dict[bytes, Entry], list[bytes]]:
    archive, manifest = out / "s.archive", out / "s.manifest"
    with open(archive, "wb") as a, open(manifest, "wb") as m:
        result = save.save_tree(src, a, m, set_id="s")
    with ManifestStream(Source.file(manifest), None) as ms:
        entries = {e.path: e for e in ms.entries()}
        changed = list(ms.reader.changed)
    return result, entries, changed


def _restored_and_verified(out: Path) -> Path:
    target = out / "target"
    target.mkdir()
    archive = Source.file(out / "s.archive")
    restore_tree(target, Source.file(out / "s.manifest"), lambda set_id: archive)
    assert verify_tree(target, Source.file(out / "s.manifest")) == []
    return target


@pytest.fixture
def writes_during_reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[bytes, int]]:
    """A test-only saver that appends to a file of the tree just before each read of it
    (between the fstat before and the read), as many times as the test says. Every file
    takes the general path (the compiled one has no such hook: see
    test_a_tiny_file_changed_under_the_compiled_path_is_listed)."""
    times: dict[bytes, int] = {}
    monkeypatch.setattr(plainsave, "save_run", None)

    class Meddling(save._Saver):
        root: Path

        def fitting(self, rel: bytes, xattrs: tuple[tuple[str, bytes], ...]
                    ) -> tuple[tuple[str, bytes], ...]:
            if times.get(rel, 0) > 0:
                times[rel] -= 1
                with open(Meddling.root / os.fsdecode(rel), "ab") as f:
                    f.write(b"appended\n")
            return super().fitting(rel, xattrs)

    monkeypatch.setattr(save, "_Saver", Meddling)
    yield times


def test_a_small_file_changed_once_is_read_again(
        tmp_path: Path, writes_during_reads: dict[bytes, int]) -> None:
    src = tmp_path / "src"
    write(src / "log", b"first line\n")
    write(src / "quiet", b"untouched\n")
    save._Saver.root = src  # type: ignore[attr-defined]
    writes_during_reads[b"log"] = 1
    result, entries, changed = _saved(src, tmp_path)
    assert writes_during_reads[b"log"] == 0
    assert changed == [] and result.changed == () and result.changed_count == 0
    now = os.stat(src / "log")
    # The second read is what was stored, with the metadata seen before it.
    assert entries[b"log"].size == now.st_size == len(b"first line\nappended\n")
    assert entries[b"log"].ctime_ns == now.st_ctime_ns
    target = _restored_and_verified(tmp_path)
    assert (target / "log").read_bytes() == b"first line\nappended\n"


def test_a_small_file_changed_twice_is_listed_as_changed(
        tmp_path: Path, writes_during_reads: dict[bytes, int]) -> None:
    src = tmp_path / "src"
    write(src / "a", b"a\n")
    write(src / "db/journal", b"begin\n")
    write(src / "z", b"z\n")
    save._Saver.root = src  # type: ignore[attr-defined]
    writes_during_reads[b"db/journal"] = 2
    result, entries, changed = _saved(src, tmp_path)
    assert changed == [b"db/journal"]
    assert result.changed == ("db/journal",) and result.changed_count == 1
    # Stored: the second read, with the fstat before it, which the file has moved on from
    # (so an incremental save reads it again).
    e = entries[b"db/journal"]
    assert e.size == len(b"begin\nappended\n") != os.stat(src / "db/journal").st_size
    target = _restored_and_verified(tmp_path)
    assert (target / "db/journal").read_bytes() == b"begin\nappended\n"
    assert (target / "a").read_bytes() == b"a\n"


def test_a_large_file_that_only_moved_its_times_stands(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src"
    big = write(src / "big", os.urandom(3 * MIB))
    grown = write(src / "grown", os.urandom(3 * MIB))

    class Touching(save._Saver):
        def copy_data(self, fd: int, rel: bytes, size: int,
                      extents: tuple[tuple[int, int], ...]) -> bytes:
            digest = super().copy_data(fd, rel, size, extents)
            if rel == b"big":
                os.utime(big, ns=(1, 2))  # ctime and mtime move, not the content
            else:
                with open(grown, "ab") as f:
                    f.write(b"more")
            return digest

    monkeypatch.setattr(save, "_Saver", Touching)
    result, entries, changed = _saved(src, tmp_path)
    # Read again: the same content, steady: what was stored stands. The grown file
    # differs on its second read.
    assert changed == [b"grown"] and result.changed_count == 1
    assert entries[b"grown"].size == 3 * MIB
    target = _restored_and_verified(tmp_path)
    assert (target / "big").read_bytes() == big.read_bytes()
    assert (target / "grown").read_bytes() == grown.read_bytes()[:3 * MIB]


APPENDER = """
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND)
line = b"x" * 100 + b"\\n"
os.write(fd, line)
while True:
    os.write(fd, line)
"""


def test_a_file_appended_by_another_process_during_the_save_is_listed(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write(src / "a/early", b"early\n")
    log = write(src / "log", os.urandom(48 * MIB))
    write(src / "z/late", b"late\n")
    size = log.stat().st_size
    writer = subprocess.Popen([sys.executable, "-I", "-c", APPENDER, str(log)])
    try:
        deadline = time.monotonic() + 30
        while log.stat().st_size == size:  # it writes
            assert time.monotonic() < deadline and writer.poll() is None
            time.sleep(0.01)
        result, entries, changed = _saved(src, tmp_path)
    finally:
        writer.kill()
        writer.wait()
    assert changed == [b"log"] and result.changed == ("log",) and result.changed_count == 1
    assert entries[b"log"].size < log.stat().st_size
    assert b"a/early" in entries and b"z/late" in entries
    target = _restored_and_verified(tmp_path)
    stored = (target / "log").read_bytes()
    assert stored == log.read_bytes()[:len(stored)]  # appended to, never rewritten


# Appends a byte to a file each time another process opens or reads it, before letting
# it: a change made exactly while the save reads that file (fanotify permission events,
# root only). Its own appends go through a descriptor opened before the mark.
WATCHER = r"""
import ctypes, os, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.fanotify_mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int,
                               ctypes.c_char_p]
FAN_CLASS_CONTENT, FAN_CLOEXEC, FAN_MARK_ADD, FAN_ALLOW = 0x4, 0x1, 0x1, 0x1
FAN_OPEN_PERM, FAN_ACCESS_PERM, AT_FDCWD = 0x10000, 0x20000, -100
out = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND)
fan = libc.fanotify_init(FAN_CLASS_CONTENT | FAN_CLOEXEC, os.O_RDONLY)
if fan < 0 or libc.fanotify_mark(fan, FAN_MARK_ADD, FAN_OPEN_PERM | FAN_ACCESS_PERM,
                                 AT_FDCWD, sys.argv[1].encode()) != 0:
    print("unsupported", os.strerror(ctypes.get_errno()), flush=True)
    sys.exit(0)
print("ready", flush=True)
EVENT = struct.Struct("IBBHQii")  # fanotify_event_metadata
while True:
    events = os.read(fan, 4096)
    pos = 0
    while pos < len(events):
        length, _, _, _, _, fd, _ = EVENT.unpack_from(events, pos)
        os.write(out, b"+")
        os.write(fan, struct.pack("iI", fd, FAN_ALLOW))
        os.close(fd)
        pos += length
"""


def test_a_tiny_file_changed_under_the_compiled_path_is_listed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Many tiny files, with attributes, ACLs and hard links among them, and one that
    changes whenever it is opened or read: the compiled path takes the plain ones, hands
    that one to the general path, which reads it twice more and lists it as changed;
    the rest restores identical."""
    run = plainsave.save_run
    if run is None:
        pytest.skip("the compiled save path is not built")
    if os.geteuid() != 0:
        pytest.skip("fanotify's permission events need root")
    src = tmp_path / "src"
    for d in range(4):
        for i in range(300):
            write(src / f"d{d}/f{i:03d}", os.urandom(i % 200), owner=(i % 3, 7 * d))
        os.setxattr(src / f"d{d}/f100", "user.note", b"attribute %d" % d)
        subprocess.run(["setfacl", "-m", "u:4242:rw", str(src / f"d{d}/f200")], check=True)
        os.link(src / f"d{d}/f050", src / f"d{d}/f050-link")
    journal = write(src / "d2/f150", b"begin\n")
    expected = without(snapshot(src), excluded=(b"d2/f150",))
    taken: list[int] = []

    def counted(*args: object) -> tuple[int, int, bytes, bytes, int, int]:
        got = run(*args)  # type: ignore[arg-type]
        taken.append(got[4])
        return got

    monkeypatch.setattr(plainsave, "save_run", counted)
    watcher = subprocess.Popen([sys.executable, "-I", "-c", WATCHER, str(journal)],
                               stdout=subprocess.PIPE, text=True)
    try:
        assert watcher.stdout is not None
        ready = watcher.stdout.readline().strip()
        if ready != "ready":
            pytest.skip(f"no fanotify permission events here: {ready}")
        result, entries, changed = _saved(src, tmp_path)
    finally:
        watcher.kill()
        watcher.wait()
    assert changed == [b"d2/f150"] and result.changed_count == 1
    # All but the attribute, the ACL and the two links of each directory, and the
    # changing one.
    assert sum(taken) == 4 * (301 - 4) - 1
    # Stored: the general path's second read, each open and read of it one byte more.
    assert entries[b"d2/f150"].size == len(b"begin\n") + 4
    target = _restored_and_verified(tmp_path)
    assert (target / "d2/f150").read_bytes() == b"begin\n++++"
    assert_same_trees(expected, without(snapshot(target), excluded=(b"d2/f150",)))


def test_a_time_beyond_what_a_set_stores_is_noted_and_restored_as_the_nearest_end(
        tmp_path: Path) -> None:
    # ext4 keeps times to 2446; a set's records hold i64 nanoseconds (to 2262-04-11).
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    out.mkdir()
    far = 10_000_000_000 * 10**9  # 2286-11-20
    write(src / "future", b"from the future")
    write(src / "dir/inside", b"x" * 5000)
    os.utime(src / "future", ns=(far, far))
    os.utime(src / "dir", ns=(far, 1_000_000_000 * 10**9))
    if os.stat(src / "future").st_mtime_ns != far:
        pytest.skip("this file system does not keep times past 2262")
    result, entries, _ = _saved(src, out)
    assert sorted(result.notes) == [
        "dir: its atime (10000000000 s after 1970) is outside what a set stores (1677 to "
        "2262): restored as the nearest end",
        "future: its atime (10000000000 s after 1970) is outside what a set stores (1677 to "
        "2262): restored as the nearest end",
        "future: its mtime (10000000000 s after 1970) is outside what a set stores (1677 to "
        "2262): restored as the nearest end",
    ]
    assert entries[b"future"].mtime_ns == (1 << 63) - 1
    target = out / "target"
    target.mkdir()
    archive = Source.file(out / "s.archive")
    restore_tree(target, Source.file(out / "s.manifest"), lambda set_id: archive)
    assert (target / "future").read_bytes() == b"from the future"
    assert (target / "dir/inside").read_bytes() == b"x" * 5000
    assert os.stat(target / "future").st_mtime_ns == (1 << 63) - 1
    assert os.stat(target / "dir").st_mtime_ns == 1_000_000_000 * 10**9
    assert verify_tree(target, Source.file(out / "s.manifest")) == []
