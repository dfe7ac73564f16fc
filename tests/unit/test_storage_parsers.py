"""The storage probe's parsers, fed real tool output recorded in tests/data/storage/."""

from __future__ import annotations

from pathlib import Path

import pytest

from resurgo.errors import OperationFailed
from resurgo.model import PartitionKind, PartitionTable, TableLabel
from resurgo.probe import blockdev, filesystems, mounts, partitions, swap
from resurgo.probe.filesystems import SubvolEntry
from resurgo.sortkeys import natural_key

DATA = Path(__file__).resolve().parent.parent / "data" / "storage"


def text(name: str) -> str:
    return (DATA / name).read_text()


# ---------------------------------------------------------------- sfdisk


def test_sfdisk_gpt() -> None:
    parsed = partitions.parse_sfdisk_json(text("sfdisk-gpt.json"))
    assert parsed.table == PartitionTable(
        label=TableLabel.GPT, id="11111111-2222-3333-4444-555555555555",
        first_lba=2048, last_lba=2097118,
    )
    assert parsed.sector_size == 512
    assert [(e.number, e.start, e.size) for e in parsed.entries] == [
        (1, 2048, 65536), (2, 67584, 131072), (3, 204800, 409600), (4, 616448, 655360),
        (5, 1271808, 65536),
    ]
    esp, _, root, *_ = parsed.entries
    assert esp.type == "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
    assert esp.uuid == "AAAAAAAA-0000-0000-0000-000000000001"
    assert esp.name == "EFI system"
    assert esp.attrs is None
    assert root.attrs == "GUID:59"
    assert all(e.kind == PartitionKind.PRIMARY and not e.bootable for e in parsed.entries)


def test_sfdisk_dos_extended_and_logical() -> None:
    parsed = partitions.parse_sfdisk_json(text("sfdisk-dos.json"))
    assert parsed.table == PartitionTable(label=TableLabel.DOS, id="0xdeadbeef")
    got = [(e.number, e.start, e.size, e.type, e.kind, e.bootable) for e in parsed.entries]
    assert got == [
        (1, 2048, 102400, "83", PartitionKind.PRIMARY, True),
        (2, 104448, 200000, "5", PartitionKind.EXTENDED, False),
        (5, 106496, 65536, "c", PartitionKind.LOGICAL, False),
        (6, 174080, 100000, "83", PartitionKind.LOGICAL, False),
    ]
    assert all(e.uuid is None and e.name is None for e in parsed.entries)


def test_sfdisk_4kn_records_use_the_table_sector_size() -> None:
    parsed = partitions.parse_sfdisk_json(text("sfdisk-gpt-4kn.json"))
    assert parsed.sector_size == 4096
    [(kname, part)] = partitions.partition_records(parsed, "disk.loop3", 512, {1: "loop3p1"})
    assert kname == "loop3p1"
    assert (part.id, part.disk, part.start, part.size, part.sector_size, part.path) == (
        "part.loop3p1", "disk.loop3", 256, 4096, 4096, "/dev/loop3p1")


def test_partition_records_name_partitions_after_the_kernel() -> None:
    parsed = partitions.parse_sfdisk_json(text("sfdisk-dos.json"))
    recs = partitions.partition_records(parsed, "disk.sdb", 512, {1: "sdb1", 2: "sdb2", 5: "sdb5"})
    # Partition 6 is not known to the kernel: named after sfdisk's node.
    assert [k for k, _ in recs] == ["sdb1", "sdb2", "sdb5", "loop2p6"]
    assert recs[2][1].kind == PartitionKind.LOGICAL


@pytest.mark.parametrize("bad", ["", "{}", '{"partitiontable": {"label": "sun"}}'])
def test_sfdisk_garbage_is_an_error_not_a_traceback(bad: str) -> None:
    with pytest.raises(OperationFailed):
        partitions.parse_sfdisk_json(bad)


