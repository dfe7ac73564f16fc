"""`resurgo recover --layout-only` on real loop disks: the saved layout recreated, compared.

Each source system is built once per module on loop disks, described with probe_storage
and written as a description file; then its disks are detached (a recreated XFS or btrfs
with the same UUID could not be mounted beside the original). Each test recreates it on
blank loop disks through the CLI and describes the result again:

gpt:    ESP vfat (FAT32), /boot ext4, / ext4 (512-byte inodes, 20000 inodes, 2 %
        reserved, no metadata_csum), a 1 MiB gap, /home xfs (3 AGs, reflink, bigtime,
        no rmapbt), swap; chosen disk GUID, partition GUIDs, names, an attribute.
mbr:    a bootable primary ext4 at /srv, an extended partition, a FAT16 logical and an
        ext4 logical at /mnt/logical; a chosen disk id.
btrfs:  BIOS boot partition + btrfs (32 KiB nodes, dup metadata): @ at /, @home at /home,
        @/srv/nested, a read-only @snap, @ as the default subvolume.
whole:  ext4 on the whole disk at /data.

A decoy loop disk full of random data is attached throughout and never in a plan: it
must be byte-identical afterwards.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pty
import secrets
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from resurgo import fileformat, run
from resurgo.demo import umount_below
from resurgo.errors import ExitCode
from resurgo.model import Description, Filesystem, FormatInfo, FsType, Mount
from resurgo.probe import mounts
from resurgo.probe.state import StorageState
from resurgo.probe.storage import probe_storage
from tests.support import cli
from tests.support.builders import description, description_of, disk, ext4, part
from tests.support.consts import BIOS, ESP, HOME, LINUX, MIB, ROOT_X86_64, SWAP
from tests.support.loopdisks import (
    Loop,
    Part,
    Rig,
    dos_script,
    gpt_script,
    new_uuid,
    require_loop_support,
)

pytestmark = pytest.mark.storage

REPO = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------- helpers


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def private_mounts_on(loops: list[Loop]) -> list[str]:
    """Top-level btrfs mounts recover keeps in /run/resurgo, on these disks."""
    names = {lp.kname for lp in loops}
    out = []
    for e in mounts.read_mountinfo():
        if e.mountpoint.startswith("/run/resurgo/") and any(
            e.source.removeprefix("/dev/").startswith(n) for n in names):
            out.append(e.mountpoint)
    return out


def why(r: cli.Result) -> str:
    """What went wrong, for assertion messages."""
    try:
        outcome = r.json().get("outcome") or {}
    except ValueError:
        outcome = {}
    return f"{r.stderr}\n{outcome.get('error')}"


# ---------------------------------------------------------------- the source systems


@dataclass
class Source:
    name: str
    path: Path
    desc: Description
    # Saved disk id -> its size and sector size.
    disks: dict[str, tuple[int, int]]


def describe(name: str, rig: Rig, root: Path, include: list[str], out: Path) -> Source:
    state = probe_storage(root, include, [])
    assert state.unsupported == [], state.unsupported
    desc = dataclasses.replace(
        description_of(state),
        format=FormatInfo("1.0", "0.1.0", "2026-01-01T00:00:00Z", f"source-{name}"))
    fileformat.write(desc, out)
    return Source(name, out, fileformat.read(out),
                  {d.id: (d.size, d.logical_sector_size) for d in desc.disks})


def fill(path: Path, mib: int) -> None:
    """Some data, so that the used bytes bound how far a filesystem may shrink."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        for _ in range(mib):
            f.write(os.urandom(MIB))


def build_gpt(rig: Rig, work: Path) -> tuple[Path, list[str]]:
    parts = [
        Part(1, 2048, 131072, ESP, new_uuid().upper(), "EFI system partition"),
        Part(2, 133120, 131072, LINUX, new_uuid().upper(), "boot"),
        Part(3, 264192, 409600, ROOT_X86_64, new_uuid().upper(), "root", attrs="GUID:59"),
        Part(4, 675840, 655360, HOME, new_uuid().upper(), "home"),
        Part(5, 1331200, 65536, SWAP, new_uuid().upper(), "swap"),
    ]
    disk = rig.disk("gpt", 700 * MIB, table=gpt_script(new_uuid().upper(), parts))
    rig.sh("mkfs.vfat", "-F", "32", "-i", secrets.token_hex(4).upper(), "-n", "ESP",
           disk.part(1))
    rig.sh("mkfs.ext4", "-q", "-b", "4096", "-U", new_uuid(), "-L", "boot", disk.part(2))
    rig.sh("mkfs.ext4", "-q", "-b", "4096", "-I", "512", "-N", "20000", "-m", "2",
           "-O", "^metadata_csum,^huge_file", "-U", new_uuid(), "-L", "root", disk.part(3))
    rig.sh("mkfs.xfs", "-q", "-m", f"uuid={new_uuid()},reflink=1,bigtime=1,rmapbt=0",
           "-d", "agcount=3", "-L", "home", disk.part(4))
    rig.sh("mkswap", "-U", new_uuid(), "-L", "swap1", disk.part(5))
    root = work / "root"
    rig.mount(disk.part(3), root, "noatime")
    rig.mount(disk.part(2), root / "boot", "nosuid,nodev")
    rig.mount(disk.part(4), root / "home")
    fill(root / "usr" / "data", 24)
    fill(root / "home" / "user" / "data", 40)
    return root, [disk.path]


