"""How big each block device must be for what it holds, and how sizes pass up the stack.

need():   the smallest size of a device for its content (filesystem data plus margin,
          mkfs minimums, LUKS headers, md superblocks, LVM metadata), recursively;
fixed():  whether the device keeps its saved size when there is more room
          (ESP, separate /boot, BIOS boot, swap, vfat, unknown content);
md_size(), pv_extents(): what a device of a given size gives the layer above.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache

from resurgo.model import (
    Filesystem,
    FsType,
    LogicalVolume,
    LuksVolume,
    LvType,
    PhysicalVolume,
    RaidArray,
    Swap,
    VolumeGroup,
)
from resurgo.plan import filesystems
from resurgo.plan.layers import Layers, luks_header

KIB = 1 << 10
MIB = 1 << 20
# LVM2's default first physical extent: metadata lives before it.
PV_PE_START = MIB
# The space md rounds a member's data area down to when there is no chunk.
MD_ROUNDING = 64 * KIB
# mdadm's chunk when none is given, for the levels that stripe.
MD_DEFAULT_CHUNK = 512 * KIB
# LV types resurgo recreates; the others (snapshots, caches) are left out with a warning.
CREATABLE_LV_TYPES = frozenset(
    {
        LvType.LINEAR,
        LvType.STRIPED,
        LvType.THIN_POOL,
        LvType.THIN,
        LvType.RAID0,
        LvType.RAID1,
        LvType.RAID4,
        LvType.RAID5,
        LvType.RAID6,
        LvType.RAID10,
        LvType.MIRROR,
    }
)


def ceil_to(value: int, unit: int) -> int:
    return -(-value // unit) * unit


def floor_to(value: int, unit: int) -> int:
    return value // unit * unit


# ---------------------------------------------------------------- md


def md_data_offset(metadata: str, device_size: int, chunk: int | None = None) -> int:
    """Bytes of a member that are not data, as mdadm chooses them by default.

    1.1/1.2 put the superblock first and leave ~0.1 % headroom for reshapes (at most
    128 MiB; with a ``chunk`` in bytes, at least two chunks' worth is kept, as mdadm's
    super1 validate_geometry does) plus bitmap space, rounded to 1 MiB; 1.0 and 0.90
    keep it at the end.
    """
    sectors = device_size // 512
    if sectors < 128:
        bitmap = 0
    elif sectors - 128 >= 200 * 1024 * 1024 * 2:
        bitmap = 256
    elif sectors - 8 > 8 * 1024 * 1024 * 2:
        bitmap = 128
    else:
        bitmap = 8
    if metadata in ("0.90", "0.9", "0"):
        return device_size - (floor_to(device_size, 64 * KIB) - 64 * KIB)
    if metadata == "1.0":
        return device_size - (floor_to(device_size, 4 * KIB) - 8 * KIB - 4 * KIB - bitmap * 512)
    headroom = 128 * 1024 * 2
    chunk_sectors = (chunk or 0) // 512
    # Without a chunk (raid1) nothing stops the halving: a 255 MiB member gets a 1 MiB
    # data offset, which the 2 MiB of a chunked array's floor would misjudge.
    while (headroom << 10) > sectors and (
        chunk_sectors == 0 or headroom // 2 >= 2 * chunk_sectors
    ):
        headroom >>= 1
    return ceil_to((24 + bitmap + headroom) * 512, MIB)


def md_chunk(md: RaidArray) -> int | None:
    """The chunk mdadm makes the array with: the saved one, else its default (512 KiB)
    for the levels that stripe."""
    if md.chunk:
        return md.chunk
    level = md.level.lower().removeprefix("raid")
    return MD_DEFAULT_CHUNK if level in ("0", "4", "5", "6", "10") else None


def md_data_members(md: RaidArray) -> int:
    """How many members' worth of data the array holds."""
    n = len(md.members)
    level = md.level.lower().removeprefix("raid")
    if level in ("0", "linear"):
        return n
    if level in ("4", "5"):
        return max(1, n - 1)
    if level == "6":
        return max(1, n - 2)
    if level == "10":
        return max(1, n // 2)
    return 1


def md_member_data(md: RaidArray, member_size: int) -> int:
    unit = max(md.chunk or 0, MD_ROUNDING)
    offset = md_data_offset(md.metadata, member_size, md_chunk(md))
    return max(0, floor_to(member_size - offset, unit))


def md_size(md: RaidArray, member_sizes: list[int]) -> int:
    """The array size mdadm makes of members of these sizes (its smallest member rules)."""
    if not member_sizes:
        return 0
    data = [md_member_data(md, s) for s in member_sizes]
    level = md.level.lower().removeprefix("raid")
    if level in ("0", "linear"):
        return sum(data)
    return md_data_members(md) * min(data)


def md_member_need(md: RaidArray, array_need: int) -> int:
    unit = max(md.chunk or 0, MD_ROUNDING)
    level = md.level.lower().removeprefix("raid")
    parts = len(md.members) if level in ("0", "linear") else md_data_members(md)
    data = ceil_to(-(-array_need // max(1, parts)), unit)
    size = data
    # The data offset grows with the device; a few rounds settle it.
    for _ in range(4):
        size = data + md_data_offset(md.metadata, size, md_chunk(md))
    while md_member_data(md, size) < data:
        size += MIB
    return size


# ---------------------------------------------------------------- lvm


def pv_extents(device_size: int, extent: int) -> int:
    return max(0, (device_size - PV_PE_START) // extent)


def lv_footprint(lv: LogicalVolume, size: int, extent: int) -> int:
    """Bytes of the group an LV of this size takes: copies, parity and metadata included."""
    if lv.type in (LvType.THIN,) or lv.type not in CREATABLE_LV_TYPES:
        return 0
    base = ceil_to(size, extent)
    stripes = max((s.stripes for s in lv.segments), default=1)
    if lv.type in (LvType.RAID1, LvType.MIRROR, LvType.RAID10):
        images = 2
        return images * base + images * extent
    if lv.type in (LvType.RAID4, LvType.RAID5):
        k = max(stripes, 3)
        return ceil_to(base * k // (k - 1), extent) + k * extent
    if lv.type == LvType.RAID6:
        k = max(stripes, 4)
        return ceil_to(base * k // (k - 2), extent) + k * extent
    if lv.type == LvType.THIN_POOL:
        # Pool metadata (about 0.1 %, at least 4 MiB) and its spare copy.
        meta = ceil_to(max(4 * MIB, size // 1000), extent)
        return base + 2 * meta
    return base


class Sizer:
    """Minimums and fixedness of the devices of a description on disks of given sector sizes."""

    def __init__(self, layers: Layers, sector_sizes: Mapping[str, int]) -> None:
        self.layers = layers
        self.sector_sizes = dict(sector_sizes)
        self.need = cache(self._need)
        self.fixed = cache(self._fixed)

    def sector_size(self, dev: str) -> int:
        """The logical sector size a device will have: the largest of the disks under it."""
        sizes = [
            self.sector_sizes.get(d, self.layers.disks[d].logical_sector_size)
            for d in self.layers.disks_under(dev)
            if d in self.layers.disks
        ]
        out = max(sizes, default=512)
        for lk in self._luks_under(dev):
            if lk.sector_size:
                out = max(out, lk.sector_size)
        return out

    def _luks_under(self, dev: str) -> list[LuksVolume]:
        out: list[LuksVolume] = []
        if dev in self.layers.luks:
            out.append(self.layers.luks[dev])
        for d in self.layers.below(dev):
            out.extend(self._luks_under(d))
        return out

    def _need(self, dev: str) -> int:
        u = self.layers.user(dev)
        saved = self.layers.original_size(dev)
        if dev in self.layers.lvs and self.layers.lvs[dev].type != LvType.LINEAR:
            return saved
        if u is None:
            return saved
        if isinstance(u, Filesystem):
            return filesystems.minimum(u, self.sector_size(dev), saved)
        if isinstance(u, Swap):
            return filesystems.swap_minimum(u)
        if isinstance(u, LuksVolume):
            return luks_header(u.version) + self.need(u.id)
        if isinstance(u, PhysicalVolume):
            return self._pv_need(u)
        return md_member_need(u, self.need(u.id))

    def _fixed(self, dev: str) -> bool:
        u = self.layers.user(dev)
        if dev in self.layers.lvs and self.layers.lvs[dev].type != LvType.LINEAR:
            return True
        if u is None:
            return True
        if isinstance(u, Filesystem):
            return (
                not u.supported
                or u.type in (FsType.VFAT, FsType.OTHER)
                or self.layers.is_esp(u)
                or self.layers.is_separate_boot(u)
            )
        if isinstance(u, Swap):
            return True
        if isinstance(u, LuksVolume | RaidArray):
            return self.fixed(u.id)
        return all(self.fixed(lv.id) for lv in self.layers.lvs_of.get(u.volume_group, []))

    def vg_need(self, vg: VolumeGroup) -> int:
        """Bytes of extents the group's logical volumes need at their smallest."""
        total = 0
        for lv in self.layers.lvs_of.get(vg.id, []):
            size = max(lv.size, self.need(lv.id)) if self.fixed(lv.id) else self.need(lv.id)
            total += lv_footprint(lv, size, vg.extent_size)
        return total

    def _pv_need(self, pv: PhysicalVolume) -> int:
        vg = self.layers.vgs.get(pv.volume_group)
        if vg is None:
            return pv.size
        pvs = self.layers.pvs_of.get(vg.id, [])
        saved_total = sum(p.size for p in pvs) or 1
        # Each PV carries its saved share of what the group needs.
        share = -(-self.vg_need(vg) * pv.size // saved_total)
        return PV_PE_START + ceil_to(share, vg.extent_size)
