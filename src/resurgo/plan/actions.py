"""The actions that recreate the layout, with their dependencies, in one deterministic order.

Each action carries everything its tool needs (device paths on the target, UUIDs,
labels, sizes in the target's sectors or extents, mkfs options), so an executor never
looks back into the description; and the saved record id it recreates, so it can
check what is really on the disks before and after.
"""

from __future__ import annotations

import graphlib
import heapq
import posixpath
from collections.abc import Mapping

from resurgo.machine import ActualDisk
from resurgo.model import FsType, LvType, Partition, TableLabel
from resurgo.plan import filesystems
from resurgo.plan.fit import Stack
from resurgo.plan.layers import Layers
from resurgo.plan.model import (
    Action,
    ActionKind,
    DiskLayout,
    LuksFormatParams,
    LuksOpenParams,
    LvParams,
    MdParams,
    MkfsParams,
    MkswapParams,
    MountParams,
    Params,
    PvParams,
    SubvolumeDefaultParams,
    SubvolumeParams,
    TableEntry,
    TableParams,
    VgParams,
    WipeParams,
)
from resurgo.plan.sizes import CREATABLE_LV_TYPES, Sizer, ceil_to, pv_extents

KIND_RANK = {k: i for i, k in enumerate(ActionKind)}


def luks_name(layers: Layers, luks_id: str) -> str:
    lk = layers.luks[luks_id]
    return lk.name or f"luks-{lk.uuid}"


def mapper_name(vg: str, lv: str) -> str:
    """device-mapper's name of an LV: dashes inside the names are doubled."""
    return f"{vg.replace('-', '--')}-{lv.replace('-', '--')}"


