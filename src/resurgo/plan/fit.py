"""Fitting the saved layout to the actual disks, in bytes, whatever either disk's sector size.

Per disk:
  1. every partition's saved size is rounded up to the target's sector size and
     raised to what its content needs (distribute.raised);
  2. the partitions are placed keeping the saved gaps, each start aligned to 1 MiB
     (an aligned original keeps its offsets exactly); logical partitions keep at least
     one alignment unit before them for their EBR, the extended partition encloses them;
  3. if the disk is larger, the extra (beyond the saved trailing free space, which is
     kept) grows partitions by the grow policy; if it is smaller, the saved free space
     goes first, then the gaps (the layout is packed), then resizable partitions shrink
     down to what their data needs -- or the disk is too small (a Shortfall);
  4. a resized partition that ends the layout is stretched to the end of the usable area
     (less the kept free space), so no sub-MiB tail is lost.
Above the partitions, sizes pass up: md arrays follow their smallest member, LUKS
payloads are the device less the header, volume groups are the sum of their PVs'
extents, and logical volumes share a group by the same rules as partitions a disk.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from resurgo.model import Disk, LvType, Partition, PartitionKind, VolumeGroup
from resurgo.plan import distribute
from resurgo.plan.distribute import Item, Resized, Shortfall
from resurgo.plan.geometry import (
    ALIGN,
    Geometry,
    align_up,
    geometry,
    minimum_disk_size,
)
from resurgo.plan.layers import Layers, luks_header
from resurgo.plan.model import (
    DiskLayout,
    FittedPartition,
    GrowPolicy,
)
from resurgo.plan.sizes import (
    CREATABLE_LV_TYPES,
    Sizer,
    ceil_to,
    floor_to,
    lv_footprint,
    md_size,
    pv_extents,
)


def partition_path(disk_path: str, number: int) -> str:
    """The kernel's name for partition number of a disk: sda1, but nvme0n1p1 and loop0p1."""
    return f"{disk_path}p{number}" if disk_path[-1:].isdigit() else f"{disk_path}{number}"


@dataclass(frozen=True)
class Placed:
    start: int
    size: int

    @property
    def end(self) -> int:
        return self.start + self.size


def place(
    parts: Sequence[Partition], sizes: Mapping[str, int], geo: Geometry, packed: bool
) -> dict[str, Placed]:
    """Byte positions of the partitions of one disk, in the order of their saved starts.

    Not packed: the saved gap before each partition is kept (so an aligned original
    keeps its offsets); packed: partitions follow each other at the next 1 MiB boundary.
    """
    top = sorted((p for p in parts if p.kind != PartitionKind.LOGICAL), key=lambda p: p.start)
    logicals = sorted((p for p in parts if p.kind == PartitionKind.LOGICAL), key=lambda p: p.start)
    out: dict[str, Placed] = {}
    cursor = 0
    saved_prev_end = 0
    for p in top:
        ss = p.sector_size
        saved_start = p.start * ss
        saved_end = saved_start + p.size * ss
        gap = 0 if packed else max(0, saved_start - saved_prev_end)
        start = align_up(max(cursor + gap, geo.first))
        if p.kind == PartitionKind.EXTENDED:
            end = _place_logicals(p, logicals, sizes, start, geo, packed, out)
        else:
            end = start + sizes[p.id]
        out[p.id] = Placed(start, end - start)
        cursor = end
        saved_prev_end = saved_end
    return out


def _place_logicals(
    ext: Partition,
    logicals: Sequence[Partition],
    sizes: Mapping[str, int],
    start: int,
    geo: Geometry,
    packed: bool,
    out: dict[str, Placed],
) -> int:
    """Place the logical partitions inside an extended one starting at start; returns its end."""
    ss = ext.sector_size
    if not logicals:
        return start + ceil_to(ext.size * ss, geo.sector_size)
    cursor = start
    saved_prev = ext.start * ss
    for lp in logicals:
        saved_start = lp.start * ss
        # The EBR sits before each logical partition: at least one alignment unit for it.
        gap = ALIGN if packed else max(ALIGN, saved_start - saved_prev)
        lstart = align_up(cursor + gap)
        out[lp.id] = Placed(lstart, sizes[lp.id])
        cursor = lstart + sizes[lp.id]
        saved_prev = saved_start + lp.size * ss
    trailing = 0 if packed else max(0, (ext.start + ext.size) * ss - saved_prev)
    return cursor + ceil_to(trailing, geo.sector_size)


def layout_end(placed: Mapping[str, Placed]) -> int:
    return max((p.end for p in placed.values()), default=0)


@dataclass(frozen=True)
class DiskFit:
    disk: str
    # The new layout; None when the disk is too small.
    layout: DiskLayout | None
    # New bytes of each partition (or of the disk itself when it has no table).
    sizes: dict[str, int]
    # The smallest disk (bytes, in the target's sectors) this layout fits on.
    minimum: int
    shortfall: Shortfall | None = None
    items: tuple[Item, ...] = ()


