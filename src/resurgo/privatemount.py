"""A mount that only we see, and that nothing can leave behind.

Why not mount in the machine's namespace: a mount made there is propagated to its
peers (other namespaces sharing the mount) and outlives us if we are killed. So a helper
``unshare --mount --propagation private`` process mounts in a namespace of its own, on
an empty temporary directory; we open the mount's root through /proc/PID/root/TMPDIR and
let the helper exit. The open directory keeps the (now detached) mount alive for as long
as we hold it, and the kernel drops it when we close it: nothing is ever left mounted,
whatever happens to us, and nothing shows in the machine's mount table.

The engine's views (resurgo.engine.views) and the recovery's (resurgo.recovery.views)
are both made here.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Sequence

from resurgo import run
from resurgo.errors import ResurgoError

_SCRIPT = 'spot="$1"; shift; mount "$@" "$spot" && echo ready && exec cat'


@contextlib.contextmanager
def private_mount(
    mount_args: Sequence[str], failed: Callable[[str], ResurgoError]
) -> Iterator[int]:
    """An open directory fd of the root of ``mount MOUNT_ARGS SPOT`` made for us alone.

    ``failed(why)`` makes the error raised when mount refuses (why: its stderr)."""
    run.require("unshare", "mount")
    spot = tempfile.mkdtemp(prefix="resurgo-view-")
    try:
        fd = _open(list(mount_args), spot, failed)
    finally:
        os.rmdir(spot)
    try:
        yield fd
    finally:
        os.close(fd)


def _open(mount_args: list[str], spot: str, failed: Callable[[str], ResurgoError]) -> int:
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
            raise failed(why)
        return os.open(f"/proc/{helper.pid}/root{spot}",
                       os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    finally:
        helper.stdin.close()
        helper.wait()
        helper.stdout.close()
        if helper.stderr is not None:
            helper.stderr.close()