# ---------------------------------------------------------------- blkid


def test_blkid_export_unescapes_and_keeps_partition_entry() -> None:
    esp = filesystems.parse_blkid_export(text("blkid-gpt-p1.txt"))
    assert esp["TYPE"] == "vfat"
    assert esp["UUID"] == "1234-ABCD"
    assert esp["LABEL"] == "ESP"
    assert esp["PART_ENTRY_NAME"] == "EFI system"
    swap_ = filesystems.parse_blkid_export(text("blkid-gpt-p5.txt"))
    assert (swap_["TYPE"], swap_["UUID"], swap_["LABEL"]) == (
        "swap", "22222222-0000-0000-0000-000000000005", "swp")
    disk = filesystems.parse_blkid_export(text("blkid-gpt-disk.txt"))
    assert disk["PTTYPE"] == "gpt" and "TYPE" not in disk
    ext = filesystems.parse_blkid_export(text("blkid-dos-extended.txt"))
    assert "TYPE" not in ext
    btrfs = filesystems.parse_blkid_export(text("blkid-btrfs.txt"))
    assert (btrfs["TYPE"], btrfs["UUID"], btrfs["LABEL"]) == (
        "btrfs", "33333333-0000-0000-0000-000000000001", "broot")


# ---------------------------------------------------------------- ext


def test_dumpe2fs_root() -> None:
    opts, size = filesystems.parse_dumpe2fs(text("dumpe2fs-root.txt"))
    assert opts.block_size == 4096
    assert opts.inode_size == 512
    assert opts.inode_count == 20000
    assert opts.reserved_blocks_percent == 2.0
    assert opts.journal is True
    assert "metadata_csum" not in opts.features and "huge_file" not in opts.features
    assert {"has_journal", "extent", "64bit", "flex_bg"} <= set(opts.features)
    # A mounted ext4 says needs_recovery: its state, not how it was made.
    assert "needs_recovery" not in opts.features
    assert size == 51200 * 4096


def test_dumpe2fs_boot() -> None:
    opts, size = filesystems.parse_dumpe2fs(text("dumpe2fs-boot.txt"))
    assert (opts.block_size, opts.inode_size, opts.reserved_blocks_percent) == (1024, 256, 5.0)
    assert "metadata_csum" in opts.features
    assert size == 65536 * 1024


def test_dumpe2fs_missing_field() -> None:
    with pytest.raises(OperationFailed, match="Block size"):
        filesystems.parse_dumpe2fs("Filesystem volume name:   x\n")


# ---------------------------------------------------------------- xfs


def test_xfs_superblock() -> None:
    opts, size = filesystems.parse_xfs_sb(text("xfs_db-home.txt"))
    assert (opts.block_size, opts.sector_size, opts.inode_size, opts.ag_count) == (
        4096, 512, 512, 4)
    assert opts.log_size == 16384 * 4096
    assert opts.crc and opts.reflink and opts.finobt and opts.sparse and opts.bigtime
    assert opts.inobtcount and not opts.rmapbt
    assert size == 81920 * 4096


def test_xfs_v4_superblock_has_no_crc() -> None:
    sb = text("xfs_db-home.txt").replace("versionnum = 0xb4a5", "versionnum = 0xb4a4")
    sb = sb.replace("features_ro_compat = 0xd", "features_ro_compat = 0x2")
    opts, _ = filesystems.parse_xfs_sb(sb)
    assert opts.crc is False and opts.rmapbt is True and opts.reflink is False


# ---------------------------------------------------------------- vfat


