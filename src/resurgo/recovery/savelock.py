"""One save at a time per machine: an flock held for the whole save.

The lock is a file under /run/lock (or /run/resurgo where there is no /run/lock), named
for the saved system: the running one's is ``resurgo-save.lock``; a system mounted
elsewhere (--root) gets its own, so that saving two roots at once is still possible. The
kernel drops the lock with the process, however it ends: a killed save never leaves a
stale lock behind. The file says who holds it (pid, since when, to where) for the message
a second save prints.

A second save exits at once (exit 3) unless told to wait (``save --wait``): a timer's
save that finds a save started by hand should not pile up behind it, and one started by
hand should say so rather than hang.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from resurgo.errors import OperationFailed, PreconditionFailed

LOCK_DIRS = (Path("/run/lock"), Path("/run/resurgo"))


def lock_path(root: Path, dirs: tuple[Path, ...] = LOCK_DIRS) -> Path:
    where = next((d for d in dirs if d.is_dir()), dirs[-1])
    resolved = str(root.resolve())
    if resolved == "/":
        return where / "resurgo-save.lock"
    tag = hashlib.sha256(resolved.encode()).hexdigest()[:16]
    return where / f"resurgo-save-{tag}.lock"


@contextmanager
def save_lock(root: Path, medium: str, *, wait: bool = False,
              dirs: tuple[Path, ...] = LOCK_DIRS) -> Iterator[Path]:
    """Hold the machine's save lock for the saved system at root while the block runs."""
    path = lock_path(root, dirs)
    try:
        path.parent.mkdir(mode=0o755, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as e:
        raise OperationFailed(f"cannot open the save lock {path}: {os.strerror(e.errno or 0)}",
                              "resurgo save runs as root; /run must be writable") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise OperationFailed(f"cannot lock {path}: {os.strerror(e.errno or 0)}") from None
            raise PreconditionFailed(
                f"another save of {root} is running on this machine ({_holder(fd)})",
                "wait for it to end, or give save --wait to start once it has "
                f"(the lock: {path})",
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, (f"pid {os.getpid()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}, "
                       f"saving to {medium}\n").encode(), 0)
        yield path
    finally:
        os.close(fd)


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 512, 0).decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    return text or "its pid is not known yet"
