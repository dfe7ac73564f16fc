"""The rescue images the vm tier boots, built once per run (see conftest.py), and what
reads their console.

Two builds, each a property of its own:

``sysroot``: kernel, modules, programs and Python all from the cached Debian tree (which
    is bind-mounted read-only: it is a cache other tests share), a small description
    embedded (host "rescued", below), the unattended entry the default and
    ``resurgo.args=--layout-only --root /mnt/rescued`` on its kernel command line:

        disk.vda (GPT, 256 MiB)  p1 200 MiB ── ext4 "rescued" /

``kernel_root``: this machine's programs and Python (which has ``ip`` and ``zstd``), the
    tree's kernel and modules (--kernel-root), no description, a static address on its
    kernel command line. The whole-cycle tests boot its kernel and initramfs with their
    own command line: the set they saved named by ``resurgo.set=``.
    The same build writes its network boot tree too (``rescue --netboot``), which
    test_netboot boots by PXELINUX.

Both trust one signing key (``Keys.trusted``): every set a test saves is signed with it.
"""

from __future__ import annotations

import contextlib
import lzma
import os
import struct
import subprocess
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from resurgo import fileformat, signing
from resurgo.model import (
    Bootloader,
    BootloaderKind,
    Command,
    Description,
    Disk,
    ExtOptions,
    Filesystem,
    Firmware,
    FormatInfo,
    FsType,
    Mount,
    OsRelease,
    Partition,
    PartitionTable,
    SystemInfo,
    TableLabel,
    VolumeState,
)
from resurgo.rescue import After, RescueOptions, RescueReport, build_rescue_image
from tests.vm import guest

MiB = guest.MiB
TARGET_SIZE = 256 * MiB
HOST = "rescued"
DISK_GUID = "5e5c0e00-0000-4000-8000-000000000001"
PART_UUID = "5e5c0e00-0000-4000-8000-000000000002"
FS_UUID = "5e5c0e00-0000-4000-8000-000000000003"
LINUX_FS = "0fc63daf-8483-4772-8e79-3d69d8477de4"
# In the sysroot image's grub.cfg, so one image serves every boot of test_rescue.
KERNEL_ARGS = ("resurgo.args=--layout-only --root /mnt/rescued", "resurgo.wait=5",
               guest.FAST_TCG)
# In the kernel-root image's grub.cfg (the network test boots it so).
NETWORK_ARGS = (
    "ip=10.0.2.15::10.0.2.2:255.255.255.0::eth0:none",
    "nameserver=10.0.2.3",
    "resurgo.wait=0",
    guest.FAST_TCG,
)
SIGNER = "admin@test"
PREFIX = "resurgo-rescue:"


def description() -> Description:
    disk = Disk(
        id="disk.vda",
        path="/dev/vda",
        size=TARGET_SIZE,
        logical_sector_size=512,
        physical_sector_size=512,
        transport="virtio",
        critical=True,
        table=PartitionTable(TableLabel.GPT, DISK_GUID),
    )
    part = Partition(
        id="part.vda1",
        disk=disk.id,
        number=1,
        start=2048,
        size=200 * 2048,
        sector_size=512,
        type=LINUX_FS,
        path="/dev/vda1",
        uuid=PART_UUID,
        name="root",
    )
    fs = Filesystem(
        id="fs.vda1",
        device=part.id,
        type=FsType.EXT4,
        uuid=FS_UUID,
        label=HOST,
        size=200 * MiB,
        ext=ExtOptions(
            block_size=4096,
            inode_size=256,
            features=(
                "has_journal",
                "extent",
                "64bit",
                "flex_bg",
                "metadata_csum",
                "dir_index",
                "filetype",
            ),
        ),
        mounts=(Mount("/"),),
        state=VolumeState(mounted=True, used_bytes=8 * MiB),
    )
    return Description(
        format=FormatInfo("1.0", "0.1.0", "2026-01-01T00:00:00Z", HOST),
        system=SystemInfo(
            hostname=HOST,
            machine_id="3" * 32,
            architecture="x86_64",
            firmware=Firmware.BIOS,
            os_release=OsRelease("debian", "12"),
            kernel="6.1.0",
            bootloader=Bootloader(BootloaderKind.NONE),
            system_volume=fs.id,
        ),
        disks=(disk,),
        partitions=(part,),
        filesystems=(fs,),
        # A command runs as root after the restore (not with --layout-only, as here): one
        # byte of it changed is what the changed set of test_rescue carries.
        commands=(Command(90, "/bin/sh", ("-c", "echo recovered >/run/resurgo/hook"),
                          description="a harmless-looking hook"),),
    )


