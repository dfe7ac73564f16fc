"""Hostile archives: whatever an archive (and its manifest, written by the same hand) says,
a restore changes nothing outside its target, refuses duplicate and out-of-order entries
before making them, runs no code from the working directory, and stays bounded in time
and memory. Each archive is crafted here, record by record."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from blake3 import blake3
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from resurgo.engine import ArchiveDamaged, ArchiveError, Source, UnsafePath, restore_tree
from resurgo.engine.manifest import Entry, ManifestHeader, ManifestWriter, xattr_digest
from resurgo.engine.names import ROOT, order_key
from resurgo.engine.records import (
    CHR,
    DIR,
    FIFO,
    FILE,
    HARDLINK,
    SYMLINK,
    Header,
    block_frame,
    end_record,
    entry_record,
    start_record,
)
from tests.support.consts import TIB
from tests.support.loopdisks import Rig

pytestmark = [pytest.mark.storage, pytest.mark.usefixtures("engine_tools")]

SRC = Path(__file__).resolve().parents[2] / "src"
MODE_OF = {FILE: 0o100000, DIR: 0o40000, SYMLINK: 0o120000, HARDLINK: 0o100000,
           CHR: 0o20000, FIFO: 0o10000}


class Item:
    """One entry as a hostile program might write it: its header, data and digest."""

    def __init__(self, h: Header, data: bytes = b"", digest: bytes | None = None) -> None:
        self.h = h
        self.data = data
        self.digest = blake3(data).digest() if digest is None and h.kind == FILE else digest

    @property
    def payload(self) -> bytes:
        return self.data + (self.digest or b"") if self.h.kind == FILE else b""

    def record(self) -> bytes:
        return entry_record(self.h) + self.payload

    def entry(self) -> Entry:
        h = self.h
        return Entry(h.kind, h.path, h.mode, h.uid, h.gid, h.size, h.mtime_ns, 0, 0, h.rdev,
                     self.digest.hex() if self.digest else "", xattr_digest(h.xattrs), 0,
                     h.target)


def item(kind: str, path: bytes, perm: int = 0o644, *, data: bytes = b"", target: bytes = b"",
         rdev: int = 0, **kw: Any) -> Item:
    size = len(data) if kind == FILE else 0
    h = Header(kind, path, MODE_OF[kind] | perm, 0, 0, 10**18, 10**18, rdev, size, target,
               (), ((0, size),) if size else ())
    return Item(h._replace(**kw) if kw else h, data)


Unit = Item | list[Item]  # a list: one block, its directory the first entry's


def _parent(path: bytes) -> bytes:
    return path.rpartition(b"/")[0] if b"/" in path else ROOT


def _zstd(data: bytes) -> bytes:
    return subprocess.run(["zstd", "-q", "-c"], input=data, check=True,
                          capture_output=True).stdout


def craft(out: Path, units: list[Unit], name: str = "crafted") -> tuple[Path, Path]:
    """An archive of these units and the manifest that lists the same entries."""
    records = [start_record("s")]
    entries: list[Entry] = []
    payload = 0
    for unit in units:
        items = unit if isinstance(unit, list) else [unit]
        body = b"".join(i.record() for i in items)
        unit_payload = sum(len(i.payload) for i in items)
        if isinstance(unit, list):
            records.append(block_frame(_parent(items[0].h.path), len(items), unit_payload,
                                       len(body)))
        records.append(body)
        payload += unit_payload
        entries += [i.entry() for i in items]
    records.append(end_record(len(entries), payload))
    archive, manifest = out / f"{name}.archive", out / f"{name}.manifest"
    archive.write_bytes(_zstd(b"".join(records)))
    lines: list[bytes] = []
    w = ManifestWriter(lines.append, ManifestHeader(("s",)))
    for e in entries:
        w.add(e)
    w.finish()
    manifest.write_bytes(_zstd(b"".join(lines)))
    return archive, manifest


def restore(target: Path, archive: Path, manifest: Path, writers: int = 2) -> None:
    if target.exists():
        shutil.rmtree(target)
    target.mkdir()
    restore_tree(target, Source.file(manifest), {"s": Source.file(archive)}, writers=writers)


def snapshot(top: Path, skip: str | None = None) -> dict[str, tuple[object, ...]]:
    """Everything about every entry below top (but ``skip``): stat for stat (atime
    aside), content, link text and extended attributes."""
    found: dict[str, tuple[object, ...]] = {}
    for d, dirs, files in os.walk(top):
        if skip is not None and Path(d) == top and skip in dirs:
            dirs.remove(skip)
        for name in dirs + files:
            p = os.path.join(d, name)
            s = os.lstat(p)
            content: object = None
            if stat.S_ISREG(s.st_mode):
                content = hashlib.sha256(Path(p).read_bytes()).hexdigest()
            elif stat.S_ISLNK(s.st_mode):
                content = os.readlink(p)
            xattrs = sorted((n, os.getxattr(p, n, follow_symlinks=False))
                            for n in os.listxattr(p, follow_symlinks=False))
            found[os.path.relpath(p, top)] = (
                s.st_mode, s.st_uid, s.st_gid, s.st_size, s.st_mtime_ns, s.st_ctime_ns,
                s.st_nlink, s.st_ino, s.st_rdev, content, tuple(xattrs))
    return found


# -- the race of the issue ---------------------------------------------------------------

@pytest.mark.parametrize("mode", [0o777, 0o4777])
def test_fifos_and_symlinks_of_one_name_cannot_chmod_outside(tmp_path: Path, mode: int) -> None:
    """Blocks alternate a fifo ``x`` (mode 0777, or setuid) and a symlink ``x`` to a file
    outside: writers racing on the one name once made that file 0777 by a chmod that
    followed the symlink. The second ``x`` is refused before any block of it goes out."""
    outside = tmp_path / "outside"
    outside.write_bytes(b"keep me 0600")
    outside.chmod(0o600)
    before = snapshot(tmp_path, skip="target")
    units: list[Unit] = [item(DIR, ROOT, 0o755)]
    for _ in range(300):
        units.append([item(FIFO, b"x", mode)])
        units.append([item(SYMLINK, b"x", 0o777, target=str(outside).encode())])
    archive, manifest = craft(tmp_path, units)
    for _ in range(30):  # the old code let it through within a few runs
        with pytest.raises(ArchiveError) as info:
            restore(tmp_path / "target", archive, manifest)
        assert stat.S_IMODE(outside.stat().st_mode) == 0o600
        assert isinstance(info.value, UnsafePath), info.value
        assert "twice or out of walk order" in info.value.message
        assert info.value.paths == ("x",)
    after = snapshot(tmp_path, skip="target")
    assert {k: v for k, v in after.items() if not k.startswith("crafted.")} == {
        k: v for k, v in before.items() if not k.startswith("crafted.")}


@pytest.mark.parametrize("writers", [0, 2])
@pytest.mark.parametrize("units", [
    pytest.param(lambda: [item(DIR, ROOT), item(FILE, b"b", data=b"1"),
                          item(FILE, b"a", data=b"2")], id="reordered"),
    pytest.param(lambda: [item(DIR, ROOT), [item(FILE, b"b", data=b"1"),
                                           item(FILE, b"a", data=b"2")]], id="reordered-in-block"),
    pytest.param(lambda: [item(DIR, ROOT), [item(FILE, b"a", data=b"1")],
                          [item(FIFO, b"a")]], id="twice-across-blocks"),
    pytest.param(lambda: [item(DIR, ROOT), [item(FILE, b"a", data=b"1"),
                                           item(FIFO, b"a")]], id="twice-in-block"),
    pytest.param(lambda: [item(DIR, ROOT), item(DIR, b"d"), item(DIR, b"d")], id="dir-twice"),
    pytest.param(lambda: [item(DIR, ROOT), item(DIR, ROOT)], id="root-twice"),
    pytest.param(lambda: [item(DIR, ROOT), item(FILE, b"a", data=b"1"),
                          item(FILE, b"a/b", data=b"2")], id="inside-a-file"),
    pytest.param(lambda: [item(DIR, ROOT), [item(SYMLINK, b"a", target=b"/")],
                          [item(FILE, b"a/b", data=b"2")]], id="inside-a-symlink"),
    pytest.param(lambda: [item(FIFO, ROOT)], id="root-not-a-directory"),
    pytest.param(lambda: [item(DIR, ROOT), item(DIR, b"d"), item(FILE, b"d/z", data=b"1"),
                          item(FILE, b"c", data=b"2")], id="back-up-the-tree"),
])
def test_duplicate_and_reordered_entries_are_refused_before_they_are_made(
        tmp_path: Path, writers: int, units: Callable[[], list[Unit]]) -> None:
    archive, manifest = craft(tmp_path, units())
    target = tmp_path / "target"
    with pytest.raises(UnsafePath,
                       match=r"twice or out of walk order|not a directory") as info:
        restore(target, archive, manifest, writers=writers)
    offender = info.value.paths[0].encode()
    made = {p.relative_to(target).as_posix().encode() for p in target.rglob("*")}
    if offender != b".":
        # the second of the two (or the one out of order) was never made
        assert offender not in made or sum(
            1 for u in units() for i in (u if isinstance(u, list) else [u])
            if i.h.path == offender) == 2


@pytest.mark.parametrize("target", [b"z", b"a", b"b/later"])
def test_a_hard_link_to_a_path_not_before_it_is_refused(tmp_path: Path, target: bytes) -> None:
    units: list[Unit] = [item(DIR, ROOT), item(HARDLINK, b"a", target=target),
                         item(DIR, b"b"), item(FILE, b"b/later", data=b"x"),
                         item(FILE, b"z", data=b"y")]
    archive, manifest = craft(tmp_path, units)
    with pytest.raises(UnsafePath, match="hard link to a path that is not before it"):
        restore(tmp_path / "target", archive, manifest)


@pytest.mark.parametrize("writers", [0, 2])
def test_a_hard_link_to_the_root_is_refused(tmp_path: Path, writers: int) -> None:
    """Its target sorts before every path: it once passed the order check and ended in an
    IndexError, a traceback, when the links were made at the end."""
    units: list[Unit] = [item(DIR, ROOT), item(HARDLINK, b"a", target=ROOT),
                         item(FILE, b"z", data=b"y")]
    archive, manifest = craft(tmp_path, units)
    with pytest.raises(UnsafePath, match="a hard link to the root"):
        restore(tmp_path / "target", archive, manifest, writers=writers)


def test_a_fifo_gets_its_mode_through_its_own_inode(tmp_path: Path) -> None:
    """Fifos and devices: metadata through an O_PATH descriptor of the node just made."""
    archive, manifest = craft(tmp_path, [item(DIR, ROOT, 0o755), [
        item(CHR, b"null", 0o4666, rdev=os.makedev(1, 3), uid=7, gid=8),
        item(FIFO, b"pipe", 0o6751, uid=5, gid=6, mtime_ns=123)]])
    target = tmp_path / "target"
    restore(target, archive, manifest)
    null, pipe = os.lstat(target / "null"), os.lstat(target / "pipe")
    assert (null.st_mode, null.st_rdev, null.st_uid, null.st_gid) == (
        0o24666, os.makedev(1, 3), 7, 8)
    assert (pipe.st_mode, pipe.st_uid, pipe.st_gid, pipe.st_mtime_ns) == (0o16751, 5, 6, 123)


# -- crafted archives on a real file system, with a sentinel tree beside the target --------

NAMES = [b"a", b"x", b"y", b"z"]
rel_paths = st.lists(st.sampled_from(NAMES), min_size=1, max_size=3).map(b"/".join)


@pytest.fixture(scope="module")
def ext4(rig_factory: Callable[[], Rig]) -> Path:
    rig = rig_factory()
    disk = rig.disk("hostile", 128 << 20)
    rig.sh("mkfs.ext4", "-q", "-F", disk.path)
    top = rig.mount(disk.path, rig.workdir / "mnt", "noatime")
    sentinel = top / "sentinel"
    (sentinel / "dir").mkdir(parents=True)
    for name, mode in (("secret", 0o600), ("plain", 0o644), ("dir/inner", 0o640)):
        (sentinel / name).write_bytes(name.encode() * 10)
        (sentinel / name).chmod(mode)
    os.setxattr(sentinel / "plain", "user.kept", b"as it was")
    os.mkfifo(sentinel / "fifo", 0o600)
    os.symlink("secret", sentinel / "link")
    return top


def _outside(top: Path) -> list[bytes]:
    s = str(top / "sentinel").encode()
    return [s, s + b"/secret", s + b"/dir", s + b"/fifo", s + b"/link", b"../sentinel/secret",
            b"../../sentinel", b"../sentinel/dir", b"secret"]


@st.composite
def hostile_units(draw: st.DrawFn, outside: list[bytes]) -> list[Unit]:
    count = draw(st.integers(1, 24))
    items: list[Item] = []
    for _ in range(count):
        kind = draw(st.sampled_from([DIR, FILE, SYMLINK, HARDLINK, CHR, FIFO]))
        path = ROOT if not items and draw(st.integers(0, 9)) == 0 else draw(rel_paths)
        perm = draw(st.sampled_from([0o777, 0o4755, 0o2777, 0o1777, 0o600]))
        if kind == SYMLINK:
            items.append(item(kind, path, 0o777, target=draw(st.sampled_from(outside))))
        elif kind == HARDLINK:
            items.append(item(kind, path, perm, target=draw(
                st.one_of(rel_paths, st.sampled_from([b"sentinel/secret", b"a/../b"])))))
        elif kind == CHR:
            items.append(item(kind, path, perm, rdev=os.makedev(1, 3)))
        else:
            items.append(item(kind, path, perm, data=b"data" if kind == FILE else b""))
    if draw(st.booleans()):  # mostly directories where something is inside
        paths = {i.h.path for i in items}
        items = [item(DIR, i.h.path, 0o755) if any(p.startswith(i.h.path + b"/")
                                                   for p in paths) else i for i in items]
    # Most in walk order, each path once, so that much of it gets made; the rest with
    # duplicates side by side, as drawn, or backwards.
    order = draw(st.sampled_from(["unique"] * 6 + ["walk", "as drawn", "reversed"]))
    if order in ("unique", "walk"):
        items.sort(key=lambda i: order_key(i.h.path))
    if order == "unique":
        items = list({i.h.path: i for i in items}.values())
    elif order == "reversed":
        items.reverse()
    units: list[Unit] = [item(DIR, ROOT, 0o755)] if draw(st.booleans()) else []
    for i in items:  # runs of one directory's entries go in blocks, when drawn so
        last = units[-1] if units else None
        if (i.h.kind not in (DIR, HARDLINK) and isinstance(last, list)
                and _parent(last[0].h.path) == _parent(i.h.path) and draw(st.booleans())):
            last.append(i)
        elif i.h.kind not in (DIR, HARDLINK) and draw(st.booleans()):
            units.append([i])
        else:
            units.append(i)
    return units


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_no_crafted_archive_changes_anything_outside_the_target(ext4: Path,
                                                               data: st.DataObject) -> None:
    units = data.draw(hostile_units(_outside(ext4)))
    work = ext4.parent / "crafted"
    work.mkdir(exist_ok=True)
    archive, manifest = craft(work, units)
    before = snapshot(ext4, skip="target")
    try:
        restore(ext4 / "target", archive, manifest, writers=2)
        event("restored")
    except ArchiveError as e:  # refused, or the target said no: clearly, without escaping
        event(f"{type(e).__name__}: {e.message.partition(': ')[2][:40]}")
    assert snapshot(ext4, skip="target") == before


# -- an isolated interpreter for the writers ------------------------------------------------

_RESTORE = """
import json, resource, sys
sys.path.insert(0, {src!r})
from resurgo.engine import ArchiveError, Source, restore_tree
try:
    restore_tree({target!r}, Source.file({manifest!r}), {{"s": Source.file({archive!r})}},
                 writers={writers})
    outcome = {{"ok": True}}