def _items(layers: Layers, sizer: Sizer, parts: Sequence[Partition], tss: int) -> list[Item]:
    out = []
    for p in parts:
        if p.kind == PartitionKind.EXTENDED:
            continue
        out.append(
            Item(
                id=p.id,
                size=ceil_to(p.size * p.sector_size, tss),
                minimum=ceil_to(sizer.need(p.id), tss),
                fixed=sizer.fixed(p.id) or layers.is_bios_boot(p),
                preferred=layers.holds_system(p.id),
            )
        )
    return out


def saved_free_tail(disk: Disk, parts: Sequence[Partition]) -> int:
    """Bytes left free after the last partition on the saved disk."""
    if disk.table is None or not parts:
        return 0
    ss = disk.logical_sector_size
    if disk.table.last_lba is not None:
        end = (disk.table.last_lba + 1) * ss
    else:
        end = geometry(disk.table.label, disk.size, ss).end
    last = max((p.start + p.size) * p.sector_size for p in parts)
    return max(0, end - last)


def minimum_size(layers: Layers, sizer: Sizer, disk: Disk, tss: int) -> int:
    """The smallest disk with tss-byte sectors the saved disk's layout can be fitted to."""
    if disk.table is None:
        return ceil_to(sizer.need(disk.id), tss)
    parts = layers.parts_of.get(disk.id, [])
    items = _items(layers, sizer, parts, tss)
    sizes = distribute.raised(items, ALIGN)
    for it in items:
        sizes[it.id] -= distribute.room(it, sizes[it.id], ALIGN) * ALIGN
    geo = geometry(disk.table.label, max(disk.size, 1 << 40), tss)
    end = layout_end(place(parts, sizes, geo, packed=True))
    return minimum_disk_size(disk.table.label, max(end, geo.first), tss)


def fit_disk(
    layers: Layers,
    sizer: Sizer,
    disk: Disk,
    device: str,
    size: int,
    tss: int,
    policy: GrowPolicy,
) -> DiskFit:
    """The saved disk's layout fitted to a disk of size bytes with tss-byte sectors."""
    low = minimum_size(layers, sizer, disk, tss)
    if disk.table is None:
        return _fit_whole(layers, sizer, disk, device, size, tss, low)
    parts = layers.parts_of.get(disk.id, [])
    geo = geometry(disk.table.label, size, tss)
    items = _items(layers, sizer, parts, tss)
    start_sizes = distribute.raised(items, ALIGN)
    total = sum(start_sizes.values())
    kept_free = ceil_to(saved_free_tail(disk, parts), tss)

    overhead = layout_end(place(parts, start_sizes, geo, packed=False)) - total
    resized = distribute.resize(items, geo.end - overhead, kept_free, policy, ALIGN)
    packed = False
    free_end = geo.end - kept_free
    if resized.shortfall is not None or (resized.changed and not resized.grew):
        packed = True
        free_end = geo.end
        overhead = layout_end(place(parts, start_sizes, geo, packed=True)) - total
        resized = distribute.resize(items, geo.end - overhead, 0, policy, ALIGN)
    if resized.shortfall is not None:
        return DiskFit(disk.id, None, {}, low, resized.shortfall, tuple(items))

    sizes = dict(resized.sizes)
    placed = place(parts, sizes, geo, packed)
    placed = _stretch_last(parts, placed, sizes, resized, free_end)
    end = layout_end(placed)
    if end > geo.end:
        raise AssertionError(f"{disk.id}: layout ends at {end}, beyond {geo.end}")
    fitted = []
    for p in sorted(parts, key=lambda p: p.number):
        pl = placed[p.id]
        if pl.start % tss or pl.size % tss:
            raise AssertionError(f"{p.id}: {pl} is not in whole {tss}-byte sectors")
        fitted.append(
            FittedPartition(
                id=p.id,
                number=p.number,
                kind=p.kind,
                device=partition_path(device, p.number),
                start=pl.start // tss,
                size=pl.size // tss,
                sector_size=tss,
                before_start=p.start * p.sector_size,
                before=p.size * p.sector_size,
                label=layers.label(p.id),
                fixed=p.kind == PartitionKind.EXTENDED
                or sizer.fixed(p.id)
                or layers.is_bios_boot(p),
            )
        )
        if p.kind != PartitionKind.EXTENDED:
            sizes[p.id] = pl.size
    layout = DiskLayout(
        saved=disk.id,
        device=device,
        size=size,
        sector_size=tss,
        before_size=disk.size,
        before_sector_size=disk.logical_sector_size,
        label=disk.table.label,
        table_id=disk.table.id,
        first_lba=geo.first_lba,
        last_lba=geo.last_lba,
        partitions=tuple(fitted),
    )
    return DiskFit(disk.id, layout, sizes, low, None, tuple(items))


