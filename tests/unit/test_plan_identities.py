"""The planner and the old disks still attached: every saved identity seen on a disk the
recovery leaves alone is kept, made anew or refused before anything is written, the plan
shows each, and finalize's preview rewrites what names the new ones."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from resurgo.cli.plan import machine_identity
from resurgo.finalize import identity, preview
from resurgo.machine import ActualDisk, SeenIdentity, SeenKind
from resurgo.model import (
    BtrfsOptions,
    ConfigFile,
    Description,
    FsType,
    PhysicalVolume,
    RaidArray,
    TableLabel,
    VolumeGroup,
    XfsOptions,
)
from resurgo.plan import identities, make_plan
from resurgo.plan.model import (
    Check,
    IdentityKind,
    LuksFormatParams,
    MdParams,
    MkfsParams,
    MkswapParams,
    MountParams,
    Plan,
    PlanOptions,
    PvParams,
    TableParams,
)
from resurgo.plan.render import text, to_data
from tests.support.builders import (
    actual,
    description,
    disk,
    esp,
    ext4,
    luks_fixture,
    other_fs,
    part,
    swap,
)
from tests.support.consts import ESP, GIB, MIB, RAID, SWAP

OPTS = PlanOptions(which=lambda p: f"/usr/sbin/{p}")
BTRFS_UUID = "44444444-5555-4666-8777-888888888888"
XFS_UUID = "22222222-3333-4444-8555-666666666666"


def system() -> Description:
    """ESP, ext4 /boot, btrfs /, xfs /srv, swap on one GPT disk."""
    d = disk("sda", 20 * GIB)
    p1 = part(d, 1, MIB, 256 * MIB, ESP)
    p2 = part(d, 2, 257 * MIB, GIB)
    p3 = part(d, 3, 1281 * MIB, 8 * GIB)
    p4 = part(d, 4, 1281 * MIB + 8 * GIB, 4 * GIB)
    p5 = part(d, 5, 1281 * MIB + 12 * GIB, 2 * GIB, SWAP)
    root = dataclasses.replace(
        other_fs(p3.id, FsType.BTRFS, "/", GIB, btrfs=BtrfsOptions(sector_size=4096)),
        uuid=BTRFS_UUID)
    srv = other_fs(p4.id, FsType.XFS, "/srv", GIB,
                   xfs=XfsOptions(block_size=4096, sector_size=512, inode_size=512, crc=True))
    boot = ext4(p2.id, "/boot", 100 * MIB)
    fstab = (f"UUID={BTRFS_UUID} / btrfs defaults 0 0\n"
             f"UUID={boot.uuid} /boot ext4 defaults 0 2\n"
             f"UUID={XFS_UUID} /srv xfs defaults 0 2\n"
             "UUID=ABCD-1234 /boot/efi vfat umask=0077 0 1\n"
             f"UUID={swap(p5.id, 0).uuid} none swap sw 0 0\n")
    return description(
        disks=[d], partitions=[p1, p2, p3, p4, p5],
        filesystems=[esp(p1.id), boot, root, srv], swaps=[swap(p5.id, 2 * GIB)],
        config_files=[ConfigFile("cfg.fstab", "/etc/fstab", fstab)])


def seen(kind: SeenKind, value: str, device: str, fs_type: str = "") -> SeenIdentity:
    return SeenIdentity(kind, value, device, fs_type)


def old_disk(desc: Description, name: str = "sdz") -> ActualDisk:
    """The source disk itself, still attached: every identity it had when saved."""
    found: list[SeenIdentity] = []
    for d in desc.disks:
        if d.table is not None:
            found.append(seen(SeenKind.TABLE, d.table.id, f"/dev/{name}", "gpt"))
    for n, p in enumerate(desc.partitions, 1):
        found.append(seen(SeenKind.PARTITION, p.uuid or "", f"/dev/{name}{n}"))
    fs_dev = {p.id: f"/dev/{name}{n}" for n, p in enumerate(desc.partitions, 1)}
    for fs in desc.filesystems:
        value = fs.vfat.volume_id if fs.vfat else fs.uuid
        found.append(seen(SeenKind.FILESYSTEM, value or "", fs_dev.get(fs.device, "?"),
                          str(fs.type)))
    for sw in desc.swaps:
        found.append(seen(SeenKind.SWAP, sw.uuid or "", fs_dev.get(sw.device or "", "?"),
                          "swap"))
    return actual(name, 20 * GIB, identities=tuple(found))


def plan_of(desc: Description, *disks: ActualDisk, **opts: object) -> Plan:
    return make_plan(desc, list(disks), dataclasses.replace(OPTS, **opts))


def params(plan: Plan, kind: type) -> list:  # type: ignore[type-arg]
    return [a.params for a in plan.actions if isinstance(a.params, kind)]


def decision(plan: Plan, record: str):  # type: ignore[no-untyped-def]
    [d] = [d for d in plan.identities if d.record == record]
    return d


def test_nothing_seen_elsewhere_keeps_every_identity_and_says_nothing() -> None:
    desc = system()
    plan = plan_of(desc, actual("vdb", 20 * GIB, transport="virtio"), targets=("/dev/vdb",))
    assert plan.ok, plan.failures
    assert plan.identities == ()
    assert "identities" not in text(plan)
    mkfs = {p.filesystem: p for p in params(plan, MkfsParams)}
    assert mkfs["fs.sda3"].uuid == BTRFS_UUID
    assert "nouuid" not in params(plan, MountParams)[0].options


def test_old_disk_attached_btrfs_made_anew_xfs_kept_with_nouuid_the_rest_kept() -> None:
    desc = system()
    old = old_disk(desc)
    target = actual("vdb", 20 * GIB)
    plan = plan_of(desc, target, old, targets=("/dev/vdb",))
    assert plan.ok, plan.failures
    assert plan.matches[0].path == "/dev/vdb"

    btrfs = decision(plan, "fs.sda3")
    assert not btrfs.kept and btrfs.seen_on == ("/dev/sdz3",)
    assert "mkfs.btrfs refuses" in btrfs.why
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}",
                        btrfs.new)
    mkfs = {p.filesystem: p for p in params(plan, MkfsParams)}
    assert mkfs["fs.sda3"].uuid == btrfs.new
    assert mkfs["fs.sda3"].options[mkfs["fs.sda3"].options.index("-U") + 1] == btrfs.new

    xfs = decision(plan, "fs.sda4")
    assert xfs.kept and "nouuid" in xfs.why
    assert f"uuid={XFS_UUID}" in ",".join(mkfs["fs.sda4"].options)
    mounts = {p.filesystem: p for p in params(plan, MountParams)}
    assert mounts["fs.sda4"].options == ("nouuid",)
    assert "nouuid" not in mounts["fs.sda2"].options

    for record in ("fs.sda1", "fs.sda2", "swap.sda5", "part.sda1", "disk.sda"):
        assert decision(plan, record).kept, record
    [sw] = params(plan, MkswapParams)
    assert sw.uuid == swap("part.sda5", 0).uuid
    # One warning for the identities kept although the old disk shows them.
    [kept] = [w for w in plan.warnings if "do not boot the restored system" in w]
    assert kept.startswith("10 saved identities are kept although disks left alone show "
                           "them too (/dev/sdz, /dev/sdz1, /dev/sdz2, ")
    assert "fs.sda4 (xfs on /srv)" in kept and "fs.sda3" not in kept
    shown = text(plan)
    assert "identities (saved ones seen on disks left alone" in shown
    assert f"fs.sda3 filesystem: {BTRFS_UUID} -> {btrfs.new}" in shown
    assert f"fs.sda4 filesystem: {XFS_UUID} kept" in shown
    data = to_data(plan)
    assert {d["record"]: d["kept"] for d in data["identities"]}["fs.sda3"] is False

    # finalize's preview rewrites the fstab line naming the btrfs, and only that one.
    report = preview(desc, plan)
    [fstab] = [f for f in report.files if f.path == "/etc/fstab"]
    assert [(c.before, c.after) for c in fstab.changes] == [
        (f"UUID={BTRFS_UUID} / btrfs defaults 0 0",
         f"UUID={btrfs.new} / btrfs defaults 0 0")]


def test_new_values_are_the_same_each_time_and_differ_for_another_disk() -> None:
    desc = system()
    old = old_disk(desc)
    a = plan_of(desc, actual("vdb", 20 * GIB), old, targets=("/dev/vdb",))
    again = plan_of(desc, actual("vdb", 20 * GIB), old, targets=("/dev/vdb",))
    other = plan_of(desc, actual("vdc", 20 * GIB), old, targets=("/dev/vdc",))
    assert a.hash == again.hash
    assert decision(a, "fs.sda3").new == decision(again, "fs.sda3").new
    assert decision(a, "fs.sda3").new != decision(other, "fs.sda3").new


def test_identities_on_the_target_itself_are_no_collision() -> None:
    desc = system()
    # The target is the old disk (a rehearsal onto the disk that is recovered): wiped first.
    plan = plan_of(desc, old_disk(desc, "vdb"), targets=("/dev/vdb",))
    assert plan.ok, plan.failures
    assert plan.identities == ()


def test_new_identities_gives_every_one_anew_and_finalize_rewrites_fstab() -> None:
    desc = system()
    plan = plan_of(desc, actual("vdb", 20 * GIB), new_identities=True)
    assert plan.ok, plan.failures
    kinds = {(d.kind, d.record) for d in plan.identities}
    assert kinds == {
        (IdentityKind.TABLE, "disk.sda"),
        *((IdentityKind.PARTITION, f"part.sda{n}") for n in range(1, 6)),
        *((IdentityKind.FILESYSTEM, f"fs.sda{n}") for n in range(1, 5)),
        (IdentityKind.SWAP, "swap.sda5"),
    }
    assert all(not d.kept and d.why == "new: --new-identities" and d.seen_on == ()
               for d in plan.identities)
    esp_id = decision(plan, "fs.sda1").new
    assert re.fullmatch(r"[0-9A-F]{4}-[0-9A-F]{4}", esp_id)
    mkfs = {p.filesystem: p for p in params(plan, MkfsParams)}
    vfat = mkfs["fs.sda1"].options
    assert vfat[vfat.index("-i") + 1] == esp_id.replace("-", "")
    [table] = params(plan, TableParams)
    assert table.id == decision(plan, "disk.sda").new
    assert [e.uuid for e in table.partitions] == [
        decision(plan, f"part.sda{n}").new for n in range(1, 6)]
    # No xfs mounted with nouuid: its UUID is new.
    assert all("nouuid" not in m.options for m in params(plan, MountParams))

    ids = identity.planned(desc, plan)
    root = ids.by_record("fs.sda3")
    assert root is not None and root.new_uuid == decision(plan, "fs.sda3").new
    [fstab] = [f for f in preview(desc, plan).files if f.path == "/etc/fstab"]
    assert len(fstab.changes) == 5  # every line names a UUID made anew


def test_new_identities_differ_from_machine_to_machine_and_stay_on_one() -> None:
    """Two machines whose disks look alike (no serial, same size and path) recovering one
    set get different new identities; one machine the same ones each time."""
    desc = system()
    disk = actual("vdb", 20 * GIB)

    def new_values(machine: str) -> dict[str, str]:
        plan = plan_of(desc, disk, new_identities=True, machine=machine)
        assert plan.ok, plan.failures
        return {d.record: d.new for d in plan.identities}

    one = new_values("4c4c4544-0042-3510-8052-b4c04f395631")
    other = new_values("4c4c4544-0042-3510-8052-b4c04f395632")
    assert one == new_values("4c4c4544-0042-3510-8052-b4c04f395631")
    assert set(one) == set(other) and all(one[r] != other[r] for r in one)
    assert new_values("") != one  # without DMI: from the disks alone, as before


def test_the_machines_identity_is_its_dmi_uuid_when_it_is_one(tmp_path: Path) -> None:
    uuid_file = tmp_path / "product_uuid"
    uuid_file.write_text("4C4C4544-0042-3510-8052-B4C04F395631\n")
    assert machine_identity(uuid_file) == "4c4c4544-0042-3510-8052-b4c04f395631"
    for shared in ("00000000-0000-0000-0000-000000000000",
                   "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF", "Not Settable", ""):
        uuid_file.write_text(shared + "\n")
        assert machine_identity(uuid_file) == "", shared
    assert machine_identity(tmp_path / "missing") == ""


def lvm_md_system() -> Description:
    """/boot on an md RAID1 of two disks, then LUKS -> LVM on the first (luks_fixture's)."""
    base = luks_fixture()
    d2 = disk("sdb", 20 * GIB)
    a = part(base.disks[0], 3, 19 * GIB, GIB - MIB, RAID)
    b = part(d2, 1, MIB, GIB - MIB, RAID)
    md = RaidArray("md.md0", "/dev/md0", "raid1", "1.2", "0a1b2c3d:4e5f6071:8293a4b5:c6d7e8f9",
                   (a.id, b.id), GIB - 2 * MIB, name="host:0")
    data = ext4(md.id, "/data", 10 * MIB, fid="fs.md0")
    parts = list(base.partitions)
    parts[1] = dataclasses.replace(parts[1], size=parts[1].size - 2 * GIB // 512)
    return dataclasses.replace(
        base, disks=(*base.disks, d2), partitions=(*parts, a, b), raid_arrays=(md,),
        filesystems=(*base.filesystems, data))


def test_lvm_and_md_on_the_old_disks_pv_and_md_anew_vg_name_kept() -> None:
    desc = lvm_md_system()
    pv: PhysicalVolume = desc.physical_volumes[0]
    vg: VolumeGroup = desc.volume_groups[0]
    md = desc.raid_arrays[0]
    old = actual("sdz", 20 * GIB, identities=(
        seen(SeenKind.PV, pv.uuid, "/dev/dm-5", "LVM2_member"),
        seen(SeenKind.VG, vg.name, "/dev/dm-5"),
        seen(SeenKind.MD, "0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9", "/dev/sdz3",
             "linux_raid_member"),
        seen(SeenKind.LUKS, desc.luks_volumes[0].uuid, "/dev/sdz2", "crypto_LUKS"),
    ))
    targets = (actual("vdb", 20 * GIB), actual("vdc", 20 * GIB))
    plan = plan_of(desc, *targets, old, targets=("/dev/vdb", "/dev/vdc"),
                   keys=frozenset({"luks.sda2"}))
    assert plan.ok, plan.failures

    pv_d = decision(plan, pv.id)
    assert not pv_d.kept and "two physical volumes of one UUID" in pv_d.why
    assert re.fullmatch(r"[A-Za-z0-9]{6}(-[A-Za-z0-9]{4}){5}-[A-Za-z0-9]{6}", pv_d.new)
    [pvp] = params(plan, PvParams)
    assert pvp.uuid == pv_d.new

    md_d = decision(plan, md.id)
    assert not md_d.kept and re.fullmatch(r"([0-9a-f]{8}:){3}[0-9a-f]{8}", md_d.new)
    [mdp] = params(plan, MdParams)
    assert mdp.uuid == md_d.new
    assert identity.planned(desc, plan).by_record(md.id).new_uuid == md_d.new  # type: ignore[union-attr]

    vg_d = decision(plan, vg.id)
    assert vg_d.kept and vg_d.kind == IdentityKind.VG and vg_d.seen_on == ("/dev/dm-5",)
    assert any("LVM will not activate vg-sys by name" in w for w in plan.warnings)

    luks_d = decision(plan, "luks.sda2")
    assert luks_d.kept
    [lk] = params(plan, LuksFormatParams)
    assert lk.uuid == desc.luks_volumes[0].uuid


@pytest.mark.parametrize(
    ("active", "subject", "words"),
    [
        (SeenIdentity(SeenKind.ACTIVE_VG, "vg-sys", "/dev/dm-1"), "vg.vg-sys",
         "a volume group named vg-sys is active on /dev/sdz"),
        (SeenIdentity(SeenKind.ACTIVE_DM, "sda2_crypt", "/dev/dm-0"), "luks.sda2",
         "/dev/mapper/sda2_crypt, the name luks.sda2 is opened as, is in use on /dev/sdz"),
        (SeenIdentity(SeenKind.ACTIVE_MD, "/dev/md0", "/dev/md0"), "md.md0",
         "/dev/md0, where md.md0 is created, is an array assembled from /dev/sdz"),
    ],
)
def test_a_name_in_use_on_a_disk_left_alone_is_a_failing_precondition(
    active: SeenIdentity, subject: str, words: str
) -> None:
    desc = lvm_md_system()
    old = actual("sdz", 20 * GIB, identities=(active,))
    targets = (actual("vdb", 20 * GIB), actual("vdc", 20 * GIB))
    plan = plan_of(desc, *targets, old, targets=("/dev/vdb", "/dev/vdc"),
                   keys=frozenset({"luks.sda2"}))
    assert [(f.check, f.subject) for f in plan.failures] == [(Check.IDENTITY_IN_USE, subject)]
    assert words in plan.failures[0].message
    assert plan.failures[0].hint


def test_derived_values_have_the_spelling_of_the_saved_ones() -> None:
    d = identities.derive
    assert re.fullmatch(r"0x[0-9a-f]{8}", d(IdentityKind.TABLE, "0x1234abcd", "s"))
    guid = "8A7D8C39-5C46-4C5F-9F1E-0A1B2C3D4E5F"
    assert re.fullmatch(r"[0-9A-F-]{36}", d(IdentityKind.TABLE, guid, "s"))
    assert re.fullmatch(r"[0-9a-f-]{36}", d(IdentityKind.MD, guid.lower(), "s"))
    assert d(IdentityKind.SWAP, "x", "one") != d(IdentityKind.SWAP, "x", "two")
    assert identities.norm(IdentityKind.MD, "0A1B2C3D:4e5f6071:8293a4b5:c6d7e8f9") == \
        identities.norm(SeenKind.MD, "0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9")


def test_lvm_disk_of_luks_fixture_unchanged_without_old_disks() -> None:
    # A control: the LVM/md system plans as before when nothing else is attached.
    desc = lvm_md_system()
    plan = plan_of(desc, actual("vdb", 20 * GIB), actual("vdc", 20 * GIB),
                   keys=frozenset({"luks.sda2"}))
    assert plan.ok, plan.failures
    assert plan.identities == ()
    assert [p.uuid for p in params(plan, PvParams)] == [desc.physical_volumes[0].uuid]


def test_new_identities_on_an_mbr_disk_rewrite_its_partuuids() -> None:
    d = disk("sda", 4 * GIB, label=TableLabel.DOS)
    p1 = dataclasses.replace(part(d, 1, MIB, GIB), uuid=None)
    p2 = dataclasses.replace(part(d, 2, MIB + GIB, 2 * GIB), uuid=None)
    fstab = ("PARTUUID=1234abcd-01 / ext4 defaults 0 1\n"
             "PARTUUID=1234abcd-02 /srv ext4 defaults 0 2\n")
    desc = description(disks=[d], partitions=[p1, p2],
                       filesystems=[ext4(p1.id, "/", GIB // 2), ext4(p2.id, "/srv", MIB)],
                       config_files=[ConfigFile("cfg.fstab", "/etc/fstab", fstab)])
    kept = plan_of(desc, actual("vdb", 4 * GIB))
    assert not [f for f in preview(desc, kept).files if f.path == "/etc/fstab" and f.changes]
    plan = plan_of(desc, actual("vdb", 4 * GIB), new_identities=True)
    new_id = decision(plan, "disk.sda").new
    assert re.fullmatch(r"0x[0-9a-f]{8}", new_id)
    [f] = [f for f in preview(desc, plan).files if f.path == "/etc/fstab"]
    assert [c.after.split()[0] for c in f.changes] == [
        f"PARTUUID={new_id[2:]}-01", f"PARTUUID={new_id[2:]}-02"]
