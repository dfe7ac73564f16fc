"""The identities configuration files name devices by, as saved and as they are now.

A restored system's fstab, crypttab, mdadm.conf and kernel command line name their
devices by UUID, PARTUUID, LABEL, a kernel name (/dev/sda2) or a udev link
(/dev/disk/by-id/...). The plan recreates most identities as they were (mkfs -U, sfdisk
with the saved GUIDs); what it could not keep (a FAT volume id, a kernel name on other
hardware, a by-id link naming a disk that is gone) must be rewritten. ``planned`` lists
what the plan says each recreated thing will be; ``probe`` replaces that by what
``blkid -p`` reads on the devices; ``resolve`` decides what one device spec becomes.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum

from resurgo import run
from resurgo.errors import ResurgoError
from resurgo.model import Description, Disk, LogicalVolume, LuksVolume, Partition, RaidArray
from resurgo.plan.model import (
    LuksFormatParams,
    MdParams,
    MkfsParams,
    MkswapParams,
    Plan,
    TableParams,
)
from resurgo.probe import filesystems


class Kind(StrEnum):
    FILESYSTEM = "filesystem"
    SWAP = "swap"
    LUKS = "luks"
    MD = "md"
    PARTITION = "partition"


@dataclass(frozen=True)
class Identity:
    """One recreated thing a configuration file may name."""

    record: str
    kind: Kind
    # Every name the saved system reached the device by: kernel path, by-id links.
    old_paths: tuple[str, ...] = ()
    # The device it lies on now (None: not recreated).
    new_path: str | None = None
    old_uuid: str | None = None
    new_uuid: str | None = None
    old_label: str | None = None
    new_label: str | None = None
    # Of the partition it lies on (or is), when it lies on one.
    old_partuuid: str | None = None
    new_partuuid: str | None = None
    mountpoints: tuple[str, ...] = ()
    # LUKS: the mapping name (crypttab's first field).
    name: str | None = None

    def stable_spec(self) -> str | None:
        """The name that survives new hardware: UUID=, else PARTUUID=, else None."""
        if self.kind in (Kind.FILESYSTEM, Kind.SWAP, Kind.LUKS) and self.new_uuid:
            return f"UUID={self.new_uuid}"
        if self.new_partuuid:
            return f"PARTUUID={self.new_partuuid}"
        return None


@dataclass(frozen=True)
class Identities:
    items: tuple[Identity, ...] = ()
    # udev links (by-id, by-path, ...) that exist now, and the device each resolves to.
    links: Mapping[str, str] = field(default_factory=dict)

    def of_kind(self, kinds: Iterable[Kind]) -> list[Identity]:
        wanted = set(kinds)
        return [i for i in self.items if i.kind in wanted]

    def by_record(self, record: str) -> Identity | None:
        return next((i for i in self.items if i.record == record), None)


# Names a kernel gives devices in probe order: they move when the hardware does.
KERNEL_NAME = re.compile(
    r"/dev/(?:sd[a-z]+|vd[a-z]+|xvd[a-z]+|hd[a-z]+|nvme\d+n\d+|mmcblk\d+|loop\d+)"
    r"(?:p?\d+)?"
)
# udev links derived from the hardware (serial numbers, bus paths).
HARDWARE_LINK = ("/dev/disk/by-id/", "/dev/disk/by-path/")


def is_hardware_name(path: str) -> bool:
    return bool(KERNEL_NAME.fullmatch(path)) or path.startswith(HARDWARE_LINK)


def norm_uuid(value: str) -> str:
    """Compare UUIDs however they are spelt: case, dashes, mdadm's colons."""
    return re.sub(r"[-:]", "", value).lower()


def mapper_path(vg: str, lv: str) -> str:
    """/dev/mapper name of an LV: dashes inside names are doubled."""
    return f"/dev/mapper/{vg.replace('-', '--')}-{lv.replace('-', '--')}"


# ---------------------------------------------------------------------------------------
# what the plan says


