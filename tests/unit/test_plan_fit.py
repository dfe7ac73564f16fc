"""The size policies of the planner, one table test each: same, grow, shrink, 4Kn, MBR, LVM..."""

from __future__ import annotations

from dataclasses import replace

import pytest

from resurgo.model import (
    BtrfsOptions,
    Command,
    Description,
    Filesystem,
    FsType,
    LogicalVolume,
    LuksVolume,
    LvType,
    Mount,
    PartitionKind,
    PhysicalVolume,
    RaidArray,
    TableLabel,
    Unsupported,
    VolumeGroup,
    VolumeState,
    XfsOptions,
)
from resurgo.plan import filesystems, make_plan, sizes
from resurgo.plan.model import (
    Check,
    FittedPartition,
    GrowPolicy,
    MkfsParams,
    Plan,
    PlanOptions,
)
from tests.support.builders import (
    actual,
    description,
    disk,
    esp,
    ext4,
    other_fs,
    part,
    standard,
    swap,
)
from tests.support.consts import BIOS, ESP, GIB, KIB, LINUX, LVM, MIB, RAID, SWAP

ALL_TOOLS = PlanOptions(which=lambda p: f"/usr/sbin/{p}")


def plan_for(desc, *disks, **opts) -> Plan:  # type: ignore[no-untyped-def]
    return make_plan(desc, list(disks), replace(ALL_TOOLS, **opts))


def parts(plan: Plan, disk: str = "disk.sda") -> dict[str, FittedPartition]:
    lay = next(lay for lay in plan.layouts if lay.saved == disk)
    return {p.id: p for p in lay.partitions}


def saved_bytes(desc, pid):  # type: ignore[no-untyped-def]
    p = next(p for p in desc.partitions if p.id == pid)
    return p.start * p.sector_size, p.size * p.sector_size


def checks(plan: Plan) -> list[Check]:
    return [f.check for f in plan.failures]


# ---------------------------------------------------------------- same size


def test_same_size_keeps_every_offset_and_size() -> None:
    desc = standard()
    plan = plan_for(desc, actual("vdb", 20 * GIB))
    assert plan.ok, plan.failures
    got = parts(plan)
    for pid, fp in got.items():
        start, size = saved_bytes(desc, pid)
        assert (fp.start_bytes, fp.after) == (start, size), pid
        assert fp.sector_size == 512
    assert plan.layouts[0].last_lba == 20 * GIB // 512 - 34


# ---------------------------------------------------------------- larger


def test_grow_default_gives_everything_to_the_system_volume() -> None:
    desc = standard()
    plan = plan_for(desc, actual("vdb", 30 * GIB))
    assert plan.ok, plan.failures
    got = parts(plan)
    extra = 10 * GIB
    assert got["part.sda1"].after == 512 * MIB  # ESP keeps its size
    assert got["part.sda2"].after == GIB  # /boot keeps its size
    assert got["part.sda4"].after == 2 * GIB  # swap keeps its size
    assert got["part.sda3"].after == saved_bytes(desc, "part.sda3")[1] + extra
    # Offsets before the grown partition are unchanged; swap moves up by the extra.
    assert got["part.sda3"].start_bytes == saved_bytes(desc, "part.sda3")[0]
    assert got["part.sda4"].start_bytes == saved_bytes(desc, "part.sda4")[0] + extra


def test_grow_one_and_a_half_times_keeps_saved_trailing_free_space() -> None:
    d = disk("sda", 20 * GIB)
    p1 = part(d, 1, MIB, 10 * GIB)
    p2 = part(d, 2, MIB + 10 * GIB, 5 * GIB)
    desc = description(
        disks=[d],
        partitions=[p1, p2],
        filesystems=[ext4(p1.id, "/", GIB), ext4(p2.id, "/srv", GIB)],
    )
    plan = plan_for(desc, actual("vdb", 30 * GIB))
    got = parts(plan)
    assert got["part.sda1"].after == 20 * GIB  # the system volume took all 10 GiB
    assert got["part.sda2"].after == 5 * GIB
    lay = plan.layouts[0]
    end = got["part.sda2"].start_bytes + got["part.sda2"].after
    saved_free = (20 * GIB - 33 * 512) - (MIB + 15 * GIB)
    assert (lay.last_lba + 1) * 512 - end == saved_free


