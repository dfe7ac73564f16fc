"""Private views of the trees a set archives: one filesystem without what is mounted on
it, or the top level of a btrfs (where every subvolume is, mounted or not).

Made the way the engine makes its views (resurgo.engine.views): a helper process mounts
in a mount namespace of its own, we open the mount's root through /proc/PID/root and the
helper exits; the open directory keeps the detached mount alive until we close it, so
nothing is ever left mounted, whatever happens to us, and nothing shows in the
machine's mount table. The view is used through ``/proc/<our pid>/fd/<fd>/...`` paths,
which child processes (btrfs property, the engine's writers) can follow too.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from resurgo import run
from resurgo.errors import OperationFailed
from resurgo.probe import mounts

_SCRIPT = 'spot="$1"; shift; mount "$@" "$spot" && echo ready && exec cat'


@contextlib.contextmanager
def private_mount(mount_args: Sequence[str], what: str) -> Iterator[Path]:
    """The path of a directory where ``mount MOUNT_ARGS`` is mounted, for us alone."""
    run.require("unshare", "mount")
    spot = tempfile.mkdtemp(prefix="resurgo-view-")
    try:
        fd = _open(list(mount_args), spot, what)
    finally:
        os.rmdir(spot)
    try:
        yield Path(f"/proc/{os.getpid()}/fd/{fd}")
    finally:
        os.close(fd)


def _open(mount_args: list[str], spot: str, what: str) -> int:
    helper = run.spawn(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", _SCRIPT, "sh", spot,
         *mount_args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert helper.stdin is not None and helper.stdout is not None
    try:
        if helper.stdout.readline() != b"ready\n":
            helper.stdin.close()
            helper.wait()
            why = helper.stderr.read().decode(errors="replace").strip() if helper.stderr else ""
            raise OperationFailed(f"cannot mount {what}: {why or 'mount failed'}")
        return os.open(f"/proc/{helper.pid}/root{spot}",
                       os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    finally:
        helper.stdin.close()
        helper.wait()
        helper.stdout.close()
        if helper.stderr is not None:
            helper.stderr.close()


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
