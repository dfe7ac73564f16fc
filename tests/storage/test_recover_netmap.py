"""recover with finalize on real loop disks: --net-map checked before any write, then
given to finalize, which rewrites the restored network configuration and fstab.

The saved system is one ext4 on a whole loop disk whose fstab names it by kernel name and
whose ifupdown configuration names its NIC ens3. This machine's NICs come from a
recorded sysfs with two NICs (given as finalize's sysfs, the command line being run
in-process): enp0s9, then enp0s10.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from resurgo import run
from resurgo.cli import finalizing
from resurgo.demo import umount_below
from tests.support import cli
from tests.support.consts import MIB
from tests.support.loopdisks import Rig
from tests.support.nics import MAC10, with_two_nics
from tests.support.trees import sha256_of, write

pytestmark = pytest.mark.storage

INTERFACES = "auto lo\niface lo inet loopback\n\nauto ens3\niface ens3 inet dhcp\n"


@pytest.fixture
def resurgo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., cli.Result]:
    """The command line in-process, with this machine's NICs read from the recorded sysfs."""
    monkeypatch.setenv("RESURGO_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setattr(finalizing, "SYSFS", with_two_nics(tmp_path / "sys"))
    return cli.run


def test_net_map_is_checked_before_any_write_then_finalize_applies_it(
    rig: Rig, tmp_path: Path, mnt: Path, resurgo: Callable[..., cli.Result]
) -> None:
    source = rig.disk("netsys", 200 * MIB)
    rig.sh("mkfs.ext4", "-q", "-L", "netroot", source.path)
    root = rig.mount(source.path, tmp_path / "root")
    write(root / "etc/hostname", b"netsys\n")
    write(root / "etc/fstab", f"{source.path} / ext4 errors=remount-ro 0 1\n".encode())
    write(root / "etc/network/interfaces", INTERFACES.encode())
    sets = tmp_path / "sets"
    r = resurgo("save", "--to", sets, "--root", root, "--no-rescue", "--no-catalog")
    assert r.returncode == 0, r.stdout + r.stderr
    umount_below(root)
    target = rig.disk("net-target", 300 * MIB)
    before = sha256_of(target.image)
    common = ("--from", sets, "--target", target.path, "--root", mnt)

    for maps, message in (
        (["ens3=wlan9"], "this machine has no network interface wlan9"),
        (["eth0=enp0s9"], "the saved network configuration names no interface eth0"),
        (["ens3=enp0s9", "ens3=enp0s10"], "the saved interface ens3 is already mapped"),
    ):
        r = resurgo("recover", *common, "--yes",
                    *[a for m in maps for a in ("--net-map", m)])
        assert r.returncode == 2, r.stdout + r.stderr
        assert message in r.stderr
        assert "recreating the layout" not in r.stdout
        assert sha256_of(target.image) == before
        assert not mnt.exists()

    plan = resurgo("plan", *common, "--net-map", "ens3=enp0s10")
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert f"    ens3 -> enp0s10 ({MAC10})  [by --net-map]" in plan.stdout
    assert "       4 + auto enp0s10\n" in plan.stdout
    assert "       5 + iface enp0s10 inet dhcp\n" in plan.stdout
    assert f"       1 - {source.path} / ext4" in plan.stdout
    assert sha256_of(target.image) == before

    r = resurgo("recover", *common, "--yes", "--net-map", "ens3=enp0s10", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout)
    assert [(n["old_name"], n["new_name"], n["by"]) for n in out["finalize"]["nics"]] == [
        ("ens3", "enp0s10", "map")
    ]
    assert out["plan"]["finalize"]["nics"] == out["finalize"]["nics"]
    assert (mnt / "etc/network/interfaces").read_text() == INTERFACES.replace("ens3", "enp0s10")
    uuid = run.output(["blkid", "-p", "-s", "UUID", "-o", "value", target.path]).strip()
    assert (mnt / "etc/fstab").read_text() == f"UUID={uuid} / ext4 errors=remount-ro 0 1\n"
    written = {f["path"] for f in out["finalize"]["files"] if f["written"]}
    assert {"/etc/fstab", "/etc/network/interfaces"} <= written
    assert out["finalize"]["log"] is not None
    assert (mnt / out["finalize"]["log"].lstrip("/")).is_file()