class Builder:
    def __init__(
        self,
        layers: Layers,
        sizer: Sizer,
        stack: Stack,
        matches: Mapping[str, ActualDisk],
        layouts: Mapping[str, DiskLayout],
        root: str,
        nouuid: frozenset[str] = frozenset(),
    ) -> None:
        self.layers = layers
        self.sizer = sizer
        self.stack = stack
        self.matches = matches
        self.layouts = layouts
        self.root = root
        # XFS filesystems whose UUID a disk outside the targets shows: mounted with nouuid.
        self.nouuid = nouuid
        self.actions: list[Action] = []
        self.warnings: list[str] = []
        self.fitted = {p.id: p for lay in layouts.values() for p in lay.partitions}

    # ---------------------------------------------------------------- devices

    def planned(self, dev: str) -> bool:
        return self.stack.after(dev) is not None

    def path(self, dev: str) -> str:
        ly = self.layers
        if dev in ly.disks:
            return self.matches[dev].path
        if dev in self.fitted:
            return self.fitted[dev].device
        if dev in ly.raids:
            return ly.raids[dev].path
        if dev in ly.luks:
            return f"/dev/mapper/{luks_name(ly, dev)}"
        if dev in ly.lvs:
            lv = ly.lvs[dev]
            return f"/dev/mapper/{mapper_name(ly.vgs[lv.volume_group].name, lv.name)}"
        raise KeyError(dev)

    def made_by(self, dev: str) -> str:
        """The id of the action after which the device exists."""
        ly = self.layers
        if dev in ly.disks:
            disk = ly.disks[dev]
            return (
                f"{ActionKind.PARTITION_TABLE}:{dev}" if disk.table else f"{ActionKind.WIPE}:{dev}"
            )
        if dev in ly.partitions:
            return f"{ActionKind.PARTITION_TABLE}:{ly.partitions[dev].disk}"
        if dev in ly.raids:
            return f"{ActionKind.MD_CREATE}:{dev}"
        if dev in ly.luks:
            return f"{ActionKind.LUKS_OPEN}:{dev}"
        return f"{ActionKind.LV_CREATE}:{dev}"

    def writes(self, *devs: str) -> tuple[str, ...]:
        disks: set[str] = set()
        for d in devs:
            disks |= self.layers.disks_under(d)
        return tuple(sorted(self.matches[d].path for d in disks if d in self.matches))

    def add(
        self,
        subject: str,
        params: Params,
        writes: tuple[str, ...],
        depends: list[str],
        summary: str,
        before: int | None = None,
        after: int | None = None,
    ) -> str:
        aid = f"{params.kind}:{subject}"
        self.actions.append(
            Action(
                id=aid,
                writes=writes,
                params=params,
                depends_on=tuple(sorted(set(depends))),
                before=before,
                after=after,
                summary=summary,
            )
        )
        return aid

    # ---------------------------------------------------------------- the layers

    def build(self) -> list[Action]:
        for disk_id in sorted(self.layouts):
            self.disk(disk_id)
        for md in self.layers.desc.raid_arrays:
            if self.planned(md.id):
                self.md(md.id)
        for lk in self.layers.desc.luks_volumes:
            if self.planned(lk.id):
                self.luks(lk.id)
        for vg in self.layers.desc.volume_groups:
            if self.stack.group(vg.id) is not None:
                self.lvm(vg.id)
        for fs in self.layers.desc.filesystems:
            if self.planned(fs.device):
                self.mkfs(fs.id)
        for sw in self.layers.desc.swaps:
            if sw.device is not None and self.planned(sw.device):
                self.mkswap(sw.id)
        self.mounts()
        return order(self.actions)

    def disk(self, disk_id: str) -> None:
        lay = self.layouts[disk_id]
        actual = self.matches[disk_id]
        wipe = self.add(
            disk_id,
            WipeParams(disk=disk_id, device=actual.path),
            (actual.path,),
            [],
            f"erase every signature on {actual.path}",
        )
        disk = self.layers.disks[disk_id]
        if disk.table is None or lay.label is None:
            return
        parts: dict[str, Partition] = self.layers.partitions
        entries = tuple(
            TableEntry(
                partition=fp.id,
                number=fp.number,
                kind=fp.kind,
                start=fp.start,
                size=fp.size,
                type=parts[fp.id].type,
                device=fp.device,
                uuid=parts[fp.id].uuid,
                name=parts[fp.id].name,
                attrs=parts[fp.id].attrs,
                bootable=parts[fp.id].bootable,
            )
            for fp in sorted(lay.partitions, key=lambda fp: fp.number)
        )
        self.add(
            disk_id,
            TableParams(
                disk=disk_id,
                device=actual.path,
                label=lay.label,
                id=disk.table.id,
                sector_size=lay.sector_size,
                first_lba=lay.first_lba or 0,
                last_lba=lay.last_lba or 0,
                partitions=entries,
            ),
            (actual.path,),
            [wipe],
            f"write a {lay.label} table with {len(entries)} partition(s) on {actual.path}",
        )

    def md(self, md_id: str) -> None:
        md = self.layers.raids[md_id]
        members = [m for m in md.members]
        spares = [s for s in md.spares if self.planned(s)]
        self.add(
            md_id,
            MdParams(
                array=md_id,
                device=md.path,
                level=md.level,
                metadata=md.metadata,
                uuid=md.uuid,
                members=tuple(self.path(m) for m in members),
                spares=tuple(self.path(s) for s in spares),
                name=md.name,
                chunk=md.chunk,
                layout=md.layout,
            ),
            self.writes(*members, *spares),
            [self.made_by(m) for m in (*members, *spares)],
            f"create {md.level} array {md.path} of {len(members)} member(s)",
            before=md.size,
            after=self.stack.after(md_id),
        )

    def luks(self, luks_id: str) -> None:
        lk = self.layers.luks[luks_id]
        fmt = self.add(
            luks_id,
            LuksFormatParams(
                volume=luks_id,
                device=self.path(lk.device),
                version=lk.version,
                uuid=lk.uuid,
                cipher=lk.cipher,
                key_size=lk.key_size,
                pbkdf=lk.pbkdf,
                hash=lk.hash,
                label=lk.label,
                subsystem=lk.subsystem,
                sector_size=lk.sector_size,
            ),
            self.writes(lk.device),
            [self.made_by(lk.device)],
            f"format {self.path(lk.device)} as LUKS{lk.version}",
            before=self.layers.original_size(luks_id),
            after=self.stack.after(luks_id),
        )
        name = luks_name(self.layers, luks_id)
        self.add(
            luks_id,
            LuksOpenParams(
                volume=luks_id,
                device=self.path(lk.device),
                name=name,
                mapped=f"/dev/mapper/{name}",
            ),
            self.writes(lk.device),
            [fmt],
            f"open {self.path(lk.device)} as /dev/mapper/{name}",
        )

    def lvm(self, vg_id: str) -> None:
        ly = self.layers
        group = self.stack.group(vg_id)
        if group is None:
            return
        vg = ly.vgs[vg_id]
        pv_actions = []
        pv_paths = []
        for pv in ly.pvs_of.get(vg_id, []):
            size = self.stack.after(pv.device)
            pv_paths.append(self.path(pv.device))
            pv_actions.append(
                self.add(
                    pv.id,
                    PvParams(
                        pv=pv.id, device=self.path(pv.device), uuid=pv.uuid, volume_group=vg.name
                    ),
                    self.writes(pv.device),
                    [self.made_by(pv.device)],
                    f"make {self.path(pv.device)} an LVM physical volume",
                    before=pv.size,
                    after=None
                    if size is None
                    else pv_extents(size, vg.extent_size) * vg.extent_size,
                )
            )
        vg_action = self.add(
            vg_id,
            VgParams(
                vg=vg_id,
                name=vg.name,
                uuid=vg.uuid,
                extent_size=vg.extent_size,
                devices=tuple(pv_paths),
            ),
            self.writes(*(pv.device for pv in ly.pvs_of.get(vg_id, []))),
            pv_actions,
            f"create volume group {vg.name} on {len(pv_paths)} physical volume(s)",
            before=vg.size,
            after=group.capacity,
        )
        lvs = ly.lvs_of.get(vg_id, [])
        # Pools before the thin volumes in them.
        for lv in sorted(lvs, key=lambda lv: lv.type == LvType.THIN):
            if lv.type not in CREATABLE_LV_TYPES:
                self.warnings.append(
                    f"{lv.id} ({lv.type}) is not recreated: resurgo recreates linear, striped, "
                    "raid, mirror and thin volumes"
                )
                continue
            size = self.stack.after(lv.id) or lv.size
            depends = [vg_action]
            pool = ly.lvs.get(lv.pool) if lv.pool else None
            if lv.type == LvType.THIN and pool is not None:
                depends.append(f"{ActionKind.LV_CREATE}:{pool.id}")
            stripes = max((s.stripes for s in lv.segments), default=1)
            stripe_size = next((s.stripe_size for s in lv.segments if s.stripe_size), None)
            ext = vg.extent_size
            self.add(
                lv.id,
                LvParams(
                    lv=lv.id,
                    vg_name=vg.name,
                    name=lv.name,
                    uuid=lv.uuid,
                    type=lv.type,
                    extents=ceil_to(size, ext) // ext,
                    device=self.path(lv.id),
                    stripes=stripes,
                    stripe_size=stripe_size,
                    pool=pool.name if pool is not None else None,
                    virtual_size=lv.size if lv.type == LvType.THIN else None,
                ),
                self.writes(lv.id),
                depends,
                f"create {lv.type} volume {vg.name}/{lv.name}",
                before=lv.size,
                after=size,
            )

    def mkfs(self, fs_id: str) -> None:
        fs = self.layers.filesystems[fs_id]
        if not fs.supported:
            where = ", ".join(m.mountpoint for m in fs.mounts) or "not mounted"
            self.warnings.append(
                f"{fs_id} ({fs.type_name or fs.type}, {where}) is not recreated: resurgo "
                "cannot make that filesystem; its data will not be restored"
            )
            return
        size = self.stack.after(fs.device) or 0
        ss = self.sizer.sector_size(fs.device)
        saved = fs.size or self.layers.original_size(fs.device)
        how = filesystems.recreate(
            fs, size, ss, saved, file_by_file=fs_id in self.layers.restored_by_file
        )
        self.add(
            fs_id,
            MkfsParams(
                filesystem=fs_id,
                device=self.path(fs.device),
                type=fs.type,
                program=how.program,
                options=how.options,
                sector_size=ss,
                uuid=fs.uuid,
                label=fs.label,
            ),
            self.writes(fs.device),
            [self.made_by(fs.device)],
            f"make {fs.type} on {self.path(fs.device)}",
            before=saved,
            after=size,
        )
        subvols = sorted(
            self.layers.subvolumes_of.get(fs_id, []), key=lambda s: (s.path.count("/"), s.path)
        )
        by_subvol_id = {sv.subvol_id: sv for sv in subvols}
        for sv in subvols:
            parent = by_subvol_id.get(sv.parent_id)
            depends = [f"{ActionKind.MKFS}:{fs_id}"]
            if parent is not None:
                depends.append(f"{ActionKind.SUBVOLUME_CREATE}:{parent.id}")
            self.add(
                sv.id,
                SubvolumeParams(
                    subvolume=sv.id,
                    filesystem=fs_id,
                    device=self.path(fs.device),
                    path=sv.path,
                    readonly=sv.readonly,
                ),
                self.writes(fs.device),
                depends,
                f"create btrfs subvolume {sv.path}",
            )
        default = fs.btrfs.default_subvolume if fs.btrfs else 5
        if default != 5 and default in by_subvol_id:
            sv = by_subvol_id[default]
            self.add(
                fs_id,
                SubvolumeDefaultParams(filesystem=fs_id, device=self.path(fs.device), path=sv.path),
                self.writes(fs.device),
                [f"{ActionKind.SUBVOLUME_CREATE}:{sv.id}"],
                f"make {sv.path} the default subvolume",
            )

    def mkswap(self, swap_id: str) -> None:
        sw = next(s for s in self.layers.desc.swaps if s.id == swap_id)
        assert sw.device is not None
        size = self.stack.after(sw.device)
        self.add(
            swap_id,
            MkswapParams(
                swap=swap_id,
                device=self.path(sw.device),
                options=filesystems.mkswap_options(sw),
                uuid=sw.uuid,
                label=sw.label,
            ),
            self.writes(sw.device),
            [self.made_by(sw.device)],
            f"make swap on {self.path(sw.device)}",
            before=sw.size,
            after=size,
        )

    def mounts(self) -> None:
        made = {a.id for a in self.actions}
        seen: dict[str, str] = {}
        entries = []
        for fs in self.layers.desc.filesystems:
            if f"{ActionKind.MKFS}:{fs.id}" not in made:
                continue
            for m in fs.mounts:
                if m.mountpoint in seen:
                    continue
                seen[m.mountpoint] = f"{ActionKind.MOUNT}:{fs.id}:{m.mountpoint}"
                entries.append((fs, m))
        for fs, m in entries:
            depends = [f"{ActionKind.MKFS}:{fs.id}"]
            options: tuple[str, ...] = ()
            if m.subvolume is not None:
                sv = next(s for s in self.layers.desc.subvolumes if s.id == m.subvolume)
                options = (f"subvol={sv.path}",)
                depends.append(f"{ActionKind.SUBVOLUME_CREATE}:{sv.id}")
            elif f"{ActionKind.SUBVOLUME_DEFAULT}:{fs.id}" in made:
                depends.append(f"{ActionKind.SUBVOLUME_DEFAULT}:{fs.id}")
            if fs.type == FsType.VFAT:
                options = _fat_permission_options(m.options)
            if fs.id in self.nouuid:
                options = (*options, "nouuid")
            parent = _parent_mount(m.mountpoint, seen)
            if parent is not None:
                depends.append(parent)
            target = posixpath.normpath(self.root.rstrip("/") + "/" + m.mountpoint.lstrip("/"))
            self.add(
                f"{fs.id}:{m.mountpoint}",
                MountParams(
                    filesystem=fs.id,
                    device=self.path(fs.device),
                    mountpoint=m.mountpoint,
                    target=target,
                    type=str(fs.type),
                    options=options,
                ),
                self.writes(fs.device),
                depends,
                f"mount {self.path(fs.device)} on {target}",
            )


