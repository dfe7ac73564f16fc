"""Block devices as the kernel shows them in /sys: sizes, identities, transport, stacking.

Everything here reads sysfs (and /dev/disk/by-id when udev made it); no program is run.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from resurgo.errors import BadInput
from resurgo.model import Disk, RemovableDevice
from resurgo.probe import ids, sysfs
from resurgo.sortkeys import natural_key

SYS_CLASS_BLOCK = Path("/sys/class/block")
SYS_DEV_BLOCK = Path("/sys/dev/block")
DEV_BY_ID = Path("/dev/disk/by-id")

# /sys/block sizes are counted in 512-byte units whatever the device's sector size.
SYSFS_SECTOR = 512

# Kernel devices that look like disks but are never the disks of a system to recover.
_NEVER_REMOVABLE = re.compile(r"^(loop|ram|zram|dm-|md|nbd|sr|fd)\d*")


@dataclass(frozen=True)
class BlockDevice:
    """One entry of /sys/class/block: a whole device or a partition."""

    kname: str
    major: int
    minor: int
    size: int
    # The resolved /sys/devices path, which tells the bus the device hangs on.
    syspath: str
    # For a partition: the kernel name of its disk, and its number there.
    parent: str | None = None
    number: int | None = None
    slaves: tuple[str, ...] = ()
    holders: tuple[str, ...] = ()
    removable: bool = False

    @property
    def path(self) -> str:
        return f"/dev/{self.kname}"

    @property
    def is_partition(self) -> bool:
        return self.parent is not None

    @property
    def is_md(self) -> bool:
        return self.kname.startswith("md") and Path(SYS_CLASS_BLOCK, self.kname, "md").is_dir()

    @property
    def is_dm(self) -> bool:
        return self.kname.startswith("dm-")


def _listdir(path: Path) -> tuple[str, ...]:
    return tuple(sorted(sysfs.entries(path), key=natural_key))


def read_device(kname: str, sys_block: Path = SYS_CLASS_BLOCK) -> BlockDevice:
    base = sys_block / kname
    if not base.exists():
        raise BadInput(f"no block device {kname!r} in {sys_block}")
    dev = sysfs.attribute(base / "dev") or "0:0"
    major, _, minor = dev.partition(":")
    syspath = os.path.realpath(base)
    parent = None
    number = None
    if (base / "partition").exists():
        parent = os.path.basename(os.path.dirname(syspath))
        number = sysfs.int_attribute(base / "partition", 0)
    return BlockDevice(
        kname=kname,
        major=int(major),
        minor=int(minor),
        size=sysfs.int_attribute(base / "size", 0) * SYSFS_SECTOR,
        syspath=syspath,
        parent=parent,
        number=number,
        slaves=_listdir(base / "slaves"),
        holders=_listdir(base / "holders"),
        removable=sysfs.int_attribute(base / "removable", 0) == 1,
    )


@dataclass(frozen=True)
class KernelPartition:
    kname: str
    # Bytes from the start of the disk, and length in bytes, as the kernel uses them.
    start: int
    size: int


def partitions_of(disk: str, sys_block: Path = SYS_CLASS_BLOCK) -> dict[int, KernelPartition]:
    """The partitions the kernel knows on a disk, by number."""
    out: dict[int, KernelPartition] = {}
    base = sys_block / disk
    for name in _listdir(base):
        number = sysfs.int_attribute(base / name / "partition", 0)
        if number > 0:
            out[number] = KernelPartition(
                kname=name,
                start=sysfs.int_attribute(base / name / "start", 0) * SYSFS_SECTOR,
                size=sysfs.int_attribute(base / name / "size", 0) * SYSFS_SECTOR,
            )
    return out


def kname_of_devno(major: int, minor: int, sys_dev: Path = SYS_DEV_BLOCK) -> str | None:
    link = sys_dev / f"{major}:{minor}"
    return sysfs.link_name(link)


def kname_of_path(path: str) -> str:
    """The kernel name of the block device a path (or a symlink to it) names."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise BadInput(f"{path}: {e.strerror}") from None
    if not stat.S_ISBLK(st.st_mode):
        raise BadInput(f"{path} is not a block device")
    kname = kname_of_devno(os.major(st.st_rdev), os.minor(st.st_rdev))
    if kname is None:
        raise BadInput(f"{path}: the kernel has no block device {os.major(st.st_rdev)}:"
                       f"{os.minor(st.st_rdev)}")
    return kname


def disks_below(kname: str, sys_block: Path = SYS_CLASS_BLOCK) -> list[str]:
    """The whole disks a device is built on, through partitions, md and device-mapper."""
    out: list[str] = []
    seen: set[str] = set()
    stack = [kname]
    while stack:
        cur = stack.pop()
        if cur in seen:
            continue
        seen.add(cur)
        dev = read_device(cur, sys_block)
        if dev.parent is not None:
            stack.append(dev.parent)
        elif dev.slaves:
            stack.extend(dev.slaves)
        elif cur not in out:
            out.append(cur)
    return sorted(out, key=natural_key)


