"""The recovery description as typed, frozen records. No I/O here.

Every record has an ``id`` unique in the description; records refer to the
records they build on by id (partition -> disk, filesystem -> partition or
volume, ...). Sizes are bytes unless a field says sectors; sector counts are
always accompanied by the sector size they are counted in.

docs/format.md documents every field; keep the two in step.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, fields, is_dataclass
from enum import StrEnum
from typing import Any, TypeVar


class Firmware(StrEnum):
    BIOS = "bios"
    UEFI = "uefi"


class BootloaderKind(StrEnum):
    GRUB_PC = "grub-pc"
    GRUB_EFI = "grub-efi"
    SYSTEMD_BOOT = "systemd-boot"
    NONE = "none"
    UNKNOWN = "unknown"


class TableLabel(StrEnum):
    GPT = "gpt"
    DOS = "dos"


class PartitionKind(StrEnum):
    PRIMARY = "primary"
    EXTENDED = "extended"
    LOGICAL = "logical"


class FsType(StrEnum):
    EXT2 = "ext2"
    EXT3 = "ext3"
    EXT4 = "ext4"
    XFS = "xfs"
    VFAT = "vfat"
    BTRFS = "btrfs"
    OTHER = "other"


class LvType(StrEnum):
    LINEAR = "linear"
    STRIPED = "striped"
    THIN_POOL = "thin-pool"
    THIN = "thin"
    RAID0 = "raid0"
    RAID1 = "raid1"
    RAID4 = "raid4"
    RAID5 = "raid5"
    RAID6 = "raid6"
    RAID10 = "raid10"
    MIRROR = "mirror"
    CACHE = "cache"
    SNAPSHOT = "snapshot"
    OTHER = "other"


class DriverClass(StrEnum):
    STORAGE = "storage"
    NETWORK = "network"
    OTHER = "other"


class OnFailure(StrEnum):
    ABORT = "abort"
    CONTINUE = "continue"


# A field whose metadata holds this key is left out of the file when it has its default.
OMIT_DEFAULT = "omit_default"


# A field whose metadata holds this key names other records by id (a str, an optional
# str, or a tuple of them): its value is the Ref saying which records it may name.
REF = "ref"


class Link(StrEnum):
    # A mere reference: a role the system gives a volume, the subvolume a mount shows.
    NAMES = "names"
    # The record is built on the one named: a layer on a device, a volume in its group,
    # a subvolume in its filesystem.
    ON = "on"
    # The record named is built on this one: a physical volume makes up its group.
    HOLDS = "holds"


@dataclass(frozen=True)
class Ref:
    # The Description groups (its fields) the record named may be in.
    groups: tuple[str, ...]
    # What the record named must be, as problems say it.
    what: str
    link: Link = Link.NAMES


def ref(groups: tuple[str, ...], what: str, link: Link = Link.NAMES) -> dict[str, Ref]:
    """The metadata of a field naming records of groups."""
    return {REF: Ref(groups, what, link)}


# What a device reference may name. An unsupported record stands in for a device the
# probe found but cannot describe (an md array before the md probe, say): what is built
# on it still refers to it, so the description stays whole and the plan can refuse it.
BLOCK = ("disks", "partitions", "raid_arrays", "luks_volumes", "logical_volumes", "unsupported")
# A layer built directly on a block device: what the device holds.
DEVICE = Ref(BLOCK, "block device", Link.ON)
ON_DEVICE = {REF: DEVICE}


class Encoding(StrEnum):
    UTF8 = "utf-8"
    BASE64 = "base64"


@dataclass(frozen=True)
class FormatInfo:
    version: str
    resurgo: str
    created: str
    host: str


@dataclass(frozen=True)
class OsRelease:
    id: str
    version_id: str = ""
    pretty_name: str = ""


@dataclass(frozen=True)
class Bootloader:
    kind: BootloaderKind
    # Disks whose MBR/boot code area holds the loader (BIOS), by disk id.
    disks: tuple[str, ...] = field(default=(), metadata=ref(("disks",), "disk"))
    # The BIOS boot partition on GPT disks, by partition id.
    bios_boot_partition: str | None = field(
        default=None, metadata=ref(("partitions",), "partition")
    )
    # Path of the loader inside the ESP, e.g. /EFI/debian/grubx64.efi.
    efi_path: str | None = None


@dataclass(frozen=True)
class SystemInfo:
    hostname: str
    machine_id: str
    architecture: str
    firmware: Firmware
    os_release: OsRelease
    kernel: str
    bootloader: Bootloader
    # Filesystem ids.
    system_volume: str | None = field(default=None, metadata=ref(("filesystems",), "filesystem"))
    boot_volume: str | None = field(default=None, metadata=ref(("filesystems",), "filesystem"))
    esp: str | None = field(default=None, metadata=ref(("filesystems",), "filesystem"))


@dataclass(frozen=True)
class PartitionTable:
    label: TableLabel
    # Disk GUID (gpt) or MBR disk identifier such as 0x1234abcd (dos).
    id: str
    first_lba: int | None = None
    last_lba: int | None = None


@dataclass(frozen=True)
class Disk:
    id: str
    path: str
    size: int
    logical_sector_size: int
    physical_sector_size: int
    transport: str = ""
    rotational: bool = False
    removable: bool = False
    critical: bool = False
    wwn: str | None = None
    serial: str | None = None
    model: str | None = None
    by_id: str | None = None
    table: PartitionTable | None = None


@dataclass(frozen=True)
class Partition:
    id: str
    disk: str = field(metadata=ref(("disks",), "disk", Link.ON))
    number: int
    start: int
    size: int
    sector_size: int
    # GPT type GUID, or the MBR type code such as "83".
    type: str
    kind: PartitionKind = PartitionKind.PRIMARY
    path: str | None = None
    uuid: str | None = None
    name: str | None = None
    attrs: str | None = None
    bootable: bool = False


@dataclass(frozen=True)
class RaidArray:
    id: str
    path: str
    level: str
    metadata: str
    uuid: str
    members: tuple[str, ...] = field(metadata=ON_DEVICE)
    size: int
    name: str | None = None
    chunk: int | None = None
    spares: tuple[str, ...] = field(default=(), metadata=ON_DEVICE)
    layout: str | None = None


@dataclass(frozen=True)
class LuksVolume:
    id: str
    device: str = field(metadata=ON_DEVICE)
    version: int
    uuid: str
    cipher: str
    key_size: int
    # The name the opened device has under /dev/mapper.
    name: str | None = None
    pbkdf: str | None = None
    hash: str | None = None
    label: str | None = None
    subsystem: str | None = None
    sector_size: int | None = None
    size: int | None = None


@dataclass(frozen=True)
class PhysicalVolume:
    id: str
    device: str = field(metadata=ON_DEVICE)
    uuid: str
    volume_group: str = field(metadata=ref(("volume_groups",), "volume group", Link.HOLDS))
    size: int


@dataclass(frozen=True)
class VolumeGroup:
    id: str
    name: str
    uuid: str
    extent_size: int
    size: int


@dataclass(frozen=True)
class LvSegment:
    start_extent: int
    extent_count: int
    type: str
    stripes: int = 1
    stripe_size: int | None = None
    # Physical volume ids this segment lies on.
    devices: tuple[str, ...] = field(
        default=(), metadata=ref(("physical_volumes",), "physical volume", Link.ON)
    )


@dataclass(frozen=True)
class LogicalVolume:
    id: str
    volume_group: str = field(metadata=ref(("volume_groups",), "volume group", Link.ON))
    name: str
    uuid: str
    size: int
    type: LvType
    path: str | None = None
    # For thin volumes: the thin pool's logical volume id.
    pool: str | None = field(
        default=None, metadata=ref(("logical_volumes",), "logical volume", Link.ON)
    )
    segments: tuple[LvSegment, ...] = ()


@dataclass(frozen=True)
class Mount:
    mountpoint: str
    options: str = "defaults"
    # For btrfs: the subvolume mounted there, by subvolume id.
    subvolume: str | None = field(default=None, metadata=ref(("subvolumes",), "subvolume"))


@dataclass(frozen=True)
class VolumeState:
    mounted: bool
    used_bytes: int | None = None
    total_bytes: int | None = None
    inodes_used: int | None = None
    inodes_total: int | None = None


@dataclass(frozen=True)
class ExtOptions:
    block_size: int
    inode_size: int
    features: tuple[str, ...] = ()
    inode_count: int | None = None
    reserved_blocks_percent: float | None = None
    journal: bool = True


@dataclass(frozen=True)
class XfsOptions:
    block_size: int
    sector_size: int
    inode_size: int
    ag_count: int | None = None
    log_size: int | None = None
    reflink: bool | None = None
    crc: bool | None = None
    finobt: bool | None = None
    sparse: bool | None = None
    bigtime: bool | None = None
    inobtcount: bool | None = None
    rmapbt: bool | None = None


@dataclass(frozen=True)
class VfatOptions:
    fat_size: int
    volume_id: str
    sector_size: int | None = None
    cluster_size: int | None = None


@dataclass(frozen=True)
class BtrfsOptions:
    node_size: int | None = None
    sector_size: int | None = None
    data_profile: str | None = None
    metadata_profile: str | None = None
    features: tuple[str, ...] = ()
    # The subvolume id of the default subvolume (5 is the top level).
    default_subvolume: int = 5


@dataclass(frozen=True)
class Filesystem:
    id: str
    device: str = field(metadata=ON_DEVICE)
    type: FsType
    uuid: str | None = None
    label: str | None = None
    # The type as the probe saw it when type is "other".
    type_name: str | None = None
    supported: bool = True
    size: int | None = None
    ext: ExtOptions | None = None
    xfs: XfsOptions | None = None
    vfat: VfatOptions | None = None
    btrfs: BtrfsOptions | None = None
    mounts: tuple[Mount, ...] = ()
    state: VolumeState | None = None


@dataclass(frozen=True)
class Subvolume:
    id: str
    filesystem: str = field(metadata=ref(("filesystems",), "filesystem", Link.ON))
    path: str
    subvol_id: int
    parent_id: int = 5
    uuid: str | None = None
    readonly: bool = False


@dataclass(frozen=True)
class Swap:
    id: str
    size: int
    # A block device id, or None for a swap file.
    device: str | None = field(default=None, metadata=ON_DEVICE)
    # For a swap file: its path in the system and the filesystem holding it.
    file: str | None = None
    filesystem: str | None = field(
        default=None, metadata=ref(("filesystems",), "filesystem", Link.ON)
    )
    uuid: str | None = None
    label: str | None = None
    page_size: int | None = None
    priority: int | None = None
    active: bool = False


@dataclass(frozen=True)
class RemovableDevice:
    id: str
    path: str
    size: int
    transport: str = ""
    wwn: str | None = None
    serial: str | None = None
    model: str | None = None


@dataclass(frozen=True)
class Driver:
    id: str
    device_class: DriverClass
    bus: str
    address: str
    modalias: str | None = None
    vendor: str | None = None
    device: str | None = None
    description: str | None = None
    module: str | None = None
    dependencies: tuple[str, ...] = ()


@dataclass(frozen=True)
class Module:
    """A kernel module the restored system needs, and why."""

    name: str
    reason: str
    dependencies: tuple[str, ...] = ()
    builtin: bool = False


@dataclass(frozen=True)
class ConfigFile:
    id: str
    path: str
    # None when the file is secret and sealed: its content (and digest) are kept
    # encrypted beside the description, in the set's secrets file.
    content: str | None = None
    encoding: Encoding = Encoding.UTF8
    # Permission bits in octal, as chmod takes them.
    mode: str = "0644"
    sha256: str | None = None
    # The system keeps the file from other users (no read bit for others) or it is of a
    # kind that holds keys (Wi-Fi, VPN). Written only when true, so that a description
    # without secrets reads the same to a resurgo that predates the field.
    secret: bool = field(default=False, metadata={OMIT_DEFAULT: True})

    @property
    def sealed(self) -> bool:
        return self.content is None


@dataclass(frozen=True)
class CatalogRef:
    path: str
    sha256: str
    files: int
    packages: int
    package_manager: str


@dataclass(frozen=True)
class Command:
    seq: int
    program: str
    args: tuple[str, ...] = ()
    on_failure: OnFailure = OnFailure.ABORT
    description: str | None = None


@dataclass(frozen=True)
class Unsupported:
    """Something the probe found but cannot describe fully: kept, with what is known."""

    id: str
    kind: str
    path: str
    reason: str
    details: tuple[str, ...] = ()


@dataclass(frozen=True)
class Canary:
    """A file of fresh random content that save wrote into the saved system just before
    its archives were made: a rehearsal finds it in the recovered system, unchanged."""

    # Its path in the saved system.
    path: str
    # The SHA-256 of its bytes, in lower-case hex.
    sha256: str


@dataclass(frozen=True)
class Rehearsal:
    """What a rehearsal of the set checks in the recovered system, beyond the
    description's other facts (hostname, machine-id, fstab): recorded by save."""

    # None when save wrote none (a --root that is not the running system, or a canary
    # path that the set leaves out).
    canary: Canary | None = None
    # The systemd units that were failed when the set was saved, by name; None when that
    # is not known (systemd not running, or a --root that is not the running system),
    # which is not the same as none failed.
    failed_units: tuple[str, ...] | None = None