def test_grow_without_system_volume_grows_the_last_resizable_partition() -> None:
    d = disk("sdb", 10 * GIB)
    p1 = part(d, 1, MIB, 3 * GIB)
    p2 = part(d, 2, MIB + 3 * GIB, 3 * GIB)
    p3 = part(d, 3, MIB + 6 * GIB, GIB, SWAP)
    desc = description(
        disks=[d],
        partitions=[p1, p2, p3],
        filesystems=[ext4(p1.id, "/data", GIB), ext4(p2.id, "/srv", GIB)],
        swaps=[swap(p3.id, GIB)],
    )
    plan = plan_for(desc, actual("vdc", 20 * GIB))
    got = parts(plan, "disk.sdb")
    assert got["part.sdb1"].after == 3 * GIB
    assert got["part.sdb2"].after == 13 * GIB
    assert got["part.sdb3"].after == GIB


def test_grow_proportional_spreads_over_resizable_partitions() -> None:
    d = disk("sda", 10 * GIB)
    p1 = part(d, 1, MIB, 512 * MIB, ESP)
    p2 = part(d, 2, 513 * MIB, 2 * GIB)
    p3 = part(d, 3, 513 * MIB + 2 * GIB, 6 * GIB)
    desc = description(
        disks=[d],
        partitions=[p1, p2, p3],
        filesystems=[esp(p1.id), ext4(p2.id, "/", GIB), ext4(p3.id, "/home", GIB)],
    )
    plan = plan_for(desc, actual("vdb", 18 * GIB), grow=GrowPolicy.PROPORTIONAL)
    got = parts(plan)
    assert got["part.sda1"].after == 512 * MIB
    grown2 = got["part.sda2"].after - 2 * GIB
    grown3 = got["part.sda3"].after - 6 * GIB
    assert grown2 == 2 * GIB  # 8 GiB spread 2:6
    # The last partition also takes the sub-MiB tail up to the end of the usable area.
    assert 6 * GIB <= grown3 < 6 * GIB + MIB
    default = parts(plan_for(desc, actual("vdb", 18 * GIB)))
    assert default["part.sda2"].after == 10 * GIB  # the system volume takes it all by default
    assert default["part.sda3"].after == 6 * GIB


# ---------------------------------------------------------------- smaller


def test_smaller_disk_shrinks_root_within_its_data() -> None:
    desc = standard(used_root=3 * GIB)
    plan = plan_for(desc, actual("vdb", 8 * GIB))
    assert plan.ok, plan.failures
    got = parts(plan)
    assert got["part.sda1"].after == 512 * MIB
    assert got["part.sda2"].after == GIB
    assert got["part.sda4"].after == 2 * GIB
    root = got["part.sda3"].after
    assert root >= 3 * GIB + 3 * GIB // 10 + 64 * MIB
    assert (
        got["part.sda4"].start_bytes + got["part.sda4"].after
        <= (plan.layouts[0].last_lba + 1) * 512
    )


def test_smaller_disk_uses_saved_free_space_before_shrinking() -> None:
    d = disk("sda", 20 * GIB)
    p1 = part(d, 1, MIB, 8 * GIB)
    desc = description(disks=[d], partitions=[p1], filesystems=[ext4(p1.id, "/", 7 * GIB)])
    plan = plan_for(desc, actual("vdb", 10 * GIB))
    assert plan.ok, plan.failures
    assert parts(plan)["part.sda1"].after == 8 * GIB


def test_smaller_disk_refused_when_the_data_cannot_fit() -> None:
    desc = standard(used_root=6 * GIB)
    plan = plan_for(desc, actual("vdb", 8 * GIB))
    assert not plan.ok
    assert checks(plan) == [Check.TARGET_TOO_SMALL]
    msg = plan.failures[0].message
    assert "/dev/vdb" in msg and "part.sda3" in msg and "6.0 GiB used" in msg
    assert plan.actions == ()


