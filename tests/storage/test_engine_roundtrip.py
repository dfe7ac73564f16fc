"""The engine on real file systems: a tree with every kind of metadata on an ext4 loop file
system, saved and restored onto fresh ext4 and xfs, compared by an independent walker;
full and incremental cycles; a mountpoint inside the tree."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from resurgo.engine import (
    SaveResult,
    Source,
    restore_tree,
    save_filesystem,
    verify_tree,
)
from resurgo.engine.manifest import ManifestReader
from tests.support.consts import MIB
from tests.support.loopdisks import Rig
from tests.support.trees import (
    DEEP_LEVELS,
    DEEP_NAME,
    assert_same_trees,
    build_rich_tree,
    snapshot,
    without,
    write,
)

pytestmark = pytest.mark.storage



@pytest.fixture(scope="module", autouse=True)
def _tools() -> None:
    for tool in ("zstd", "setfacl", "setcap", "unshare"):
        if shutil.which(tool) is None:
            pytest.skip(f"the engine's storage tests need {tool}")


def new_fs(rig: Rig, name: str, fstype: str = "ext4", size: int = 400 * MIB) -> Path:
    loop = rig.disk(name, size)
    if fstype == "ext4":
        rig.sh("mkfs.ext4", "-q", "-F", "-E", "nodiscard", loop.path)
    else:
        rig.sh("mkfs.xfs", "-q", "-f", "-K", loop.path)
    return rig.mount(loop.path, rig.workdir / name)


@dataclass
class Saved:
    result: SaveResult
    archive: Path
    manifest: Path
    local: Path

    @property
    def set_id(self) -> str:
        return self.result.set_id


def save(fs: Path, out: Path, set_id: str, previous: Saved | None = None,
         **kw: object) -> Saved:
    out.mkdir(parents=True, exist_ok=True)
    archive, manifest, local = (out / f"{set_id}.archive", out / f"{set_id}.manifest",
                                out / f"{set_id}.local-manifest")
    with open(archive, "wb") as a, open(manifest, "wb") as m, open(local, "wb") as lo:
        result = save_filesystem(
            fs, a, m, set_id=set_id, local_manifest=lo,
            previous=Source.file(previous.local) if previous else None, **kw,  # type: ignore[arg-type]
        )
    return Saved(result, archive, manifest, local)


def restore(target: Path, last: Saved, chain: list[Saved], **kw: object) -> None:
    archives = {s.set_id: Source.file(s.archive) for s in chain}
    result = restore_tree(target, Source.file(last.manifest), archives, **kw)  # type: ignore[arg-type]
    assert result.set_id == last.set_id
    assert result.warnings == ()
    assert verify_tree(target, Source.file(last.manifest)) == []


@dataclass
class Rich:
    rig: Rig
    fs: Path
    expected: dict[bytes, dict[str, object]]
    full: Saved


@pytest.fixture(scope="module")
def rich(rig_factory: Callable[[], Rig]) -> Iterator[Rich]:
    """The rich tree on ext4 with a recovery set, a /tmp-like directory and a mountpoint
    in it, saved once."""
    rig = rig_factory()
    fs = new_fs(rig, "source")
    build_rich_tree(fs)
    write(fs / "backup/set1/description.toml", b"the recovery set itself")
    write(fs / "backup/keep", b"kept")
    write(fs / "tmp/junk", b"not saved")
    (fs / "tmp/junkdir").mkdir()
    os.chmod(fs / "tmp", 0o1777)
    # The mountpoint has metadata of its own, and a file hidden under what is mounted.
    (fs / "mnt").mkdir()
    write(fs / "mnt/hidden", b"under the mount")
    os.chown(fs / "mnt", 4242, 4343)
    os.chmod(fs / "mnt", 0o711)
    os.setxattr(fs / "mnt", "user.mountpoint", b"lower")
    os.utime(fs / "mnt", ns=(5, 1_500_000_000_000_000_007))
    foreign = rig.workdir / "foreign"
    write(foreign / "foreign-file", b"from another file system")
    os.chmod(foreign, 0o700)
    # What the file system holds, seen through a bind mount of our own (not the engine's).
    view = rig.mount(str(fs), rig.workdir / "view", "bind")
    expected = without(snapshot(view), excluded=(b"backup/set1",), emptied=(b"tmp",))
    rig.mount(str(foreign), fs / "mnt", "bind")
    full = save(fs, rig.workdir / "out", "full", excludes=[fs / "backup/set1"],
                empty_dirs=[fs / "tmp"])
    yield Rich(rig, fs, expected, full)


def test_full_save_lists_everything(rich: Rich) -> None:
    r = rich.full.result
    assert r.chain == ("full",)
    assert r.entries == r.stored == len(rich.expected)
    assert r.archive.size == rich.full.archive.stat().st_size
    with open(rich.full.local, "rb") as f:
        assert f.read(4) == b"\x28\xb5\x2f\xfd"  # compressed, not encrypted


def test_restore_onto_fresh_ext4_is_identical(rich: Rich) -> None:
    target = new_fs(rich.rig, "ext4-target")
    restore(target, rich.full, [rich.full])
    restored = snapshot(target)
    assert_same_trees(rich.expected, restored)
    # spot checks of what the comparison covers, so that it cannot pass by being empty
    assert restored[b"caps/ping"]["xattrs"]["security.capability"]
    assert restored[b"caps/ping"]["uid"] == 1000
    assert "system.posix_acl_default" in restored[b"acl/dir"]["xattrs"]
    assert restored[b"xattr/trusted"]["xattrs"] == {"trusted.secret": b"t-value"}
    assert restored[b"setuid-bin"]["mode"] == 0o104755
    assert restored[b"nsec"]["mtime_ns"] == 1_234_567_890_123_456_789
    assert restored[b"sparse"]["data_map"] == [(1 * MIB, 4096), (5 * MIB, 8192)]
    assert restored[b"all-hole"]["blocks"] == 0
    assert restored[b"dev/loop-like"]["rdev"] == os.makedev(7, 200)
    assert restored[b"names/caf\xe9"]["sha256"]
    deep = b"deep/" + b"/".join([DEEP_NAME.encode()] * DEEP_LEVELS) + b"/bottom.txt"
    assert len(deep) > 4096 and restored[deep]["size"] == len(b"at the bottom")


def test_mountpoint_is_saved_from_below_the_mount(rich: Rich) -> None:
    target = new_fs(rich.rig, "mnt-target")
    restore(target, rich.full, [rich.full], writers=0)
    st = os.stat(target / "mnt")
    assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o711, 4242, 4343)
    assert st.st_mtime_ns == 1_500_000_000_000_000_007
    assert os.getxattr(target / "mnt", "user.mountpoint") == b"lower"
    assert sorted(os.listdir(target / "mnt")) == ["hidden"]
    assert not (target / "backup/set1").exists() and (target / "backup/keep").exists()
    assert os.listdir(target / "tmp") == []
    assert os.stat(target / "tmp").st_mode & 0o7777 == 0o1777
    assert not (target / "sock").exists()


def test_restore_onto_xfs(rich: Rich) -> None:
    target = new_fs(rich.rig, "xfs-target", "xfs")
    restore(target, rich.full, [rich.full])
    restored = snapshot(target)
    # xfs's lost+found is the one of the saved ext4; sparse files stay sparse, but xfs may
    # allocate them in other units.
    assert_same_trees(rich.expected, restored, exact_sparse=False)
    assert restored[b"sparse"]["blocks"] * 512 < 1 * MIB


def test_verify_reports_differences(rich: Rich) -> None:
    target = new_fs(rich.rig, "verify-target")
    restore(target, rich.full, [rich.full])
    manifest = Source.file(rich.full.manifest)
    os.chmod(target / "plain.txt", 0o600)
    with open(target / "big.bin", "r+b") as f:
        f.seek(100)
        f.write(b"!")
    os.unlink(target / "empty")
    write(target / "extra", b"not saved")
    os.removexattr(target / "xattr/user", "user.comment")
    found = {(m.path, m.what) for m in verify_tree(target, manifest)}
    assert {("plain.txt", "mode"), ("big.bin", "content"), ("big.bin", "mtime"),
            ("empty", "missing"), ("extra", "unexpected"), ("xattr/user", "xattrs")} <= found
    assert ("big.bin", "content") not in {
        (m.path, m.what) for m in verify_tree(target, manifest, content=False)}


def _changes_a(fs: Path) -> None:
    # same size, mtime put back: only ctime tells
    p = fs / "same-size"
    st = os.stat(p)
    p.write_bytes(b"B" * st.st_size)
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.unlink(fs / "deleted")
    shutil.rmtree(fs / "gone-dir")
    os.rename(fs / "renamed-from", fs / "renamed-to")
    write(fs / "added", b"new in inc1")
    write(fs / "newdir/child", b"child")
    os.chmod(fs / "chmodded", 0o700)
    os.chown(fs / "chowned", 4242, 4343)
    os.setxattr(fs / "xattred", "user.new", b"1")
    os.link(fs / "linked", fs / "dir/second-link")


def _changes_b(fs: Path) -> None:
    os.rename(fs / "dir", fs / "dir-renamed")
    os.unlink(fs / "same-size")
    with open(fs / "big", "r+b") as f:
        f.seek(2 * MIB)
        f.write(os.urandom(1000))
    os.unlink(fs / "becomes-symlink")
    os.symlink("added", fs / "becomes-symlink")


def test_full_and_incremental_cycles(rig: Rig) -> None:
    fs = new_fs(rig, "inc-source", size=200 * MIB)
    for name in ("same-size", "deleted", "renamed-from", "chmodded", "chowned", "xattred",
                 "linked", "becomes-symlink", "unchanged"):
        write(fs / name, name.encode() * 10)
    write(fs / "gone-dir/a", b"a")
    write(fs / "gone-dir/sub/b", b"b")
    write(fs / "dir/file", b"in dir")
    write(fs / "big", os.urandom(3 * MIB))
    for i in range(50):
        write(fs / f"bulk/{i}", os.urandom(i * 10))
    out = rig.workdir / "out"
    full = save(fs, out, "full")
    snaps = [snapshot(fs)]

    _changes_a(fs)
    inc1 = save(fs, out, "inc1", previous=full)
    snaps.append(snapshot(fs))
    _changes_b(fs)
    inc2 = save(fs, out, "inc2", previous=inc1)
    snaps.append(snapshot(fs))

    assert inc1.result.chain == ("full", "inc1")
    assert inc2.result.chain == ("full", "inc1", "inc2")
    # only what changed is stored again: never the untouched bulk files
    assert inc1.result.stored < full.result.stored / 3
    assert inc2.result.stored < full.result.stored / 3
    with open(inc1.local, "rb") as f:
        stored_in = _sets_of(f, inc1)
    assert stored_in[b"same-size"] == 1  # caught by ctime although size and mtime are equal
    assert stored_in[b"unchanged"] == stored_in[b"bulk/7"] == 0
    assert stored_in[b"renamed-to"] == stored_in[b"chmodded"] == stored_in[b"xattred"] == 1
    assert b"deleted" not in stored_in and b"gone-dir/a" not in stored_in

    for index, (saved, chain) in enumerate(
        [(full, [full]), (inc1, [full, inc1]), (inc2, [full, inc1, inc2])]
    ):
        target = new_fs(rig, f"inc-target-{index}", size=200 * MIB)
        restore(target, saved, chain)
        assert_same_trees(snaps[index], snapshot(target))
    assert not (target / "deleted").exists() and not (target / "gone-dir").exists()
    assert (target / "becomes-symlink").is_symlink()


def _sets_of(f: object, saved: Saved) -> dict[bytes, int]:
    import subprocess

    plain = subprocess.run(["zstd", "-dc", str(saved.local)], check=True,
                           capture_output=True).stdout
    return {e.path: e.set_index for e in ManifestReader(plain.splitlines(keepends=True))}


def test_attributes_beyond_what_a_restore_takes_are_left_out_with_a_note(
        rig: Rig, tmp_path: Path) -> None:
    """XFS holds more than 1 MiB of attribute values on one file; a restore refuses such
    an entry as damaged, so the save keeps what fits and says what it left out."""
    fs = new_fs(rig, "manyattrs", "xfs")
    big = fs / "big"
    big.write_bytes(b"data")
    values = [bytes([n]) * 65536 for n in range(17)]  # 17 x 64 KiB: 1088 KiB
    for n, value in enumerate(values):
        os.setxattr(big, f"user.a{n:02d}", value)
    saved = save(fs, tmp_path / "out", "20261206T000000Z-0001")
    assert any("big: 1 extended attributes left out (user.a16)" in n
               for n in saved.result.notes), saved.result.notes
    target = new_fs(rig, "manyattrs-target", "xfs")
    archives = {saved.result.set_id: Source.file(saved.archive)}
    restore_tree(target, Source.file(saved.manifest), archives)
    restored = target / "big"
    assert restored.read_bytes() == b"data"
    assert sorted(os.listxattr(restored)) == [f"user.a{n:02d}" for n in range(16)]
    assert all(os.getxattr(restored, f"user.a{n:02d}") == values[n] for n in range(16))
