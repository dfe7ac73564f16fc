"""Reading /sys: the kernel's attribute files, its links and directories, read bounded.

An attribute that is missing or unreadable is None (or the default): many are optional,
and a device may vanish between listing and reading. A probe never fails on one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import overload

# A text attribute holds at most one page; 64 KiB is the largest page size Linux has.
MAX_ATTRIBUTE = 64 * 1024


def binary_attribute(path: Path) -> bytes | None:
    """An attribute's bytes (a binary one such as a VPD page), at most MAX_ATTRIBUTE."""
    try:
        with open(path, "rb") as f:
            return f.read(MAX_ATTRIBUTE)
    except OSError:
        return None


def attribute(path: Path) -> str | None:
    """An attribute's text without the newline around it."""
    data = binary_attribute(path)
    return data.decode(errors="replace").strip() if data is not None else None


@overload
def int_attribute(path: Path) -> int | None: ...
@overload
def int_attribute(path: Path, default: int) -> int: ...
def int_attribute(path: Path, default: int | None = None) -> int | None:
    """An attribute holding a decimal number; default when missing or not a number."""
    text = attribute(path)
    try:
        return int(text) if text is not None else default
    except ValueError:
        return default


def link_name(path: Path) -> str | None:
    """The last component of the link at path (a device's driver, its subsystem)."""
    try:
        return os.path.basename(os.readlink(path))
    except OSError:
        return None


def entries(path: Path) -> list[str]:
    """The entries of a directory, unsorted; none when it cannot be listed."""
    try:
        return os.listdir(path)
    except OSError:
        return []