def build_mbr(rig: Rig, work: Path) -> tuple[Path, list[str]]:
    parts = [
        Part(1, 2048, 163840, "83", bootable=True),
        Part(2, 165888, 346112, "5"),
        Part(5, 167936, 65536, "c"),
        Part(6, 235520, 276480, "83"),
    ]
    disk = rig.disk("mbr", 256 * MIB, table=dos_script("0x" + secrets.token_hex(4), parts))
    rig.sh("mkfs.ext4", "-q", "-b", "4096", "-U", new_uuid(), "-L", "srv", disk.part(1))
    rig.sh("mkfs.vfat", "-F", "16", "-i", secrets.token_hex(4).upper(), "-n", "LOGIC",
           disk.part(5))
    rig.sh("mkfs.ext4", "-q", "-b", "4096", "-U", new_uuid(), "-L", "logical", disk.part(6))
    root = work / "root"
    root.mkdir()
    rig.mount(disk.part(1), root / "srv", "noexec")
    rig.mount(disk.part(6), root / "mnt" / "logical")
    fill(root / "srv" / "data", 8)
    return root, [disk.path]


def build_btrfs(rig: Rig, work: Path) -> tuple[Path, list[str]]:
    parts = [
        Part(1, 2048, 2048, BIOS, new_uuid().upper(), "bios"),
        Part(2, 4096, 1040384, LINUX, new_uuid().upper(), "system"),
    ]
    disk = rig.disk("btrfs", 512 * MIB, table=gpt_script(new_uuid().upper(), parts))
    rig.sh("mkfs.btrfs", "-q", "-n", "32768", "-m", "dup", "-d", "single", "-U", new_uuid(),
           "-L", "system", disk.part(2))
    top = rig.mount(disk.part(2), work / "top")
    for sub in ("@", "@home"):
        rig.sh("btrfs", "subvolume", "create", str(top / sub))
    (top / "@" / "srv").mkdir()
    (top / "@" / "home").mkdir()
    rig.sh("btrfs", "subvolume", "create", str(top / "@" / "srv" / "nested"))
    rig.sh("btrfs", "subvolume", "snapshot", "-r", str(top / "@"), str(top / "@snap"))
    rig.sh("btrfs", "subvolume", "set-default", str(top / "@"))
    root = work / "root"
    rig.mount(disk.part(2), root, "subvol=@,noatime")
    rig.mount(disk.part(2), root / "home", "subvol=@home")
    fill(root / "home" / "data", 16)
    return root, [disk.path]


def build_whole(rig: Rig, work: Path) -> tuple[Path, list[str]]:
    disk = rig.disk("whole", 128 * MIB)
    rig.sh("mkfs.ext4", "-q", "-b", "4096", "-U", new_uuid(), "-L", "data", disk.path)
    root = work / "root"
    root.mkdir()
    rig.mount(disk.path, root / "data", "noatime,nodev")
    fill(root / "data" / "file", 8)
    return root, [disk.path]


BUILDERS: dict[str, Callable[[Rig, Path], tuple[Path, list[str]]]] = {
    "gpt": build_gpt,
    "mbr": build_mbr,
    "btrfs": build_btrfs,
    "whole": build_whole,
}


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Source]:
    require_loop_support()
    out = {}
    for name, build in BUILDERS.items():
        work = tmp_path_factory.mktemp(f"source-{name}")
        rig = Rig(work)
        try:
            root, disks = build(rig, work)
            out[name] = describe(name, rig, root, disks, work / "description.toml")
        finally:
            # The originals go before anything is recreated: same UUIDs side by side
            # would not mount (XFS, btrfs).
            rig.cleanup()
    return out


# ---------------------------------------------------------------- the targets


@dataclass
class Recovery:
    rig: Rig
    root: Path
    state: Path
    decoy: Loop
    decoy_sum: str
    loops: list[Loop]

    def disks(self, source: Source, scale: float = 1.0, sector_size: int | None = None,
              size: int | None = None) -> dict[str, Loop]:
        """A blank loop disk for each saved disk of source: saved id -> loop."""
        out = {}
        for sid, (saved, lss) in sorted(source.disks.items()):
            want = size or int(saved * scale) // MIB * MIB
            loop = self.rig.disk(f"target-{len(self.loops)}", want,
                                 sector_size=sector_size or lss)
            self.loops.append(loop)
            out[sid] = loop
        return out

    def args(self, source: Source, targets: dict[str, Loop], *extra: str) -> list[str]:
        argv = ["--from", str(source.path), "--root", str(self.root)]
        for sid, loop in targets.items():
            argv += ["--target", loop.path, "--map", f"{sid}={loop.path}"]
        return [*argv, *extra]

    def recover(self, source: Source, targets: dict[str, Loop], *extra: str,
                extra_env: dict[str, str] | None = None) -> cli.Result:
        return cli.spawn("recover", "--json", "--layout-only", "--yes",
                         *self.args(source, targets, *extra), state=self.state,
                         env=extra_env)

    def plan(self, source: Source, targets: dict[str, Loop], *extra: str) -> cli.Result:
        return cli.spawn("plan", "--json", *self.args(source, targets, *extra),
                         state=self.state)

    def describe(self, targets: dict[str, Loop]) -> StorageState:
        return probe_storage(self.root, [lp.path for lp in targets.values()], [])


