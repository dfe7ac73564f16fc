"""probe.actual: this machine's disks from a recorded sysfs tree, a mount table and /proc/swaps."""

from __future__ import annotations

from pathlib import Path

import pytest

from resurgo.cli.main import build_parser
from resurgo.cli.plan import plan_arguments, read_paths
from resurgo.machine import ActualDisk
from resurgo.probe.actual import read_actual_disks

DATA = Path(__file__).resolve().parent.parent / "data"
# The vm tier's Debian guest: virtio-blk, NVMe, virtio-scsi, AHCI, PIIX IDE and USB disks.
SYS_BLOCK = DATA / "sys" / "guest-mixed" / "sys" / "class" / "block"

MOUNTINFO = """\
22 1 254:1 / / rw,relatime - ext4 /dev/vda1 rw
23 22 0:21 / /proc rw,relatime - proc proc rw
24 22 8:16 / /mnt/old rw,relatime - ext4 /dev/sdb rw
25 22 8:48 / /media/set rw,relatime - vfat /dev/sdd rw
"""
SWAPS = """\
Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority
/swapfile                               file\t\t1048572\t\t0\t\t-2
"""


@pytest.fixture
def disks(tmp_path: Path) -> dict[str, ActualDisk]:
    mi = tmp_path / "mountinfo"
    mi.write_text(MOUNTINFO)
    sw = tmp_path / "swaps"
    sw.write_text(SWAPS)
    found = read_actual_disks(
        [Path("/media/set/backup/description.toml")],
        sys_block=SYS_BLOCK,
        mountinfo=mi,
        proc_swaps=sw,
    )
    return {d.kname: d for d in found}


def test_whole_disks_in_natural_order(disks: dict[str, ActualDisk]) -> None:
    assert list(disks) == ["nvme0n1", "sda", "sdb", "sdc", "sdd", "vda", "vdb"]
    assert disks["vda"].size == 6291456 * 512
    assert disks["vda"].path == "/dev/vda"
    assert disks["vdb"].logical_sector_size == 512


def test_transports_and_identities(disks: dict[str, ActualDisk]) -> None:
    assert {k: d.transport for k, d in disks.items()} == {
        "nvme0n1": "nvme",
        "sda": "sata",
        "sdb": "sata",
        "sdc": "virtio-scsi",
        "sdd": "usb",
        "vda": "virtio",
        "vdb": "virtio",
    }
    assert disks["nvme0n1"].wwn
    assert disks["vdb"].serial


def test_what_is_in_use_and_what_holds_the_system(disks: dict[str, ActualDisk]) -> None:
    assert disks["vda"].holds_system and disks["vda"].mounted == ("vda1 on /",)
    assert disks["sdb"].mounted == ("sdb on /mnt/old",) and not disks["sdb"].holds_system
    assert disks["sdb"].in_use
    assert disks["sdd"].holds_recovery_set and not disks["sdd"].holds_system
    quiet = [
        k for k, d in disks.items() if not (d.in_use or d.holds_system or d.holds_recovery_set)
    ]
    assert quiet == ["nvme0n1", "sda", "sdc", "vdb"]


def test_the_disks_of_key_files_are_never_targets(tmp_path: Path) -> None:
    # The rescue mounts a key stick (resurgo.keys): recover reads the key from it.
    (tmp_path / "mountinfo").write_text(MOUNTINFO)
    (tmp_path / "swaps").write_text(SWAPS)
    key = "/mnt/old/keys/luks.md127.key"
    args = build_parser().parse_args(["recover", "--from", "/media/set/backup",
                                      "--key-file", f"luks.md127={key}",
                                      "--key-file", f"luks.sda3={key}"])
    paths = read_paths((Path("/media/set/backup"),), plan_arguments(args))
    assert paths == (Path("/media/set/backup"), Path(key))
    with_identity = build_parser().parse_args(["plan", "--from", "d.toml",
                                               "--identity", "/mnt/old/age.txt"])
    assert read_paths((), plan_arguments(with_identity)) == (Path("/mnt/old/age.txt"),)
    found = {
        d.kname: d
        for d in read_actual_disks(
            paths, sys_block=SYS_BLOCK, mountinfo=tmp_path / "mountinfo",
            proc_swaps=tmp_path / "swaps",
        )
    }
    assert found["sdb"].holds_recovery_set and found["sdd"].holds_recovery_set
    assert not found["vdb"].holds_recovery_set
