"""Read-only btrfs snapshots of the trees a save reads, so that each tree is read as it
was at one instant (save --snapshot auto|required|off).

A btrfs tree (the top level or a subvolume) is snapshotted read-only into the directory
``.resurgo-snapshots`` of its filesystem's top level, mounted privately and writable for
the time of the save, and read from there; the snapshot is deleted when its tree is
saved, whatever happened (failure, Ctrl-C). Beside each snapshot a tag file (same name,
``.tag``) says whose it is: resurgo, the set and the snapshot's subvolume id. A
save killed with SIGKILL leaves both behind: the next save of that filesystem deletes a
snapshot only when its name has our form, its tag is ours and names the snapshot's own
subvolume id (written once it is made), and it is read-only; anything else there is
left alone, with a warning. The directory is left out of the top level's own archive.

A read-only subvolume (a snapshot the system keeps) is read as it is: it does not
change. A filesystem on an LVM logical volume is read from an LVM snapshot
(recovery.lvmsnapshots). Other filesystems (ext4, XFS, vfat on a partition) have no
snapshot here: ``auto`` reads them live (the engine lists what changed while it read),
``required`` refuses the save before anything is written (exit 3).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import logging
import os
import re
import stat
import struct
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path

from resurgo.errors import OperationFailed, PreconditionFailed
from resurgo.probe import lvm
from resurgo.probe.filesystems import SNAPSHOTS
from resurgo.recovery import lvmsnapshots
from resurgo.restoreunits import Unit, file_key

log = logging.getLogger("resurgo.recovery")

DIRECTORY = SNAPSHOTS  # left out of every description
_TAG_MAGIC = "resurgo-snapshot 1"
_NAME = re.compile(r"^[0-9A-Za-z._-]{1,200}$")
# A set id for the check before the set exists: only the snapshot's name depends on it.
_ANY_SET = "00000000T000000Z-0000"


class SnapshotMode(StrEnum):
    AUTO = "auto"
    REQUIRED = "required"
    OFF = "off"


def refuse_unsnapshottable(units: list[Unit], root: Path, mode: SnapshotMode,
                           size_percent: int = lvmsnapshots.DEFAULT_SIZE_PERCENT) -> None:
    """With ``required``: every tree must be a btrfs one or on an LVM volume that can be
    snapshotted now (exit 3 otherwise), checked before anything is written."""
    if mode is not SnapshotMode.REQUIRED:
        return
    on_lvm, report = _lvm_targets(units, root, mode, [])
    other: list[str] = []
    for unit in units:
        if unit.btrfs:
            continue
        target = on_lvm.get(unit.key)
        if target is None or report is None:
            other.append(f"{unit.label} (not on btrfs or an LVM volume)")
            continue
        planned = lvmsnapshots.plan(report, target.lv, target.fstype, _ANY_SET, 0,
                                    size_percent)
        if isinstance(planned, lvmsnapshots.Refused):
            other.append(f"{unit.label} ({planned.why})")
    if other:
        raise PreconditionFailed(
            f"--snapshot required: no snapshot can be taken of {', '.join(other)}",
            "save with --snapshot auto to read them live (files changed while read are "
            "listed), make room in the volume group, or leave them out")


# The btrfs ioctls (linux/btrfs.h), used directly: the tree is mounted privately and
# reached through /proc/self/fd, which btrfs-progs cannot resolve to a real path.
_SUBVOL_RDONLY = 1 << 1
_VOL_ARGS = 4096  # struct btrfs_ioctl_vol_args and _v2 are both 4096 bytes
_IOC_SNAP_DESTROY = (1 << 30) | (_VOL_ARGS << 16) | (0x94 << 8) | 15
_IOC_SNAP_CREATE_V2 = (1 << 30) | (_VOL_ARGS << 16) | (0x94 << 8) | 23
_IOC_SUBVOL_GETFLAGS = (2 << 30) | (8 << 16) | (0x94 << 8) | 25
_IOC_INO_LOOKUP = (3 << 30) | (_VOL_ARGS << 16) | (0x94 << 8) | 18
_FIRST_FREE_OBJECTID = 256  # the inode of a subvolume's root directory


def _open_dir(path: Path) -> int:
    # Followed: the top level is a /proc/PID/fd link (views.private_mount), and save_tree
    # opens the tree the same way.
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def _ioctl(fd: int, request: int, arg: bytearray, what: str) -> None:
    try:
        fcntl.ioctl(fd, request, arg, True)
    except OSError as e:
        raise OperationFailed(f"{what}: {e.strerror}") from None


def subvolume_id(path: Path) -> int:
    """The id of the subvolume whose root directory ``path`` is."""
    fd = _open_dir(path)
    try:
        arg = bytearray(_VOL_ARGS)
        struct.pack_into("<QQ", arg, 0, 0, _FIRST_FREE_OBJECTID)
        _ioctl(fd, _IOC_INO_LOOKUP, arg, f"the subvolume id of {path}")
        return int(struct.unpack_from("<Q", arg, 0)[0])
    finally:
        os.close(fd)


def read_only(path: Path) -> bool:
    fd = _open_dir(path)
    try:
        arg = bytearray(8)
        _ioctl(fd, _IOC_SUBVOL_GETFLAGS, arg, f"the flags of {path}")
        return bool(struct.unpack("<Q", arg)[0] & _SUBVOL_RDONLY)
    finally:
        os.close(fd)


def _create_snapshot(tree: Path, where: Path, name: str) -> None:
    src = _open_dir(tree)
    dst = _open_dir(where)
    try:
        arg = bytearray(_VOL_ARGS)
        struct.pack_into("<qQQ", arg, 0, src, 0, _SUBVOL_RDONLY)
        raw = name.encode()
        arg[56:56 + len(raw)] = raw
        _ioctl(dst, _IOC_SNAP_CREATE_V2, arg, f"a read-only snapshot of {tree}")
    finally:
        os.close(dst)
        os.close(src)


def _delete_subvolume(where: Path, name: str) -> None:
    fd = _open_dir(where)
    try:
        arg = bytearray(_VOL_ARGS)
        raw = name.encode()
        arg[8:8 + len(raw)] = raw
        _ioctl(fd, _IOC_SNAP_DESTROY, arg, f"deleting the snapshot {where / name}")
    finally:
        os.close(fd)


def _is_subvolume(path: Path) -> bool:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    return st.st_ino == _FIRST_FREE_OBJECTID and stat.S_ISDIR(st.st_mode)


def remove_leftovers(top: Path) -> list[str]:
    """Delete the snapshots an earlier save left in ``top``'s directory when provably
    its own (see the module docstring); warnings for what is left alone."""
    where = top / DIRECTORY
    warnings: list[str] = []
    if not where.is_dir() or where.is_symlink():
        return warnings
    for entry in sorted(where.iterdir()):
        if entry.name.endswith(".tag"):
            continue
        tag = where / f"{entry.name}.tag"
        try:
            text = tag.read_text() if tag.is_file() and not tag.is_symlink() else ""
        except (OSError, UnicodeDecodeError):
            text = ""
        fields = text.split("\n")
        ours = (_NAME.match(entry.name) is not None and len(fields) >= 3
                and fields[0] == _TAG_MAGIC and _is_subvolume(entry))
        if ours:
            try:
                ours = read_only(entry) and str(subvolume_id(entry)) == fields[2]
            except OperationFailed:
                ours = False
        if not ours:
            warnings.append(f"{entry} is not a snapshot this resurgo can prove its own: "
                            "left alone")
            continue
        _delete_subvolume(where, entry.name)
        tag.unlink()
        log.info("deleted %s, left by an earlier save (set %s)", entry, fields[1])
    return warnings


@contextlib.contextmanager
def snapshot_of(top: Path, tree: Path, set_id: str, unit: Unit) -> Iterator[Path]:
    """A read-only snapshot of ``tree`` (a subvolume below the writable top level
    ``top``, or top itself), deleted when done whatever happened."""
    where = top / DIRECTORY
    name = f"{set_id}-{file_key(unit.key)}"
    if not _NAME.match(name):
        raise OperationFailed(f"no snapshot name can be made of {name!r}")
    snap = where / name
    tag = where / f"{name}.tag"
    # The tag first, then the snapshot, then the snapshot's own id into the tag: a save
    # killed in between leaves a snapshot whose tag names none, which the next save
    # does not delete (it warns).
    tag.write_text(f"{_TAG_MAGIC}\n{set_id}\n-\n")
    made = False
    try:
        _create_snapshot(tree, where, name)
        made = True
        tag.write_text(f"{_TAG_MAGIC}\n{set_id}\n{subvolume_id(snap)}\n")
        yield snap
    finally:
        try:
            if made:
                _delete_subvolume(where, name)
        finally:
            tag.unlink(missing_ok=True)


@contextlib.contextmanager
def _directory(top: Path) -> Iterator[None]:
    """The directory of the snapshots in ``top``, made for the save and removed after it
    when empty. The top level's times are put back each time: its root directory is
    saved too (from a snapshot taken after the directory was made), and a save changes
    nothing of what it saves."""
    st = os.stat(top)
    where = top / DIRECTORY
    with contextlib.suppress(FileExistsError):
        os.mkdir(where, 0o700)
    os.utime(top, ns=(st.st_atime_ns, st.st_mtime_ns))
    if where.is_symlink() or not where.is_dir():
        raise OperationFailed(f"{where} is not a directory resurgo can keep snapshots in")
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(where)
            os.utime(top, ns=(st.st_atime_ns, st.st_mtime_ns))


def take(units: list[Unit], root: Path, set_id: str, mode: SnapshotMode,
         stack: contextlib.ExitStack, warnings: list[str],
         size_percent: int = lvmsnapshots.DEFAULT_SIZE_PERCENT,
         ) -> dict[str, tuple[Path | None, str]]:
    """For each unit: the path to read it from (None: its live tree, as before) and how
    it is read, for the report. Snapshots (btrfs, LVM) and the mounts they are read
    through are entered into ``stack``, which unmounts and deletes them."""
    found: dict[str, tuple[Path | None, str]] = {}
    tops: dict[str, Path] = {}
    on_lvm: dict[str, lvmsnapshots.Target] = {}
    report = None
    if mode is not SnapshotMode.OFF and any(not u.btrfs for u in units):
        on_lvm, report = _lvm_targets(units, root, mode, warnings)
    if on_lvm:
        lvmsnapshots.hold(stack)
    for n, unit in enumerate(units):
        if mode is SnapshotMode.OFF:
            found[unit.key] = (None, "live (--snapshot off)")
            continue
        target = None if unit.btrfs else on_lvm.get(unit.key)
        if not unit.btrfs and (target is None or report is None):
            found[unit.key] = (None, "live (no snapshot of this filesystem)")
            continue
        try:
            if target is not None and report is not None:
                found[unit.key] = _lvm_snapshot(unit, target, report, set_id, n, stack,
                                                warnings, size_percent)
            else:
                found[unit.key] = _btrfs_snapshot(unit, root, set_id, stack, tops, warnings)
        except OperationFailed as e:
            found[unit.key] = _read_live(unit, "" if unit.btrfs else "LVM ", e, mode,
                                         warnings)
    return found


def _lvm_targets(units: list[Unit], root: Path, mode: SnapshotMode, warnings: list[str],
                 ) -> tuple[dict[str, lvmsnapshots.Target], lvm.Report | None]:
    """The units on LVM volumes; when LVM cannot be read, ``required`` refuses the save
    (exit 3) and ``auto`` reads them all live, saying why."""
    try:
        return lvmsnapshots.targets(units, root)
    except OperationFailed as e:
        if mode is SnapshotMode.REQUIRED:
            raise PreconditionFailed(
                f"--snapshot required: LVM could not be read: {e.message}") from e
        warnings.append(f"LVM could not be read, its volumes are read live: {e.message}")
        return {}, None


def _read_live(unit: Unit, kind: str, e: OperationFailed, mode: SnapshotMode,
               warnings: list[str]) -> tuple[Path | None, str]:
    """The one way a snapshot that could not be taken ends, whatever its kind (``kind``:
    "LVM " or "" for btrfs): ``required`` refuses the save (exit 3), ``auto`` reads the
    tree live and says why."""
    if mode is SnapshotMode.REQUIRED:
        raise PreconditionFailed(
            f"--snapshot required: no snapshot of {unit.label}: {e.message}") from e
    warnings.append(f"{unit.label}: read live, no {kind}snapshot could be taken: {e.message}")
    return None, f"live (the {kind}snapshot failed)"


def _btrfs_snapshot(unit: Unit, root: Path, set_id: str, stack: contextlib.ExitStack,
                    tops: dict[str, Path], warnings: list[str]) -> tuple[Path | None, str]:
    from resurgo.recovery import views
    from resurgo.recovery.trees import btrfs_device

    device = btrfs_device(unit, root)
    top = tops.get(device)
    if top is None:
        top = stack.enter_context(views.btrfs_top_level(device, writable=True))
        tops[device] = top
        warnings.extend(remove_leftovers(top))
        stack.enter_context(_directory(top))
    tree = top / unit.path_in_top_level if unit.path_in_top_level else top
    if not tree.is_dir():
        raise OperationFailed(f"there is no {unit.label} on {device}")
    if unit.path_in_top_level and read_only(tree):
        return tree, "a read-only subvolume, as it is"
    return stack.enter_context(snapshot_of(top, tree, set_id, unit)), "a read-only snapshot"


def _lvm_snapshot(unit: Unit, target: lvmsnapshots.Target, report: lvm.Report, set_id: str,
                  n: int, stack: contextlib.ExitStack, warnings: list[str],
                  size_percent: int) -> tuple[Path | None, str]:
    planned = lvmsnapshots.plan(report, target.lv, target.fstype, set_id, n, size_percent)
    if isinstance(planned, lvmsnapshots.Refused):
        raise OperationFailed(planned.why)
    path = stack.enter_context(lvmsnapshots.snapshot_of(planned, target.fstype, unit.label,
                                                        warnings))
    if planned.size is not None:
        # The next classic snapshot in this group finds that much less room.
        vg = report.vgs[planned.vg]
        report.vgs[planned.vg] = dataclasses.replace(vg, free=vg.free - planned.size)
    return path, planned.how


__all__ = ["DIRECTORY", "SnapshotMode", "read_only", "refuse_unsnapshottable",
           "remove_leftovers", "snapshot_of", "take"]
