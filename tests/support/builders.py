"""Small builders of descriptions and actual disks for the planner tests."""

from __future__ import annotations

import dataclasses
import zlib

from resurgo.finalize import identity
from resurgo.finalize.identity import Identities
from resurgo.machine import ActualDisk
from resurgo.model import (
    Bootloader,
    BootloaderKind,
    Description,
    Disk,
    ExtOptions,
    Filesystem,
    Firmware,
    FormatInfo,
    FsType,
    LogicalVolume,
    LuksVolume,
    LvType,
    Mount,
    OsRelease,
    Partition,
    PartitionKind,
    PartitionTable,
    PhysicalVolume,
    Swap,
    SystemInfo,
    TableLabel,
    VfatOptions,
    VolumeGroup,
    VolumeState,
)
from resurgo.plan import make_plan
from resurgo.plan.model import Plan, PlanOptions
from resurgo.probe.state import StorageState
from tests.support.consts import ESP, GIB, LINUX, MIB, SWAP


def disk(
    name: str = "sda",
    size: int = 20 * GIB,
    lss: int = 512,
    label: TableLabel | None = TableLabel.GPT,
    *,
    wwn: str | None = None,
    serial: str | None = None,
    transport: str = "sata",
    critical: bool = False,
    removable: bool = False,
) -> Disk:
    table = None
    if label == TableLabel.GPT:
        table = PartitionTable(TableLabel.GPT, "8a7d8c39-5c46-4c5f-9f1e-0a1b2c3d4e5f")
    elif label == TableLabel.DOS:
        table = PartitionTable(TableLabel.DOS, "0x1234abcd")
    return Disk(
        id=f"disk.{name}",
        path=f"/dev/{name}",
        size=size,
        logical_sector_size=lss,
        physical_sector_size=max(lss, 4096),
        transport=transport,
        critical=critical,
        removable=removable,
        wwn=wwn,
        serial=serial,
        table=table,
    )


def part(
    d: Disk,
    number: int,
    start: int,
    size: int,
    type: str = LINUX,
    kind: PartitionKind = PartitionKind.PRIMARY,
) -> Partition:
    """A partition of d at start/size given in BYTES."""
    ss = d.logical_sector_size
    assert start % ss == 0 and size % ss == 0
    name = d.path.removeprefix("/dev/")
    sep = "p" if name[-1].isdigit() else ""
    return Partition(
        id=f"part.{name}{sep}{number}",
        disk=d.id,
        number=number,
        start=start // ss,
        size=size // ss,
        sector_size=ss,
        type=type,
        kind=kind,
        path=f"{d.path}{sep}{number}",
        uuid=f"00000000-0000-4000-8000-{number:012d}",
    )


def ext4(
    device: str,
    mountpoint: str | None,
    used: int | None,
    *,
    size: int | None = None,
    block: int = 4096,
    fs_type: FsType = FsType.EXT4,
    fid: str | None = None,
) -> Filesystem:
    return Filesystem(
        id=fid or f"fs.{device.split('.', 1)[1]}",
        device=device,
        type=fs_type,
        uuid=f"11111111-2222-4333-8444-{zlib.crc32(device.encode()):012d}",
        label=(mountpoint or "data").strip("/")[:12] or "root",
        size=size,
        ext=ExtOptions(block_size=block, inode_size=256, features=("has_journal", "extent")),
        mounts=(Mount(mountpoint),) if mountpoint else (),
        state=VolumeState(mounted=mountpoint is not None, used_bytes=used),
    )


def other_fs(
    device: str, fs_type: FsType, mountpoint: str | None, used: int | None, **kw: object
) -> Filesystem:
    return Filesystem(
        id=f"fs.{device.split('.', 1)[1]}",
        device=device,
        type=fs_type,
        uuid="22222222-3333-4444-8555-666666666666",
        mounts=(Mount(mountpoint),) if mountpoint else (),
        state=VolumeState(mounted=mountpoint is not None, used_bytes=used),
        **kw,  # type: ignore[arg-type]
    )


def esp(device: str, fat: int = 32, sector: int = 512) -> Filesystem:
    return Filesystem(
        id=f"fs.{device.split('.', 1)[1]}",
        device=device,
        type=FsType.VFAT,
        label="EFI",
        vfat=VfatOptions(
            fat_size=fat, volume_id="ABCD-1234", sector_size=sector, cluster_size=4096
        ),
        mounts=(Mount("/boot/efi"),),
        state=VolumeState(mounted=True, used_bytes=5 * MIB),
    )


def swap(device: str, size: int) -> Swap:
    return Swap(
        id=f"swap.{device.split('.', 1)[1]}",
        size=size,
        device=device,
        uuid="33333333-4444-4555-8666-777777777777",
    )


def description(**groups: object) -> Description:
    system = groups.pop("system", None)
    if system is None:
        fss = groups.get("filesystems", ())
        root = next((f.id for f in fss if any(m.mountpoint == "/" for m in f.mounts)), None)  # type: ignore[attr-defined]
        boot = next((f.id for f in fss if any(m.mountpoint == "/boot" for m in f.mounts)), root)  # type: ignore[attr-defined]
        efi = next((f.id for f in fss if any(m.mountpoint == "/boot/efi" for m in f.mounts)), None)  # type: ignore[attr-defined]
        system = SystemInfo(
            hostname="testhost",
            machine_id="0" * 32,
            architecture="x86_64",
            firmware=Firmware.UEFI,
            os_release=OsRelease(id="debian", version_id="12"),
            kernel="6.1.0",
            bootloader=Bootloader(kind=BootloaderKind.GRUB_EFI),
            system_volume=root,
            boot_volume=boot,
            esp=efi,
        )
    return Description(
        format=FormatInfo(
            version="1.0", resurgo="0.1.0", created="2026-01-01T00:00:00Z", host="testhost"
        ),
        system=system,  # type: ignore[arg-type]
        **{k: tuple(v) for k, v in groups.items()},  # type: ignore[arg-type, call-overload]
    )


