"""The disk a directory medium lives on is no disk of the saved system.

A set saved to a USB disk mounted below the saved tree (at /mnt/usb, say) must not
describe that disk: its filesystem would get an archive of its own (with the older sets
on it) and recovery would have to recreate it. Its disks are left out of the description,
unless they hold the saved system itself (a set on the system disk: only the set's
directory is left out then).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from resurgo.errors import BadInput
from resurgo.media.url import DirectorySpec, parse_url
from resurgo.probe import blockdev, mounts
from resurgo.probe.actual import containing_mount, kname_of_devnum


def _disks(path: Path, entries: Sequence[mounts.MountEntry], sys_block: Path) -> set[str]:
    """The whole disks under the filesystem holding path (a loop disk counts as a disk
    of its own: the system is described so)."""
    entry = containing_mount(entries, str(path.resolve()))
    num = mounts.mount_devnum(entry) if entry is not None else None
    kname = kname_of_devnum(num, sys_block) if num is not None else None
    if kname is None:
        return set()
    try:
        return set(blockdev.disks_below(kname, sys_block))
    except BadInput:
        return set()


def medium_disks(root: Path, medium_url: str,
                 sys_block: Path = blockdev.SYS_CLASS_BLOCK) -> tuple[str, ...]:
    """Device paths of the disks holding a directory medium, when they are not the
    saved system's; () for other media."""
    spec = parse_url(medium_url)
    if not isinstance(spec, DirectorySpec):
        return ()
    entries = mounts.read_mountinfo()
    where = Path(spec.path)
    while not where.exists() and where != where.parent:
        where = where.parent  # a medium directory a save is about to create
    holding = _disks(where, entries, sys_block)
    if not holding or holding & _disks(root, entries, sys_block):
        return ()
    return tuple(f"/dev/{kname}" for kname in sorted(holding))
