"""What the storage probe hands to the rest of describe."""

from __future__ import annotations

from dataclasses import dataclass, field

from resurgo.model import (
    Disk,
    Filesystem,
    LogicalVolume,
    LuksVolume,
    Partition,
    PhysicalVolume,
    RaidArray,
    RemovableDevice,
    Subvolume,
    Swap,
    Unsupported,
    VolumeGroup,
)


@dataclass
class StorageState:
    disks: list[Disk] = field(default_factory=list)
    partitions: list[Partition] = field(default_factory=list)
    raid_arrays: list[RaidArray] = field(default_factory=list)
    luks_volumes: list[LuksVolume] = field(default_factory=list)
    physical_volumes: list[PhysicalVolume] = field(default_factory=list)
    volume_groups: list[VolumeGroup] = field(default_factory=list)
    logical_volumes: list[LogicalVolume] = field(default_factory=list)
    filesystems: list[Filesystem] = field(default_factory=list)
    subvolumes: list[Subvolume] = field(default_factory=list)
    swaps: list[Swap] = field(default_factory=list)
    removable_devices: list[RemovableDevice] = field(default_factory=list)
    unsupported: list[Unsupported] = field(default_factory=list)
    # Kernel names (sda, nvme0n1, dm-0, md127, ...) of every block device in the description.
    knames: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
