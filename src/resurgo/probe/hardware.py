"""Hardware and drivers, from /sys; kernel modules, from /lib/modules.

What a restored system must drive to find its root: the storage and network
controllers (PCI, virtio, USB mass storage, NVMe over fabrics, SCSI hosts that hang
off nothing else), each with the kernel module bound to it and that module's
dependencies; and the modules its filesystems and volume stacks need.

Everything takes the sysfs root as a parameter (default /sys) so that tests feed
recorded trees (tests/data/sys/). Module dependencies come from modules.dep and
modules.builtin, read once: running modinfo per device would cost a process each.
"""

from __future__ import annotations

import gzip
import logging
import os
import platform
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from resurgo.model import Driver, DriverClass, FsType, Module
from resurgo.probe import ids, rootfs
from resurgo.probe.state import StorageState
from resurgo.probe.sysfs import attribute, entries, link_name

log = logging.getLogger(__name__)

SYSFS = Path("/sys")

# PCI base classes (the top byte of the 24-bit class code).
PCI_STORAGE = 0x01
PCI_NETWORK = 0x02
PCI_DESCRIPTIONS = {
    0x0100: "SCSI storage controller",
    0x0101: "IDE interface",
    0x0104: "RAID bus controller",
    0x0106: "SATA controller",
    0x0107: "Serial Attached SCSI controller",
    0x0108: "Non-Volatile memory controller",
    0x0180: "Mass storage controller",
    0x0200: "Ethernet controller",
    0x0280: "Network controller",
    0x0C03: "USB controller",
}
# virtio device ids (virtio spec, "Device Types").
VIRTIO_DEVICES: Mapping[int, tuple[DriverClass, str]] = {
    1: (DriverClass.NETWORK, "virtio network device"),
    2: (DriverClass.STORAGE, "virtio block device"),
    3: (DriverClass.OTHER, "virtio console"),
    4: (DriverClass.OTHER, "virtio entropy source"),
    5: (DriverClass.OTHER, "virtio memory balloon"),
    8: (DriverClass.STORAGE, "virtio SCSI host"),
    9: (DriverClass.OTHER, "virtio 9P transport"),
    16: (DriverClass.OTHER, "virtio GPU"),
    18: (DriverClass.OTHER, "virtio input"),
    19: (DriverClass.OTHER, "virtio socket"),
    26: (DriverClass.STORAGE, "virtio filesystem"),
}
USB_MASS_STORAGE = 0x08
# NVMe transports other than PCIe, and their modules.
NVME_FABRICS = {"tcp": "nvme_tcp", "rdma": "nvme_rdma", "fc": "nvme_fc", "loop": "nvme_loop"}

CLASS_ORDER = {DriverClass.STORAGE: 0, DriverClass.NETWORK: 1, DriverClass.OTHER: 2}


# ---------------------------------------------------------------------------------------
# kernel modules


def module_name(path_or_name: str) -> str:
    """The kernel's name for a module: kernel/drivers/md/md-mod.ko.xz -> md_mod."""
    base = path_or_name.rsplit("/", 1)[-1]
    base = re.sub(r"\.ko(\.[a-z0-9]+)?$", "", base)
    return base.replace("-", "_")


def parse_modules_dep(text: str) -> dict[str, tuple[str, ...]]:
    """modules.dep: "path: dep-path dep-path ..." -> name -> dependency names.

    depmod already lists every dependency, transitively, in an order modprobe can
    load from the end; that order is kept.
    """
    out: dict[str, tuple[str, ...]] = {}
    for line in text.splitlines():
        path, sep, deps = line.partition(":")
        if not sep:
            continue
        out[module_name(path.strip())] = tuple(module_name(d) for d in deps.split())
    return out


def parse_modules_builtin(text: str) -> frozenset[str]:
    return frozenset(module_name(line.strip()) for line in text.splitlines() if line.strip())


def parse_kernel_config(text: str) -> dict[str, str]:
    """CONFIG_X=value lines of a kernel .config (quotes removed); unset options absent."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.startswith("CONFIG_"):
            out[key] = value.strip().strip('"')
    return out


@dataclass(frozen=True)
class KernelModules:
    """What one kernel's /lib/modules and config say about its modules."""

    kernel: str = ""
    deps: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    builtin: frozenset[str] = frozenset()
    config: Mapping[str, str] = field(default_factory=dict)
    # Whether modules.dep was found: without it nothing is known about dependencies.
    found: bool = False

    def known(self, name: str) -> bool:
        return name in self.deps or name in self.builtin

    def dependencies(self, name: str) -> tuple[str, ...]:
        return () if name in self.builtin else self.deps.get(name, ())

    @classmethod
    def load(cls, root: Path = Path("/"), kernel: str | None = None) -> KernelModules:
        """The modules of ``kernel`` (default: the running one) installed in the tree at root."""
        version = kernel or platform.release()
        text = _read_in_tree(root, f"/lib/modules/{version}/modules.dep")
        builtin = _read_in_tree(root, f"/lib/modules/{version}/modules.builtin") or ""
        config_text = _read_in_tree(root, f"/boot/config-{version}")
        if config_text is None and rootfs.is_running_root(root) and version == platform.release():
            try:
                config_text = gzip.decompress(Path("/proc/config.gz").read_bytes()).decode()
            except OSError:
                config_text = None
        return cls(
            kernel=version,
            deps=parse_modules_dep(text or ""),
            builtin=parse_modules_builtin(builtin),
            config=parse_kernel_config(config_text or ""),
            found=text is not None,
        )


