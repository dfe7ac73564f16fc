"""Reports that last: each save, recover, verify (and the other commands that declare it)
leaves a JSON report of what it did, kept on the machine after the terminal is gone.

A report is one file, ``COMMAND-YYYYMMDDTHHMMSSZ.json`` (UTC) in the report directory
(default /var/log/resurgo: the directory 0700, the files 0600, whatever the umask: a
report names disks, paths and hosts), written whole or not at all (a temporary file,
fsync, then a link to its name, which never replaces another report). The newest KEEP
reports of each command are kept, the older ones removed: a nightly save makes 365 a
year, and monitoring reads only the newest.

What a recovery leaves in the rescue system's RAM is lost at power-off: keep_in_target
copies it into the recovered system (TARGET/var/log/resurgo), confined to the target.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from resurgo.apply import confine
from resurgo.private import DIR_MODE, FILE_MODE

# Where reports go: LOG_DIR as help texts and pages say it, DEFAULT_DIR as used (tests
# point it elsewhere).
LOG_DIR = "/var/log/resurgo"
DEFAULT_DIR = Path(LOG_DIR)
# Where a recovered system keeps them (and the rescue's log), under its root.
IN_TARGET = "var/log/resurgo"
KEEP = 100
_NAME = re.compile(r"^(?P<command>[a-z][a-z-]*)-(?P<time>\d{8}T\d{6}Z)(?:-\d+)?\.json$")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def stamp(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def _private_dir(parent: int, name: str) -> int:
    """The directory name in parent, made 0700 if missing and set 0700 if not (it is
    resurgo's), never through a symbolic link; its descriptor."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(name, DIR_MODE, dir_fd=parent)
    fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
    try:
        os.fchmod(fd, DIR_MODE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_report_dir(directory: Path) -> int:
    """The report directory's descriptor: its parent made as needed (0755, as /var/log
    is), the directory itself 0700."""
    path = directory.absolute()
    parent = path.parent
    parent.mkdir(parents=True, exist_ok=True)
    parent_fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return _private_dir(parent_fd, path.name)
    finally:
        os.close(parent_fd)


def _write_new(dir_fd: int, base: str, data: bytes, suffix: str) -> str:
    """data as a new file ``base[-N]suffix`` in dir_fd, 0600, complete before its name
    appears (a temporary name, fsync, link); never replaces a file. Its name."""
    tmp = f".{base}.{os.getpid()}.tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp, dir_fd=dir_fd)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 FILE_MODE, dir_fd=dir_fd)
    try:
        try:
            os.fchmod(fd, FILE_MODE)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        for n in range(1000):
            name = f"{base}{suffix}" if n == 0 else f"{base}-{n}{suffix}"
            try:
                os.link(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd,
                        follow_symlinks=False)
            except FileExistsError:
                continue
            os.fsync(dir_fd)
            return name
        raise OSError(errno.EEXIST, f"{base}{suffix} and 999 more exist")
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=dir_fd)


def encode(data: dict[str, Any]) -> bytes:
    return (json.dumps(data, indent=2, default=str) + "\n").encode()


def write_report(directory: Path, command: str, data: dict[str, Any], *,
                 when: datetime, keep: int = KEEP) -> Path:
    """The report as a new file in directory (see the module docstring); the older
    reports of the command beyond ``keep`` removed. OSError when it cannot be written."""
    fd = _open_report_dir(directory)
    try:
        name = _write_new(fd, f"{command}-{stamp(when)}", encode(data), ".json")
        _prune(fd, command, keep)
    finally:
        os.close(fd)
    return directory / name


def reports(directory: Path, command: str) -> list[Path]:
    """The command's reports in directory, oldest first (by when they were written)."""
    try:
        fd = os.open(directory, _DIR_FLAGS)
    except OSError:
        return []
    try:
        return [directory / name for name in _listed(fd, command)]
    finally:
        os.close(fd)


def _listed(dir_fd: int, command: str) -> list[str]:
    found: list[tuple[int, str]] = []
    for name in os.listdir(dir_fd):
        m = _NAME.match(name)
        if m is None or m["command"] != command:
            continue
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            continue
        if stat.S_ISREG(st.st_mode):
            found.append((st.st_mtime_ns, name))
    return [name for _, name in sorted(found)]


def _prune(dir_fd: int, command: str, keep: int) -> None:
    names = _listed(dir_fd, command)
    for name in names[:max(0, len(names) - keep)]:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=dir_fd)


def keep_in_target(root: Path, name: str, data: bytes) -> Path:
    """data as a new file (0600) in ROOT/var/log/resurgo (0700), confined to root: no
    directory on the way is followed if it is a symbolic link (a restored system is
    data from a medium); the name gets a -N before its suffix rather than replace a
    file. The path written. OperationFailed or OSError when it cannot be."""
    log_fd = confine.open_dirs(str(root), os.path.join(str(root), "var/log"), 0o755)
    try:
        fd = _private_dir(log_fd, "resurgo")
    finally:
        os.close(log_fd)
    base, dot, suffix = name.rpartition(".")
    try:
        written = _write_new(fd, base if dot else name, data, f".{suffix}" if dot else "")
    finally:
        os.close(fd)
    return root / IN_TARGET / written


__all__ = ["DEFAULT_DIR", "IN_TARGET", "KEEP", "LOG_DIR", "encode", "keep_in_target", "reports",
           "stamp", "write_report"]
