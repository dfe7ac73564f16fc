"""The actual disks of this machine, read from /sys, /proc/self/mountinfo and /proc/swaps.

Read-only. For each whole disk: size, sector sizes, identity (WWN, serial, model),
transport, and what uses it now (mounted filesystems, active swap, holders), and
whether it carries the running system or its boot medium, or the recovery set; and the
identities its devices show (probe.seen), which a recovery onto other disks must not
collide with.

The planner never calls this: plan and recover read the disks here and pass them to
make_plan. They call read_actual_disks through this module (actual.read_actual_disks),
the one place a test gives them other disks.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from resurgo.errors import BadInput
from resurgo.machine import ActualDisk
from resurgo.probe import blockdev, mounts, seen, swap, sysfs
from resurgo.probe.blockdev import SYS_CLASS_BLOCK
from resurgo.probe.mounts import MountEntry, mount_devnum
from resurgo.sortkeys import natural_key

# Kernel devices that are never disks to recover onto.
_NOT_DISKS = re.compile(r"^(ram|zram|dm-|md|fd|sr|nbd)\d*")
# Where live and rescue systems keep their medium and root.
SYSTEM_MOUNTPOINTS = (
    "/",
    "/boot",
    "/boot/efi",
    "/usr",
    "/run/live/medium",
    "/lib/live/mount/medium",
    "/run/initramfs/live",
    "/run/archiso/bootmnt",
    "/run/rootfsbase",
    "/cdrom",
)
IMAGE_TYPES = frozenset({"squashfs", "iso9660", "erofs", "udf", "cramfs"})


def read_actual_disks(
    recovery_paths: Sequence[Path] = (),
    *,
    sys_block: Path = SYS_CLASS_BLOCK,
    mountinfo: Path = mounts.MOUNTINFO,
    proc_swaps: Path = swap.PROC_SWAPS,
    blkid: seen.Blkid = seen.read_blkid,
    pv_groups: seen.PvGroups = seen.read_pv_groups,
) -> list[ActualDisk]:
    """The whole disks of this machine."""
    groups: dict[tuple[int, int], str] | None = None

    def pv_groups_once() -> dict[tuple[int, int], str]:
        nonlocal groups
        if groups is None:
            groups = dict(pv_groups())
        return groups

    entries = mounts.read_mountinfo(mountinfo)
    active = swap.read_proc_swaps(proc_swaps)
    system = _system_disks(entries, sys_block)
    recovery: set[str] = set()
    for rp in recovery_paths:
        recovery |= disks_of_path(rp, entries, sys_block)
    out = []
    for kname in _whole_disks(sys_block):
        dev = blockdev.read_device(kname, sys_block)
        rec = blockdev.disk_record(dev, {}, sys_block)
        devs = {kname: (dev.major, dev.minor)}
        holders = list(dev.holders)
        parts = _partitions(kname, sys_block)
        for name in parts:
            p = blockdev.read_device(name, sys_block)
            devs[name] = (p.major, p.minor)
            holders += [f"{h} (on {name})" for h in p.holders]
        by_num = {v: k for k, v in devs.items()}
        mounted = []
        for e in entries:
            num = mount_devnum(e)
            if num in by_num:
                mounted.append(f"{by_num[num]} on {e.mountpoint}")
        swaps = []
        for s in active:
            if s.is_file:
                continue
            try:
                st = os.stat(s.path)
            except OSError:
                continue
            if (os.major(st.st_rdev), os.minor(st.st_rdev)) in by_num:
                swaps.append(s.path)
        out.append(
            ActualDisk(
                path=dev.path,
                kname=kname,
                size=dev.size,
                logical_sector_size=rec.logical_sector_size,
                physical_sector_size=rec.physical_sector_size,
                wwn=rec.wwn,
                serial=rec.serial,
                model=rec.model,
                transport=rec.transport,
                removable=rec.removable,
                rotational=rec.rotational,
                mounted=tuple(mounted),
                swaps=tuple(swaps),
                holders=tuple(holders),
                holds_system=kname in system,
                holds_recovery_set=kname in recovery,
                identities=seen.read_seen(kname, parts, sys_block=sys_block, blkid=blkid,
                                          pv_groups=pv_groups_once),
            )
        )
    return out


def _whole_disks(sys_block: Path) -> list[str]:
    out = []
    for name in sysfs.entries(sys_block):
        if _NOT_DISKS.match(name) or (sys_block / name / "partition").exists():
            continue
        size = sysfs.int_attribute(sys_block / name / "size")
        if size is not None and size > 0:
            out.append(name)
    return sorted(out, key=natural_key)


def _partitions(disk: str, sys_block: Path) -> list[str]:
    names = sysfs.entries(sys_block / disk)
    return sorted(
        (n for n in names if (sys_block / disk / n / "partition").exists()), key=natural_key
    )


def kname_of_devnum(num: tuple[int, int], sys_block: Path) -> str | None:
    """The kernel name of a device number, looked up in sys_block itself (not /sys/dev)."""
    want = f"{num[0]}:{num[1]}"
    for name in sysfs.entries(sys_block):
        if sysfs.attribute(sys_block / name / "dev") == want:
            return name
    return None


def disks_of_devnum(num: tuple[int, int], sys_block: Path, depth: int = 0) -> set[str]:
    """The whole disks under a device number, through partitions, md, dm and loop files."""
    kname = kname_of_devnum(num, sys_block)
    if kname is None or depth > 8:
        return set()
    try:
        below = set(blockdev.disks_below(kname, sys_block))
    except BadInput:
        return set()
    for d in list(below):
        backing = sysfs.attribute(sys_block / d / "loop" / "backing_file")
        try:
            st = os.stat(backing or "")
        except OSError:
            continue
        below |= disks_of_devnum((os.major(st.st_dev), os.minor(st.st_dev)), sys_block, depth + 1)
    return below


def containing_mount(entries: Iterable[MountEntry], path: str) -> MountEntry | None:
    best: MountEntry | None = None
    for e in mounts.visible(list(entries)):
        mp = e.mountpoint.rstrip("/") or "/"
        if (path == mp or path.startswith(mp.rstrip("/") + "/")) and (
            best is None or len(mp) >= len(best.mountpoint)
        ):
            best = e
    return best


def disks_of_path(path: Path, entries: Sequence[MountEntry], sys_block: Path) -> set[str]:
    real = os.path.realpath(path)
    e = containing_mount(entries, real)
    num = mount_devnum(e) if e is not None else None
    if num is None:
        try:
            st = os.stat(real)
        except OSError:
            return set()
        if os.major(st.st_dev) == 0:
            return set()
        num = (os.major(st.st_dev), os.minor(st.st_dev))
    return disks_of_devnum(num, sys_block)


def _system_disks(entries: Sequence[MountEntry], sys_block: Path) -> set[str]:
    out: set[str] = set()
    for e in entries:
        if e.mountpoint in SYSTEM_MOUNTPOINTS or e.fstype in IMAGE_TYPES:
            num = mount_devnum(e)
            if num is not None:
                out |= disks_of_devnum(num, sys_block)
    return out