def _read_in_tree(root: Path, inside: str) -> str | None:
    real = rootfs.resolve(root, inside)
    if real is None:
        return None
    try:
        return rootfs.host_path(root, real).read_text(errors="replace")
    except OSError:
        return None


# ---------------------------------------------------------------------------------------
# modules for filesystems and volumes

RAID_MODULES = {
    "linear": "linear",
    "raid0": "raid0",
    "raid1": "raid1",
    "raid4": "raid456",
    "raid5": "raid456",
    "raid6": "raid456",
    "raid10": "raid10",
}
# Device-mapper targets by the volume kinds that use them.
VOLUME_MODULES: Mapping[str, tuple[str, ...]] = {
    "luks": ("dm_crypt",),
    "lvm": ("dm_mod",),
    "lvm-thin": ("dm_thin_pool",),
    "lvm-raid": ("dm_raid",),
    "lvm-cache": ("dm_cache",),
    "lvm-snapshot": ("dm_snapshot",),
    "lvm-mirror": ("dm_mirror",),
}


def filesystem_modules(fs_type: str, config: Mapping[str, str]) -> tuple[str, ...]:
    """Modules that mounting a filesystem of fs_type needs, per that kernel's config.

    ext2/ext3 are served by ext4 unless the kernel still has its own ext2 driver.
    vfat also loads the code page and I/O charset its mount defaults to
    (CONFIG_FAT_DEFAULT_CODEPAGE / _IOCHARSET: 437 and ascii on Debian): without
    them the mount of /boot/efi fails in an initramfs that lacks them.
    """
    if fs_type in ("ext2", "ext3"):
        return ("ext2",) if fs_type == "ext2" and config.get("CONFIG_EXT2_FS") else ("ext4",)
    if fs_type in ("vfat", "fat", "msdos"):
        codepage = config.get("CONFIG_FAT_DEFAULT_CODEPAGE", "437")
        iocharset = config.get("CONFIG_FAT_DEFAULT_IOCHARSET", "iso8859-1")
        return ("vfat", f"nls_cp{codepage}", f"nls_{iocharset.replace('-', '_')}")
    if fs_type in ("swap", "", "other"):
        return ()
    return (fs_type,)


def volume_modules(kind: str) -> tuple[str, ...]:
    if kind in RAID_MODULES:
        return ("md_mod", RAID_MODULES[kind])
    return VOLUME_MODULES.get(kind, ())


def required_modules(
    fs_types: Iterable[str] | StorageState,
    volume_kinds: Iterable[str] = (),
    modules: KernelModules | None = None,
) -> list[Module]:
    """The modules the filesystems and volume stacks in use need, with why and what they pull.

    fs_types: "ext4", "xfs", "btrfs", "vfat", ...; volume_kinds: md levels ("raid1",
    "raid5", "linear", ...), "luks", "lvm", "lvm-thin", "lvm-raid", "lvm-cache",
    "lvm-snapshot", "lvm-mirror". Or pass the StorageState instead, and both are
    taken from it (volume_kinds_of). modules: the index of the kernel the restored
    system boots (default: the running kernel's). With an index that found its
    modules.dep, names it does not know are left out: that kernel cannot load them.
    """
    if isinstance(fs_types, StorageState):
        fs_types, kinds = volume_kinds_of(fs_types)
        volume_kinds = [*volume_kinds, *kinds]
    mods = modules if modules is not None else KernelModules.load()
    reasons: dict[str, list[str]] = {}
    for fs in sorted(set(fs_types)):
        for name in filesystem_modules(fs, mods.config):
            reasons.setdefault(name, []).append(f"filesystem {fs}")
    for kind in sorted(set(volume_kinds)):
        for name in volume_modules(kind):
            reasons.setdefault(name, []).append(f"volume {kind}")
    out = []
    for name, why in reasons.items():
        if mods.found and not mods.known(name):
            log.debug("%s: not a module of kernel %s, left out", name, mods.kernel)
            continue
        out.append(
            Module(
                name=name,
                reason=", ".join(why),
                dependencies=mods.dependencies(name),
                builtin=name in mods.builtin,
            )
        )
    return out


