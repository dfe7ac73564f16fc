"""A machine's sysfs with network interfaces, for finalize's pairing of NICs.

The vm tier guest's recorded sysfs (tests/data/sys/guest-mixed/sys: its disks and
controllers) with two NICs added: enp0s9 and enp0s10, in that PCI order.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

GUEST = Path(__file__).resolve().parent.parent / "data/sys/guest-mixed/sys"
MAC9 = "52:54:00:00:00:09"
MAC10 = "52:54:00:00:00:0a"


def with_two_nics(out: Path) -> Path:
    shutil.copytree(GUEST, out, symlinks=True)
    (out / "class/net").mkdir()
    for name, slot, mac in (("enp0s9", "09", MAC9), ("enp0s10", "0a", MAC10)):
        dev = f"devices/pci0000:00/0000:00:{slot}.0"
        net = out / dev / "net" / name
        net.mkdir(parents=True)
        (net / "address").write_text(mac + "\n")
        os.symlink(f"../../../0000:00:{slot}.0", net / "device")
        os.symlink(f"../../{dev}/net/{name}", out / "class/net" / name)
    return out