# FAT stores no owners or permissions: the mount options make them up. Restored and
# verified under other options, its files would differ from their manifest.
_FAT_PERMISSION_OPTIONS = ("uid", "gid", "umask", "fmask", "dmask", "allow_utime")


def _fat_permission_options(saved: str) -> tuple[str, ...]:
    return tuple(
        o for o in saved.split(",") if o.split("=", 1)[0] in _FAT_PERMISSION_OPTIONS
    )


def _parent_mount(mountpoint: str, mounts: Mapping[str, str]) -> str | None:
    best: str | None = None
    for mp in mounts:
        if mp == mountpoint:
            continue
        prefix = mp.rstrip("/") + "/"
        if (mp == "/" or mountpoint.startswith(prefix)) and (best is None or len(mp) > len(best)):
            best = mp
    return mounts[best] if best is not None else None


def order(actions: list[Action]) -> list[Action]:
    """Dependency order; among actions ready together, by kind (ActionKind order), then id."""
    by_id = {a.id: a for a in actions}
    ts: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter()
    for a in actions:
        ts.add(a.id, *(d for d in a.depends_on if d in by_id))
    ts.prepare()
    ready: list[tuple[int, str]] = []
    out: list[Action] = []

    def push(ids: tuple[str, ...]) -> None:
        for i in ids:
            heapq.heappush(ready, (KIND_RANK[by_id[i].kind], i))

    push(ts.get_ready())
    while ready:
        _, aid = heapq.heappop(ready)
        out.append(by_id[aid])
        ts.done(aid)
        push(ts.get_ready())
    return out


def sfdisk_script(t: TableParams) -> str:
    """The table as an sfdisk script, in the target's sectors (sfdisk checks the sector size)."""
    lines = [
        f"label: {t.label}",
        f"label-id: {t.id}",
        "unit: sectors",
        f"sector-size: {t.sector_size}",
    ]
    if t.label == TableLabel.GPT:
        lines += [f"first-lba: {t.first_lba}", f"last-lba: {t.last_lba}"]
    lines.append("")
    for e in t.partitions:
        fields = [f"start={e.start}", f"size={e.size}", f"type={e.type}"]
        if t.label == TableLabel.GPT:
            if e.uuid:
                fields.append(f"uuid={e.uuid}")
            if e.name:
                fields.append('name="{}"'.format(e.name.replace("\\", "\\\\").replace('"', '\\"')))
            if e.attrs:
                fields.append(f'attrs="{e.attrs}"')
        elif e.bootable:
            fields.append("bootable")
        lines.append(f"{e.device} : " + ", ".join(fields))
    return "\n".join(lines) + "\n"
