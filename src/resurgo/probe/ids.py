"""Record ids: deterministic, readable, unique within one description.

Block devices are named after the kernel name they had at save time; that name
need not survive a reboot, it only has to be unique inside the file.
"""

from __future__ import annotations

import re

_UNSAFE = re.compile(r"[^A-Za-z0-9_.:@+\-]+")


def safe(text: str) -> str:
    """text reduced to the characters an id may hold (see fileformat.rules)."""
    out = _UNSAFE.sub("_", text.strip("/")).strip("_")
    return out or "_"


def disk(kname: str) -> str:
    return f"disk.{safe(kname)}"


def partition(kname: str) -> str:
    return f"part.{safe(kname)}"


def raid(kname: str) -> str:
    return f"md.{safe(kname)}"


def luks(backing_kname: str) -> str:
    return f"luks.{safe(backing_kname)}"


def physical_volume(backing_kname: str) -> str:
    return f"pv.{safe(backing_kname)}"


def volume_group(name: str) -> str:
    return f"vg.{safe(name)}"


def logical_volume(vg: str, lv: str) -> str:
    return f"lv.{safe(vg)}.{safe(lv)}"


def filesystem(device_kname: str) -> str:
    return f"fs.{safe(device_kname)}"


def subvolume(fs_id: str, subvol_id: int) -> str:
    return f"subvol.{fs_id.removeprefix('fs.')}.{subvol_id}"


def swap_device(kname: str) -> str:
    return f"swap.{safe(kname)}"


def swap_file(path: str) -> str:
    return f"swapfile.{safe(path)}"


def removable(kname: str) -> str:
    return f"removable.{safe(kname)}"


def driver(bus: str, address: str) -> str:
    return f"drv.{safe(bus)}.{safe(address)}"


def config_file(path: str) -> str:
    return f"cfg.{safe(path.replace('/', '.'))}".replace("cfg..", "cfg.")


def unsupported(kname: str) -> str:
    return f"unsupported.{safe(kname)}"
