"""The bootable ISO: GRUB for BIOS and UEFI around the kernel and the initramfs.

grub-mkrescue makes a hybrid image (El Torito for BIOS and UEFI, plus a partition table
with the EFI system partition), so the same file boots as a CD and written to a USB
stick. Its GRUB comes from the build host: it only loads the kernel; the GRUB that the
rescue installs on recovered disks is the rescued system's own, inside the initramfs.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from resurgo import run
from resurgo.errors import PreconditionFailed, ToolMissing
from resurgo.packages import GRUB_BIOS, GRUB_EFI, Package, install_hint
from resurgo.rescue.cmdline import After, grub_quote

VOLUME_ID = "RESURGO"
GRUB_PLATFORMS: dict[str, Package] = {"i386-pc": GRUB_BIOS, "x86_64-efi": GRUB_EFI}
#: grub-mkrescue's names: Debian's, Fedora's.
MKRESCUE = ("grub-mkrescue", "grub2-mkrescue")
#: What grub-mkrescue runs: xorriso writes the image, mtools its EFI partition image, and
#: xz is what --compress=xz calls (a minimal system has no xz: the build fails late).
TOOLS = ("xorriso", "mformat", "mcopy", "xz")
GRUB_LIB = Path("/usr/lib/grub")
#: Serial first so that a machine without a screen logs too; the last console= is
#: /dev/console, where the shell of a person at the screen runs.
CONSOLES = ("console=ttyS0,115200", "console=tty0")
#: Modules the boot menu needs (the rest of GRUB stays off the image); grub-mkrescue's
#: own early configuration loads every partition map.
GRUB_MODULES = (
    "linux normal iso9660 fat search search_label echo test configfile serial terminal "
    "sleep all_video part_gpt part_msdos part_acorn part_amiga part_apple part_bsd "
    "part_dfly part_dvh part_plan part_sun part_sunpc"
)


@dataclass(frozen=True)
class BootEntry:
    id: str
    title: str
    args: tuple[str, ...]


def boot_entries(
    *, unattended: bool, after: After, extra_args: Sequence[str] = ()
) -> list[BootEntry]:
    """The menu: the shell, the unattended recovery, the plan, and the attended recovery
    (a person picks the set and confirms the plan); the default first."""
    shell = BootEntry(
        "shell", "resurgo rescue: a shell (nothing is written)", ("resurgo.recover=off",)
    )
    recover = BootEntry(
        "recover",
        "resurgo: RECOVER this machine unattended (erases the target disks)",
        ("resurgo.recover=auto", f"resurgo.after={after}"),
    )
    plan = BootEntry(
        "plan",
        "resurgo: show the recovery plan (nothing is written)",
        ("resurgo.recover=plan", "resurgo.after=shell"),
    )
    ask = BootEntry(
        "ask",
        "resurgo: choose the set at the console, review the plan, then recover",
        ("resurgo.recover=ask", "resurgo.after=shell"),
    )
    entries = [recover, shell, plan, ask] if unattended else [shell, recover, plan, ask]
    return [BootEntry(e.id, e.title, (*CONSOLES, *e.args, *extra_args)) for e in entries]


def grub_cfg(entries: Sequence[BootEntry], *, timeout: int, label: str,
             kernel: str = "/boot/vmlinuz", initrd: str = "/boot/initrd.img") -> str:
    lines = [
        f"# {label}",
        "if serial --unit=0 --speed=115200; then",
        "    terminal_input --append serial",
        "    terminal_output --append serial",
        "fi",
        f"set timeout={timeout}",
        "set default=0",
        "",
    ]
    for e in entries:
        args = " ".join(grub_quote(a) for a in e.args)
        lines += [
            f"menuentry {grub_quote(e.title)} --id {e.id} {{",
            f"    echo {grub_quote('Loading the resurgo rescue system ...')}",
            f"    linux {kernel} {args}",
            f"    initrd {initrd}",
            "}",
        ]
    return "\n".join(lines) + "\n"


def mkrescue() -> str | None:
    """The name grub-mkrescue has on this machine, None without it."""
    return next((name for name in MKRESCUE if run.which(name)), None)


def missing_grub_platforms() -> list[tuple[str, Package]]:
    """GRUB's platforms the image needs (it boots on BIOS and UEFI) that are not here."""
    return [(platform, package) for platform, package in GRUB_PLATFORMS.items()
            if not (GRUB_LIB / platform / "modinfo.sh").is_file()]


def require_tools() -> None:
    if mkrescue() is None:
        raise ToolMissing(MKRESCUE[0], None)
    run.require(*TOOLS)
    for platform, package in missing_grub_platforms():
        raise PreconditionFailed(
            f"GRUB for {platform} is not installed on this machine: the rescue image "
            "boots on BIOS and UEFI",
            f"install it: {install_hint([package])}",
        )


#: Where the Secure Boot ESP image lies in the ISO (El Torito's EFI entry and the GPT
#: partition both point at it): grub-mkrescue's own name for its unsigned one.
ESP_IN_ISO = "efi.img"


def make_iso(tree: Path, out: Path, *, volume_date: str, esp: Path | None = None) -> None:
    """grub-mkrescue of ``tree`` to ``out``. ``volume_date`` (16 digits) becomes the ISO's
    UUID, which blkid shows; the rescue finds its own medium by it.

    With ``esp`` (an EFI system partition image holding the signed boot chain:
    secureboot.make_esp), grub-mkrescue makes the BIOS boot only and xorriso adds that
    image as the UEFI El Torito entry and as the GPT's EFI partition, as grub-mkrescue
    does with its own unsigned one."""
    platform: list[str] = []
    efi: list[str] = []
    if esp is not None:
        shutil.copyfile(esp, tree / ESP_IN_ISO)
        platform = ["-d", str(GRUB_LIB / "i386-pc")]
        efi = [
            "-boot_image", "any", "next",
            "-boot_image", "any", f"efi_path=/{ESP_IN_ISO}",
            "-boot_image", "any", "efi_boot_part=--efi-boot-image",
        ]
    run.run(
        [
            mkrescue() or MKRESCUE[0],
            *platform,
            "-o",
            str(out),
            "--compress=xz",
            "--fonts=",
            "--locales=",
            "--themes=",
            f"--install-modules={GRUB_MODULES}",
            str(tree),
            "--",
            "-volid",
            VOLUME_ID,
            "-volume_date",
            "uuid",
            volume_date,
            *efi,
        ],
        timeout=600,
    )
