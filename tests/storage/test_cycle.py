"""The whole cycle on real loop disks: resurgo save -> recover -> verify, through the CLI.

classic: a GPT disk with an ESP (vfat, unmounted here), /boot ext4, / ext4 and /home xfs
    (each holding the engine's rich tree: every kind of entry and metadata), swap; saved
    full (set 1) to a directory, changed (files added, changed, renamed, deleted, new
    metadata), saved incremental (set 2), then saved again encrypted with age to another
    directory and full to an SFTP server (a real sshd), and a fourth save to the first
    directory killed with SIGKILL half-way. Then the disk is detached (the machine is
    gone: a recreated XFS with the same UUID could not be mounted beside the original).
btrfs: a BIOS boot partition and a btrfs (@ at /, @home at /home, @/srv/nested, a
    read-only snapshot @snap, @ the default) and a whole-disk ext4 at /data.

Each test recovers onto blank loop disks of other sizes and compares what was restored
with what was saved using the independent walker of the engine's tests (content, owner,
mode, mtime, xattrs, ACLs, capabilities, hard links, sparseness, device numbers).
Refused recoveries leave the target disks byte-identical.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from resurgo import run
from resurgo.demo import umount_below
from resurgo.errors import ExitCode
from tests.support import cli
from tests.support.consts import BIOS, ESP, HOME, LINUX, MIB, ROOT_X86_64, SWAP
from tests.support.loopdisks import Loop, Rig, require_loop_support
from tests.support.media_servers import Seaweed, Sshd
from tests.support.trees import (
    assert_same_trees,
    build_rich_tree,
    sha256_of,
    snapshot,
    without,
    write,
)

pytestmark = pytest.mark.storage

CLASSIC_SIZE = 900 * MIB
EMPTIED = (b"proc", b"sys", b"dev", b"run", b"tmp")

Snapshot = dict[bytes, dict[str, Any]]


@pytest.fixture(scope="module", autouse=True)
def _tools() -> None:
    for tool in ("zstd", "age", "age-keygen", "setfacl", "setcap", "unshare", "mkfs.xfs",
                 "mkfs.btrfs"):
        if shutil.which(tool) is None:
            pytest.skip(f"the cycle tests need {tool}")


# ---------------------------------------------------------------- helpers


def gpt(parts: list[tuple[int, int, str]]) -> str:
    """sfdisk script: (size MiB, type) from 1 MiB on, the number in order."""
    lines = ["label: gpt", f"label-id: {str(uuid.uuid4()).upper()}", "unit: sectors", ""]
    start = 2048
    for n, (size, ptype, name) in enumerate(parts, 1):
        lines.append(f'{n} : start={start}, size={size * 2048}, type={ptype}, name="{name}"')
        start += size * 2048
    return "\n".join(lines) + "\n"


def view_of(path: Path, spot: Path, options: str = "bind") -> Iterator[Path]:
    spot.mkdir(parents=True, exist_ok=True)
    run.run(["mount", "-o", options, str(path), str(spot)])
    try:
        yield spot
    finally:
        run.run(["umount", str(spot)], check=False)


def snapshot_mounted(path: Path, spot: Path) -> Snapshot:
    """The filesystem mounted at path, without what is mounted on it (a bind mount of
    our own, not resurgo's views)."""
    gen = view_of(path, spot)
    view = next(gen)
    try:
        return snapshot(view)
    finally:
        gen.close()


def btrfs_top(device: str, spot: Path) -> Iterator[Path]:
    spot.mkdir(parents=True, exist_ok=True)
    run.run(["mount", "-t", "btrfs", "-o", "subvolid=5", device, str(spot)])
    try:
        yield spot
    finally:
        run.run(["umount", str(spot)], check=False)


def system_snapshots(root: Path, mountpoints: list[str], work: Path) -> dict[str, Snapshot]:
    out = {}
    for mp in mountpoints:
        where = root / mp.lstrip("/") if mp != "/" else root
        snap = snapshot_mounted(where, work / f"view{len(out)}")
        out[mp] = without(snap, emptied=EMPTIED) if mp == "/" else snap
    return out


def assert_same_systems(expected: dict[str, Snapshot], actual: dict[str, Snapshot]) -> None:
    assert sorted(actual) == sorted(expected)
    for mp in expected:
        # xfs allocates sparse files its own way: their holes are checked to be holes.
        assert_same_trees(expected[mp], actual[mp], exact_sparse=mp != "/home")


def change_tree(root: Path) -> None:
    """What happens between two saves: content, metadata, names, links, deletions."""
    rich = root / "srv/rich"
    write(rich / "plain.txt", b"changed, same mtime as before?\n")
    os.unlink(rich / "empty")
    os.rename(rich / "many/0/f00000", rich / "many/0/renamed")
    write(rich / "new/file", os.urandom(5000), mode=0o640, owner=(1000, 1000))
    os.chmod(rich / "setgid-file", 0o2750)
    os.setxattr(rich / "xattr/user", "user.added", b"later")
    os.link(rich / "links/pair1", rich / "links/pair3")
    shutil.rmtree(rich / "emptydir")
    write(root / "home/rich/plain.txt", b"home changed\n")
    write(root / "boot/config-new", b"CONFIG=y\n")


# ---------------------------------------------------------------- the classic system


@dataclass
class Classic:
    work: Path
    state: Path
    sets: Path  # set 1 (full) and set 2 (incremental), plus the killed save's leftovers
    set1: str
    set2: str
    encrypted: Path
    identity: Path
    sftp_url: str
    sshd: Sshd
    expected1: dict[str, Snapshot]
    expected2: dict[str, Snapshot]
    root_fs: str  # the id of the / filesystem in the description
    mountpoints: list[str]

    def recovered(self, mnt: Path) -> dict[str, Snapshot]:
        return system_snapshots(mnt, self.mountpoints, self.work / "views")


def _kill_a_save(sets: Path, root: Path, state: Path) -> None:
    """A save killed with SIGKILL once it has written part of an archive."""
    env = cli.clean_env(state)
    proc = subprocess.Popen(
        cli.command("save", "--to", sets, "--root", root, "--no-rescue", "--no-catalog"),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            staged = list(sets.glob(".incomplete-*/archives/*.archive"))
            if any(p.stat().st_size > 0 for p in staged):
                break
            time.sleep(0.005)
        assert proc.poll() is None, "the save ended before it could be killed"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert list(sets.glob(".incomplete-*")), "the killed save left nothing behind"


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    server = Sshd(tmp_path_factory.mktemp("sshd"))
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def classic(tmp_path_factory: pytest.TempPathFactory, sshd: Sshd) -> Iterator[Classic]:
    require_loop_support()
    work = tmp_path_factory.mktemp("classic")
    # The source's own rig, undone before anything is recovered: the machine is gone (and a
    # recreated XFS with the same UUID could not be mounted beside the original).
    rig = Rig(work)
    try:
        yield from _classic(rig, work, sshd)
    finally:
        rig.cleanup()


def _classic(rig: Rig, work: Path, sshd: Sshd) -> Iterator[Classic]:
    state = work / "state"
    disk = rig.disk("classic", CLASSIC_SIZE, table=gpt([
        (64, ESP, "esp"), (64, LINUX, "boot"), (400, ROOT_X86_64, "root"),
        (320, HOME, "home"), (16, SWAP, "swap")]))
    rig.sh("mkfs.vfat", "-F", "32", disk.part(1))
    rig.sh("mkfs.ext4", "-q", "-L", "boot", disk.part(2))
    rig.sh("mkfs.ext4", "-q", "-L", "root", disk.part(3))
    rig.sh("mkfs.xfs", "-q", "-f", "-L", "home", disk.part(4))
    rig.sh("mkswap", "-L", "swap", disk.part(5))
    root = rig.mount(disk.part(3), work / "system")
    rig.mount(disk.part(2), root / "boot")
    rig.mount(disk.part(4), root / "home")
    write(root / "etc/hostname", b"classic\n")
    write(root / "etc/fstab", b"# the test system\n")
    for d in EMPTIED:
        (root / os.fsdecode(d)).mkdir(exist_ok=True)
    write(root / "tmp/junk", b"never saved")
    write(root / "proc/junk", b"never saved")
    build_rich_tree(root / "srv/rich", many=1500)
    build_rich_tree(root / "home/rich", many=200)
    write(root / "boot/vmlinuz", os.urandom(MIB))
    mountpoints = ["/", "/boot", "/home"]
    sets = work / "sets"
    try:
        expected1 = system_snapshots(root, mountpoints, work / "views")
        r = cli.spawn("save", "--to", sets, "--root", root, "--no-rescue", "--json", state=state)
        assert r.returncode == 0, r.output
        saved = r.json()
        set1 = saved["set"]["id"]
        root_fs = next(u["id"] for u in saved["units"] if u["mountpoint"] == "/")
        assert saved["set"]["kind"] == "full"
        assert "/tmp" in saved["emptied"]

        change_tree(root)
        expected2 = system_snapshots(root, mountpoints, work / "views")
        r = cli.spawn("save", "--to", sets, "--root", root, "--no-rescue", "--incremental",
                      "--json", state=state)
        assert r.returncode == 0, r.output
        inc = r.json()
        set2 = inc["set"]["id"]
        assert (inc["set"]["kind"], inc["set"]["parent"]) == ("incremental", set1)
        by_mp = {u["mountpoint"]: u for u in inc["units"]}
        # Only what changed is stored (and the directories around it).
        assert 0 < by_mp["/"]["stored"] < 50 < by_mp["/"]["entries"]

        identity = work / "age.key"
        run.run(["age-keygen", "-o", str(identity)])
        recipient = next(line.split(":", 1)[1].strip()
                         for line in identity.read_text().splitlines()
                         if line.startswith("# public key:"))
        encrypted = work / "encrypted"
        r = cli.spawn("save", "--to", encrypted, "--root", root, "--no-rescue",
                      "--encrypt-to", recipient, state=work / "state-enc")
        assert r.returncode == 0, r.output
        assert not any(b"srv/rich" in p.read_bytes()
                       for p in encrypted.glob("*/archives/*.manifest"))

        sftp_root = sshd.root / "classic"
        sftp_root.mkdir()
        sftp_url = sshd.url(sftp_root)
        r = cli.spawn("save", "--to", sftp_url, "--root", root, "--no-rescue",
                      "--ssh-key", sshd.key, "--ssh-known-hosts", sshd.known_hosts,
                      state=work / "state-sftp")
        assert r.returncode == 0, r.output

        _kill_a_save(sets, root, state)
    finally:
        umount_below(root)
        rig.cleanup()
    yield Classic(work, state, sets, set1, set2, encrypted, identity, sftp_url, sshd,
                  expected1, expected2, root_fs, mountpoints)


def blank(rig: Rig, name: str, size: int) -> Loop:
    return rig.disk(name, size)


# ---------------------------------------------------------------- classic: the cycles


def test_full_set_onto_a_larger_disk_then_verify_finds_a_changed_file(
    classic: Classic, rig: Rig, mnt: Path, tmp_path: Path
) -> None:
    target = blank(rig, "larger", CLASSIC_SIZE * 3 // 2)
    r = cli.spawn("recover", "--from", classic.sets, "--set", classic.set1, "--target",
                  target.path, "--yes", "--root", mnt, "--no-finalize", "--json",
                  state=classic.state)
    assert r.returncode == 0, r.output
    out = r.json()
    assert out["set"]["id"] == classic.set1
    assert [c["status"] for c in out["commands"]["commands"]] == ["done"] * 3
    assert out["verify"]["ok"] is True
    assert_same_systems(classic.expected1, classic.recovered(mnt))

    r = cli.spawn("verify", "--from", classic.sets, "--set", classic.set1, "--root", mnt,
                  state=classic.state)
    assert r.returncode == 0, r.output
    assert "verified: every entry of 3 tree(s)" in r.stdout

    write(mnt / "srv/rich/plain.txt", b"tampered")
    os.chmod(mnt / "home/rich/plain.txt", 0o600)
    r = cli.spawn("verify", "--from", classic.sets, "--set", classic.set1, "--root", mnt,
                  "--json", state=classic.state)
    assert r.returncode == 1, r.output
    found = {(t["mountpoint"], m["path"], m["what"])
             for t in r.json()["trees"] for m in t["mismatches"]}
    assert ("/", "srv/rich/plain.txt", "content") in found
    assert ("/home", "rich/plain.txt", "mode") in found
    text = cli.spawn("verify", "--from", classic.sets, "--set", classic.set1, "--root", mnt,
                     state=classic.state)
    assert text.returncode == 1
    assert "/srv/rich/plain.txt: content" in text.stdout
    assert "/home/rich/plain.txt: mode" in text.stdout

    # A manifest damaged on the medium: not a difference of the system, its own code.
    sets = copy_sets(classic.sets, tmp_path / "sets", [classic.set1])
    manifest = sets / classic.set1 / "archives" / f"{classic.root_fs}.manifest"
    with open(manifest, "r+b") as f:
        f.seek(manifest.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0x01]))
    r = cli.spawn("verify", "--from", sets, "--root", mnt, state=classic.state)
    assert r.returncode == ExitCode.DAMAGED, r.output
    assert f"{classic.root_fs}.manifest" in r.output and "damaged" in r.output


def test_incremental_set_onto_a_smaller_disk_after_a_killed_save(
    classic: Classic, rig: Rig, mnt: Path
) -> None:
    # The newest complete set is the incremental one: the killed save left only leftovers.
    listed = cli.spawn("list", classic.sets, "--json", state=classic.state)
    assert [s["id"] for s in listed.json()] == [classic.set1, classic.set2]
    target = blank(rig, "smaller", CLASSIC_SIZE * 17 // 20)
    # The plan read from the medium, and recover executing exactly that plan (the same
    # options: --no-finalize is part of what the hash covers).
    plan = cli.spawn("plan", "--from", classic.sets, "--target", target.path, "--root", mnt,
                     "--no-finalize", "--json", state=classic.state)
    assert plan.returncode == 0, plan.output
    shrunk = [p for lay in plan.json()["layouts"] for p in lay["partitions"]
              if p["after"] < p["before"]]
    assert shrunk, "the smaller disk needs a partition to shrink"
    r = cli.spawn("recover", "--from", classic.sets, "--target", target.path, "--plan-hash",
                  plan.json()["hash"], "--root", mnt, "--no-finalize", state=classic.state)
    assert r.returncode == 0, r.output
    assert f"set {classic.set2}" in r.stdout
    assert_same_systems(classic.expected2, classic.recovered(mnt))
    r = cli.spawn("verify", "--from", classic.sets, "--root", mnt, state=classic.state)
    assert r.returncode == 0, r.output


def test_a_recovery_killed_while_restoring_is_run_again_to_the_end(
    classic: Classic, rig: Rig, mnt: Path
) -> None:
    target = blank(rig, "killed", CLASSIC_SIZE)
    argv = ["recover", "--from", classic.sets, "--set", classic.set1, "--target",
            target.path, "--yes", "--root", mnt, "--no-finalize"]
    env = cli.clean_env(classic.state)
    proc = subprocess.Popen(cli.command(*argv),
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env=env, stdin=subprocess.DEVNULL, start_new_session=True)
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            if line.startswith("restoring the data"):
                time.sleep(0.3)  # part of the first tree is written
                break
        assert proc.poll() is None, "the recovery ended before it could be killed"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    r = cli.spawn(*argv, state=classic.state)
    assert r.returncode == 0, r.output
    # The layout is checked on the disks, not made again; the data is restored again.
    layout = next(line for line in r.stdout.splitlines()
                  if line.startswith("layout recreated:"))
    assert "verified" in layout and "done" not in layout, layout
    assert_same_systems(classic.expected1, classic.recovered(mnt))


def copy_sets(src: Path, dst: Path, ids: list[str]) -> Path:
    dst.mkdir()
    for set_id in ids:
        shutil.copytree(src / set_id, dst / set_id)
    return dst


def test_truncated_set_is_refused_before_any_disk_is_touched(
    classic: Classic, rig: Rig, tmp_path: Path, mnt: Path
) -> None:
    sets = copy_sets(classic.sets, tmp_path / "sets", [classic.set1, classic.set2])
    archive = sets / classic.set1 / "archives" / f"{classic.root_fs}.archive"
    with open(archive, "r+b") as f:
        f.truncate(archive.stat().st_size - 100)
    target = blank(rig, "untouched", CLASSIC_SIZE)
    before = sha256_of(target.image)
    r = cli.spawn("recover", "--from", sets, "--target", target.path, "--yes", "--root", mnt,
                  state=tmp_path / "state")
    assert r.returncode == ExitCode.DAMAGED, r.output
    # The incremental set reads from set 1: its truncated archive is found by the check.
    assert "incomplete" in r.stderr and f"{classic.root_fs}.archive" in r.stderr
    assert "recreating the layout" not in r.stdout
    assert sha256_of(target.image) == before


def test_a_corrupted_byte_is_found_and_named(
    classic: Classic, rig: Rig, tmp_path: Path, mnt: Path
) -> None:
    sets = copy_sets(classic.sets, tmp_path / "sets", [classic.set1])
    archive = sets / classic.set1 / "archives" / f"{classic.root_fs}.archive"
    with open(archive, "r+b") as f:
        f.seek(archive.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0x01]))
    target = blank(rig, "corrupt", CLASSIC_SIZE)
    r = cli.spawn("recover", "--from", sets, "--target", target.path, "--yes", "--root", mnt,
                  "--no-finalize", "--json", state=tmp_path / "state")
    assert r.returncode == ExitCode.DAMAGED, r.output
    out = r.json()
    statuses = [c["status"] for c in out["commands"]["commands"]]
    assert statuses[0] == "failed" and set(statuses[1:]) == {"not-run"}
    failed = out["commands"]["commands"][0]
    assert f"{classic.root_fs}.archive" in failed["message"]
    assert "damaged" in failed["message"]
    assert failed["exit_code"] == ExitCode.DAMAGED
    # Read first, the set's own checksums find the same byte before any wipe.
    target2 = blank(rig, "corrupt2", CLASSIC_SIZE)
    before = sha256_of(target2.image)
    r = cli.spawn("recover", "--from", sets, "--target", target2.path, "--yes", "--root",
                  tmp_path / "mnt2", "--verify-set", state=tmp_path / "state2")
    assert r.returncode == ExitCode.DAMAGED, r.output
    assert f"{classic.root_fs}.archive" in r.stderr and "damaged" in r.stderr
    assert sha256_of(target2.image) == before