def initramfs_paths(kernel: str) -> tuple[str, str]:
    """Where initramfs-tools and dracut put a kernel's initramfs."""
    return f"/boot/initrd.img-{kernel}", f"/boot/initramfs-{kernel}.img"


@dataclass(frozen=True)
class InitramfsImage:
    """An initramfs image of the saved system."""

    # The kernel release it is for, as /lib/modules and /boot name it.
    kernel: str
    # Its path in the saved system, e.g. /boot/initrd.img-6.1.0-28-amd64.
    path: str


@dataclass(frozen=True)
class MadeAtRecovery:
    """What save left out of the set because the recovery makes it anew in the restored
    system, from the packages and configuration restored there."""

    # save --initramfs rebuild: made by the system's own generator (update-initramfs,
    # dracut) when the recovery finalizes it.
    initramfs: tuple[InitramfsImage, ...] = ()


@dataclass(frozen=True)
class Description:
    format: FormatInfo
    system: SystemInfo
    disks: tuple[Disk, ...] = ()
    partitions: tuple[Partition, ...] = ()
    raid_arrays: tuple[RaidArray, ...] = ()
    luks_volumes: tuple[LuksVolume, ...] = ()
    physical_volumes: tuple[PhysicalVolume, ...] = ()
    volume_groups: tuple[VolumeGroup, ...] = ()
    logical_volumes: tuple[LogicalVolume, ...] = ()
    filesystems: tuple[Filesystem, ...] = ()
    subvolumes: tuple[Subvolume, ...] = ()
    swaps: tuple[Swap, ...] = ()
    removable_devices: tuple[RemovableDevice, ...] = ()
    drivers: tuple[Driver, ...] = ()
    modules: tuple[Module, ...] = ()
    config_files: tuple[ConfigFile, ...] = ()
    catalog: CatalogRef | None = None
    commands: tuple[Command, ...] = ()
    unsupported: tuple[Unsupported, ...] = field(default=())
    # Since format 1.2; save writes it, describe does not.
    rehearsal: Rehearsal | None = None
    # Since format 1.3; save writes it (--initramfs rebuild), describe does not.
    made_at_recovery: MadeAtRecovery | None = None

    def initramfs_made_at_recovery(self) -> tuple[InitramfsImage, ...]:
        return self.made_at_recovery.initramfs if self.made_at_recovery is not None else ()

    def records(self) -> Iterator[tuple[str, int, Any]]:
        """(group, index, record) of every record with an id, group by group."""
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                for i, rec in enumerate(value):
                    if is_dataclass(rec) and hasattr(rec, "id"):
                        yield f.name, i, rec

    # Block devices by id, whatever their kind: what a "device" reference may name.
    def block_devices(self) -> dict[str, Disk | Partition | RaidArray | LuksVolume | LogicalVolume]:
        out: dict[str, Disk | Partition | RaidArray | LuksVolume | LogicalVolume] = {}
        for group in (
            self.disks,
            self.partitions,
            self.raid_arrays,
            self.luks_volumes,
            self.logical_volumes,
        ):
            for rec in group:
                out[rec.id] = rec
        return out


