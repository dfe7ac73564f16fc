#!/usr/bin/env python3
"""Record the parts of /sys that resurgo.probe.hardware reads, as a small tree.

    python3 record_sysfs.py DEST [SYSFS]

Copies, under DEST, the device entries of the pci, virtio and usb buses and of the
block, scsi_host, nvme and nvme-subsystem classes: every device directory they
lead to and its ancestors, with the attribute files the probe reads and the
driver/subsystem/module/device symlinks (sysfs links are relative, so they are
recreated as they are and keep pointing inside DEST). Driver and module
directories are created so that those links resolve. Nothing else is copied.

Standard library only: it also runs inside test guests.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

BUSES = ("pci", "virtio", "usb")
CLASSES = ("block", "scsi_host", "nvme", "nvme-subsystem")
ATTRIBUTES = {
    "class",
    "vendor",
    "device",
    "subsystem_vendor",
    "subsystem_device",
    "revision",
    "modalias",
    "proc_name",
    "transport",
    "bInterfaceClass",
    "bInterfaceSubClass",
    "bInterfaceProtocol",
    "idVendor",
    "idProduct",
    "partition",
    "dev",
    "size",
    "removable",
    "model",
    "serial",
    "wwid",
    "ro",
}
LINKS = {"driver", "subsystem", "module", "device"}
# Block devices that come and go with whatever else runs on the machine.
TRANSIENT_BLOCK = ("loop", "ram", "nbd")


class Recorder:
    def __init__(self, sysfs: Path, dest: Path) -> None:
        self.sysfs = Path(os.path.realpath(sysfs))
        self.dest = dest
        self.done: set[Path] = set()

    def rel(self, real: Path) -> Path:
        return real.relative_to(self.sysfs)

    def link(self, path: Path) -> Path | None:
        """Recreate the symlink at sysfs path ``path``; the real path it leads to."""
        target = os.readlink(path)
        out = self.dest / self.rel(Path(os.path.realpath(path.parent)) / path.name)
        out.parent.mkdir(parents=True, exist_ok=True)
        if not os.path.lexists(out):
            os.symlink(target, out)
        real = Path(os.path.realpath(path))
        return real if str(real).startswith(str(self.sysfs) + "/") else None

    def directory(self, real: Path, *, children: bool = False) -> None:
        """Copy one directory's attributes and links, its ancestors' too."""
        if real in self.done or not str(real).startswith(str(self.sysfs)):
            return
        self.done.add(real)
        if real != self.sysfs and real.parent != self.sysfs:
            self.directory(real.parent)
        out = self.dest / self.rel(real)
        out.mkdir(parents=True, exist_ok=True)
        try:
            names = sorted(os.listdir(real))
        except OSError:
            return
        for name in names:
            path = real / name
            if path.is_symlink():
                if name in LINKS:
                    target = self.link(path)
                    if target is not None:
                        self.target(name, target)
                elif children and name.startswith("nvme"):
                    target = self.link(path)
                    if target is not None:
                        self.directory(target)
            elif name in ATTRIBUTES and path.is_file():
                try:
                    data = path.read_bytes()
                except OSError:
                    continue
                (out / name).write_bytes(data)
            elif name == "net" and path.is_dir():
                (out / name).mkdir(exist_ok=True)
        # Block devices: their partitions are subdirectories holding "partition".
        for name in names:
            path = real / name
            if not path.is_symlink() and path.is_dir() and (path / "partition").is_file():
                self.directory(path)

    def target(self, kind: str, real: Path) -> None:
        if kind in ("driver", "module", "subsystem"):
            out = self.dest / self.rel(real)
            out.mkdir(parents=True, exist_ok=True)
            if kind == "driver" and (real / "module").is_symlink():
                module = self.link(real / "module")
                if module is not None:
                    (self.dest / self.rel(module)).mkdir(parents=True, exist_ok=True)
        else:
            self.directory(real)

    def record(self) -> None:
        for bus in BUSES:
            self.entries(self.sysfs / "bus" / bus / "devices")
        for cls in CLASSES:
            self.entries(self.sysfs / "class" / cls, children=cls == "nvme-subsystem")
        if (self.sysfs / "firmware" / "efi").is_dir():
            (self.dest / "firmware" / "efi").mkdir(parents=True, exist_ok=True)

    def entries(self, base: Path, *, children: bool = False) -> None:
        try:
            names = sorted(os.listdir(base))
        except OSError:
            return
        (self.dest / self.rel(base)).mkdir(parents=True, exist_ok=True)
        for name in names:
            path = base / name
            if base.name == "block" and name.startswith(TRANSIENT_BLOCK):
                continue
            if path.is_symlink():
                real = self.link(path)
                if real is not None:
                    self.directory(real, children=children)


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    dest = Path(argv[1])
    sysfs = Path(argv[2]) if len(argv) == 3 else Path("/sys")
    if dest.exists() and any(dest.iterdir()):
        print(f"{dest} exists and is not empty", file=sys.stderr)
        return 2
    Recorder(sysfs, dest).record()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
