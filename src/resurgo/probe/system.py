"""The system itself: identity, firmware, kernel, bootloader, and its configuration files.

Everything is read from files of the tree at ``root`` (the running system when root
is "/", or one mounted elsewhere for ``describe --root``). Only facts that a tree
cannot tell come from the running machine, and only when root is the running
system: the hostname fallback, the running kernel, and the firmware the machine
booted with (/sys/firmware/efi).

Firmware of a tree that is not running, and why it is decided this way: a tree
does not record how it was booted, but its bootloader packages say how it was set
up to boot. GRUB's platform packages (grub-pc, grub-efi-<arch>) conflict with each
other, so an installed grub-pc without any grub-efi platform package means BIOS.
Otherwise the tree is UEFI when it has an EFI loader installed (a grub-efi package,
GRUB's <arch>-efi modules, systemd-boot, shim, or files under /boot/efi/EFI) AND
its fstab mounts an ESP (vfat at /boot/efi, /efi or /boot): a loader without an
ESP to live on boots nothing. Anything else is BIOS.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import logging
import os
import platform
import re
import socket
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from resurgo import parttypes
from resurgo.model import (
    Bootloader,
    BootloaderKind,
    ConfigFile,
    Disk,
    Encoding,
    Firmware,
    OsRelease,
    Partition,
    SystemInfo,
)
from resurgo.probe import dpkg, ids, rootfs

log = logging.getLogger(__name__)

# grub-install writes boot.img into the MBR; its message strings start with this
# ("GRUB \0Geom\0Hard Disk\0Read\0 Error"), inside the 440 bytes of boot code.
GRUB_MBR_SIGNATURE = b"GRUB "
MBR_CODE_SIZE = 440

MAX_CONFIG_SIZE = 1024 * 1024

# What a recovery rewrites or needs to read back, relative to the tree's root.
# A pattern's last component may be a glob; directories are never matched.
CONFIG_PATTERNS: tuple[str, ...] = (
    "etc/fstab",
    "etc/crypttab",
    "etc/mdadm/mdadm.conf",
    "etc/mdadm.conf",
    "etc/default/grub",
    "etc/default/grub.d/*",
    "boot/grub/grub.cfg",
    "etc/kernel/cmdline",
    "etc/hostname",
    "etc/hosts",
    "etc/machine-id",
    "etc/initramfs-tools/initramfs.conf",
    "etc/initramfs-tools/modules",
    "etc/initramfs-tools/conf.d/*",
    "etc/dracut.conf",
    "etc/dracut.conf.d/*",
    "etc/network/interfaces",
    "etc/network/interfaces.d/*",
    "etc/NetworkManager/system-connections/*",
    "etc/systemd/network/*",
    "etc/netplan/*.yaml",
    "etc/resolv.conf",
    "etc/udev/rules.d/70-persistent-net.rules",
)
# Kept only when they are regular files: a symlink here points at a file some
# service regenerates at boot (systemd-resolved, resolvconf), not configuration.
REGULAR_ONLY = frozenset({"etc/resolv.conf"})

# Files that hold keys whatever their mode says (Wi-Fi and VPN secrets, wireguard keys):
# a mode loosened by hand must not put them in clear into a recovery set.
SECRET_PATTERNS: tuple[str, ...] = (
    "etc/NetworkManager/system-connections/*",
    "etc/wpa_supplicant/*",
    "etc/netplan/*.yaml",
    "etc/wireguard/*",
)
# A key set in a file that is otherwise public: ifupdown's wpa-psk, a GRUB password, a
# CIFS mount's password= option in fstab (readable to local users, but a set may be
# read by others).
SECRET_LINE = re.compile(
    rb"^[ \t]*(wpa-psk|wpa-passphrase|wpa-password|psk|password|privatekey|presharedkey)"
    rb"[ \t]*[=: \t]|[ \t,]password=",
    re.IGNORECASE | re.MULTILINE,
)

ARCHITECTURES = {
    "x86_64": "x86_64",
    "amd64": "x86_64",
    "x64": "x86_64",
    "aarch64": "aarch64",
    "arm64": "aarch64",
    "i386": "i686",
    "i486": "i686",
    "i586": "i686",
    "i686": "i686",
    "armv7l": "armv7l",
    "armhf": "armv7l",
    "ppc64le": "ppc64le",
    "ppc64el": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
}
# The suffix UEFI gives loaders of each architecture (BOOTX64.EFI, grubaa64.efi, ...).
EFI_SUFFIX = {
    "x86_64": "x64",
    "aarch64": "aa64",
    "i686": "ia32",
    "armv7l": "arm",
    "riscv64": "riscv64",
}
GRUB_EFI_TARGET = {
    "x86_64": "x86_64-efi",
    "aarch64": "arm64-efi",
    "i686": "i386-efi",
    "armv7l": "arm-efi",
    "riscv64": "riscv64-efi",
}
ESP_MOUNTPOINTS = ("/boot/efi", "/efi", "/boot")


@dataclass(frozen=True)
class SystemFacts:
    hostname: str
    machine_id: str
    architecture: str
    firmware: Firmware
    os_release: OsRelease
    kernel: str

    def system_info(self, bootloader: Bootloader, **volumes: str | None) -> SystemInfo:
        """The model's SystemInfo; volumes: system_volume=, boot_volume=, esp=."""
        return SystemInfo(
            hostname=self.hostname,
            machine_id=self.machine_id,
            architecture=self.architecture,
            firmware=self.firmware,
            os_release=self.os_release,
            kernel=self.kernel,
            bootloader=bootloader,
            **volumes,
        )