def test_shrink_with_unknown_used_space_is_refused() -> None:
    d = disk("sda", 20 * GIB)
    p1 = part(d, 1, MIB, 18 * GIB)
    fs = replace(ext4(p1.id, "/", None), state=VolumeState(mounted=True))
    desc = description(disks=[d], partitions=[p1], filesystems=[fs])
    plan = plan_for(desc, actual("vdb", 10 * GIB))
    assert checks(plan) == [Check.TARGET_TOO_SMALL]
    assert "used space unknown" in plan.failures[0].message


def test_xfs_never_below_its_mkfs_minimum() -> None:
    d = disk("sda", 4 * GIB)
    p1 = part(d, 1, MIB, GIB)
    p2 = part(d, 2, MIB + GIB, 2 * GIB)
    xfs = other_fs(
        p2.id,
        FsType.XFS,
        "/srv",
        10 * MIB,
        xfs=XfsOptions(block_size=4096, sector_size=512, inode_size=512, crc=True),
    )
    desc = description(
        disks=[d], partitions=[p1, p2], filesystems=[ext4(p1.id, "/", 100 * MIB), xfs]
    )
    plan = plan_for(desc, actual("vdb", 600 * MIB))
    assert plan.ok, plan.failures
    got = parts(plan)
    assert got["part.sda2"].after >= filesystems.XFS_MINIMUM
    assert got["part.sda1"].after >= 100 * MIB + 10 * MIB + 64 * MIB


def test_mkfs_minimums() -> None:
    fs = other_fs("part.x1", FsType.BTRFS, None, 0)
    assert filesystems.creatable_minimum(fs, 512) == 114 * MIB
    assert filesystems.fat_minimum(32, 512) == 33 * MIB
    assert filesystems.fat_minimum(32, 4096) == 257 * MIB
    assert filesystems.swap_minimum(swap("part.x1", MIB)) == 40 * KIB
    assert filesystems.creatable_minimum(ext4("part.x1", None, 0, block=1024), 512) == 2 * MIB
    assert filesystems.creatable_minimum(ext4("part.x1", None, 0), 512) == 8 * MIB


# ---------------------------------------------------------------- sector sizes


def test_512_byte_original_onto_4kn_disk_keeps_byte_layout() -> None:
    desc = standard()
    plan = plan_for(desc, actual("vdb", 20 * GIB, 4096))
    assert plan.ok, plan.failures
    got = parts(plan)
    for pid, fp in got.items():
        assert fp.sector_size == 4096
        assert (fp.start_bytes, fp.after) == saved_bytes(desc, pid)
    lay = plan.layouts[0]
    assert lay.first_lba == 6  # 2 + 16 KiB of entries in 4 KiB sectors
    assert lay.last_lba == 20 * GIB // 4096 - 6  # room for 4 entry sectors + the backup header
    table = next(a for a in plan.actions if a.kind == "partition-table")
    assert table.params.sector_size == 4096  # type: ignore[union-attr]
    assert table.params.partitions[0].start == MIB // 4096  # type: ignore[union-attr]
    assert any("4096-byte sectors" in n for n in plan.notes)  # the ESP's FAT is recreated


def test_4kn_original_onto_512_byte_disk() -> None:
    desc = standard(lss=4096)
    plan = plan_for(desc, actual("vdb", 20 * GIB, 512))
    assert plan.ok, plan.failures
    for pid, fp in parts(plan).items():
        assert (fp.start_bytes, fp.after) == saved_bytes(desc, pid)
        assert fp.start == fp.start_bytes // 512


def test_last_partition_to_the_end_shrinks_by_the_larger_gpt_backup_on_4kn() -> None:
    d = disk("sda", 10 * GIB)
    last_lba = 10 * GIB // 512 - 34
    p1 = part(d, 1, MIB, (last_lba + 1) * 512 - MIB)
    desc = description(disks=[d], partitions=[p1], filesystems=[ext4(p1.id, "/", GIB)])
    plan = plan_for(desc, actual("vdb", 10 * GIB, 4096))
    assert plan.ok, plan.failures
    fp = parts(plan)["part.sda1"]
    lay = plan.layouts[0]
    assert fp.start + fp.size - 1 == lay.last_lba  # reaches the last usable LBA exactly
    # 5 sectors of 4 KiB at the end instead of 33 of 512: 3584 bytes less.
    assert saved_bytes(desc, p1.id)[1] - fp.after == 5 * 4096 - 33 * 512