def volume_kinds_of(storage: StorageState) -> tuple[set[str], set[str]]:
    """(filesystem types, volume kinds) in use, as required_modules takes them."""
    fs_types = {
        (fs.type_name or "other") if fs.type == FsType.OTHER else str(fs.type)
        for fs in storage.filesystems
    }
    kinds = {a.level.lower() for a in storage.raid_arrays}
    if storage.luks_volumes:
        kinds.add("luks")
    if storage.physical_volumes or storage.logical_volumes:
        kinds.add("lvm")
    for lv in storage.logical_volumes:
        t = str(lv.type)
        if t in ("thin", "thin-pool"):
            kinds.add("lvm-thin")
        elif t.startswith("raid"):
            kinds.add("lvm-raid")
        elif t in ("cache", "snapshot", "mirror"):
            kinds.add(f"lvm-{t}")
    return fs_types, kinds


# ---------------------------------------------------------------------------------------
# devices


def _hex(text: str | None) -> int | None:
    try:
        return int(text, 16) if text else None
    except ValueError:
        return None


def _bound(dev: Path) -> tuple[str | None, str | None]:
    """(driver, module) bound to a device; a built-in driver has no module link and
    is reported under its driver name in the kernel's module spelling."""
    driver = link_name(dev / "driver")
    if driver is None:
        return None, None
    module = link_name(dev / "driver" / "module")
    return driver, module or driver.replace("-", "_")


def pci_class(code: int) -> DriverClass:
    base = code >> 16
    if base == PCI_STORAGE:
        return DriverClass.STORAGE
    if base == PCI_NETWORK:
        return DriverClass.NETWORK
    return DriverClass.OTHER


def _driver(
    bus: str,
    address: str,
    cls: DriverClass,
    module: str | None,
    modules: KernelModules,
    *,
    modalias: str | None = None,
    vendor: str | None = None,
    device: str | None = None,
    description: str | None = None,
) -> Driver:
    return Driver(
        id=ids.driver(bus, address),
        device_class=cls,
        bus=bus,
        address=address,
        modalias=modalias,
        vendor=vendor,
        device=device,
        description=description,
        module=module,
        dependencies=modules.dependencies(module) if module else (),
    )


def _devices(sysfs: Path, bus: str) -> list[Path]:
    base = sysfs / "bus" / bus / "devices"
    return [base / n for n in sorted(entries(base))]


@dataclass(frozen=True)
class _Seen:
    """What a device on a bus is, as far as the restored system's drivers go."""

    cls: DriverClass
    description: str | None
    # Where its vendor and device ids are: the device, or a USB interface's device.
    id_dir: Path
    vendor: str = "vendor"
    device: str = "device"


def _pci(dev: Path) -> _Seen | None:
    code = _hex(attribute(dev / "class"))
    if code is None:
        return None
    return _Seen(pci_class(code), PCI_DESCRIPTIONS.get(code >> 8), dev)


def _virtio(dev: Path) -> _Seen | None:
    device_id = _hex(attribute(dev / "device"))
    if device_id is None:
        return None
    cls, description = VIRTIO_DEVICES.get(device_id, (DriverClass.OTHER, None))
    return _Seen(cls, description, dev)


def _usb(dev: Path) -> _Seen | None:
    """USB interfaces that matter for a restore: mass storage, and network adapters."""
    if ":" not in dev.name:
        return None  # a USB device; its interfaces (1-1:1.0) are what drivers bind to
    iclass = _hex(attribute(dev / "bInterfaceClass"))
    if iclass == USB_MASS_STORAGE:
        cls, description = DriverClass.STORAGE, "USB mass storage"
    elif (dev / "net").is_dir():
        cls, description = DriverClass.NETWORK, "USB network adapter"
    else:
        return None
    parent = Path(os.path.realpath(dev)).parent
    return _Seen(cls, description, parent, "idVendor", "idProduct")


# The buses whose devices drivers bind to, and what each device is.
BUSES: dict[str, Callable[[Path], _Seen | None]] = {"pci": _pci, "virtio": _virtio, "usb": _usb}


def bus_drivers(sysfs: Path, bus: str, modules: KernelModules) -> list[Driver]:
    """The devices of a bus that storage or network need, or that a module drives."""
    out = []
    for dev in _devices(sysfs, bus):
        seen = BUSES[bus](dev)
        if seen is None:
            continue
        _, module = _bound(dev)
        if seen.cls == DriverClass.OTHER and module is None:
            continue  # host bridges and the like: nothing to carry over
        out.append(
            _driver(
                bus,
                dev.name,
                seen.cls,
                module,
                modules,
                modalias=attribute(dev / "modalias"),
                vendor=attribute(seen.id_dir / seen.vendor),
                device=attribute(seen.id_dir / seen.device),
                description=seen.description,
            )
        )
    return out