# ---------------------------------------------------------------------------------------
# pure parsers


def parse_os_release(text: str) -> dict[str, str]:
    """os-release(5): KEY=value lines, values in shell quoting; comments and junk ignored."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, raw = line.partition("=")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            continue
        value = shell_word(raw)
        if value is not None:
            out[key] = value
    return out


def shell_word(raw: str) -> str | None:
    """The value of one shell word as sh would read it; None for an unterminated quote.

    Done by hand because shlex leaves \\$ and \\` escaped inside double quotes and
    treats an unquoted # inside a word as a comment, where sh does neither.
    """
    out: list[str] = []
    i, n = 0, len(raw)
    while i < n:
        c = raw[i]
        if c in " \t":
            break  # sh would run the rest as a command; os-release has no such thing
        if c == "\\":
            if i + 1 < n:
                out.append(raw[i + 1])
            i += 2
        elif c == "'":
            end = raw.find("'", i + 1)
            if end < 0:
                return None
            out.append(raw[i + 1 : end])
            i = end + 1
        elif c == '"':
            i += 1
            while i < n and raw[i] != '"':
                if raw[i] == "\\" and i + 1 < n and raw[i + 1] in '$`"\\':
                    i += 1
                out.append(raw[i])
                i += 1
            if i >= n:
                return None
            i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def os_release_of(fields: dict[str, str]) -> OsRelease:
    # The defaults are the ones os-release(5) prescribes for missing fields.
    return OsRelease(
        id=fields.get("ID", "linux"),
        version_id=fields.get("VERSION_ID", ""),
        pretty_name=fields.get("PRETTY_NAME", "Linux"),
    )


def first_word_line(text: str) -> str:
    """The first non-empty, non-comment line of a one-value file (hostname, machine-id)."""
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            return line
    return ""


def normalise_architecture(machine: str) -> str:
    return ARCHITECTURES.get(machine.lower(), machine.lower())


def version_key(version: str) -> tuple[tuple[int, int | str], ...]:
    """Natural order for kernel versions: 6.1.0-10 sorts after 6.1.0-9."""
    parts = re.findall(r"\d+|[^\d.\-+~_]+", version)
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in parts)


def newest_version(versions: Iterable[str]) -> str:
    return max(versions, key=version_key, default="")


@dataclass(frozen=True)
class FstabEntry:
    spec: str
    mountpoint: str
    fstype: str
    options: str