def saved_paths(desc: Description, device: str) -> tuple[str, ...]:
    """Every path the saved system reached block device ``device`` (a record id) by."""
    rec = desc.block_devices().get(device)
    disks = {d.id: d for d in desc.disks}
    out: list[str] = []
    if isinstance(rec, Partition):
        if rec.path:
            out.append(rec.path)
        disk = disks.get(rec.disk)
        if disk is not None and disk.by_id:
            out.append(f"{disk.by_id}-part{rec.number}")
    elif isinstance(rec, Disk):
        out.append(rec.path)
        if rec.by_id:
            out.append(rec.by_id)
    elif isinstance(rec, RaidArray):
        out.append(rec.path)
        if rec.name:
            out.append(f"/dev/md/{rec.name.split(':')[-1]}")
    elif isinstance(rec, LuksVolume):
        if rec.name:
            out.append(f"/dev/mapper/{rec.name}")
    elif isinstance(rec, LogicalVolume):
        vgs = {v.id: v.name for v in desc.volume_groups}
        vg = vgs.get(rec.volume_group)
        if rec.path:
            out.append(rec.path)
        if vg:
            out += [f"/dev/{vg}/{rec.name}", mapper_path(vg, rec.name)]
    return tuple(dict.fromkeys(out))


def planned(desc: Description, plan: Plan) -> Identities:
    """What every recreated filesystem, swap, LUKS volume, md array and partition will be
    after the plan ran: its new device, and the identities mkfs and sfdisk were given (the
    saved ones, but those the plan made anew)."""
    parts = {p.id: p for p in desc.partitions}
    renamed = {(str(d.kind), d.record): d.new for d in plan.identities if not d.kept}
    entries = {}
    tables: dict[str, TableParams] = {}
    for a in plan.actions:
        if isinstance(a.params, TableParams):
            tables[a.params.disk] = a.params
            for e in a.params.partitions:
                entries[e.partition] = e
    saved_tables = {d.id: d.table for d in desc.disks if d.table is not None}

    def partuuids(part: Partition) -> tuple[str | None, str | None]:
        """(saved, new) PARTUUID; an MBR partition's is its table's disk id and number."""
        entry = entries.get(part.id)
        new = entry.uuid if entry is not None else None
        saved_table, table = saved_tables.get(part.disk), tables.get(part.disk)
        if part.uuid is None and saved_table is not None and saved_table.label == "dos":
            old = _mbr_partuuid(saved_table.id, part.number)
            new = _mbr_partuuid(table.id, part.number) if table is not None and entry else None
            return old, new
        return part.uuid, new
    made: dict[str, str] = {}
    for a in plan.actions:
        p = a.params
        if isinstance(p, MkfsParams):
            made[p.filesystem] = p.device
        elif isinstance(p, MkswapParams):
            made[p.swap] = p.device
        elif isinstance(p, LuksFormatParams):
            made[p.volume] = p.device
        elif isinstance(p, MdParams):
            made[p.array] = p.device

    def part_ids(device: str) -> tuple[str | None, str | None]:
        if device not in parts:
            return None, None
        return partuuids(parts[device])

    def volume(record: str, kind: Kind, device: str, uuid: str | None, label: str | None,
               mountpoints: tuple[str, ...] = (), name: str | None = None) -> Identity:
        """A filesystem, swap or LUKS volume: made again, it keeps its UUID and label."""
        old_pu, new_pu = part_ids(device)
        again = record in made
        new_uuid = renamed.get((str(kind), record), uuid)
        return Identity(
            record=record,
            kind=kind,
            old_paths=saved_paths(desc, device),
            new_path=made.get(record),
            old_uuid=uuid,
            new_uuid=new_uuid if again else None,
            old_label=label,
            new_label=label if again else None,
            old_partuuid=old_pu,
            new_partuuid=new_pu,
            mountpoints=mountpoints,
            name=name,
        )

    items: list[Identity] = []
    for fs in desc.filesystems:
        # A FAT's UUID is its volume id, which mkfs.vfat -i sets again.
        uuid = fs.uuid or (fs.vfat.volume_id if fs.vfat is not None else None)
        items.append(volume(fs.id, Kind.FILESYSTEM, fs.device, uuid, fs.label,
                            mountpoints=tuple(m.mountpoint for m in fs.mounts)))
    for sw in desc.swaps:
        if sw.device is not None:
            items.append(volume(sw.id, Kind.SWAP, sw.device, sw.uuid, sw.label))
    for lk in desc.luks_volumes:
        items.append(volume(lk.id, Kind.LUKS, lk.device, lk.uuid, lk.label, name=lk.name))
    for md in desc.raid_arrays:
        items.append(
            Identity(
                record=md.id,
                kind=Kind.MD,
                old_paths=saved_paths(desc, md.id),
                new_path=made.get(md.id),
                old_uuid=md.uuid,
                new_uuid=renamed.get((str(Kind.MD), md.id), md.uuid) if md.id in made else None,
                name=md.name,
            )
        )
    for part in desc.partitions:
        entry = entries.get(part.id)
        old_pu, new_pu = partuuids(part)
        items.append(
            Identity(
                record=part.id,
                kind=Kind.PARTITION,
                old_paths=saved_paths(desc, part.id),
                new_path=entry.device if entry is not None else None,
                old_partuuid=old_pu,
                new_partuuid=new_pu,
                old_label=part.name,
                new_label=entry.name if entry is not None else None,
            )
        )
    return Identities(tuple(items))