@pytest.mark.parametrize(
    ("name", "fat", "volume_id", "cluster", "size"),
    [
        ("bootsector-fat32.bin", 32, "1234-ABCD", 512, 65520 * 512),
        ("bootsector-fat16.bin", 16, "0BAD-CAFE", 2048, 65536 * 512),
        ("bootsector-fat12.bin", 12, "00C0-FFEE", 512, 2880 * 512),
    ],
)
def test_fat_boot_sector(name: str, fat: int, volume_id: str, cluster: int, size: int) -> None:
    opts, got_size = filesystems.parse_fat_boot_sector((DATA / name).read_bytes())
    assert (opts.fat_size, opts.volume_id, opts.sector_size, opts.cluster_size) == (
        fat, volume_id, 512, cluster)
    assert got_size == size


def test_not_a_fat_boot_sector() -> None:
    with pytest.raises(OperationFailed):
        filesystems.parse_fat_boot_sector(bytes(512))


# ---------------------------------------------------------------- btrfs


def test_btrfs_dump_super() -> None:
    sb = filesystems.parse_dump_super(text("btrfs-dump-super.txt"))
    assert sb.fsid == "33333333-0000-0000-0000-000000000001"
    assert (sb.node_size, sb.sector_size, sb.total_bytes, sb.num_devices) == (
        16384, 4096, 419430400, 1)
    assert sb.features == (
        "free_space_tree", "free_space_tree_valid", "mixed_backref", "default_subvol",
        "big_metadata", "extended_iref", "skinny_metadata", "no_holes",
    )


def test_btrfs_subvolume_list_gives_paths_from_the_top_level() -> None:
    got = filesystems.parse_subvolume_list(text("btrfs-subvolume-list.txt"))
    assert got == [
        SubvolEntry(256, 5, "9aba7a86-4df3-eb4e-9fc4-05c9d7da4a69", "@"),
        SubvolEntry(257, 5, "99f31a08-9b73-2844-a381-698bbb59ae51", "@home"),
        SubvolEntry(258, 256, "321d1401-b821-8d4b-9d28-c145c6460d19", "@/srv/nested"),
        SubvolEntry(259, 5, "4c209d26-842c-1b45-9620-9ff9394500d0", "@snap"),
    ]
    assert filesystems.parse_subvolume_ids(text("btrfs-subvolume-list-readonly.txt")) == {259}
    assert filesystems.parse_get_default(text("btrfs-get-default.txt")) == 256
    assert filesystems.parse_get_default("ID 5 (FS_TREE)\n") == 5


def test_btrfs_subvolume_path_with_spaces() -> None:
    line = "ID 300 gen 9 parent 5 top level 5 uuid - path <FS_TREE>/my vol\n"
    assert filesystems.parse_subvolume_list(line) == [SubvolEntry(300, 5, None, "my vol")]


# ---------------------------------------------------------------- mountinfo


def test_mountinfo() -> None:
    entries = mounts.parse_mountinfo(text("mountinfo.txt"))
    by_point = {e.mountpoint: e for e in entries}
    root = by_point["/tmp/stexp/root"]
    assert (root.major, root.minor, root.fstype, root.source, root.fs_root) == (
        259, 2, "ext4", "/dev/loop0p3", "/")
    assert root.options == "rw,noatime"
    boot = by_point["/tmp/stexp/root/boot"]
    assert boot.options == "rw,nosuid,nodev,relatime"
    home = by_point["/tmp/stexp/root/home"]
    assert home.options == "rw,relatime,inode64,logbufs=8,logbsize=32k,noquota"
    btr = by_point["/tmp/stexp/mnt"]
    assert (btr.major, btr.fs_root, btr.btrfs_subvolid, btr.btrfs_subvol) == (0, "/@", 256, "/@")
    # The subvolume is recorded structurally; subvolid would change on recreation.
    assert btr.options == "rw,noatime,discard=async,space_cache=v2"
    assert "/tmp/stexp/sp ace" in by_point


def test_mountinfo_optional_fields_and_escapes() -> None:
    line = ("36 35 98:0 / /mnt/a\\040b\\134c rw,noatime shared:1 master:2 - ext3 /dev/sda1 "
            "rw,seclabel,errors=continue\n")
    [e] = mounts.parse_mountinfo(line)
    assert (e.mountpoint, e.fstype, e.source) == ("/mnt/a b\\c", "ext3", "/dev/sda1")
    assert e.options == "rw,noatime,errors=continue"