def test_encrypted_set_needs_its_identity(
    classic: Classic, rig: Rig, tmp_path: Path, mnt: Path
) -> None:
    listed = cli.spawn("list", classic.encrypted, "--json", state=tmp_path)
    assert listed.json()[0]["encrypted"] is True
    target = blank(rig, "encrypted", CLASSIC_SIZE)
    before = sha256_of(target.image)
    r = cli.spawn("recover", "--from", classic.encrypted, "--target", target.path, "--yes",
                  "--root", mnt, state=tmp_path / "state")
    assert r.returncode == 3, r.output
    assert "encrypted" in r.stderr and "--identity" in r.stderr
    assert sha256_of(target.image) == before
    # A wrong identity is found by reading the manifests, before any wipe too.
    wrong = tmp_path / "wrong.key"
    run.run(["age-keygen", "-o", str(wrong)])
    r = cli.spawn("recover", "--from", classic.encrypted, "--target", target.path, "--yes",
                  "--root", mnt, "--identity", wrong, state=tmp_path / "state")
    assert r.returncode == ExitCode.DECRYPT_FAILED, r.output
    assert "decrypt" in r.stderr
    assert sha256_of(target.image) == before

    r = cli.spawn("recover", "--from", classic.encrypted, "--target", target.path, "--yes",
                  "--root", mnt, "--identity", classic.identity, "--no-finalize",
                  state=tmp_path / "state")
    assert r.returncode == 0, r.output
    assert_same_systems(classic.expected2, classic.recovered(mnt))


