"""The action list: order, parameters, tool and key preconditions, the sfdisk script, the hash."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from resurgo.model import (
    BtrfsOptions,
    FsType,
    LogicalVolume,
    LvType,
    Mount,
    PartitionKind,
    PhysicalVolume,
    Subvolume,
    TableLabel,
    VolumeGroup,
)
from resurgo.plan import make_plan
from resurgo.plan.actions import sfdisk_script
from resurgo.plan.model import ActionKind, Check, Plan, PlanOptions, TableParams
from resurgo.plan.render import bar, canonical, text, to_data
from tests.support.builders import (
    LUKS_UUID,
    actual,
    description,
    disk,
    ext4,
    luks_fixture,
    other_fs,
    part,
    standard,
)
from tests.support.consts import GIB, LVM, MIB

OPTS = PlanOptions(which=lambda p: f"/usr/sbin/{p}")


def plan_for(desc, disks, **opts) -> Plan:  # type: ignore[no-untyped-def]
    return make_plan(desc, disks, replace(OPTS, **opts))


def assert_dependency_order(plan: Plan) -> None:
    seen: set[str] = set()
    ids = {a.id for a in plan.actions}
    for a in plan.actions:
        for dep in a.depends_on:
            assert dep in ids, f"{a.id} depends on unknown {dep}"
            assert dep in seen, f"{a.id} comes before {dep}"
        seen.add(a.id)


def test_luks_lvm_chain_in_order() -> None:
    plan = plan_for(luks_fixture(), [actual("vdb", 20 * GIB)], keys=frozenset({"luks.sda2"}))
    assert plan.ok, plan.failures
    assert_dependency_order(plan)
    assert [a.id for a in plan.actions] == [
        "wipe:disk.sda",
        "partition-table:disk.sda",
        "luks-format:luks.sda2",
        "luks-open:luks.sda2",
        "pv-create:pv.dm-0",
        "vg-create:vg.vg-sys",
        "lv-create:lv.vg-sys.root",
        "lv-create:lv.vg-sys.swap_1",
        "mkfs:fs.dm-1",
        "mkfs:fs.sda1",
        "mkswap:swap.vg-sys.swap_1",
        "mount:fs.dm-1:/",
        "mount:fs.sda1:/boot",
    ]
    by_id = {a.id: a for a in plan.actions}
    fmt = by_id["luks-format:luks.sda2"].params
    assert fmt.device == "/dev/vdb2" and fmt.version == 2 and fmt.uuid == LUKS_UUID  # type: ignore[union-attr]
    assert by_id["luks-open:luks.sda2"].params.mapped == "/dev/mapper/sda2_crypt"  # type: ignore[union-attr]
    assert by_id["pv-create:pv.dm-0"].params.device == "/dev/mapper/sda2_crypt"  # type: ignore[union-attr]
    lv = by_id["lv-create:lv.vg-sys.root"].params
    assert lv.device == "/dev/mapper/vg--sys-root"  # type: ignore[union-attr]
    assert by_id["mkfs:fs.dm-1"].params.device == "/dev/mapper/vg--sys-root"  # type: ignore[union-attr]
    mount = by_id["mount:fs.sda1:/boot"]
    assert "mount:fs.dm-1:/" in mount.depends_on
    assert mount.params.target == "/mnt/resurgo/boot"  # type: ignore[union-attr]
    for a in plan.actions:
        assert a.writes == ("/dev/vdb",)


def test_luks_key_precondition() -> None:
    desc = luks_fixture()
    plan = plan_for(desc, [actual("vdb", 20 * GIB)], keys=frozenset(), interactive=False)
    assert [f.check for f in plan.failures] == [Check.KEY_MISSING]
    assert "--key-file luks.sda2=" in (plan.failures[0].hint or "")
    assert plan_for(desc, [actual("vdb", 20 * GIB)], interactive=True).ok


def test_missing_tools_are_all_listed() -> None:
    have = {"wipefs", "sfdisk", "partx", "mount"}
    plan = plan_for(
        luks_fixture(),
        [actual("vdb", 20 * GIB)],
        interactive=True,
        which=lambda p: p if p in have else None,
    )
    missing = sorted(f.subject for f in plan.failures if f.check == Check.TOOL_MISSING)
    assert missing == ["cryptsetup", "lvm", "mkfs.ext4", "mkswap"]
    hint = next(f.hint for f in plan.failures if f.subject == "lvm")
    assert hint == ("install it: apt-get install lvm2 (Debian, Ubuntu); "
                    "dnf install lvm2 (Fedora, RHEL)")


def test_all_failures_are_listed_not_just_the_first() -> None:
    disks = [actual("vdb", 2 * GIB, mounted=("vdb1 on /media",))]
    plan = plan_for(
        luks_fixture(), disks, targets=("vdb", "/dev/nope"), which=lambda p: None, interactive=False
    )
    got = {f.check for f in plan.failures}
    assert {Check.TARGET_MISSING, Check.TARGET_TOO_SMALL, Check.TARGET_IN_USE} <= got


def test_btrfs_subvolumes_default_and_mounts() -> None:
    d = disk("sda", 20 * GIB)
    p1 = part(d, 1, MIB, 19 * GIB)
    fs = other_fs(
        p1.id,
        FsType.BTRFS,
        None,
        2 * GIB,
        btrfs=BtrfsOptions(
            node_size=16384,
            sector_size=4096,
            data_profile="single",
            metadata_profile="dup",
            default_subvolume=256,
        ),
    )
    root_sv = Subvolume("subvol.sda1.256", fs.id, "@", 256)
    home_sv = Subvolume("subvol.sda1.257", fs.id, "@home", 257)
    snap_sv = Subvolume("subvol.sda1.258", fs.id, "@/.snapshots", 258, parent_id=256)
    fs = replace(
        fs, mounts=(Mount("/", subvolume=root_sv.id), Mount("/home", subvolume=home_sv.id))
    )
    desc = description(
        disks=[d], partitions=[p1], filesystems=[fs], subvolumes=[root_sv, home_sv, snap_sv]
    )
    plan = plan_for(desc, [actual("vdb", 20 * GIB)])
    assert plan.ok, plan.failures
    assert_dependency_order(plan)
    by_id = {a.id: a for a in plan.actions}
    mkfs = by_id["mkfs:fs.sda1"].params
    assert mkfs.program == "mkfs.btrfs"  # type: ignore[union-attr]
    assert tuple(mkfs.options[mkfs.options.index("-m") :][:2]) == ("-m", "dup")  # type: ignore[union-attr]
    snap = by_id["subvolume-create:subvol.sda1.258"]
    assert "subvolume-create:subvol.sda1.256" in snap.depends_on
    assert by_id["subvolume-default:fs.sda1"].params.path == "@"  # type: ignore[union-attr]
    home = by_id["mount:fs.sda1:/home"]
    assert home.params.options == ("subvol=@home",)  # type: ignore[union-attr]
    assert "mount:fs.sda1:/" in home.depends_on


def test_multi_device_btrfs_profile_is_a_filesystem_failure() -> None:
    d = disk("sda", 20 * GIB)
    p1 = part(d, 1, MIB, 19 * GIB)
    fs = other_fs(p1.id, FsType.BTRFS, "/", GIB, btrfs=BtrfsOptions(data_profile="raid1"))
    plan = plan_for(
        description(disks=[d], partitions=[p1], filesystems=[fs]), [actual("vdb", 20 * GIB)]
    )
    assert [f.check for f in plan.failures] == [Check.FILESYSTEM]


def test_ext_mkfs_options_carry_uuid_label_and_features() -> None:
    plan = plan_for(standard(), [actual("vdb", 20 * GIB)])
    mkfs = next(a for a in plan.actions if a.id == "mkfs:fs.sda3").params
    fs = next(f for f in standard().filesystems if f.id == "fs.sda3")
    opts = mkfs.options  # type: ignore[union-attr]
    assert opts[opts.index("-U") + 1] == fs.uuid
    assert opts[opts.index("-L") + 1] == fs.label
    assert opts[opts.index("-O") + 1] == "none,has_journal,extent"
    assert opts[opts.index("-b") + 1] == "4096"


def test_same_input_gives_the_same_hash_and_a_change_another() -> None:
    a = plan_for(standard(), [actual("vdb", 30 * GIB)])
    b = plan_for(standard(), [actual("vdb", 30 * GIB)])
    assert a.hash == b.hash and a.hash.startswith("sha256:") and len(a.hash) == 71
    assert canonical(a.actions, a.matches) == canonical(b.actions, b.matches)
    bigger = plan_for(standard(), [actual("vdb", 31 * GIB)])
    assert bigger.hash != a.hash
    other_serial = plan_for(standard(), [actual("vdb", 30 * GIB, serial="X")])
    assert other_serial.hash != a.hash
    # The description's timestamp is not part of what is written.
    later = replace(standard(), format=replace(standard().format, created="2030-01-01T00:00:00Z"))
    assert plan_for(later, [actual("vdb", 30 * GIB)]).hash == a.hash


def test_the_hash_of_a_known_plan_is_pinned() -> None:
    # `recover --plan-hash H` approves a plan computed again later, maybe by another
    # version: refactoring must leave the hash of the same plan as it is.
    plan = plan_for(standard(), [actual("vdb", 30 * GIB)])
    assert plan.hash == "sha256:c46dc6fa6e21b9182c477e2e71e0b3f759ee2c361a8d38ce47e8cd40f2fb4bd8"
    lvm = plan_for(luks_fixture(), [actual("vdb", 30 * GIB)], keys=frozenset({"luks.sda2"}))
    assert lvm.hash == "sha256:241fb6638648f98c2b2c30d8292aecaa5a5c300d73a5e8683fcf190103a63113"


def test_json_and_text() -> None:
    plan = plan_for(standard(), [actual("vdb", 30 * GIB)])
    data = to_data(plan)
    assert list(data)[-1] == "hash"
    json.dumps(data)
    assert data["ok"] is True
    assert data["layouts"][0]["partitions"][2]["change"] == "grow"
    assert data["actions"][1]["params"]["partitions"][0]["start"] == 2048
    out = text(plan)
    assert out.rstrip().splitlines()[-1] == f"plan hash: {plan.hash}"
    assert "part.sda3" in out and "grow" in out
    line = bar(plan.layouts[0])
    assert len(line) == 62 and line.startswith("[EF") and "root" in line and line.endswith("swap]")


def test_bar_shows_free_space_and_scales() -> None:
    plan = plan_for(standard(), [actual("vdb", 20 * GIB)])
    lay = plan.layouts[0]
    half = replace(lay, size=lay.size * 2)
    line = bar(half)
    assert len(line) == 62
    assert line.rstrip("]").endswith("." * 20)


# ---------------------------------------------------------------- the sfdisk script, for real


def _sfdisk_roundtrip(tmp_path: Path, params: TableParams, size: int) -> dict:  # type: ignore[type-arg]
    img = tmp_path / "disk.img"
    with open(img, "wb") as f:
        f.truncate(size)
    script = sfdisk_script(params).replace(params.device, str(img))
    subprocess.run(
        ["sfdisk", "--no-reread", "--no-tell-kernel", "-q", str(img)],
        input=script,
        text=True,
        check=True,
        capture_output=True,
    )
    out = subprocess.run(["sfdisk", "--json", str(img)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)["partitiontable"]  # type: ignore[no-any-return]


needs_sfdisk = pytest.mark.skipif(shutil.which("sfdisk") is None, reason="needs sfdisk")


@needs_sfdisk
@pytest.mark.parametrize("size", [20 * GIB, 31 * GIB, 9 * GIB])
def test_sfdisk_accepts_the_gpt_table(tmp_path: Path, size: int) -> None:
    plan = plan_for(standard(), [actual("vdb", size)])
    table = next(a for a in plan.actions if a.kind == ActionKind.PARTITION_TABLE).params
    assert isinstance(table, TableParams)
    got = _sfdisk_roundtrip(tmp_path, table, size)
    assert got["label"] == "gpt"
    assert got["id"].lower() == table.id
    assert got["lastlba"] == table.last_lba
    assert [(p["start"], p["size"]) for p in got["partitions"]] == [
        (e.start, e.size) for e in table.partitions
    ]
    assert [p["uuid"].lower() for p in got["partitions"]] == [e.uuid for e in table.partitions]


@needs_sfdisk
def test_sfdisk_accepts_the_mbr_table_with_logicals(tmp_path: Path) -> None:
    d = disk("sda", 10 * GIB, label=TableLabel.DOS)
    p1 = part(d, 1, MIB, 512 * MIB, "83")
    p2 = part(d, 2, 513 * MIB, 10 * GIB - 514 * MIB, "5", PartitionKind.EXTENDED)
    p5 = part(d, 5, 514 * MIB, 6 * GIB, "83", PartitionKind.LOGICAL)
    p6 = part(d, 6, 515 * MIB + 6 * GIB, 2 * GIB, "8e", PartitionKind.LOGICAL)
    p1 = replace(p1, bootable=True)
    desc = description(
        disks=[d],
        partitions=[p1, p2, p5, p6],
        filesystems=[
            ext4(p1.id, "/boot", 50 * MIB),
            ext4(p5.id, "/", GIB),
            ext4(p6.id, "/srv", GIB),
        ],
    )
    plan = plan_for(desc, [actual("vdb", 14 * GIB)])
    assert plan.ok, plan.failures
    table = next(a for a in plan.actions if a.kind == ActionKind.PARTITION_TABLE).params
    assert isinstance(table, TableParams)
    got = _sfdisk_roundtrip(tmp_path, table, 14 * GIB)
    assert got["id"] == "0x1234abcd"
    rows = [
        (int(p["node"].rsplit("img", 1)[1]), p["start"], p["size"], p["type"])
        for p in got["partitions"]
    ]
    assert rows == [(e.number, e.start, e.size, e.type) for e in table.partitions]
    assert got["partitions"][0].get("bootable") is True


def test_lvm_partition_type_is_kept() -> None:
    d = disk("sda", 10 * GIB)
    p1 = part(d, 1, MIB, 9 * GIB, LVM)
    vg = VolumeGroup("vg.v", "v", "u", 4 * MIB, 9 * GIB - 4 * MIB)
    pv = PhysicalVolume("pv.sda1", p1.id, "pu", vg.id, 9 * GIB)
    lv = LogicalVolume("lv.v.r", vg.id, "r", "lu", 4 * GIB, LvType.LINEAR)
    desc = description(
        disks=[d],
        partitions=[p1],
        volume_groups=[vg],
        physical_volumes=[pv],
        logical_volumes=[lv],
        filesystems=[ext4(lv.id, "/", GIB, fid="fs.dm-0")],
    )
    plan = plan_for(desc, [actual("vdb", 10 * GIB)])
    table = next(a for a in plan.actions if a.kind == ActionKind.PARTITION_TABLE).params
    assert table.partitions[0].type == LVM  # type: ignore[union-attr]
    vols = {v.id: v for v in plan.volumes}
    assert vols["lv.v.r"].after == 4 * GIB  # the group's saved free space stays free
    bigger = {v.id: v for v in plan_for(desc, [actual("vdb", 20 * GIB)]).volumes}
    assert bigger["lv.v.r"].after == 14 * GIB  # the 10 GiB more go to the system volume