def parse_fstab(text: str) -> list[FstabEntry]:
    out = []
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) < 3:
            continue
        # fstab(5) escapes blanks in names as octal (\040).
        unescape = [re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), f) for f in fields]
        options = unescape[3] if len(unescape) > 3 else "defaults"
        out.append(FstabEntry(unescape[0], unescape[1], unescape[2], options))
    return out


def esp_in_fstab(entries: Iterable[FstabEntry]) -> bool:
    return any(
        e.fstype in ("vfat", "msdos", "fat") and e.mountpoint.rstrip("/") in ESP_MOUNTPOINTS
        for e in entries
    )


def decide_firmware(
    *, grub_pc_only: bool, efi_loader: bool, esp_mounted_by_fstab: bool
) -> Firmware:
    """How a tree that is not running boots; see the module docstring."""
    if grub_pc_only:
        return Firmware.BIOS
    if efi_loader and esp_mounted_by_fstab:
        return Firmware.UEFI
    return Firmware.BIOS


def has_grub_boot_code(sector: bytes) -> bool:
    """Whether an MBR's boot code area holds GRUB's boot.img (GRUB 2 or legacy stage1)."""
    return GRUB_MBR_SIGNATURE in sector[:MBR_CODE_SIZE]


@dataclass(frozen=True)
class LoaderEvidence:
    """What a tree shows of each bootloader; decide_bootloader turns it into a kind."""

    grub_pc: bool = False
    # The grub-efi platform package (grub-efi-amd64, ...): installed means "set up to use".
    grub_efi_package: bool = False
    # GRUB's EFI modules (grub-efi-<arch>-bin): present on many BIOS systems too.
    grub_efi_files: bool = False
    systemd_boot: bool = False
    kernel_images: bool = False


def decide_bootloader(firmware: Firmware, ev: LoaderEvidence) -> BootloaderKind:
    """The bootloader in use, given the firmware: a tree may carry several.

    Nothing recognised gives NONE when the tree has no kernel to boot either (a
    container or chroot) and UNKNOWN when it has one: something boots it, but not a
    loader resurgo knows.
    """
    if firmware == Firmware.UEFI:
        if ev.grub_efi_package:
            return BootloaderKind.GRUB_EFI
        if ev.systemd_boot:
            return BootloaderKind.SYSTEMD_BOOT
        if ev.grub_efi_files:
            return BootloaderKind.GRUB_EFI
    elif ev.grub_pc:
        return BootloaderKind.GRUB_PC
    if any((ev.grub_pc, ev.grub_efi_package, ev.grub_efi_files, ev.systemd_boot)):
        return BootloaderKind.UNKNOWN
    return BootloaderKind.UNKNOWN if ev.kernel_images else BootloaderKind.NONE


def choose_efi_path(
    files: Iterable[str], kind: BootloaderKind, architecture: str, vendor: str
) -> str | None:
    """The loader the firmware starts, among the ESP's files ("EFI/debian/grubx64.efi").

    Shim comes before GRUB (with Secure Boot, shim is what the NVRAM entry names);
    the distribution's own directory before others; the removable-media fallback
    EFI/BOOT/BOOT<arch>.EFI last. FAT ignores case, so matching does too.
    """
    sfx = EFI_SUFFIX.get(architecture, "x64")
    by_lower = {f.lower(): f for f in files}
    vendors = sorted({f.split("/")[1].lower() for f in by_lower if f.count("/") == 2})
    vendors.sort(key=lambda v: (v != vendor.lower(), v == "boot"))
    wanted: list[str] = []
    if kind == BootloaderKind.SYSTEMD_BOOT:
        wanted.append(f"efi/systemd/systemd-boot{sfx}.efi")
    elif kind == BootloaderKind.GRUB_EFI:
        for v in vendors:
            if v != "boot":
                wanted += [f"efi/{v}/shim{sfx}.efi", f"efi/{v}/grub{sfx}.efi"]
    wanted.append(f"efi/boot/boot{sfx}.efi")
    for w in wanted:
        if w in by_lower:
            return "/" + by_lower[w]
    return None