# ------------------------------------------------------------------ references


@dataclass(frozen=True)
class Reference:
    """One id a record names, through a field marked REF."""

    # The field, from the record walked (a tuple's index last).
    where: tuple[str | int, ...]
    target: str
    ref: Ref


_FIELDS: dict[type, tuple[tuple[tuple[str, Ref], ...], tuple[str, ...]]] = {}


def _fields(cls: type) -> tuple[tuple[tuple[str, Ref], ...], tuple[str, ...]]:
    """(the fields of cls that name records, its other fields); walked for every record."""
    found = _FIELDS.get(cls)
    if found is None:
        own = tuple((f.name, f.metadata[REF]) for f in fields(cls) if REF in f.metadata)
        other = tuple(f.name for f in fields(cls) if REF not in f.metadata)
        found = _FIELDS[cls] = (own, other)
    return found


def references(record: object, where: tuple[str | int, ...] = ()) -> Iterator[Reference]:
    """Every id record names, its own fields' first, then those of the records it holds
    (a logical volume's segments, a filesystem's mounts), in the order of the fields."""
    own, other = _fields(type(record))
    for name, r in own:
        value = getattr(record, name)
        if isinstance(value, tuple):
            for i, target in enumerate(value):
                yield Reference((*where, name, i), target, r)
        elif value is not None:
            yield Reference((*where, name), value, r)
    for name in other:
        value = getattr(record, name)
        if isinstance(value, tuple):
            for i, item in enumerate(value):
                if is_dataclass(item):
                    yield from references(item, (*where, name, i))
        elif is_dataclass(value) and not isinstance(value, type):
            yield from references(value, (*where, name))


def built_on(record: object) -> Iterator[Reference]:
    """What record is built on, as it names them (Link.ON)."""
    return (r for r in references(record) if r.ref.link == Link.ON)


def devices_below(record: object) -> list[str]:
    """The block devices record is built directly on: a partition's disk, an array's
    members, a thin volume's pool."""
    return [r.target for r in built_on(record) if set(r.ref.groups) <= _BLOCK_GROUPS]


_BLOCK_GROUPS = frozenset(BLOCK)
R = TypeVar("R")


def referrers(
    records: Iterable[R], link: Link = Link.ON, into: str | None = None
) -> dict[str, list[R]]:
    """records by each id they name through a reference of link (into group into, if
    given), in the order given."""
    out: dict[str, list[R]] = {}
    for rec in records:
        for r in references(rec):
            if r.ref.link == link and (into is None or into in r.ref.groups):
                out.setdefault(r.target, []).append(rec)
    return out
