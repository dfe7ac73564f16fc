"""Paths inside a system tree that may not be the running one (``describe --root``).

A symlink in a tree mounted at /mnt/sys means what it will mean once that tree is
``/`` again: an absolute target is relative to the tree's root, not to the host's.
The kernel would resolve it against the host, so resolution is done here, one
component at a time.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

# The kernel's own limit on symlinks followed during one lookup.
MAX_SYMLINKS = 40


def resolve(root: Path, path: str, *, missing_ok: bool = False) -> str | None:
    """The real path (absolute, as seen from inside the tree) that ``path`` names.

    Symlinks are followed the way they will be in the restored system. None when
    a link climbs out of the tree with ``..`` or loops, and when a component is
    missing unless ``missing_ok`` (then the rest is appended as it is).
    The last component is followed too; callers that must not follow it resolve
    the parent and ``os.lstat`` the name themselves.
    """
    parts: list[str] = []
    pending = [p for p in path.split("/") if p not in ("", ".")]
    pending.reverse()
    links = 0
    while pending:
        name = pending.pop()
        if name == "..":
            if not parts:
                return None
            parts.pop()
            continue
        here = host_path(root, "/" + "/".join([*parts, name]))
        try:
            st = os.lstat(here)
        except OSError:
            if not missing_ok:
                return None
            parts.append(name)
            continue
        if not stat.S_ISLNK(st.st_mode):
            parts.append(name)
            continue
        links += 1
        if links > MAX_SYMLINKS:
            return None
        target = os.readlink(here)
        if target.startswith("/"):
            parts = []
        more = [p for p in target.split("/") if p not in ("", ".")]
        pending.extend(reversed(more))
    return "/" + "/".join(parts)


def host_path(root: Path, inside: str) -> Path:
    """Where the host reaches the tree's absolute path ``inside``."""
    return root / inside.lstrip("/")


def is_running_root(root: Path) -> bool:
    """Whether root is this machine's own / (so /proc, /sys and uname speak for it)."""
    try:
        return os.path.samefile(root, "/")
    except OSError:
        return False
