#!/usr/bin/env python3
"""Record a qemu guest's /sys with many kinds of controllers, for tests/data/sys/guest-mixed.

    PYTHONPATH=tests/vm python3 tests/data/sys/record_guest.py DEST

Boots the vm tier's Debian guest (UEFI) with disks on virtio-blk, NVMe, virtio-scsi,
AHCI, PIIX IDE and USB mass storage (xhci), and an e1000 NIC, then runs
record_sysfs.py inside it. Also brings back the guest kernel's modules.dep,
modules.builtin and its FAT/NLS config lines. Takes about two minutes under TCG.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import guest  # tests/vm/guest.py

HERE = Path(__file__).parent

SCRIPT = """#!/bin/sh
set -e
udevadm settle || true
python3 ./record_sysfs.py ./sys
k=$(uname -r)
echo "$k" > kernel
cp /lib/modules/$k/modules.dep /lib/modules/$k/modules.builtin .
grep -E '^CONFIG_(FAT_DEFAULT|NLS_|VFAT_FS|EXT2_FS|EXT4_FS)' /boot/config-$k > config || true
"""


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    dest = Path(argv[1])
    with tempfile.TemporaryDirectory(prefix="resurgo-sysrec-") as tmp:
        work = Path(tmp)
        image = guest.guest_disk(work)
        disks = [
            guest.Drive(
                guest.blank_disk(work / "nvme.img", 64 * guest.MiB),
                interface="nvme",
                serial="rec-nvme",
            ),
            guest.Drive(
                guest.blank_disk(work / "scsi.img", 64 * guest.MiB),
                interface="scsi",
                serial="rec-scsi",
            ),
            guest.Drive(
                guest.blank_disk(work / "ide.img", 64 * guest.MiB),
                interface="ide",
                serial="rec-ide",
            ),
        ]
        ahci = guest.blank_disk(work / "ahci.img", 64 * guest.MiB)
        usb = guest.blank_disk(work / "usb.img", 64 * guest.MiB)
        extra = [
            "-device",
            "ahci,id=ahci0",
            "-drive",
            f"file={ahci},format=raw,if=none,id=a0",
            "-device",
            "ide-hd,drive=a0,bus=ahci0.0,serial=rec-ahci",
            "-device",
            "qemu-xhci,id=xhci0",
            "-drive",
            f"file={usb},format=raw,if=none,id=u0",
            "-device",
            "usb-storage,bus=xhci0.0,drive=u0,serial=rec-usb",
            "-device",
            "e1000",
        ]
        run = guest.run_in_guest(
            SCRIPT,
            image=image,
            workdir=work / "run",
            files={"record_sysfs.py": HERE / "record_sysfs.py"},
            extra_disks=disks,
            firmware="uefi",
            extra_args=extra,
            timeout=900,
        ).check()
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copytree(run.exchange / "sys", dest / "sys", symlinks=True)
        for name in ("kernel", "modules.dep", "modules.builtin", "config"):
            shutil.copy(run.exchange / name, dest / name)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
