"""The virtual machine a rehearsal boots: its disks (sized as the saved ones), its bus,
its firmware, and the qemu command line. Pure: nothing here runs or writes anything.

The disks are blank sparse images, one per disk of the description, as large as the
saved disk (``grow`` percent larger when asked: the recovery then fits the layout to a
larger disk, as on new hardware), with the saved logical sector size. Each gets a serial
of its own, never the saved one: a rehearsal recovers onto other hardware, as a real
recovery does, and the plan must match the disks by what they are. The medium disk (the
set, on an ext4 image of its own) rides on the same bus, read-only.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from resurgo.errors import BadInput
from resurgo.model import BootloaderKind, Description, Firmware

MiB = 1 << 20
# A saved disk beyond this is no disk a rehearsal makes an image of (16 PiB).
MAX_DISK = 1 << 54
MAX_GROW = 1000


class Bus(StrEnum):
    VIRTIO = "virtio"
    NVME = "nvme"
    SATA = "sata"
    SCSI = "scsi"


class FirmwareChoice(StrEnum):
    AUTO = "auto"
    BIOS = "bios"
    UEFI = "uefi"


class Accel(StrEnum):
    KVM = "kvm"
    TCG = "tcg"


@dataclass(frozen=True)
class DiskImage:
    """One blank disk of the rehearsal, for the saved disk ``saved_id``."""

    saved_id: str
    file: str  # the image's name in the work directory
    size: int
    sector_size: int = 512
    serial: str = ""


@dataclass(frozen=True)
class Drive:
    """One disk as qemu gets it."""

    path: Path
    serial: str
    sector_size: int = 512
    read_only: bool = False


@dataclass(frozen=True)
class Ovmf:
    """UEFI firmware: the code (read-only) and a template of its variables, or one
    combined image for -bios (no NVRAM that lasts from one boot to the next)."""

    code: Path
    vars_template: Path | None = None


# Where distributions put OVMF: Debian's 4M and 2M builds, Fedora's and Arch's edk2.
OVMF_PAIRS: tuple[tuple[str, str], ...] = (
    ("/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"),
    ("/usr/share/OVMF/OVMF_CODE.fd", "/usr/share/OVMF/OVMF_VARS.fd"),
    ("/usr/share/edk2/ovmf/OVMF_CODE.fd", "/usr/share/edk2/ovmf/OVMF_VARS.fd"),
    ("/usr/share/edk2/x64/OVMF_CODE.4m.fd", "/usr/share/edk2/x64/OVMF_VARS.4m.fd"),
)
OVMF_SINGLE: tuple[str, ...] = ("/usr/share/ovmf/OVMF.fd", "/usr/share/qemu/OVMF.fd")


def find_ovmf(exists: type[Path] = Path) -> Ovmf | None:
    for code, template in OVMF_PAIRS:
        if exists(code).is_file() and exists(template).is_file():
            return Ovmf(Path(code), Path(template))
    for single in OVMF_SINGLE:
        if exists(single).is_file():
            return Ovmf(Path(single))
    return None


def choose_firmware(choice: FirmwareChoice, description: Description) -> Firmware:
    """The firmware the rehearsal boots with: the one asked for, else (auto) the one the
    set was saved on: UEFI when the description says so, or when its boot loader is an
    EFI one or it names an ESP; BIOS otherwise."""
    if choice is FirmwareChoice.BIOS:
        return Firmware.BIOS
    if choice is FirmwareChoice.UEFI:
        return Firmware.UEFI
    system = description.system
    efi_loader = system.bootloader.kind in (BootloaderKind.GRUB_EFI,
                                            BootloaderKind.SYSTEMD_BOOT)
    if system.firmware is Firmware.UEFI or efi_loader or system.esp is not None:
        return Firmware.UEFI
    return Firmware.BIOS


def grown(size: int, grow: int, sector_size: int) -> int:
    """``size`` made ``grow`` percent larger, rounded up to whole MiB; not grown, the
    saved size itself (in whole sectors)."""
    bigger = size + (size * grow + 99) // 100
    step = max(MiB, sector_size) if grow else sector_size
    return (bigger + step - 1) // step * step


def plan_disks(description: Description, grow: int) -> tuple[DiskImage, ...]:
    """One blank image per disk of the description, in its order."""
    if not 0 <= grow <= MAX_GROW:
        raise BadInput(f"--grow {grow}: a percentage from 0 to {MAX_GROW}")
    if not description.disks:
        raise BadInput("the set's description has no disk: there is nothing to rehearse")
    out = []
    for n, disk in enumerate(description.disks):
        sector = disk.logical_sector_size if disk.logical_sector_size in (512, 4096) else 512
        if not 0 < disk.size <= MAX_DISK:
            raise BadInput(f"the saved disk {disk.id} has a size of {disk.size} bytes: "
                           "no image can be made of it")
        out.append(DiskImage(disk.id, f"disk{n}.img", grown(disk.size, grow, sector), sector,
                             f"rehearse-{n}"))
    return tuple(out)


def boot_order(description: Description, disks: Sequence[DiskImage]) -> tuple[DiskImage, ...]:
    """The disks with the one holding the saved boot volume (else the system volume)
    first: the firmware boots from the first disk."""
    by_id = {d.id: d for d in description.partitions}
    fs = {f.id: f for f in description.filesystems}
    wanted = description.system.boot_volume or description.system.system_volume
    first: str | None = None
    if wanted in fs:
        part = by_id.get(fs[wanted].device)
        first = part.disk if part is not None else None
    return tuple(sorted(disks, key=lambda d: d.saved_id != first))


@dataclass(frozen=True)
class Machine:
    """What qemu runs: the accelerator, firmware, memory, vCPUs, the disks on one bus."""

    accel: Accel
    firmware: Firmware
    bus: Bus
    memory_mib: int
    cpus: int
    drives: tuple[Drive, ...]
    ovmf: Ovmf | None = None
    # A copy of the OVMF variables template, kept from the rescue's boot to the first
    # boot of the recovered system (the boot entries finalize writes live there).
    ovmf_vars: Path | None = None
    # A NIC on qemu's user network: the rescue's, for a set on SFTP or S3 (the recovered
    # system's first boot has none).
    network: bool = False


@dataclass(frozen=True)
class DirectKernel:
    kernel: Path
    initrd: Path
    append: str


def qemu_argv(machine: Machine, kernel: DirectKernel | None = None,
              qemu: str = "qemu-system-x86_64") -> list[str]:
    """The qemu command line: no network (unless ``machine.network``: a NIC on qemu's
    user network), no display, no reboot (a guest that reboots ends the run), the serial
    console on qemu's standard output."""
    nic = ["-nic", "user,model=virtio-net-pci"] if machine.network else ["-nic", "none"]
    argv = [qemu, "-accel", str(machine.accel), "-m", str(machine.memory_mib),
            "-smp", str(machine.cpus), "-nographic", "-no-reboot", *nic,
            "-global", "isa-fdc.fdtypeA=none"]
    if machine.firmware is Firmware.UEFI:
        if machine.ovmf is None:
            raise BadInput("UEFI needs OVMF")
        if machine.ovmf_vars is not None:
            argv += ["-drive", f"if=pflash,format=raw,unit=0,readonly=on,file="
                     f"{_opt(machine.ovmf.code)}",
                     "-drive", f"if=pflash,format=raw,unit=1,file={_opt(machine.ovmf_vars)}"]
        else:
            argv += ["-bios", os.fspath(machine.ovmf.code)]
    if machine.bus is Bus.SCSI:
        argv += ["-device", "virtio-scsi-pci,id=scsi0"]
    elif machine.bus is Bus.SATA:
        argv += ["-device", "ahci,id=ahci0"]
    for n, drive in enumerate(machine.drives):
        spec = f"file={_opt(drive.path)},format=raw,if=none,id=d{n},cache=unsafe"
        if drive.read_only:
            spec += ",readonly=on"
        argv += ["-drive", spec, "-device", _device(machine.bus, n, drive,
                                                    boot=n == 0 and kernel is None)]
    if kernel is not None:
        argv += ["-kernel", os.fspath(kernel.kernel), "-initrd", os.fspath(kernel.initrd),
                 "-append", kernel.append]
    return argv


def _device(bus: Bus, n: int, drive: Drive, *, boot: bool) -> str:
    extra = f",serial={drive.serial}"
    if drive.sector_size != 512:
        extra += f",logical_block_size={drive.sector_size},physical_block_size={drive.sector_size}"
    if boot:
        extra += ",bootindex=0"
    if bus is Bus.VIRTIO:
        return f"virtio-blk-pci,drive=d{n}{extra}"
    if bus is Bus.NVME:
        return f"nvme,drive=d{n}{extra}"
    if bus is Bus.SCSI:
        return f"scsi-hd,drive=d{n},bus=scsi0.0{extra}"
    return f"ide-hd,drive=d{n},bus=ahci0.{n}{extra}"


def _opt(path: Path) -> str:
    """A path as a value in qemu's key=value options, where a comma is doubled."""
    text = os.fspath(path)
    if any(c in text for c in "\n\0"):
        raise BadInput(f"{text!r} cannot be a disk path for qemu")
    return text.replace(",", ",,")