def test_sftp_cycle(classic: Classic, rig: Rig, tmp_path: Path, mnt: Path) -> None:
    ssh = ("--ssh-key", classic.sshd.key, "--ssh-known-hosts", classic.sshd.known_hosts)
    listed = cli.spawn("list", classic.sftp_url, *ssh, "--json", state=tmp_path)
    assert listed.returncode == 0, listed.output
    assert len(listed.json()) == 1
    # The server's key as the save verified it, in the set (and so in its rescue image).
    (pinned,) = (classic.sshd.root / "classic").glob("*/known_hosts")
    assert pinned.read_text().split()[1:] == classic.sshd.host_key_line.split()[1:]
    target = blank(rig, "sftp", CLASSIC_SIZE * 3 // 2)
    r = cli.spawn("recover", "--from", classic.sftp_url, *ssh, "--target", target.path,
                  "--yes", "--root", mnt, "--no-finalize", state=tmp_path / "state")
    assert r.returncode == 0, r.output
    assert_same_systems(classic.expected2, classic.recovered(mnt))
    r = cli.spawn("verify", "--from", classic.sftp_url, *ssh, "--root", mnt,
                  state=tmp_path / "state")
    assert r.returncode == 0, r.output


def test_incremental_needs_a_full_set_first(rig: Rig, tmp_path: Path) -> None:
    disk = rig.disk("lonely", 200 * MIB)
    rig.sh("mkfs.ext4", "-q", disk.path)
    root = rig.mount(disk.path, tmp_path / "root")
    write(root / "etc/hostname", b"lonely\n")
    r = cli.spawn("save", "--to", tmp_path / "sets", "--root", root, "--incremental",
                  "--no-rescue", state=tmp_path / "state")
    assert r.returncode == 3, r.output
    assert "make a full one first" in r.stderr
    assert not (tmp_path / "sets").exists()


def test_compression_level_is_checked_then_used(rig: Rig, tmp_path: Path) -> None:
    disk = rig.disk("levels", 200 * MIB)
    rig.sh("mkfs.ext4", "-q", disk.path)
    root = rig.mount(disk.path, tmp_path / "root")
    write(root / "etc/hostname", b"levels\n")
    write(root / "srv/text.txt", b"the same line again and again\n" * 20000)
    r = cli.spawn("save", "--to", tmp_path / "sets", "--root", root, "--no-rescue",
                  "--compression-level", "0", state=tmp_path / "state")
    assert r.returncode == 2, r.output
    assert "--compression-level 0" in r.stderr
    assert not (tmp_path / "sets").exists()
    r = cli.spawn("save", "--to", tmp_path / "sets", "--root", root, "--no-rescue",
                  "--compression-level", "19", state=tmp_path / "state")
    assert r.returncode == 0, r.output
    (archive,) = (tmp_path / "sets").rglob("*.arc*")
    frame = subprocess.run(["zstd", "-lv", str(archive)], capture_output=True, text=True,
                           check=True).stdout
    assert "Compressed" in frame and archive.stat().st_size < 20000


def manifest_paths(manifest: Path) -> list[str]:
    text = subprocess.run(["zstd", "-dc", str(manifest)], capture_output=True, check=True,
                          text=True).stdout
    return [line.split("\t")[1] for line in text.splitlines() if not line.startswith("#")]


def test_keep_prunes_without_breaking_a_chain_and_a_set_never_holds_itself(
    rig: Rig, tmp_path: Path
) -> None:
    disk = rig.disk("small", 200 * MIB)
    rig.sh("mkfs.ext4", "-q", disk.path)
    root = rig.mount(disk.path, tmp_path / "root")
    write(root / "etc/hostname", b"small\n")
    write(root / "data/keep", b"kept")
    write(root / "data/cache/big", os.urandom(MIB))
    (root / "srv").mkdir()
    sets = root / "srv/sets"  # the medium is inside the saved tree
    state = tmp_path / "state"

    def save(*extra: str) -> dict[str, Any]:
        r = cli.spawn("save", "--to", sets, "--root", root, "--no-rescue", "--exclude",
                      "/data/cache", "--json", *extra, state=state)
        assert r.returncode == 0, r.output
        result: dict[str, Any] = r.json()
        return result

    first = save()
    assert first["excluded"] == ["/data/cache", "/srv/sets"]
    paths = manifest_paths(next(sets.glob(f"{first['set']['id']}/archives/*.manifest")))
    assert "data/keep" in paths and "srv" in paths
    assert not [p for p in paths if p.startswith(("srv/sets", "data/cache"))]
    write(root / "data/new", b"new")
    second = save("--incremental", "--keep", "1")
    # The incremental set needs its parent: both are kept.
    assert second["pruned"] == []
    listed = cli.spawn("list", sets, "--json", state=state).json()
    assert [s["id"] for s in listed] == [first["set"]["id"], second["set"]["id"]]
    third = save("--keep", "1")
    assert sorted(third["pruned"]) == sorted([first["set"]["id"], second["set"]["id"]])
    listed = cli.spawn("list", sets, "--json", state=state).json()
    assert [s["id"] for s in listed] == [third["set"]["id"]]
    # The plain copies of the manifests kept for the next incremental save: the last two.
    assert len(list((state / "manifests").iterdir())) == 2


def test_a_set_on_a_usb_disk_below_the_saved_tree_leaves_that_disk_out(
    rig: Rig, tmp_path: Path
) -> None:
    system = rig.disk("system", 200 * MIB)
    usb = rig.disk("usb", 100 * MIB)
    rig.sh("mkfs.ext4", "-q", system.path)
    rig.sh("mkfs.ext4", "-q", usb.path)
    root = rig.mount(system.path, tmp_path / "root")
    rig.mount(usb.path, root / "mnt/usb")
    write(root / "etc/hostname", b"usb\n")
    write(root / "mnt/usb/older-things", b"not this system's")
    sets = root / "mnt/usb/sets"
    r = cli.spawn("save", "--to", sets, "--root", root, "--no-rescue", "--json",
                  state=tmp_path / "state")
    assert r.returncode == 0, r.output
    assert [u["mountpoint"] for u in r.json()["units"]] == ["/"]
    set_id = r.json()["set"]["id"]
    desc = (sets / set_id / "description.toml").read_text()
    assert f'path = "{system.path}"' in desc and f'path = "{usb.path}"' not in desc
    target = blank(rig, "usb-target", 200 * MIB)
    r = cli.spawn("plan", "--from", sets, "--target", target.path, state=tmp_path / "state")
    assert r.returncode == 0, r.output


@pytest.fixture(scope="module")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seaweed]:
    server = Seaweed(tmp_path_factory.mktemp("seaweed"))
    try:
        server.create_bucket("cycle")
        yield server
    finally:
        server.close()


