"""A description as a person reads it: each disk a tree of what is built on it."""

from __future__ import annotations

from collections.abc import Iterator

from resurgo import parttypes
from resurgo.model import (
    Description,
    Disk,
    Filesystem,
    Link,
    LogicalVolume,
    LuksVolume,
    Partition,
    PhysicalVolume,
    RaidArray,
    Rehearsal,
    Swap,
    VolumeGroup,
    devices_below,
    references,
)
from resurgo.units import human

Node = (
    Partition
    | RaidArray
    | LuksVolume
    | PhysicalVolume
    | VolumeGroup
    | LogicalVolume
    | Filesystem
    | Swap
)


class _Tree:
    def __init__(self, desc: Description) -> None:
        self.desc = desc
        self.children: dict[str, list[Node]] = {}
        self.fs_ids_boot = {desc.system.boot_volume}
        by_id = {rec.id: (group, rec) for group, _, rec in desc.records()}
        first_pv: dict[str, str] = {}
        ordered = sorted(desc.partitions, key=lambda p: (p.start, p.number))
        for rec in [*ordered, *(r for g, _, r in desc.records() if g != "partitions")]:
            parents = devices_below(rec)
            if isinstance(rec, LogicalVolume) and not parents:
                parents = [rec.volume_group]
            for parent in parents:
                assert isinstance(rec, Node), f"{type(rec).__name__} missing from Node"
                self._add(parent, rec)
            # A record made of others (a volume group) sits under the first of them.
            for r in references(rec):
                group, held = by_id.get(r.target, ("", None))
                if r.ref.link == Link.HOLDS and group in r.ref.groups and r.target not in first_pv:
                    assert isinstance(held, Node), f"{type(held).__name__} missing from Node"
                    first_pv[r.target] = rec.id
                    self._add(rec.id, held)
        self.first_pv = first_pv
        self.swap_files = [sw for sw in desc.swaps if sw.file is not None]

    def _add(self, parent: str, node: Node) -> None:
        self.children.setdefault(parent, []).append(node)

    def lines(self, parent: str, prefix: str) -> Iterator[str]:
        kids = self.children.get(parent, [])
        for n, node in enumerate(kids):
            last = n == len(kids) - 1
            yield prefix + ("└─ " if last else "├─ ") + self.label(node)
            if isinstance(node, PhysicalVolume) and self.first_pv.get(node.volume_group) != node.id:
                continue
            yield from self.lines(node.id, prefix + ("   " if last else "│  "))

    def label(self, node: Node) -> str:
        s = self.desc.system
        if isinstance(node, Partition):
            size = human(node.size * node.sector_size)
            bits = [f"{node.number}", size, parttypes.name(node.type)]
            if node.kind != "primary":
                bits.append(node.kind)
            if node.name:
                bits.append(f"name {node.name!r}")
            if node.bootable:
                bits.append("bootable")
            return "partition " + "  ".join(bits) + f"  ({node.path or node.id})"
        if isinstance(node, RaidArray):
            return (
                f"md {node.level} {node.path} {human(node.size)}  metadata {node.metadata}"
                f"  {len(node.members)} member(s)"
            )
        if isinstance(node, LuksVolume):
            return f"LUKS{node.version} {node.cipher} {node.key_size}-bit  uuid {node.uuid}"
        if isinstance(node, PhysicalVolume):
            return f"LVM physical volume {human(node.size)} of {node.volume_group}"
        if isinstance(node, VolumeGroup):
            return f"volume group {node.name} {human(node.size)}  extent {human(node.extent_size)}"
        if isinstance(node, LogicalVolume):
            return f"logical volume {node.name} {human(node.size)} {node.type}"
        if isinstance(node, Swap):
            return f"swap {human(node.size)}" + (f"  label {node.label!r}" if node.label else "")
        roles = []
        if node.id == s.system_volume:
            roles.append("SYSTEM VOLUME")
        if node.id == s.boot_volume:
            roles.append("BOOT VOLUME")
        if node.id == s.esp:
            roles.append("ESP")
        where = ", ".join(m.mountpoint for m in node.mounts) or "not mounted"
        text = f"{node.type_name or node.type}  {where}"
        if node.label:
            text += f"  label {node.label!r}"
        if node.state is not None and node.state.used_bytes is not None:
            text += f"  {human(node.state.used_bytes)} used of {human(node.state.total_bytes)}"
        if not node.supported:
            text += "  (UNSUPPORTED)"
        if roles:
            text += "  [" + ", ".join(roles) + "]"
        return text