def test_mountinfo_garbage() -> None:
    with pytest.raises(OperationFailed):
        mounts.parse_mountinfo("36 35 98:0 / /mnt rw\n")


def test_mounts_under_root() -> None:
    entries = mounts.parse_mountinfo(text("mountinfo.txt"))
    got = [(rel, e.source) for rel, e in mounts.under_root(entries, "/tmp/stexp/root/")]
    assert got == [("/", "/dev/loop0p3"), ("/boot", "/dev/loop0p2"), ("/home", "/dev/loop0p4")]
    assert mounts.relative_mountpoint("/tmp/stexp/rootx", "/tmp/stexp/root") is None
    assert mounts.relative_mountpoint("/home", "/") == "/home"


def test_overmounted_entries_are_hidden() -> None:
    lines = ("20 1 8:1 / /mnt rw - ext4 /dev/sda1 rw\n"
             "21 1 8:2 / /mnt rw - ext4 /dev/sda2 rw\n")
    assert [e.source for e in mounts.visible(mounts.parse_mountinfo(lines))] == ["/dev/sda2"]


# ---------------------------------------------------------------- swap


def test_proc_swaps() -> None:
    assert swap.parse_proc_swaps(text("proc-swaps.txt")) == [
        swap.ActiveSwap(path="/dev/loop0p5", is_file=False, size=32764 * 1024, priority=-2)
    ]
    got = swap.parse_proc_swaps("Filename Type Size Used Priority\n"
                                "/swap\\040file file 1024 0 5\n")
    assert got == [swap.ActiveSwap("/swap file", True, 1024 * 1024, 5)]


def test_swap_header() -> None:
    header = swap.parse_swap_header((DATA / "swap-header.bin").read_bytes())
    assert header == swap.SwapHeader(page_size=4096, size=32 * 1024 * 1024)
    assert swap.parse_swap_header(bytes(4096)) is None


# ---------------------------------------------------------------- sysfs paths


@pytest.mark.parametrize(
    ("syspath", "kname", "expected"),
    [
        ("/sys/devices/virtual/block/loop0", "loop0", "loop"),
        ("/sys/devices/pci0000:00/0000:00:02.0/virtio1/block/vda", "vda", "virtio"),
        ("/sys/devices/pci0000:00/0000:00:03.0/virtio2/host0/target0:0:0/0:0:0:0/block/sda",
         "sda", "virtio-scsi"),
        ("/sys/devices/pci0000:00/0000:00:1d.0/nvme/nvme0/nvme0n1", "nvme0n1", "nvme"),
        ("/sys/devices/pci0000:00/0000:00:17.0/ata1/host0/target0:0:0/0:0:0:0/block/sda",
         "sda", "sata"),
        ("/sys/devices/pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host4/target4:0:0/4:0:0:0/"
         "block/sdb", "sdb", "usb"),
        ("/sys/devices/pci0000:00/0000:00:10.0/host2/target2:0:0/2:0:0:0/block/sdc",
         "sdc", "scsi"),
        ("/sys/devices/platform/fe340000.mmc/mmc_host/mmc0/mmc0:0001/block/mmcblk0",
         "mmcblk0", "mmc"),
        ("/sys/devices/virtual/block/dm-0", "dm-0", "dm"),
        ("/sys/devices/virtual/block/md127", "md127", "md"),
    ],
)
def test_transport(syspath: str, kname: str, expected: str) -> None:
    assert blockdev.transport(syspath, kname) == expected


def test_natural_order() -> None:
    names = ["loop10", "loop2", "sda10", "sda2", "nvme0n1", "loop1"]
    assert sorted(names, key=natural_key) == [
        "loop1", "loop2", "loop10", "nvme0n1", "sda2", "sda10"]


