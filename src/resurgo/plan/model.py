"""What a recovery plan is made of: matches, fitted sizes, actions, failures.

Frozen records and enums only; no I/O. Sizes are bytes unless a field says
sectors; sector counts are in the TARGET disk's logical sectors and carry that
sector size beside them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, ClassVar

from resurgo.model import FsType, LvType, PartitionKind, TableLabel

if TYPE_CHECKING:
    # Types only: the finalize package imports this module.
    from resurgo.finalize.model import FinalizeReport


class GrowPolicy(StrEnum):
    # The partition (or LV) holding the system volume, else the last resizable one, takes it all.
    DEFAULT = "default"
    # Spread over every resizable partition (or LV), in proportion to its saved size.
    PROPORTIONAL = "proportional"


class MatchBy(StrEnum):
    MAP = "map"
    WWN = "wwn"
    SERIAL = "serial"
    # The only disk that fits by size and bus: no other assignment is as good.
    SIZE = "size"
    # Disks equal by size and bus, paired in the order of their names.
    ORDER = "order"


@dataclass(frozen=True)
class DiskMatch:
    """A saved disk and the actual disk that receives its layout."""

    saved: str
    saved_path: str
    path: str
    kname: str
    by: MatchBy
    size: int
    logical_sector_size: int
    wwn: str | None = None
    serial: str | None = None
    model: str | None = None


class Change(StrEnum):
    SAME = "same"
    GROW = "grow"
    SHRINK = "shrink"
    NEW = "new"


@dataclass(frozen=True)
class FittedPartition:
    id: str
    number: int
    kind: PartitionKind
    # The device node the partition will have on the target disk.
    device: str
    # In target sectors of sector_size bytes.
    start: int
    size: int
    sector_size: int
    # Bytes, on the saved disk.
    before_start: int
    before: int
    # A short name for people: "EFI", "boot", "/", "swap", "lvm vg0" ...
    label: str
    fixed: bool

    @property
    def after(self) -> int:
        return self.size * self.sector_size

    @property
    def start_bytes(self) -> int:
        return self.start * self.sector_size

    @property
    def change(self) -> Change:
        return change(self.before, self.after)


@dataclass(frozen=True)
class DiskLayout:
    """The new layout of one target disk."""

    saved: str
    device: str
    size: int
    sector_size: int
    before_size: int
    before_sector_size: int
    label: TableLabel | None
    table_id: str | None
    # Usable LBA range of the new table, in target sectors (None without a table).
    first_lba: int | None
    last_lba: int | None
    partitions: tuple[FittedPartition, ...] = ()
    # Without a table: what lies on the whole disk (e.g. "ext4 /data"), else None.
    whole: str | None = None


class VolumeKind(StrEnum):
    MD = "md"
    LUKS = "luks"
    VG = "vg"
    LV = "lv"
    FILESYSTEM = "filesystem"
    SWAP = "swap"


@dataclass(frozen=True)
class FittedVolume:
    """Anything above the partitions, with its size before and after."""

    id: str
    kind: VolumeKind
    device: str
    before: int | None
    after: int
    label: str = ""

    @property
    def change(self) -> Change:
        return Change.NEW if self.before is None else change(self.before, self.after)


def change(before: int, after: int) -> Change:
    if after == before:
        return Change.SAME
    return Change.GROW if after > before else Change.SHRINK


class ActionKind(StrEnum):
    # Declared in the order actions of one dependency level are listed. Each parameter type
    # below names its kind (its `kind`), and an Action's kind is that of its parameters.
    WIPE = "wipe"
    PARTITION_TABLE = "partition-table"
    MD_CREATE = "md-create"
    LUKS_FORMAT = "luks-format"
    LUKS_OPEN = "luks-open"
    PV_CREATE = "pv-create"
    VG_CREATE = "vg-create"
    LV_CREATE = "lv-create"
    MKFS = "mkfs"
    MKSWAP = "mkswap"
    SUBVOLUME_CREATE = "subvolume-create"
    SUBVOLUME_DEFAULT = "subvolume-default"
    MOUNT = "mount"


@dataclass(frozen=True)
class WipeParams:
    """wipefs -a on the whole disk: no old signature may survive to confuse what follows."""

    kind: ClassVar[ActionKind] = ActionKind.WIPE
    disk: str
    device: str


@dataclass(frozen=True)
class TableEntry:
    partition: str
    number: int
    kind: PartitionKind
    # Target sectors.
    start: int
    size: int
    type: str
    device: str
    uuid: str | None = None
    name: str | None = None
    attrs: str | None = None
    bootable: bool = False


@dataclass(frozen=True)
class TableParams:
    """The whole new partition table of one disk, in the target's sectors."""

    kind: ClassVar[ActionKind] = ActionKind.PARTITION_TABLE
    disk: str
    device: str
    label: TableLabel
    id: str
    sector_size: int
    first_lba: int
    last_lba: int
    partitions: tuple[TableEntry, ...]


