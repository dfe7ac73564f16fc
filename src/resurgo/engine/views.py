"""A view of one file system as it is under the mounts on top of it.

Why a bind mount: walking the live tree and stopping where st_dev changes would save a
mountpoint with the metadata of the file system mounted on it (its root directory), lose
any file hidden under a mount, and enter a bind mount of another part of the same file
system (same st_dev) a second time. A non-recursive bind mount of the mountpoint shows
exactly this file system's own tree: the directories under nested mounts as they are on
it, and nothing mounted below.

The bind mount is read-only and private to us (resurgo.privatemount): nothing is
propagated to the machine's other namespaces, and nothing is left mounted if we are
killed.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from resurgo.engine.errors import SaveFailed
from resurgo.privatemount import private_mount


@contextlib.contextmanager
def private_view(mountpoint: Path) -> Iterator[int]:
    """An open directory fd of the root of the file system mounted at ``mountpoint``,
    without anything mounted below it, read-only."""
    if not mountpoint.is_dir():
        raise SaveFailed(f"{mountpoint} is not a directory")

    def failed(why: str) -> SaveFailed:
        return SaveFailed(f"cannot make a private view of {mountpoint}: {why}")

    with private_mount(["--bind", "-o", "ro", "--", str(mountpoint)], failed) as fd:
        if os.fstat(fd).st_dev != os.stat(mountpoint).st_dev:
            raise SaveFailed(f"the private view of {mountpoint} shows another file system")
        yield fd
