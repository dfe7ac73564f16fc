"""LVM snapshots of the filesystems a save reads (save --snapshot auto|required), so
that each is read as it was at one instant.

A filesystem on an LVM logical volume is read from a snapshot of that volume, mounted
read-only and privately (resurgo.privatemount: nothing shows in the mount table, nothing
stays mounted if we are killed); the description still describes the real volumes,
written before any snapshot exists. A thin volume gets a thin snapshot (it takes no room
of its own, only the pool's: refused when the pool's data is fuller than
THIN_POOL_FULL percent, where the writes of the save's time could fill it and stop the
origin's writes too). Any other volume gets a classic snapshot whose copy-on-write area
is ``snapshot_size`` percent of the origin (rounded up to whole extents, at least one;
``save --snapshot-size``, default DEFAULT_SIZE_PERCENT), refused when the volume group
has less free room than that. A classic snapshot that overflows while it is read
(more of the origin written during the save than its area holds) is invalidated by the
kernel: the save then fails, naming it, rather than keeping a torn tree.

Consistency: lvcreate suspends the origin's device with its filesystem frozen
(device-mapper's lockfs, freeze_bdev) while it puts the snapshot in: ext4 and XFS flush
their journal or log and write a clean superblock before the freeze, so the snapshot is
the filesystem as at a clean unmount, taken at one instant (the vm test checks it: the
ext4 snapshot's superblock has no needs_recovery, the mounted origin's has), and the files
of running applications are as a crash would leave them (hence the pre-save hook, to
quiesce them first). lvcreate does the same for a thin snapshot (checked the same way),
so no fsfreeze of our own is needed. A frozen XFS's log is covered, not marked clean, so
the kernel runs an (empty) log recovery when the snapshot is mounted: on the snapshot,
whose device is writable, never on the origin. XFS refuses to mount a second filesystem
with the origin's UUID: the snapshot is mounted with nouuid.

Every snapshot is removed when its tree is read, whatever happened (failure, Ctrl-C,
SIGTERM). One killed with SIGKILL leaves its snapshots behind: the next save (before it
describes the system) removes a logical volume only when it can prove it its own, by
name and tags: its name is ``resurgo-snap-SETID-N``, it carries the tag TAG and the tag
``resurgo-set-SETID`` of the same set id, it is a snapshot (it has an origin), and its
device is not open. Anything else is left alone, with a warning for what has our name or
tag. Saves holding snapshots hold a shared lock (LOCK) that the removal takes
exclusively, so that two saves of different roots never remove each other's.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from resurgo import run
from resurgo.errors import OperationFailed
from resurgo.probe import lvm
from resurgo.recovery import views
from resurgo.restoreunits import Unit, under
from resurgo.units import human

log = logging.getLogger("resurgo.recovery")

PREFIX = lvm.SNAPSHOT_PREFIX
TAG = lvm.SNAPSHOT_TAG
SET_TAG = lvm.SNAPSHOT_SET_TAG
DEFAULT_SIZE_PERCENT = 10
THIN_POOL_FULL = 90.0
LOCK = Path("/run/lock/resurgo-lvm-snapshots.lock")
CONTROL = Path("/dev/mapper/control")
SYS_DEV = Path("/sys/dev/block")
# The options a snapshot of each filesystem type is mounted with; others are read live.
MOUNT_OPTIONS: dict[str, str] = {
    "ext2": "ro",
    "ext3": "ro",
    "ext4": "ro",
    "xfs": "ro,nouuid",
    "vfat": "ro",
}
_SNAPSHOTTABLE = ("linear", "striped", "raid0", "raid1", "raid4", "raid5", "raid6", "raid10",
                  "mirror", "thin")


@dataclass(frozen=True)
class Planned:
    """A snapshot to make: lvcreate's arguments and what the report says of it."""

    vg: str
    origin: str
    name: str
    thin: bool
    size: int | None  # a classic snapshot's copy-on-write area, in bytes
    argv: tuple[str, ...]

    @property
    def how(self) -> str:
        if self.thin:
            return f"an LVM thin snapshot of {self.vg}/{self.origin}"
        assert self.size is not None
        return f"an LVM snapshot of {self.vg}/{self.origin} ({human(self.size)} for changes)"


@dataclass(frozen=True)
class Refused:
    why: str


def snapshot_name(set_id: str, n: int) -> str:
    return f"{PREFIX}{set_id}-{n}"


def classic_size(origin_size: int, extent_size: int, percent: int) -> int:
    """``percent`` of the origin, rounded up to whole extents, at least one extent."""
    extent = max(1, extent_size)
    extents = max(1, math.ceil(origin_size * percent / 100 / extent))
    return extents * extent


