"""The mount table from /proc/self/mountinfo, and which mounts lie at or under a root."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from resurgo.errors import OperationFailed

MOUNTINFO = Path("/proc/self/mountinfo")

# Filesystems with no disk behind them: never part of a recovery description.
PSEUDO = frozenset({
    "autofs", "binfmt_misc", "bpf", "cgroup", "cgroup2", "configfs", "debugfs", "devpts",
    "devtmpfs", "efivarfs", "fusectl", "hugetlbfs", "mqueue", "nsfs", "proc", "pstore",
    "ramfs", "rpc_pipefs", "securityfs", "selinuxfs", "sysfs", "tmpfs", "tracefs",
})

_ESCAPE = re.compile(r"\\([0-7]{3})")

# Options that name the subvolume: recorded as Mount.subvolume, and subvolid changes on recreation.
_SUBVOL_OPTIONS = ("subvol=", "subvolid=")
# Shown by the kernel but refused by mount(8) on many systems.
_SHOWN_ONLY = frozenset({"seclabel"})


@dataclass(frozen=True)
class MountEntry:
    mount_id: int
    parent_id: int
    major: int
    minor: int
    # The directory of the filesystem that is mounted (a btrfs subvolume's path, or a bind source).
    fs_root: str
    mountpoint: str
    mount_options: tuple[str, ...]
    fstype: str
    source: str
    super_options: tuple[str, ...]

    @property
    def options(self) -> str:
        """The options as /proc/mounts shows them, less the btrfs subvolume selection."""
        seen: list[str] = []
        for opt in (*self.mount_options, *self.super_options):
            if opt in ("rw", "ro") and any(o in ("rw", "ro") for o in seen):
                continue
            if opt.startswith(_SUBVOL_OPTIONS) or opt in _SHOWN_ONLY or opt in seen:
                continue
            seen.append(opt)
        return ",".join(seen) or "defaults"

    def super_option(self, name: str) -> str | None:
        for opt in self.super_options:
            key, eq, value = opt.partition("=")
            if key == name and eq:
                return value
        return None

    @property
    def btrfs_subvolid(self) -> int | None:
        value = self.super_option("subvolid")
        return int(value) if value is not None and value.isdigit() else None

    @property
    def btrfs_subvol(self) -> str | None:
        return self.super_option("subvol")


def unescape(text: str) -> str:
    """Undo the kernel's octal escapes of space, tab, newline and backslash."""
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), text)


def _options(text: str) -> tuple[str, ...]:
    return tuple(unescape(o) for o in text.split(",") if o)


def parse_mountinfo(text: str) -> list[MountEntry]:
    """Entries of a mountinfo file, proc(5):

    id parent major:minor root mountpoint options [optional...] - type source super-options
    """
    out: list[MountEntry] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split(" ")
        try:
            sep = fields.index("-", 6)
            major, minor = fields[2].split(":")
            out.append(
                MountEntry(
                    mount_id=int(fields[0]),
                    parent_id=int(fields[1]),
                    major=int(major),
                    minor=int(minor),
                    fs_root=unescape(fields[3]),
                    mountpoint=unescape(fields[4]),
                    mount_options=_options(fields[5]),
                    fstype=fields[sep + 1],
                    source=unescape(fields[sep + 2]),
                    super_options=_options(fields[sep + 3]) if len(fields) > sep + 3 else (),
                )
            )
        except (ValueError, IndexError):
            raise OperationFailed(f"cannot read mountinfo line {n}: {line!r}") from None
    return out


def read_mountinfo(path: Path = MOUNTINFO) -> list[MountEntry]:
    try:
        text = path.read_text(errors="surrogateescape")
    except OSError as e:
        raise OperationFailed(f"cannot read {path}: {e.strerror}") from None
    return parse_mountinfo(text)


def mount_devnum(e: MountEntry) -> tuple[int, int] | None:
    """The block device a mount is on; btrfs shows an anonymous device number (major 0),
    its source names the device."""
    if e.major != 0:
        return (e.major, e.minor)
    if e.source.startswith("/dev/"):
        try:
            st = os.stat(e.source)
        except OSError:
            return None
        return (os.major(st.st_rdev), os.minor(st.st_rdev))
    return None


def relative_mountpoint(mountpoint: str, root: str) -> str | None:
    """mountpoint as seen from inside root ("/" for root itself), or None when outside it."""
    root = root.rstrip("/") or "/"
    if root == "/":
        return mountpoint
    if mountpoint == root:
        return "/"
    if mountpoint.startswith(root + "/"):
        return mountpoint[len(root):]
    return None


def visible(entries: list[MountEntry]) -> list[MountEntry]:
    """The entries not hidden by a later mount on the same mountpoint."""
    last: dict[str, int] = {}
    for i, e in enumerate(entries):
        last[e.mountpoint] = i
    return [e for i, e in enumerate(entries) if last[e.mountpoint] == i]


def under_root(entries: list[MountEntry], root: str) -> list[tuple[str, MountEntry]]:
    """(mountpoint relative to root, entry) of the visible mounts at or under root."""
    root = os.path.normpath(root)
    out = []
    for e in visible(entries):
        rel = relative_mountpoint(e.mountpoint, root)
        if rel is not None:
            out.append((rel, e))
    return out
