"""probe.actual: this machine's disks from a recorded sysfs tree, a mount table and /proc/swaps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from resurgo.cli.main import build_parser
from resurgo.cli.plan import plan_arguments, read_paths
from resurgo.machine import ActualDisk, SeenKind
from resurgo.probe import seen
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
        blkid=BLKID.__getitem__,
        pv_groups=dict,
    )
    return {d.kname: d for d in found}


# What blkid -p reads on the recorded guest's devices (a few of them).
BLKID: dict[str, dict[str, str]] = {
    "/dev/vda": {"PTUUID": "0c4b1b2a-aaaa-4bbb-8ccc-000000000001", "PTTYPE": "gpt"},
    "/dev/vda1": {"UUID": "11111111-0000-4000-8000-000000000001", "TYPE": "ext4",
                  "PART_ENTRY_UUID": "22222222-0000-4000-8000-000000000001"},
    "/dev/vda2": {"UUID": "33333333-0000-4000-8000-000000000001", "TYPE": "swap",
                  "PART_ENTRY_UUID": "22222222-0000-4000-8000-000000000002"},
    "/dev/vda3": {"PART_ENTRY_UUID": "22222222-0000-4000-8000-000000000003"},
    "/dev/sdb": {"UUID": "44444444-0000-4000-8000-000000000001", "TYPE": "btrfs",
                 "UUID_SUB": "55555555-0000-4000-8000-000000000001"},
    **{f"/dev/{k}": {} for k in ("nvme0n1", "sda", "sdc", "sdd", "vdb")},
}


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
            proc_swaps=tmp_path / "swaps", blkid=lambda dev: {}, pv_groups=dict,
        )
    }
    assert found["sdb"].holds_recovery_set and found["sdd"].holds_recovery_set
    assert not found["vdb"].holds_recovery_set


def test_the_identities_each_disk_shows(disks: dict[str, ActualDisk]) -> None:
    vda = {(s.kind, s.value, s.device, s.type) for s in disks["vda"].identities}
    assert vda == {
        (SeenKind.TABLE, "0c4b1b2a-aaaa-4bbb-8ccc-000000000001", "/dev/vda", "gpt"),
        (SeenKind.FILESYSTEM, "11111111-0000-4000-8000-000000000001", "/dev/vda1", "ext4"),
        (SeenKind.PARTITION, "22222222-0000-4000-8000-000000000001", "/dev/vda1", ""),
        (SeenKind.SWAP, "33333333-0000-4000-8000-000000000001", "/dev/vda2", "swap"),
        (SeenKind.PARTITION, "22222222-0000-4000-8000-000000000002", "/dev/vda2", ""),
        (SeenKind.PARTITION, "22222222-0000-4000-8000-000000000003", "/dev/vda3", ""),
    }
    assert [(s.kind, s.type) for s in disks["sdb"].identities] == [
        (SeenKind.FILESYSTEM, "btrfs")]
    assert disks["vdb"].identities == ()


def _node(sys_block: Path, name: str, dev: str, *, partition: bool = False,
          holders: tuple[str, ...] = (), dm: tuple[str, str] | None = None) -> None:
    base = sys_block / name
    (base / "holders").mkdir(parents=True)
    (base / "dev").write_text(dev + "\n")
    (base / "size").write_text("2048\n")
    if partition:
        (base / "partition").write_text("1\n")
    for h in holders:
        (base / "holders" / h).mkdir()
    if dm is not None:
        (base / "dm").mkdir()
        (base / "dm" / "name").write_text(dm[0] + "\n")
        (base / "dm" / "uuid").write_text(dm[1] + "\n")


def test_what_is_built_on_a_disk_and_active_is_seen_too(tmp_path: Path) -> None:
    """An old disk with an md member under LUKS under LVM, all of it active."""
    sys_block = tmp_path / "block"
    _node(sys_block, "sdz1", "8:1", partition=True, holders=("md127",))
    _node(sys_block, "md127", "9:127", holders=("dm-0",))
    _node(sys_block, "dm-0", "253:0", holders=("dm-1",),
          dm=("old_crypt", "CRYPT-LUKS2-aaaa-old_crypt"))
    _node(sys_block, "dm-1", "253:1",
          dm=("vg--old-root", "LVM-" + "a" * 64))
    read = {
        "/dev/sdz": {"PTUUID": "abcd", "PTTYPE": "gpt"},
        "/dev/sdz1": {"UUID": "md-uuid", "TYPE": "linux_raid_member"},
        "/dev/md127": {"UUID": "luks-uuid", "TYPE": "crypto_LUKS"},
        "/dev/dm-0": {"UUID": "pv-uuid", "TYPE": "LVM2_member"},
        "/dev/dm-1": {"UUID": "root-uuid", "TYPE": "xfs"},
    }
    asked: list[int] = []

    def groups() -> dict[tuple[int, int], str]:
        asked.append(1)
        return {(253, 0): "vg-old"}

    found = seen.read_seen("sdz", ["sdz1"], sys_block=sys_block, blkid=read.__getitem__,
                           pv_groups=groups)
    assert [(s.kind, s.value, s.device) for s in found] == [
        (SeenKind.TABLE, "abcd", "/dev/sdz"),
        (SeenKind.MD, "md-uuid", "/dev/sdz1"),
        (SeenKind.LUKS, "luks-uuid", "/dev/md127"),
        (SeenKind.PV, "pv-uuid", "/dev/dm-0"),
        (SeenKind.FILESYSTEM, "root-uuid", "/dev/dm-1"),
        (SeenKind.ACTIVE_MD, "/dev/md127", "/dev/md127"),
        (SeenKind.ACTIVE_DM, "old_crypt", "/dev/dm-0"),
        (SeenKind.ACTIVE_DM, "vg--old-root", "/dev/dm-1"),
        (SeenKind.ACTIVE_VG, "vg-old", "/dev/dm-1"),
        (SeenKind.VG, "vg-old", "/dev/dm-0"),
    ]
    assert asked == [1]


def test_lvm_pvs_report_gives_each_pv_its_group() -> None:
    text = json.dumps({"report": [{"pv": [
        {"pv_major": "8", "pv_minor": "2", "vg_name": "vg0"},
        {"pv_major": "253", "pv_minor": "4", "vg_name": ""},
        {"pv_major": "x", "pv_minor": "4", "vg_name": "bad"},
    ]}]})
    assert seen.parse_pvs(text) == {(8, 2): "vg0"}
    assert seen.parse_pvs("not json") == {}
    assert seen.parse_pvs('{"report": 3}') == {}


def test_a_device_blkid_cannot_read_shows_nothing() -> None:
    assert seen.read_blkid("/dev/resurgo-no-such-device") == {}
