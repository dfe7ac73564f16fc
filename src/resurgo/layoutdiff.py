"""Whether a saved layout is still the machine's: the storage of two descriptions compared,
as `rear checklayout` compares its disklayout.conf with the machine's (pure, no I/O).

A disk, partition, RAID array, LUKS volume, LVM physical volume, volume group or logical
volume, filesystem, btrfs subvolume or swap added, removed, resized or made anew (another
UUID, type or label) is a difference: a recovery from the older set would rebuild a
layout the machine no longer has, and would not restore what lives on the new volumes.

Records are matched by what identifies them across reboots, not by their ids, which
are the kernel names of the moment (sda may be sdb after the next boot): a disk by its
WWN or serial number (by its path only when it has neither, as loop devices), a
partition by its disk and number, an array by its UUID, a volume group by its name, a
logical volume by its group and name, and what is built on a device (LUKS, a physical
volume, a filesystem, swap) by that device.

What changes without meaning is left out: free space and inode counts (VolumeState),
mount options, sector counts of the table that follow the disk's size, LVM segments
(pvmove moves them, the volume stays), read-only btrfs subvolumes (the snapshots
snapper and timeshift make and drop by the hour), drivers, modules, configuration
files, the catalog, the times the descriptions were made.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from resurgo.model import (
    Description,
    Disk,
    Filesystem,
    FsType,
    LogicalVolume,
    LuksVolume,
    Partition,
    RaidArray,
)
from resurgo.units import human


class Change(StrEnum):
    ADDED = "added"
    REMOVED = "removed"
    RESIZED = "resized"
    CHANGED = "changed"


@dataclass(frozen=True)
class Difference:
    """One way the live layout differs from the saved one."""

    change: Change
    # What kind of record: "disk", "partition", "logical volume", ...
    kind: str
    # The record as a person names it: /dev/sda2, volume group data, ...
    name: str
    # For a change: the attribute and its two values; for an added or removed record:
    # what it is (its size, type).
    detail: str = ""

    def text(self) -> str:
        what = f"{self.kind} {self.name}"
        if self.change is Change.RESIZED:
            return f"{what} resized: {self.detail}"
        if self.change is Change.CHANGED:
            return f"{what} changed: {self.detail}"
        return f"{what} {self.change}" + (f" ({self.detail})" if self.detail else "")

    def data(self) -> dict[str, str]:
        return {"change": str(self.change), "kind": self.kind, "name": self.name,
                "detail": self.detail, "text": self.text()}


@dataclass(frozen=True)
class _Item:
    """A record as the comparison sees it: its kind, name, size and the attributes that
    matter, each (what compares, what is shown)."""

    kind: str
    name: str
    size: int | None = None
    attrs: dict[str, tuple[Any, str]] = field(default_factory=dict)
    # What an added or removed record is, in a few words.
    summary: str = ""


# The order differences are listed in: the layers from the disks up.
_KINDS = ("disk", "partition", "RAID array", "LUKS volume", "physical volume",
          "volume group", "logical volume", "filesystem", "btrfs subvolume", "swap",
          "device")


def compare_layouts(saved: Description, live: Description) -> tuple[Difference, ...]:
    """Every difference between the storage layout of ``saved`` and that of ``live``
    (none: the saved layout is still the machine's), from the disks up."""
    old, new = _Items(saved).all(), _Items(live).all()
    found: list[Difference] = []
    for key, item in old.items():
        other = new.get(key)
        if other is None:
            found.append(Difference(Change.REMOVED, item.kind, item.name, item.summary))
        else:
            found.extend(_changes(item, other))
    found.extend(Difference(Change.ADDED, item.kind, item.name, item.summary)
                 for key, item in new.items() if key not in old)
    return tuple(sorted(found, key=lambda d: _KINDS.index(d.kind)))


def _changes(old: _Item, new: _Item) -> Iterable[Difference]:
    # Named as the machine names it now.
    if old.size != new.size and old.size is not None and new.size is not None:
        yield Difference(Change.RESIZED, new.kind, new.name, _sizes(old.size, new.size))
    for attr, (value, shown) in old.attrs.items():
        now_value, now_shown = new.attrs.get(attr, (None, "none"))
        if value != now_value:
            yield Difference(Change.CHANGED, new.kind, new.name, f"{attr} {shown} -> {now_shown}")


def _sizes(old: int, new: int) -> str:
    a, b = human(old), human(new)
    if a == b:
        a, b = f"{old} bytes", f"{new} bytes"
    return f"{a} -> {b}"


def _shown(value: str | None) -> str:
    return "none" if value is None else repr(value)


class _Items:
    """The records of one description that the comparison matches, by their keys."""

    def __init__(self, desc: Description) -> None:
        self.desc = desc
        self.devices = desc.block_devices()
        self._keys: dict[str, str] = {}

    def all(self) -> dict[str, _Item]:
        out: dict[str, _Item] = {}
        d = self.desc
        for add in (self._disks, self._partitions, self._arrays, self._luks, self._pvs,
                    self._vgs, self._lvs, self._filesystems, self._subvolumes, self._swaps,
                    self._unsupported):
            for key, item in add(d):
                out.setdefault(key, item)
        return out

    # ------------------------------------------------------------ device keys and names

    def key(self, device_id: str) -> str:
        """What identifies the block device across reboots (see the module docstring)."""
        found = self._keys.get(device_id)
        if found is not None:
            return found
        rec = self.devices.get(device_id)
        key = f"?{device_id}"
        if isinstance(rec, Disk):
            key = _disk_key(rec)
        elif isinstance(rec, Partition):
            key = f"{self.key(rec.disk)}/{rec.number}"
        elif isinstance(rec, RaidArray):
            key = f"md:{rec.uuid}"
        elif isinstance(rec, LuksVolume):
            key = f"luks:{self.key(rec.device)}"
        elif isinstance(rec, LogicalVolume):
            key = f"lv:{self._vg_name(rec.volume_group)}/{rec.name}"
        else:
            for u in self.desc.unsupported:
                if u.id == device_id:
                    key = f"unsupported:{u.kind}:{u.path}"
        self._keys[device_id] = key
        return key

    def name(self, device_id: str) -> str:
        """The device as a person names it: its path, as the description has it."""
        rec = self.devices.get(device_id)
        if isinstance(rec, LuksVolume):
            return f"/dev/mapper/{rec.name}" if rec.name else f"LUKS on {self.name(rec.device)}"
        if rec is not None and rec.path:
            return rec.path
        if isinstance(rec, Partition):
            return f"{self.name(rec.disk)} partition {rec.number}"
        for u in self.desc.unsupported:
            if u.id == device_id:
                return u.path
        return device_id

    def _vg_name(self, vg_id: str) -> str:
        for vg in self.desc.volume_groups:
            if vg.id == vg_id:
                return vg.name
        return vg_id

    def fs_key(self, fs_id: str) -> str:
        for fs in self.desc.filesystems:
            if fs.id == fs_id:
                return f"fs:{self.key(fs.device)}"
        return f"?{fs_id}"

    # ------------------------------------------------------------ the records

    def _disks(self, d: Description) -> Iterable[tuple[str, _Item]]:
        for disk in d.disks:
            table = disk.table
            yield _disk_key(disk), _Item("disk", disk.path, disk.size, {
                "sector size": ((disk.logical_sector_size, disk.physical_sector_size),
                                f"{disk.logical_sector_size}/{disk.physical_sector_size}"),
                "partition table": (table.label if table else None,
                                    str(table.label) if table else "none"),
                "partition table id": ((table.id.lower() if table else None),
                                       table.id if table else "none"),
            }, human(disk.size))

    def _partitions(self, d: Description) -> Iterable[tuple[str, _Item]]:
        for p in d.partitions:
            yield self.key(p.id), _Item("partition", self.name(p.id), p.size * p.sector_size, {
                "start": (p.start * p.sector_size, f"sector {p.start}"),
                "type": (p.type.lower(), p.type),
                "kind": (p.kind, str(p.kind)),
                "UUID": ((p.uuid or "").lower() or None, _shown(p.uuid)),
                "name": (p.name, _shown(p.name)),
                "bootable flag": (p.bootable, "on" if p.bootable else "off"),
            }, f"{human(p.size * p.sector_size)}, type {p.type}")

    def _arrays(self, d: Description) -> Iterable[tuple[str, _Item]]:
        for md in d.raid_arrays:
            yield self.key(md.id), _Item("RAID array", md.path, md.size, {
                "level": (md.level, md.level),
                "members": (self._set(md.members), self._names_of(md.members)),
                "metadata": (md.metadata, md.metadata),
                "chunk": (md.chunk, str(md.chunk)),
            }, f"{md.level}, {human(md.size)}")

    def _luks(self, d: Description) -> Iterable[tuple[str, _Item]]:
        for lv in d.luks_volumes:
            yield self.key(lv.id), _Item("LUKS volume", self.name(lv.id), lv.size, {
                "UUID": (lv.uuid.lower(), lv.uuid),
                "version": (lv.version, f"LUKS{lv.version}"),
                "cipher": ((lv.cipher, lv.key_size), f"{lv.cipher} {lv.key_size} bits"),
            }, f"on {self.name(lv.device)}")

    def _pvs(self, d: Description) -> Iterable[tuple[str, _Item]]:
        for pv in d.physical_volumes:
            vg = self._vg_name(pv.volume_group)
            yield f"pv:{self.key(pv.device)}", _Item(
                "physical volume", self.name(pv.device), pv.size,
                {"volume group": (vg, vg), "UUID": (pv.uuid, pv.uuid)},
                f"of volume group {vg}")

    def _vgs(self, d: Description) -> Iterable[tuple[str, _Item]]:
        for vg in d.volume_groups:
            yield f"vg:{vg.name}", _Item("volume group", vg.name, vg.size, {
                "extent size": (vg.extent_size, human(vg.extent_size)),
                "UUID": (vg.uuid, vg.uuid),
            }, human(vg.size))

    def _lvs(self, d: Description) -> Iterable[tuple[str, _Item]]:
        for lv in d.logical_volumes:
            pool = self.key(lv.pool) if lv.pool else None
            yield self.key(lv.id), _Item(
                "logical volume", f"{self._vg_name(lv.volume_group)}/{lv.name}", lv.size, {
                    "type": (lv.type, str(lv.type)),
                    "pool": (pool, self.name(lv.pool) if lv.pool else "none"),
                }, f"{lv.type}, {human(lv.size)}")

    def _filesystems(self, d: Description) -> Iterable[tuple[str, _Item]]:
        for fs in d.filesystems:
            mounts = sorted({m.mountpoint for m in fs.mounts})
            yield f"fs:{self.key(fs.device)}", _Item(
                "filesystem", f"on {self.name(fs.device)}", fs.size, {
                    "type": (_fs_type(fs), _fs_type(fs)),
                    "UUID": ((fs.uuid or "").lower() or None, _shown(fs.uuid)),
                    "label": (fs.label, _shown(fs.label)),
                    "mountpoints": (tuple(mounts), ", ".join(mounts) or "none"),
                }, _fs_type(fs) + (f", {', '.join(mounts)}" if mounts else ""))

    def _subvolumes(self, d: Description) -> Iterable[tuple[str, _Item]]:
        for sv in d.subvolumes:
            if sv.readonly:
                continue
            fs = next((f for f in d.filesystems if f.id == sv.filesystem), None)
            where = self.name(fs.device) if fs else sv.filesystem
            yield f"{self.fs_key(sv.filesystem)}@{sv.path}", _Item(
                "btrfs subvolume", f"{sv.path} on {where}", None, {
                    "UUID": ((sv.uuid or "").lower() or None, _shown(sv.uuid)),
                })

    def _swaps(self, d: Description) -> Iterable[tuple[str, _Item]]:
        for sw in d.swaps:
            if sw.device is not None:
                key, name = f"swap:{self.key(sw.device)}", f"on {self.name(sw.device)}"
            else:
                key, name = f"swapfile:{sw.file}", f"file {sw.file}"
            yield key, _Item("swap", name, sw.size, {
                "UUID": ((sw.uuid or "").lower() or None, _shown(sw.uuid)),
                "label": (sw.label, _shown(sw.label)),
            }, human(sw.size))

    def _unsupported(self, d: Description) -> Iterable[tuple[str, _Item]]:
        for u in d.unsupported:
            yield f"unsupported:{u.kind}:{u.path}", _Item("device", u.path, None, {},
                                                          f"{u.kind}, {u.reason}")

    # ------------------------------------------------------------ helpers

    def _set(self, ids: Iterable[str]) -> frozenset[str]:
        return frozenset(self.key(i) for i in ids)

    def _names_of(self, ids: Iterable[str]) -> str:
        return ", ".join(sorted(self.name(i) for i in ids)) or "none"


def _disk_key(disk: Disk) -> str:
    if disk.wwn:
        return f"disk:wwn:{disk.wwn.lower()}"
    if disk.serial:
        return f"disk:serial:{disk.model or ''}:{disk.serial}"
    return f"disk:path:{disk.path}"


def _fs_type(fs: Filesystem) -> str:
    if fs.type is FsType.OTHER and fs.type_name:
        return fs.type_name
    return str(fs.type)


__all__ = ["Change", "Difference", "compare_layouts"]