def _mbr_partuuid(disk_id: str, number: int) -> str | None:
    """The PARTUUID blkid gives an MBR partition: its disk id, a dash, its number (hex)."""
    try:
        return f"{int(disk_id, 16):08x}-{number:02x}"
    except ValueError:
        return None


# ---------------------------------------------------------------------------------------
# what the devices say


Reader = Callable[[str], Mapping[str, str]]


def read_md_uuid(device: str) -> str | None:
    result = run.run(["mdadm", "--detail", "--export", device], check=False)
    if result.returncode != 0:
        return None
    return filesystems.parse_blkid_export(result.stdout).get("MD_UUID")


def probe(
    ids: Identities,
    *,
    blkid: Reader = filesystems.read_blkid,
    md_uuid: Callable[[str], str | None] = read_md_uuid,
    exists: Callable[[str], bool] = os.path.exists,
    warnings: list[str] | None = None,
) -> Identities:
    """The new identities as the devices show them (blkid -p), where the devices exist.

    What cannot be read keeps the plan's value: the report says so.
    """
    out = []
    for ident in ids.items:
        dev = ident.new_path
        if dev is None or not exists(dev):
            out.append(ident)
            continue
        if ident.kind == Kind.MD:
            uuid = md_uuid(dev) if run.which("mdadm") else None
            out.append(replace(ident, new_uuid=uuid or ident.new_uuid))
            continue
        try:
            found = blkid(dev)
        except ResurgoError as e:
            if warnings is not None:
                warnings.append(
                    f"{ident.record}: cannot read {dev} ({e.message}); "
                    "assuming the identities the plan gave it"
                )
            out.append(ident)
            continue
        if not found.get("TYPE") and ident.kind != Kind.PARTITION and warnings is not None:
            warnings.append(
                f"{ident.record}: blkid finds nothing on {dev}; the configuration naming it "
                "is left as it is"
            )
        if ident.kind == Kind.PARTITION:
            out.append(
                replace(ident, new_partuuid=found.get("PART_ENTRY_UUID", ident.new_partuuid))
            )
            continue
        out.append(
            replace(
                ident,
                new_uuid=found.get("UUID"),
                new_label=found.get("LABEL"),
                new_partuuid=found.get("PART_ENTRY_UUID", ident.new_partuuid),
            )
        )
    return Identities(tuple(out), ids.links)


def current_links(ids: Identities, *, sysroot: str = "/") -> dict[str, str]:
    """The saved udev links that exist on this machine now, and what they resolve to."""
    links: dict[str, str] = {}
    for ident in ids.items:
        for path in ident.old_paths:
            if path.startswith("/dev/disk/"):
                here = os.path.join(sysroot, path.lstrip("/"))
                if os.path.exists(here):
                    links[path] = "/" + os.path.relpath(os.path.realpath(here), sysroot)
    return links


# ---------------------------------------------------------------------------------------
# one device spec


@dataclass(frozen=True)
class Resolution:
    """What a device spec becomes: ``spec`` None means it stays as it is."""

    spec: str | None = None
    why: str = ""
    warning: str | None = None


KEEP = Resolution()


def _unquote(value: str) -> tuple[str, str]:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1], value[0]
    return value, ""


def _udev_unescape(value: str) -> str:
    return re.sub(r"\\x([0-9a-fA-F]{2})", lambda m: chr(int(m[1], 16)), value)


