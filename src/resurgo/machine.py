"""This machine as the planner receives it: its whole disks, as probe.actual reads them.

Frozen records only; no I/O. The planner takes them as data, so that it stays pure and a
test can give it any disks.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class SeenKind(StrEnum):
    """What an identity seen on a device is."""

    # A filesystem's UUID (a btrfs's fsid, a FAT's volume id); its type says which.
    FILESYSTEM = "filesystem"
    SWAP = "swap"
    LUKS = "luks"
    # An LVM physical volume's UUID, and the name of the volume group it belongs to.
    PV = "pv"
    VG = "vg"
    # An md array's UUID, read on a member.
    MD = "md"
    # A partition's GUID (PARTUUID), and a partition table's disk GUID or MBR id.
    PARTITION = "partition"
    TABLE = "table"
    # What is active on the disk now: an assembled md array (its /dev/mdN), a
    # device-mapper device (its name: an open LUKS volume, an active LV), the volume
    # group of an active LV.
    ACTIVE_MD = "active-md"
    ACTIVE_DM = "active-dm"
    ACTIVE_VG = "active-vg"


@dataclass(frozen=True)
class SeenIdentity:
    """An identity a device of a disk shows now (blkid -p, sysfs, lvm)."""

    kind: SeenKind
    value: str
    # Where it is seen: the disk itself, a partition, or a device built on them.
    device: str
    # blkid's TYPE (ext4, xfs, btrfs, swap, crypto_LUKS, ...), where there is one.
    type: str = ""


@dataclass(frozen=True)
class ActualDisk:
    """A whole disk of the machine the recovery runs on, as /sys shows it now."""

    path: str
    kname: str
    size: int
    logical_sector_size: int = 512
    physical_sector_size: int = 512
    wwn: str | None = None
    serial: str | None = None
    model: str | None = None
    transport: str = ""
    removable: bool = False
    rotational: bool = False
    # What uses the disk now: "sdb1 on /mnt", active swap areas on it, holders (dm-0, md127).
    mounted: tuple[str, ...] = ()
    swaps: tuple[str, ...] = ()
    holders: tuple[str, ...] = ()
    # It holds the running (rescue) system or its boot medium.
    holds_system: bool = False
    # It holds the recovery set being read (the description file), or a key file.
    holds_recovery_set: bool = False
    # The identities its devices show now: what a recovery onto other disks must not
    # collide with (plan.identities).
    identities: tuple[SeenIdentity, ...] = ()

    @property
    def in_use(self) -> bool:
        return bool(self.mounted or self.swaps or self.holders)
