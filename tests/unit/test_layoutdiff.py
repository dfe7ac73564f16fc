"""The saved layout against the live one (resurgo.layoutdiff): every kind of change found
and told in plain words, what changes without meaning ignored, records matched across
new kernel names."""

from __future__ import annotations

from dataclasses import replace

from resurgo.layoutdiff import Change, Difference, compare_layouts
from resurgo.model import (
    Description,
    Disk,
    Filesystem,
    FsType,
    LogicalVolume,
    LvType,
    Mount,
    Partition,
    PhysicalVolume,
    Subvolume,
    VolumeState,
)
from tests.support.examples import check, example, example_text

GIB = 1 << 30


def by_id(records: tuple[object, ...], rec_id: str) -> int:
    return next(i for i, r in enumerate(records) if getattr(r, "id", None) == rec_id)


def with_record(desc: Description, group: str, rec_id: str, **changes: object) -> Description:
    records = getattr(desc, group)
    i = by_id(records, rec_id)
    new = (*records[:i], replace(records[i], **changes), *records[i + 1:])
    return replace(desc, **{group: new})


def without(desc: Description, group: str, rec_id: str) -> Description:
    return replace(desc, **{group: tuple(r for r in getattr(desc, group) if r.id != rec_id)})


def added(desc: Description, group: str, record: object) -> Description:
    return replace(desc, **{group: (*getattr(desc, group), record)})


def texts(found: tuple[Difference, ...]) -> list[str]:
    return [d.text() for d in found]


def test_the_same_layout_has_no_difference() -> None:
    assert compare_layouts(example(), example()) == ()


def test_new_kernel_names_are_no_difference() -> None:
    # After a reboot sda may be sdx: the disks are matched by serial and WWN, the rest by
    # what it is built on.
    report = check(example_text().replace("sda", "sdx"))
    assert report.description is not None, report.messages()
    assert compare_layouts(example(), report.description) == ()


def test_what_changes_without_meaning_is_ignored() -> None:
    saved = example()
    live = with_record(saved, "filesystems", "fs.sda2",
                       state=VolumeState(mounted=True, used_bytes=1, total_bytes=2),
                       mounts=(Mount("/boot", "ro,noatime"),))
    live = replace(live, format=replace(live.format, created="2030-01-01T00:00:00Z"),
                   drivers=(), modules=(), config_files=(), catalog=None)
    # A snapshot made since (read-only subvolume), one dropped, and an LV's extents moved.
    live = added(live, "subvolumes", Subvolume("subvol.sda3.300", "fs.sda3",
                                               "@/.snapshots/2/snapshot", 300, readonly=True))
    live = without(live, "subvolumes", "subvol.sda3.258")
    live = with_record(live, "logical_volumes", "lv.data.srv", segments=())
    live = with_record(live, "swaps", "swap.sda4", active=False, priority=5)
    assert compare_layouts(saved, live) == ()


def test_disk_added_removed_resized() -> None:
    saved = example()
    new_disk = Disk("disk.sdf", "/dev/sdf", 8 * GIB, 512, 512, serial="NEW1")
    assert texts(compare_layouts(saved, added(saved, "disks", new_disk))) == [
        "disk /dev/sdf added (8.0 GiB)"]
    gone = without(without(saved, "disks", "disk.sde"), "filesystems", "fs.sde")
    assert texts(compare_layouts(saved, gone)) == [
        "disk /dev/sde removed (1.8 TiB)", "filesystem on /dev/sde removed (zfs_member)"]
    grown = with_record(saved, "disks", "disk.sdb", size=20 * GIB)
    (d,) = compare_layouts(saved, grown)
    assert (d.change, d.kind, d.name) == (Change.RESIZED, "disk", "/dev/sdb")
    assert d.text() == "disk /dev/sdb resized: 10.0 GiB -> 20.0 GiB"


def test_a_disk_swapped_for_another_of_the_same_path() -> None:
    saved = example()
    other = with_record(saved, "disks", "disk.sde", serial="OTHER", wwn=None)
    assert [(d.change, d.kind) for d in compare_layouts(saved, other)] == [
        (Change.REMOVED, "disk"), (Change.ADDED, "disk"),
        (Change.REMOVED, "filesystem"), (Change.ADDED, "filesystem")]