def test_vpd_serial() -> None:
    page = bytes([0, 0x80, 0, 10]) + b"  S3Z9NB0 " + b"junk"
    assert blockdev._vpd_serial(page) == "S3Z9NB0"


def test_by_id_prefers_readable_names(tmp_path: Path) -> None:
    (tmp_path / "sda").touch()
    for name, target in [("wwn-0x5000", "sda"), ("ata-Samsung_SSD_S3Z9", "sda"),
                         ("ata-Samsung_SSD_S3Z9-part1", "sda1")]:
        (tmp_path / name).symlink_to(target)
    assert blockdev.by_id_names(tmp_path) == {"sda": f"{tmp_path}/ata-Samsung_SSD_S3Z9"}


# ---------------------------------------------------------------- a sysfs tree built here


def _fake_block(sysfs: Path, devpath: str, values: dict[str, str],
                partitions: dict[str, dict[str, str]] | None = None) -> None:
    """A /sys/devices/... block device and its /sys/class/block link, with attribute files."""
    real = sysfs / devpath.lstrip("/")
    for name, value in values.items():
        (real / name).parent.mkdir(parents=True, exist_ok=True)
        (real / name).write_text(value + "\n")
    for sub in ("holders", "slaves"):
        (real / sub).mkdir(parents=True, exist_ok=True)
    links = sysfs / "class" / "block"
    links.mkdir(parents=True, exist_ok=True)
    (links / real.name).symlink_to(real)
    for pname, pvalues in (partitions or {}).items():
        for name, value in pvalues.items():
            (real / pname / name).parent.mkdir(parents=True, exist_ok=True)
            (real / pname / name).write_text(value + "\n")
        for sub in ("holders", "slaves"):
            (real / pname / sub).mkdir(exist_ok=True)
        (links / pname).symlink_to(real / pname)


def _link(sysfs: Path, lower: str, upper: str) -> None:
    block = sysfs / "class" / "block"
    (block / lower / "holders" / upper).symlink_to(block / upper)
    (block / upper / "slaves" / lower).symlink_to(block / lower)


@pytest.fixture
def fake_sysfs(tmp_path: Path) -> Path:
    usb = "/devices/pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host4/target4:0:0/4:0:0:0/block/sdb"
    _fake_block(tmp_path, usb, {
        "size": "7821312", "removable": "1", "dev": "8:16", "queue/logical_block_size": "512",
        "queue/physical_block_size": "512", "queue/rotational": "0",
        "device/model": "Cruzer Blade    ", "device/wwid": "t10.SanDisk Cruzer",
    }, {"sdb1": {"partition": "1", "start": "2048", "size": "7819264", "dev": "8:17"}})
    ata = "/devices/pci0000:00/0000:00:17.0/ata1/host0/target0:0:0/0:0:0:0/block/sda"
    _fake_block(tmp_path, ata, {
        "size": "1000215216", "removable": "0", "dev": "8:0", "queue/logical_block_size": "512",
        "queue/physical_block_size": "4096", "queue/rotational": "1",
        "device/model": "WDC WD5000", "device/vpd_pg80": "",
    }, {"sda1": {"partition": "1", "start": "2048", "size": "1048576", "dev": "8:1"},
        "sda2": {"partition": "2", "start": "1050624", "size": "999162511", "dev": "8:2"}})
    (tmp_path / "devices/pci0000:00/0000:00:17.0/ata1/host0/target0:0:0/0:0:0:0/device"
     ).mkdir(parents=True)
    nvme = "/devices/pci0000:00/0000:00:1d.0/nvme/nvme0/nvme0n1"
    _fake_block(tmp_path, nvme, {"size": "2000409264", "removable": "0", "dev": "259:0",
                                 "wwid": "eui.0025388b01234567"},
                {"nvme0n1p1": {"partition": "1", "start": "2048", "size": "2000000000"}})
    _fake_block(tmp_path, "/devices/virtual/block/md0", {"size": "1048576", "dev": "9:0",
                                                          "md/level": "raid1"})
    _fake_block(tmp_path, "/devices/virtual/block/dm-0", {"size": "999000000", "dev": "254:0",
                                                           "dm/uuid": "CRYPT-LUKS2-abc-root"})
    _fake_block(tmp_path, "/devices/virtual/block/dm-1", {"size": "990000000", "dev": "254:1",
                                                           "dm/uuid": "LVM-xyz"})
    _fake_block(tmp_path, "/devices/virtual/block/loop0", {"size": "2048", "removable": "1",
                                                            "dev": "7:0"})
    _link(tmp_path, "sda1", "md0")
    _link(tmp_path, "nvme0n1p1", "md0")
    _link(tmp_path, "sda2", "dm-0")
    _link(tmp_path, "dm-0", "dm-1")
    return tmp_path / "class" / "block"