def test_ext_with_1k_blocks_cannot_live_on_4kn() -> None:
    d = disk("sda", 4 * GIB)
    p1 = part(d, 1, MIB, 512 * MIB)
    p2 = part(d, 2, 513 * MIB, 3 * GIB)
    desc = description(
        disks=[d],
        partitions=[p1, p2],
        filesystems=[ext4(p1.id, "/boot", 50 * MIB, block=1024), ext4(p2.id, "/", GIB)],
    )
    # Without a resurgo:restore of it, its content may come as an image: refused.
    plan = plan_for(desc, actual("vdb", 4 * GIB, 4096))
    assert checks(plan) == [Check.FILESYSTEM]
    assert "fs.sda1" in plan.failures[0].message and "1024-byte blocks" in plan.failures[0].message
    assert "not restored file by file" in plan.failures[0].message
    assert plan_for(desc, actual("vdb", 4 * GIB, 512)).ok


def restored(desc: Description) -> Description:
    """desc with a resurgo:restore command for each mounted filesystem, as describe makes."""
    cmds = [
        Command(n, "resurgo:restore", (fs.id, fs.mounts[0].mountpoint))
        for n, fs in enumerate((f for f in desc.filesystems if f.mounts), 1)
    ]
    return replace(desc, commands=tuple(cmds))


def mkfs_options(plan: Plan, fs_id: str) -> tuple[str, ...]:
    a = next(a for a in plan.actions if a.id == f"mkfs:{fs_id}")
    assert isinstance(a.params, MkfsParams)
    return a.params.options


def option(opts: tuple[str, ...], flag: str) -> str:
    return opts[opts.index(flag) + 1]


@pytest.mark.parametrize("fs_type", [FsType.EXT2, FsType.EXT3, FsType.EXT4])
def test_ext_with_1k_blocks_restored_file_by_file_gets_the_sector_size_on_4kn(
    fs_type: FsType,
) -> None:
    d = disk("sda", 4 * GIB)
    p1 = part(d, 1, MIB, 512 * MIB)
    p2 = part(d, 2, 513 * MIB, 3 * GIB)
    boot = replace(ext4(p1.id, "/boot", 50 * MIB, block=1024, fs_type=fs_type),
                   size=512 * MIB)
    boot = replace(boot, ext=replace(boot.ext, inode_count=131072))  # type: ignore[type-var]
    desc = restored(description(disks=[d], partitions=[p1, p2],
                                filesystems=[boot, ext4(p2.id, "/", GIB)]))
    plan = plan_for(desc, actual("vdb", 4 * GIB, 4096))
    assert plan.ok, plan.failures
    opts = mkfs_options(plan, "fs.sda1")
    assert option(opts, "-b") == "4096"
    # The same size: the saved inode count stays (-N), whatever the block size.
    assert option(opts, "-N") == "131072"
    [note] = [n for n in plan.notes if n.startswith("fs.sda1")]
    assert "adapted: made with 4096-byte blocks (was 1024)" in note
    assert "restored one by one" in note
    # The root's 4 KiB blocks are left alone; on 512-byte sectors so are the 1 KiB ones.
    assert option(mkfs_options(plan, "fs.sda2"), "-b") == "4096"
    same = plan_for(desc, actual("vdb", 4 * GIB, 512))
    assert same.ok and option(mkfs_options(same, "fs.sda1"), "-b") == "1024"
    assert not [n for n in same.notes if "adapted" in n]


