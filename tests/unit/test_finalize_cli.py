"""What finalize will do, as `resurgo plan` and `resurgo recover` show and check it.

The command line run in-process on a real description file. The actual disks are made
up (tests.support.disks), this machine's network interfaces come from a recorded sysfs
with two NICs added (given as finalize's sysfs): neither root nor NICs are needed. The
saved system (on /dev/vda, virtio) named its root by kernel name in fstab and its one
NIC ens3 (with its MAC) in a NetworkManager keyfile.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from resurgo import fileformat
from resurgo.cli import finalizing
from resurgo.model import ConfigFile, Description, Driver, DriverClass
from tests.support import cli
from tests.support.builders import standard
from tests.support.consts import GIB
from tests.support.disks import FakeDisks, disk, fake_disks
from tests.support.nics import MAC9, MAC10, with_two_nics

OLD_MAC = "52:54:00:12:34:56"
NM_PATH = "/etc/NetworkManager/system-connections/wired.nmconnection"
NM = (
    "[connection]\nid=wired\ntype=ethernet\ninterface-name=ens3\n\n"
    f"[ethernet]\nmac-address={OLD_MAC}\n\n[ipv4]\nmethod=auto\n"
)
FSTAB = "/dev/vda3 / ext4 errors=remount-ro 0 1\n"


def description() -> Description:
    desc = standard(name="vda", transport="virtio")
    return dataclasses.replace(
        desc,
        config_files=(
            ConfigFile("cfg.fstab", "/etc/fstab", FSTAB),
            ConfigFile("cfg.nm", NM_PATH, NM, mode="0600"),
        ),
    )


@pytest.fixture
def disks(monkeypatch: pytest.MonkeyPatch) -> FakeDisks:
    return fake_disks(monkeypatch, [disk("nvme0n1", 30 * GIB, transport="nvme")])


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, disks: FakeDisks) -> Path:
    fileformat.write(description(), tmp_path / "description.toml")
    with_two_nics(tmp_path / "sys")
    monkeypatch.setenv("RESURGO_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setattr(finalizing, "SYSFS", tmp_path / "sys")
    return tmp_path


def plan(tmp: Path, *args: str) -> cli.Result:
    return cli.run("plan", "--from", tmp / "description.toml", *args)


def test_plan_shows_the_rewrites_and_the_pairing_before_the_hash(setup: Path) -> None:
    proc = plan(setup)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    lines = out.splitlines()
    assert lines[-1].startswith("plan hash: sha256:")
    section = out[out.index("finalize, once the data is restored"):]
    assert "  /etc/fstab\n       1 - /dev/vda3 / ext4 errors=remount-ro 0 1\n" in section
    assert "because fs.vda3 was /dev/vda3 and is now /dev/nvme0n1p3" in section
    assert f"    ens3 ({OLD_MAC}) -> enp0s9 ({MAC9})  [in PCI order]\n" in section
    assert f"+ mac-address={MAC9}" in section
    # Before the verdict: the plan still ends as it did.
    assert section.index("network interfaces") < section.index("all preconditions hold")


def test_plan_json_carries_the_preview_and_the_same_hash(setup: Path) -> None:
    data: dict[str, Any] = json.loads(plan(setup, "--json").stdout)
    assert list(data)[-2:] == ["finalize", "hash"]
    fin = data["finalize"]
    assert fin["dry_run"] is True
    assert {f["path"] for f in fin["files"]} == {"/etc/fstab", NM_PATH}
    assert [(n["old_name"], n["new_name"], n["by"]) for n in fin["nics"]] == [
        ("ens3", "enp0s9", "order")
    ]
    mapped = json.loads(plan(setup, "--json", "--net-map", "ens3=enp0s10").stdout)
    assert [(n["old_name"], n["new_name"], n["new_mac"], n["by"])
            for n in mapped["finalize"]["nics"]] == [("ens3", "enp0s10", MAC10, "map")]
    # The pairing is part of what finalize will do: an approved hash covers it.
    assert mapped["hash"] != data["hash"]


def test_a_net_map_by_mac_on_both_sides(setup: Path) -> None:
    proc = plan(setup, "--net-map", f"{OLD_MAC.upper()}={MAC10}")
    assert proc.returncode == 0, proc.stderr
    assert f"ens3 ({OLD_MAC}) -> enp0s10 ({MAC10})  [by --net-map]" in proc.stdout


@pytest.mark.parametrize(
    ("maps", "message"),
    [
        (["ens3=wlan9"], "--net-map ens3=wlan9: this machine has no network interface wlan9"),
        (["eth7=enp0s9"], "--net-map eth7=enp0s9: the saved network configuration names no "
         "interface eth7"),
        (["ens3=enp0s9", f"{OLD_MAC}=enp0s10"], f"the saved interface ens3 ({OLD_MAC}) is "
         "already mapped by --net-map ens3=enp0s9"),
        (["ens3"], "is not SAVED=ACTUAL"),
    ],
)
def test_a_bad_net_map_is_bad_input(setup: Path, maps: list[str], message: str) -> None:
    args = [a for m in maps for a in ("--net-map", m)]
    proc = plan(setup, *args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr
    assert proc.stdout == ""


def test_recover_checks_the_net_map_with_the_plan_before_anything(
    setup: Path, disks: FakeDisks
) -> None:
    # Checked even when recover will not finalize (--layout-only here): the option is
    # wrong all the same, and nothing is touched (the disk /dev/nvme0n1 is made up).
    proc = cli.run("recover", "--from", setup / "description.toml", "--layout-only",
                   "--yes", "--root", setup / "mnt", "--net-map", "ens3=wlan9")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "this machine has no network interface wlan9" in proc.stderr
    assert "hint: its interfaces: enp0s9 (52:54:00:00:00:09), enp0s10" in proc.stderr
    assert "recreating the layout" not in proc.stdout
    assert not (setup / "mnt").exists() and not (setup / "state").exists()
    assert disks.reads, "recover did not read the disks through probe.actual"


def test_no_finalize_shows_no_preview_but_still_checks_the_map(setup: Path) -> None:
    proc = plan(setup, "--no-finalize")
    assert proc.returncode == 0, proc.stderr
    assert "finalize: skipped (--no-finalize)" in proc.stdout
    assert "network interfaces" not in proc.stdout
    assert json.loads(plan(setup, "--no-finalize", "--json").stdout)["finalize"] is None
    bad = plan(setup, "--no-finalize", "--net-map", "ens3=enp0s9", "--net-map", "ens3=enp0s10")
    assert bad.returncode == 2
    assert "already mapped" in bad.stderr


def test_a_plan_that_cannot_run_shows_no_preview(setup: Path, disks: FakeDisks) -> None:
    disks.disks = [disk("nvme0n1", 2 * GIB)]
    proc = plan(setup)
    assert proc.returncode == 3
    assert "finalize, once" not in proc.stdout
    assert "[target-too-small]" in proc.stdout


# ------------------------------------------------------ the initramfs rebuild in the plan

VIRTIO_BLK = Driver("drv.virtio0", DriverClass.STORAGE, "virtio", "virtio0",
                    module="virtio_blk", dependencies=("virtio_pci",))
NVME = Driver("drv.nvme", DriverClass.STORAGE, "pci", "0000:00:04.0", module="nvme")


def with_initramfs_config(tmp: Path, *extra: ConfigFile, saved: Driver = VIRTIO_BLK) -> None:
    """The description with an initramfs-tools configuration (and ``extra`` files)."""
    desc = description()
    desc = dataclasses.replace(
        desc, drivers=(saved,),
        config_files=(*desc.config_files,
                      ConfigFile("cfg.ir", "/etc/initramfs-tools/initramfs.conf",
                                 "MODULES=dep\nCOMPRESS=zstd\n"),
                      *extra))
    fileformat.write(desc, tmp / "description.toml")


def rebuilds(tmp: Path) -> list[dict[str, Any]]:
    data = json.loads(plan(tmp, "--json").stdout)
    return [c for c in data["finalize"]["commands"] if c["argv"][0] == "update-initramfs"]


def test_plan_shows_the_initramfs_rebuild_that_new_drivers_may_need(setup: Path) -> None:
    # Saved on virtio, recovered onto NVMe: whether the restored image carries nvme is
    # known only once it is there, so the rebuild is shown as depending on it.
    with_initramfs_config(setup)
    out = plan(setup).stdout
    section = out[out.index("finalize, once the data is restored"):]
    assert "    if needed: [chroot] update-initramfs -u -k 6.1.0\n" in section
    assert ("      because the disks of this machine need nvme, which the saved system's "
            "disks did not use: the restored initramfs of 6.1.0 is looked inside once "
            "restored, and rebuilt (with them named in /etc/initramfs-tools/modules) if it "
            "lacks one (MODULES=dep: an image made for the saved disks is likely to lack "
            "them)\n") in section
    [cmd] = rebuilds(setup)
    assert cmd["status"] == "if-needed" and cmd["chroot"] is True
    assert cmd["argv"] == ["update-initramfs", "-u", "-k", "6.1.0"]
    # Before the bootloader's commands, as finalize runs them.
    data = json.loads(plan(setup, "--json").stdout)
    assert data["finalize"]["commands"][0]["argv"][0] == "update-initramfs"


def test_plan_shows_the_rebuild_of_an_initramfs_carrying_a_rewritten_file(
        setup: Path) -> None:
    # The swap of hibernation renamed: the initramfs resumes by its own copy of
    # conf.d/resume. initramfs-tools' copy is renamed in the image itself once restored
    # when no driver lacks there: the rebuild depends on it.
    with_initramfs_config(
        setup, ConfigFile("cfg.resume", "/etc/initramfs-tools/conf.d/resume",
                          "RESUME=/dev/vda4\n"), saved=NVME)
    out = plan(setup).stdout
    section = out[out.index("finalize, once the data is restored"):]
    assert "    if needed: [chroot] update-initramfs -u -k 6.1.0\n" in section
    assert ("      because the initramfs of 6.1.0 carries a copy of "
            "/etc/initramfs-tools/conf.d/resume, which name the devices anew: it unlocks, "
            "assembles and resumes by its copy (renamed in the image itself once restored "
            "if no driver lacks there, without this rebuild)\n") in section
    [cmd] = rebuilds(setup)
    assert cmd["status"] == "if-needed"


def test_plan_shows_no_rebuild_when_the_disks_use_the_saved_drivers(setup: Path) -> None:
    with_initramfs_config(setup, saved=NVME)
    out = plan(setup).stdout
    assert "update-initramfs" not in out
    assert ("drivers: the disks of this machine use the saved system's drivers (nvme): the "
            "restored initramfs is checked once restored") in out
    assert rebuilds(setup) == []