def bios_boot_partition(partitions: Sequence[Partition], grub_disks: Sequence[str]) -> str | None:
    """The BIOS boot partition GRUB embeds its core into on GPT; one on a GRUB disk first."""
    candidates = [p for p in partitions if parttypes.is_bios_boot(p.type)]
    candidates.sort(key=lambda p: (p.disk not in grub_disks, p.disk, p.number))
    return candidates[0].id if candidates else None


# ---------------------------------------------------------------------------------------
# readers


def _read_text(root: Path, inside: str) -> str | None:
    real = rootfs.resolve(root, inside)
    if real is None:
        return None
    try:
        return rootfs.host_path(root, real).read_text(encoding="utf-8", errors="replace")
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError):
        return None


def _exists(root: Path, inside: str) -> bool:
    real = rootfs.resolve(root, inside)
    return real is not None and rootfs.host_path(root, real).exists()


def _listdir(root: Path, inside: str) -> list[str]:
    real = rootfs.resolve(root, inside)
    if real is None:
        return []
    try:
        return sorted(os.listdir(rootfs.host_path(root, real)))
    except (NotADirectoryError, FileNotFoundError, PermissionError):
        return []


def read_os_release(root: Path) -> OsRelease:
    for inside in ("/etc/os-release", "/usr/lib/os-release"):
        text = _read_text(root, inside)
        if text is not None:
            return os_release_of(parse_os_release(text))
    return os_release_of({})


def tree_kernels(root: Path) -> list[str]:
    """Kernel versions installed in the tree: /lib/modules/* and /boot/vmlinuz-*."""
    versions = {
        v
        for v in _listdir(root, "/lib/modules")
        if _exists(root, f"/lib/modules/{v}/kernel")
        or _exists(root, f"/lib/modules/{v}/modules.dep")
    }
    versions |= {
        n.removeprefix("vmlinuz-") for n in _listdir(root, "/boot") if n.startswith("vmlinuz-")
    }
    return sorted(versions, key=version_key)


def probe_system(root: Path, sysfs: Path = Path("/sys")) -> SystemFacts:
    running = rootfs.is_running_root(root)
    hostname = first_word_line(_read_text(root, "/etc/hostname") or "")
    if not hostname and running:
        hostname = socket.gethostname()
    machine_id = first_word_line(_read_text(root, "/etc/machine-id") or "")
    if machine_id == "uninitialized":
        machine_id = ""
    architecture = normalise_architecture(platform.machine())
    if running:
        firmware = Firmware.UEFI if (sysfs / "firmware/efi").is_dir() else Firmware.BIOS
        kernel = platform.release()
    else:
        firmware = tree_firmware(root, architecture)
        kernel = newest_version(tree_kernels(root))
    return SystemFacts(
        hostname=hostname,
        machine_id=machine_id,
        architecture=architecture,
        firmware=firmware,
        os_release=read_os_release(root),
        kernel=kernel,
    )


def _installed(root: Path) -> set[str]:
    return dpkg.installed_names(root)


def loader_evidence(
    root: Path, architecture: str, installed: set[str] | None = None
) -> LoaderEvidence:
    pkgs = _installed(root) if installed is None else installed
    target = GRUB_EFI_TARGET.get(architecture, "x86_64-efi")
    efi_platform = {p for p in pkgs if re.fullmatch(r"grub-efi(-[a-z0-9]+)?", p)}
    sfx = EFI_SUFFIX.get(architecture, "x64")
    systemd_boot = (
        "systemd-boot" in pkgs
        or _exists(root, "/boot/efi/EFI/systemd")
        or _exists(root, "/boot/efi/loader/loader.conf")
        or _exists(root, "/efi/loader/loader.conf")
        or _exists(root, f"/usr/lib/systemd/boot/efi/systemd-boot{sfx}.efi")
    )
    return LoaderEvidence(
        grub_pc="grub-pc" in pkgs or _exists(root, "/usr/lib/grub/i386-pc"),
        grub_efi_package=bool(efi_platform),
        grub_efi_files=_exists(root, f"/usr/lib/grub/{target}")
        or any(p.startswith("grub-efi-") for p in pkgs),
        systemd_boot=systemd_boot,
        kernel_images=any(
            n.startswith(("vmlinuz", "vmlinux", "Image", "bzImage"))
            for n in _listdir(root, "/boot")
        ),
    )


