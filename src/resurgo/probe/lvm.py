"""LVM: volume groups, physical and logical volumes from LVM's JSON reports.

One `lvm fullreport` gives every VG with its PVs, visible LVs and their segments (sizes
in bytes with --units b --nosuffix). LVs built from hidden sub-LVs (raid images, thin
pool data, mirror legs) name those sub-LVs as their segments' devices; only when there
are such names is `lvs --all` asked for the hidden LVs, to follow them down to PVs.
Hidden sub-LVs never become records of their own.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from resurgo import run
from resurgo.errors import OperationFailed
from resurgo.model import LogicalVolume, LvSegment, LvType, PhysicalVolume, VolumeGroup
from resurgo.probe import ids

REPORT_OPTIONS = ("--reportformat", "json", "--units", "b", "--nosuffix")
FULLREPORT = ("lvm", "fullreport", *REPORT_OPTIONS)
# lvs is lvm's own command; -o lv_all,seg_all gives a row per segment, --all the hidden LVs.
HIDDEN_LVS = ("lvm", "lvs", *REPORT_OPTIONS, "-o", "lv_all,seg_all", "--all")

_SEGTYPES = {
    "linear": LvType.LINEAR,
    "striped": LvType.STRIPED,
    "thin-pool": LvType.THIN_POOL,
    "thin": LvType.THIN,
    "raid0": LvType.RAID0,
    "raid0_meta": LvType.RAID0,
    "raid1": LvType.RAID1,
    "raid4": LvType.RAID4,
    "raid10": LvType.RAID10,
    "raid10_near": LvType.RAID10,
    "mirror": LvType.MIRROR,
    "cache": LvType.CACHE,
    "cache-pool": LvType.CACHE,
    "writecache": LvType.CACHE,
    "snapshot": LvType.SNAPSHOT,
}

# dm uuids of LVs: "LVM-" + VG uuid + LV uuid (dashes dropped), "-layer" for internal layers.
_DM_UUID = re.compile(r"LVM-([A-Za-z0-9]{32})([A-Za-z0-9]{32})(?:-(.+))?")
# The layers of an LV that are its public device: none, and a thin pool's "-pool".
PUBLIC_LAYERS = frozenset({"", "pool"})


@dataclass(frozen=True)
class Segment:
    start_extent: int
    extent_count: int
    type: str
    stripes: int
    stripe_size: int
    # (name, first extent) as LVM prints them: PV paths, or the names of sub-LVs.
    devices: tuple[tuple[str, int], ...] = ()
    metadata_devices: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class Lv:
    vg: str
    name: str
    uuid: str
    size: int
    hidden: bool
    path: str = ""
    parent: str = ""
    pool: str = ""
    role: str = ""
    attr: str = ""
    layout: str = ""
    data_lv: str = ""
    metadata_lv: str = ""
    segments: tuple[Segment, ...] = ()
    # What save's snapshots (recovery.lvmsnapshots) look at: tags, the origin of a
    # snapshot, whether its device is open, an overflowed classic snapshot, a thin
    # pool's data use (percent, None when not reported).
    tags: tuple[str, ...] = ()
    origin: str = ""
    device_open: bool = False
    snapshot_invalid: bool = False
    data_percent: float | None = None

    @property
    def active(self) -> bool:
        return len(self.attr) > 4 and self.attr[4] == "a"


@dataclass(frozen=True)
class Pv:
    name: str
    uuid: str
    vg: str
    size: int
    devno: tuple[int, int] | None
    missing: bool = False


@dataclass(frozen=True)
class Vg:
    name: str
    uuid: str
    extent_size: int
    size: int
    partial: bool = False
    free: int = 0


@dataclass
class Report:
    vgs: dict[str, Vg] = field(default_factory=dict)
    pvs: list[Pv] = field(default_factory=list)
    lvs: list[Lv] = field(default_factory=list)
    # Whether the hidden sub-LVs are in lvs.
    hidden_loaded: bool = False

    def lv(self, vg: str, name: str) -> Lv | None:
        return next((lv for lv in self.lvs if lv.vg == vg and lv.name == name), None)

    def lv_by_uuid(self, plain_uuid: str) -> Lv | None:
        """The LV whose uuid, dashes dropped, is plain_uuid."""
        return next((lv for lv in self.lvs if lv.uuid.replace("-", "") == plain_uuid), None)

    def pv(self, name: str) -> Pv | None:
        return next((pv for pv in self.pvs if pv.name == name), None)

    def needs_hidden(self) -> bool:
        """Whether some segment is built on a sub-LV that the report does not list."""
        return any(
            self.lv(lv.vg, name) is None
            for lv in self.lvs
            for seg in lv.segments
            for name, _ in (*seg.devices, *seg.metadata_devices)
            if _is_sub_lv(name)
        )

    def add_hidden(self, lvs: list[Lv]) -> None:
        known = {lv.uuid for lv in self.lvs}
        self.lvs += [lv for lv in lvs if lv.uuid not in known]
        self.hidden_loaded = True


# ---------------------------------------------------------------- parsing


def _int(row: Mapping[str, Any], key: str, default: int = 0) -> int:
    try:
        return int(str(row.get(key, "")).strip())
    except ValueError:
        return default


def _text(row: Mapping[str, Any], key: str) -> str:
    value = row.get(key, "")
    return value.strip() if isinstance(value, str) else ""


def _elements(text: str, what: str) -> list[dict[str, Any]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise OperationFailed(f"{what}: not JSON: {e}") from None
    report = data.get("report") if isinstance(data, dict) else None
    if not isinstance(report, list):
        raise OperationFailed(f"{what}: no \"report\" list in the JSON")
    return [e for e in report if isinstance(e, dict)]


def _rows(element: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
    rows = element.get(key, [])
    return [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []


def parse_devices(text: str) -> tuple[tuple[str, int], ...]:
    """LVM's devices field: "/dev/sda1(0),/dev/sdb1(8)" or "lv_rimage_0(0),lv_rimage_1(0)"."""
    return tuple((m.group(1), int(m.group(2)))
                 for m in re.finditer(r"\s*([^,]+?)\((\d+)\)\s*(?:,|$)", text))


