"""The storage half of describe: which disks make up the system, and everything on them.

The disks are those under the filesystems mounted at and below the root (and, for
the running system, its active swap), found by walking /sys down through
partitions, md and device-mapper; then --include-disk adds and --exclude-disk
removes. Every partition of those disks is described, mounted or not, and every
md/dm device built on them (through probe.stack), then the filesystem or swap
signature on each device nothing else is built on.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from resurgo import parttypes, run
from resurgo.errors import BadInput, OperationFailed, PreconditionFailed
from resurgo.model import (
    Disk,
    FsType,
    LogicalVolume,
    LuksVolume,
    PartitionKind,
    RaidArray,
    TableLabel,
    Unsupported,
)
from resurgo.probe import blockdev, filesystems, ids, mounts, partitions, stack, swap
from resurgo.probe.blockdev import BlockDevice
from resurgo.probe.mounts import MountEntry
from resurgo.probe.state import StorageState
from resurgo.sortkeys import natural_key

ESP_MOUNTPOINTS = ("/boot/efi", "/efi")
CRITICAL_MOUNTPOINTS = ("/", "/boot")

# Read-only images mounted from loop devices (snaps, ISO files): files of the system,
# restored with its files, not disks of it.
IMAGE_TYPES = frozenset({"squashfs", "iso9660", "erofs", "udf", "cramfs"})

RAM_DISK = re.compile(r"^(zram|ram)\d+$")

# blkid USAGE values of signatures that something else is built on.
CONTAINER_USAGES = frozenset({"raid", "crypto"})


@dataclass(frozen=True)
class Sources:
    """Where the walk reads the machine: the running one by default, a recorded tree in tests.

    kname_of_path turns the device paths the machine names (active swap, --include-disk)
    into kernel names.
    """

    sys_block: Path = blockdev.SYS_CLASS_BLOCK
    sys_dev: Path = blockdev.SYS_DEV_BLOCK
    sys_fs_btrfs: Path = filesystems.SYS_FS_BTRFS
    mountinfo: Path = mounts.MOUNTINFO
    swaps: Path = swap.PROC_SWAPS
    by_id: Path = blockdev.DEV_BY_ID
    kname_of_path: Callable[[str], str] = blockdev.kname_of_path


def probe_storage(
    root: Path,
    include_disks: Sequence[str],
    exclude_disks: Sequence[str],
    sources: Sources | None = None,
) -> StorageState:
    """Describe the disks of the system mounted at root, and everything on them."""
    if not run.is_root():
        raise PreconditionFailed(
            "describing storage needs root: partition tables and superblocks are read "
            "from the devices", hint="run resurgo as root")
    run.require("blkid", "sfdisk")
    root_path = os.path.realpath(root)
    if not os.path.isdir(root_path):
        raise BadInput(f"{root}: not a directory")
    return _Probe(root_path, sources or Sources()).run(include_disks, exclude_disks)


class _Probe:
    def __init__(self, root: str, sources: Sources) -> None:
        self.root = root
        self.src = sources
        self.sys_block = sources.sys_block
        self.state = StorageState()
        self.devices: dict[str, BlockDevice] = {}
        self.blkid_cache: dict[str, dict[str, str]] = {}
        # Record id of each described block device, by kernel name.
        self.record_of: dict[str, str] = {}
        # Stacked devices that are internal layers of a record (raid images, -tpool, ...).
        self.internal: set[str] = set()
        self.stack = stack.Stack(self.record_of, sys_block=self.sys_block,
                                 blkid=lambda k: self.blkid(k, f"/dev/{k}"))
        all_mounts = mounts.visible(mounts.read_mountinfo(sources.mountinfo))
        self.btrfs_fsid = filesystems.btrfs_devices(sources.sys_fs_btrfs)
        # Mounts under the root by the kernel name of their device; any mount of each device.
        self.mounts_of: dict[str, list[tuple[str, MountEntry]]] = {}
        self.any_mount: dict[str, MountEntry] = {}
        self.mount_knames: list[str] = []
        for e in all_mounts:
            kname = self._mount_kname(e)
            if kname is not None:
                self.any_mount.setdefault(kname, e)
        selected = mounts.under_root(all_mounts, root)
        if root != "/" and not any(rel == "/" for rel, _ in selected):
            self.state.warnings.append(
                f"nothing is mounted at {root} itself: the filesystem holding it is not "
                f"described, only those mounted below it")
        self._select_mounts(selected)
        self.all_mounts = all_mounts
        self.active_swaps = swap.read_proc_swaps(sources.swaps)
        self.active_by_kname: dict[str, swap.ActiveSwap] = {}
        for sw in self.active_swaps:
            if not sw.is_file:
                try:
                    self.active_by_kname[sources.kname_of_path(sw.path)] = sw
                except BadInput:
                    self.state.warnings.append(f"active swap {sw.path}: not a block device here")

    # ------------------------------------------------------------ devices and mounts

    def device(self, kname: str) -> BlockDevice:
        dev = self.devices.get(kname)
        if dev is None:
            dev = self.devices[kname] = blockdev.read_device(kname, self.sys_block)
        return dev

    def blkid(self, kname: str, path: str) -> dict[str, str]:
        found = self.blkid_cache.get(kname)
        if found is None:
            found = self.blkid_cache[kname] = filesystems.read_blkid(path)
        return found

    def _mount_kname(self, e: MountEntry) -> str | None:
        if e.major != 0:
            return blockdev.kname_of_devno(e.major, e.minor, self.src.sys_dev)
        if e.fstype != "btrfs":
            return None
        # btrfs shows an anonymous device number; its source names one of its devices.
        try:
            st = os.stat(e.source)
        except OSError:
            return None
        if not stat.S_ISBLK(st.st_mode):
            return None
        return blockdev.kname_of_devno(os.major(st.st_rdev), os.minor(st.st_rdev),
                                       self.src.sys_dev)

    def _select_mounts(self, selected: list[tuple[str, MountEntry]]) -> None:
        for rel, e in selected:
            if e.fstype in mounts.PSEUDO:
                continue
            kname = self._mount_kname(e)
            if kname is None:
                self.state.warnings.append(
                    f"{rel} ({e.fstype} from {e.source}) is not on a local block device: "
                    f"not described")
                continue
            if e.fstype in IMAGE_TYPES and kname.startswith("loop"):
                continue
            if _is_subdir_bind(e):
                self.state.warnings.append(
                    f"{rel} is a bind mount of {e.fs_root} on {e.source}: not described")
                continue
            self.mounts_of.setdefault(kname, []).append((rel, e))
            if kname not in self.mount_knames:
                self.mount_knames.append(kname)

    # ------------------------------------------------------------ which disks

    def _disks(self, include: Sequence[str], exclude: Sequence[str]) -> list[str]:
        base = [k for m in self.mount_knames for k in self._btrfs_siblings(m)]
        if self.root == "/":
            base += [k for k in self.active_by_kname if k not in base]
        wanted: dict[str, list[str]] = {}
        for kname in base:
            for disk in blockdev.disks_below(kname, self.sys_block):
                # zram swap and RAM disks vanish with the power: nothing to recover.
                if not RAM_DISK.match(disk):
                    wanted.setdefault(disk, []).append(kname)
        if self.root != "/":
            # Active swap counts when it lies on the disks of the described system.
            for kname in self.active_by_kname:
                below = blockdev.disks_below(kname, self.sys_block)
                if below and all(d in wanted for d in below):
                    for d in below:
                        wanted[d].append(kname)
        for path in include:
            kname = self._whole_disk(path, "--include-disk")
            wanted.setdefault(kname, [])
        for path in exclude:
            kname = self._whole_disk(path, "--exclude-disk")
            users = wanted.pop(kname, None)
            if users:
                what = ", ".join(self._describe_use(k) for k in users)
                self.state.warnings.append(
                    f"/dev/{kname} is excluded, so what it holds is not described: {what}")
        return sorted(wanted, key=natural_key)

    def _btrfs_siblings(self, kname: str) -> list[str]:
        """All devices of the btrfs kname belongs to (just kname when it is none)."""
        fsid = self.btrfs_fsid.get(kname)
        if fsid is None:
            return [kname]
        return sorted((k for k, f in self.btrfs_fsid.items() if f == fsid), key=natural_key)

    def _whole_disk(self, path: str, option: str) -> str:
        kname = self.src.kname_of_path(path)
        dev = self.device(kname)
        if dev.is_partition:
            raise BadInput(f"{option} {path}: a partition, not a disk",
                           hint=f"name the whole disk, /dev/{dev.parent}")
        if dev.slaves:
            raise BadInput(f"{option} {path}: built on {', '.join(dev.slaves)}, not a disk",
                           hint="name the disks it is built on")
        return kname

    def _describe_use(self, kname: str) -> str:
        points = [rel for rel, _ in self.mounts_of.get(kname, [])]
        if points:
            return f"{', '.join(points)} ({kname})"
        return f"swap {kname}" if kname in self.active_by_kname else kname

    # ------------------------------------------------------------ the walk

    def run(self, include: Sequence[str], exclude: Sequence[str]) -> StorageState:
        disks = self._disks(include, exclude)
        by_id = blockdev.by_id_names(self.src.by_id)
        # (kernel name, record id) of the devices whose contents are still to be read.
        leaves: list[tuple[str, str]] = []
        for kname in disks:
            leaves += self._describe_disk(kname, by_id)
        leaves += self._describe_stack()
        for kname, record_id in leaves:
            if not self.device(kname).holders and kname not in self.internal:
                try:
                    self._describe_contents(kname, record_id)
                except OperationFailed as e:
                    self._unreadable(kname, str(e))
        self._describe_swap_files()
        self._mark_critical()
        self._add_stack_record(self.stack.finish())
        self.state.removable_devices = blockdev.removable_devices(
            [d.path.removeprefix("/dev/") for d in self.state.disks], by_id, self.sys_block)
        self.state.knames = self._public_knames()
        return self.state

    def _public_knames(self) -> dict[str, str]:
        """record id -> kernel name; an LV's is its public device, never one of its layers."""
        return {rid: k for k, rid in self.record_of.items() if k not in self.internal}

    def _describe_disk(self, kname: str, by_id: dict[str, str]) -> list[tuple[str, str]]:
        dev = self.device(kname)
        if dev.size == 0:
            self.state.warnings.append(f"/dev/{kname} has no medium (size 0): not described")
            return []
        disk = blockdev.disk_record(dev, by_id, self.sys_block)
        self.record_of[kname] = disk.id
        try:
            found = self.blkid(kname, dev.path)
        except OperationFailed as e:
            self.state.disks.append(disk)
            self._unreadable(kname, str(e))
            return []
        pttype = found.get("PTTYPE")
        if not pttype:
            self.state.disks.append(disk)
            return [(kname, disk.id)]
        if pttype not in {label.value for label in TableLabel}:
            reason = f"{pttype} partition tables are not supported"
            self.state.unsupported.append(Unsupported(
                id=ids.unsupported(kname), kind="partition-table", path=dev.path, reason=reason))
            self.state.warnings.append(f"{dev.path}: {reason}; its partitions are not described")
            self.state.disks.append(disk)
            return []
        try:
            parsed = partitions.read_table(dev.path)
        except OperationFailed as e:
            self.state.disks.append(disk)
            self._unreadable(kname, str(e))
            return []
        self.state.disks.append(replace(disk, table=parsed.table))
        known = blockdev.partitions_of(kname, self.sys_block)
        out: list[tuple[str, str]] = []
        for pk, part in partitions.partition_records(
            parsed, disk.id, disk.logical_sector_size, {n: k.kname for n, k in known.items()}
        ):
            self.state.partitions.append(part)
            self.record_of[pk] = part.id
            if part.kind == PartitionKind.EXTENDED:
                continue
            seen = known.get(part.number)
            if seen is None:
                problem = f"the kernel does not know partition {part.number}"
            elif (seen.start, seen.size) != (part.start * part.sector_size,
                                             part.size * part.sector_size):
                # Reading the kernel's stale partition would describe other sectors.
                problem = f"the kernel's partition {part.number} differs from the table"
            else:
                out.append((pk, part.id))
                continue
            self.state.warnings.append(
                f"{dev.path}: {problem}, so its contents are not described "
                f"(run partx -u {dev.path})")
        return out

    def _describe_stack(self) -> list[tuple[str, str]]:
        """md and device-mapper devices built on what is described so far, lower ones first."""
        pending: set[str] = set()
        # Partitions in the table but not in the kernel have no holders to look at.
        frontier = [k for k in self.record_of if (self.sys_block / k).exists()]
        while frontier:
            kname = frontier.pop()
            for holder in self.device(kname).holders:
                if holder not in pending and holder not in self.record_of:
                    pending.add(holder)
                    frontier.append(holder)
        out: list[tuple[str, str]] = []
        while pending:
            ready = [k for k in pending if all(s in self.record_of for s in self.device(k).slaves)]
            if not ready:
                # Built on devices outside the described disks: describe what can be.
                ready = list(pending)
            for kname in sorted(ready, key=natural_key):
                pending.discard(kname)
                out.append((kname, self._describe_stacked(kname)))
        return out

    def _describe_stacked(self, kname: str) -> str:
        dev = self.device(kname)
        below = {s: self.record_of[s] for s in dev.slaves if s in self.record_of}
        outside = [s for s in dev.slaves if s not in self.record_of]
        if outside:
            self.state.warnings.append(
                f"{dev.path} is also built on {', '.join(outside)}, outside the described disks")
        if (self.sys_block / kname / "md").is_dir():
            result = self.stack.describe_md(kname, below)
        elif dev.is_dm:
            result = self.stack.describe_dm(kname, below)
        else:
            rec = Unsupported(id=ids.unsupported(kname), kind="block", path=dev.path,
                              reason="a stacked block device of an unknown kind")
            result = stack.StackRecord(record=rec, warnings=[
                f"{dev.path}: {rec.reason}; it is recorded but will not be recreated"])
        self._add_stack_record(result)
        assert result.record is not None, "a stacked device always has a record"
        self.record_of[kname] = result.record.id
        if result.internal:
            self.internal.add(kname)
        return result.record.id

    def _add_stack_record(self, result: stack.StackRecord) -> None:
        # An internal layer only lends its kernel name to the record of its LV.
        rec = None if result.internal else result.record
        if isinstance(rec, RaidArray):
            self.state.raid_arrays.append(rec)
        elif isinstance(rec, LuksVolume):
            self.state.luks_volumes.append(rec)
        elif isinstance(rec, Unsupported):
            self.state.unsupported.append(rec)
        lvs = {lv.id for lv in self.state.logical_volumes}
        for lv in [rec] if isinstance(rec, LogicalVolume) else []:
            if lv.id not in lvs:
                self.state.logical_volumes.append(lv)
                lvs.add(lv.id)
        self.state.logical_volumes += [lv for lv in result.logical_volumes if lv.id not in lvs]
        pvs = {pv.id for pv in self.state.physical_volumes}
        self.state.physical_volumes += [pv for pv in result.physical_volumes if pv.id not in pvs]
        vgs = {vg.id for vg in self.state.volume_groups}
        self.state.volume_groups += [vg for vg in result.volume_groups if vg.id not in vgs]
        self.state.unsupported += result.unsupported
        self.state.warnings += result.warnings

    def _describe_contents(self, kname: str, record_id: str) -> None:
        dev = self.device(kname)
        found = self.blkid(kname, dev.path)
        type_name = found.get("TYPE")
        if not type_name:
            return
        if type_name == "swap":
            self.state.swaps.append(swap.device_swap(
                kname, record_id, dev.path, dev.size, found, self.active_by_kname.get(kname)))
            return
        if found.get("USAGE") in CONTAINER_USAGES:
            self._add_stack_record(self.stack.describe_container(kname, record_id, found))
            return
        uuid = found.get("UUID")
        if type_name == "btrfs" and uuid and any(
            fs.type == FsType.BTRFS and fs.uuid == uuid for fs in self.state.filesystems
        ):
            return  # another device of a multi-device btrfs already described
        # A btrfs's mounts name whichever of its devices mount was given.
        mounted = [m for k in self._btrfs_siblings(kname) for m in self.mounts_of.get(k, [])]
        described = filesystems.describe_filesystem(
            kname, record_id, dev.path, found, mounted, self._mount_for(kname))
        self.state.filesystems.append(described.filesystem)
        self.state.subvolumes += described.subvolumes
        self.state.unsupported += described.unsupported
        self.state.warnings += described.warnings

    def _unreadable(self, kname: str, error: str) -> None:
        """A device whose contents a tool could not read: kept, with the error, never fatal."""
        path = f"/dev/{kname}"
        points = ", ".join(rel for rel, _ in self.mounts_of.get(kname, []))
        reason = "its contents could not be read" + (f" (mounted at {points})" if points else "")
        self.state.unsupported.append(Unsupported(
            id=ids.unsupported(kname), kind="contents", path=path, reason=reason,
            details=tuple(error.splitlines())))
        self.state.warnings.append(f"{path}: {reason}: {error}")

    def _mount_for(self, kname: str) -> MountEntry | None:
        """A mount of the filesystem on kname, preferably one under the root."""
        siblings = self._btrfs_siblings(kname)
        for k in siblings:
            if self.mounts_of.get(k):
                return self.mounts_of[k][0][1]
        for k in siblings:
            if k in self.any_mount:
                return self.any_mount[k]
        return None

    def _describe_swap_files(self) -> None:
        by_record = self._public_knames()
        fs_of_kname = {by_record.get(fs.device, ""): fs for fs in self.state.filesystems}
        for sw in self.active_swaps:
            if not sw.is_file:
                continue
            holder = _containing_mount(self.all_mounts, sw.path)
            if holder is None:
                continue
            rel = mounts.relative_mountpoint(sw.path, self.root)
            if rel is None:
                continue
            fs = fs_of_kname.get(self._mount_kname(holder) or "")
            if fs is None:
                self.state.warnings.append(
                    f"swap file {rel} lies on a filesystem that is not described")
                continue
            try:
                found = filesystems.read_blkid(sw.path)
            except OperationFailed:
                found = {}
            self.state.swaps.append(swap.file_swap(sw, rel, fs.id, found))

    def _mark_critical(self) -> None:
        """Disks holding the system volume, the boot volume or the ESP."""
        by_record = self._public_knames()
        parts = {p.id: p for p in self.state.partitions}
        critical: set[str] = set()
        for mounted, entries in self.mounts_of.items():
            if any(rel in CRITICAL_MOUNTPOINTS for rel, _ in entries):
                critical.update(blockdev.disks_below(mounted, self.sys_block))
        for fs in self.state.filesystems:
            points = {m.mountpoint for m in fs.mounts}
            part = parts.get(fs.device)
            esp = fs.type == FsType.VFAT and (
                bool(points.intersection(ESP_MOUNTPOINTS))
                or (part is not None and parttypes.is_esp(part.type))
            )
            if esp or points.intersection(CRITICAL_MOUNTPOINTS):
                below = by_record.get(fs.device)
                if below is not None:
                    critical.update(blockdev.disks_below(below, self.sys_block))
        self.state.disks = [
            replace(d, critical=True) if _kname(d) in critical else d for d in self.state.disks
        ]


def _kname(disk: Disk) -> str:
    return disk.path.removeprefix("/dev/")


def _is_subdir_bind(e: MountEntry) -> bool:
    """A bind mount of a directory inside a filesystem rather than of the filesystem itself."""
    if e.fstype == "btrfs":
        subvol = e.btrfs_subvol
        return subvol is not None and e.fs_root.rstrip("/") != subvol.rstrip("/")
    return e.fs_root != "/"


def _containing_mount(entries: Iterable[MountEntry], path: str) -> MountEntry | None:
    best: MountEntry | None = None
    for e in entries:
        if mounts.relative_mountpoint(path, e.mountpoint) is not None and (
            best is None or len(e.mountpoint) > len(best.mountpoint)
        ):
            best = e
    return best
