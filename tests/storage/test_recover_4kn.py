"""A system whose /boot is an ext4 of 1 KiB blocks (mke2fs's choice for small filesystems),
recovered onto a disk of 4096-byte sectors: the plan makes that ext4 with 4096-byte blocks
and says why (its files are restored one by one), and every restored file is what was
saved, content and metadata."""

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
from tests.support.consts import LINUX, MIB
from tests.support.loopdisks import Rig
from tests.support.trees import assert_same_trees, build_rich_tree, snapshot, write

pytestmark = [pytest.mark.storage, pytest.mark.usefixtures("engine_tools")]

SIZE = 256 * MIB


@pytest.fixture
def resurgo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., cli.Result]:
    monkeypatch.setenv("RESURGO_STATE_DIR", str(tmp_path / "state"))
    return cli.run


def view(rig: Rig, device: str, where: Path) -> dict[bytes, dict[str, Any]]:
    """The filesystem on device, mounted on its own (nothing mounted inside it)."""
    return snapshot(rig.mount(device, where, "ro"))


def block_size(device: str) -> int:
    out = run.output(["dumpe2fs", "-h", device])
    line = next(x for x in out.splitlines() if x.startswith("Block size:"))
    return int(line.split(":")[1])


def test_a_1k_block_boot_recovered_onto_4096_byte_sectors(
    rig: Rig, tmp_path: Path, mnt: Path, resurgo: Callable[..., cli.Result]
) -> None:
    table = ("label: gpt\nunit: sectors\n\n"
             f"start=2048, size={64 * 2048}, type={LINUX}\n"
             f"start={66 * 2048}, size={160 * 2048}, type={LINUX}\n")
    source = rig.disk("src512", SIZE, table=table)
    rig.sh("mkfs.ext4", "-q", "-b", "1024", "-L", "boot", source.part(1))
    rig.sh("mkfs.ext4", "-q", "-b", "4096", "-L", "root", source.part(2))
    assert block_size(source.part(1)) == 1024
    root = rig.mount(source.part(2), tmp_path / "system")
    write(root / "etc/hostname", b"fourk\n")
    write(root / "etc/fstab", b"LABEL=root / ext4 defaults 0 1\n"
                              b"LABEL=boot /boot ext4 defaults 0 2\n")
    boot = rig.mount(source.part(1), root / "boot")
    build_rich_tree(boot / "rich", many=300)
    write(boot / "vmlinuz", os.urandom(3 * MIB + 1234))
    write(boot / "grub/grub.cfg", b"set timeout=0\n", mode=0o600)
    sets = tmp_path / "sets"
    r = resurgo("save", "--to", sets, "--root", root, "--no-rescue", "--no-catalog")
    assert r.returncode == 0, r.stdout + r.stderr
    umount_below(root)
    expected = {mp: (view(rig, dev, tmp_path / f"saved{n}"))
                for n, (mp, dev) in enumerate((("/", source.part(2)),
                                               ("/boot", source.part(1))))}

    target = rig.disk("fourk", SIZE, sector_size=4096)
    common = ("--from", sets, "--target", target.path, "--root", mnt, "--no-finalize")
    plan = resurgo("plan", *common, "--json")
    assert plan.returncode == 0, plan.stdout + plan.stderr
    shown = json.loads(plan.stdout)
    boot_fs = next(v["id"] for v in shown["volumes"] if v["label"] == "/boot")
    [note] = [n for n in shown["notes"] if n.startswith(boot_fs)]
    assert "adapted: made with 4096-byte blocks (was 1024)" in note, note
    mkfs = next(a for a in shown["actions"] if a["id"] == f"mkfs:{boot_fs}")
    options = mkfs["params"]["options"]
    assert options[options.index("-b") + 1] == "4096"

    r = resurgo("recover", *common, "--plan-hash", shown["hash"])
    assert r.returncode == 0, r.stdout + r.stderr
    assert block_size(target.part(1)) == 4096
    umount_below(mnt)
    for n, (mp, dev) in enumerate((("/", target.part(2)), ("/boot", target.part(1)))):
        restored = (view(rig, dev, tmp_path / f"restored{n}"))
        assert_same_trees(expected[mp], restored)