def actual(
    kname: str = "vdb",
    size: int = 20 * GIB,
    lss: int = 512,
    **kw: object,
) -> ActualDisk:
    return ActualDisk(
        path=f"/dev/{kname}",
        kname=kname,
        size=size,
        logical_sector_size=lss,
        physical_sector_size=max(lss, 4096),
        **kw,  # type: ignore[arg-type]
    )


def standard(
    size: int = 20 * GIB, lss: int = 512, used_root: int = 3 * GIB, name: str = "sda", **kw: object
) -> Description:
    """A UEFI system on one GPT disk: ESP 512 MiB, /boot 1 GiB, / the rest but 2 GiB, swap 2 GiB."""
    d = disk(name, size, lss, **kw)  # type: ignore[arg-type]
    ss = lss
    last_usable_end = size - 33 * 512 if ss == 512 else size - 5 * 4096
    swap_start = (last_usable_end - 2 * GIB) // MIB * MIB
    p1 = part(d, 1, MIB, 512 * MIB, ESP)
    p2 = part(d, 2, 513 * MIB, GIB)
    p3 = part(d, 3, 1537 * MIB, swap_start - 1537 * MIB)
    p4 = part(d, 4, swap_start, 2 * GIB, SWAP)
    return description(
        disks=[d],
        partitions=[p1, p2, p3, p4],
        filesystems=[
            esp(p1.id, sector=lss),
            ext4(p2.id, "/boot", 100 * MIB),
            ext4(p3.id, "/", used_root),
        ],
        swaps=[swap(p4.id, 2 * GIB)],
    )


# Valid values: the CLI tests read these descriptions through validation.
LUKS_UUID = "5d4c3b2a-1f0e-4d9c-8b7a-6f5e4d3c2b1a"


def luks_fixture() -> Description:
    """ESP-less BIOS-style layout: /boot, then LUKS -> LVM (root, swap)."""
    d = disk("sda", 20 * GIB)
    p1 = part(d, 1, MIB, GIB)
    p2 = part(d, 2, MIB + GIB, 19 * GIB - 2 * MIB)
    lk = LuksVolume("luks.sda2", p2.id, 2, LUKS_UUID, "aes-xts-plain64", 512, name="sda2_crypt")
    vg = VolumeGroup("vg.vg-sys", "vg-sys", "vgUUID-0000-0000-0000-0000-0000-000001",
                     4 * MIB, 19 * GIB - 24 * MIB)
    pv = PhysicalVolume("pv.dm-0", lk.id, "pvUUID-0000-0000-0000-0000-0000-000001", vg.id,
                        19 * GIB - 20 * MIB)
    root = LogicalVolume("lv.vg-sys.root", vg.id, "root", "lvUUID-0000-0000-0000-0000-0000-000001",
                         10 * GIB, LvType.LINEAR)
    sw = LogicalVolume("lv.vg-sys.swap_1", vg.id, "swap_1",
                       "lvUUID-0000-0000-0000-0000-0000-000002", GIB, LvType.LINEAR)
    desc = description(
        disks=[d],
        partitions=[p1, p2],
        luks_volumes=[lk],
        volume_groups=[vg],
        physical_volumes=[pv],
        logical_volumes=[root, sw],
        filesystems=[ext4(p1.id, "/boot", 80 * MIB), ext4(root.id, "/", 2 * GIB, fid="fs.dm-1")],
        swaps=[swap(sw.id, GIB)],
    )
    return desc


def description_of(state: StorageState) -> Description:
    """A description of what the probe found, with a fixed system."""
    return Description(
        format=FormatInfo(version="1", resurgo="0", created="2025-01-01T00:00:00Z", host="t"),
        system=SystemInfo(
            hostname="t", machine_id="0" * 32, architecture="x86_64", firmware=Firmware.BIOS,
            os_release=OsRelease(id="debian"), kernel="6",
            bootloader=Bootloader(kind=BootloaderKind.NONE),
        ),
        disks=tuple(state.disks),
        partitions=tuple(state.partitions),
        filesystems=tuple(state.filesystems),
        subvolumes=tuple(state.subvolumes),
        swaps=tuple(state.swaps),
        removable_devices=tuple(state.removable_devices),
        unsupported=tuple(state.unsupported),
    )


BY_ID = "/dev/disk/by-id/virtio-rsg-vda"


def vda_to_nvme() -> tuple[Identities, Plan]:
    """The standard UEFI layout saved on virtio /dev/vda, planned onto /dev/nvme0n1."""
    desc = standard(name="vda", transport="virtio")
    desc = dataclasses.replace(
        desc, disks=tuple(dataclasses.replace(d, by_id=BY_ID) for d in desc.disks)
    )
    plan = make_plan(desc, [actual("nvme0n1", transport="nvme")], PlanOptions(which=str))
    assert plan.ok, plan.failures
    return identity.planned(desc, plan), plan