@pytest.fixture
def recovery(rig: Rig, tmp_path: Path) -> Iterator[Recovery]:
    decoy = rig.disk("decoy", 32 * MIB)
    with open(decoy.path, "wb") as f:
        for _ in range(32):
            f.write(os.urandom(MIB))
    rig.sh("blockdev", "--flushbufs", decoy.path)
    r = Recovery(rig, tmp_path / "target-root", tmp_path / "state", decoy,
                 sha256(decoy.path), [])
    try:
        yield r
    finally:
        umount_below(r.root)
        for m in private_mounts_on(r.loops):
            run.run(["umount", "-l", m], check=False)
    assert sha256(decoy.path) == r.decoy_sum, "the decoy disk changed"


# ---------------------------------------------------------------- comparing


def by_uuid(items: list[Filesystem]) -> dict[str, Filesystem]:
    return {(f.uuid or "").lower(): f for f in items}


def relative(fs: Filesystem) -> list[str]:
    return sorted(m.mountpoint for m in fs.mounts)


def compare(source: Source, plan: dict[str, Any], result: StorageState,
            targets: dict[str, Loop]) -> None:
    """The recreated layout has the saved identities and options, and the plan's sizes."""
    saved = source.desc
    layouts = {lay["saved"]: lay for lay in plan["layouts"]}
    new_disks = {d.path: d for d in result.disks}
    for sd in saved.disks:
        loop = targets[sd.id]
        nd = new_disks[loop.path]
        assert nd.logical_sector_size == loop.sector_size
        if sd.table is None:
            assert nd.table is None
            assert not [p for p in result.partitions if p.disk == nd.id]
            continue
        assert nd.table is not None
        assert (nd.table.label, nd.table.id.lower()) == (sd.table.label, sd.table.id.lower())
        old = sorted((p for p in saved.partitions if p.disk == sd.id), key=lambda p: p.number)
        new = sorted((p for p in result.partitions if p.disk == nd.id), key=lambda p: p.number)
        assert [(p.number, p.kind, p.type.lower(), (p.uuid or "").lower(), p.name, p.attrs,
                 p.bootable) for p in new] == [
            (p.number, p.kind, p.type.lower(), (p.uuid or "").lower(), p.name, p.attrs,
             p.bootable) for p in old]
        planned = {p["number"]: p for p in layouts[sd.id]["partitions"]}
        assert [(p.start, p.size, p.sector_size) for p in new] == [
            (planned[p.number]["start"], planned[p.number]["size"],
             planned[p.number]["sector_size"]) for p in new]

    old_fs = by_uuid(list(saved.filesystems))
    new_fs = by_uuid(result.filesystems)
    assert set(new_fs) == set(old_fs)
    after = {v["id"]: v["after"] for v in plan["volumes"]}
    same_sectors = all(
        targets[d.id].sector_size == d.logical_sector_size for d in saved.disks)
    for uuid, o in old_fs.items():
        n = new_fs[uuid]
        assert (n.type, n.label, relative(n)) == (o.type, o.label, relative(o)), uuid
        for om in o.mounts:
            nm = next(m for m in n.mounts if m.mountpoint == om.mountpoint)
            assert _subvol_path(result, nm) == _subvol_path(saved, om)
        size = after[o.id]
        assert n.size is not None and n.size <= size
        if n.type != FsType.VFAT:
            assert n.size > size - 4 * MIB, (o.id, n.size, size)
        if o.ext is not None:
            assert n.ext is not None
            assert (n.ext.block_size, n.ext.inode_size, set(n.ext.features), n.ext.journal) == (
                o.ext.block_size, o.ext.inode_size, set(o.ext.features), o.ext.journal)
            assert n.ext.reserved_blocks_percent == pytest.approx(
                o.ext.reserved_blocks_percent, abs=0.1)
            if n.size == o.size:
                assert n.ext.inode_count == o.ext.inode_count
        if o.xfs is not None:
            assert n.xfs is not None
            keep = ("block_size", "inode_size", "reflink", "crc", "finobt", "sparse",
                    "bigtime", "inobtcount", "rmapbt")
            assert {k: getattr(n.xfs, k) for k in keep} == {k: getattr(o.xfs, k) for k in keep}
            if n.size == o.size and same_sectors:
                assert n.xfs.ag_count == o.xfs.ag_count
        if o.vfat is not None:
            assert n.vfat is not None
            assert (n.vfat.fat_size, n.vfat.volume_id) == (o.vfat.fat_size, o.vfat.volume_id)
        if o.btrfs is not None:
            assert n.btrfs is not None
            keep = ("node_size", "sector_size", "data_profile", "metadata_profile")
            assert {k: getattr(n.btrfs, k) for k in keep} == {
                k: getattr(o.btrfs, k) for k in keep}
            # The kernel sets default_subvol with set-default, when it commits: not a choice.
            assert set(n.btrfs.features) - {"default_subvol"} == set(o.btrfs.features) - {
                "default_subvol"}
            assert _default_path(result, n) == _default_path(saved, o)
            assert _subvolumes(result, n) == _subvolumes(saved, o)

    old_swap = {(s.uuid, s.label) for s in saved.swaps}
    assert {(s.uuid, s.label) for s in result.swaps} == old_swap


def _subvols(state: StorageState | Description, fs: Filesystem) -> list[Any]:
    return [s for s in state.subvolumes if s.filesystem == fs.id]


def _subvolumes(state: StorageState | Description, fs: Filesystem) -> set[tuple[str, bool]]:
    return {(s.path, s.readonly) for s in _subvols(state, fs)}