def _segment(row: Mapping[str, Any]) -> Segment:
    return Segment(
        start_extent=_int(row, "seg_start_pe"),
        extent_count=_int(row, "seg_size_pe"),
        type=_text(row, "segtype"),
        stripes=_int(row, "stripes", 1),
        stripe_size=_int(row, "stripe_size"),
        devices=parse_devices(_text(row, "devices")),
        metadata_devices=parse_devices(_text(row, "metadata_devices")),
    )


def _unbracket(name: str) -> str:
    # lvs --all shows hidden LVs as [name].
    return name[1:-1] if name.startswith("[") and name.endswith("]") else name


def _lv(row: Mapping[str, Any], vg: str, segments: tuple[Segment, ...]) -> Lv:
    raw = _text(row, "lv_name")
    return Lv(
        vg=vg,
        name=_unbracket(raw),
        uuid=_text(row, "lv_uuid"),
        size=_int(row, "lv_size"),
        hidden=raw.startswith("["),
        path=_text(row, "lv_path"),
        parent=_unbracket(_text(row, "lv_parent")),
        pool=_unbracket(_text(row, "pool_lv")),
        role=_text(row, "lv_role"),
        attr=_text(row, "lv_attr"),
        layout=_text(row, "lv_layout"),
        data_lv=_unbracket(_text(row, "data_lv")),
        metadata_lv=_unbracket(_text(row, "metadata_lv")),
        segments=segments,
        tags=tuple(t for t in _text(row, "lv_tags").split(",") if t),
        origin=_unbracket(_text(row, "origin")),
        device_open=_text(row, "lv_device_open") not in ("", "unknown"),
        snapshot_invalid=_text(row, "lv_snapshot_invalid") not in ("", "unknown"),
        data_percent=_percent(row, "data_percent"),
    )


def _percent(row: Mapping[str, Any], key: str) -> float | None:
    try:
        return float(_text(row, key))
    except ValueError:
        return None


def parse_fullreport(text: str) -> Report:
    """`lvm fullreport --reportformat json --units b --nosuffix`: one element per VG."""
    out = Report()
    for element in _elements(text, "lvm fullreport"):
        vg_rows = _rows(element, "vg")
        vg_name = _text(vg_rows[0], "vg_name") if vg_rows else ""
        for row in vg_rows:
            out.vgs[vg_name] = Vg(
                name=vg_name,
                uuid=_text(row, "vg_uuid"),
                extent_size=_int(row, "vg_extent_size"),
                size=_int(row, "vg_size"),
                partial=_text(row, "vg_partial") != "" or _text(row, "vg_attr")[3:4] == "p",
                free=_int(row, "vg_free"),
            )
        for row in _rows(element, "pv"):
            major, minor = _int(row, "pv_major", -1), _int(row, "pv_minor", -1)
            out.pvs.append(Pv(
                name=_text(row, "pv_name"),
                uuid=_text(row, "pv_uuid"),
                vg=vg_name,
                size=_int(row, "pv_size"),
                devno=(major, minor) if major >= 0 and minor >= 0 else None,
                missing=_text(row, "pv_missing") != "",
            ))
        segs: dict[str, list[Segment]] = {}
        for row in _rows(element, "seg"):
            segs.setdefault(_text(row, "lv_uuid"), []).append(_segment(row))
        for row in _rows(element, "lv"):
            uuid = _text(row, "lv_uuid")
            ordered = tuple(sorted(segs.get(uuid, []), key=lambda s: s.start_extent))
            out.lvs.append(_lv(row, vg_name, ordered))
    return out