def plan(report: lvm.Report, lv: lvm.Lv, fstype: str, set_id: str, n: int,
         percent: int) -> Planned | Refused:
    """The snapshot of ``lv`` (holding a ``fstype`` filesystem) to make, or why none."""
    if fstype not in MOUNT_OPTIONS:
        return Refused(f"a {fstype} filesystem's snapshot is not read by resurgo")
    vg = report.vgs.get(lv.vg)
    if vg is None or vg.partial:
        return Refused(f"the volume group {lv.vg} is missing physical volumes")
    kind = lvm.lv_type(lv)
    if kind.value not in _SNAPSHOTTABLE:
        return Refused(f"{lv.vg}/{lv.name} is a {kind.value} volume, which resurgo does "
                       "not snapshot")
    name = snapshot_name(set_id, n)
    common = ("--snapshot", "--name", name, "--addtag", TAG, "--addtag", f"{SET_TAG}{set_id}")
    if kind.value == "thin":
        pool = report.lv(lv.vg, lv.pool) if lv.pool else None
        used = pool.data_percent if pool is not None else None
        if used is None:
            return Refused(f"the thin pool of {lv.vg}/{lv.name} reports no data use")
        if used > THIN_POOL_FULL:
            return Refused(f"the thin pool {lv.vg}/{lv.pool} is {used:.0f} % full (a thin "
                           f"snapshot is taken below {THIN_POOL_FULL:.0f} %)")
        # Thin snapshots are made with activation skipped; this one is read at once.
        thin: tuple[str, ...] = ("lvm", "lvcreate", *common, "--setactivationskip", "n",
                                 "--activate", "y", f"{lv.vg}/{lv.name}")
        return Planned(lv.vg, lv.name, name, True, None, thin)
    size = classic_size(lv.size, vg.extent_size, percent)
    if size > vg.free:
        return Refused(f"the volume group {lv.vg} has {human(vg.free)} free, and a snapshot "
                       f"of {lv.vg}/{lv.name} takes {human(size)} ({percent} % of it, "
                       "snapshot_size)")
    argv = ("lvm", "lvcreate", *common, "--size", f"{size}b", f"{lv.vg}/{lv.name}")
    return Planned(lv.vg, lv.name, name, False, size, argv)


def ours(lv: lvm.Lv) -> bool:
    """Whether ``lv`` is a snapshot a save of resurgo made (see the module docstring);
    its device may still be open (a save running now)."""
    return lvm.save_snapshot(lv)


def leftovers(report: lvm.Report) -> tuple[list[lvm.Lv], list[str]]:
    """The snapshots of earlier saves to remove, and warnings for what looks like one
    but is not provably ours, or is in use."""
    remove: list[lvm.Lv] = []
    warnings: list[str] = []
    for lv in report.lvs:
        if lv.hidden:
            continue
        looks = lv.name.startswith(PREFIX) or TAG in lv.tags
        if not looks:
            continue
        if not ours(lv):
            warnings.append(f"{lv.vg}/{lv.name} is not a snapshot this resurgo can prove its "
                            "own (name, tags, origin): left alone")
        elif lv.device_open:
            warnings.append(f"{lv.vg}/{lv.name}, a save's snapshot, is in use: left alone")
        else:
            remove.append(lv)
    return remove, warnings


def lv_of_mount(report: lvm.Report, entry_major: int, entry_minor: int,
                sys_dev: Path) -> lvm.Lv | None:
    """The LV whose public device is major:minor; None when it is no LV."""
    base = sys_dev / f"{entry_major}:{entry_minor}" / "dm"
    try:
        uuid = (base / "uuid").read_text().strip()
        name = (base / "name").read_text().strip()
    except OSError:
        return None
    if not uuid.startswith("LVM-"):
        return None
    found = lvm.lv_of_dm(report, uuid, name)
    return None if found is None or found.internal else found.lv


# ---------------------------------------------------------------- running lvm


def available() -> bool:
    """Whether this machine can have LVM volumes at all (lvm and device-mapper)."""
    return run.which("lvm") is not None and CONTROL.exists()


@contextlib.contextmanager
def _lock(exclusive: bool) -> Iterator[bool]:
    """The snapshots' lock; yields whether it was had (an exclusive one is not waited
    for: another save holds snapshots now)."""
    LOCK.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB if exclusive else fcntl.LOCK_SH)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            yield False
            return
        yield True
    finally:
        os.close(fd)


def _remove(vg: str, name: str) -> str | None:
    """lvremove, tried a few times (a private mount just closed may hold the device for
    a moment); None when done, else lvm's words."""
    why = ""
    for attempt in range(5):
        result = run.run(["lvm", "lvremove", "--yes", f"{vg}/{name}"], check=False)
        if result.returncode == 0:
            return None
        why = (result.stderr.strip().splitlines() or [f"exit {result.returncode}"])[-1]
        time.sleep(0.5 * (attempt + 1))
    return why