def _default_path(state: StorageState | Description, fs: Filesystem) -> str | None:
    assert fs.btrfs is not None
    return next((s.path for s in _subvols(state, fs)
                 if s.subvol_id == fs.btrfs.default_subvolume), None)


def _subvol_path(state: StorageState | Description, m: Mount) -> str | None:
    return next((s.path for s in state.subvolumes if s.id == m.subvolume), None)


def statuses(run_: cli.Result) -> dict[str, str]:
    return {r["id"]: r["status"] for r in run_.json()["outcome"]["results"]}


# ---------------------------------------------------------------- the tests


@pytest.mark.parametrize("name", list(BUILDERS))
def test_same_size(sources: dict[str, Source], recovery: Recovery, name: str) -> None:
    src = sources[name]
    targets = recovery.disks(src)
    r = recovery.recover(src, targets)
    assert r.returncode == 0, why(r)
    data = r.json()
    assert data["outcome"]["ok"] is True
    assert set(statuses(r).values()) == {"done"}
    compare(src, data["plan"], recovery.describe(targets), targets)


@pytest.mark.parametrize("name", list(BUILDERS))
def test_one_and_a_half_times_the_size(sources: dict[str, Source], recovery: Recovery,
                                       name: str) -> None:
    src = sources[name]
    targets = recovery.disks(src, scale=1.5)
    r = recovery.recover(src, targets)
    assert r.returncode == 0, why(r)
    plan = r.json()["plan"]
    assert any(v["change"] == "grow" for v in plan["volumes"])
    compare(src, plan, recovery.describe(targets), targets)


# Smaller than saved, still holding the data with its margin.
SMALLER = {"gpt": 600 * MIB, "mbr": 200 * MIB, "btrfs": 300 * MIB, "whole": 96 * MIB}


@pytest.mark.parametrize("name", list(BUILDERS))
def test_smaller_disk_that_holds_the_data(sources: dict[str, Source], recovery: Recovery,
                                          name: str) -> None:
    src = sources[name]
    targets = recovery.disks(src, size=SMALLER[name])
    r = recovery.recover(src, targets)
    assert r.returncode == 0, why(r)
    plan = r.json()["plan"]
    assert any(v["change"] == "shrink" for v in plan["volumes"])
    compare(src, plan, recovery.describe(targets), targets)


# A FAT32 ESP needs 257 MiB at 4096-byte sectors (65525 clusters): the GPT disk grows.
FOURK = {"gpt": 1050 * MIB}


@pytest.mark.parametrize("name", list(BUILDERS))
def test_4096_byte_sectors(sources: dict[str, Source], recovery: Recovery, name: str) -> None:
    src = sources[name]
    targets = recovery.disks(src, sector_size=4096, size=FOURK.get(name))
    r = recovery.recover(src, targets)
    assert r.returncode == 0, why(r)
    plan = r.json()["plan"]
    assert {lay["sector_size"] for lay in plan["layouts"]} == {4096}
    result = recovery.describe(targets)
    compare(src, plan, result, targets)
    assert {p.sector_size for p in result.partitions} <= {4096}
    for fs in result.filesystems:
        if fs.vfat is not None:
            assert fs.vfat.sector_size == 4096
        if fs.xfs is not None:
            assert fs.xfs.sector_size == 4096


def test_too_small_exits_3_and_touches_nothing(sources: dict[str, Source],
                                               recovery: Recovery) -> None:
    src = sources["gpt"]
    targets = recovery.disks(src, size=400 * MIB)
    [loop] = targets.values()
    recovery.rig.sh("sfdisk", "--quiet", loop.path, input="label: dos\n,,83\n")
    before = sha256(loop.path)
    p = recovery.plan(src, targets)
    assert p.returncode == 3
    assert [f["check"] for f in p.json()["failures"]] == ["target-too-small"]
    r = recovery.recover(src, targets)
    assert r.returncode == 3
    assert r.json()["outcome"] is None
    assert "nothing was written" in r.stderr
    assert sha256(loop.path) == before
    assert not (recovery.state).exists()


def test_a_rerun_is_a_noop_with_the_same_result(sources: dict[str, Source],
                                                recovery: Recovery) -> None:
    src = sources["btrfs"]
    targets = recovery.disks(src)
    first = recovery.recover(src, targets)
    assert first.returncode == 0, why(first)
    journal = Path(first.json()["outcome"]["journal"])
    lines = journal.read_text().splitlines()
    assert len(lines) == 1 + len(first.json()["plan"]["actions"])
    described = recovery.describe(targets)
    again = recovery.recover(src, targets)
    assert again.returncode == 0, why(again)
    assert again.json()["plan"]["hash"] == first.json()["plan"]["hash"]
    assert set(statuses(again).values()) == {"verified"}
    assert again.json()["outcome"]["resumed"] is True
    assert journal.read_text().splitlines() == lines
    assert recovery.describe(targets) == described
    compare(src, again.json()["plan"], described, targets)