def parse_lvs_segments(text: str) -> list[Lv]:
    """`lvs --reportformat json ... -o lv_all,seg_all --all`: a row per LV segment."""
    rows: dict[str, list[dict[str, Any]]] = {}
    for element in _elements(text, "lvs"):
        for row in _rows(element, "lv"):
            rows.setdefault(_text(row, "lv_uuid"), []).append(row)
    out: list[Lv] = []
    for group in rows.values():
        first = group[0]
        vg = _text(first, "lv_full_name").partition("/")[0]
        segments = tuple(sorted((_segment(r) for r in group), key=lambda s: s.start_extent))
        out.append(_lv(first, vg, segments))
    return out


def split_dm_name(name: str) -> tuple[str, str, str] | None:
    """(vg, lv, layer) from a dm name such as "vg0-pool-tpool" (dashes in names doubled)."""
    m = re.fullmatch(r"((?:[^-]|--)+)-((?:[^-]|--)+)(?:-([^-].*))?", name)
    if m is None:
        return None
    return (m.group(1).replace("--", "-"), m.group(2).replace("--", "-"), m.group(3) or "")


# ---------------------------------------------------------------- to records


def _is_sub_lv(name: str) -> bool:
    # PVs are named by their device path; a missing one is "[unknown]" or "unknown device".
    return not name.startswith("/") and not name.startswith("[unknown") and name != "unknown device"


def lv_type(lv: Lv) -> LvType:
    roles = set(lv.role.split(","))
    if "thicksnapshot" in roles or lv.attr[:1] in ("s", "S"):
        return LvType.SNAPSHOT
    types = [s.type for s in lv.segments] or [lv.layout.split(",")[-1]]
    if "striped" in types and set(types) <= {"linear", "striped"}:
        return LvType.STRIPED
    first = types[0]
    found = _SEGTYPES.get(first)
    if found is not None:
        return found
    if first.startswith("raid5"):
        return LvType.RAID5
    if first.startswith("raid6"):
        return LvType.RAID6
    if lv.layout == "thin,pool":
        return LvType.THIN_POOL
    return LvType.OTHER


def owner(report: Report, lv: Lv) -> Lv | None:
    """The visible LV a hidden sub-LV belongs to (lv itself when it is visible)."""
    cur: Lv | None = lv
    for _ in range(16):
        if cur is None or not cur.hidden:
            return cur
        cur = report.lv(cur.vg, cur.parent) if cur.parent else None
    return None


@dataclass(frozen=True)
class DmLv:
    """What a device-mapper device of LVM is: the visible LV it belongs to, and whether it
    is that LV's public device or an internal layer (a sub-LV, -tpool, -real, -cow, ...)."""

    lv: Lv
    internal: bool


def lv_of_dm(report: Report, dm_uuid: str, dm_name: str) -> DmLv | None:
    """The LV behind a dm device, from its dm uuid, else from its name."""
    found: Lv | None = None
    layer = ""
    m = _DM_UUID.fullmatch(dm_uuid)
    if m is not None:
        found = report.lv_by_uuid(m.group(2))
        layer = m.group(3) or ""
    if found is None:
        parts = split_dm_name(dm_name)
        if parts is not None:
            found = report.lv(parts[0], parts[1])
            layer = parts[2]
    if found is None:
        return None
    top = owner(report, found)
    if top is None:
        return None
    return DmLv(top, internal=found.hidden or layer not in PUBLIC_LAYERS)


def segment_pvs(report: Report, lv: Lv, seg: Segment) -> tuple[list[Pv], list[str]]:
    """The PVs a segment lies on, through its sub-LVs; and the names that lead nowhere."""
    pvs: list[Pv] = []
    lost: list[str] = []

    def walk(names: tuple[tuple[str, int], ...], depth: int) -> None:
        for name, _ in names:
            if not _is_sub_lv(name):
                pv = report.pv(name)
                if pv is None or pv.missing:
                    lost.append(name)
                elif pv not in pvs:
                    pvs.append(pv)
                continue
            sub = report.lv(lv.vg, name)
            if sub is None or depth > 8:
                lost.append(name)
                continue
            for s in sub.segments:
                walk((*s.devices, *s.metadata_devices), depth + 1)

    extra: tuple[tuple[str, int], ...] = ()
    if seg.type in ("thin-pool", "cache-pool") and lv.metadata_lv:
        extra = ((lv.metadata_lv, 0),)
    walk((*seg.devices, *seg.metadata_devices, *extra), 0)
    return pvs, lost


