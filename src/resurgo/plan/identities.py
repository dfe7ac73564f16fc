"""Saved identities against the disks a recovery leaves alone: keep, make anew, or refuse.

The source disks may still be attached (a migration off a failing disk, a rehearsal on
the same host): every identity the recreated layout would carry again (filesystem, swap
and LUKS UUIDs, a btrfs's fsid, PV UUIDs and VG names, md array UUIDs, PARTUUIDs, disk
GUIDs) is looked for on the disks outside the targets, as probe.seen read them. Before
anything is written, each one seen there is decided:

  - btrfs fsid, PV UUID, md array UUID: made anew. mkfs.btrfs refuses a UUID another
    device shows (and the kernel would take both for devices of one filesystem); LVM
    would see two PVs of one UUID and may use the old one; assembling by UUID would take
    the old members for the new array's. finalize rewrites what names them (fstab,
    crypttab, mdadm.conf, the kernel command line, GRUB).
  - XFS UUID: kept; the recovery mounts it with nouuid (the kernel refuses to mount an
    XFS whose UUID a mounted one has).
  - ext, FAT, swap and LUKS UUIDs, PARTUUIDs, disk GUIDs: kept (nothing refuses them, and
    the recovery names devices by path); a warning says the restored system must not boot
    while both are attached.
  - a VG name: kept; the recovery's LVM commands see the target's PVs alone (apply).
  - a name the recovery must create that is in use outside the targets: an active VG of
    the same name, an open device-mapper device of a LUKS volume's name, an assembled md
    array at the saved array's device: a failing precondition naming the fix.

With new_identities every identity is made anew (a VG keeps its name). New values are
derived from the saved value, the target disks and the machine (its DMI product UUID),
not drawn at random: the plan, and its hash, come out the same each time it is computed
for the same disks on the same machine.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from resurgo.machine import ActualDisk, SeenKind
from resurgo.model import Description, FsType
from resurgo.plan.actions import luks_name
from resurgo.plan.layers import Layers
from resurgo.plan.model import Check, IdentityDecision, IdentityKind, PreconditionFailure

# Which seen identities a saved one of each kind collides with: the filesystem, swap and
# LUKS UUIDs share /dev/disk/by-uuid and fstab's UUID=.
_BY_UUID = (SeenKind.FILESYSTEM, SeenKind.SWAP, SeenKind.LUKS)
COLLIDES: Mapping[IdentityKind, tuple[SeenKind, ...]] = {
    IdentityKind.FILESYSTEM: _BY_UUID,
    IdentityKind.SWAP: _BY_UUID,
    IdentityKind.LUKS: _BY_UUID,
    IdentityKind.PV: (SeenKind.PV,),
    IdentityKind.VG: (SeenKind.VG,),
    IdentityKind.MD: (SeenKind.MD,),
    IdentityKind.PARTITION: (SeenKind.PARTITION,),
    IdentityKind.TABLE: (SeenKind.TABLE,),
}


@dataclass(frozen=True)
class Saved:
    """One identity the plan would recreate."""

    record: str
    kind: IdentityKind
    value: str
    # For a filesystem: its type (the rules differ).
    fs_type: FsType | None = None


@dataclass(frozen=True)
class Decided:
    decisions: tuple[IdentityDecision, ...]
    warnings: tuple[str, ...]
    # XFS filesystems kept with a UUID seen elsewhere: mounted with nouuid.
    nouuid: frozenset[str]

    def new_values(self) -> dict[tuple[IdentityKind, str], str]:
        return {(d.kind, d.record): d.new for d in self.decisions if not d.kept}


def norm(kind: IdentityKind | SeenKind, value: str) -> str:
    """Compare values however they are spelt: case, dashes, mdadm's colons (a VG name is
    compared as it is)."""
    if kind in (IdentityKind.VG, SeenKind.VG):
        return value
    v = re.sub(r"[-:]", "", value).lower()
    return v.removeprefix("0x")


def saved_identities(layers: Layers, matched: Iterable[str]) -> list[Saved]:
    """The identities of what is recreated on the matched saved disks."""
    on = set(matched)
    desc = layers.desc

    def recreated(device: str) -> bool:
        under = layers.disks_under(device)
        return bool(under) and under <= on

    out: list[Saved] = []
    for d in desc.disks:
        if d.id in on and d.table is not None and d.table.id:
            out.append(Saved(d.id, IdentityKind.TABLE, d.table.id))
    for p in desc.partitions:
        if p.disk in on and p.uuid:
            out.append(Saved(p.id, IdentityKind.PARTITION, p.uuid))
    for md in desc.raid_arrays:
        if recreated(md.id):
            out.append(Saved(md.id, IdentityKind.MD, md.uuid))
    for lk in desc.luks_volumes:
        if recreated(lk.id):
            out.append(Saved(lk.id, IdentityKind.LUKS, lk.uuid))
    for pv in desc.physical_volumes:
        if recreated(pv.device):
            out.append(Saved(pv.id, IdentityKind.PV, pv.uuid))
    for vg in desc.volume_groups:
        disks = layers.vg_disks(vg.id)
        if disks and disks <= on:
            out.append(Saved(vg.id, IdentityKind.VG, vg.name))
    for fs in desc.filesystems:
        value = fs.vfat.volume_id if fs.vfat is not None else fs.uuid
        if fs.supported and value and recreated(fs.device):
            out.append(Saved(fs.id, IdentityKind.FILESYSTEM, value, fs.type))
    for sw in desc.swaps:
        if sw.device is not None and sw.uuid and recreated(sw.device):
            out.append(Saved(sw.id, IdentityKind.SWAP, sw.uuid))
    return out


def decide(
    layers: Layers,
    matched: Mapping[str, ActualDisk],
    actual: Sequence[ActualDisk],
    *,
    new_identities: bool,
    machine: str = "",
) -> Decided:
    """Each saved identity seen outside the targets (or, with new_identities, each one),
    decided as the module docstring says."""
    outside = _outside(matched, actual)
    seen: dict[tuple[SeenKind, str], list[str]] = {}
    for a in outside:
        for s in a.identities:
            seen.setdefault((s.kind, norm(s.kind, s.value)), []).append(s.device)
    salt = "\0".join([
        *(f"{sid}={a.path}:{a.size}:{a.wwn or ''}:{a.serial or ''}"
          for sid, a in sorted(matched.items())),
        *([f"machine={machine}"] if machine else []),
    ])

    decisions: list[IdentityDecision] = []
    warnings: list[str] = []
    kept: list[str] = []
    nouuid: set[str] = set()
    for sv in saved_identities(layers, matched):
        where = sorted({dev for k in COLLIDES[sv.kind]
                        for dev in seen.get((k, norm(sv.kind, sv.value)), [])})
        label = _name(layers, sv)
        if sv.kind == IdentityKind.VG:
            if where:
                decisions.append(IdentityDecision(
                    sv.record, sv.kind, sv.value, sv.value, tuple(where),
                    "kept: the recovery's LVM commands see the target's physical volumes "
                    "alone"))
                warnings.append(
                    f"{label} also lies on {', '.join(where)}: while both are attached, "
                    f"LVM will not activate {sv.value} by name; rename the old one "
                    "(vgrename with its UUID) or detach its disk before booting the "
                    "restored system")
            continue
        if not where and not new_identities:
            continue
        if where and _must_change(sv):
            why = _why_new(sv)
        elif new_identities:
            why = "new: --new-identities"
        else:
            why = "kept: nothing refuses a duplicate, and the recovery names devices by path"
            if sv.kind == IdentityKind.FILESYSTEM and sv.fs_type == FsType.XFS:
                why = ("kept: mounted with nouuid during the recovery (the kernel refuses an "
                       "XFS whose UUID a mounted one has)")
                nouuid.add(sv.record)
            decisions.append(IdentityDecision(sv.record, sv.kind, sv.value, sv.value,
                                              tuple(where), why))
            kept.append(label)
            continue
        new = derive(sv.kind, sv.value, f"{sv.kind}\0{sv.record}\0{sv.value}\0{salt}")
        decisions.append(IdentityDecision(sv.record, sv.kind, sv.value, new, tuple(where), why))

    if kept:
        shown = {dev for d in decisions if d.kept and d.kind != IdentityKind.VG
                 for dev in d.seen_on}
        warnings.insert(0, (
            f"{len(kept)} saved identities are kept although disks left alone show them too "
            f"({', '.join(sorted(shown))}; listed under identities: {', '.join(kept)}): do "
            "not boot the restored system while both are attached, or recover with "
            "--new-identities"))
    return Decided(tuple(decisions), tuple(warnings), frozenset(nouuid))


def _name(layers: Layers, sv: Saved) -> str:
    if sv.kind == IdentityKind.VG:
        return f"volume group {sv.value}"
    fs = layers.filesystems.get(sv.record)
    if fs is not None:
        where = ", ".join(m.mountpoint for m in fs.mounts)
        return f"{sv.record} ({fs.type}{' on ' + where if where else ''})"
    return sv.record


def _must_change(sv: Saved) -> bool:
    if sv.kind in (IdentityKind.PV, IdentityKind.MD):
        return True
    return sv.kind == IdentityKind.FILESYSTEM and sv.fs_type == FsType.BTRFS


def _why_new(sv: Saved) -> str:
    if sv.kind == IdentityKind.PV:
        return ("new: LVM would see two physical volumes of one UUID and may use the old "
                "one")
    if sv.kind == IdentityKind.MD:
        return ("new: assembling by UUID would take the old members for the new array's; "
                "mdadm.conf and the kernel command line are rewritten")
    return ("new: mkfs.btrfs refuses a UUID another device shows, and the kernel would "
            "take both for devices of one filesystem; what names it is rewritten")


def _outside(matched: Mapping[str, ActualDisk], actual: Sequence[ActualDisk]) -> list[ActualDisk]:
    targets = {a.path for a in matched.values()}
    return [a for a in actual if a.path not in targets]


def in_use(layers: Layers, matched: Mapping[str, ActualDisk],
           actual: Sequence[ActualDisk]) -> list[PreconditionFailure]:
    """The names the recovery must create (layers: with the identities it gives) that a
    disk outside the targets uses now: an active volume group, an open device-mapper
    device, an assembled md array."""
    active: dict[tuple[SeenKind, str], set[str]] = {}
    for a in _outside(matched, actual):
        for s in a.identities:
            if s.kind in (SeenKind.ACTIVE_DM, SeenKind.ACTIVE_MD, SeenKind.ACTIVE_VG):
                active.setdefault((s.kind, s.value), set()).add(a.path)
    recreated = saved_identities(layers, matched)
    made = {(sv.kind, sv.record) for sv in recreated}
    out = []
    for sv in recreated:
        if sv.kind != IdentityKind.VG:
            continue
        disks = active.get((SeenKind.ACTIVE_VG, sv.value))
        if disks:
            out.append(PreconditionFailure(
                Check.IDENTITY_IN_USE, sv.record,
                f"a volume group named {sv.value} is active on {', '.join(sorted(disks))}: "
                "the recovery cannot create another beside it",
                f"deactivate it (vgchange --activate n {sv.value}), rename it (vgrename), "
                "or detach its disk"))
    for lk in layers.desc.luks_volumes:
        if (IdentityKind.LUKS, lk.id) not in made:
            continue
        name = luks_name(layers, lk.id)
        disks = active.get((SeenKind.ACTIVE_DM, name))
        if disks:
            out.append(PreconditionFailure(
                Check.IDENTITY_IN_USE, lk.id,
                f"/dev/mapper/{name}, the name {lk.id} is opened as, is in use on "
                f"{', '.join(sorted(disks))}",
                f"close it (cryptsetup close {name}) or detach its disk"))
    for md in layers.desc.raid_arrays:
        if (IdentityKind.MD, md.id) not in made:
            continue
        disks = active.get((SeenKind.ACTIVE_MD, md.path))
        if disks:
            out.append(PreconditionFailure(
                Check.IDENTITY_IN_USE, md.id,
                f"{md.path}, where {md.id} is created, is an array assembled from "
                f"{', '.join(sorted(disks))}",
                f"stop it (mdadm --stop {md.path}) or detach its disks"))
    return out


# ---------------------------------------------------------------- new values

_LVM_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def derive(kind: IdentityKind, saved: str, seed: str) -> str:
    """A new value of the kind and spelling of saved, from seed (the same each time)."""
    digest = hashlib.sha256(b"resurgo new identity\0" + seed.encode()).digest()
    if kind == IdentityKind.PV:
        chars = "".join(_LVM_CHARS[b % len(_LVM_CHARS)] for b in digest[:32])
        groups = (6, 4, 4, 4, 4, 4, 6)
        out, at = [], 0
        for g in groups:
            out.append(chars[at:at + g])
            at += g
        return "-".join(out)
    if kind == IdentityKind.TABLE and saved.lower().startswith("0x"):
        return f"0x{int.from_bytes(digest[:4], 'big') | 1:08x}"
    if kind == IdentityKind.FILESYSTEM and re.fullmatch(r"[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}", saved):
        h = digest[:4].hex().upper()
        return f"{h[:4]}-{h[4:]}"
    value = str(uuid.UUID(bytes=digest[:16], version=4))
    if kind == IdentityKind.MD and ":" in saved:
        hexes = value.replace("-", "")
        value = ":".join(hexes[i:i + 8] for i in range(0, 32, 8))
    return value.upper() if saved.isupper() else value


def applied(desc: Description, values: Mapping[tuple[IdentityKind, str], str]) -> Description:
    """desc with the new identities in place of the saved ones."""
    if not values:
        return desc

    def new(kind: IdentityKind, record: str, old: str) -> str:
        return values.get((kind, record), old)

    disks = tuple(
        replace(d, table=replace(d.table, id=new(IdentityKind.TABLE, d.id, d.table.id)))
        if d.table is not None else d
        for d in desc.disks
    )
    parts = tuple(
        replace(p, uuid=new(IdentityKind.PARTITION, p.id, p.uuid)) if p.uuid else p
        for p in desc.partitions
    )
    mds = tuple(replace(m, uuid=new(IdentityKind.MD, m.id, m.uuid)) for m in desc.raid_arrays)
    luks = tuple(replace(v, uuid=new(IdentityKind.LUKS, v.id, v.uuid))
                 for v in desc.luks_volumes)
    pvs = tuple(replace(v, uuid=new(IdentityKind.PV, v.id, v.uuid))
                for v in desc.physical_volumes)
    fss = []
    for fs in desc.filesystems:
        key = (IdentityKind.FILESYSTEM, fs.id)
        if key in values:
            if fs.vfat is not None:
                fs = replace(fs, vfat=replace(fs.vfat, volume_id=values[key]),
                             uuid=values[key] if fs.uuid else None)
            else:
                fs = replace(fs, uuid=values[key])
        fss.append(fs)
    swaps = tuple(replace(s, uuid=new(IdentityKind.SWAP, s.id, s.uuid)) if s.uuid else s
                  for s in desc.swaps)
    return replace(desc, disks=disks, partitions=parts, raid_arrays=mds, luks_volumes=luks,
                   physical_volumes=pvs, filesystems=tuple(fss), swaps=swaps)
