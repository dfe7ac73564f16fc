"""The bootloader the description names, installed for the disks it now lives on.

Pure: the commands are planned here from the description, the plan and two facts of this
machine (does it boot UEFI, i.e. is /sys/firmware/efi there; what the restored tree
holds); steps.py runs them in the chroot.

  - GRUB for BIOS: grub-install --target=i386-pc on each disk that carried it (mapped
    through the plan), or on the disk of /boot (or /) when the description names none.
  - GRUB for UEFI: into the ESP twice: under its own directory (--bootloader-id from the
    saved loader path) with an NVRAM entry when the firmware's variables are reachable,
    and always at the removable-media path EFI/BOOT/BOOTX64.EFI, which firmware with
    fresh NVRAM (a new machine) starts without any entry.
  - systemd-boot: bootctl install into the ESP.
  - then grub.cfg is regenerated (grub-mkconfig), and its root= checked; unless the
    restored one serves as it is (steps.py decides, from what finalize changed).
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from resurgo.model import BootloaderKind, Description, Partition
from resurgo.plan.layers import Layers
from resurgo.plan.model import Plan
from resurgo.probe.system import EFI_SUFFIX, GRUB_EFI_TARGET


@dataclass(frozen=True)
class Step:
    argv: tuple[str, ...]
    why: str
    # Inside the restored system (chroot); else on the rescue system.
    chroot: bool = True


@dataclass(frozen=True)
class TreeFacts:
    """What the restored tree holds that decides the commands' names."""

    grub_install: str = "grub-install"
    grub_mkconfig: str = "grub-mkconfig"
    grub_cfg: str = "/boot/grub/grub.cfg"
    # GRUB platform directories installed (/usr/lib/grub/<target>).
    grub_targets: frozenset[str] = frozenset()

    @classmethod
    def of(cls, root: Path) -> TreeFacts:
        def has(p: str) -> bool:
            return os.path.lexists(root / p.lstrip("/"))

        grub2 = not has("/usr/sbin/grub-install") and (
            has("/usr/sbin/grub2-install") or has("/sbin/grub2-install")
        )
        targets: set[str] = set()
        for base in ("usr/lib/grub", "usr/lib/grub2"):
            with contextlib.suppress(OSError):
                targets |= set(os.listdir(root / base))
        return cls(
            grub_install="grub2-install" if grub2 else "grub-install",
            grub_mkconfig="grub2-mkconfig" if grub2 else "grub-mkconfig",
            grub_cfg="/boot/grub2/grub.cfg" if grub2 else "/boot/grub/grub.cfg",
            grub_targets=frozenset(targets),
        )


@dataclass(frozen=True)
class BootPlan:
    steps: tuple[Step, ...]
    # Regenerate grub.cfg afterwards (GRUB only).
    regenerate: bool
    # The ESP as the restored system mounts it (UEFI), and its bootloader id.
    esp: str | None = None
    bootloader_id: str | None = None
    loader: str | None = None
    # (disk, partition number) of the ESP on this machine, for an NVRAM entry.
    esp_device: tuple[str, int] | None = None
    problems: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


def _actual(plan: Plan) -> dict[str, str]:
    return {m.saved: m.path for m in plan.matches}


def boot_disks(desc: Description, plan: Plan) -> tuple[list[str], list[str]]:
    """(actual disk paths GRUB goes on, notes): the saved GRUB disks mapped through the plan,
    else the disks under /boot (or /)."""
    actual = _actual(plan)
    notes: list[str] = []
    saved = list(desc.system.bootloader.disks)
    if not saved:
        layers = Layers(desc)
        fss = {f.id: f for f in desc.filesystems}
        vol = desc.system.boot_volume or desc.system.system_volume
        if vol in fss:
            saved = sorted(layers.disks_under(fss[vol].device))
            notes.append(
                "the description names no disk carrying GRUB: it goes on the disk(s) under "
                + ("/boot" if desc.system.boot_volume else "/")
            )
    out = []
    for d in saved:
        if d in actual:
            out.append(actual[d])
        else:
            notes.append(f"{d} carried GRUB but has no disk on this machine")
    return out, notes


def bootloader_id(desc: Description) -> str:
    """The ESP directory of the loader: debian of /EFI/debian/grubx64.efi."""
    path = desc.system.bootloader.efi_path or ""
    parts = [p for p in re.split(r"[/\\]", path) if p]
    if len(parts) >= 3 and parts[0].lower() == "efi" and parts[1].lower() != "boot":
        return parts[1]
    return desc.system.os_release.id or "debian"


