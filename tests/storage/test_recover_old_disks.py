"""Recovery with the source disk still attached (a migration off a failing disk, a
rehearsal on the same host): the old disk holds a btrfs /, an xfs /srv (mounted, as a
running system's would be), an ext4 /boot and swap, all with the saved identities.

The plan foresees each collision before anything is written: the btrfs gets a new UUID
(mkfs.btrfs refuses one another device shows), the xfs keeps its UUID and is mounted with
nouuid, the rest keep theirs with a warning. The recovery succeeds, the old disk is
byte-for-byte what it was, the restored files are the saved ones, and the restored fstab
names the identities actually created. With --new-identities every one is new.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from resurgo import run
from resurgo.demo import umount_below
from tests.support import cli
from tests.support.consts import LINUX, MIB, SWAP
from tests.support.loopdisks import Loop, Rig
from tests.support.trees import assert_same_trees, build_rich_tree, sha256_of, snapshot, write

pytestmark = [pytest.mark.storage, pytest.mark.usefixtures("engine_tools")]

SIZE = 640 * MIB
Snapshot = dict[bytes, dict[str, Any]]


@pytest.fixture
def resurgo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., cli.Result]:
    monkeypatch.setenv("RESURGO_STATE_DIR", str(tmp_path / "state"))
    return cli.run


def blkid(device: str, tag: str) -> str:
    return run.output(["blkid", "-p", "-s", tag, "-o", "value", device]).strip()


def fstab_uuids(root: Path) -> dict[str, str]:
    """mountpoint (or "swap") -> the UUID the fstab names it by."""
    out = {}
    for line in (root / "etc/fstab").read_text().splitlines():
        spec, mp = line.split()[:2]
        assert spec.startswith("UUID="), line
        out["swap" if mp == "none" else mp] = spec.removeprefix("UUID=")
    return out


def snap(rig: Rig, device: str, where: Path, options: str) -> Snapshot:
    return snapshot(rig.mount(device, where, options))


def test_the_old_disk_still_attached(
    rig: Rig, tmp_path: Path, mnt: Path, resurgo: Callable[..., cli.Result]
) -> None:
    table = ("label: gpt\nunit: sectors\n\n"
             f"start=2048, size={200 * 2048}, type={LINUX}\n"
             f"start={202 * 2048}, size={320 * 2048}, type={LINUX}\n"
             f"start={522 * 2048}, size={64 * 2048}, type={LINUX}\n"
             f"start={586 * 2048}, size={16 * 2048}, type={SWAP}\n")
    old = rig.disk("old", SIZE, table=table)
    rig.sh("mkfs.btrfs", "-q", "-f", old.part(1))
    rig.sh("mkfs.xfs", "-q", "-f", old.part(2))
    rig.sh("mkfs.ext4", "-q", old.part(3))
    rig.sh("mkswap", old.part(4))
    saved = {"/": blkid(old.part(1), "UUID"), "/srv": blkid(old.part(2), "UUID"),
             "/boot": blkid(old.part(3), "UUID"), "swap": blkid(old.part(4), "UUID")}
    root = rig.mount(old.part(1), tmp_path / "system")
    write(root / "etc/hostname", b"oldhost\n")
    write(root / "etc/fstab", (
        f"UUID={saved['/']} / btrfs defaults 0 0\n"
        f"UUID={saved['/srv']} /srv xfs defaults 0 2\n"
        f"UUID={saved['/boot']} /boot ext4 defaults 0 2\n"
        f"UUID={saved['swap']} none swap sw 0 0\n").encode())
    rig.mount(old.part(2), root / "srv")
    rig.mount(old.part(3), root / "boot")
    build_rich_tree(root / "srv/rich", many=200)
    write(root / "boot/vmlinuz", os.urandom(MIB))
    sets = tmp_path / "sets"
    r = resurgo("save", "--to", sets, "--root", root, "--no-rescue", "--no-catalog")
    assert r.returncode == 0, r.stdout + r.stderr
    umount_below(root)
    expected = {"/srv": snap(rig, old.part(2), tmp_path / "saved-srv", "ro,norecovery"),
                "/boot": snap(rig, old.part(3), tmp_path / "saved-boot", "ro")}
    before = sha256_of(old.image)
    # The old xfs stays mounted, as a rehearsal on the running host finds it: the kernel
    # refuses a second XFS of its UUID unless mounted with nouuid.
    assert (tmp_path / "saved-srv").is_mount()

    target = rig.disk("new", SIZE)
    common = ("--from", sets, "--target", target.path, "--root", mnt)
    plan = resurgo("plan", *common, "--json")
    assert plan.returncode == 0, plan.stdout + plan.stderr
    shown = json.loads(plan.stdout)
    by_kind = {(d["kind"], d["saved"]): d for d in shown["identities"]}
    btrfs = by_kind[("filesystem", saved["/"])]
    assert not btrfs["kept"] and btrfs["seen_on"] == [old.part(1)]
    xfs = by_kind[("filesystem", saved["/srv"])]
    assert xfs["kept"] and "nouuid" in xfs["why"]
    assert by_kind[("filesystem", saved["/boot"])]["kept"]
    assert by_kind[("swap", saved["swap"])]["kept"]
    srv_mount = next(a for a in shown["actions"]
                     if a["kind"] == "mount" and a["params"]["mountpoint"] == "/srv")
    assert srv_mount["params"]["options"] == ["nouuid"]
    # The fstab line of / is rewritten, and only that one (the preview).
    [fstab] = [f for f in shown["finalize"]["files"] if f["path"] == "/etc/fstab"]
    assert [c["before"].split()[1] for c in fstab["changes"]] == ["/"]
    assert sha256_of(old.image) == before

    r = resurgo("recover", *common, "--plan-hash", shown["hash"], "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    made = {"/": blkid(target.part(1), "UUID"), "/srv": blkid(target.part(2), "UUID"),
            "/boot": blkid(target.part(3), "UUID"), "swap": blkid(target.part(4), "UUID")}
    assert made["/"] == btrfs["new"] != saved["/"]
    assert {k: v for k, v in made.items() if k != "/"} == {
        k: v for k, v in saved.items() if k != "/"}
    assert fstab_uuids(mnt) == made
    umount_below(mnt)
    for mp, part in (("/srv", 2), ("/boot", 3)):
        restored = snap(rig, target.part(part), tmp_path / f"restored{part}", "ro,nouuid"
                        if mp == "/srv" else "ro")
        # xfs allocates sparse files its own way: their holes are checked to be holes.
        assert_same_trees(expected[mp], restored, exact_sparse=mp != "/srv")
    umount_below(tmp_path / "saved-srv")
    assert sha256_of(old.image) == before

    # Again onto another disk with --new-identities: every identity is new, and the fstab
    # names them.
    other: Loop = rig.disk("newer", SIZE)
    r = resurgo("recover", "--from", sets, "--target", other.path, "--root", mnt, "--yes",
                "--new-identities", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout)
    decided = out["plan"]["identities"]
    assert decided and not any(d["kept"] for d in decided)
    # The btrfs's reason is the collision, which stands with or without the option.
    assert {d["why"] for d in decided if d["saved"] != saved["/"]} == {"new: --new-identities"}
    made = {"/": blkid(other.part(1), "UUID"), "/srv": blkid(other.part(2), "UUID"),
            "/boot": blkid(other.part(3), "UUID"), "swap": blkid(other.part(4), "UUID")}
    assert not set(made.values()) & set(saved.values())
    assert fstab_uuids(mnt) == made
    assert blkid(other.part(1), "PART_ENTRY_UUID") != blkid(old.part(1), "PART_ENTRY_UUID")
    assert sha256_of(old.image) == before
