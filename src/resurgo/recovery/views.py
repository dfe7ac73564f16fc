"""Private views of the trees a set archives: one filesystem without what is mounted on
it, or the top level of a btrfs (where every subvolume is, mounted or not).

Made as the engine makes its views, by resurgo.privatemount: nothing is ever left
mounted, whatever happens to us, and nothing shows in the machine's mount table. The
view is used through ``/proc/<our pid>/fd/<fd>/...`` paths, which child processes
(btrfs property, the engine's writers) can follow too.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from resurgo.errors import OperationFailed
from resurgo.privatemount import private_mount as _private_fd
from resurgo.probe import mounts


@contextlib.contextmanager
def private_mount(mount_args: Sequence[str], what: str) -> Iterator[Path]:
    """The path of a directory where ``mount MOUNT_ARGS`` is mounted, for us alone."""

    def failed(why: str) -> OperationFailed:
        return OperationFailed(f"cannot mount {what}: {why or 'mount failed'}")

    with _private_fd(mount_args, failed) as fd:
        yield Path(f"/proc/{os.getpid()}/fd/{fd}")


def filesystem_view(mountpoint: Path, *, writable: bool) -> contextlib.AbstractContextManager[Path]:
    """The filesystem mounted at ``mountpoint``, without the mounts below it."""
    options = [] if writable else ["-o", "ro"]
    return private_mount(["--bind", *options, "--", str(mountpoint)], str(mountpoint))


def btrfs_top_level(device: str, *, writable: bool) -> contextlib.AbstractContextManager[Path]:
    """The top level (subvolume 5) of the btrfs on ``device``."""
    options = "subvolid=5" + ("" if writable else ",ro")
    return private_mount(["-t", "btrfs", "-o", options, "--", device],
                         f"the top level of the btrfs on {device}")


def mount_at(path: Path) -> mounts.MountEntry | None:
    """The mount whose mountpoint is exactly ``path`` (the last one: the visible one)."""
    real = os.path.realpath(path)
    found = None
    for e in mounts.read_mountinfo():
        if e.mountpoint == real:
            found = e
    return found


def require_mounted(path: Path, what: str) -> mounts.MountEntry:
    entry = mount_at(path)
    if entry is None:
        raise OperationFailed(
            f"{path} is not a mountpoint: {what} is not mounted there",
            "mount the recreated filesystems (resurgo recover mounts them under --root)",
        )
    return entry