def volume_group(vg: Vg) -> VolumeGroup:
    return VolumeGroup(id=ids.volume_group(vg.name), name=vg.name, uuid=vg.uuid,
                       extent_size=vg.extent_size, size=vg.size)


def physical_volume(pv: Pv, backing_kname: str, device_id: str) -> PhysicalVolume:
    return PhysicalVolume(id=ids.physical_volume(backing_kname), device=device_id, uuid=pv.uuid,
                          volume_group=ids.volume_group(pv.vg), size=pv.size)


def logical_volume(
    report: Report, lv: Lv, pv_ids: Mapping[str, str], warnings: list[str] | None = None
) -> LogicalVolume:
    """The record of a visible LV; pv_ids maps PV uuids to the ids of the described PVs."""
    warn = warnings if warnings is not None else []
    segments: list[LvSegment] = []
    for seg in lv.segments:
        pvs, lost = segment_pvs(report, lv, seg)
        devices = [pv_ids[pv.uuid] for pv in pvs if pv.uuid in pv_ids]
        outside = [pv.name for pv in pvs if pv.uuid not in pv_ids]
        if lost or outside:
            warn.append(f"{lv.vg}/{lv.name}: extents {seg.start_extent}+{seg.extent_count} lie "
                        f"on {', '.join(lost + outside)}, which "
                        f"{'is' if len(lost + outside) == 1 else 'are'} not described")
        segments.append(LvSegment(
            start_extent=seg.start_extent,
            extent_count=seg.extent_count,
            type=seg.type,
            # Thin volumes report 0 stripes: they lie in their pool, not on PVs.
            stripes=max(1, seg.stripes),
            stripe_size=seg.stripe_size or None,
            devices=tuple(dict.fromkeys(devices)),
        ))
    kind = lv_type(lv)
    pool = report.lv(lv.vg, lv.pool) if lv.pool else None
    return LogicalVolume(
        id=ids.logical_volume(lv.vg, lv.name),
        volume_group=ids.volume_group(lv.vg),
        name=lv.name,
        uuid=lv.uuid,
        size=lv.size,
        type=kind,
        path=lv.path or None,
        pool=ids.logical_volume(lv.vg, pool.name) if pool is not None and kind == LvType.THIN
        else None,
        segments=tuple(segments),
    )


# The snapshots save makes while it reads (recovery.lvmsnapshots): named
# resurgo-snap-SETID-N, tagged resurgo-snapshot and resurgo-set-SETID. No part of the
# system: left out of every description.
SNAPSHOT_PREFIX = "resurgo-snap-"
SNAPSHOT_TAG = "resurgo-snapshot"
SNAPSHOT_SET_TAG = "resurgo-set-"
_SNAPSHOT_NAME = re.compile(
    rf"^{SNAPSHOT_PREFIX}([0-9]{{8}}T[0-9]{{6}}Z-[0-9a-z]{{4,16}})-([0-9]{{1,4}})$")


def save_snapshot(lv: Lv) -> bool:
    """Whether ``lv`` is provably a snapshot of a save: its name, both its tags (the same
    set id as its name), and an origin."""
    m = _SNAPSHOT_NAME.match(lv.name)
    return (m is not None and SNAPSHOT_TAG in lv.tags
            and f"{SNAPSHOT_SET_TAG}{m.group(1)}" in lv.tags and lv.origin != "")


def visible_lvs(report: Report, vg: str) -> Iterator[Lv]:
    return (lv for lv in report.lvs if lv.vg == vg and not lv.hidden and not save_snapshot(lv))


# ---------------------------------------------------------------- running lvm


def read_report() -> Report:
    """Every VG, PV and LV, with the hidden sub-LVs when some LV is built on them."""
    report = parse_fullreport(run.output(list(FULLREPORT)))
    if report.needs_hidden():
        load_hidden(report)
    return report


def read_lv(vg: str, name: str) -> Lv | None:
    """One LV as lvm reports it now (without its segments); None when there is none."""
    text = run.output(["lvm", "lvs", *REPORT_OPTIONS, "-o", "lv_all", f"{vg}/{name}"])
    for element in _elements(text, "lvs"):
        for row in _rows(element, "lv"):
            return _lv(row, vg, ())
    return None


def load_hidden(report: Report) -> None:
    """Add the hidden sub-LVs (raid images, pool data and metadata, ...) to report."""
    report.add_hidden(parse_lvs_segments(run.output(list(HIDDEN_LVS))))