def resolve(
    spec: str,
    ids: Identities,
    kinds: Iterable[Kind],
    *,
    mountpoint: str | None = None,
    luks_name: str | None = None,
) -> Resolution:
    """What ``spec`` (UUID=, PARTUUID=, LABEL=, /dev/...) must become on the new machine.

    A UUID, PARTUUID or LABEL that the recreated device no longer has becomes its new
    UUID (or PARTUUID). A kernel name or hardware link that no longer leads to the
    device (another controller, another disk) becomes its UUID. Stable names (LVM,
    /dev/mapper, md) and names of things the description does not know stay as they are.
    mountpoint (fstab) and luks_name (crypttab) identify the device when its old path
    is not in the description.
    """
    wanted = list(kinds)
    cands = ids.of_kind(wanted)
    key, sep, raw = spec.partition("=")
    if sep and key in ("UUID", "PARTUUID", "LABEL", "PARTLABEL"):
        value, _ = _unquote(raw)
        return _by_tag(key, value, cands, prefix=f"{key}=")
    for tag, base in (
        ("UUID", "/dev/disk/by-uuid/"),
        ("PARTUUID", "/dev/disk/by-partuuid/"),
        ("LABEL", "/dev/disk/by-label/"),
        ("PARTLABEL", "/dev/disk/by-partlabel/"),
    ):
        if spec.startswith(base):
            return _by_tag(tag, _udev_unescape(spec[len(base) :]), cands, prefix=base)
    if not spec.startswith("/dev/"):
        return KEEP
    ident = next((i for i in cands if spec in i.old_paths), None)
    if ident is None and is_hardware_name(spec):
        if mountpoint is not None:
            ident = next((i for i in cands if mountpoint in i.mountpoints), None)
        if ident is None and luks_name is not None:
            ident = next((i for i in cands if i.kind == Kind.LUKS and i.name == luks_name), None)
    if ident is None:
        if is_hardware_name(spec):
            return Resolution(
                warning=f"{spec} names a device the description does not know; left as it is"
            )
        return KEEP
    if ident.new_path is None:
        return KEEP
    if spec == ident.new_path or ids.links.get(spec) == ident.new_path:
        return KEEP
    if not is_hardware_name(spec):
        # /dev/mapper/..., /dev/VG/LV, /dev/md...: named by the stack, not the hardware.
        return KEEP
    new = ident.stable_spec() or ident.new_path
    if spec.startswith(HARDWARE_LINK):
        why = f"{spec} does not lead to {ident.record} on this machine"
    else:
        why = f"{ident.record} was {spec} and is now {ident.new_path}"
    if new == ident.new_path:
        why += " (no UUID to name it by: a kernel name, which may move again)"
    return Resolution(spec=new, why=why)


def _by_tag(tag: str, value: str, cands: list[Identity], *, prefix: str) -> Resolution:
    if tag == "PARTLABEL":
        # sfdisk recreates partition names as they were.
        return KEEP
    if tag == "UUID":
        ident = next(
            (i for i in cands if i.old_uuid and norm_uuid(i.old_uuid) == norm_uuid(value)), None
        )
        if ident is None or ident.new_uuid is None:
            return KEEP
        if norm_uuid(ident.new_uuid) == norm_uuid(value):
            return KEEP
        return Resolution(
            spec=prefix + ident.new_uuid,
            why=f"the UUID of {ident.record} changed from {value} to {ident.new_uuid}",
        )
    if tag == "PARTUUID":
        ident = next(
            (i for i in cands if i.old_partuuid and i.old_partuuid.lower() == value.lower()),
            None,
        )
        if ident is None or ident.new_partuuid is None:
            return KEEP
        if ident.new_partuuid.lower() == value.lower():
            return KEEP
        return Resolution(
            spec=prefix + ident.new_partuuid,
            why=f"the PARTUUID of {ident.record} changed from {value} to {ident.new_partuuid}",
        )
    ident = next((i for i in cands if i.old_label == value), None)
    if ident is None or ident.new_path is None or ident.new_label == value:
        return KEEP
    new = ident.stable_spec()
    if new is None:
        return Resolution(warning=f"LABEL={value}: {ident.record} lost its label and has no UUID")
    if prefix.startswith("/dev/disk/"):
        tag_new, _, val = new.partition("=")
        new = f"/dev/disk/by-{tag_new.lower()}/{val}"
    return Resolution(
        spec=new, why=f"{ident.record} no longer has the label {value!r} ({ident.new_label!r})"
    )
