"""A view of one file system as it is under the mounts on top of it.

Why a bind mount: walking the live tree and stopping where st_dev changes would save a
mountpoint with the metadata of the file system mounted on it (its root directory), lose
any file hidden under a mount, and enter a bind mount of another part of the same file
system (same st_dev) a second time. A non-recursive bind mount of the mountpoint shows
exactly this file system's own tree: the directories under nested mounts as they are on
it, and nothing mounted below.

Why in a private mount namespace: a bind mount made in the machine's namespace is
propagated to its peers (other namespaces sharing the mount), and outlives us if we are
killed. So a helper ``unshare --mount --propagation private`` process makes the bind mount
in a namespace of its own, read-only, on an empty temporary directory; we open the view's
root through /proc/PID/root/TMPDIR and let the helper exit. The open directory keeps the (now
detached) mount alive for as long as we walk it, and the kernel drops it when we close
it: nothing is ever left mounted, whatever happens to us.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from resurgo import run
from resurgo.engine.errors import SaveFailed

_SCRIPT = 'mount --bind -o ro -- "$1" "$2" && echo ready && exec cat'


@contextlib.contextmanager
def private_view(mountpoint: Path) -> Iterator[int]:
    """An open directory fd of the root of the file system mounted at ``mountpoint``,
    without anything mounted below it, read-only."""
    run.require("unshare", "mount")
    if not mountpoint.is_dir():
        raise SaveFailed(f"{mountpoint} is not a directory")
    spot = tempfile.mkdtemp(prefix="resurgo-view-")
    try:
        fd = _open_view(mountpoint, spot)
    finally:
        os.rmdir(spot)
    try:
        if os.fstat(fd).st_dev != os.stat(mountpoint).st_dev:
            raise SaveFailed(f"the private view of {mountpoint} shows another file system")
        yield fd
    finally:
        os.close(fd)


def _open_view(mountpoint: Path, spot: str) -> int:
    helper = run.spawn(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", _SCRIPT, "sh",
         str(mountpoint), spot],
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
            raise SaveFailed(f"cannot make a private view of {mountpoint}: {why}")
        return os.open(f"/proc/{helper.pid}/root{spot}",
                       os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    finally:
        helper.stdin.close()
        helper.wait()
        helper.stdout.close()
        if helper.stderr is not None:
            helper.stderr.close()
