"""Files and directories resurgo writes outside the media: private whatever the umask.

What resurgo keeps on a machine (journals, records, caches, logs, descriptions) tells how
its disks are laid out and may hold its configuration, secrets included. A umask of 0
(a cron job, a service with UMask=0000) must not make them readable to every user: files
are created 0600 and set so with fchmod (the umask only masks the mode open() is given),
directories resurgo creates are 0700. Directories that exist already are left as they
are: they may be /tmp or /var/lib, which are not ours to change.
"""

from __future__ import annotations

import contextlib
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


def replace_bytes(path: Path, data: bytes, *, mode: int = FILE_MODE) -> None:
    """Put data at path atomically: written to a new file beside it, flushed, then
    renamed over it, so that a reader (status, a metrics collector) sees the old content
    or the new, never half of it. The file has ``mode`` (0600 unless it is meant for
    others to read, as metrics are), and neither it nor the new file is ever reached
    through a symbolic link."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)  # left by a process of the same id that died
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 mode)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