def _stretch_last(
    parts: Sequence[Partition],
    placed: dict[str, Placed],
    sizes: dict[str, int],
    resized: Resized,
    free_end: int,
) -> dict[str, Placed]:
    """Let a resized partition that ends the layout reach free_end (whole sectors)."""
    plain = [p for p in parts if p.kind != PartitionKind.EXTENDED]
    if not plain:
        return placed
    last = max(plain, key=lambda p: placed[p.id].end)
    slack = free_end - layout_end(placed)
    if last.id not in resized.changed or slack <= 0:
        return placed
    out = dict(placed)
    out[last.id] = Placed(placed[last.id].start, placed[last.id].size + slack)
    sizes[last.id] += slack
    if last.kind == PartitionKind.LOGICAL:
        for p in parts:
            if p.kind == PartitionKind.EXTENDED:
                out[p.id] = Placed(placed[p.id].start, placed[p.id].size + slack)
    return out


def _fit_whole(
    layers: Layers, sizer: Sizer, disk: Disk, device: str, size: int, tss: int, low: int
) -> DiskFit:
    usable = floor_to(size, tss)
    item = Item(disk.id, disk.size, sizer.need(disk.id), sizer.fixed(disk.id))
    if usable < item.minimum:
        short = Shortfall(item.minimum - usable, 0, (item,))
        return DiskFit(disk.id, None, {}, low, short, (item,))
    layout = DiskLayout(
        saved=disk.id,
        device=device,
        size=size,
        sector_size=tss,
        before_size=disk.size,
        before_sector_size=disk.logical_sector_size,
        label=None,
        table_id=None,
        first_lba=None,
        last_lba=None,
        whole=layers.label(disk.id),
    )
    return DiskFit(disk.id, layout, {disk.id: usable}, low, None, (item,))


# ---------------------------------------------------------------- above the partitions


@dataclass(frozen=True)
class GroupFit:
    vg: VolumeGroup
    capacity: int
    sizes: dict[str, int]
    shortfall: Shortfall | None = None
    items: tuple[Item, ...] = ()


@dataclass
class Stack:
    """New sizes of everything above the partitions, computed on demand."""

    layers: Layers
    sizer: Sizer
    policy: GrowPolicy
    base: dict[str, int]
    groups: dict[str, GroupFit | None] = field(default_factory=dict)

    def after(self, dev: str) -> int | None:
        """The new size of a block device; None when it is not recreated."""
        ly = self.layers
        if dev in self.base:
            return self.base[dev]
        if dev in ly.partitions or dev in ly.disks:
            return None
        if dev in ly.raids:
            md = ly.raids[dev]
            members = [self.after(m) for m in md.members]
            if any(m is None for m in members):
                return None
            return md_size(md, [m for m in members if m is not None])
        if dev in ly.luks:
            lk = ly.luks[dev]
            below = self.after(lk.device)
            return None if below is None else max(0, below - luks_header(lk.version))
        if dev in ly.lvs:
            lv = ly.lvs[dev]
            group = self.group(lv.volume_group)
            if group is None or lv.type not in CREATABLE_LV_TYPES:
                return None
            return group.sizes.get(lv.id, lv.size)
        return None

    def group(self, vg_id: str) -> GroupFit | None:
        if vg_id not in self.groups:
            self.groups[vg_id] = self._fit_group(vg_id)
        return self.groups[vg_id]

    def _fit_group(self, vg_id: str) -> GroupFit | None:
        ly = self.layers
        vg = ly.vgs.get(vg_id)
        pvs = ly.pvs_of.get(vg_id, [])
        if vg is None or not pvs:
            return None
        ext = vg.extent_size
        pv_sizes = [self.after(pv.device) for pv in pvs]
        if any(s is None for s in pv_sizes):
            return None
        capacity = sum(pv_extents(s, ext) for s in pv_sizes if s is not None) * ext
        lvs = ly.lvs_of.get(vg_id, [])
        other = sum(lv_footprint(lv, lv.size, ext) for lv in lvs if lv.type != LvType.LINEAR)
        items = [
            Item(
                id=lv.id,
                size=ceil_to(lv.size, ext),
                minimum=ceil_to(self.sizer.need(lv.id), ext),
                fixed=self.sizer.fixed(lv.id),
                preferred=ly.holds_system(lv.id),
            )
            for lv in lvs
            if lv.type == LvType.LINEAR
        ]
        saved_used = sum(it.size for it in items) + other
        kept_free = max(0, floor_to(vg.size, ext) - saved_used)
        resized = distribute.resize(items, capacity - other, kept_free, self.policy, ext)
        return GroupFit(vg, capacity, dict(resized.sizes), resized.shortfall, tuple(items))
