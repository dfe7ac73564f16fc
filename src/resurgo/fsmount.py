"""A mount that belongs to one open file descriptor: the kernel's mount API (fsopen,
fsconfig, fsmount; Linux 5.2 and later).

Why this and not mount(8) in a private namespace (privatemount.py): a network share needs
options that are secrets (a CIFS password) and options that come from a URL. Here each
option is one fsconfig(2) call of its own, key and value apart: nothing is ever joined into
a comma-separated string that a ',' in a path or a password could break into more
options, no secret is on any command line, and no mount helper (mount.nfs, mount.cifs)
is needed: the kernel's own option parsing is all there is.

fsmount(2) gives a detached mount: it is in no mount table, no other process can reach it
(except through our /proc/PID/fd, which only root and we may open), and the kernel
unmounts it when the last descriptor of it is closed, which happens whatever becomes of
us (an exception, Ctrl-C, SIGKILL).
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

from resurgo.errors import ResurgoError

log = logging.getLogger("resurgo.mount")

# The syscall numbers are the same on every architecture for these (since Linux 5.2,
# new system calls share one numbering): x86-64, arm64, riscv64, ppc64le, s390x.
_SYS_FSOPEN: Final = 430
_SYS_FSCONFIG: Final = 431
_SYS_FSMOUNT: Final = 432

_FSOPEN_CLOEXEC: Final = 0x1
_FSMOUNT_CLOEXEC: Final = 0x1
_FSCONFIG_SET_FLAG: Final = 0
_FSCONFIG_SET_STRING: Final = 1
_FSCONFIG_CMD_CREATE: Final = 6

MOUNT_ATTR_RDONLY: Final = 0x1
MOUNT_ATTR_NOSUID: Final = 0x2
MOUNT_ATTR_NODEV: Final = 0x4
MOUNT_ATTR_NOEXEC: Final = 0x8
#: What every mount of a medium gets: nothing on it runs, no device node or set-uid file
#: on it means anything.
CONFINED: Final = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC

#: How much of the kernel's messages about a refused mount goes into the error.
_MAX_MESSAGES: Final = 8


@dataclass(frozen=True)
class Param:
    """One option of a mount: a flag (value None) or key=value. A secret's value is
    never logged nor shown in an error."""

    key: str
    value: str | None = None
    secret: bool = field(default=False)

    def __post_init__(self) -> None:
        # The kernel reads C strings: a NUL would silently cut the value short.
        if not self.key or "\0" in self.key or (self.value is not None and "\0" in self.value):
            raise ValueError(f"mount option {self.key!r}: empty, or holds a NUL byte")

    def __repr__(self) -> str:
        return f"Param({self.shown()!r})"

    def shown(self) -> str:
        if self.value is None:
            return self.key
        return f"{self.key}=***" if self.secret else f"{self.key}={self.value}"


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _messages(fs_fd: int) -> list[str]:
    """What the kernel said about the configuration (its "e "/"w " lines), read from the
    filesystem context: often the only place that says which option it refused."""
    out: list[str] = []
    while len(out) < _MAX_MESSAGES:
        try:
            data = os.read(fs_fd, 1024)
        except OSError:
            break  # ENODATA: nothing more
        if not data:
            break
        text = data.decode(errors="replace").strip()
        kind, _, message = text.partition(" ")
        if kind in ("e", "w") and message:
            out.append(message)
    return out


def detached_mount(
    fstype: str,
    params: Sequence[Param],
    *,
    attributes: int,
    failed: Callable[[str, int], ResurgoError],
) -> int:
    """A descriptor of the root of a new ``fstype`` mount with ``params`` (an O_PATH one,
    as fsmount gives it) whose mount ``attributes`` are MOUNT_ATTR_*; closing it unmounts.

    ``failed(why, errno)`` makes the error raised when the kernel refuses (why: its
    messages, or the errno's text)."""
    libc = _libc()
    libc.syscall.restype = ctypes.c_long
    log.debug("+ mount -t %s -o %s (fsmount, attributes %#x)", fstype,
              ",".join(p.shown() for p in params), attributes)
    fs_fd = int(libc.syscall(_SYS_FSOPEN, fstype.encode(), _FSOPEN_CLOEXEC))
    if fs_fd < 0:
        err = ctypes.get_errno()
        raise failed(os.strerror(err), err)
    try:
        for p in params:
            if p.value is None:
                rc = libc.syscall(_SYS_FSCONFIG, fs_fd, _FSCONFIG_SET_FLAG,
                                  p.key.encode(), None, 0)
            else:
                rc = libc.syscall(_SYS_FSCONFIG, fs_fd, _FSCONFIG_SET_STRING,
                                  p.key.encode(), p.value.encode(), 0)
            if rc < 0:
                err = ctypes.get_errno()
                said = "; ".join(_messages(fs_fd)) or os.strerror(err)
                raise failed(f"option {p.shown()}: {said}", err)
        if libc.syscall(_SYS_FSCONFIG, fs_fd, _FSCONFIG_CMD_CREATE, None, None, 0) < 0:
            err = ctypes.get_errno()
            raise failed("; ".join(_messages(fs_fd)) or os.strerror(err), err)
        mnt_fd = int(libc.syscall(_SYS_FSMOUNT, fs_fd, _FSMOUNT_CLOEXEC, attributes))
        if mnt_fd < 0:
            err = ctypes.get_errno()
            raise failed("; ".join(_messages(fs_fd)) or os.strerror(err), err)
        return mnt_fd
    finally:
        os.close(fs_fd)


def missing_filesystem(err: int) -> bool:
    """Whether a refusal means the kernel has no such filesystem (no module for it)."""
    return err == errno.ENODEV
