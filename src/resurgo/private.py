"""Files and directories resurgo writes outside the media: private whatever the umask.

What resurgo keeps on a machine (journals, records, caches, logs, descriptions) tells how
its disks are laid out and may hold its configuration, secrets included. A umask of 0
(a cron job, a service with UMask=0000) must not make them readable to every user: files
are created 0600 and set so with fchmod (the umask only masks the mode open() is given),
directories resurgo creates are 0700. Directories that exist already are left as they
are: they may be /tmp or /var/lib, which are not ours to change.
"""

from __future__ import annotations

import os
from pathlib import Path

FILE_MODE = 0o600
DIR_MODE = 0o700


def makedirs(path: Path) -> None:
    """path and its missing parents, each made 0700 (Path.mkdir gives parents the umask's
    mode)."""
    missing: list[Path] = []
    current = path
    while not current.exists() and current != current.parent:
        missing.append(current)
        current = current.parent
    for d in reversed(missing):
        try:
            os.mkdir(d, DIR_MODE)
        except FileExistsError:
            continue  # made meanwhile by another process: not ours to change
        os.chmod(d, DIR_MODE)


def open_fd(path: Path, flags: int) -> int:
    """A descriptor of path opened with flags (O_CREAT added), which is 0600 now, made so
    or not. A symlink is refused (O_NOFOLLOW): a link planted where resurgo writes as root
    would send the write to the file it names."""
    fd = os.open(path, flags | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_bytes(path: Path, data: bytes, *, append: bool = False) -> None:
    """Write (or append) data to the private file path, flushed to disk."""
    flags = os.O_WRONLY | (os.O_APPEND if append else os.O_TRUNC)
    with os.fdopen(open_fd(path, flags), "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def write_text(path: Path, text: str, *, append: bool = False) -> None:
    write_bytes(path, text.encode(), append=append)
