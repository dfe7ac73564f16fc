"""Secure Boot: the rescue ISO's UEFI path through the distribution's signed boot chain.

grub-mkrescue's GRUB is unsigned, so firmware with Secure Boot on refuses it. A machine
with Secure Boot on starts only what Microsoft's UEFI CA signed: the distribution's shim,
which starts the GRUB its vendor key signed, which (through shim's verifier) starts a
kernel that same key signed. So when the tree the kernel comes from also holds the
distribution's signed shim and GRUB, the image's EFI system partition gets

    /EFI/BOOT/BOOTX64.EFI   shim (the name firmware starts on removable media)
    /EFI/BOOT/grubx64.efi   the signed GRUB (the name shim starts, beside itself)
    /EFI/BOOT/mmx64.efi     MokManager, when there (shim starts it if GRUB fails)
    /EFI/<vendor>/grub.cfg  where the signed GRUB looks: its prefix is built in
                            (Debian's "/EFI/debian", Fedora's "/EFI/fedora") on the
                            device it was started from, which is this partition

and that grub.cfg finds the ISO's own file system by a file only this build has and
reads the same boot menu as BIOS. Debian's installer ISO does the same (its efi.img
holds /efi/debian/grub.cfg, which searches for /.disk/id/UUID). The signed GRUB loads
no module from disk with Secure Boot on: the menu uses only commands built into it.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from resurgo import run
from resurgo.errors import PreconditionFailed
from resurgo.probe import rootfs

#: Where the distributions install the signed parts (inside the tree): Debian and Ubuntu
#: (shim-signed, shim-helpers-amd64-signed, grub-efi-amd64-signed), then Fedora and RHEL
#: (shim-x64, grub2-efi-x64 install straight into the ESP under their vendor directory).
EFI_VENDORS = ("fedora", "redhat", "centos", "rocky", "almalinux")
SHIM = ("/usr/lib/shim/shimx64.efi.signed",
        *(f"/boot/efi/EFI/{v}/shimx64.efi" for v in EFI_VENDORS))
GRUB = ("/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed",
        *(f"/boot/efi/EFI/{v}/grubx64.efi" for v in EFI_VENDORS))
MOKMANAGER = ("/usr/lib/shim/mmx64.efi.signed",
              *(f"/boot/efi/EFI/{v}/mmx64.efi" for v in EFI_VENDORS))
PACKAGES = "shim-signed and grub-efi-amd64-signed (Debian, Ubuntu); shim-x64 and grub2-efi-x64 "\
    "(Fedora, RHEL)"

#: The ESP's names. Firmware starts BOOTX64.EFI from removable media; shim starts
#: grubx64.efi (and mmx64.efi) from the directory it was started from.
BOOT_DIR = "/EFI/BOOT"
LOADER = f"{BOOT_DIR}/BOOTX64.EFI"
SECOND_STAGE = f"{BOOT_DIR}/grubx64.efi"
MOK_MANAGER = f"{BOOT_DIR}/mmx64.efi"
#: A signed image is a few MB; anything far larger is not one.
MAX_EFI_BINARY = 64 << 20
#: The prefix a signed GRUB has built in: "/EFI/<vendor>" followed by its NUL.
_PREFIX = re.compile(rb"/EFI/([A-Za-z0-9][A-Za-z0-9._-]{0,31})\x00")
#: The kernel image's size bound (a bzImage is some ten MB).
MAX_KERNEL = 256 << 20


class SecureBootMode(StrEnum):
    """--secure-boot: ``auto`` uses the signed chain when its parts exist, ``required``
    refuses to build without it (exit 3), ``off`` never uses it."""

    AUTO = "auto"
    REQUIRED = "required"
    OFF = "off"


@dataclass(frozen=True)
class SecureBootPlan:
    """What the image's EFI boot path will be, and why."""

    capable: bool
    #: Why the image will not boot with Secure Boot on (empty when it will).
    reasons: tuple[str, ...] = ()
    #: ESP path -> file on the build machine.
    files: tuple[tuple[str, Path], ...] = ()
    #: ESP paths of the grub.cfg the signed GRUB reads.
    configs: tuple[str, ...] = ()
    #: The signed parts as found in their tree (for the report).
    shim: str | None = None
    grub: str | None = None

    def summary(self) -> str:
        if self.capable:
            return (f"boots with Secure Boot on: shim ({self.shim}) -> signed GRUB "
                    f"({self.grub}) -> signed kernel")
        return "will not boot with Secure Boot on: " + "; ".join(self.reasons)


def pe_signed(data: bytes) -> bool:
    """Whether a PE/COFF image (an EFI binary, a bzImage kernel) carries an Authenticode
    signature: its certificate table (data directory 4) holds a PKCS#7 WIN_CERTIFICATE.
    Which key signed it is the firmware's and shim's to check at boot."""
    if len(data) < 0x40 or data[:2] != b"MZ":
        return False
    (pe,) = struct.unpack_from("<I", data, 0x3C)
    if pe + 24 > len(data) or data[pe:pe + 4] != b"PE\0\0":
        return False
    opt = pe + 24
    (magic,) = struct.unpack_from("<H", data, opt)
    dirs = {0x10B: opt + 96, 0x20B: opt + 112}.get(magic)
    if dirs is None or dirs + 5 * 8 > len(data):
        return False
    (count,) = struct.unpack_from("<I", data, dirs - 4)
    if count < 5:
        return False
    offset, size = struct.unpack_from("<II", data, dirs + 4 * 8)
    if size < 8 or offset < dirs or offset + size > len(data):
        return False
    length, _revision, cert_type = struct.unpack_from("<IHH", data, offset)
    return bool(cert_type == 0x0002 and 8 < length <= size)  # WIN_CERT_TYPE_PKCS_SIGNED_DATA


