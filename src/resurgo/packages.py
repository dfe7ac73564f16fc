"""Which Debian package provides each program resurgo calls: the hint when one is missing
(run's ToolMissing, the plan's tool checks, the rescue image's contents). Data only."""

from __future__ import annotations

from collections.abc import Mapping

PACKAGES: Mapping[str, str] = {
    "sfdisk": "fdisk",
    "partx": "util-linux",
    "blkid": "util-linux",
    "findmnt": "util-linux",
    "lsblk": "util-linux",
    "wipefs": "util-linux",
    "blockdev": "util-linux",
    "losetup": "util-linux",
    "mkswap": "util-linux",
    "swaplabel": "util-linux",
    "dumpe2fs": "e2fsprogs",
    "tune2fs": "e2fsprogs",
    "mke2fs": "e2fsprogs",
    "mkfs.ext4": "e2fsprogs",
    "xfs_info": "xfsprogs",
    "xfs_db": "xfsprogs",
    "mkfs.xfs": "xfsprogs",
    "btrfs": "btrfs-progs",
    "mkfs.btrfs": "btrfs-progs",
    "mkfs.vfat": "dosfstools",
    "fsck.fat": "dosfstools",
    "mdadm": "mdadm",
    "cryptsetup": "cryptsetup-bin",
    "lvm": "lvm2",
    "dpkg-query": "dpkg",
    "rpm": "rpm",
    "modinfo": "kmod",
    "modprobe": "kmod",
    "mcopy": "mtools",
    "mdir": "mtools",
    "mformat": "mtools",
    "mmd": "mtools",
    "mdeltree": "mtools",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "xorriso": "xorriso",
    "qemu-system-x86_64": "qemu-system-x86",
    "zstd": "zstd",
    "efibootmgr": "efibootmgr",
    "grub-install": "grub2-common",
}