def render(desc: Description) -> str:
    s = desc.system
    out = [
        f"{s.hostname}: {s.os_release.pretty_name or s.os_release.id}, kernel {s.kernel}, "
        f"{s.architecture}, {s.firmware.value.upper()} firmware",
        f"described {desc.format.created} by resurgo {desc.format.resurgo} "
        f"(format {desc.format.version})",
        _bootloader(desc),
        "",
    ]
    tree = _Tree(desc)
    for disk in desc.disks:
        out.append(_disk_line(desc, disk))
        out.extend(tree.lines(disk.id, "  "))
        out.append("")
    for sw in tree.swap_files:
        out.append(f"swap file {sw.file}  {human(sw.size)}")
    if desc.removable_devices:
        out.append("removable devices (never written to):")
        for r in desc.removable_devices:
            out.append(f"  {r.path}  {human(r.size)}  {r.model or ''} {r.serial or ''}".rstrip())
        out.append("")
    if desc.unsupported:
        out.append("not fully described:")
        for u in desc.unsupported:
            out.append(f"  {u.path}: {u.kind}: {u.reason}")
        out.append("")
    if desc.drivers:
        out.append("drivers:")
        for d in desc.drivers:
            what = d.description or " ".join(x for x in (d.vendor, d.device) if x)
            out.append(
                f"  {d.device_class:<8} {d.bus}:{d.address}  {d.module or '(no driver)'}"
                + (f"  {what}" if what else "")
            )
        out.append("")
    if desc.commands:
        out.append("restore commands:")
        for c in desc.commands:
            out.append(
                f"  {c.seq:>3}. {c.program} {' '.join(c.args)}  (on failure: {c.on_failure})"
            )
        out.append("")
    if desc.catalog is not None:
        out.append(
            f"catalog: {desc.catalog.files} unchanged files from {desc.catalog.packages} "
            f"{desc.catalog.package_manager} packages ({desc.catalog.path})"
        )
    if desc.config_files:
        out.append("configuration: " + ", ".join(c.path for c in desc.config_files))
    if desc.rehearsal is not None:
        out.append(_rehearsal(desc.rehearsal))
    return "\n".join(out).rstrip() + "\n"


def _rehearsal(rh: Rehearsal) -> str:
    """What save recorded for a rehearsal to check."""
    canary = (f"canary {rh.canary.path} (sha256 {rh.canary.sha256[:16]}...)" if rh.canary
              else "no canary")
    if rh.failed_units is None:
        units = "the units failed at save time are not known"
    elif not rh.failed_units:
        units = "no unit failed at save time"
    else:
        units = "failed at save time: " + ", ".join(rh.failed_units)
    return f"rehearsal: {canary}; {units}"


def _bootloader(desc: Description) -> str:
    bl = desc.system.bootloader
    where: list[str] = []
    paths = {d.id: d.path for d in desc.disks}
    if bl.disks:
        where.append("boot code on " + ", ".join(paths.get(d, d) for d in bl.disks))
    if bl.bios_boot_partition:
        where.append(f"BIOS boot partition {bl.bios_boot_partition}")
    if bl.efi_path:
        where.append(f"loader {bl.efi_path} on the ESP")
    return f"bootloader: {bl.kind}" + (f" ({'; '.join(where)})" if where else "")


def _disk_line(desc: Description, disk: Disk) -> str:
    table = f"{disk.table.label} {disk.table.id}" if disk.table else "no partition table"
    ident = ", ".join(
        f"{k} {v}"
        for k, v in (("wwn", disk.wwn), ("serial", disk.serial), ("model", disk.model))
        if v
    )
    flags = [
        disk.transport or "unknown bus",
        f"{disk.logical_sector_size}/{disk.physical_sector_size} B sectors",
    ]
    if disk.rotational:
        flags.append("rotational")
    if disk.removable:
        flags.append("removable")
    line = f"{disk.path}  {human(disk.size)}  {table}  ({', '.join(flags)})"
    if disk.critical:
        line += "  [critical]"
    if ident:
        line += f"\n  {ident}"
    return line