@dataclass(frozen=True)
class Keys:
    trusted: signing.SignKey
    intruder: signing.SignKey
    signers: bytes
    #: the trusted key's private file, for a guest's `save --sign-key`
    trusted_path: Path


def make_keys(workdir: Path) -> Keys:
    made = []
    for name in ("admin", "intruder"):
        path = workdir / name
        guest.run_cmd(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", path])
        made.append(signing.SignKey.load(path))
    return Keys(made[0], made[1], made[0].signers_line(SIGNER).encode(), workdir / "admin")


@contextlib.contextmanager
def read_only_view(tree: Path, target: Path) -> Iterator[Path]:
    """The shared cached tree, bind-mounted read-only: a build that tried to write into
    it would fail here instead of changing the cache."""
    with guest.mounted(tree, target, options=["bind", "ro"]):
        assert os.statvfs(target).f_flag & os.ST_RDONLY
        yield target


def write_description(path: Path) -> Path:
    fileformat.write(description(), path)
    return path


def build_sysroot_image(workdir: Path, tree: Path, keys: Keys, desc_file: Path) -> RescueReport:
    with read_only_view(tree, workdir / "sysroot") as root:
        report = build_rescue_image(
            workdir / "rescue.iso",
            RescueOptions(
                trusted_signers=keys.signers,
                description=desc_file,
                unattended=True,
                after=After.POWEROFF,
                menu_timeout=0,
                kernel_args=KERNEL_ARGS,
                sysroot=root,
            ),
        )
    print(
        f"\nrescue image: {report.size / MiB:.1f} MiB (kernel {report.kernel_size / MiB:.1f}, "
        f"initramfs {report.initramfs_size / MiB:.1f} MiB, "
        f"{report.initramfs_uncompressed / MiB:.0f} MiB unpacked), built in "
        f"{report.seconds:.1f} s {report.timings}"
    )
    return report


def build_kernel_root_image(workdir: Path, tree: Path, keys: Keys) -> RescueReport:
    with read_only_view(tree, workdir / "kroot") as kroot:
        report = build_rescue_image(
            workdir / "kernel-root.iso",
            RescueOptions(
                trusted_signers=keys.signers,
                kernel_root=kroot,
                unattended=True,
                menu_timeout=0,
                kernel_args=NETWORK_ARGS,
                netboot=workdir / "netboot",
            ),
        )
    print(f"\n--kernel-root image: {report.size / MiB:.1f} MiB in {report.seconds:.1f} s")
    return report


def extract(image: Path, out: Path) -> Path:
    """The image's files (xorriso reads the ISO without mounting it), and its kernel
    unpacked for a PVH boot when it has that entry (``direct_kernel``)."""
    guest.run_cmd(["xorriso", "-osirrox", "on", "-indev", image, "-extract", "/", out])
    unpack_pvh_kernel(out / "boot/vmlinuz", out / PVH_KERNEL)
    return out


#: Where ``extract`` leaves the kernel unpacked (an ELF qemu boots through its PVH entry).
PVH_KERNEL = "boot/vmlinux.pvh"
#: XEN_ELFNOTE_PHYS32_ENTRY, in a "Xen" note: the 32-bit entry qemu's PVH loader starts.
_PVH_NOTE = 18


def unpack_pvh_kernel(bzimage: Path, out: Path) -> Path | None:
    """``bzimage``'s payload, unpacked to ``out``, when it is an ELF with a PVH entry (a
    kernel built with CONFIG_PVH, as Debian's is); else None.

    Under TCG a bzImage spends about ten seconds unpacking itself (Debian's is xz) and
    in real mode before the kernel starts; the same kernel booted unpacked through its
    PVH entry skips both. For the boots whose subject is what runs after the kernel
    starts, not how a firmware or GRUB load it."""
    data = bzimage.read_bytes()
    if data[0x202:0x206] != b"HdrS":
        return None
    setup = (data[0x1F1] or 4) + 1
    offset, length = struct.unpack_from("<II", data, 0x248)
    payload = data[setup * 512 + offset:setup * 512 + offset + length]
    if payload.startswith(b"\xfd7zXZ\x00"):
        elf = lzma.LZMADecompressor(lzma.FORMAT_XZ).decompress(payload)
    elif payload.startswith(b"\x1f\x8b"):
        elf = zlib.decompressobj(wbits=31).decompress(payload)
    elif payload.startswith(b"\x28\xb5\x2f\xfd"):
        elf = subprocess.run(["zstd", "-dcq"], input=payload, capture_output=True,
                             check=True).stdout
    else:
        return None
    if not elf.startswith(b"\x7fELF") or not _has_pvh_note(elf):
        return None
    out.write_bytes(elf)
    return out


def _has_pvh_note(elf: bytes) -> bool:
    """Whether the (64-bit, little-endian) ELF has the Xen PHYS32_ENTRY note."""
    phoff, = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    for i in range(phnum):
        p_type, _, p_offset, _, _, p_filesz = struct.unpack_from(
            "<IIQQQQ", elf, phoff + i * phentsize)
        if p_type != 4:  # PT_NOTE
            continue
        at, end = p_offset, p_offset + p_filesz
        while at + 12 <= end:
            namesz, descsz, kind = struct.unpack_from("<III", elf, at)
            name = elf[at + 12:at + 12 + namesz].rstrip(b"\0")
            if name == b"Xen" and kind == _PVH_NOTE:
                return True
            at += 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
    return False


def direct_kernel(extracted: Path, firmware: guest.Firmware) -> Path:
    """The kernel ``direct_boot`` gives qemu: under BIOS the PVH one when ``extract`` made
    it. Under UEFI, OVMF starts the bzImage's EFI stub (what a UEFI rescue must be: the
    recovery then sees EFI firmware), so it gets the bzImage."""
    pvh = extracted / PVH_KERNEL
    return pvh if firmware == "bios" and pvh.exists() else extracted / "boot/vmlinuz"


def direct_boot(extracted: Path, args: Sequence[str],
                firmware: guest.Firmware = "bios") -> list[str]:
    """qemu arguments that boot the image's kernel and initramfs with ``args`` as the
    kernel command line, without its boot loader (where the image itself is not what a
    test checks: the firmware and GRUB reading the initramfs cost a minute under TCG),
    under BIOS the kernel unpacked (``unpack_pvh_kernel``)."""
    return [
        "-kernel",
        str(direct_kernel(extracted, firmware)),
        "-initrd",
        str(extracted / "boot/initrd.img"),
        "-append",
        " ".join(["console=ttyS0,115200", guest.FAST_TCG, *args]),
    ]


def unattended_args(set_id: str, *more: str) -> tuple[str, ...]:
    """The recover entry's words, and the set named."""
    return ("resurgo.recover=auto", f"resurgo.after={After.POWEROFF}", f"resurgo.set={set_id}",
            *more)


def rescue_lines(text: str) -> list[str]:
    return [
        line.split(PREFIX, 1)[1].split("]", 1)[1].strip()
        for line in text.splitlines()
        if PREFIX in line and "]" in line
    ]


def agent_started_at(text: str) -> float | None:
    for line in text.splitlines():
        if PREFIX in line and "rescue system" in line:
            return float(line.split("[", 1)[1].split("]", 1)[0])
    return None
