"""The initramfs images a save leaves out of its set (save --initramfs rebuild).

An initramfs is made on the machine, from its packages and its configuration, both of
which the set carries: on a freshly installed server it is the largest file of a set
whose package files come from the pool (34.6 MiB of 62.0). Left out, it is recorded in
the description ([made_at_recovery]) and finalize makes it anew in the restored system
with the system's own generator, as it does when a new disk controller needs a driver.
The trade-off: the recovery then depends on that generator running in the chroot, and
`recover --no-finalize` leaves a system that does not boot.

Only a regular file at the generator's place for an installed kernel (a vmlinuz and its
modules) is left out; a symbolic link there, or an image of another name, is archived.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from resurgo.errors import PreconditionFailed
from resurgo.finalize import drivers
from resurgo.model import InitramfsImage


class InitramfsMode(StrEnum):
    KEEP = "keep"
    REBUILD = "rebuild"


@dataclass(frozen=True)
class LeftOut:
    images: tuple[InitramfsImage, ...] = ()
    bytes: int = 0
    notes: tuple[str, ...] = ()

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(i.path for i in self.images)


def generator(root: Path) -> drivers.Generator:
    """The saved system's initramfs generator: refused (exit 3) before the save when it
    has none, since nothing could make the images at recovery."""
    gen = drivers.detect_generator(root)
    if gen is None:
        raise PreconditionFailed(
            f"--initramfs rebuild: the system at {root} has neither initramfs-tools nor "
            "dracut, so its initramfs could not be made at recovery",
            "save with --initramfs keep")
    return gen


def find(root: Path) -> LeftOut:
    """The images to leave out: each installed kernel's, where its generator puts it."""
    gen = generator(root)
    images: list[InitramfsImage] = []
    size = 0
    notes: list[str] = []
    for kernel in drivers.installed_kernels(root):
        path = drivers.image_path(root, gen, kernel)
        try:
            st = os.lstat(root / path.lstrip("/"))
        except FileNotFoundError:
            continue
        if not stat.S_ISREG(st.st_mode):
            notes.append(f"{path} is not a regular file: archived")
            continue
        images.append(InitramfsImage(kernel, path))
        size += st.st_size
    if not images:
        notes.append("--initramfs rebuild: no initramfs image found, nothing left out")
    return LeftOut(tuple(images), size, tuple(notes))