def esp_location(desc: Description, plan: Plan) -> tuple[str, tuple[str, int] | None]:
    """(mount point of the ESP in the restored system, (disk, number) on this machine)."""
    fss = {f.id: f for f in desc.filesystems}
    esp = fss.get(desc.system.esp or "")
    mountpoint = esp.mounts[0].mountpoint if esp is not None and esp.mounts else "/boot/efi"
    if esp is None:
        return mountpoint, None
    part = desc.block_devices().get(esp.device)
    actual = _actual(plan)
    if isinstance(part, Partition) and part.disk in actual:
        return mountpoint, (actual[part.disk], part.number)
    return mountpoint, None


def plan_bootloader(
    desc: Description, plan: Plan, *, efi_available: bool, tree: TreeFacts
) -> BootPlan:
    kind = desc.system.bootloader.kind
    arch = desc.system.architecture or "x86_64"
    if kind == BootloaderKind.GRUB_PC:
        disks, notes = boot_disks(desc, plan)
        problems = []
        if not disks:
            problems.append("no disk of this machine to install GRUB for BIOS on")
        if tree.grub_targets and "i386-pc" not in tree.grub_targets:
            problems.append(
                "the restored system has no GRUB for BIOS (/usr/lib/grub/i386-pc): "
                "its grub-pc package is missing"
            )
        steps = tuple(
            Step(
                (tree.grub_install, "--target=i386-pc", d),
                f"GRUB for BIOS into the boot code of {d}, as the saved system had it",
            )
            for d in disks
        )
        return BootPlan(steps, True, problems=tuple(problems), notes=tuple(notes))
    if kind == BootloaderKind.GRUB_EFI:
        target = GRUB_EFI_TARGET.get(arch, "x86_64-efi")
        esp, esp_device = esp_location(desc, plan)
        ident = bootloader_id(desc)
        sfx = EFI_SUFFIX.get(arch, "x64")
        saved_loader = desc.system.bootloader.efi_path or ""
        loader = (
            saved_loader.replace("/", "\\")
            if saved_loader.lower().startswith(f"/efi/{ident.lower()}/")
            else f"\\EFI\\{ident}\\grub{sfx}.efi"
        )
        base = (tree.grub_install, f"--target={target}", f"--efi-directory={esp}")
        named = (*base, f"--bootloader-id={ident}")
        efi_steps = [
            Step(
                named if efi_available else (*named, "--no-nvram"),
                f"GRUB for UEFI into {esp}/EFI/{ident}"
                + (
                    " with an NVRAM boot entry"
                    if efi_available
                    else " (no NVRAM entry: this rescue system did not boot by UEFI)"
                ),
            ),
            Step(
                (*base, "--removable", "--no-nvram"),
                f"GRUB at the removable-media path {esp}/EFI/BOOT/BOOT{sfx.upper()}.EFI: "
                "firmware without a boot entry for it (a new machine) starts that one",
            ),
        ]
        problems = []
        if tree.grub_targets and target not in tree.grub_targets:
            problems.append(
                f"the restored system has no GRUB for UEFI (/usr/lib/grub/{target}): "
                "install its grub-efi package"
            )
        return BootPlan(
            tuple(efi_steps),
            True,
            esp=esp,
            bootloader_id=ident,
            loader=loader,
            esp_device=esp_device,
            problems=tuple(problems),
        )
    if kind == BootloaderKind.SYSTEMD_BOOT:
        esp, esp_device = esp_location(desc, plan)
        argv: tuple[str, ...] = ("bootctl", "install", f"--esp-path={esp}")
        if not efi_available:
            argv = (*argv, "--no-variables")
        return BootPlan(
            (Step(argv, f"systemd-boot into the ESP at {esp}"),),
            False,
            esp=esp,
            esp_device=esp_device,
        )
    return BootPlan(
        (),
        False,
        notes=(f"the description names no bootloader to install ({kind})",),
    )


_BOOT_ENTRY = re.compile(r"^Boot([0-9A-Fa-f]{4})(\*?)\s+(.*?)(?:\t|\s{2,}|$)")


def parse_efibootmgr(text: str) -> list[tuple[str, str]]:
    """(number, label) of each entry ``efibootmgr`` lists (Boot0003* debian  HD(...))."""
    out = []
    for line in text.splitlines():
        m = _BOOT_ENTRY.match(line)
        if m:
            out.append((m.group(1).upper(), m.group(3).strip()))
    return out


def efibootmgr_create(disk: str, number: int, label: str, loader: str) -> Step:
    return Step(
        (
            "efibootmgr",
            "--create",
            "--disk",
            disk,
            "--part",
            str(number),
            "--label",
            label,
            "--loader",
            loader,
        ),
        f"grub-install made no NVRAM entry {label!r}: one pointing at {loader}",
        chroot=False,
    )
