"""Real loop disks for the storage tier: sparse images, sfdisk, mkfs, mounts under a tmp root.

Everything a Rig makes is undone by Rig.cleanup() — unmounted, swapped off, detached —
even when the test fails; nothing is left in `losetup -a` or /proc/mounts.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from resurgo import run
from resurgo.model import PartitionKind

TOOLS = ("losetup", "sfdisk", "partx", "blkid", "mkfs.ext4", "mkfs.xfs", "mkfs.vfat",
         "mkfs.btrfs", "btrfs", "mkswap", "swapon", "swapoff", "mount", "umount")


def require_loop_support() -> None:
    """Skip, saying why, where loop disks cannot be made."""
    if os.geteuid() != 0:
        pytest.skip("storage tests need root (loop devices, mkfs, mount)")
    if not Path("/dev/loop-control").exists():
        pytest.skip("no loop device support (/dev/loop-control is missing)")
    missing = [t for t in TOOLS if run.which(t) is None]
    if missing:
        pytest.skip(f"storage tests need {', '.join(missing)}")


def new_uuid() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True)
class Loop:
    path: str
    image: Path
    sector_size: int
    size: int

    @property
    def kname(self) -> str:
        return self.path.removeprefix("/dev/")

    def part(self, number: int) -> str:
        return f"{self.path}p{number}"


class Rig:
    """Makes loop disks, filesystems, mounts and swap; cleanup() undoes them in reverse."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self._undo: list[tuple[str, Callable[[], None]]] = []

    def sh(self, *argv: str, input: str | None = None) -> str:
        return run.run(list(argv), input=input).stdout

    def disk(self, name: str, size: int, *, sector_size: int = 512,
             table: str | None = None) -> Loop:
        image = self.workdir / f"{name}.img"
        with open(image, "wb") as f:
            f.truncate(size)
        # --partscan: the kernel drops the partitions on detach; without it they outlive
        # the loop device and a later attach would see stale ones.
        argv = ["losetup", "--find", "--show", "--partscan"]
        if sector_size != 512:
            argv += ["--sector-size", str(sector_size)]
        path = self.sh(*argv, str(image)).strip()
        self._undo.append((f"losetup -d {path}", lambda: self._detach(path)))
        loop = Loop(path, image, sector_size, size)
        if table is not None:
            self.sh("sfdisk", "--quiet", "--wipe", "always", path, input=table)
            self.partx_update(loop)
        return loop

    def partx_update(self, loop: Loop) -> None:
        # No udevd here, and sfdisk's re-read does not reach loop devices reliably: make the
        # kernel's partitions those of the new table with partx, then wait for the nodes.
        run.run(["partx", "-d", loop.path], check=False)
        self.sh("partx", "-a", loop.path)
        sysdir = Path("/sys/block") / loop.kname
        expected = [f"/dev/{p.name}" for p in sysdir.iterdir() if (p / "partition").exists()]
        deadline = time.monotonic() + 10
        while not all(os.path.exists(p) for p in expected):
            if time.monotonic() > deadline:
                raise RuntimeError(f"device nodes did not appear: {expected}")
            time.sleep(0.05)
        if not expected:
            raise RuntimeError(f"the kernel sees no partitions on {loop.path}")

    def _detach(self, path: str) -> None:
        run.run(["partx", "-d", path], check=False)
        run.run(["losetup", "-d", path], check=False)

    def mount(self, device: str, target: Path, options: str | None = None) -> Path:
        target.mkdir(parents=True, exist_ok=True)
        argv = ["mount"]
        if options:
            argv += ["-o", options]
        self.sh(*argv, device, str(target))
        self._undo.append((f"umount {target}", lambda: self._umount(target)))
        return target

    def _umount(self, target: Path) -> None:
        if run.run(["umount", str(target)], check=False).returncode != 0:
            run.run(["umount", "-l", str(target)], check=False)

    def swapon(self, path: str, priority: int) -> None:
        self.sh("swapon", "-p", str(priority), path)
        self._undo.append((f"swapoff {path}", lambda: self._swapoff(path)))

    def _swapoff(self, path: str) -> None:
        run.run(["swapoff", path], check=False)

    def cleanup(self) -> None:
        errors = []
        while self._undo:
            what, undo = self._undo.pop()
            try:
                undo()
            except Exception as e:  # keep undoing the rest
                errors.append(f"{what}: {e}")
        if errors:
            raise RuntimeError("cleanup failed: " + "; ".join(errors))


@dataclass
class Part:
    """A partition as an sfdisk script gives it."""

    number: int
    start: int
    size: int
    type: str
    uuid: str | None = None
    name: str | None = None
    attrs: str | None = None
    bootable: bool = False
    kind: PartitionKind = PartitionKind.PRIMARY


def gpt_script(disk_guid: str, parts: list[Part]) -> str:
    lines = ["label: gpt", f"label-id: {disk_guid}", "first-lba: 2048", "unit: sectors", ""]
    for p in parts:
        entry = f"{p.number} : start={p.start}, size={p.size}, type={p.type}, uuid={p.uuid}"
        if p.name:
            entry += f', name="{p.name}"'
        if p.attrs:
            entry += f', attrs="{p.attrs}"'
        lines.append(entry)
    return "\n".join(lines) + "\n"


def dos_script(disk_id: str, parts: list[Part]) -> str:
    lines = ["label: dos", f"label-id: {disk_id}", "unit: sectors", ""]
    for p in parts:
        lines.append(f"{p.number} : start={p.start}, size={p.size}, type={p.type}"
                     + (", bootable" if p.bootable else ""))
    return "\n".join(lines) + "\n"