@dataclass(frozen=True)
class MdParams:
    kind: ClassVar[ActionKind] = ActionKind.MD_CREATE
    array: str
    device: str
    level: str
    metadata: str
    uuid: str
    members: tuple[str, ...]
    spares: tuple[str, ...] = ()
    name: str | None = None
    chunk: int | None = None
    layout: str | None = None


@dataclass(frozen=True)
class LuksFormatParams:
    kind: ClassVar[ActionKind] = ActionKind.LUKS_FORMAT
    volume: str
    device: str
    version: int
    uuid: str
    cipher: str
    key_size: int
    pbkdf: str | None = None
    hash: str | None = None
    label: str | None = None
    subsystem: str | None = None
    sector_size: int | None = None


@dataclass(frozen=True)
class LuksOpenParams:
    kind: ClassVar[ActionKind] = ActionKind.LUKS_OPEN
    volume: str
    device: str
    name: str
    # The opened device, /dev/mapper/NAME.
    mapped: str


@dataclass(frozen=True)
class PvParams:
    kind: ClassVar[ActionKind] = ActionKind.PV_CREATE
    pv: str
    device: str
    uuid: str
    volume_group: str


@dataclass(frozen=True)
class VgParams:
    kind: ClassVar[ActionKind] = ActionKind.VG_CREATE
    vg: str
    name: str
    uuid: str
    extent_size: int
    devices: tuple[str, ...]


@dataclass(frozen=True)
class LvParams:
    kind: ClassVar[ActionKind] = ActionKind.LV_CREATE
    lv: str
    vg_name: str
    name: str
    uuid: str
    type: LvType
    extents: int
    device: str
    stripes: int = 1
    stripe_size: int | None = None
    # The thin pool of a thin volume (its LV name), and a thin volume's virtual size in bytes.
    pool: str | None = None
    virtual_size: int | None = None
    # Physical volume devices the LV must lie on (empty: anywhere in the VG).
    devices: tuple[str, ...] = ()


@dataclass(frozen=True)
class MkfsParams:
    kind: ClassVar[ActionKind] = ActionKind.MKFS
    filesystem: str
    device: str
    type: FsType
    program: str
    # Arguments between the program and the device: [program, *options, device].
    options: tuple[str, ...]
    sector_size: int
    uuid: str | None = None
    label: str | None = None


@dataclass(frozen=True)
class MkswapParams:
    kind: ClassVar[ActionKind] = ActionKind.MKSWAP
    swap: str
    device: str
    options: tuple[str, ...]
    uuid: str | None = None
    label: str | None = None


@dataclass(frozen=True)
class SubvolumeParams:
    kind: ClassVar[ActionKind] = ActionKind.SUBVOLUME_CREATE
    subvolume: str
    filesystem: str
    device: str
    # Relative to the top level of the filesystem.
    path: str
    readonly: bool = False


@dataclass(frozen=True)
class SubvolumeDefaultParams:
    kind: ClassVar[ActionKind] = ActionKind.SUBVOLUME_DEFAULT
    filesystem: str
    device: str
    path: str


@dataclass(frozen=True)
class MountParams:
    kind: ClassVar[ActionKind] = ActionKind.MOUNT
    filesystem: str
    device: str
    # Where it is mounted in the restored system, and where during recovery (under the root).
    mountpoint: str
    target: str
    type: str
    options: tuple[str, ...] = ()


Params = (
    WipeParams
    | TableParams
    | MdParams
    | LuksFormatParams
    | LuksOpenParams
    | PvParams
    | VgParams
    | LvParams
    | MkfsParams
    | MkswapParams
    | SubvolumeParams
    | SubvolumeDefaultParams
    | MountParams
)


@dataclass(frozen=True)
class Action:
    id: str
    # The actual disks (paths) this action writes to; an executor refuses to write elsewhere.
    writes: tuple[str, ...]
    params: Params
    depends_on: tuple[str, ...] = ()
    before: int | None = None
    after: int | None = None
    # One line for people; not part of the plan hash.
    summary: str = ""

    @property
    def kind(self) -> ActionKind:
        # The parameters' type says what the action is: no second field to disagree with it.
        return self.params.kind