def test_s3_cycle(rig: Rig, tmp_path: Path, mnt: Path, seaweed: Seaweed) -> None:
    disk = rig.disk("s3", 300 * MIB)
    rig.sh("mkfs.ext4", "-q", "-L", "s3root", disk.path)
    root = rig.mount(disk.path, tmp_path / "root")
    write(root / "etc/hostname", b"s3host\n")
    build_rich_tree(root / "srv/rich", many=300)
    expected = {"/": without(snapshot_mounted(root, tmp_path / "view"), emptied=EMPTIED)}
    url = "s3://cycle/hosts/s3host"
    s3 = ("--s3-endpoint", seaweed.endpoint, "--s3-insecure-http")  # plain HTTP on loopback
    creds = {**seaweed.environ(), "HOME": str(tmp_path)}
    r = cli.spawn("save", "--to", url, *s3, "--root", root, "--no-rescue", state=tmp_path / "st",
                  env=creds)
    assert r.returncode == 0, r.output
    umount_below(root)
    target = blank(rig, "s3-target", 450 * MIB)
    r = cli.spawn("recover", "--from", url, *s3, "--target", target.path, "--yes", "--root",
                  mnt, "--no-finalize", state=tmp_path / "st", env=creds)
    assert r.returncode == 0, r.output
    assert_same_systems(expected, system_snapshots(mnt, ["/"], tmp_path / "views"))
    r = cli.spawn("verify", "--from", url, *s3, "--root", mnt, state=tmp_path / "st",
                  env=creds)
    assert r.returncode == 0, r.output


