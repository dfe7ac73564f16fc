"""Which package provides each program resurgo calls, on Debian/Ubuntu and on Fedora/RHEL:
the hint when one is missing (run's ToolMissing, the plan's tool checks, doctor), and the
package each program the rescue image carries comes from. Data only: the one table.

A program that a distribution does not ship under that name has None there (Fedora calls
GRUB's programs grub2-*, and has no initramfs-tools).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Package:
    debian: str | None
    fedora: str | None


def _same(name: str) -> Package:
    return Package(name, name)


_UTIL_LINUX = Package("util-linux", "util-linux")
_MOUNT = Package("mount", "util-linux")  # Debian splits mount, umount, losetup, swapon out
_COREUTILS = _same("coreutils")
_GRUB2_TOOLS = Package("grub2-common", None)  # Fedora: grub2-install etc. in grub2-tools

_BY_PACKAGE: tuple[tuple[Package, tuple[str, ...]], ...] = (
    (_same("bash"), ("bash",)),
    (_UTIL_LINUX, (
        "partx", "blkid", "findmnt", "lsblk", "wipefs", "blockdev", "mkswap", "swaplabel",
        "setsid", "fsck", "unshare", "dmesg", "lscpu", "more")),
    (_MOUNT, ("mount", "umount", "losetup", "swapon", "swapoff")),
    (Package("fdisk", "util-linux"), ("sfdisk",)),
    (Package("bsdextrautils", "util-linux"), ("hexdump",)),
    (Package("bsdutils", "util-linux"), ("wall",)),
    (_same("kmod"), ("modprobe", "modinfo", "insmod", "rmmod", "lsmod", "depmod")),
    (_COREUTILS, (
        "cat", "mkdir", "ln", "sleep", "chroot", "ls", "cp", "mv", "rm", "rmdir", "touch",
        "chmod", "chown", "stat", "df", "du", "dd", "sort", "head", "tail", "wc", "tr", "cut",
        "tee", "env", "readlink", "realpath", "uname", "date", "sync", "sha256sum", "true",
        "false", "seq")),
    (_same("e2fsprogs"), (
        "dumpe2fs", "tune2fs", "mke2fs", "mkfs.ext2", "mkfs.ext3", "mkfs.ext4", "e2fsck",
        "fsck.ext4", "resize2fs", "e2label")),
    (_same("xfsprogs"), (
        "xfs_info", "xfs_db", "mkfs.xfs", "xfs_admin", "xfs_repair", "xfs_growfs", "fsck.xfs")),
    (_same("btrfs-progs"), ("btrfs", "mkfs.btrfs", "btrfstune", "fsck.btrfs")),
    (_same("dosfstools"), ("mkfs.vfat", "mkfs.fat", "fatlabel", "fsck.fat", "fsck.vfat")),
    (_same("mdadm"), ("mdadm",)),
    (Package("cryptsetup-bin", "cryptsetup"), ("cryptsetup",)),
    (_same("lvm2"), ("lvm",)),
    (Package("dmsetup", "device-mapper"), ("dmsetup",)),
    (Package("thin-provisioning-tools", "device-mapper-persistent-data"),
     ("pdata_tools", "thin_check", "cache_check")),
    (Package("dracut-core", "dracut"), ("dracut", "lsinitrd")),
    (Package("initramfs-tools-core", None), ("lsinitramfs",)),
    (_same("acl"), ("getfacl", "setfacl")),
    (_same("attr"), ("getfattr", "setfattr")),
    (_same("zstd"), ("zstd",)),
    (_same("age"), ("age",)),
    (_same("tar"), ("tar",)),
    (_same("gzip"), ("gzip",)),
    (Package("xz-utils", "xz"), ("xz",)),
    (Package("openssh-client", "openssh-clients"), ("ssh", "sftp", "scp", "ssh-keygen")),
    (_same("mtools"), ("mcopy", "mdir", "mformat", "mmd", "mdeltree", "mattrib", "mtype")),
    (_GRUB2_TOOLS, ("grub-install", "grub-probe", "grub-mkimage", "grub-editenv",
                    "grub-mkrelpath")),
    (Package("grub-pc", None), ("grub-bios-setup",)),
    # Fedora's is named grub2-mkrescue (rescue.iso runs either)
    (Package("grub-common", "grub2-tools-extra"), ("grub-mkrescue",)),
    (_same("xorriso"), ("xorriso",)),
    (_same("efibootmgr"), ("efibootmgr",)),
    (Package("iproute2", "iproute"), ("ip",)),
    (Package("isc-dhcp-client", "dhcp-client"), ("dhclient", "dhclient-script")),
    (Package("dhcpcd-base", "dhcpcd"), ("dhcpcd",)),
    (Package("udhcpc", "busybox"), ("udhcpc",)),
    (_same("dpkg"), ("dpkg-query",)),
    # Debian's own download command and package lists, which a package-aware save uses
    # (Fedora: no pool yet).
    (Package("apt", None), ("apt-get", "apt-cache")),
    (_same("rpm"), ("rpm",)),
    (_same("qemu-system-x86"), ("qemu-system-x86_64",)),
    (Package("procps", "procps-ng"), ("ps", "free", "kill", "top")),
    (_same("hostname"), ("hostname",)),
    (_same("grep"), ("grep",)),
    (_same("sed"), ("sed",)),
    (_same("gawk"), ("awk",)),
    (_same("findutils"), ("find", "xargs")),
    (_same("less"), ("less",)),
    (Package("vim-tiny", "vim-minimal"), ("vi",)),
    (_same("pciutils"), ("lspci",)),
    (Package("iputils-ping", "iputils"), ("ping",)),
    (_same("curl"), ("curl",)),
    (_same("gdisk"), ("sgdisk",)),
    (_same("parted"), ("parted",)),
    (_same("nvme-cli"), ("nvme",)),
    (_same("smartmontools"), ("smartctl",)),
    (_same("hdparm"), ("hdparm",)),
    (_same("systemd"), ("systemctl",)),
    # The rescue's build strips debug sections from carried extension modules (optional).
    (_same("binutils"), ("strip",)),
)


def _table() -> dict[str, Package]:
    out: dict[str, Package] = {}
    for package, names in _BY_PACKAGE:
        for name in names:
            if name in out:
                raise AssertionError(f"{name} is listed twice")
            out[name] = package
    return out


# program -> the packages that provide it
TOOLS: Mapping[str, Package] = _table()

# program -> its Debian package (the name the hints and the rescue's contents use)
PACKAGES: Mapping[str, str] = {
    name: p.debian for name, p in TOOLS.items() if p.debian is not None
}

# Packages that are not programs: GRUB's platform files the rescue image boots with, and
# what pip needs to build resurgo's compiled part.
GRUB_BIOS = Package("grub-pc-bin", "grub2-pc-modules")
GRUB_EFI = Package("grub-efi-amd64-bin", "grub2-efi-x64-modules")
COMPILER = Package("gcc libc6-dev python3-dev", "gcc glibc-devel python3-devel")


def install_hint(packages: Iterable[Package]) -> str | None:
    """How to install these: "apt-get install a b (Debian, Ubuntu); dnf install c
    (Fedora, RHEL)"; None when no distribution has any of them."""
    wanted = list(packages)
    debian = sorted({p.debian for p in wanted if p.debian})
    fedora = sorted({p.fedora for p in wanted if p.fedora})
    parts = []
    if debian:
        parts.append(f"apt-get install {' '.join(debian)} (Debian, Ubuntu)")
    if fedora:
        parts.append(f"dnf install {' '.join(fedora)} (Fedora, RHEL)")
    return "; ".join(parts) or None


def hint_for(*programs: str) -> str | None:
    """install_hint for the packages of these programs (those in the table)."""
    return install_hint(TOOLS[p] for p in programs if p in TOOLS)