def tree_firmware(root: Path, architecture: str) -> Firmware:
    pkgs = _installed(root)
    ev = loader_evidence(root, architecture, pkgs)
    efi_loader = (
        ev.grub_efi_package
        or ev.grub_efi_files
        or ev.systemd_boot
        or any(p.startswith("shim-signed") for p in pkgs)
        or bool(_listdir(root, "/boot/efi/EFI"))
    )
    fstab = parse_fstab(_read_text(root, "/etc/fstab") or "")
    return decide_firmware(
        grub_pc_only="grub-pc" in pkgs and not ev.grub_efi_package,
        efi_loader=efi_loader,
        esp_mounted_by_fstab=esp_in_fstab(fstab),
    )


def grub_disks(disks: Sequence[Disk], warnings: list[str] | None = None) -> tuple[str, ...]:
    """Ids of the disks whose MBR carries GRUB's boot code (read-only: one sector each)."""
    out = []
    for disk in disks:
        try:
            with open(disk.path, "rb") as f:
                sector = f.read(512)
        except OSError as e:
            _warn(warnings, f"cannot read the boot sector of {disk.path}: {e.strerror}")
            continue
        if has_grub_boot_code(sector):
            out.append(disk.id)
    return tuple(out)


def esp_files(esp: Path) -> list[str]:
    """The loaders on a mounted ESP, as "EFI/<dir>/<file>" (names as the ESP spells them)."""
    out = []
    try:
        efi_dirs = [d for d in os.listdir(esp) if d.lower() == "efi"]
    except OSError:
        return []
    for efi in efi_dirs:
        try:
            vendors = os.listdir(esp / efi)
        except OSError:
            continue
        for vendor in vendors:
            try:
                names = os.listdir(esp / efi / vendor)
            except OSError:
                continue
            out += [f"{efi}/{vendor}/{n}" for n in names if n.lower().endswith(".efi")]
    return sorted(out)


def probe_bootloader(
    root: Path,
    firmware: Firmware,
    disks: Sequence[Disk],
    partitions: Sequence[Partition],
    esp_mountpoint: Path | None,
    warnings: list[str] | None = None,
) -> Bootloader:
    architecture = normalise_architecture(platform.machine())
    ev = loader_evidence(root, architecture)
    if esp_mountpoint is not None:
        esp_loader_dirs = {f.split("/")[1].lower() for f in esp_files(esp_mountpoint)}
        ev = LoaderEvidence(
            grub_pc=ev.grub_pc,
            grub_efi_package=ev.grub_efi_package,
            grub_efi_files=ev.grub_efi_files,
            systemd_boot=ev.systemd_boot or "systemd" in esp_loader_dirs,
            kernel_images=ev.kernel_images,
        )
    kind = decide_bootloader(firmware, ev)
    if kind == BootloaderKind.GRUB_PC:
        on_disks = grub_disks(disks, warnings)
        return Bootloader(
            kind=kind,
            disks=on_disks,
            bios_boot_partition=bios_boot_partition(partitions, on_disks),
        )
    if kind in (BootloaderKind.GRUB_EFI, BootloaderKind.SYSTEMD_BOOT):
        efi_path = None
        if esp_mountpoint is not None:
            vendor = read_os_release(root).id
            efi_path = choose_efi_path(esp_files(esp_mountpoint), kind, architecture, vendor)
        return Bootloader(kind=kind, efi_path=efi_path)
    return Bootloader(kind=kind)


# ---------------------------------------------------------------------------------------
# configuration files


