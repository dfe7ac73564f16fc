"""Running programs inside the restored system: a chroot with /dev, /proc, /sys, /run.

update-initramfs, dracut, grub-install and grub-mkconfig must run as the restored system
(its kernel modules, its GRUB, its configuration) but see this machine's devices: the
rescue's /dev, /proc, /sys (with efivarfs) and /run (udev's database) are bound into the
root. /dev and /sys are recursive binds made slaves, so unmounting them never reaches
back into the rescue's own mounts. Whatever was mounted here is unmounted on the way
out, even after a failure.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from resurgo import run
from resurgo.errors import OperationFailed

log = logging.getLogger(__name__)

# (source, inside the root, mount arguments)
BINDS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("/dev", "dev", ("--rbind",)),
    ("/proc", "proc", ("--bind",)),
    ("/sys", "sys", ("--rbind",)),
    ("/run", "run", ("--bind",)),
)
ENV = {"DEBIAN_FRONTEND": "noninteractive", "DEBCONF_NONINTERACTIVE_SEEN": "true"}


class Chroot:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.mounted: list[Path] = []

    def __enter__(self) -> Chroot:
        try:
            for source, inside, args in BINDS:
                target = self.root / inside
                if os.path.islink(target):
                    raise OperationFailed(f"{target} is a symlink: refusing to mount on it")
                target.mkdir(exist_ok=True)
                if os.path.ismount(target):
                    continue  # someone else's: used, left alone
                run.run(["mount", *args, source, str(target)])
                self.mounted.append(target)
                if "--rbind" in args:
                    run.run(["mount", "--make-rslave", str(target)])
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        while self.mounted:
            target = self.mounted.pop()
            for attempt in range(5):
                if run.run(["umount", "-R", str(target)], check=False).returncode == 0:
                    break
                time.sleep(0.2 * (attempt + 1))
            else:
                log.warning("%s stays busy; detaching it lazily", target)
                run.run(["umount", "-R", "--lazy", str(target)], check=False)

    def execute(self, argv: Sequence[str], *, check: bool = True) -> run.Result:
        return run.run(["chroot", str(self.root), *argv], check=check, env=ENV)