def remove_leftovers(warnings: list[str]) -> list[str]:
    """Remove the snapshots killed saves left (see leftovers); their names."""
    if not available():
        return []
    removed: list[str] = []
    with _lock(exclusive=True) as had:
        if not had:
            log.info("another save holds LVM snapshots: leftovers are not looked for now")
            return removed
        try:
            report = lvm.read_report()
        except OperationFailed as e:
            warnings.append(f"the leftover LVM snapshots of earlier saves could not be "
                            f"looked for: {e.message}")
            return removed
        remove, notes = leftovers(report)
        warnings.extend(notes)
        for lv in remove:
            why = _remove(lv.vg, lv.name)
            if why is None:
                log.info("removed %s/%s, an LVM snapshot left by an earlier save", lv.vg, lv.name)
                removed.append(f"{lv.vg}/{lv.name}")
            else:
                warnings.append(f"{lv.vg}/{lv.name}, left by an earlier save, could not be "
                                f"removed: {why}")
    return removed


@dataclass(frozen=True)
class Target:
    """A unit whose filesystem is on an LV, as found on the running system."""

    lv: lvm.Lv
    fstype: str


def targets(units: list[Unit], root: Path,
            report: lvm.Report | None = None) -> tuple[dict[str, Target], lvm.Report | None]:
    """The units (not btrfs) whose filesystem is mounted from an LV, by unit key."""
    found: dict[str, Target] = {}
    if not available():
        return found, report
    for unit in units:
        if unit.btrfs or unit.mountpoint is None:
            continue
        entry = views.mount_at(under(root, unit.mountpoint))
        if entry is None or not (SYS_DEV / f"{entry.major}:{entry.minor}" / "dm").is_dir():
            continue  # not mounted, or from no device-mapper device: LVM is not asked
        if report is None:
            report = lvm.read_report()
        lv = lv_of_mount(report, entry.major, entry.minor, SYS_DEV)
        if lv is not None:
            found[unit.key] = Target(lv, entry.fstype)
    return found, report


def _device(vg: str, name: str, timeout: float = 10.0) -> str:
    """The snapshot's device node, once it is there (udev makes it, or lvm without udev)."""
    path = f"/dev/mapper/{vg.replace('-', '--')}-{name.replace('-', '--')}"
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise OperationFailed(f"the snapshot {vg}/{name} has no device {path}")
        time.sleep(0.1)
    return path


def _remove_if_made(p: Planned, warnings: list[str]) -> None:
    try:
        made = lvm.read_lv(p.vg, p.name) is not None
    except OperationFailed:
        made = False  # lvs finds no such volume
    why = _remove(p.vg, p.name) if made else None
    if why is not None:
        warnings.append(f"the snapshot {p.vg}/{p.name} could not be removed ({why}); "
                        "the next save removes it")


def _overflowed(p: Planned) -> bool:
    if p.thin:
        return False
    try:
        lv = lvm.read_lv(p.vg, p.name)
    except OperationFailed:
        return False
    return lv is not None and (lv.snapshot_invalid or lv.attr[4:5] == "I")


def _overflow_error(p: Planned, label: str) -> OperationFailed:
    assert p.size is not None
    return OperationFailed(
        f"the LVM snapshot of {p.vg}/{p.origin} ({label}) overflowed while it was read: more "
        f"than its {human(p.size)} was written to {p.origin} during the save, so the kernel "
        "invalidated it; the set is dropped rather than kept torn",
        "raise snapshot_size (save --snapshot-size PERCENT), save when less is written, "
        "or save with --snapshot off to read it live")


@contextlib.contextmanager
def snapshot_of(p: Planned, fstype: str, label: str, warnings: list[str]) -> Iterator[Path]:
    """The snapshot ``p`` made, mounted privately read-only for as long as the block
    runs, then removed whatever happened; a classic one that overflowed fails it."""
    try:
        run.run(p.argv)
    except BaseException:
        # lvcreate may have made the volume before it failed (or was stopped).
        _remove_if_made(p, warnings)
        raise
    try:
        device = _device(p.vg, p.name)
        try:
            with views.private_mount(["-t", fstype, "-o", MOUNT_OPTIONS[fstype], "--", device],
                                     f"the snapshot {p.vg}/{p.name}") as path:
                yield path
        except (OSError, OperationFailed) as e:
            if _overflowed(p):
                raise _overflow_error(p, label) from e
            raise
        if _overflowed(p):
            raise _overflow_error(p, label)
    finally:
        why = _remove(p.vg, p.name)
        if why is not None:
            warnings.append(f"the snapshot {p.vg}/{p.name} could not be removed ({why}); "
                            "the next save removes it")


def hold(stack: contextlib.ExitStack) -> None:
    """Hold the snapshots' lock shared for as long as ``stack`` is open."""
    stack.enter_context(_lock(exclusive=False))


__all__ = ["DEFAULT_SIZE_PERCENT", "MOUNT_OPTIONS", "PREFIX", "TAG", "THIN_POOL_FULL",
           "Planned", "Refused", "Target", "classic_size", "hold", "leftovers", "ours",
           "plan", "remove_leftovers", "snapshot_name", "snapshot_of", "targets"]