def is_secret(inside: str, data: bytes, mode: int) -> bool:
    """Whether a captured file holds secrets: the system keeps it from other users (no
    read bit for others, e.g. 0600 or 0640), it is of a kind that holds keys, or it sets
    a key. A false alarm costs little (an encrypted set keeps the file sealed); a miss
    puts a key in clear on the medium."""
    if not mode & stat.S_IROTH:
        return True
    relative = inside.lstrip("/")
    if any(fnmatch.fnmatchcase(relative, p) for p in SECRET_PATTERNS):
        return True
    return SECRET_LINE.search(data) is not None


def config_record(inside: str, data: bytes, mode: int) -> ConfigFile:
    """One captured file: text when it is UTF-8, else base64; marked when it is secret."""
    try:
        content, encoding = data.decode("utf-8"), Encoding.UTF8
    except UnicodeDecodeError:
        content, encoding = base64.b64encode(data).decode("ascii"), Encoding.BASE64
    return ConfigFile(
        id=ids.config_file(inside),
        path=inside,
        content=content,
        encoding=encoding,
        mode=f"{stat.S_IMODE(mode):04o}",
        sha256=hashlib.sha256(data).hexdigest(),
        secret=is_secret(inside, data, mode),
    )


def _matches(root: Path, pattern: str) -> list[str]:
    """Absolute in-tree paths matching pattern (a glob only in the last component)."""
    parent, _, name = pattern.rpartition("/")
    if not any(c in name for c in "*?["):
        return [f"/{pattern}"]
    return [f"/{parent}/{n}" for n in _listdir(root, f"/{parent}") if fnmatch.fnmatchcase(n, name)]


def capture_config(root: Path, warnings: list[str] | None = None) -> list[ConfigFile]:
    """Verbatim copies of the configuration a recovery rewrites (CONFIG_PATTERNS).

    A symlink is recorded at its own path with its target's content, as long as the
    target stays inside the tree; non-regular files and files over 1 MiB are skipped.
    """
    out: list[ConfigFile] = []
    seen: set[str] = set()
    for pattern in CONFIG_PATTERNS:
        for inside in _matches(root, pattern):
            if inside in seen:
                continue
            seen.add(inside)
            record = _capture_one(root, inside, pattern in REGULAR_ONLY, warnings)
            if record is not None:
                out.append(record)
    return out


def _capture_one(
    root: Path, inside: str, regular_only: bool, warnings: list[str] | None
) -> ConfigFile | None:
    parent, _, name = inside.rpartition("/")
    real_parent = rootfs.resolve(root, parent or "/")
    if real_parent is None:
        return None
    host = rootfs.host_path(root, f"{real_parent.rstrip('/')}/{name}")
    try:
        st = os.lstat(host)
    except OSError:
        return None
    if stat.S_ISLNK(st.st_mode):
        if regular_only:
            return None
        real = rootfs.resolve(root, inside, missing_ok=True)
        if real is None:
            _warn(warnings, f"{inside}: skipped, a symlink whose target is outside the system")
            return None
        host = rootfs.host_path(root, real)
        try:
            st = os.stat(host)
        except OSError:
            # Dangling inside the tree: a masking link to /dev/null on an unmounted
            # tree, say. The model holds file contents, not links.
            log.debug("%s: skipped, a symlink to %s, which does not exist", inside, real)
            return None
    if not stat.S_ISREG(st.st_mode):
        return None
    if st.st_size > MAX_CONFIG_SIZE:
        _warn(
            warnings,
            f"{inside}: skipped, {st.st_size} bytes is more than a "
            f"configuration file should hold ({MAX_CONFIG_SIZE} at most)",
        )
        return None
    try:
        data = host.read_bytes()
    except OSError as e:
        _warn(warnings, f"{inside}: cannot be read: {e.strerror}")
        return None
    return config_record(inside, data, st.st_mode)


def _warn(warnings: list[str] | None, message: str) -> None:
    if warnings is None:
        log.warning("%s", message)
    else:
        warnings.append(message)