# ---------------------------------------------------------------- btrfs and a whole disk


def test_btrfs_subvolumes_and_a_whole_disk_filesystem(
    rig: Rig, tmp_path: Path, mnt: Path
) -> None:
    work = tmp_path
    source = Rig(work / "source")
    (work / "source").mkdir()
    try:
        expected, expected_data, saved = _btrfs_source(source, work)
    finally:
        source.cleanup()
    trees = list(expected)
    new_sys = rig.disk("btrfs-new", 900 * MIB)
    new_data = rig.disk("data-new", 200 * MIB)
    r = cli.spawn("recover", "--from", work / "sets", "--target", new_sys.path, "--target",
                  new_data.path, "--map", f"{saved['sys']}={new_sys.path}", "--map",
                  f"{saved['data']}={new_data.path}", "--yes", "--root", mnt,
                  "--no-finalize", state=work / "state")
    assert r.returncode == 0, r.output
    assert_same_trees(expected_data, snapshot_mounted(mnt / "data", work / "dataview2"))
    gen = btrfs_top(new_sys.part(2), work / "newtop")
    newtop = next(gen)
    try:
        for t in trees:
            actual = snapshot(newtop / t if t else newtop)
            if t == "@snap":
                # A snapshot shows a nested subvolume as a stub directory whose times the
                # kernel makes up each time it loads it; restored, it is a plain directory.
                for snap in (expected[t], actual):
                    snap[b"srv/nested"].pop("mtime_ns")
            assert_same_trees(expected[t], actual)
        ro = run.output(["btrfs", "property", "get", "-ts", str(newtop / "@snap"), "ro"])
        assert ro.strip() == "ro=true"
    finally:
        gen.close()
    r = cli.spawn("verify", "--from", work / "sets", "--root", mnt, state=work / "state")
    assert r.returncode == 0, r.output