def test_disks_below_walk_partitions_md_and_dm(fake_sysfs: Path) -> None:
    assert blockdev.disks_below("dm-1", fake_sysfs) == ["sda"]
    assert blockdev.disks_below("md0", fake_sysfs) == ["nvme0n1", "sda"]
    assert blockdev.disks_below("sdb1", fake_sysfs) == ["sdb"]
    assert blockdev.disks_below("sdb", fake_sysfs) == ["sdb"]
    sda2 = blockdev.read_device("sda2", fake_sysfs)
    assert (sda2.parent, sda2.number, sda2.holders) == ("sda", 2, ("dm-0",))
    assert blockdev.read_device("dm-1", fake_sysfs).slaves == ("dm-0",)


def test_partitions_of(fake_sysfs: Path) -> None:
    assert blockdev.partitions_of("sda", fake_sysfs) == {
        1: blockdev.KernelPartition("sda1", 2048 * 512, 1048576 * 512),
        2: blockdev.KernelPartition("sda2", 1050624 * 512, 999162511 * 512),
    }


def test_disk_record_from_sysfs(fake_sysfs: Path) -> None:
    sda = blockdev.read_device("sda", fake_sysfs)
    disk = blockdev.disk_record(sda, {"sda": "/dev/disk/by-id/ata-WDC"}, fake_sysfs)
    assert (disk.id, disk.path, disk.size) == ("disk.sda", "/dev/sda", 1000215216 * 512)
    assert (disk.logical_sector_size, disk.physical_sector_size) == (512, 4096)
    assert (disk.transport, disk.rotational, disk.removable) == ("sata", True, False)
    assert (disk.model, disk.serial, disk.wwn, disk.by_id) == (
        "WDC WD5000", None, None, "/dev/disk/by-id/ata-WDC")
    nvme = blockdev.disk_record(blockdev.read_device("nvme0n1", fake_sysfs), {}, fake_sysfs)
    assert (nvme.transport, nvme.wwn, nvme.logical_sector_size) == (
        "nvme", "eui.0025388b01234567", 512)


def test_removable_devices(fake_sysfs: Path) -> None:
    [stick] = blockdev.removable_devices([], {}, fake_sysfs)
    assert (stick.id, stick.path, stick.size, stick.transport, stick.model, stick.wwn) == (
        "removable.sdb", "/dev/sdb", 7821312 * 512, "usb", "Cruzer Blade", "t10.SanDisk Cruzer")
    # A removable disk that is described as a disk of the system is not listed again.
    assert blockdev.removable_devices(["sdb"], {}, fake_sysfs) == []


def test_dm_kind(fake_sysfs: Path) -> None:
    from resurgo.probe import stack

    assert stack.dm_kind("dm-0", fake_sysfs) == "luks"
    assert stack.dm_kind("dm-1", fake_sysfs) == "lvm"
    assert stack.dm_kind("md0", fake_sysfs) == "dm"
