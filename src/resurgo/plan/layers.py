"""What is built on what in a description: the indexes every planning step walks."""

from __future__ import annotations

from typing import get_args

from resurgo import parttypes
from resurgo.errors import BadInput
from resurgo.model import (
    DEVICE,
    Description,
    Disk,
    Filesystem,
    Link,
    LogicalVolume,
    LuksVolume,
    LvType,
    Partition,
    PartitionKind,
    PhysicalVolume,
    RaidArray,
    Swap,
    VolumeGroup,
    built_on,
    referrers,
)
from resurgo.restoreunits import is_restore, unit_of

# What may sit directly on a block device.
User = Filesystem | Swap | LuksVolume | PhysicalVolume | RaidArray
_USER_ORDER: tuple[type, ...] = get_args(User)


class Layers:
    def __init__(self, desc: Description) -> None:
        self.desc = desc
        self.disks: dict[str, Disk] = {d.id: d for d in desc.disks}
        self.partitions: dict[str, Partition] = {p.id: p for p in desc.partitions}
        self.raids: dict[str, RaidArray] = {m.id: m for m in desc.raid_arrays}
        self.luks: dict[str, LuksVolume] = {v.id: v for v in desc.luks_volumes}
        self.vgs: dict[str, VolumeGroup] = {v.id: v for v in desc.volume_groups}
        self.lvs: dict[str, LogicalVolume] = {v.id: v for v in desc.logical_volumes}
        self.pvs: dict[str, PhysicalVolume] = {v.id: v for v in desc.physical_volumes}
        self.filesystems: dict[str, Filesystem] = {f.id: f for f in desc.filesystems}
        self.devices = desc.block_devices()
        self.parts_of = referrers(sorted(desc.partitions, key=lambda p: (p.start, p.number)))
        # Each device's users, a filesystem before a swap, LUKS, PV and md (as User lists
        # them): user() takes the first.
        self.users: dict[str, list[User]] = {}
        for _, _, rec in desc.records():
            for r in built_on(rec):
                if r.ref == DEVICE:
                    assert isinstance(rec, User), f"{type(rec).__name__} missing from User"
                    self.users.setdefault(r.target, []).append(rec)
        for found in self.users.values():
            found.sort(key=lambda u: _USER_ORDER.index(type(u)))
        self.pvs_of = referrers(desc.physical_volumes, Link.HOLDS)
        self.lvs_of = referrers(desc.logical_volumes, into="volume_groups")
        self.subvolumes_of = referrers(desc.subvolumes)
        # The filesystems whose content a resurgo:restore command restores file by file
        # (a btrfs through any of its trees): their block size is theirs to choose.
        self.restored_by_file: frozenset[str] = frozenset(_restored(desc))

    def user(self, dev: str) -> User | None:
        """What is built directly on a block device (the first, should there be several)."""
        found = self.users.get(dev)
        return found[0] if found else None

    def below(self, dev: str) -> list[str]:
        """The block devices a block device is made of, one level down."""
        lv = self.lvs.get(dev)
        if lv is not None:
            # An LV lies on its group's PVs, wherever its extents are; a thin one on its pool.
            if lv.type == LvType.THIN and lv.pool in self.lvs:
                return self.below(lv.pool)
            return [pv.device for pv in self.pvs_of.get(lv.volume_group, [])]
        rec = self.devices.get(dev)
        return [r.target for r in built_on(rec)] if rec is not None else []

    def disks_under(self, dev: str) -> set[str]:
        if dev in self.disks:
            return {dev}
        out: set[str] = set()
        for d in self.below(dev):
            out |= self.disks_under(d)
        return out

    def vg_disks(self, vg: str) -> set[str]:
        out: set[str] = set()
        for pv in self.pvs_of.get(vg, []):
            out |= self.disks_under(pv.device)
        return out

    def filesystems_above(self, dev: str) -> list[Filesystem]:
        """Every filesystem that lives on dev, directly or through md, LUKS and LVM."""
        out: list[Filesystem] = []
        for u in self.users.get(dev, []):
            if isinstance(u, Filesystem):
                out.append(u)
            elif isinstance(u, LuksVolume | RaidArray):
                out.extend(self.filesystems_above(u.id))
            elif isinstance(u, PhysicalVolume):
                for lv in self.lvs_of.get(u.volume_group, []):
                    out.extend(self.filesystems_above(lv.id))
        if dev in self.partitions and self.partitions[dev].kind == PartitionKind.EXTENDED:
            disk = self.partitions[dev].disk
            for p in self.parts_of.get(disk, []):
                if p.kind == PartitionKind.LOGICAL:
                    out.extend(self.filesystems_above(p.id))
        if dev in self.disks:
            for p in self.parts_of.get(dev, []):
                out.extend(self.filesystems_above(p.id))
        return list({f.id: f for f in out}.values())

    def original_size(self, dev: str) -> int:
        if dev in self.partitions:
            p = self.partitions[dev]
            return p.size * p.sector_size
        if dev in self.disks:
            return self.disks[dev].size
        if dev in self.raids:
            return self.raids[dev].size
        if dev in self.luks:
            lk = self.luks[dev]
            if lk.size is not None:
                return lk.size
            return max(0, self.original_size(lk.device) - luks_header(lk.version))
        if dev in self.lvs:
            return self.lvs[dev].size
        return 0

    # ---------------------------------------------------------------- roles

    def is_esp(self, fs: Filesystem) -> bool:
        if fs.id == self.desc.system.esp:
            return True
        p = self.partitions.get(fs.device)
        return p is not None and parttypes.is_esp(p.type)

    def is_separate_boot(self, fs: Filesystem) -> bool:
        sysinfo = self.desc.system
        if fs.id == sysinfo.boot_volume and sysinfo.boot_volume != sysinfo.system_volume:
            return True
        return any(m.mountpoint == "/boot" for m in fs.mounts)

    def is_bios_boot(self, part: Partition) -> bool:
        return (
            parttypes.is_bios_boot(part.type)
            or part.id == self.desc.system.bootloader.bios_boot_partition
        )

    def holds_system(self, dev: str) -> bool:
        sysvol = self.desc.system.system_volume
        if sysvol is None:
            return any(m.mountpoint == "/" for f in self.filesystems_above(dev) for m in f.mounts)
        return any(f.id == sysvol for f in self.filesystems_above(dev))

    def label(self, dev: str) -> str:
        """A few characters naming what a device holds, for tables and bars."""
        part = self.partitions.get(dev)
        if part is not None and part.kind == PartitionKind.EXTENDED:
            return "extended"
        u = self.user(dev)
        if isinstance(u, Filesystem):
            if self.is_esp(u):
                return "EFI"
            if u.mounts:
                mp = u.mounts[0].mountpoint
                return "root" if mp == "/" else mp.rstrip("/").rsplit("/", 1)[-1]
            return str(u.type_name or u.type)
        if isinstance(u, Swap):
            return "swap"
        if isinstance(u, LuksVolume):
            inner = self.label(u.id)
            return f"luks:{inner}" if inner != "-" else "luks"
        if isinstance(u, PhysicalVolume):
            vg = self.vgs.get(u.volume_group)
            return f"lvm:{vg.name}" if vg else "lvm"
        if isinstance(u, RaidArray):
            return u.path.rsplit("/", 1)[-1]
        if part is not None and self.is_bios_boot(part):
            return "bios"
        return "-"


def luks_header(version: int) -> int:
    """The space a LUKS header takes before the payload with cryptsetup's defaults."""
    return (2 if version == 1 else 16) << 20


def _restored(desc: Description) -> set[str]:
    out = set()
    for c in desc.commands:
        if not is_restore(c):
            continue
        try:
            out.add(unit_of(desc, c).filesystem.id)
        except BadInput:
            continue  # refused with the plan's commands (commands.planned)
    return out