def _btrfs_source(rig: Rig, work: Path) -> tuple[dict[str, Snapshot], Snapshot, dict[str, str]]:
    disk = rig.disk("btrfs", 600 * MIB, table=gpt([(1, BIOS, "bios"),
                                                  (560, LINUX, "btrfs")]))
    data = rig.disk("data", 200 * MIB)
    rig.sh("mkfs.btrfs", "-q", "-L", "sys", disk.part(2))
    rig.sh("mkfs.ext4", "-q", "-L", "data", data.path)
    top = rig.mount(disk.part(2), work / "top")
    for sv in ("@", "@home"):
        rig.sh("btrfs", "subvolume", "create", str(top / sv))
    (top / "@/srv").mkdir()
    rig.sh("btrfs", "subvolume", "create", str(top / "@/srv/nested"))
    write(top / "@/etc/hostname", b"btrfs\n")
    build_rich_tree(top / "@/srv/rich", many=300)
    write(top / "@/srv/nested/inside", os.urandom(10000), owner=(1000, 1000))
    write(top / "@home/alice/notes", b"notes", mode=0o600, owner=(1000, 1000))
    write(top / "toplevel-file", b"in the top level itself")
    rig.sh("btrfs", "subvolume", "snapshot", "-r", str(top / "@"), str(top / "@snap"))
    default = run.output(["btrfs", "inspect-internal", "rootid", str(top / "@")]).strip()
    rig.sh("btrfs", "subvolume", "set-default", default, str(top))
    root = rig.mount(disk.part(2), work / "system", "subvol=@")
    rig.mount(disk.part(2), root / "home", "subvol=@home")
    rig.mount(data.path, root / "data")
    write(root / "data/big", os.urandom(3 * MIB))
    os.setxattr(root / "data/big", "user.where", b"whole disk")
    trees = ("", "@", "@home", "@/srv/nested", "@snap")
    expected = {t: snapshot(top / t if t else top) for t in trees}
    expected_data = snapshot_mounted(root / "data", work / "dataview")
    r = cli.spawn("save", "--to", work / "sets", "--root", root, "--no-rescue", "--json",
                  state=work / "state")
    assert r.returncode == 0, r.output
    units = {u["what"] for u in r.json()["units"]}
    assert {"btrfs subvolume @ at /", "btrfs subvolume @home at /home",
            "btrfs subvolume @/srv/nested", "btrfs subvolume @snap", "/data"} <= units
    umount_below(root)
    umount_below(top)
    return expected, expected_data, {"sys": f"disk.{disk.kname}", "data": f"disk.{data.kname}"}
