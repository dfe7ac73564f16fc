"""Block devices as /sys shows them while the layout is being recreated.

Which whole disks a device lies on (through partitions, md and device-mapper), what is
built on a device, waiting for device nodes (no udevd: the kernel's devtmpfs makes them),
and the mounts that are recovery's own.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from resurgo.errors import BadInput, OperationFailed
from resurgo.probe import blockdev, mounts, sysfs
from resurgo.probe.blockdev import SYS_CLASS_BLOCK
from resurgo.probe.mounts import MountEntry, mount_devnum

# Private mounts recovery makes outside its root (the top level of a btrfs), and so owns.
RUN_DIR = Path("/run/resurgo")
NODE_TIMEOUT = 10.0


def kname(path: str) -> str:
    """The kernel name of the block device at path; OperationFailed when there is none."""
    try:
        return blockdev.kname_of_path(path)
    except BadInput as e:
        raise OperationFailed(f"no block device {path}: {e}") from None


def exists(path: str) -> bool:
    try:
        blockdev.kname_of_path(path)
    except BadInput:
        return False
    return True


def disks_under(path: str, sys_block: Path = SYS_CLASS_BLOCK) -> set[str]:
    """Kernel names of the whole disks the device at path is built on."""
    return set(blockdev.disks_below(kname(path), sys_block))


def built_on(name: str, sys_block: Path = SYS_CLASS_BLOCK) -> set[str]:
    """name, its partitions, and everything stacked on them (md, dm), by kernel name."""
    out: set[str] = set()
    todo = [name]
    while todo:
        cur = todo.pop()
        if cur in out:
            continue
        out.add(cur)
        todo.extend(p.kname for p in blockdev.partitions_of(cur, sys_block).values())
        try:
            todo.extend(blockdev.read_device(cur, sys_block).holders)
        except BadInput:
            continue
    return out


def devnum(name: str, sys_block: Path = SYS_CLASS_BLOCK) -> tuple[int, int] | None:
    try:
        dev = blockdev.read_device(name, sys_block)
    except BadInput:
        return None
    return (dev.major, dev.minor)


def is_ours(mountpoint: str, root: str) -> bool:
    """A mount recovery made: at or under its root, or in its private run directory."""
    for base in (os.path.normpath(root), str(RUN_DIR)):
        if mounts.relative_mountpoint(mountpoint, base) is not None:
            return True
    return False


def mounts_on(names: Iterable[str], entries: Sequence[MountEntry]) -> list[MountEntry]:
    """The mounts of any of the devices named (kernel names)."""
    nums = {n for n in (devnum(k) for k in names) if n is not None}
    return [e for e in entries if mount_devnum(e) in nums]


def wait_for_nodes(paths: Sequence[str], timeout: float = NODE_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while True:
        missing = [p for p in paths if not exists(p)]
        if not missing:
            return
        if time.monotonic() > deadline:
            raise OperationFailed(
                f"the device node(s) {', '.join(missing)} did not appear within {timeout:g} s",
                "the kernel did not take the new partition table; check dmesg",
            )
        time.sleep(0.05)


def kernel_partitions(disk: str) -> dict[int, tuple[int, int]]:
    """number -> (start, size) in bytes of the partitions the kernel uses on a disk."""
    return {n: (p.start, p.size) for n, p in blockdev.partitions_of(kname(disk)).items()}


def dm_name(name: str, sys_block: Path = SYS_CLASS_BLOCK) -> str | None:
    return sysfs.attribute(sys_block / name / "dm" / "name")


def slaves(name: str, sys_block: Path = SYS_CLASS_BLOCK) -> tuple[str, ...]:
    try:
        return blockdev.read_device(name, sys_block).slaves
    except BadInput:
        return ()