def test_ext_inode_ratio_is_never_below_the_fitted_block_size() -> None:
    d = disk("sda", 4 * GIB)
    p1 = part(d, 1, MIB, 512 * MIB)
    p2 = part(d, 2, 513 * MIB, 3 * GIB)
    # 1 KiB blocks and an inode per 2 KiB: mke2fs -i takes no ratio below the block size.
    boot = replace(ext4(p1.id, "/srv", 50 * MIB, block=1024), size=512 * MIB)
    boot = replace(boot, ext=replace(boot.ext, inode_count=512 * MIB // 2048))  # type: ignore[type-var]
    desc = restored(description(disks=[d], partitions=[p1, p2],
                                filesystems=[boot, ext4(p2.id, "/", GIB)]))
    plan = plan_for(desc, actual("vdb", 8 * GIB, 4096), grow=GrowPolicy.PROPORTIONAL)
    assert plan.ok, plan.failures
    opts = mkfs_options(plan, "fs.sda1")
    assert (option(opts, "-b"), option(opts, "-i")) == ("4096", "4096")
    assert "-N" not in opts


def test_xfs_and_btrfs_with_small_blocks_restored_file_by_file_on_4kn() -> None:
    d = disk("sda", 4 * GIB)
    p1 = part(d, 1, MIB, GIB)
    p2 = part(d, 2, MIB + GIB, 2 * GIB)
    xfs = other_fs(p1.id, FsType.XFS, "/srv", 10 * MIB,
                   xfs=XfsOptions(block_size=1024, sector_size=512, inode_size=512, crc=True))
    btrfs = replace(other_fs(p2.id, FsType.BTRFS, "/", 10 * MIB,
                             btrfs=BtrfsOptions(sector_size=2048)),
                    uuid="44444444-3333-4444-8555-666666666666")
    desc = restored(description(disks=[d], partitions=[p1, p2], filesystems=[xfs, btrfs]))
    plan = plan_for(desc, actual("vdb", 4 * GIB, 4096))
    assert plan.ok, plan.failures
    x = mkfs_options(plan, "fs.sda1")
    assert (option(x, "-b"), option(x, "-s")) == ("size=4096", "size=4096")
    assert option(mkfs_options(plan, "fs.sda2"), "-s") == "4096"
    adapted = sorted(n.split(" ")[0] for n in plan.notes if "adapted: made with 4096-byte" in n)
    # The xfs twice: its blocks, and its sectors.
    assert adapted == ["fs.sda1", "fs.sda1", "fs.sda2"]
    # Without the restore commands: both refused, as their content may be an image.
    refused = plan_for(replace(desc, commands=()), actual("vdb", 4 * GIB, 4096))
    assert sorted(f.subject for f in refused.failures) == ["fs.sda1", "fs.sda2"]


def test_small_fat32_esp_grows_to_the_fat32_minimum_on_4kn() -> None:
    d = disk("sda", 4 * GIB)
    p1 = part(d, 1, MIB, 100 * MIB, ESP)
    p2 = part(d, 2, 101 * MIB, 3 * GIB)
    desc = description(
        disks=[d], partitions=[p1, p2], filesystems=[esp(p1.id), ext4(p2.id, "/", GIB)]
    )
    plan = plan_for(desc, actual("vdb", 4 * GIB, 4096))
    assert plan.ok, plan.failures
    got = parts(plan)
    assert got["part.sda1"].after == 257 * MIB
    assert any("part.sda1" in n and "grows" in n for n in plan.notes)
    mkfs = next(a for a in plan.actions if a.id == "mkfs:fs.sda1")
    assert mkfs.params.options[:2] == ("-S", "4096")  # type: ignore[union-attr]


# ---------------------------------------------------------------- MBR


def _mbr() -> tuple:  # type: ignore[type-arg]
    d = disk("sda", 10 * GIB, label=TableLabel.DOS)
    p1 = part(d, 1, MIB, 512 * MIB, "83")
    p2 = part(d, 2, 513 * MIB, 10 * GIB - 514 * MIB, "5", PartitionKind.EXTENDED)
    p5 = part(d, 5, 514 * MIB, 7 * GIB, "83", PartitionKind.LOGICAL)
    p6 = part(d, 6, 515 * MIB + 7 * GIB, 2 * GIB, "82", PartitionKind.LOGICAL)
    desc = description(
        disks=[d],
        partitions=[p1, p2, p5, p6],
        filesystems=[ext4(p1.id, "/boot", 50 * MIB), ext4(p5.id, "/", 2 * GIB)],
        swaps=[swap(p6.id, 2 * GIB)],
    )
    return desc, p1, p2, p5, p6


@pytest.mark.parametrize("size", [10 * GIB, 15 * GIB, 6 * GIB])
def test_mbr_logicals_stay_inside_the_extended_partition(size: int) -> None:
    desc, p1, p2, p5, p6 = _mbr()
    plan = plan_for(desc, actual("vdb", size))
    assert plan.ok, plan.failures
    got = parts(plan)
    ext = got[p2.id]
    prev_end = ext.start_bytes
    for lp in (got[p5.id], got[p6.id]):
        assert lp.start_bytes - prev_end >= MIB  # room for the EBR
        assert lp.start_bytes % MIB == 0
        prev_end = lp.start_bytes + lp.after
    assert prev_end <= ext.start_bytes + ext.after
    assert ext.start_bytes + ext.after <= size
    assert got[p6.id].after == 2 * GIB  # swap keeps its size
    if size == 10 * GIB:
        for pid in (p1.id, p2.id, p5.id, p6.id):
            assert (got[pid].start_bytes, got[pid].after) == saved_bytes(desc, pid)
    if size == 15 * GIB:
        assert got[p5.id].after == 12 * GIB
    table = next(a for a in plan.actions if a.kind == "partition-table")
    assert [e.number for e in table.params.partitions] == [1, 2, 5, 6]  # type: ignore[union-attr]


def test_mbr_cannot_reach_past_two_tib_with_512_byte_sectors() -> None:
    desc, *_ = _mbr()
    plan = plan_for(desc, actual("vdb", 4 * 1024 * GIB))
    assert plan.ok
    lay = plan.layouts[0]
    assert lay.last_lba == (1 << 32) - 1
    assert all(p.start + p.size <= 1 << 32 for p in lay.partitions)


# ---------------------------------------------------------------- LVM


def _lvm(root_used: int = 2 * GIB, home_used: int = GIB) -> tuple:  # type: ignore[type-arg]
    d = disk("sda", 20 * GIB)
    p1 = part(d, 1, MIB, GIB)
    p2 = part(d, 2, MIB + GIB, 19 * GIB - 2 * MIB, LVM)
    ext = 4 * MIB
    vg = VolumeGroup("vg.vg0", "vg0", "vg-uuid", ext, 19 * GIB - 4 * MIB)
    pv = PhysicalVolume("pv.sda2", p2.id, "pv-uuid", vg.id, p2.size * 512)
    root = LogicalVolume("lv.vg0.root", vg.id, "root", "lv-root", 8 * GIB, LvType.LINEAR)
    home = LogicalVolume("lv.vg0.home", vg.id, "home", "lv-home", 8 * GIB, LvType.LINEAR)
    sw = LogicalVolume("lv.vg0.swap", vg.id, "swap", "lv-swap", GIB, LvType.LINEAR)
    desc = description(
        disks=[d],
        partitions=[p1, p2],
        volume_groups=[vg],
        physical_volumes=[pv],
        logical_volumes=[root, home, sw],
        filesystems=[
            ext4(p1.id, "/boot", 50 * MIB),
            ext4(root.id, "/", root_used, fid="fs.dm-0"),
            ext4(home.id, "/home", home_used, fid="fs.dm-1"),
        ],
        swaps=[swap(sw.id, GIB)],
    )
    return desc, vg, root, home, sw


def test_lvm_grow_gives_the_extra_to_the_root_lv() -> None:
    desc, vg, root, home, sw = _lvm()
    plan = plan_for(desc, actual("vdb", 30 * GIB))
    assert plan.ok, plan.failures
    vols = {v.id: v for v in plan.volumes}
    assert vols[vg.id].after - vols[vg.id].before == 10 * GIB
    assert vols[root.id].after == 18 * GIB
    assert vols[home.id].after == 8 * GIB
    assert vols[sw.id].after == GIB
    lv = next(a for a in plan.actions if a.id == "lv-create:lv.vg0.root")
    assert lv.params.extents == 18 * GIB // (4 * MIB)  # type: ignore[union-attr]
    assert lv.params.device == "/dev/mapper/vg0-root"  # type: ignore[union-attr]


def test_lvm_shrink_keeps_each_lv_above_its_data() -> None:
    desc, vg, root, home, sw = _lvm(root_used=2 * GIB, home_used=GIB)
    plan = plan_for(desc, actual("vdb", 10 * GIB))
    assert plan.ok, plan.failures
    vols = {v.id: v for v in plan.volumes}
    assert vols[root.id].after >= 2 * GIB + 2 * GIB // 10 + 64 * MIB
    assert vols[home.id].after >= GIB + GIB // 10 + 64 * MIB
    assert vols[sw.id].after == GIB
    total = vols[root.id].after + vols[home.id].after + vols[sw.id].after
    assert total <= vols[vg.id].after
    assert vols[root.id].after % (4 * MIB) == 0


def test_lvm_shrink_refused_when_the_lvs_data_cannot_fit() -> None:
    desc, *_ = _lvm(root_used=6 * GIB, home_used=5 * GIB)
    plan = plan_for(desc, actual("vdb", 10 * GIB))
    assert checks(plan) == [Check.TARGET_TOO_SMALL]


# ---------------------------------------------------------------- whole disk, md, LUKS


def test_whole_disk_filesystem_takes_the_whole_target() -> None:
    d = disk("sdb", 10 * GIB, label=None)
    fs = other_fs(
        d.id,
        FsType.XFS,
        "/data",
        4 * GIB,
        xfs=XfsOptions(block_size=4096, sector_size=512, inode_size=512, crc=True),
    )
    desc = description(disks=[d], filesystems=[fs])
    plan = plan_for(desc, actual("vdc", 16 * GIB))
    assert plan.ok, plan.failures
    assert plan.layouts[0].label is None
    assert [a.kind for a in plan.actions] == ["wipe", "mkfs", "mount"]
    mkfs = plan.actions[1]
    assert mkfs.params.device == "/dev/vdc" and mkfs.after == 16 * GIB  # type: ignore[union-attr]
    assert "agcount" not in " ".join(mkfs.params.options)  # type: ignore[union-attr]
    small = plan_for(desc, actual("vdc", 4 * GIB))
    assert checks(small) == [Check.TARGET_TOO_SMALL]


def test_md_raid1_follows_its_smallest_member_and_luks_takes_its_header() -> None:
    a, b = disk("sda", 10 * GIB), disk("sdb", 10 * GIB)
    pa, pb = part(a, 1, MIB, 9 * GIB, RAID), part(b, 1, MIB, 9 * GIB, RAID)
    md = RaidArray(
        "md.md0", "/dev/md0", "raid1", "1.2", "md-uuid", (pa.id, pb.id), 9 * GIB - 8 * MIB
    )
    lk = LuksVolume("luks.md0", md.id, 2, "luks-uuid", "aes-xts-plain64", 512, name="cryptroot")
    fs = ext4(lk.id, "/", GIB, fid="fs.dm-0")
    desc = description(
        disks=[a, b], partitions=[pa, pb], raid_arrays=[md], luks_volumes=[lk], filesystems=[fs]
    )
    plan = plan_for(
        desc,
        actual("vdb", 20 * GIB, wwn=None),
        actual("vdc", 12 * GIB),
        maps=(("disk.sda", "vdb"), ("disk.sdb", "vdc")),
        interactive=True,
    )
    assert plan.ok, plan.failures
    vols = {v.id: v for v in plan.volumes}
    small_member = parts(plan, "disk.sdb")["part.sdb1"].after
    assert small_member == 11 * GIB  # grown by 2 GiB; the saved free tail of ~1 GiB is kept
    assert vols[md.id].after <= small_member - MIB
    assert vols[md.id].after > small_member - 130 * MIB
    assert vols[lk.id].after == vols[md.id].after - 16 * MIB
    assert vols[fs.id].after == vols[lk.id].after
    kinds = [a.kind for a in plan.actions]
    assert kinds.index("md-create") < kinds.index("luks-format") < kinds.index("luks-open")
    assert kinds.index("luks-open") < kinds.index("mkfs")
    mdc = next(x for x in plan.actions if x.kind == "md-create")
    assert mdc.params.members == ("/dev/vdb1", "/dev/vdc1")  # type: ignore[union-attr]
    assert mdc.writes == ("/dev/vdb", "/dev/vdc")


def test_md_data_offset_as_mdadm_chooses_it() -> None:
    # Seen in the vm tier: mdadm 4.2 made a 254 MiB raid1 (1.2) of two 255 MiB partitions.
    assert sizes.md_data_offset("1.2", 255 * MIB) == MIB
    # A striped array keeps two chunks of headroom: 512 KiB chunks, 1 MiB more.
    assert sizes.md_data_offset("1.2", 255 * MIB, 512 * KIB) == 2 * MIB
    assert sizes.md_data_offset("1.2", 255 * MIB, 64 * KIB) == MIB
    # Large members: ~0.1 % headroom, whatever the chunk.
    assert sizes.md_data_offset("1.2", 11 * GIB) == 9 * MIB
    assert sizes.md_data_offset("1.2", 11 * GIB, 512 * KIB) == 9 * MIB
    # Metadata at the end: nothing before the data to speak of.
    assert sizes.md_data_offset("1.0", 255 * MIB) < MIB


def test_small_raid1_on_disks_alike_keeps_its_size() -> None:
    a, b = (disk(n, 256 * MIB, label=TableLabel.DOS) for n in ("vdc", "vdd"))
    pa, pb = part(a, 1, MIB, 255 * MIB, "fd"), part(b, 1, MIB, 255 * MIB, "fd")
    md = RaidArray(
        "md.md127", "/dev/md127", "raid1", "1.2", "md-uuid", (pa.id, pb.id), 254 * MIB
    )
    lk = LuksVolume("luks.md127", md.id, 2, "luks-uuid", "aes-xts-plain64", 512, name="crypt")
    fs = ext4(lk.id, "/srv/data", 8 * MIB, fid="fs.dm-0")
    desc = description(
        disks=[a, b], partitions=[pa, pb], raid_arrays=[md], luks_volumes=[lk], filesystems=[fs]
    )
    plan = plan_for(
        desc, actual("nvme1n1", 256 * MIB), actual("nvme2n1", 256 * MIB), interactive=True
    )
    assert plan.ok, plan.failures
    vols = {v.id: v for v in plan.volumes}
    assert vols[md.id].after == vols[md.id].before == 254 * MIB
    assert vols[lk.id].after == 254 * MIB - 16 * MIB


def test_bios_boot_partition_keeps_its_size() -> None:
    d = disk("sda", 10 * GIB)
    p1 = part(d, 1, MIB, MIB, BIOS)
    p2 = part(d, 2, 2 * MIB, 10 * GIB - 4 * MIB)
    desc = description(disks=[d], partitions=[p1, p2], filesystems=[ext4(p2.id, "/", GIB)])
    plan = plan_for(desc, actual("vdb", 40 * GIB))
    got = parts(plan)
    assert got[p1.id].after == MIB and got[p1.id].fixed
    assert got[p2.id].after > 39 * GIB


def test_unsupported_filesystem_keeps_its_partition_and_is_not_recreated() -> None:
    d = disk("sda", 10 * GIB)
    p1 = part(d, 1, MIB, 2 * GIB, LINUX)
    p2 = part(d, 2, MIB + 2 * GIB, 7 * GIB)
    ntfs = Filesystem(
        id="fs.sda1",
        device=p1.id,
        type=FsType.OTHER,
        type_name="ntfs",
        supported=False,
        mounts=(Mount("/win"),),
    )
    desc = description(disks=[d], partitions=[p1, p2], filesystems=[ntfs, ext4(p2.id, "/", GIB)])
    plan = plan_for(desc, actual("vdb", 20 * GIB))
    assert plan.ok
    assert parts(plan)[p1.id].after == 2 * GIB
    assert not any(a.id == "mkfs:fs.sda1" for a in plan.actions)
    assert any("ntfs" in w for w in plan.warnings)


def test_filesystem_on_a_device_resurgo_cannot_make_is_a_warning() -> None:
    d = disk("sda", 10 * GIB)
    p1 = part(d, 1, MIB, 9 * GIB)
    odd = Unsupported("unsupported.dm-3", "dm", "/dev/dm-3", "dm-integrity is not recreated")
    desc = description(
        disks=[d],
        partitions=[p1],
        filesystems=[ext4(p1.id, "/", GIB), ext4(odd.id, "/odd", GIB, fid="fs.dm-3")],
        unsupported=[odd],
    )
    plan = plan_for(desc, actual("vdb", 10 * GIB))
    assert plan.ok, plan.failures
    assert not any("fs.dm-3" in a.id for a in plan.actions)
    assert any(w.startswith("fs.dm-3 (/odd) is not recreated") for w in plan.warnings)
