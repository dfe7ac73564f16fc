"""The seam between the storage walk and the probes of stacked devices (md, LUKS, LVM).

storage.py calls these for every md or device-mapper device it meets above the
described disks, lower devices first, and for signatures of containers nothing
is opened on. Until probe/md.py, probe/luks.py and probe/lvm.py exist, each device
is kept as an Unsupported record with a warning, so that whatever sits on top
still refers to a record of the description.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from resurgo.model import (
    LogicalVolume,
    LuksVolume,
    PhysicalVolume,
    RaidArray,
    Unsupported,
    VolumeGroup,
)
from resurgo.probe import ids

SYS_CLASS_BLOCK = Path("/sys/class/block")

StackRecordType = RaidArray | LuksVolume | LogicalVolume | Unsupported


@dataclass
class StackRecord:
    """What one stacked device adds to the description.

    record is the block device others build on (its id is what a filesystem, swap
    or higher device on it refers to); an LV brings its PVs and VG along (the
    caller keeps one of each id).
    """

    record: StackRecordType
    physical_volumes: list[PhysicalVolume] = field(default_factory=list)
    volume_groups: list[VolumeGroup] = field(default_factory=list)
    unsupported: list[Unsupported] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _not_yet(kname: str, kind: str, below: Mapping[str, str], why: str) -> StackRecord:
    details = tuple(f"on {k} ({rid})" for k, rid in below.items())
    rec = Unsupported(id=ids.unsupported(kname), kind=kind, path=f"/dev/{kname}", reason=why,
                      details=details)
    return StackRecord(record=rec, warnings=[f"/dev/{kname}: {why}; it is recorded but will not "
                                             f"be recreated"])


def describe_md(kname: str, members: Mapping[str, str]) -> StackRecord:
    """An md array; members maps the kernel names of its member devices to their record ids."""
    return _not_yet(kname, "md", members, "md RAID arrays are not described yet")


def dm_kind(kname: str, sys_block: Path = SYS_CLASS_BLOCK) -> str:
    """"luks", "lvm" or another device-mapper target family, from the dm uuid prefix."""
    try:
        uuid = (sys_block / kname / "dm" / "uuid").read_text().strip()
    except OSError:
        return "dm"
    if uuid.startswith("CRYPT-LUKS"):
        return "luks"
    if uuid.startswith("LVM-"):
        return "lvm"
    return uuid.split("-", 1)[0].lower() or "dm"


def describe_dm(kname: str, below: Mapping[str, str]) -> StackRecord:
    """A device-mapper device (LUKS mapping, LVM logical volume, ...); below: its slaves."""
    kind = dm_kind(kname)
    what = {"luks": "LUKS volumes", "lvm": "LVM logical volumes"}.get(
        kind, f"device-mapper devices of type {kind}"
    )
    return _not_yet(kname, kind, below, f"{what} are not described yet")


def describe_container(kname: str, device_id: str, blkid: Mapping[str, str]) -> StackRecord:
    """A container signature (LUKS, LVM PV, md member) with nothing active on top of it."""
    type_name = blkid.get("TYPE", "unknown")
    return _not_yet(kname, type_name, {kname: device_id},
                    f"holds a {type_name} signature but nothing on it is active, so its "
                    f"contents cannot be described")
