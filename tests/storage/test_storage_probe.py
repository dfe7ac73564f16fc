"""probe_storage against real loop disks built here, every identity, offset and option checked.

Two systems are built once per module and mounted under temporary roots:

classic: a GPT disk (unmounted ESP, /boot ext4, / ext4 with 512-byte inodes, a gap,
  /home xfs, an inactive and an active swap partition, and an active swap file), an MBR
  disk (bootable primary at /srv, extended, a FAT16 logical and an ext4 logical at
  /mnt/logical) and a whole-disk ext4 data disk with 4096-byte sectors at /data; plus a
  decoy disk mounted outside the root.
btrfs: a GPT disk with a BIOS boot partition and a btrfs (node size 32 KiB, dup metadata)
  whose @ is /, @home /home, with a nested subvolume, a read-only snapshot and @ as the
  default subvolume.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from resurgo.errors import BadInput
from resurgo.model import (
    Filesystem,
    FsType,
    Partition,
    PartitionKind,
    TableLabel,
)
from resurgo.probe.state import StorageState
from resurgo.probe.storage import probe_storage
from tests.support import cli
from tests.support.builders import description_of
from tests.support.consts import BIOS, ESP, HOME, LINUX, MIB, ROOT_X86_64, SWAP
from tests.support.loopdisks import Loop, Part, Rig, dos_script, gpt_script, new_uuid

pytestmark = pytest.mark.storage



@dataclass
class Classic:
    root: Path
    gpt: Loop
    mbr: Loop
    data: Loop
    decoy: Loop
    gpt_guid: str
    gpt_parts: list[Part]
    mbr_id: str
    mbr_parts: list[Part]
    fs_uuid: dict[str, str] = field(default_factory=dict)
    swap_uuid: dict[str, str] = field(default_factory=dict)
    esp_volume_id: str = ""
    logical_volume_id: str = ""


def _volume_id() -> str:
    return secrets.token_hex(4).upper()


@pytest.fixture(scope="module")
def classic(rig_factory) -> Classic:  # type: ignore[no-untyped-def]
    rig: Rig = rig_factory()
    work = rig.workdir
    root = work / "root"
    root.mkdir()

    gpt_guid = new_uuid().upper()
    gpt_parts = [
        Part(1, 2048, 65536, ESP, new_uuid().upper(), "EFI system partition"),
        Part(2, 67584, 131072, LINUX, new_uuid().upper(), "boot"),
        Part(3, 198656, 409600, ROOT_X86_64, new_uuid().upper(), "root", attrs="GUID:59"),
        # A 1 MiB gap before /home.
        Part(4, 610304, 655360, HOME, new_uuid().upper(), "home"),
        Part(5, 1265664, 65536, SWAP, new_uuid().upper(), "swap"),
        Part(6, 1331200, 32768, SWAP, new_uuid().upper(), "swap two"),
    ]
    gpt = rig.disk("gpt", 700 * MIB, table=gpt_script(gpt_guid, gpt_parts))
    mbr_id = "0x" + secrets.token_hex(4)
    mbr_parts = [
        Part(1, 2048, 102400, "83", bootable=True),
        Part(2, 104448, 300000, "5", kind=PartitionKind.EXTENDED),
        Part(5, 106496, 65536, "c", kind=PartitionKind.LOGICAL),
        Part(6, 174080, 200000, "83", kind=PartitionKind.LOGICAL),
    ]
    mbr = rig.disk("mbr", 256 * MIB, table=dos_script(mbr_id, mbr_parts))
    data = rig.disk("data", 128 * MIB, sector_size=4096)
    decoy = rig.disk("decoy", 64 * MIB)

    c = Classic(root, gpt, mbr, data, decoy, gpt_guid, gpt_parts, mbr_id, mbr_parts)
    c.fs_uuid = {k: new_uuid() for k in ("boot", "root", "home", "srv", "logical", "data",
                                          "decoy")}
    c.swap_uuid = {k: new_uuid() for k in ("swap", "swap2", "file")}
    c.esp_volume_id = _volume_id()
    c.logical_volume_id = _volume_id()

    rig.sh("mkfs.vfat", "-F", "32", "-i", c.esp_volume_id, "-n", "ESP", gpt.part(1))
    rig.sh("mkfs.ext4", "-q", "-U", c.fs_uuid["boot"], "-L", "boot", gpt.part(2))
    rig.sh("mkfs.ext4", "-q", "-b", "4096", "-I", "512", "-N", "20000", "-m", "2",
           "-O", "^metadata_csum,^huge_file", "-U", c.fs_uuid["root"], "-L", "root", gpt.part(3))
    rig.sh("mkfs.xfs", "-q", "-m", f"uuid={c.fs_uuid['home']},reflink=1,bigtime=1,rmapbt=0",
           "-d", "agcount=3", "-L", "home", gpt.part(4))
    rig.sh("mkswap", "-U", c.swap_uuid["swap"], "-L", "swap1", gpt.part(5))
    rig.sh("mkswap", "-U", c.swap_uuid["swap2"], "-L", "swap2", gpt.part(6))
    rig.sh("mkfs.ext4", "-q", "-U", c.fs_uuid["srv"], "-L", "srv", mbr.part(1))
    rig.sh("mkfs.vfat", "-F", "16", "-i", c.logical_volume_id, "-n", "LOGIC", mbr.part(5))
    rig.sh("mkfs.ext4", "-q", "-U", c.fs_uuid["logical"], "-L", "logical", mbr.part(6))
    rig.sh("mkfs.ext4", "-q", "-U", c.fs_uuid["data"], "-L", "data", data.path)
    rig.sh("mkfs.ext4", "-q", "-U", c.fs_uuid["decoy"], "-L", "decoy", decoy.path)

    rig.mount(gpt.part(3), root, "noatime")
    rig.mount(gpt.part(2), root / "boot", "nosuid,nodev")
    rig.mount(gpt.part(4), root / "home")
    rig.mount(mbr.part(1), root / "srv", "noexec")
    rig.mount(mbr.part(6), root / "mnt" / "logical")
    rig.mount(data.path, root / "data", "noatime,nodev")
    rig.mount(decoy.path, work / "decoy-mnt")

    swapfile = root / "swapfile"
    with open(swapfile, "wb") as f:
        f.write(bytes(16 * MIB))  # not sparse: the kernel refuses swap files with holes
    os.chmod(swapfile, 0o600)
    rig.sh("mkswap", "-U", c.swap_uuid["file"], "-L", "swapfile", str(swapfile))
    rig.swapon(str(swapfile), 3)
    rig.swapon(gpt.part(6), 7)
    return c


def probe(root: Path, include: list[str] | None = None,
          exclude: list[str] | None = None) -> StorageState:
    return probe_storage(root, include or [], exclude or [])


def fs_by_uuid(state: StorageState, uuid: str) -> Filesystem:
    [fs] = [f for f in state.filesystems if f.uuid == uuid]
    return fs


def parts_of(state: StorageState, disk_id: str) -> list[Partition]:
    return sorted((p for p in state.partitions if p.disk == disk_id), key=lambda p: p.number)


# ---------------------------------------------------------------- classic


def test_the_disks_are_those_under_the_root(classic: Classic) -> None:
    state = probe(classic.root)
    assert [d.path for d in state.disks] == sorted(
        [classic.gpt.path, classic.mbr.path, classic.data.path],
        key=lambda p: int(p.removeprefix("/dev/loop")))
    assert classic.decoy.path not in {d.path for d in state.disks}
    assert state.warnings == []
    assert state.unsupported == []
    assert state.raid_arrays == state.luks_volumes == state.logical_volumes == []


def test_gpt_disk_and_partitions(classic: Classic) -> None:
    state = probe(classic.root)
    [disk] = [d for d in state.disks if d.path == classic.gpt.path]
    assert disk.id == f"disk.{classic.gpt.kname}"
    assert (disk.size, disk.logical_sector_size, disk.physical_sector_size) == (700 * MIB, 512, 512)
    assert disk.transport == "loop"
    assert disk.critical is True
    assert disk.removable is False
    assert disk.table is not None
    assert disk.table.label == TableLabel.GPT
    assert disk.table.id == classic.gpt_guid
    assert disk.table.first_lba == 2048
    assert disk.table.last_lba == 700 * MIB // 512 - 34
    parts = parts_of(state, disk.id)
    # The types as sfdisk wrote them (upper case): the probe keeps a table's spelling.
    assert [(p.number, p.start, p.size, p.type, p.uuid, p.name, p.attrs, p.kind, p.bootable)
            for p in parts] == [
        (e.number, e.start, e.size, e.type.upper(), e.uuid, e.name, e.attrs,
         PartitionKind.PRIMARY, False)
        for e in classic.gpt_parts
    ]
    assert all(p.sector_size == 512 for p in parts)
    assert [p.path for p in parts] == [classic.gpt.part(n) for n in range(1, 7)]
    # The gap between root and home is kept: home does not start where root ends.
    root_p, home_p = parts[2], parts[3]
    assert home_p.start - (root_p.start + root_p.size) == 2048
    for p in parts:
        assert state.knames[p.id] == p.path.removeprefix("/dev/")
    assert state.knames[disk.id] == classic.gpt.kname


def test_gpt_filesystems(classic: Classic) -> None:
    state = probe(classic.root)
    kn = classic.gpt.kname

    esp = fs_by_uuid(state, f"{classic.esp_volume_id[:4]}-{classic.esp_volume_id[4:]}")
    assert (esp.id, esp.device, esp.type, esp.label) == (
        f"fs.{kn}p1", f"part.{kn}p1", FsType.VFAT, "ESP")
    assert esp.mounts == ()
    assert esp.state is not None and esp.state.mounted is False
    assert esp.vfat is not None
    assert (esp.vfat.fat_size, esp.vfat.sector_size) == (32, 512)
    assert esp.vfat.volume_id == esp.uuid

    boot = fs_by_uuid(state, classic.fs_uuid["boot"])
    assert (boot.device, boot.type, boot.label, boot.supported) == (
        f"part.{kn}p2", FsType.EXT4, "boot", True)
    assert [m.mountpoint for m in boot.mounts] == ["/boot"]
    assert {"nosuid", "nodev"} <= set(boot.mounts[0].options.split(","))
    assert boot.ext is not None and "metadata_csum" in boot.ext.features

    root = fs_by_uuid(state, classic.fs_uuid["root"])
    assert (root.device, root.label) == (f"part.{kn}p3", "root")
    assert [m.mountpoint for m in root.mounts] == ["/"]
    assert "noatime" in root.mounts[0].options.split(",")
    assert root.ext is not None
    assert (root.ext.block_size, root.ext.inode_size, root.ext.inode_count) == (4096, 512, 20000)
    assert root.ext.reserved_blocks_percent == 2.0
    assert root.ext.journal is True
    assert "metadata_csum" not in root.ext.features and "huge_file" not in root.ext.features
    assert {"has_journal", "extent", "64bit", "flex_bg"} <= set(root.ext.features)
    assert root.size == 409600 * 512

    home = fs_by_uuid(state, classic.fs_uuid["home"])
    assert (home.device, home.type, home.label) == (f"part.{kn}p4", FsType.XFS, "home")
    assert [m.mountpoint for m in home.mounts] == ["/home"]
    assert home.xfs is not None
    assert (home.xfs.block_size, home.xfs.inode_size, home.xfs.ag_count) == (4096, 512, 3)
    assert home.xfs.reflink and home.xfs.bigtime and home.xfs.crc and not home.xfs.rmapbt
    assert home.size == 655360 * 512

    for fs in (boot, root, home):
        st = os.statvfs(classic.root / fs.mounts[0].mountpoint.lstrip("/"))
        assert fs.state is not None and fs.state.mounted
        assert fs.state.total_bytes == st.f_blocks * st.f_frsize
        assert fs.state.inodes_total == st.f_files
        assert fs.state.used_bytes is not None and fs.state.used_bytes > 0


def test_swap(classic: Classic) -> None:
    state = probe(classic.root)
    kn = classic.gpt.kname
    swaps = {s.uuid: s for s in state.swaps}
    assert set(swaps) == set(classic.swap_uuid.values())
    inactive = swaps[classic.swap_uuid["swap"]]
    assert (inactive.id, inactive.device, inactive.label, inactive.active, inactive.size) == (
        f"swap.{kn}p5", f"part.{kn}p5", "swap1", False, 65536 * 512)
    assert inactive.page_size == os.sysconf("SC_PAGE_SIZE")
    active = swaps[classic.swap_uuid["swap2"]]
    assert (active.device, active.label, active.active, active.priority, active.size) == (
        f"part.{kn}p6", "swap2", True, 7, 32768 * 512)
    swapfile = swaps[classic.swap_uuid["file"]]
    root = fs_by_uuid(state, classic.fs_uuid["root"])
    assert (swapfile.file, swapfile.filesystem, swapfile.device) == ("/swapfile", root.id, None)
    assert (swapfile.label, swapfile.active, swapfile.priority, swapfile.size) == (
        "swapfile", True, 3, 16 * MIB)


def test_mbr_disk(classic: Classic) -> None:
    state = probe(classic.root)
    kn = classic.mbr.kname
    [disk] = [d for d in state.disks if d.path == classic.mbr.path]
    assert disk.table is not None
    assert (disk.table.label, disk.table.id) == (TableLabel.DOS, classic.mbr_id)
    assert disk.critical is False
    parts = parts_of(state, disk.id)
    assert [(p.number, p.start, p.size, p.type, p.kind, p.bootable) for p in parts] == [
        (e.number, e.start, e.size, e.type, e.kind, e.bootable) for e in classic.mbr_parts
    ]
    assert [p.path for p in parts] == [classic.mbr.part(n) for n in (1, 2, 5, 6)]
    # The extended partition holds no filesystem of its own.
    assert not [f for f in state.filesystems if f.device == f"part.{kn}p2"]
    srv = fs_by_uuid(state, classic.fs_uuid["srv"])
    assert (srv.device, [m.mountpoint for m in srv.mounts]) == (f"part.{kn}p1", ["/srv"])
    assert "noexec" in srv.mounts[0].options.split(",")
    vol = classic.logical_volume_id
    fat = fs_by_uuid(state, f"{vol[:4]}-{vol[4:]}")
    assert (fat.device, fat.type, fat.label, fat.mounts) == (
        f"part.{kn}p5", FsType.VFAT, "LOGIC", ())
    assert fat.vfat is not None and fat.vfat.fat_size == 16
    assert fat.size is not None and fat.size <= 65536 * 512
    logical = fs_by_uuid(state, classic.fs_uuid["logical"])
    assert (logical.device, [m.mountpoint for m in logical.mounts]) == (
        f"part.{kn}p6", ["/mnt/logical"])


def test_whole_disk_filesystem_on_4kn(classic: Classic) -> None:
    state = probe(classic.root)
    [disk] = [d for d in state.disks if d.path == classic.data.path]
    assert disk.table is None
    assert (disk.logical_sector_size, disk.size) == (4096, 128 * MIB)
    assert not parts_of(state, disk.id)
    data = fs_by_uuid(state, classic.fs_uuid["data"])
    assert (data.device, data.label) == (disk.id, "data")
    assert [m.mountpoint for m in data.mounts] == ["/data"]
    assert {"noatime", "nodev"} <= set(data.mounts[0].options.split(","))
    assert data.size == 128 * MIB


def test_decoy_only_when_included(classic: Classic) -> None:
    assert classic.decoy.path not in {d.path for d in probe(classic.root).disks}
    state = probe(classic.root, include=[classic.decoy.path])
    [disk] = [d for d in state.disks if d.path == classic.decoy.path]
    assert disk.table is None and disk.critical is False
    decoy = fs_by_uuid(state, classic.fs_uuid["decoy"])
    # Mounted, but outside the root: no mountpoint of the described system.
    assert decoy.device == disk.id and decoy.mounts == ()
    assert decoy.state is not None and decoy.state.mounted is True


def test_exclude_disk(classic: Classic) -> None:
    state = probe(classic.root, exclude=[classic.data.path])
    assert classic.data.path not in {d.path for d in state.disks}
    assert classic.fs_uuid["data"] not in {f.uuid for f in state.filesystems}
    assert any("/data" in w and classic.data.path in w for w in state.warnings)


def test_include_a_partition_is_bad_input(classic: Classic) -> None:
    with pytest.raises(BadInput, match="a partition, not a disk"):
        probe(classic.root, include=[classic.gpt.part(1)])
    with pytest.raises(BadInput, match="not a block device"):
        probe(classic.root, include=[str(classic.gpt.image)])


def test_root_subdirectory_describes_only_what_is_under_it(classic: Classic) -> None:
    state = probe(classic.root / "mnt")
    assert [d.path for d in state.disks] == [classic.mbr.path]
    logical = fs_by_uuid(state, classic.fs_uuid["logical"])
    assert [m.mountpoint for m in logical.mounts] == ["/logical"]
    srv = fs_by_uuid(state, classic.fs_uuid["srv"])
    assert srv.mounts == ()
    # The active swap on the GPT disk is not on these disks.
    assert state.swaps == []


def test_the_running_system_includes_active_swap_disks(classic: Classic) -> None:
    state = probe(Path("/"))
    paths = {d.path for d in state.disks}
    assert {classic.gpt.path, classic.mbr.path, classic.data.path, classic.decoy.path} <= paths
    root = fs_by_uuid(state, classic.fs_uuid["root"])
    assert [m.mountpoint for m in root.mounts] == [str(classic.root)]


def test_the_result_is_a_valid_description(classic: Classic) -> None:
    from resurgo.fileformat import rules

    state = probe(classic.root)
    problems = rules.check(description_of(state))
    assert problems == []


def test_fast(classic: Classic) -> None:
    start = time.monotonic()
    probe(classic.root)
    assert time.monotonic() - start < 2.0


# ---------------------------------------------------------------- btrfs


@dataclass
class BtrfsSystem:
    root: Path
    disk: Loop
    fs_uuid: str
    subvol_ids: dict[str, int]
    subvol_uuids: dict[str, str]


def _subvolume_show(path: Path) -> tuple[int, str]:
    from resurgo import run

    out = run.output(["btrfs", "subvolume", "show", str(path)])
    fields = {}
    for line in out.splitlines():
        key, colon, value = line.strip().partition(":")
        if colon:
            fields[key.strip()] = value.strip()
    return int(fields["Subvolume ID"]), fields["UUID"]


@pytest.fixture(scope="module")
def btrfs_system(rig_factory) -> BtrfsSystem:  # type: ignore[no-untyped-def]
    rig: Rig = rig_factory()
    work = rig.workdir
    parts = [
        Part(1, 2048, 2048, BIOS, new_uuid().upper(), "bios"),
        Part(2, 4096, 1040384, LINUX, new_uuid().upper(), "system"),
    ]
    disk = rig.disk("btrfs", 512 * MIB, table=gpt_script(new_uuid().upper(), parts))
    fs_uuid = new_uuid()
    rig.sh("mkfs.btrfs", "-q", "-n", "32768", "-m", "dup", "-d", "single", "-U", fs_uuid,
           "-L", "system", disk.part(2))
    top = rig.mount(disk.part(2), work / "top")
    for sub in ("@", "@home"):
        rig.sh("btrfs", "subvolume", "create", str(top / sub))
    (top / "@" / "srv").mkdir()
    (top / "@" / "home").mkdir()
    rig.sh("btrfs", "subvolume", "create", str(top / "@" / "srv" / "nested"))
    rig.sh("btrfs", "subvolume", "snapshot", "-r", str(top / "@"), str(top / "@snap"))
    rig.sh("btrfs", "subvolume", "set-default", str(top / "@"))
    ids: dict[str, int] = {}
    uuids: dict[str, str] = {}
    for path in ("@", "@home", "@/srv/nested", "@snap"):
        ids[path], uuids[path] = _subvolume_show(top / path)
    root = work / "root"
    rig.mount(disk.part(2), root, "subvol=@,noatime")
    rig.mount(disk.part(2), root / "home", "subvol=@home")
    return BtrfsSystem(root, disk, fs_uuid, ids, uuids)


def test_btrfs(btrfs_system: BtrfsSystem) -> None:
    b = btrfs_system
    state = probe(b.root)
    kn = b.disk.kname
    assert [d.path for d in state.disks] == [b.disk.path]
    assert state.disks[0].critical is True
    assert state.warnings == []
    bios, system = parts_of(state, state.disks[0].id)
    assert (bios.type, bios.start, bios.size, bios.name) == (BIOS.upper(), 2048, 2048, "bios")
    assert not [f for f in state.filesystems if f.device == bios.id]
    [fs] = state.filesystems
    assert (fs.id, fs.device, fs.type, fs.uuid, fs.label) == (
        f"fs.{kn}p2", system.id, FsType.BTRFS, b.fs_uuid, "system")
    assert fs.btrfs is not None
    assert (fs.btrfs.node_size, fs.btrfs.sector_size) == (32768, 4096)
    assert (fs.btrfs.data_profile, fs.btrfs.metadata_profile) == ("single", "dup")
    assert fs.btrfs.default_subvolume == b.subvol_ids["@"] != 5
    assert "no_holes" in fs.btrfs.features
    assert fs.size == 1040384 * 512

    subvols = {s.path: s for s in state.subvolumes}
    assert set(subvols) == set(b.subvol_ids)
    for path, sv in subvols.items():
        assert sv.filesystem == fs.id
        assert sv.subvol_id == b.subvol_ids[path]
        assert sv.uuid == b.subvol_uuids[path]
        assert sv.id == f"subvol.{kn}p2.{sv.subvol_id}"
        assert sv.readonly == (path == "@snap")
    assert subvols["@/srv/nested"].parent_id == b.subvol_ids["@"]
    assert subvols["@home"].parent_id == 5

    mounts = {m.mountpoint: m for m in fs.mounts}
    assert set(mounts) == {"/", "/home"}
    assert mounts["/"].subvolume == subvols["@"].id
    assert mounts["/home"].subvolume == subvols["@home"].id
    assert "noatime" in mounts["/"].options.split(",")
    assert not any(o.startswith("subvol") for m in fs.mounts for o in m.options.split(","))
    assert description_of(state) is not None
    from resurgo.fileformat import rules

    assert rules.check(description_of(state)) == []


# ---------------------------------------------------------------- the CLI


def test_cli_describe_json(classic: Classic) -> None:
    proc = cli.run("describe", "--root", classic.root, "--no-catalog", "--json")
    assert proc.returncode == 0, proc.stderr
    desc = json.loads(proc.stdout)
    expected = probe(classic.root)
    assert [d["id"] for d in desc["disks"]] == [d.id for d in expected.disks]
    assert [(p["id"], p["start"], p["size"], p.get("uuid")) for p in desc["partitions"]] == [
        (p.id, p.start, p.size, p.uuid) for p in expected.partitions]
    assert sorted(f["uuid"] for f in desc["filesystems"]) == sorted(
        f.uuid for f in expected.filesystems if f.uuid)
    root_fs = fs_by_uuid(expected, classic.fs_uuid["root"])
    assert desc["system"]["system_volume"] == root_fs.id


# ---------------------------------------------------------------- what cannot be described


def test_unknown_filesystem_is_unsupported_and_a_closed_luks_header_is_described(rig: Rig) -> None:
    parts = [
        Part(1, 2048, 32768, LINUX, new_uuid().upper(), "minix"),
        Part(2, 34816, 65536, LINUX, new_uuid().upper(), "secret"),
        Part(3, 100352, 16384, LINUX, new_uuid().upper(), "empty"),
    ]
    disk = rig.disk("misc", 64 * MIB, table=gpt_script(new_uuid().upper(), parts))
    rig.sh("mkfs.minix", disk.part(1))
    rig.sh("cryptsetup", "luksFormat", "--batch-mode", "--type", "luks2", "--pbkdf", "pbkdf2",
           "--pbkdf-force-iterations", "1000", disk.part(2), "-", input="not a secret")
    empty = rig.workdir / "empty-root"
    empty.mkdir()
    state = probe(empty, include=[disk.path])
    kn = disk.kname
    assert [d.path for d in state.disks] == [disk.path]
    assert len(parts_of(state, state.disks[0].id)) == 3
    [minix] = state.filesystems
    assert (minix.id, minix.device, minix.type, minix.type_name, minix.supported) == (
        f"fs.{kn}p1", f"part.{kn}p1", FsType.OTHER, "minix", False)
    unsupported = {u.path: u for u in state.unsupported}
    assert set(unsupported) == {disk.part(1)}
    assert unsupported[disk.part(1)].kind == "filesystem"
    assert any(disk.part(1) in w and "minix" in w for w in state.warnings)
    # A LUKS header nothing has opened: what the header says (luksDump works on it), with
    # a warning that what it holds is not described.
    [closed] = state.luks_volumes
    uuid = rig.sh("blkid", "-p", "-o", "value", "-s", "UUID", disk.part(2)).strip()
    assert (closed.id, closed.device, closed.version, closed.uuid, closed.pbkdf) == (
        f"luks.{kn}p2", f"part.{kn}p2", 2, uuid, "pbkdf2")
    assert (closed.name, closed.size, closed.key_size) == (None, None, 512)
    assert any(disk.part(2) in w and "not open" in w for w in state.warnings)
    # Nothing is mounted at the root itself: said so.
    assert any("nothing is mounted at" in w for w in state.warnings)


def test_a_stale_kernel_partition_is_not_read(rig: Rig) -> None:
    first = [Part(1, 2048, 65536, LINUX, new_uuid().upper(), "one")]
    disk = rig.disk("stale", 64 * MIB, table=gpt_script(new_uuid().upper(), first))
    rig.sh("mkfs.ext4", "-q", disk.part(1))
    # A new table written behind the kernel's back (into the image file; sfdisk on the device
    # would tell the kernel): its partition 1 still covers the old sectors.
    moved = [Part(1, 4096, 32768, LINUX, new_uuid().upper(), "moved")]
    rig.sh("sfdisk", "--quiet", str(disk.image), input=gpt_script(new_uuid().upper(), moved))
    rig.sh("blockdev", "--flushbufs", disk.path)
    empty = rig.workdir / "empty-root"
    empty.mkdir()
    state = probe(empty, include=[disk.path])
    [part] = state.partitions
    assert (part.start, part.size, part.name) == (4096, 32768, "moved")
    assert state.filesystems == []
    assert any("differs from the table" in w and "partx -u" in w for w in state.warnings)
    # And once the kernel forgets it altogether, the partition is still described.
    rig.sh("partx", "-d", "--nr", "1", disk.path)
    state = probe(empty, include=[disk.path])
    assert [p.start for p in state.partitions] == [4096]
    assert state.knames[state.partitions[0].id] == f"{disk.kname}p1"
    assert any("does not know partition 1" in w for w in state.warnings)