def test_disk_table_and_sector_size() -> None:
    saved = example()
    disk = saved.disks[by_id(saved.disks, "disk.sdc")]
    assert disk.table is not None
    relabelled = with_record(saved, "disks", "disk.sdc",
                             table=replace(disk.table, id="0x11111111"))
    assert texts(compare_layouts(saved, relabelled)) == [
        "disk /dev/sdc changed: partition table id 0x5f3a9c1e -> 0x11111111"]
    no_table = with_record(saved, "disks", "disk.sde", logical_sector_size=4096,
                           physical_sector_size=4096)
    assert texts(compare_layouts(saved, no_table)) == [
        "disk /dev/sde changed: sector size 512/4096 -> 4096/4096"]


def test_partition_added_removed_resized_moved_retyped() -> None:
    saved = example()
    new = Partition("part.sda5", "disk.sda", 5, 133171200, 2048, 512,
                    "0FC63DAF-8483-4772-8E79-3D69D8477DE4", path="/dev/sda5")
    (d,) = compare_layouts(saved, added(saved, "partitions", new))
    assert (d.change, d.kind, d.name) == (Change.ADDED, "partition", "/dev/sda5")
    assert d.text() == ("partition /dev/sda5 added "
                        "(1.0 MiB, type 0FC63DAF-8483-4772-8E79-3D69D8477DE4)")
    gone = without(without(saved, "partitions", "part.sda4"), "swaps", "swap.sda4")
    assert texts(compare_layouts(saved, gone)) == [
        "partition /dev/sda4 removed (2.0 GiB, type 0657FD6D-A4AB-43C4-84E5-0933C84B4F4F)",
        "swap on /dev/sda4 removed (2.0 GiB)"]
    grown = with_record(saved, "partitions", "part.sda3", size=125829120 + 2048)
    assert texts(compare_layouts(saved, grown)) == [
        "partition /dev/sda3 resized: 64424509440 bytes -> 64425558016 bytes"]
    moved = with_record(saved, "partitions", "part.sda4", start=128976896 + 2048)
    assert texts(compare_layouts(saved, moved)) == [
        "partition /dev/sda4 changed: start sector 128976896 -> sector 128978944"]
    retyped = with_record(saved, "partitions", "part.sdc1", type="83", bootable=True)
    assert texts(compare_layouts(saved, retyped)) == [
        "partition /dev/sdc1 changed: type fd -> 83",
        "partition /dev/sdc1 changed: bootable flag off -> on"]
    # The case of a GUID is no change.
    lower = with_record(saved, "partitions", "part.sda1",
                        type="c12a7328-f81f-11d2-ba4b-00a0c93ec93b")
    assert compare_layouts(saved, lower) == ()


def test_raid_member_removed_and_array_resized() -> None:
    saved = example()
    degraded = with_record(saved, "raid_arrays", "md.md0", members=("part.sdb1",))
    assert texts(compare_layouts(saved, degraded)) == [
        "RAID array /dev/md0 changed: members /dev/sdb1, /dev/sdc1 -> /dev/sdb1"]
    grown = with_record(saved, "raid_arrays", "md.md0", size=11 * GIB)
    assert [d.change for d in compare_layouts(saved, grown)] == [Change.RESIZED]
    remade = with_record(saved, "raid_arrays", "md.md0", uuid="00000000:00000000:00000000:1")
    changes = {(d.change, d.kind) for d in compare_layouts(saved, remade)}
    assert (Change.REMOVED, "RAID array") in changes and (Change.ADDED, "RAID array") in changes


def test_luks_volume_made_anew() -> None:
    saved = example()
    remade = with_record(saved, "luks_volumes", "luks.md0",
                         uuid="00000000-1111-2222-3333-444444444444")
    assert texts(compare_layouts(saved, remade)) == [
        "LUKS volume /dev/mapper/crypt_srv changed: UUID 5d4c3b2a-1f0e-4d9c-8b7a-6f5e4d3c2b1a"
        " -> 00000000-1111-2222-3333-444444444444"]


