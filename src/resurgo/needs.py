"""What each job needs from this machine, checked before the job writes anything.

A save that finds out at its end that it cannot build the rescue image (grub-mkrescue
--compress=xz without xz, in a minimal system) has written a set without one; doctor and
save ask here first. Each check returns every missing thing, with what needs it and the
package to install, so that one message lists them all.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from resurgo import run
from resurgo.errors import PreconditionFailed, ResurgoError
from resurgo.packages import TOOLS, Package, install_hint


class Job(StrEnum):
    SAVE = "save"
    RESCUE = "rescue"
    RECOVER = "recover"


@dataclass(frozen=True)
class Missing:
    what: str  # a program, or a thing such as "GRUB for i386-pc"
    why: str  # what needs it
    package: Package | None = None
    detail: str | None = None  # a hint when no package installs it

    def line(self) -> str:
        how = install_hint([self.package]) if self.package else None
        text = f"{self.what} ({self.why})"
        if how:
            text += f": {how}"
        elif self.detail:
            text += f": {self.detail}"
        return text


def programs(needed: Iterable[tuple[str, str]]) -> list[Missing]:
    """The programs of (program, why) that are not on resurgo's PATH."""
    return [Missing(name, why, TOOLS.get(name)) for name, why in needed
            if run.which(name) is None]


# The programs a save runs whatever the system: the describe reads the partition tables
# and the filesystems' ids, every tree is read through a private read-only bind mount,
# the archives are zstd streams.
SAVE_PROGRAMS: tuple[tuple[str, str], ...] = (
    ("blkid", "describe"),
    ("sfdisk", "describe"),
    ("unshare", "read each filesystem through a private mount"),
    ("mount", "read each filesystem through a private mount"),
    ("zstd", "compress the archives"),
)


def save_programs(*, encrypt: bool, sign: bool, sftp: bool) -> list[tuple[str, str]]:
    out = list(SAVE_PROGRAMS)
    if encrypt:
        out.append(("age", "encrypt the archives (--encrypt-to)"))
    if sign:
        out.append(("ssh-keygen", "sign the set (--sign-key)"))
    if sftp:
        out.append(("ssh", "reach the SFTP medium"))
    return out


def rescue_missing(sysroot: Path = Path("/"), kernel_root: Path | None = None) -> list[Missing]:
    """What building the rescue image from sysroot (its programs) and kernel_root (its
    kernel) lacks: the build tools of this machine, GRUB's platforms, the programs the
    rescue cannot do without, a kernel, the Python packages it carries."""
    from resurgo.rescue import build, contents, iso, kernel

    why = "build the rescue image"
    out: list[Missing] = []
    if run.which("dracut") is None or not (build.DRACUT_BASEDIR / "dracut-install").exists():
        out.append(Missing("dracut", why, TOOLS["dracut"]))
    if iso.mkrescue() is None:
        out.append(Missing(iso.MKRESCUE[0], why, TOOLS[iso.MKRESCUE[0]]))
    out += programs((name, f"{why}: grub-mkrescue runs it") for name in iso.TOOLS)
    out += [Missing(f"GRUB for {platform}", f"{why}: it boots on BIOS and UEFI", package)
            for platform, package in iso.missing_grub_platforms()]
    where = "the rescue system" if sysroot == Path("/") else f"the rescue system (from {sysroot})"
    out += [Missing(p.name, f"{where} cannot do without it", TOOLS.get(p.name))
            for p in contents.PROGRAMS
            if p.need is contents.Need.REQUIRED and build.find_program(sysroot, p.name) is None]
    try:
        kernel.find_kernel(kernel_root or sysroot)
    except ResurgoError as e:
        out.append(Missing("a kernel image", why, None, e.message))
    try:
        build.carried_packages()
    except ResurgoError as e:
        out.append(Missing("a Python package", why, None, e.message))
    return out


def rescue_lacks(sysroot: Path = Path("/")) -> list[Missing]:
    """Programs the recovery calls that the rescue image would be built without (it
    carries what the machine has): the image still builds, and lacks them."""
    from resurgo.rescue import build, contents

    return [Missing(p.name, "the rescue image would lack it", TOOLS.get(p.name))
            for p in contents.PROGRAMS
            if p.need is contents.Need.RECOVERY and build.find_program(sysroot, p.name) is None]


# What recover runs on every layout: the partition tables, the restore through private
# mounts, the zstd archives, finalize in a chroot.
RECOVER_PROGRAMS: tuple[tuple[str, str], ...] = (
    ("sfdisk", "partition the disks"),
    ("partx", "partition the disks"),
    ("wipefs", "wipe the disks"),
    ("blkid", "find the filesystems"),
    ("mount", "mount the filesystems"),
    ("umount", "mount the filesystems"),
    ("unshare", "restore through a private mount"),
    ("zstd", "read the archives"),
    ("chroot", "finalize the restored system"),
)
# What recover runs for some layouts only: missing, a set with such a layout cannot be
# recovered here (the plan says so, before any write).
RECOVER_LAYOUT_PROGRAMS: tuple[tuple[str, str], ...] = (
    ("mkfs.ext4", "ext2/3/4 filesystems"),
    ("mkfs.xfs", "xfs filesystems"),
    ("mkfs.vfat", "an EFI system partition (vfat)"),
    ("mkfs.btrfs", "btrfs filesystems"),
    ("btrfs", "btrfs subvolumes"),
    ("mkswap", "swap"),
    ("mdadm", "md RAID"),
    ("cryptsetup", "LUKS"),
    ("lvm", "LVM"),
    ("age", "encrypted sets"),
    ("ssh", "sets on an SFTP server"),
    ("ssh-keygen", "signed sets (--trust)"),
    ("efibootmgr", "UEFI boot entries"),
)


def refusal(job: str, missing: Sequence[Missing], hint: str | None = None) -> PreconditionFailed:
    """One error naming everything missing, and how to install it all at once."""
    lines = "\n".join(f"  {m.line()}" for m in missing)
    how = install_hint(m.package for m in missing if m.package)
    return PreconditionFailed(
        f"this machine lacks what {job} needs, so nothing was written:\n{lines}",
        hint or (f"install them: {how}" if how else None),
    )


__all__ = ["Job", "Missing", "programs", "refusal", "rescue_lacks", "rescue_missing",
           "save_programs"]
