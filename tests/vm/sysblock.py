"""Dump /sys/class/block as JSON: the kernel's view of every block device and its stack.

Runs inside the vm guest (python3, standard library only) for the recorded fixtures:
``python3 sysblock.py > sys-block.json``. Loop, ram, floppy and CD devices are left out.
For each device: its sysfs path, dev numbers, size in 512-byte sectors, partition number
and start, sector sizes (of the disk, for a partition), serial/wwid/model where the
device has them, dm name/uuid, md level and geometry, and its slaves and holders.
"""

from __future__ import annotations

import json
import os
import sys

SYS_BLOCK = "/sys/class/block"
SKIP = ("loop", "ram", "fd", "sr", "zram")


def read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def read_int(path: str) -> int | None:
    text = read(path)
    return int(text) if text is not None and text.lstrip("-").isdigit() else None


def listing(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def first(*paths: str) -> str | None:
    for path in paths:
        value = read(path)
        if value:
            return value
    return None


def describe(name: str) -> dict[str, object]:
    path = os.path.realpath(os.path.join(SYS_BLOCK, name))
    partition = read_int(f"{path}/partition")
    disk = os.path.dirname(path) if partition is not None else path
    entry: dict[str, object] = {
        "sysfs": os.path.relpath(path, "/sys"),
        "dev": read(f"{path}/dev"),
        "size": read_int(f"{path}/size"),
        "ro": read_int(f"{path}/ro"),
        "removable": read_int(f"{disk}/removable"),
        "partition": partition,
        "start": read_int(f"{path}/start"),
        "parent": os.path.basename(disk) if partition is not None else None,
        "logical_block_size": read_int(f"{disk}/queue/logical_block_size"),
        "physical_block_size": read_int(f"{disk}/queue/physical_block_size"),
        "rotational": read_int(f"{disk}/queue/rotational"),
        "serial": first(f"{disk}/serial", f"{disk}/device/serial"),
        "wwid": first(f"{disk}/wwid", f"{disk}/device/wwid"),
        "model": first(f"{disk}/device/model"),
        "slaves": listing(f"{path}/slaves"),
        "holders": listing(f"{path}/holders"),
    }
    if os.path.isdir(f"{path}/dm"):
        entry["dm"] = {k: read(f"{path}/dm/{k}") for k in ("name", "uuid", "suspended")}
    if os.path.isdir(f"{path}/md"):
        md: dict[str, object] = {
            k: read(f"{path}/md/{k}")
            for k in (
                "level",
                "metadata_version",
                "chunk_size",
                "layout",
                "raid_disks",
                "array_state",
                "array_size",
                "component_size",
                "uuid",
                "sync_action",
            )
        }
        md["members"] = {
            d.removeprefix("dev-"): read(f"{path}/md/{d}/slot")
            for d in listing(f"{path}/md")
            if d.startswith("dev-")
        }
        entry["md"] = md
    return entry


def main() -> int:
    devices = {name: describe(name) for name in listing(SYS_BLOCK) if not name.startswith(SKIP)}
    json.dump(devices, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