class Check(StrEnum):
    TARGET_MISSING = "target-missing"
    TARGET_FORBIDDEN = "target-forbidden"
    TARGET_IN_USE = "target-in-use"
    TARGET_TOO_SMALL = "target-too-small"
    AMBIGUOUS_MATCH = "ambiguous-match"
    NO_DISK = "no-disk"
    TOO_MANY_DISKS = "too-many-disks"
    FILESYSTEM = "filesystem"
    TOOL_MISSING = "tool-missing"
    KEY_MISSING = "key-missing"
    # A name the recovery must give is in use by a disk it does not write to.
    IDENTITY_IN_USE = "identity-in-use"


@dataclass(frozen=True)
class PreconditionFailure:
    check: Check
    # The saved record id or actual disk path it is about.
    subject: str
    message: str
    hint: str | None = None


class IdentityKind(StrEnum):
    """A saved identity the recreated layout carries again, or anew."""

    # A filesystem's UUID (a btrfs's fsid, a FAT's volume id).
    FILESYSTEM = "filesystem"
    SWAP = "swap"
    LUKS = "luks"
    # An LVM physical volume's UUID.
    PV = "pv"
    # A volume group's name (vgcreate makes a new VG UUID whatever is done).
    VG = "vg"
    MD = "md"
    # A GPT partition's GUID (PARTUUID).
    PARTITION = "partition"
    # A partition table's disk GUID or MBR disk id.
    TABLE = "table"


@dataclass(frozen=True)
class IdentityDecision:
    """What the recovery does with one saved identity: kept, or replaced by a new one
    (finalize then rewrites what names it), and why."""

    record: str
    kind: IdentityKind
    saved: str
    # What it is recreated with: the saved value when kept.
    new: str
    # The devices outside the target disks that show the saved value now.
    seen_on: tuple[str, ...]
    why: str

    @property
    def kept(self) -> bool:
        return self.new == self.saved


@dataclass(frozen=True)
class PlanOptions:
    # Disks recovery may use (paths or kernel names); empty: every eligible disk.
    targets: tuple[str, ...] = ()
    # (saved disk id or path, actual disk path or kernel name) pairs.
    maps: tuple[tuple[str, str], ...] = ()
    grow: GrowPolicy = GrowPolicy.DEFAULT
    # LUKS volume ids a key is given for, and whether a person can type a passphrase.
    keys: frozenset[str] = frozenset()
    interactive: bool = False
    # Where the recreated filesystems are mounted during recovery.
    root: str = "/mnt/resurgo"
    # Give every recreated identity a new value (finalize rewrites what names them).
    new_identities: bool = False
    # The recovering machine's own identity (its DMI product UUID; "" unknown): new values
    # derive from it too, so two machines recovered from one set differ even where their
    # disks carry no serial or WWN and have the same sizes.
    machine: str = ""
    # Where a program is installed (run.which), for the tool checks: given by the caller, so
    # that the planner reads nothing of the machine.
    which: Callable[[str], str | None] = field(kw_only=True, compare=False)


@dataclass(frozen=True)
class PlannedCommand:
    """One of the description's commands as recover runs it, as root, once the layout is
    mounted: the program and its arguments exactly, and where it writes."""

    seq: int
    program: str
    args: tuple[str, ...]
    on_failure: str
    # A restore's tree: the directory under the root it restores into, or for a btrfs tree
    # "DEVICE:/PATH", PATH below the top level of the btrfs recreated on DEVICE. Empty for
    # any other program: it runs with RESURGO_ROOT naming the root.
    target: str
    # For people; not part of the plan hash.
    description: str | None = None

    @property
    def argv(self) -> tuple[str, ...]:
        return (self.program, *self.args)


@dataclass(frozen=True)
class Plan:
    host: str
    created: str
    grow: GrowPolicy
    root: str
    matches: tuple[DiskMatch, ...]
    layouts: tuple[DiskLayout, ...]
    volumes: tuple[FittedVolume, ...]
    actions: tuple[Action, ...]
    failures: tuple[PreconditionFailure, ...]
    warnings: tuple[str, ...]
    notes: tuple[str, ...]
    # Of everything below too (render.plan_hash): what `recover --plan-hash` approves.
    hash: str
    # The description's commands, in the order recover runs them after the layout (a
    # recover --layout-only runs none of them: it executes the layout part of this plan).
    commands: tuple[PlannedCommand, ...] = ()
    # What finalize will do (its preview, finalize.planned); None when it will not run, or
    # when the plan cannot be executed.
    finalize: FinalizeReport | None = None
    # The saved identities seen on disks outside the targets, and every one made anew,
    # with what the recovery does about each (plan.identities).
    identities: tuple[IdentityDecision, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.failures