def grub_prefixes(data: bytes) -> tuple[str, ...]:
    """The vendor directories a signed GRUB image names as its built-in prefix."""
    return tuple(dict.fromkeys(m.group(1).decode() for m in _PREFIX.finditer(data)))


def _find(roots: Sequence[Path], candidates: Sequence[str]) -> tuple[str, Path] | None:
    """The first candidate that is a regular file in one of the trees (first tree first)."""
    for root in roots:
        for inside in candidates:
            real = rootfs.resolve(root, inside)
            if real is None:
                continue
            host = rootfs.host_path(root, real)
            if host.is_file():
                return inside, host
    return None


def _read(path: Path, limit: int) -> bytes | None:
    try:
        with path.open("rb") as f:
            data = f.read(limit + 1)
    except OSError:
        return None
    return data if len(data) <= limit else None


def plan(mode: SecureBootMode, roots: Sequence[Path], kernel_image: Path) -> SecureBootPlan:
    """The EFI boot path for the signed parts found in ``roots`` (the kernel's tree
    first: shim trusts the key of its own distribution's kernel) and the kernel at
    ``kernel_image``."""
    if mode is SecureBootMode.OFF:
        return SecureBootPlan(False, ("--secure-boot off",))
    reasons: list[str] = []
    where = " or ".join(str(r) for r in dict.fromkeys(roots))
    shim = _find(roots, SHIM)
    grub = _find(roots, GRUB)
    missing = " nor ".join(what for what, found in (("shim", shim), ("GRUB", grub))
                           if found is None)
    if missing:
        reasons.append(f"no signed {missing} in {where} (install {PACKAGES})")
    prefixes: tuple[str, ...] = ()
    for found, what in ((shim, "shim"), (grub, "GRUB")):
        if found is None:
            continue
        data = _read(found[1], MAX_EFI_BINARY)
        if data is None or not pe_signed(data):
            reasons.append(f"the {what} at {found[0]} carries no signature")
        elif found is grub:
            prefixes = grub_prefixes(data)
    kernel = _read(kernel_image, MAX_KERNEL)
    if kernel is None or not pe_signed(kernel):
        reasons.append(f"the kernel {kernel_image.name} is not signed")
    if reasons or shim is None or grub is None:
        return SecureBootPlan(False, tuple(reasons))
    files = [(LOADER, shim[1]), (SECOND_STAGE, grub[1])]
    mok = _find(roots, MOKMANAGER)
    if mok is not None:
        files.append((MOK_MANAGER, mok[1]))
    # The prefix built in, and beside the loader: a GRUB without a prefix (Debian's
    # CD image) reads $cmdpath/grub.cfg.
    configs = tuple(dict.fromkeys([*(f"/EFI/{p}/grub.cfg" for p in prefixes),
                                   f"{BOOT_DIR}/grub.cfg"]))
    return SecureBootPlan(True, (), tuple(files), configs, shim[0], grub[0])


def check(mode: SecureBootMode, sb: SecureBootPlan) -> None:
    """--secure-boot required: an image that would not boot with Secure Boot on is a
    precondition not met (before the build's minutes), not a warning."""
    if mode is SecureBootMode.REQUIRED and not sb.capable:
        raise PreconditionFailed(
            "the rescue image would not boot with Secure Boot on: " + "; ".join(sb.reasons),
            "install the distribution's signed shim and GRUB and use its signed kernel, "
            "or build with --secure-boot auto")


def esp_config(marker: str) -> str:
    """The grub.cfg on the ESP: the ISO's file system (found by ``marker``, a file only
    this build has, so that another rescue stick plugged in is not taken), then its
    boot menu."""
    return (
        "# resurgo rescue: the ISO's own boot menu\n"
        f"search --no-floppy --file --set=root {marker}\n"
        "set prefix=($root)/boot/grub\n"
        "configfile $prefix/grub.cfg\n"
    )


#: Room on the ESP beyond its files (FAT's tables and directories).
_SLACK = 1 << 20


def make_esp(sb: SecureBootPlan, out: Path, *, config: str) -> None:
    """The EFI system partition image (FAT, written with mtools: no mount)."""
    size = sum(host.stat().st_size for _, host in sb.files) + len(config) * len(sb.configs)
    sectors = -(-(size + _SLACK) // (1 << 20)) * 2048  # whole MiB, in 512-byte sectors
    with out.open("wb") as f:
        f.truncate(sectors * 512)
    image = str(out)
    run.run(["mformat", "-i", image, "-T", str(sectors), "-h", "64", "-s", "32", "::"])
    dirs = sorted({p.rpartition("/")[0] for p, _ in sb.files}
                  | {p.rpartition("/")[0] for p in sb.configs})
    made: set[str] = set()
    for d in dirs:
        parts = d.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            sub = "/" + "/".join(parts[:i])
            if sub not in made:
                run.run(["mmd", "-i", image, f"::{sub}"])
                made.add(sub)
    for inside, host in sb.files:
        run.run(["mcopy", "-i", image, str(host), f"::{inside}"])
    cfg = out.with_name(out.name + ".cfg")
    cfg.write_text(config)
    try:
        for inside in sb.configs:
            run.run(["mcopy", "-i", image, str(cfg), f"::{inside}"])
    finally:
        cfg.unlink()