except ArchiveError as e:
    outcome = {{"error": type(e).__name__, "message": str(e)}}
# VmHWM: this process's own peak (ru_maxrss would count the test's, from before exec)
status = open("/proc/self/status").read().split("VmHWM:")[1]
outcome["rss"] = int(status.split()[0]) * 1024
outcome["children"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
print(json.dumps(outcome))
"""


def restore_in_child(tmp_path: Path, archive: Path, manifest: Path, *, cwd: Path | None = None,
                     writers: int = 2, timeout: float = 120) -> dict[str, Any]:
    """A restore in a process of its own (-P: nothing from its working directory): its
    outcome and the peak resident memory of it and of its writers."""
    target = tmp_path / "target"
    if target.exists():
        shutil.rmtree(target)
    target.mkdir()
    script = _RESTORE.format(src=str(SRC), target=str(target), manifest=str(manifest),
                             archive=str(archive), writers=writers)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-P", "-c", script], cwd=cwd or tmp_path, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


@pytest.fixture
def planted(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A directory holding a resurgo/ package that leaves a marker when imported."""
    cwd = tmp_path / "cwd"
    marker = tmp_path / "marker"
    package = cwd / "resurgo"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(textwrap.dedent(f"""
        open({str(marker)!r}, "w").write("imported from the working directory")
        raise SystemExit(1)
    """))
    yield cwd, marker


def test_the_writers_never_import_from_the_working_directory(
        tmp_path: Path, planted: tuple[Path, Path]) -> None:
    cwd, marker = planted
    # The test can fail: the command the writers had imports the planted package.
    subprocess.run([sys.executable, "-m", "resurgo.engine.writer"], cwd=cwd,
                   env={**os.environ, "PYTHONPATH": str(SRC)}, capture_output=True,
                   check=False)
    assert marker.exists()
    marker.unlink()
    units: list[Unit] = [item(DIR, ROOT, 0o755),
                         [item(FILE, b"f%02d" % i, data=b"%d" % i) for i in range(20)]]
    archive, manifest = craft(tmp_path, units)
    outcome = restore_in_child(tmp_path, archive, manifest, cwd=cwd, writers=2)
    assert outcome.get("ok"), outcome
    assert not marker.exists()
    assert (tmp_path / "target/f07").read_bytes() == b"7"


# -- bounds -------------------------------------------------------------------------------

LOW_RSS = 160 << 20  # the interpreter, the writers' slots touched, one bounded header
# zstd -d takes a window of up to 128 MiB (its default --memory limit) if a frame asks
ZSTD_RSS = (128 + 32) << 20


def _sparse(path: bytes, size: int, data: bytes, at: int) -> Item:
    h = Header(FILE, path, 0o100644, 0, 0, 1, 1, 0, size, b"", (),
               ((at, len(data)),) if data else ())
    return Item(h, data, digest=bytes(32))  # no one can hash 15 TiB to say better


@pytest.mark.parametrize("entry", [
    pytest.param(lambda: _sparse(b"huge", 15 * TIB, b"", 0), id="all-hole"),
    pytest.param(lambda: _sparse(b"huge", 15 * TIB, b"x" * 4096, 7 * TIB), id="small-data"),
    pytest.param(lambda: _sparse(b"huge", 15 * TIB, os.urandom(2 << 20), 15 * TIB - (2 << 20)),
                 id="large-data"),
    pytest.param(lambda: _sparse(b"huge", 1 << 62, b"", 0), id="beyond-any-fs"),
])
def test_a_tiny_archive_with_a_huge_sparse_entry_fails_fast(
        tmp_path: Path, entry: Callable[[], Item]) -> None:
    archive, manifest = craft(tmp_path, [item(DIR, ROOT), entry()])
    outcome = restore_in_child(tmp_path, archive, manifest, timeout=60)
    assert outcome.get("error") == "ArchiveDamaged", outcome
    assert "huge" in outcome["message"]
    assert outcome["rss"] < LOW_RSS and outcome["children"] < ZSTD_RSS, outcome


def _with_xattrs(xattrs: tuple[tuple[str, bytes], ...]) -> Item:
    h = Header(FILE, b"tagged", 0o100644, 0, 0, 1, 1, 0, 1, b"", xattrs, ((0, 1),))
    return Item(h, b"x")


@pytest.mark.parametrize(("entry", "why"), [
    pytest.param(lambda: _with_xattrs(tuple((f"user.{i:04d}", bytes(64 << 10))
                                            for i in range(800))),
                 "entry header of", id="50-MiB"),
    pytest.param(lambda: _with_xattrs(tuple((f"user.{i:04d}", bytes(64 << 10))
                                            for i in range(17))),
                 "beyond the kernel's limits", id="values-over-1-MiB"),
    pytest.param(lambda: _with_xattrs((("user." + "n" * 300, b"v"),)),
                 "beyond the kernel's limits", id="long-name"),
    pytest.param(lambda: _with_xattrs((("user.big", bytes((64 << 10) + 1)),)),
                 "beyond the kernel's limits", id="value-over-64-KiB"),
    pytest.param(lambda: _with_xattrs(tuple((f"user.{i:05d}" + "n" * 200, b"")
                                            for i in range(400))),
                 "beyond the kernel's limits", id="names-over-64-KiB"),
    pytest.param(lambda: item(SYMLINK, b"l", 0o777, target=b"t" * 4096),
                 "target of 4096 bytes", id="symlink-text"),
    pytest.param(lambda: item(FILE, b"n" * 256, data=b"x"), "name longer", id="name"),
    pytest.param(lambda: item(FILE, b"/".join([b"d" * 200] * 170), data=b"x"),
                 "a path longer than", id="path"),
    pytest.param(lambda: Item(Header(FILE, b"frag", 0o100644, 0, 0, 1, 1, 0, 1 << 30, b"",
                                     (), tuple((i * 4096, 1) for i in range(70000))),
                              b"x" * 70000, bytes(32)), "extents", id="extents"),
])
def test_oversized_headers_are_refused_before_they_are_allocated(
        tmp_path: Path, entry: Callable[[], Item], why: str) -> None:
    archive, manifest = craft(tmp_path, [item(DIR, ROOT), entry()])
    assert archive.stat().st_size < 1 << 20
    outcome = restore_in_child(tmp_path, archive, manifest, timeout=60)
    assert outcome.get("error") in ("ArchiveDamaged", "UnsafePath"), outcome
    assert why in outcome["message"]
    assert outcome["rss"] < LOW_RSS and outcome["children"] < ZSTD_RSS, outcome


def test_the_error_classes() -> None:
    assert issubclass(ArchiveDamaged, ArchiveError) and issubclass(UnsafePath, ArchiveError)


@pytest.mark.parametrize("writers", [0, 2])
def test_setuid_acl_and_capability_together_survive_their_order(tmp_path: Path,
                                                                writers: int) -> None:
    """The special bits and the capability are set last: neither the ACL (set before
    them) nor each other takes them away."""
    from resurgo.engine import save_tree

    if shutil.which("setcap") is None or shutil.which("setfacl") is None:
        pytest.skip("needs setcap and setfacl")
    src = tmp_path / "src"
    src.mkdir()
    f = src / "tool"
    f.write_bytes(b"\x7fELF" + bytes(100))
    subprocess.run(["setfacl", "-m", "u:4242:rx", str(f)], check=True)
    subprocess.run(["setcap", "cap_net_raw+ep", str(f)], check=True)
    os.chmod(f, 0o6750)
    expected = snapshot(src)["tool"]
    archive, manifest = tmp_path / "s.archive", tmp_path / "s.manifest"
    with open(archive, "wb") as a, open(manifest, "wb") as m:
        save_tree(src, a, m, set_id="s")
    restore(tmp_path / "target", archive, manifest, writers=writers)
    got = snapshot(tmp_path / "target")["tool"]
    # mode, owner, size, mtime; content; attributes (ACL and capability)
    assert (got[0], got[1], got[2], got[3], got[4], got[9], got[10]) == (
        expected[0], expected[1], expected[2], expected[3], expected[4], expected[9],
        expected[10])
    assert isinstance(got[0], int) and got[0] & 0o6000 == 0o6000


def test_a_size_no_file_on_the_target_can_have_is_refused_before_any_work(
        rig_factory: Callable[[], Rig], tmp_path: Path) -> None:
    """Learnt from the target when the size is set: ext4 without extents, 1 KiB blocks,
    holds no file over about 16 GiB; 100 GiB of holes is within what a restore hashes."""
    rig = rig_factory()
    disk = rig.disk("small-files", 64 << 20)
    rig.sh("mkfs.ext4", "-q", "-F", "-b", "1024", "-O", "^extent,^huge_file,^64bit", disk.path)
    top = rig.mount(disk.path, rig.workdir / "mnt")
    archive, manifest = craft(tmp_path, [item(DIR, ROOT),
                                         _sparse(b"huge", 100 << 30, b"x" * 10, 1 << 30)])
    with pytest.raises(ArchiveDamaged, match="more than any file on the target can be") as e:
        restore(top / "target", archive, manifest)
    assert e.value.paths == ("huge",)