def _controller_of(sysfs: Path, real: Path) -> tuple[str, str] | None:
    """(bus, address) of the PCI/virtio device or USB interface at or above a sysfs dir."""
    devices = os.path.realpath(sysfs / "devices")
    cur = Path(real)
    fallback: tuple[str, str] | None = None
    while str(cur).startswith(devices + "/"):
        subsystem = link_name(cur / "subsystem")
        if subsystem in ("pci", "virtio"):
            return subsystem, cur.name
        if subsystem == "usb" and ":" in cur.name:
            return "usb", cur.name
        if subsystem == "nvme-subsystem":
            # Native NVMe multipath: the namespace hangs off a virtual subsystem;
            # its controllers (nvme0, ...) are links inside it.
            ctrls = sorted(n for n in entries(cur) if re.fullmatch(r"nvme\d+", n))
            if ctrls:
                cur = Path(os.path.realpath(cur / ctrls[0]))
                continue
        if fallback is None and subsystem == "nvme":
            fallback = ("nvme", cur.name)
        if fallback is None and subsystem == "scsi" and re.fullmatch(r"host\d+", cur.name):
            fallback = ("scsi_host", cur.name)
        cur = cur.parent
    return fallback


def nvme_fabric_drivers(sysfs: Path, modules: KernelModules) -> list[Driver]:
    """NVMe controllers reached over a fabric: no PCI device stands for them."""
    out = []
    base = sysfs / "class" / "nvme"
    for name in sorted(entries(base)):
        transport = attribute(base / name / "transport")
        if transport is None or transport == "pcie":
            continue
        out.append(
            _driver(
                "nvme",
                name,
                DriverClass.STORAGE,
                NVME_FABRICS.get(transport),
                modules,
                description=f"NVMe over {transport}",
            )
        )
    return out


def scsi_host_drivers(sysfs: Path, modules: KernelModules) -> list[Driver]:
    """SCSI hosts that hang off no PCI/virtio/USB device (iSCSI, software hosts)."""
    out = []
    base = sysfs / "class" / "scsi_host"
    for name in sorted(entries(base)):
        real = Path(os.path.realpath(base / name))
        found = _controller_of(sysfs, real)
        if found is not None and found[0] != "scsi_host":
            continue
        proc_name = attribute(base / name / "proc_name")
        out.append(
            _driver(
                "scsi_host",
                name,
                DriverClass.STORAGE,
                proc_name.replace("-", "_") if proc_name else None,
                modules,
                description="SCSI host",
            )
        )
    return out


def probe_drivers(
    storage: StorageState | None = None,
    *,
    sysfs: Path = SYSFS,
    modules: KernelModules | None = None,
    warnings: list[str] | None = None,
) -> list[Driver]:
    """Every storage and network controller, then other bound devices; each with its module.

    modules: the running kernel's index (the default): the devices are this
    machine's. With storage, each of its disks is checked to hang off a listed
    controller; one that does not is reported, since nothing would tell a recovery
    which driver it needs.
    """
    mods = modules if modules is not None else KernelModules.load()
    if not mods.found:
        _warn(
            warnings,
            f"no modules.dep for kernel {mods.kernel}: driver dependencies are not recorded",
        )
    found = [
        *(d for bus in BUSES for d in bus_drivers(sysfs, bus, mods)),
        *nvme_fabric_drivers(sysfs, mods),
        *scsi_host_drivers(sysfs, mods),
    ]
    if storage is not None:
        listed = {d.id for d in found}
        for disk in storage.disks:
            kname = storage.knames.get(disk.id) or os.path.basename(disk.path)
            if disk_controller(kname, sysfs) not in listed:
                _warn(
                    warnings,
                    f"{disk.path}: no controller found for it in {sysfs}; the "
                    "description names no driver for this disk",
                )
    # Stable: within a class, in the order of the buses above and their addresses.
    return sorted(found, key=lambda d: CLASS_ORDER[d.device_class])


def _warn(warnings: list[str] | None, message: str) -> None:
    if warnings is None:
        log.warning("%s", message)
    else:
        warnings.append(message)


def disk_controller(kname: str, sysfs: Path = SYSFS) -> str | None:
    """The Driver id of the controller a block device hangs off, or None for virtual ones.

    A partition answers for its disk. dm, md, loop and zram devices have no
    controller of their own (their members do).
    """
    block = sysfs / "class" / "block" / kname
    if not os.path.lexists(block):
        return None
    real = Path(os.path.realpath(block))
    if (real / "partition").exists():
        real = real.parent
    if not (real / "device").exists():
        return None
    found = _controller_of(sysfs, Path(os.path.realpath(real / "device")))
    return ids.driver(*found) if found else None