def test_lvm_volume_added_resized_and_group_grown() -> None:
    saved = example()
    lv = LogicalVolume("lv.data.new", "vg.data", "new", "u-new", GIB, LvType.LINEAR,
                       path="/dev/data/new")
    fs = Filesystem("fs.dm-9", "lv.data.new", FsType.EXT4, uuid="abc", size=GIB,
                    mounts=(Mount("/srv/new"),))
    live = added(added(saved, "logical_volumes", lv), "filesystems", fs)
    assert texts(compare_layouts(saved, live)) == [
        "logical volume data/new added (linear, 1.0 GiB)",
        "filesystem on /dev/data/new added (ext4, /srv/new)"]
    extended = with_record(saved, "logical_volumes", "lv.data.srv", size=6 * GIB)
    extended = with_record(extended, "filesystems", "fs.dm-1", size=6 * GIB)
    assert texts(compare_layouts(saved, extended)) == [
        "logical volume data/srv resized: 5.0 GiB -> 6.0 GiB",
        "filesystem on /dev/data/srv resized: 5.0 GiB -> 6.0 GiB"]
    pv = PhysicalVolume("pv.sdf1", "part.sdf1", "pv-new", "vg.data", 8 * GIB)
    part = Partition("part.sdf1", "disk.sdf", 1, 2048, 16775168, 512, "8e", path="/dev/sdf1")
    disk = Disk("disk.sdf", "/dev/sdf", 8 * GIB, 512, 512, serial="NEW1")
    grown = added(added(added(saved, "disks", disk), "partitions", part),
                  "physical_volumes", pv)
    grown = with_record(grown, "volume_groups", "vg.data", size=18 * GIB)
    assert [(d.change, d.kind) for d in compare_layouts(saved, grown)] == [
        (Change.ADDED, "disk"), (Change.ADDED, "partition"),
        (Change.ADDED, "physical volume"), (Change.RESIZED, "volume group")]


def test_filesystem_made_anew_relabelled_remounted_removed() -> None:
    saved = example()
    remade = with_record(saved, "filesystems", "fs.sda2", type=FsType.XFS, uuid="new-uuid",
                         ext=None)
    assert texts(compare_layouts(saved, remade)) == [
        "filesystem on /dev/sda2 changed: type ext4 -> xfs",
        "filesystem on /dev/sda2 changed: UUID '2f9d8c7b-6a5e-4d3c-9b2a-1f0e9d8c7b6a' -> "
        "'new-uuid'"]
    relabelled = with_record(saved, "filesystems", "fs.dm-2", label="backups")
    assert texts(compare_layouts(saved, relabelled)) == [
        "filesystem on /dev/data/backup changed: label none -> 'backups'"]
    remounted = with_record(saved, "filesystems", "fs.dm-2",
                            mounts=(Mount("/var/backups"), Mount("/mnt/b")))
    assert texts(compare_layouts(saved, remounted)) == [
        "filesystem on /dev/data/backup changed: mountpoints /var/backups -> "
        "/mnt/b, /var/backups"]
    gone = without(saved, "filesystems", "fs.sde")
    assert texts(compare_layouts(saved, gone)) == [
        "filesystem on /dev/sde removed (zfs_member)"]


def test_subvolume_and_swap() -> None:
    saved = example()
    sub = Subvolume("subvol.sda3.270", "fs.sda3", "@srv", 270)
    assert texts(compare_layouts(saved, added(saved, "subvolumes", sub))) == [
        "btrfs subvolume @srv on /dev/sda3 added"]
    bigger = with_record(saved, "swaps", "swapfile.srv_swapfile", size=2 * GIB)
    assert texts(compare_layouts(saved, bigger)) == [
        "swap file /srv/swapfile resized: 1.0 GiB -> 2.0 GiB"]


def test_difference_data() -> None:
    d = Difference(Change.ADDED, "partition", "/dev/loop0p2", "8.0 MiB")
    assert d.data() == {"change": "added", "kind": "partition", "name": "/dev/loop0p2",
                        "detail": "8.0 MiB", "text": "partition /dev/loop0p2 added (8.0 MiB)"}
