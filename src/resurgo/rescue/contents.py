"""What goes into the rescue system: programs, kernel modules, Python files.

Pure lists and choices; the builder finds them on the build machine. A program the
machine lacks is left out and reported with the package that has it (the rescue can
only carry what the machine has); a required one stops the build.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import PurePosixPath

from resurgo import run
from resurgo.packages import PACKAGES


class Need(StrEnum):
    REQUIRED = "required"  # the rescue does not work without it
    RECOVERY = "recovery"  # the recovery path calls it
    USEFUL = "useful"  # for the person at the shell


@dataclass(frozen=True)
class Program:
    name: str
    need: Need = Need.RECOVERY

    @property
    def package(self) -> str:
        """The Debian package that has it (packages.TOOLS), "?" when it is not known."""
        return PACKAGES.get(self.name, "?")


def _programs(need: Need, *names: str) -> list[Program]:
    return [Program(n, need) for n in names]


# Their packages are packages.TOOLS's, Debian's and Fedora's.
PROGRAMS: tuple[Program, ...] = (
    # /init and the agent
    *_programs(Need.REQUIRED, "bash"),
    *_programs(Need.REQUIRED, "mount", "umount", "setsid", "blkid"),
    *_programs(Need.REQUIRED, "modprobe"),
    *_programs(Need.REQUIRED, "cat", "mkdir", "ln", "sleep"),
    # disks
    *_programs(Need.RECOVERY, "sfdisk"),
    *_programs(
        Need.RECOVERY,
        "partx",
        "wipefs",
        "blockdev",
        "lsblk",
        "findmnt",
        "losetup",
        "mkswap",
        "swaplabel",
        "swapon",
        "swapoff",
        "chroot",
        "fsck",
        # the restore runs in a private mount namespace
        "unshare",
    ),
    *_programs(
        Need.RECOVERY,
        "mke2fs",
        "mkfs.ext2",
        "mkfs.ext3",
        "mkfs.ext4",
        "e2fsck",
        "fsck.ext4",
        "tune2fs",
        "dumpe2fs",
        "resize2fs",
        "e2label",
    ),
    *_programs(
        Need.RECOVERY,
        "mkfs.xfs",
        "xfs_admin",
        "xfs_repair",
        "xfs_info",
        "xfs_db",
        "xfs_growfs",
        "fsck.xfs",
    ),
    *_programs(
        Need.RECOVERY, "mkfs.vfat", "mkfs.fat", "fatlabel", "fsck.fat", "fsck.vfat"
    ),
    *_programs(Need.RECOVERY, "mkfs.btrfs", "btrfs", "btrfstune", "fsck.btrfs"),
    *_programs(Need.RECOVERY, "mdadm"),
    *_programs(Need.RECOVERY, "cryptsetup"),
    *_programs(Need.RECOVERY, "lvm"),
    *_programs(Need.RECOVERY, "dmsetup"),
    # lvm runs these to check and repair thin pools and caches before activating them
    *_programs(
        Need.RECOVERY, "pdata_tools", "thin_check", "cache_check"
    ),
    *_programs(Need.RECOVERY, "insmod", "rmmod", "lsmod", "modinfo", "depmod"),
    # finalize lists the restored system's initramfs with them (else in a chroot)
    *_programs(Need.RECOVERY, "lsinitrd"),
    *_programs(Need.RECOVERY, "lsinitramfs"),
    *_programs(Need.RECOVERY, "getfacl", "setfacl"),
    *_programs(Need.RECOVERY, "getfattr", "setfattr"),
    # the data: archives, their compression and encryption, remote media
    *_programs(Need.RECOVERY, "zstd"),
    *_programs(Need.RECOVERY, "age"),
    *_programs(Need.RECOVERY, "tar"),
    *_programs(Need.RECOVERY, "gzip"),
    *_programs(Need.RECOVERY, "xz"),
    # ssh-keygen checks the signatures of sets (resurgo.signing)
    *_programs(Need.RECOVERY, "ssh", "sftp", "scp", "ssh-keygen"),
    *_programs(Need.RECOVERY, "mcopy", "mdir", "mformat", "mmd", "mdeltree", "mattrib",
                "mtype"),
    # the boot loader and the firmware's boot entries
    *_programs(
        Need.RECOVERY,
        "grub-install",
        "grub-probe",
        "grub-mkimage",
        "grub-editenv",
        "grub-mkrelpath",
    ),
    *_programs(Need.RECOVERY, "grub-bios-setup"),
    *_programs(Need.RECOVERY, "efibootmgr"),
    # the network
    *_programs(Need.RECOVERY, "ip"),
    *_programs(Need.RECOVERY, "dhclient", "dhclient-script"),
    *_programs(Need.RECOVERY, "dhcpcd"),
    *_programs(Need.RECOVERY, "udhcpc"),
    # a shell worth having
    *_programs(
        Need.USEFUL,
        "ls",
        "cp",
        "mv",
        "rm",
        "rmdir",
        "touch",
        "chmod",
        "chown",
        "stat",
        "df",
        "du",
        "dd",
        "sort",
        "head",
        "tail",
        "wc",
        "tr",
        "cut",
        "tee",
        "env",
        "readlink",
        "realpath",
        "uname",
        "date",
        "sync",
        "sha256sum",
        "true",
        "false",
        "seq",
    ),
    *_programs(Need.USEFUL, "dmesg", "lscpu", "more", "hexdump", "wall"),
    *_programs(Need.USEFUL, "ps", "free", "kill", "top"),
    *_programs(Need.USEFUL, "hostname"),
    *_programs(Need.USEFUL, "grep"),
    *_programs(Need.USEFUL, "sed"),
    *_programs(Need.USEFUL, "awk"),
    *_programs(Need.USEFUL, "find", "xargs"),
    *_programs(Need.USEFUL, "less"),
    *_programs(Need.USEFUL, "vi"),
    *_programs(Need.USEFUL, "lspci"),
    *_programs(Need.USEFUL, "ping"),
    *_programs(Need.USEFUL, "curl"),
    *_programs(Need.USEFUL, "sgdisk"),
    *_programs(Need.USEFUL, "parted"),
    *_programs(Need.USEFUL, "nvme"),
    *_programs(Need.USEFUL, "smartctl"),
    *_programs(Need.USEFUL, "hdparm"),
)

# Programs resurgo runs that the rescue does not need: they describe a live system,
# build the rescue image or drive the vm rehearsal; none recovers a system (finalize
# runs the restored system's own dracut, in a chroot).
NOT_IN_RESCUE = frozenset(
    {"dpkg-query", "rpm", "qemu-system-x86_64", "xorriso", "grub-mkrescue", "dracut",
     # install-units enables the timer on the installed system, never in the rescue.
     "systemctl",
     # A package-aware save fetches packages and checks cached ones against the package
     # lists; the rescue reads them from the pool itself.
     "apt-get", "apt-cache",
     # The build strips the debug sections of the Python packages' extension modules.
     "strip"}
)

# Where programs live, searched in this order (as run.PATH).
PATH_DIRS: tuple[str, ...] = tuple(run.PATH.split(":"))


def program_names() -> list[str]:
    return [p.name for p in PROGRAMS]


def package_of(name: str) -> str | None:
    return PACKAGES.get(name)


# -------------------------------------------------------------------------------------
# kernel modules

#: Drivers a rescue needs on machines other than this one: virtual and common storage
#: controllers, USB (the stick holding the set, the keyboard), common server NICs.
COMMON_STORAGE: tuple[str, ...] = (
    "virtio_pci",
    "virtio_blk",
    "virtio_scsi",
    "nvme",
    "ahci",
    "ata_piix",
    "ata_generic",
    "sd_mod",
    "sr_mod",
    "sg",
    "mpt3sas",
    "megaraid_sas",
    "hpsa",
    "smartpqi",
    "aacraid",
    "vmw_pvscsi",
    "hv_storvsc",
    "xen_blkfront",
    "mmc_block",
    "sdhci_pci",
    "xhci_pci",
    "ehci_pci",
    "ohci_pci",
    "uhci_hcd",
    "usb_storage",
    "uas",
    "usbhid",
    "hid_generic",
    "loop",
)
COMMON_NETWORK: tuple[str, ...] = (
    "virtio_net",
    "e1000",
    "e1000e",
    "igb",
    "igc",
    "ixgbe",
    "ixgbevf",
    "i40e",
    "r8169",
    "tg3",
    "bnxt_en",
    "vmxnet3",
    "hv_netvsc",
    "xen_netfront",
)
FILESYSTEMS: tuple[str, ...] = (
    "ext4",
    "xfs",
    "btrfs",
    "vfat",
    "nls_cp437",
    # Debian's kernels mount vfat with iocharset=ascii by default: without it an ESP does
    # not mount (an image with a description had it from the modules the machine used).
    "nls_ascii",
    "nls_iso8859_1",
    "nls_utf8",
    "exfat",
    "isofs",
    "udf",
    "efivarfs",
)
VOLUMES: tuple[str, ...] = (
    "md_mod",
    "linear",
    "raid0",
    "raid1",
    "raid10",
    "raid456",
    "dm_mod",
    "dm_crypt",
    "dm_thin_pool",
    "dm_snapshot",
    "dm_mirror",
    "dm_raid",
    "dm_cache",
    "dm_cache_smq",
    "dm_integrity",
)
# What LUKS and the filesystems' checksums ask the kernel's crypto API for
# (cryptsetup uses AF_ALG sockets for the key slots).
CRYPTO: tuple[str, ...] = (
    "af_alg",
    "algif_skcipher",
    "algif_hash",
    "aesni_intel",
    "xts",
    "cbc",
    "ecb",
    "essiv",
    "sha256_generic",
    "sha512_generic",
    "crc32c_intel",
    "crc32c_generic",
    "xxhash_generic",
    "blake2b_generic",
)

# The clients of nfs:// and cifs:// media (their dependencies follow from modules.dep),
# and the crypto CIFS asks for by name when it negotiates SMB3 signing and sealing (its
# soft dependencies, and what gcm(aes) and ccm(aes) are made of: none is in modules.dep;
# hmac, md5, sha256 and aes are built into common kernels). Without them a mount against
# Samba fails ("SMB2_negotiate: crypto alloc failed").
NETWORK_FILESYSTEMS: tuple[str, ...] = (
    "nfs",
    "nfsv3",
    "nfsv4",
    "cifs",
    "cmac",
    "ccm",
    "gcm",
    "ctr",
    "ghash_generic",
)

COMMON_MODULES: tuple[str, ...] = (
    *COMMON_STORAGE,
    *COMMON_NETWORK,
    *FILESYSTEMS,
    *NETWORK_FILESYSTEMS,
    *VOLUMES,
    *CRYPTO,
)

#: Loaded by /init before anything asks: the device nodes of dm (/dev/mapper/control)
#: and loop (/dev/loop-control) exist only once their drivers are in.
PRELOAD_MODULES: tuple[str, ...] = ("dm_mod", "loop")


@dataclass(frozen=True)
class ModuleChoice:
    """The modules asked for, split by what the target kernel has."""

    modules: tuple[str, ...]  # modules of that kernel: into the image
    builtin: tuple[str, ...]  # built into that kernel: nothing to add
    unknown: tuple[str, ...]  # that kernel does not have them


def choose_modules(
    wanted: Iterable[str],
    available: Iterable[str],
    builtin: Iterable[str],
) -> ModuleChoice:
    """Split ``wanted`` (in order, without repeats; '-' and '_' alike) by the kernel's
    module index: its loadable modules (``available``) and its built-in ones."""
    avail = {n.replace("-", "_") for n in available}
    built = {n.replace("-", "_") for n in builtin}
    mods: list[str] = []
    inside: list[str] = []
    unknown: list[str] = []
    for raw in dict.fromkeys(n.replace("-", "_") for n in wanted):
        if raw in avail:
            mods.append(raw)
        elif raw in built:
            inside.append(raw)
        else:
            unknown.append(raw)
    return ModuleChoice(tuple(mods), tuple(inside), tuple(unknown))


def firmware_of(
    modules: Iterable[str],
    deps: Mapping[str, tuple[str, ...]],
    firmware: Mapping[str, tuple[str, ...]],
) -> list[str]:
    """The firmware files the given modules (and what they pull in) may load, sorted."""
    names: set[str] = set()
    for m in modules:
        names.add(m)
        names.update(deps.get(m, ()))
    return sorted({f for m in names for f in firmware.get(m, ())})


# -------------------------------------------------------------------------------------
# Python

#: Parts of the standard library no rescue needs: test suites, GUIs, the installers of
#: other packages, 2to3, the help texts, and the build configuration.
STDLIB_EXCLUDED_DIRS = frozenset(
    {
        "test",
        "tests",
        "idle_test",
        "idlelib",
        "tkinter",
        "turtledemo",
        "ensurepip",
        "lib2to3",
        "pydoc_data",
        "distutils",
        "venv",
        "site-packages",
        "dist-packages",
        "__phello__",
    }
)
# sitecustomize is the distribution's hook (Ubuntu's apport), a link into /etc.
STDLIB_EXCLUDED_FILES = frozenset({"turtle.py", "antigravity.py", "this.py", "sitecustomize.py"})
# Extension modules of tests, toys, GUIs and dead formats (some drag large libraries).
DYNLOAD_EXCLUDED_PREFIXES = (
    "_test",
    "_ctypes_test",
    "_xxtestfuzz",
    "_xxsubinterpreters",
    "xxlimited",
    "_tkinter",
    "audioop",
    "ossaudiodev",
    "nis",
    "_dbm",
    "_gdbm",
    "_sqlite3",
    "_curses",
)


def keep_stdlib_file(relative: str, cache_tag: str, *, pycache: bool) -> bool:
    """Whether the file at ``relative`` (below the stdlib directory) goes into the image.

    Extension modules (lib-dynload) are not decided here: they are programs to the
    image builder, which brings their libraries along.
    """
    path = PurePosixPath(relative)
    parts = path.parts
    if not parts or parts[0].startswith("config-") or parts[0] == "lib-dynload":
        return False
    if any(p in STDLIB_EXCLUDED_DIRS for p in parts[:-1]):
        return False
    name = parts[-1]
    if len(parts) == 1 and name in STDLIB_EXCLUDED_FILES:
        return False
    if "__pycache__" in parts:
        # Only the plain bytecode of this interpreter, for the files kept.
        if not pycache or not name.endswith(f".{cache_tag}.pyc"):
            return False
        source = name.removesuffix(f".{cache_tag}.pyc") + ".py"
        return not (len(parts) == 2 and source in STDLIB_EXCLUDED_FILES)
    return name.endswith(".py")


def keep_dynload(name: str) -> bool:
    return name.endswith(".so") and not name.startswith(DYNLOAD_EXCLUDED_PREFIXES)