def transport(syspath: str, kname: str) -> str:
    """The bus a disk hangs on, read from its /sys/devices path.

    The restored system needs the driver of the new bus in its initramfs, so the
    distinction virtio-blk / virtio-scsi / nvme / sata matters more than the detail.
    """
    p = syspath + "/"
    if "/virtual/" in p:
        m = re.match(r"[a-z]+", kname)
        prefix = m.group(0) if m else kname
        return {"dm": "dm", "md": "md"}.get(prefix, prefix)
    if "/usb" in p:
        return "usb"
    if "/nvme" in p:
        return "nvme"
    if "/virtio" in p:
        return "virtio-scsi" if "/host" in p else "virtio"
    if "/mmc_host/" in p or "/mmc" in p:
        return "mmc"
    if re.search(r"/ata\d+/", p):
        return "sata"
    if "/end_device-" in p or "/sas_" in p:
        return "sas"
    if re.search(r"/host\d+/", p):
        return "scsi"
    if "/xen" in p or "/vbd-" in p:
        return "xen"
    return ""


def _vpd_serial(data: bytes) -> str | None:
    # VPD page 0x80: a 4-byte header, then the unit serial number in ASCII.
    if len(data) < 4 or data[1] != 0x80:
        return None
    length = int.from_bytes(data[2:4], "big")
    text = data[4 : 4 + length].decode("ascii", "replace").strip(" \x00")
    return text or None


def _first(base: Path, names: Iterable[str]) -> str | None:
    for name in names:
        text = sysfs.attribute(base / name)
        if text:
            return text
    return None


def serial_of(kname: str, sys_block: Path = SYS_CLASS_BLOCK) -> str | None:
    base = sys_block / kname
    text = _first(base, ("serial", "device/serial"))
    if text:
        return text
    data = sysfs.binary_attribute(base / "device" / "vpd_pg80")
    return _vpd_serial(data) if data is not None else None


def by_id_names(directory: Path = DEV_BY_ID) -> dict[str, str]:
    """kernel name -> the most descriptive /dev/disk/by-id name of each whole disk.

    Names built on the bus and serial (ata-..., nvme-..., usb-...) are preferred to
    wwn-/eui. names, which say nothing a person can read off the disk's label.
    """
    candidates: dict[str, list[str]] = {}
    for name in _listdir(directory):
        if re.search(r"-part\d+$", name):
            continue
        try:
            target = os.path.basename(os.path.realpath(directory / name))
        except OSError:
            continue
        candidates.setdefault(target, []).append(name)

    def rank(name: str) -> tuple[int, str]:
        generic = name.startswith(("wwn-", "nvme-eui.", "nvme-nvme.", "dm-", "md-", "lvm-"))
        return (1 if generic else 0, name)

    return {k: f"{directory}/{min(v, key=rank)}" for k, v in candidates.items()}


def disk_record(
    dev: BlockDevice, by_id: Mapping[str, str], sys_block: Path = SYS_CLASS_BLOCK
) -> Disk:
    base = sys_block / dev.kname
    queue = base / "queue"
    logical = sysfs.int_attribute(queue / "logical_block_size", 512)
    physical = sysfs.int_attribute(queue / "physical_block_size", logical)
    return Disk(
        id=ids.disk(dev.kname),
        path=dev.path,
        size=dev.size,
        logical_sector_size=logical,
        physical_sector_size=max(physical, logical),
        transport=transport(dev.syspath, dev.kname),
        rotational=sysfs.int_attribute(queue / "rotational", 0) == 1,
        removable=dev.removable,
        wwn=_first(base, ("wwid", "device/wwid")),
        serial=serial_of(dev.kname, sys_block),
        model=_first(base, ("device/model", "device/name")),
        by_id=by_id.get(dev.kname),
    )


def removable_devices(
    skip: Iterable[str], by_id: Mapping[str, str], sys_block: Path = SYS_CLASS_BLOCK
) -> list[RemovableDevice]:
    """Removable media present now (USB sticks, card readers), other than the given disks."""
    skipped = set(skip)
    out: list[RemovableDevice] = []
    for kname in _listdir(sys_block):
        if kname in skipped or _NEVER_REMOVABLE.match(kname):
            continue
        base = sys_block / kname
        if (base / "partition").exists() or sysfs.int_attribute(base / "removable", 0) != 1:
            continue
        dev = read_device(kname, sys_block)
        if dev.size == 0:
            continue  # a card reader or drive with no medium in it
        disk = disk_record(dev, by_id, sys_block)
        out.append(
            RemovableDevice(
                id=ids.removable(kname),
                path=dev.path,
                size=dev.size,
                transport=disk.transport,
                wwn=disk.wwn,
                serial=disk.serial,
                model=disk.model,
            )
        )
    return out