def run_until_stall(recovery: Recovery, src: Source, targets: dict[str, Loop],
                    n: int, *extra: str) -> str:
    """Run recover with --debug-stop-after n: it kills itself once action n has run, before
    journaling it, as a crash would. The id of that action."""
    argv = [*cli.command(), "recover", "--json", "--layout-only", "--yes",
            "--debug-stop-after", str(n), *recovery.args(src, targets, *extra)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False,
                          env=cli.clean_env(recovery.state), stdin=subprocess.DEVNULL,
                          start_new_session=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert proc.stdout == "", "killed before it printed its outcome"
    stalled = proc.stderr.split("test stall after ", 1)[1].split()[0]
    # The actions before it are journaled, it and the rest are not.
    [journal] = recovery.state.glob("journal-*.jsonl")
    entries = [json.loads(line) for line in journal.read_text().splitlines()]
    assert len([e for e in entries if "action" in e]) == n - 1, entries
    assert stalled not in {e.get("action") for e in entries}
    return stalled


def action_index(plan: dict[str, Any], kind: str, last: bool = False) -> int:
    """1-based position of the first (or last) action of a kind in the plan."""
    found = [n for n, a in enumerate(plan["actions"], 1) if a["kind"] == kind]
    return found[-1] if last else found[0]


@pytest.mark.parametrize(
    ("name", "kind", "last"),
    [
        ("gpt", "partition-table", False),
        ("gpt", "mkfs", True),
        ("gpt", "mount", False),
        ("mbr", "mkfs", False),
        ("btrfs", "subvolume-create", True),
        ("btrfs", "subvolume-default", False),
        ("whole", "wipe", False),
    ],
)
def test_killed_in_the_middle_then_run_again(sources: dict[str, Source], recovery: Recovery,
                                             name: str, kind: str, last: bool) -> None:
    src = sources[name]
    targets = recovery.disks(src)
    plan = recovery.plan(src, targets)
    assert plan.returncode == 0
    n = action_index(plan.json(), kind, last)
    stalled = run_until_stall(recovery, src, targets, n)
    assert stalled == plan.json()["actions"][n - 1]["id"]
    r = recovery.recover(src, targets)
    assert r.returncode == 0, why(r)
    assert r.json()["plan"]["hash"] == plan.json()["hash"]
    got = statuses(r)
    ids = [a["id"] for a in plan.json()["actions"]]
    # What was journaled is checked and kept; the interrupted action and the rest are done.
    assert [got[i] for i in ids[: n - 1]] == ["verified"] * (n - 1)
    assert set(got[i] for i in ids[n - 1:]) <= {"done", "verified"}
    assert got[ids[n - 1]] == "done" or kind in ("mount", "subvolume-create",
                                                 "subvolume-default")
    compare(src, r.json()["plan"], recovery.describe(targets), targets)


def test_killed_at_any_moment_then_run_again(sources: dict[str, Source],
                                             recovery: Recovery) -> None:
    """No hook: killed as soon as the journal shows a few actions, wherever it then is."""
    src = sources["gpt"]
    targets = recovery.disks(src)
    argv = [*cli.command(), "recover", "--layout-only", "--yes",
            *recovery.args(src, targets)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL, env=cli.clean_env(recovery.state),
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            journals = list(recovery.state.glob("journal-*.jsonl"))
            if journals and len(journals[0].read_text().splitlines()) >= 5:
                break
            assert proc.poll() is None, "recover ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    r = recovery.recover(src, targets)
    assert r.returncode == 0, why(r)
    assert "verified" in statuses(r).values()
    compare(src, r.json()["plan"], recovery.describe(targets), targets)


def test_another_plan_ignores_the_old_journal(sources: dict[str, Source],
                                              recovery: Recovery) -> None:
    src = sources["gpt"]
    targets = recovery.disks(src, scale=1.5)
    plan = recovery.plan(src, targets).json()
    # The first plan gets as far as mounting (its filesystems stay mounted under the root).
    run_until_stall(recovery, src, targets, action_index(plan, "mount", last=True))
    r = recovery.recover(src, targets, "--grow", "proportional")
    assert r.returncode == 0, why(r)
    assert r.json()["plan"]["hash"] != plan["hash"]
    assert set(statuses(r).values()) == {"done"}
    assert r.json()["outcome"]["resumed"] is False
    compare(src, r.json()["plan"], recovery.describe(targets), targets)


def test_plan_hash(sources: dict[str, Source], recovery: Recovery) -> None:
    src = sources["whole"]
    targets = recovery.disks(src)
    [loop] = targets.values()
    before = sha256(loop.path)
    planned = recovery.plan(src, targets).json()["hash"]
    wrong = "sha256:" + "0" * 64
    r = cli.spawn("recover", "--layout-only", "--plan-hash", wrong,
                  *recovery.args(src, targets), state=recovery.state)
    assert r.returncode == 3
    assert planned in r.stderr and "nothing was written" in r.stderr
    assert sha256(loop.path) == before
    r = cli.spawn("recover", "--layout-only", "--plan-hash", planned.removeprefix("sha256:"),
                  *recovery.args(src, targets), state=recovery.state)
    assert r.returncode == 0, r.stderr
    assert "layout recreated" in r.stdout
    compare(src, recovery.plan(src, targets).json(), recovery.describe(targets), targets)


def test_without_a_terminal_or_yes_it_refuses(sources: dict[str, Source],
                                              recovery: Recovery) -> None:
    src = sources["whole"]
    targets = recovery.disks(src)
    [loop] = targets.values()
    before = sha256(loop.path)
    r = cli.spawn("recover", "--layout-only", *recovery.args(src, targets), state=recovery.state)
    assert r.returncode == 2
    assert "--yes" in r.stderr and "--plan-hash" in r.stderr
    assert sha256(loop.path) == before


def test_without_layout_only_nothing_is_done(sources: dict[str, Source],
                                             recovery: Recovery) -> None:
    src = sources["whole"]
    targets = recovery.disks(src)
    [loop] = targets.values()
    before = sha256(loop.path)
    r = cli.spawn("recover", "--yes", *recovery.args(src, targets), state=recovery.state)
    # A description file holds no data: a full recovery reads a recovery set.
    assert r.returncode == 2
    assert "holds no data to restore" in r.stderr
    assert "--layout-only" in r.stderr
    assert sha256(loop.path) == before
    assert not recovery.state.exists()


def confirm_on_a_terminal(recovery: Recovery, src: Source, targets: dict[str, Loop],
                          answer: str) -> cli.Result:
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(
            [*cli.command(), "recover", "--layout-only",
             *recovery.args(src, targets)],
            stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=cli.clean_env(recovery.state), start_new_session=True,
        )
        os.close(slave)
        slave = -1
        os.write(master, answer.encode() + b"\n")
        out, err = proc.communicate(timeout=300)
    finally:
        if slave >= 0:
            os.close(slave)
        os.close(master)
    return cli.Result(proc.returncode, out, err)


def test_confirmation_on_the_terminal(sources: dict[str, Source], recovery: Recovery) -> None:
    src = sources["whole"]
    targets = recovery.disks(src)
    [loop] = targets.values()
    before = sha256(loop.path)
    r = confirm_on_a_terminal(recovery, src, targets, "no")
    assert r.returncode == ExitCode.NOT_CONFIRMED
    assert "Everything on these disks will be erased" in r.stderr
    assert loop.path in r.stderr
    assert "not confirmed: nothing was written" in r.stderr
    assert sha256(loop.path) == before
    r = confirm_on_a_terminal(recovery, src, targets, "yes")
    assert r.returncode == 0, r.stderr
    assert "layout recreated" in r.stdout


def test_vfat_mount_is_a_warning_here(sources: dict[str, Source], recovery: Recovery,
                                      tmp_path: Path) -> None:
    """This kernel has no vfat: the ESP is made, its mount is a warning, not a failure."""
    src = sources["gpt"]
    esp = next(f for f in src.desc.filesystems if f.type == FsType.VFAT)
    desc = dataclasses.replace(src.desc, filesystems=tuple(
        dataclasses.replace(f, mounts=(Mount("/boot/efi", "umask=0077"),)) if f is esp else f
        for f in src.desc.filesystems))
    path = tmp_path / "with-esp-mount.toml"
    fileformat.write(desc, path)
    with_esp = dataclasses.replace(src, path=path, desc=fileformat.read(path))
    targets = recovery.disks(with_esp)
    r = recovery.recover(with_esp, targets)
    assert r.returncode == 0, why(r)
    mount_id = f"mount:{esp.id}:/boot/efi"
    assert statuses(r)[mount_id] == "warning"
    result = {x["id"]: x for x in r.json()["outcome"]["results"]}[mount_id]
    assert "cannot mount vfat" in result["message"]
    assert [s for i, s in statuses(r).items() if i != mount_id] == ["done"] * (
        len(statuses(r)) - 1)
    again = recovery.recover(with_esp, targets)
    assert again.returncode == 0, why(again)
    assert statuses(again)[mount_id] == "warning"
    assert {s for i, s in statuses(again).items() if i != mount_id} == {"verified"}
    compare(src, r.json()["plan"], recovery.describe(targets), targets)


def test_a_top_level_mount_left_by_a_killed_run_is_dropped(sources: dict[str, Source],
                                                           recovery: Recovery) -> None:
    src = sources["btrfs"]
    targets = recovery.disks(src)
    plan = recovery.plan(src, targets).json()
    run_until_stall(recovery, src, targets, action_index(plan, "subvolume-create"))
    # As if killed while the btrfs's top level was mounted privately.
    device = next(a["params"]["device"] for a in plan["actions"] if a["kind"] == "mkfs")
    left = Path("/run/resurgo/btrfs-left-by-test")
    left.mkdir(parents=True, exist_ok=True)
    try:
        recovery.rig.sh("mount", "-o", "subvolid=5", device, str(left))
        r = recovery.recover(src, targets)
        assert r.returncode == 0, why(r)
        assert str(left) not in {e.mountpoint for e in mounts.read_mountinfo()}
        compare(src, r.json()["plan"], recovery.describe(targets), targets)
    finally:
        umount_below(left)
        if left.exists():
            left.rmdir()


def test_a_use_outside_the_root_still_blocks(sources: dict[str, Source], recovery: Recovery,
                                             tmp_path: Path) -> None:
    src = sources["whole"]
    targets = recovery.disks(src)
    assert recovery.recover(src, targets).returncode == 0
    [loop] = targets.values()
    elsewhere = tmp_path / "elsewhere"
    recovery.rig.mount(loop.path, elsewhere)
    r = recovery.recover(src, targets)
    assert r.returncode == 3
    failures = r.json()["plan"]["failures"]
    assert [f["check"] for f in failures] == ["target-in-use"]
    assert str(elsewhere) in failures[0]["message"]
    assert str(recovery.root) not in failures[0]["message"]


def test_the_guard_refuses_a_device_outside_the_plan(sources: dict[str, Source],
                                                     recovery: Recovery,
                                                     tmp_path: Path) -> None:
    """A plan tampered with after planning: mkfs aimed at the decoy is refused."""
    from resurgo.apply.execute import Executor, Status
    from resurgo.apply.guard import Refused
    from resurgo.apply.journal import Journal
    from resurgo.plan import make_plan
    from resurgo.plan.model import MkfsParams, PlanOptions
    from resurgo.probe.actual import read_actual_disks

    src = sources["gpt"]
    targets = recovery.disks(src)
    [loop] = targets.values()
    [sid] = targets
    options = PlanOptions(targets=(loop.path,), maps=((sid, loop.path),),
                          root=str(recovery.root), which=run.which)
    plan = make_plan(src.desc, read_actual_disks(), options)
    assert plan.ok, plan.failures
    n, victim = next((n, a) for n, a in enumerate(plan.actions) if a.kind == "mkfs")
    assert isinstance(victim.params, MkfsParams)
    tampered = dataclasses.replace(
        victim, params=dataclasses.replace(victim.params, device=recovery.decoy.path))
    plan = dataclasses.replace(plan, actions=(*plan.actions[:n], tampered,
                                              *plan.actions[n + 1:]))
    outcome = Executor(plan, Journal(tmp_path / "journal.jsonl", plan.hash), {}).run()
    assert not outcome.ok
    failed = next(r for r in outcome.results if r.status == Status.FAILED)
    assert failed.id == tampered.id
    assert recovery.decoy.path in failed.message and "refusing" in failed.message
    assert [r.status for r in outcome.results[:n]] == [Status.DONE] * n
    assert {r.status for r in outcome.results[n + 1:]} == {Status.NOT_RUN}
    guard = Executor(plan, Journal(tmp_path / "j2.jsonl", plan.hash), {}).guard
    with pytest.raises(Refused):
        guard.check(tampered, recovery.decoy.path)
    guard.check(tampered, loop.part(1))
    # An action that says it writes the decoy is refused whatever device it names.
    with pytest.raises(Refused, match="not a target disk"):
        guard.check(dataclasses.replace(tampered, writes=(recovery.decoy.path,)), loop.part(1))


# ---------------------------------------------------------------- LUKS keys


def has_device_mapper() -> bool:
    return "device-mapper" in Path("/proc/misc").read_text()


def luks_description(disk_size: int) -> Description:
    """A GPT disk whose partition 1 is LUKS2 (PBKDF2: quick) with ext4 on it at /."""
    from resurgo.model import LuksVolume

    d = disk("sda", disk_size, transport="loop")
    p1 = part(d, 1, MIB, 100 * MIB)
    lk = LuksVolume("luks.sda1", p1.id, 2, "0e8a4b4c-6d1e-4f2a-9b3c-5d6e7f8091a2",
                    "aes-xts-plain64", 512, name="resurgo-test-crypt", pbkdf="pbkdf2",
                    hash="sha256", label="crypt")
    return description(disks=[d], partitions=[p1], luks_volumes=[lk],
                       filesystems=[ext4(lk.id, "/", MIB, fid="fs.dm-0")])


@dataclass
class LuksCase:
    recovery: Recovery
    source: Source
    loop: Loop

    def argv(self, *extra: str) -> list[str]:
        return [*cli.command(), "recover", "--json", "--layout-only",
                "--yes", "--from", str(self.source.path), "--root", str(self.recovery.root),
                "--target", self.loop.path, "--map", f"disk.sda={self.loop.path}", *extra]

    def accepts(self, key_argv: list[str], key: bytes | None = None) -> bool:
        """Whether the LUKS header on partition 1 opens with this key (nothing is mapped)."""
        return run.run(["cryptsetup", "open", "--test-passphrase", *key_argv,
                        self.loop.part(1)], check=False,
                       input=None if key is None else key.decode()).returncode == 0


@pytest.fixture
def luks_case(recovery: Recovery, tmp_path: Path) -> Iterator[LuksCase]:
    path = tmp_path / "luks.toml"
    fileformat.write(luks_description(128 * MIB), path)
    source = Source("luks", path, fileformat.read(path), {"disk.sda": (128 * MIB, 512)})
    [loop] = recovery.disks(source).values()
    try:
        yield LuksCase(recovery, source, loop)
    finally:
        run.run(["cryptsetup", "close", "resurgo-test-crypt"], check=False)


def check_luks_outcome(case: LuksCase, code: int, data: dict[str, Any]) -> None:
    got = {r["id"]: r for r in data["outcome"]["results"]}
    assert got["luks-format:luks.sda1"]["status"] == "done"
    if has_device_mapper():
        assert code == 0, data["outcome"]["error"]
    else:
        # No device-mapper on this host: the volume is formatted, opening it fails.
        assert code == 1
        assert got["luks-open:luks.sda1"]["status"] == "failed"
    found = run.run(["blkid", "-p", "-o", "export", case.loop.part(1)]).stdout
    assert "TYPE=crypto_LUKS" in found and "UUID=0e8a4b4c-6d1e-4f2a-9b3c-5d6e7f8091a2" in found


def test_a_key_file_reaches_cryptsetup_byte_for_byte(luks_case: LuksCase,
                                                     tmp_path: Path) -> None:
    key = tmp_path / "key.bin"
    marker = secrets.token_hex(8)
    # Not UTF-8, a NUL and a newline inside: a key file is bytes.
    secret = b"\x00\xff" + marker.encode() + b"\n\xc3(" + secrets.token_bytes(16)
    key.write_bytes(secret)
    proc = subprocess.run(luks_case.argv("--key-file", f"luks.sda1={key}"),
                          capture_output=True, text=True,
                          env=cli.clean_env(luks_case.recovery.state),
                          stdin=subprocess.DEVNULL, start_new_session=True, timeout=300,
                          check=False)
    check_luks_outcome(luks_case, proc.returncode, json.loads(proc.stdout))
    assert luks_case.accepts(["--key-file", str(key)])
    assert not luks_case.accepts(["--key-file", "-"], b"something else")
    journals = list(luks_case.recovery.state.glob("*.jsonl"))
    assert journals
    for text in (proc.stdout, proc.stderr, *(j.read_text() for j in journals)):
        assert marker not in text


def spawn_on_a_terminal(argv: list[str], state: Path) -> tuple[subprocess.Popen[str], int]:
    """argv with a pty as its controlling terminal (getpass reads /dev/tty)."""
    import fcntl
    import termios

    master, slave = pty.openpty()

    def own_the_terminal() -> None:
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    try:
        proc = subprocess.Popen(argv, stdin=slave, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=cli.clean_env(state),
                                preexec_fn=own_the_terminal)
    finally:
        os.close(slave)
    return proc, master


def expect(master: int, text: str, timeout: float = 60) -> str:
    import select

    seen = b""
    deadline = time.monotonic() + timeout
    while text.encode() not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"no {text!r} on the terminal; saw {seen!r}"
        ready, _, _ = select.select([master], [], [], left)
        if ready:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                chunk = b""
            assert chunk, f"the terminal closed before {text!r}; saw {seen!r}"
            seen += chunk
    return seen.decode(errors="replace")


def test_a_typed_passphrase_is_asked_twice_and_reaches_cryptsetup(
        luks_case: LuksCase) -> None:
    secret = "typed " + secrets.token_hex(8)
    proc, master = spawn_on_a_terminal(luks_case.argv(), luks_case.recovery.state)
    try:
        expect(master, "passphrase for the new LUKS volume luks.sda1")
        os.write(master, secret.encode() + b"\n")
        expect(master, "again")
        os.write(master, secret.encode() + b"\n")
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    check_luks_outcome(luks_case, proc.returncode, json.loads(out))
    assert luks_case.accepts(["--key-file", "-"], secret.encode())
    assert secret not in out + err
    for j in luks_case.recovery.state.glob("*.jsonl"):
        assert secret not in j.read_text()


def test_two_different_passphrases_are_refused_before_anything_is_written(
        luks_case: LuksCase) -> None:
    before = sha256(luks_case.loop.path)
    proc, master = spawn_on_a_terminal(luks_case.argv(), luks_case.recovery.state)
    try:
        expect(master, "passphrase for the new LUKS volume")
        os.write(master, b"one\n")
        expect(master, "again")
        os.write(master, b"two\n")
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    assert proc.returncode == 2
    assert "differ" in err
    assert sha256(luks_case.loop.path) == before


# ---------------------------------------------------------------- confined to the root


def test_a_mountpoint_out_of_the_root_is_refused_before_anything_is_written(
        sources: dict[str, Source], recovery: Recovery, tmp_path: Path) -> None:
    """`/../../..` in a mountpoint would mount the new filesystem over a host directory:
    plan and recover refuse the description (exit 2) before touching a disk."""
    src = sources["whole"]
    escaped = tmp_path / "escaped"
    escaped.mkdir()
    fs = src.desc.filesystems[0]
    climbing = "/" + "../" * 30 + str(escaped).lstrip("/")
    desc = dataclasses.replace(src.desc, filesystems=(
        dataclasses.replace(fs, mounts=(dataclasses.replace(fs.mounts[0],
                                                            mountpoint=climbing),)),))
    hostile = Source(src.name, tmp_path / "hostile.toml", desc, src.disks)
    fileformat.write(desc, hostile.path)
    targets = recovery.disks(hostile)
    [loop] = targets.values()
    before = sha256(loop.path)
    try:
        for r in (recovery.plan(hostile, targets), recovery.recover(hostile, targets)):
            assert r.returncode == 2, why(r)
            assert "is not a valid recovery description" in r.stderr
            assert f"{climbing!r} is not a normal path: it holds '..'" in r.stderr
        assert sha256(loop.path) == before
        assert not os.path.ismount(escaped) and list(escaped.iterdir()) == []
        assert not recovery.state.exists()
    finally:
        umount_below(escaped)  # where a recover that let it through mounted it


def test_a_symlink_under_the_root_does_not_lead_a_mount_out(
        sources: dict[str, Source], recovery: Recovery, tmp_path: Path) -> None:
    """A symlink left under the root (restored earlier, or planted) where a filesystem is
    to be mounted: the mount is refused, and the directory it points to stays as it was."""
    src = sources["whole"]
    outside = tmp_path / "etc"
    outside.mkdir()
    (outside / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    recovery.root.mkdir()
    (recovery.root / "data").symlink_to(outside)
    targets = recovery.disks(src)
    try:
        r = recovery.recover(src, targets)
        assert r.returncode == 1, why(r)
        error = r.json()["outcome"]["error"]
        assert f"refusing {recovery.root}/data: it is a symbolic link (to {outside})" in error
        assert not os.path.ismount(outside)
        assert [e.mountpoint for e in mounts.read_mountinfo()
                if e.mountpoint.startswith(str(tmp_path))] == []
        assert [p.name for p in outside.iterdir()] == ["passwd"]
    finally:
        umount_below(outside)  # where a mount that followed the link landed
