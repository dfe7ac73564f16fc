"""md, LUKS and LVM probes on real output recorded in a qemu guest (tests/data/guest/).

The host kernel has neither md nor device-mapper, so the stack cannot be built here:
the guest built it (tests/vm/fixtures_guest.sh) and recorded every tool's output and
its sysfs. The parsers are fed those files; the storage walk is fed the recorded sysfs
(rebuilt as a directory tree) and a runner that answers each command with what the
same command printed in the guest.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from resurgo import run
from resurgo.errors import BadInput, CommandFailed, OperationFailed
from resurgo.fileformat import check_bytes, dumps, rules
from resurgo.fileformat.version import FORMAT_VERSION
from resurgo.model import (
    Bootloader,
    BootloaderKind,
    Description,
    Filesystem,
    Firmware,
    FormatInfo,
    FsType,
    LuksVolume,
    LvType,
    Mount,
    OsRelease,
    SystemInfo,
)
from resurgo.probe import filesystems, ids, luks, lvm, md, stack, storage, swap
from resurgo.probe.mounts import MountEntry
from tests.support.consts import MIB

GUEST = Path(__file__).resolve().parent.parent / "data" / "guest"
SECTOR = 512

MD0_UUID = "f5d23ef5:62fe463a:3b9eb2d2:84fe31d1"
MD1_UUID = "ab81f0ae:b06664c5:d67d50a0:2c081303"
LUKS2_UUID = "57447840-b229-4356-ac3a-021eafdb8ea2"
LUKS1_UUID = "31cd7387-82c7-45b6-b361-2f211049f42f"
VG_UUID = "Tlr1cf-ehgS-CoxY-IohG-ZaWL-GwzS-ezT0GB"
PV_CRYPT = "N4wswW-7WK9-Gcb2-Ogsw-x6MW-79cv-XgHyOZ"
PV_VDD1 = "JI281E-eYa6-MZ6o-m70R-LFlF-Vyct-5mCvvn"


def text(name: str) -> str:
    return (GUEST / name).read_text()


def sys_block_json() -> dict[str, dict[str, Any]]:
    data: dict[str, dict[str, Any]] = json.loads(text("sys-block.json"))
    return data


def build_sysfs(root: Path) -> Path:
    """The recorded sys-block.json as a sysfs tree under root; returns root/class/block."""
    entries = sys_block_json()
    for kname, e in entries.items():
        base = root / e["sysfs"]
        files: dict[str, Any] = {
            "dev": e["dev"], "size": e["size"], "ro": e["ro"], "removable": e["removable"],
            "serial": e["serial"], "wwid": e["wwid"], "device/model": e["model"],
        }
        if e["partition"] is not None:
            files.update(partition=e["partition"], start=e["start"])
        else:
            files.update({"queue/logical_block_size": e["logical_block_size"],
                          "queue/physical_block_size": e["physical_block_size"],
                          "queue/rotational": e["rotational"]})
        for key, value in (e.get("dm") or {}).items():
            files[f"dm/{key}"] = value
        for key, value in (e.get("md") or {}).items():
            if key == "members":
                for member, slot in value.items():
                    files[f"md/dev-{member}/slot"] = slot
            else:
                files[f"md/{key}"] = value
        for name, value in files.items():
            if value is not None:
                (base / name).parent.mkdir(parents=True, exist_ok=True)
                (base / name).write_text(f"{value}\n")
        for link in ("slaves", "holders"):
            (base / link).mkdir(parents=True, exist_ok=True)
            for other in e[link]:
                (base / link / other).symlink_to(root / entries[other]["sysfs"])
        for where in (root / "class" / "block" / kname, root / "dev" / "block" / e["dev"]):
            where.parent.mkdir(parents=True, exist_ok=True)
            where.symlink_to(base)
    return root / "class" / "block"


@pytest.fixture(scope="module")
def sys_block(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_sysfs(tmp_path_factory.mktemp("guest-sys"))


# ---------------------------------------------------------------- md


MD0_MEMBERS = {"vdc1": "part.vdc1", "vdb1": "part.vdb1"}
MD1_MEMBERS = {"vdd2": "part.vdd2", "vdb2": "part.vdb2", "vdc2": "part.vdc2"}


def test_mdadm_export_parses_detail_and_examine() -> None:
    detail = md.parse_detail_export(text("mdadm-detail-md0.env"))
    assert (detail["MD_LEVEL"], detail["MD_METADATA"], detail["MD_UUID"], detail["MD_NAME"]) == (
        "raid1", "1.2", MD0_UUID, "resurgo-guest:data")
    assert md.member_roles(detail, ["vdb1", "vdc1"]) == {"vdb1": "0", "vdc1": "1"}
    examine = md.parse_detail_export(text("mdadm-examine-vdb1.env"))
    assert (examine["MD_UUID"], examine["MD_DEV_UUID"]) == (
        MD0_UUID, "39e0fc5d:802dac49:da0528f7:358d9c6d")


def test_raid1_array(sys_block: Path) -> None:
    warnings: list[str] = []
    arr = md.describe_array("md0", text("mdadm-detail-md0.env"), MD0_MEMBERS,
                            sys_block=sys_block, warnings=warnings)
    assert (arr.id, arr.path, arr.level, arr.metadata, arr.uuid) == (
        "md.md0", "/dev/md0", "raid1", "1.2", MD0_UUID)
    # MD_NAME exactly as mdadm prints it, the creating host's name included.
    assert arr.name == "resurgo-guest:data"
    # In role order, whatever order the members were given in.
    assert arr.members == ("part.vdb1", "part.vdc1")
    assert arr.spares == ()
    assert (arr.chunk, arr.layout) == (None, None)
    assert arr.size == 653312 * SECTOR
    assert warnings == []


def test_raid5_array_geometry_from_sysfs(sys_block: Path) -> None:
    arr = md.describe_array("md1", text("mdadm-detail-md1.env"), MD1_MEMBERS, sys_block=sys_block)
    assert (arr.level, arr.uuid, arr.name) == ("raid5", MD1_UUID, "resurgo-guest:scratch")
    assert arr.members == ("part.vdb2", "part.vdc2", "part.vdd2")
    assert (arr.chunk, arr.layout) == (131072, "left-symmetric")
    assert arr.size == 520192 * SECTOR
    # mdadm's report for people says the same (it is not parsed by the probe).
    report = text("mdadm-detail-md1.txt")
    assert "Layout : left-symmetric" in report and "Chunk Size : 128K" in report
    assert "Array Size : 260096 " in report and arr.size == 260096 * 1024


def test_md_spare_degraded_and_outside_members(sys_block: Path) -> None:
    as_spare = text("mdadm-detail-md1.env").replace("vdd2_ROLE=2", "vdd2_ROLE=spare")
    warnings: list[str] = []
    arr = md.describe_array("md1", as_spare, MD1_MEMBERS, sys_block=sys_block,
                            warnings=warnings)
    assert (arr.members, arr.spares) == (("part.vdb2", "part.vdc2"), ("part.vdd2",))
    assert warnings == ["/dev/md1 is degraded or partly outside the described disks: 2 of its "
                        "3 members are described"]
    warnings.clear()
    arr = md.describe_array("md1", text("mdadm-detail-md1.env"), {"vdc2": "part.vdc2"},
                            sys_block=sys_block, warnings=warnings)
    assert arr.members == ("part.vdc2",)
    with pytest.raises(OperationFailed, match="none of its active members"):
        md.describe_array("md1", text("mdadm-detail-md1.env"), {}, sys_block=sys_block)


def test_md_external_metadata_is_refused(sys_block: Path) -> None:
    imsm = "MD_LEVEL=container\nMD_DEVICES=2\nMD_METADATA=imsm\nMD_UUID=a:b:c:d\n"
    with pytest.raises(OperationFailed, match="external metadata"):
        md.describe_array("md0", imsm, MD0_MEMBERS, sys_block=sys_block)


@pytest.mark.parametrize(("level", "number", "name"), [
    ("raid5", 2, "left-symmetric"), ("raid5", 0, "left-asymmetric"), ("raid6", 2, "left-symmetric"),
    ("raid6", 18, "left-symmetric-6"), ("raid5", 18, None), ("raid10", 0x102, "n2"),
    ("raid10", 0x201, "f2"), ("raid10", 0x10201, "o2"), ("raid10", 0x103, "n3"),
    ("raid1", 0, None), ("raid0", 0, None),
])
def test_md_layout_names(level: str, number: int, name: str | None) -> None:
    assert md.layout_name(level, number) == name


# ---------------------------------------------------------------- LUKS


def blkid(name: str) -> dict[str, str]:
    return filesystems.parse_blkid_export(text(f"blkid/{name}.env"))


def test_luks2_from_json_metadata_and_blkid() -> None:
    meta = luks.parse_luks2_json(text("luks2-md0.json"))
    vol = luks.luks2_volume("luks.md0", "md.md0", meta, blkid("md0"))
    assert (vol.id, vol.device, vol.version, vol.uuid) == ("luks.md0", "md.md0", 2, LUKS2_UUID)
    assert (vol.cipher, vol.key_size, vol.pbkdf, vol.hash) == (
        "aes-xts-plain64", 512, "argon2id", "sha256")
    assert (vol.label, vol.subsystem, vol.sector_size) == ("resurgo-data", "resurgo-test", 512)
    dump = text("luks2-md0-dump.txt")
    assert "Key:        512 bits" in dump and f"UUID:          \t{LUKS2_UUID}" in dump
    # The opened mapping's dm uuid carries the same header UUID.
    dm_uuid = sys_block_json()["dm-0"]["dm"]["uuid"]
    assert luks.uuid_of_mapping(dm_uuid) == LUKS2_UUID
    assert luks.version_of({}, dm_uuid) == 2
    with pytest.raises(OperationFailed, match="UUID"):
        luks.luks2_volume("luks.md0", "md.md0", meta, {})


def test_luks1_from_luksdump_named_fields_only() -> None:
    dump = text("luks1-vdd5-dump.txt")
    fields = luks.parse_luks1_dump(dump)
    assert set(fields) == set(luks.LUKS1_FIELDS)
    vol = luks.luks1_volume("luks.vdd5", "part.vdd5", dump)
    assert (vol.version, vol.uuid, vol.cipher, vol.key_size, vol.hash, vol.pbkdf) == (
        1, LUKS1_UUID, "aes-xts-plain64", 256, "sha256", "pbkdf2")
    assert (vol.label, vol.subsystem, vol.sector_size) == (None, None, None)
    assert luks.version_of(blkid("vdd5")) == 1
    with pytest.raises(OperationFailed, match="not a LUKS1 header"):
        luks.luks1_volume("luks.md0", "md.md0", text("luks2-md0-dump.txt"))


def test_luks_records_hold_no_key_material() -> None:
    v2 = luks.luks2_volume("luks.md0", "md.md0", luks.parse_luks2_json(text("luks2-md0.json")),
                           blkid("md0"))
    v1 = luks.luks1_volume("luks.vdd5", "part.vdd5", text("luks1-vdd5-dump.txt"))
    both = repr(v1) + repr(v2)
    for secret in ("+ZzRJ6DcyrjgkkOLRnFCpROx87uBxciOYYrJk5OVG0s=",  # keyslot salt
                   "tk/oPt/48NnZ4wNQ/EMXis7BY6IviFejOt5v+Oy5VbI=",  # volume key digest
                   "0b 62 6f 4f", "a6 fb da 32", "49 34 e2 16"):  # LUKS1 digest and salts
        assert secret not in both


# ---------------------------------------------------------------- LVM


def full_report(with_hidden: bool = True) -> lvm.Report:
    report = lvm.parse_fullreport(text("lvm-fullreport-bytes.json"))
    if with_hidden:
        report.add_hidden(lvm.parse_lvs_segments(text("lvs.json")))
    return report


PV_IDS = {PV_CRYPT: "pv.dm-0", PV_VDD1: "pv.vdd1"}


def test_fullreport_groups_and_pvs() -> None:
    report = full_report(with_hidden=False)
    vg = lvm.volume_group(report.vgs["vg0"])
    assert (vg.id, vg.name, vg.uuid, vg.extent_size, vg.size) == (
        "vg.vg0", "vg0", VG_UUID, 8 * MIB, 61 * 8 * MIB)
    assert [(p.name, p.uuid, p.vg, p.size, p.devno) for p in report.pvs] == [
        ("/dev/mapper/cryptdata", PV_CRYPT, "vg0", 37 * 8 * MIB, (252, 0)),
        ("/dev/vdd1", PV_VDD1, "vg0", 24 * 8 * MIB, (254, 49)),
    ]
    pv = lvm.physical_volume(report.pvs[0], "dm-0", "luks.dm-0")
    assert (pv.id, pv.device, pv.uuid, pv.volume_group) == ("pv.dm-0", "luks.dm-0", PV_CRYPT,
                                                            "vg.vg0")
    # fullreport lists the visible LVs only; the raid and pool LVs name hidden sub-LVs.
    assert sorted(lv.name for lv in report.lvs) == ["data", "mirror", "pool", "stripe", "thin1"]
    assert report.needs_hidden()
    assert not full_report().needs_hidden()


def test_logical_volumes() -> None:
    report = full_report()
    warnings: list[str] = []
    lvs = {lv.name: lvm.logical_volume(report, lv, PV_IDS, warnings)
           for lv in lvm.visible_lvs(report, "vg0")}
    assert sorted(lvs) == ["data", "mirror", "pool", "stripe", "thin1"]
    assert warnings == []
    assert {n: lv.type for n, lv in lvs.items()} == {
        "data": LvType.LINEAR, "stripe": LvType.STRIPED, "pool": LvType.THIN_POOL,
        "thin1": LvType.THIN, "mirror": LvType.RAID1}
    data = lvs["data"]
    assert (data.id, data.volume_group, data.uuid, data.size, data.path) == (
        "lv.vg0.data", "vg.vg0", "cIWia3-FCHs-Dfq8-xHs6-qyrP-QXGU-LIl19W", 64 * MIB,
        "/dev/vg0/data")
    [seg] = data.segments
    assert (seg.start_extent, seg.extent_count, seg.type, seg.stripes, seg.devices) == (
        0, 8, "linear", 1, ("pv.dm-0",))
    [seg] = lvs["stripe"].segments
    assert (seg.extent_count, seg.stripes, seg.stripe_size, seg.devices) == (
        4, 2, 64 * 1024, ("pv.dm-0", "pv.vdd1"))
    # The raid1 LV's images lie on both PVs; its two images are its "stripes".
    [seg] = lvs["mirror"].segments
    assert (seg.type, seg.stripes, seg.devices) == ("raid1", 2, ("pv.dm-0", "pv.vdd1"))
    pool, thin = lvs["pool"], lvs["thin1"]
    assert (pool.size, pool.path, pool.segments[0].devices) == (48 * MIB, None, ("pv.dm-0",))
    assert (thin.pool, thin.size, thin.segments[0].devices) == ("lv.vg0.pool", 128 * MIB, ())
    assert lvs["data"].pool is None


def test_segments_on_undescribed_pvs_are_left_out_with_a_warning() -> None:
    report = full_report()
    warnings: list[str] = []
    stripe = lvm.logical_volume(report, report.lv("vg0", "stripe") or pytest.fail(),
                                {PV_CRYPT: "pv.dm-0"}, warnings)
    assert stripe.segments[0].devices == ("pv.dm-0",)
    assert warnings == ["vg0/stripe: extents 0+4 lie on /dev/vdd1, which is not described"]
    # Without the hidden LVs, the mirror's images lead nowhere.
    warnings.clear()
    bare = full_report(with_hidden=False)
    mirror = lvm.logical_volume(bare, bare.lv("vg0", "mirror") or pytest.fail(), PV_IDS,
                                warnings)
    assert mirror.segments[0].devices == ()
    assert "mirror_rimage_0, mirror_rimage_1, mirror_rmeta_0, mirror_rmeta_1" in warnings[0]


EXPECTED_DM = {
    "dm-2": ("data", False), "dm-3": ("stripe", False), "dm-4": ("pool", True),
    "dm-5": ("pool", True), "dm-6": ("pool", True), "dm-7": ("pool", False),
    "dm-8": ("thin1", False), "dm-9": ("mirror", True), "dm-10": ("mirror", True),
    "dm-11": ("mirror", True), "dm-12": ("mirror", True), "dm-13": ("mirror", False),
}


def test_every_lvm_dm_device_maps_to_its_visible_lv() -> None:
    report = full_report()
    found: dict[str, tuple[str, bool]] = {}
    for kname, e in sys_block_json().items():
        if "dm" in e and e["dm"]["uuid"].startswith("LVM-"):
            got = lvm.lv_of_dm(report, e["dm"]["uuid"], e["dm"]["name"])
            assert got is not None, kname
            found[kname] = (got.lv.name, got.internal)
    assert found == EXPECTED_DM
    # By name alone (a dm uuid that is not LVM's form), layers included.
    by_name = lvm.lv_of_dm(report, "", "vg0-pool-tpool")
    assert by_name is not None and (by_name.lv.name, by_name.internal) == ("pool", True)
    # Without the hidden LVs, a raid image's device is not found: they must be asked for.
    assert lvm.lv_of_dm(full_report(with_hidden=False), "", "vg0-mirror_rimage_0") is None


def test_dm_names_and_devices_fields() -> None:
    assert lvm.split_dm_name("vg0-pool-tpool") == ("vg0", "pool", "tpool")
    assert lvm.split_dm_name("vg0-mirror_rimage_0") == ("vg0", "mirror_rimage_0", "")
    assert lvm.split_dm_name("my--vg-lv--one") == ("my-vg", "lv-one", "")
    assert lvm.split_dm_name("cryptdata") is None
    assert lvm.parse_devices("/dev/mapper/cryptdata(8),/dev/vdd1(0)") == (
        ("/dev/mapper/cryptdata", 8), ("/dev/vdd1", 0))
    assert lvm.parse_devices("mirror_rimage_0(0),mirror_rimage_1(0)") == (
        ("mirror_rimage_0", 0), ("mirror_rimage_1", 0))
    assert lvm.parse_devices("") == ()


def test_lv_types_of_other_segment_types() -> None:
    def lv(segtype: str, role: str = "public", attr: str = "-wi-a-----") -> lvm.Lv:
        seg = lvm.Segment(0, 1, segtype, 1, 0)
        return lvm.Lv("vg", "x", "u", 1, False, role=role, attr=attr, segments=(seg,))

    assert lvm.lv_type(lv("raid5_ls")) == LvType.RAID5
    assert lvm.lv_type(lv("raid6_zr")) == LvType.RAID6
    assert lvm.lv_type(lv("raid10")) == LvType.RAID10
    assert lvm.lv_type(lv("cache")) == LvType.CACHE
    assert lvm.lv_type(lv("vdo")) == LvType.OTHER
    assert lvm.lv_type(lv("linear", "public,snapshot,thicksnapshot", "swi-a-s---")) == (
        LvType.SNAPSHOT)
    assert lvm.lv_type(lv("thin", "public,snapshot,thinsnapshot", "Vwi-a-tz--")) == LvType.THIN


# ---------------------------------------------------------------- the storage walk, replayed


class GuestRunner:
    """Answers each command with what the same command printed in the guest (COMMANDS.tsv).

    Device paths are compared as the kernel names them: the walk asks blkid about
    /dev/dm-0 where the guest asked about /dev/mapper/cryptdata, the same device.
    """

    def __init__(self) -> None:
        aliases = {f"/dev/mapper/{e['dm']['name']}": f"/dev/{k}"
                   for k, e in sys_block_json().items() if "dm" in e}
        self.recorded: dict[tuple[str, ...], tuple[str, int]] = {}
        for line in text("COMMANDS.tsv").splitlines():
            name, code, command = line.split("\t")
            argv = tuple(aliases.get(a, a) for a in command.split())
            self.recorded[argv] = (name, int(code))
        self.calls: list[tuple[str, ...]] = []

    def __call__(self, argv: Sequence[str], *, check: bool = True, input: str | None = None,
                 env: Mapping[str, str] | None = None, timeout: float | None = None) -> run.Result:
        args = tuple(str(a) for a in argv)
        self.calls.append(args)
        # lvs is a link to lvm: `lvm lvs ...` is the `lvs ...` that was recorded.
        key = args[1:] if args[:2] == ("lvm", "lvs") else args
        if key not in self.recorded:
            result = run.Result(args, 127, "", "not recorded in the guest")
        else:
            name, code = self.recorded[key]
            result = run.Result(args, code, text(name), "")
        if check and result.returncode != 0:
            raise CommandFailed(list(args), result.returncode, result.stderr)
        return result


def blkid_only_filesystem(
    kname: str, device_id: str, device: str, found: Mapping[str, str],
    mounted: Sequence[tuple[str, MountEntry]], any_mount: MountEntry | None,
) -> filesystems.Described:
    # dumpe2fs, dump-super and the FAT boot sector were not recorded in the guest (their
    # parsers are tested on output recorded on this host): the filesystem from blkid alone.
    return filesystems.Described(Filesystem(
        id=ids.filesystem(kname), device=device_id, type=FsType(found["TYPE"]),
        uuid=found.get("UUID"), label=found.get("LABEL"),
        mounts=tuple(Mount(rel, e.options) for rel, e in mounted)))


@pytest.fixture
def replay(sys_block: Path, monkeypatch: pytest.MonkeyPatch) -> GuestRunner:
    runner = GuestRunner()
    monkeypatch.setattr(run, "run", runner)
    monkeypatch.setattr(run, "is_root", lambda: True)
    monkeypatch.setattr(run, "require", lambda *programs: None)
    monkeypatch.setattr(filesystems, "describe_filesystem", blkid_only_filesystem)
    # The swap header is read from the device itself, which is not here.
    monkeypatch.setattr(swap, "read_swap_header", lambda device: None)
    return runner


def guest_sources(sys_block: Path) -> storage.Sources:
    entries = sys_block_json()
    names = {f"/dev/{k}": k for k in entries}
    names.update({f"/dev/mapper/{e['dm']['name']}": k for k, e in entries.items() if "dm" in e})

    def kname_of_path(path: str) -> str:
        if path not in names:
            raise BadInput(f"{path} is not a block device of the guest")
        return names[path]

    sys_root = sys_block.parent.parent
    return storage.Sources(
        sys_block=sys_block, sys_dev=sys_root / "dev" / "block",
        sys_fs_btrfs=sys_root / "fs" / "btrfs", mountinfo=GUEST / "proc-mountinfo.txt",
        swaps=GUEST / "proc-swaps.txt", by_id=sys_root / "no-by-id", kname_of_path=kname_of_path)


def test_storage_walk_of_the_guest_stack(sys_block: Path, replay: GuestRunner) -> None:
    # vda (the guest's own disk) and vde (the exchange disk) were not recorded.
    state = storage.probe_storage(Path("/"), [], ["/dev/vda", "/dev/vde"],
                                  guest_sources(sys_block))
    assert [d.id for d in state.disks] == ["disk.vdb", "disk.vdc", "disk.vdd"]
    assert state.unsupported == []

    md0, md1 = state.raid_arrays
    assert (md0.id, md0.level, md0.uuid, md0.members) == (
        "md.md0", "raid1", MD0_UUID, ("part.vdb1", "part.vdc1"))
    assert (md1.id, md1.level, md1.chunk, md1.layout, md1.members) == (
        "md.md1", "raid5", 131072, "left-symmetric", ("part.vdb2", "part.vdc2", "part.vdd2"))

    volumes = {v.id: v for v in state.luks_volumes}
    crypt, cswap = volumes["luks.md0"], volumes["luks.vdd5"]
    assert len(volumes) == 2
    assert (crypt.id, crypt.device, crypt.version, crypt.uuid, crypt.name, crypt.size) == (
        "luks.md0", "md.md0", 2, LUKS2_UUID, "cryptdata", 620544 * SECTOR)
    assert (crypt.label, crypt.subsystem, crypt.key_size) == ("resurgo-data", "resurgo-test", 512)
    assert (cswap.id, cswap.device, cswap.version, cswap.uuid, cswap.name, cswap.cipher) == (
        "luks.vdd5", "part.vdd5", 1, LUKS1_UUID, "cryptswap", "aes-xts-plain64")

    assert [(pv.id, pv.device, pv.uuid, pv.volume_group) for pv in state.physical_volumes] == [
        ("pv.dm-0", "luks.md0", PV_CRYPT, "vg.vg0"), ("pv.vdd1", "part.vdd1", PV_VDD1, "vg.vg0")]
    [vg] = state.volume_groups
    assert (vg.id, vg.uuid, vg.extent_size) == ("vg.vg0", VG_UUID, 8 * MIB)
    lvs = {lv.id: lv for lv in state.logical_volumes}
    assert {i: lv.type for i, lv in lvs.items()} == {
        "lv.vg0.data": LvType.LINEAR, "lv.vg0.stripe": LvType.STRIPED,
        "lv.vg0.pool": LvType.THIN_POOL, "lv.vg0.thin1": LvType.THIN,
        "lv.vg0.mirror": LvType.RAID1}
    assert lvs["lv.vg0.thin1"].pool == "lv.vg0.pool"
    assert lvs["lv.vg0.mirror"].segments[0].devices == ("pv.dm-0", "pv.vdd1")

    # What sits on top refers to the stacked records.
    on = {fs.id: (fs.device, fs.type, fs.label) for fs in state.filesystems}
    assert on == {
        "fs.md1": ("md.md1", FsType.EXT4, "scratch"),
        "fs.dm-2": ("lv.vg0.data", FsType.EXT4, "data"),
        "fs.dm-3": ("lv.vg0.stripe", FsType.VFAT, "STRIPE"),
        "fs.dm-8": ("lv.vg0.thin1", FsType.BTRFS, "thin"),
    }
    data = next(fs for fs in state.filesystems if fs.id == "fs.dm-2")
    assert [m.mountpoint for m in data.mounts] == ["/mnt/data"]
    [sw] = state.swaps
    assert (sw.id, sw.device, sw.active, sw.priority) == ("swap.dm-1", "luks.vdd5", True, -2)

    # Kernel names are those of the public devices, never of the internal layers.
    assert state.knames["lv.vg0.pool"] == "dm-7"
    assert state.knames["lv.vg0.mirror"] == "dm-13"
    assert state.knames["luks.md0"] == "dm-0"
    assert "dm-6" not in state.knames.values()

    # One fullreport, one lvs --all for the hidden sub-LVs; each md array asked once.
    lvm_calls = [c for c in replay.calls if c[0] == "lvm"]
    assert lvm_calls == [lvm.FULLREPORT, lvm.HIDDEN_LVS]
    assert [c for c in replay.calls if c[0] == "mdadm"] == [
        ("mdadm", "--detail", "--export", "/dev/md0"), ("mdadm", "--detail", "--export",
                                                          "/dev/md1")]
    assert not any(w.startswith(("volume group", "logical volume")) for w in state.warnings)

    desc = guest_description(state)
    assert rules.check(desc) == []
    report = check_bytes(dumps(desc).encode(), "description.toml", expected_digest=None)
    assert report.messages() == []
    assert report.description == desc


def guest_description(state: storage.StorageState) -> Description:
    return Description(
        format=FormatInfo(version=FORMAT_VERSION, resurgo="test", created="2026-11-25T23:40:00Z",
                          host="resurgo-guest"),
        system=SystemInfo(hostname="resurgo-guest", machine_id="", architecture="x86_64",
                          firmware=Firmware.BIOS, os_release=OsRelease("debian", "12"),
                          kernel="6.1.0-50-amd64", bootloader=Bootloader(BootloaderKind.NONE)),
        disks=tuple(state.disks), partitions=tuple(state.partitions),
        raid_arrays=tuple(state.raid_arrays), luks_volumes=tuple(state.luks_volumes),
        physical_volumes=tuple(state.physical_volumes),
        volume_groups=tuple(state.volume_groups),
        logical_volumes=tuple(state.logical_volumes), filesystems=tuple(state.filesystems),
        swaps=tuple(state.swaps), unsupported=tuple(state.unsupported))


def test_walk_without_the_lvm_tools_keeps_unsupported_records(
    sys_block: Path, replay: GuestRunner
) -> None:
    # lvm failing: every LV is kept as an unsupported record, and what is on it still
    # refers to a record of the description.
    del replay.recorded[lvm.FULLREPORT]
    state = storage.probe_storage(Path("/"), [], ["/dev/vda", "/dev/vde"],
                                  guest_sources(sys_block))
    assert state.logical_volumes == [] and state.volume_groups == []
    kinds = {u.id: u.kind for u in state.unsupported}
    assert kinds["unsupported.dm-2"] == "lvm"
    assert any("LVM could not be read" in w for w in state.warnings)
    # Asked once, not once per LV device.
    assert [c[:2] for c in replay.calls if c[0] == "lvm"] == [("lvm", "fullreport")]
    assert rules.check(guest_description(state)) == []
    # The LUKS and md records do not depend on LVM.
    assert sorted(v.id for v in state.luks_volumes) == ["luks.md0", "luks.vdd5"]


def test_closed_luks_and_inactive_pv_containers(sys_block: Path, replay: GuestRunner) -> None:
    known = {"vdd5": "part.vdd5", "vdd1": "part.vdd1", "dm-0": "luks.md0", "md0": "md.md0"}
    st = stack.Stack(known, sys_block=sys_block)
    closed = st.describe_container("vdd5", "part.vdd5", blkid("vdd5"))
    assert isinstance(closed.record, LuksVolume)
    assert (closed.record.id, closed.record.device, closed.record.uuid) == (
        "luks.vdd5", "part.vdd5", LUKS1_UUID)
    assert (closed.record.name, closed.record.size) == (None, None)
    assert closed.warnings == ["/dev/vdd5: the LUKS volume is not open, so what it holds is "
                               "not described"]
    # A PV with no LV active on it: its group, its PVs and LVs, all from the LVM report.
    pv = st.describe_container("vdd1", "part.vdd1", blkid("vdd1"))
    assert pv.record is None and [vg.id for vg in pv.volume_groups] == ["vg.vg0"]
    end = st.finish()
    assert [(p.id, p.device) for p in end.physical_volumes] == [
        ("pv.dm-0", "luks.md0"), ("pv.vdd1", "part.vdd1")]
    assert sorted(lv.id for lv in end.logical_volumes) == [
        "lv.vg0.data", "lv.vg0.mirror", "lv.vg0.pool", "lv.vg0.stripe", "lv.vg0.thin1"]
    assert "logical volume vg0/data has no device on the described disks: its layout is " \
           "described, its contents are not" in end.warnings
    # A md member with no array: kept unsupported.
    member = st.describe_container("vdb1", "part.vdb1", blkid("vdb1"))
    assert member.record is not None and member.record.id == "unsupported.vdb1"


def test_dm_kind_of_recorded_devices(sys_block: Path) -> None:
    assert [stack.dm_kind(k, sys_block) for k in ("dm-0", "dm-1", "dm-2", "md0")] == [
        "luks", "luks", "lvm", "dm"]
    assert os.path.isdir(sys_block / "md0" / "md")
