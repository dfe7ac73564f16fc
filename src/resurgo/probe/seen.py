"""The identities a disk shows now, for the planner to find what a recovery would collide
with: the disks a recovery does not write to (the old disks of a migration, the running
system of a rehearsal on the same host) keep theirs.

Read-only: `blkid -p` (low-level probing, no cache, no udev needed) of the disk, of each
partition and of every device built on them (assembled md arrays, device-mapper devices),
their names from /sys, and the volume groups of physical volumes from `lvm pvs` (asked only
when a physical volume is seen and lvm is installed).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from resurgo import run
from resurgo.errors import ResurgoError
from resurgo.machine import SeenIdentity, SeenKind
from resurgo.probe import blockdev, filesystems, lvm, sysfs

Blkid = Callable[[str], Mapping[str, str]]
# (major, minor) of each physical volume -> the name of its volume group.
PvGroups = Callable[[], Mapping[tuple[int, int], str]]

# blkid's TYPE of the signatures that are not filesystems.
_KINDS = {
    "crypto_LUKS": SeenKind.LUKS,
    "LVM2_member": SeenKind.PV,
    "linux_raid_member": SeenKind.MD,
    "swap": SeenKind.SWAP,
}
# Holders are followed this deep at most (partition -> md -> LUKS -> LV -> ...).
_DEPTH = 8


def from_blkid(device: str, fields: Mapping[str, str]) -> list[SeenIdentity]:
    """The identities in one device's `blkid -p -o export`."""
    out = []
    kind_type = fields.get("TYPE", "")
    if fields.get("PTUUID"):
        out.append(SeenIdentity(SeenKind.TABLE, fields["PTUUID"], device, fields.get("PTTYPE", "")))
    if fields.get("PART_ENTRY_UUID"):
        out.append(SeenIdentity(SeenKind.PARTITION, fields["PART_ENTRY_UUID"], device))
    if fields.get("UUID"):
        kind = _KINDS.get(kind_type, SeenKind.FILESYSTEM)
        out.append(SeenIdentity(kind, fields["UUID"], device, kind_type))
    return out


# A disk that does not answer within this (a failing one: the migration off it is why it
# is still attached) shows nothing rather than stopping the plan.
BLKID_TIMEOUT = 20.0


def read_blkid(device: str) -> dict[str, str]:
    """filesystems.read_blkid, bounded in time: {} for a device too slow to answer."""
    try:
        result = run.run(["blkid", "-p", "-o", "export", device], check=False,
                         timeout=BLKID_TIMEOUT)
    except subprocess.TimeoutExpired:
        return {}
    if result.returncode != 0:
        return {}
    return filesystems.parse_blkid_export(result.stdout)


def stacked(names: Iterable[str], sys_block: Path) -> list[str]:
    """The devices built on names (their holders, and theirs), in the order found."""
    out: list[str] = []
    todo = [(n, 0) for n in names]
    while todo:
        name, depth = todo.pop(0)
        if depth >= _DEPTH:
            continue
        try:
            holders = blockdev.read_device(name, sys_block).holders
        except ResurgoError:
            continue
        for h in holders:
            if h not in out:
                out.append(h)
                todo.append((h, depth + 1))
    return out


def read_seen(
    kname: str,
    partitions: Iterable[str],
    *,
    sys_block: Path,
    blkid: Blkid,
    pv_groups: PvGroups,
) -> tuple[SeenIdentity, ...]:
    """Every identity the disk kname, its partitions and what is built on them show."""
    own = [kname, *partitions]
    above = stacked(own, sys_block)
    out: list[SeenIdentity] = []
    for name in [*own, *above]:
        try:
            out += from_blkid(f"/dev/{name}", blkid(f"/dev/{name}"))
        except ResurgoError:
            continue  # gone meanwhile, or unreadable: it shows nothing
    for name in above:
        if name.startswith("md"):
            out.append(SeenIdentity(SeenKind.ACTIVE_MD, f"/dev/{name}", f"/dev/{name}"))
        elif name.startswith("dm-"):
            dm_name = sysfs.attribute(sys_block / name / "dm" / "name")
            if not dm_name:
                continue
            out.append(SeenIdentity(SeenKind.ACTIVE_DM, dm_name, f"/dev/{name}"))
            dm_uuid = sysfs.attribute(sys_block / name / "dm" / "uuid") or ""
            split = lvm.split_dm_name(dm_name) if dm_uuid.startswith("LVM-") else None
            if split is not None:
                out.append(SeenIdentity(SeenKind.ACTIVE_VG, split[0], f"/dev/{name}"))
    pvs = [s for s in out if s.kind == SeenKind.PV]
    if pvs:
        groups = pv_groups()
        for s in pvs:
            num = _devnum(s.device, sys_block)
            vg = groups.get(num) if num is not None else None
            if vg:
                out.append(SeenIdentity(SeenKind.VG, vg, s.device))
    return tuple(dict.fromkeys(out))


def _devnum(device: str, sys_block: Path) -> tuple[int, int] | None:
    try:
        d = blockdev.read_device(device.removeprefix("/dev/"), sys_block)
    except ResurgoError:
        return None
    return d.major, d.minor


PVS = ("lvm", "pvs", "--readonly", "--reportformat", "json", "-o", "pv_major,pv_minor,vg_name")


def parse_pvs(text: str) -> dict[tuple[int, int], str]:
    """`lvm pvs --reportformat json -o pv_major,pv_minor,vg_name`: each PV's group."""
    out: dict[tuple[int, int], str] = {}
    try:
        reports = json.loads(text).get("report", [])
    except (ValueError, AttributeError):
        return out
    for report in reports if isinstance(reports, list) else []:
        rows = report.get("pv", []) if isinstance(report, dict) else []
        for row in rows if isinstance(rows, list) else []:
            try:
                num = (int(row["pv_major"]), int(row["pv_minor"]))
            except (KeyError, TypeError, ValueError):
                continue
            if row.get("vg_name"):
                out[num] = str(row["vg_name"])
    return out


def read_pv_groups() -> dict[tuple[int, int], str]:
    """Each physical volume's group, as lvm sees them; {} without lvm."""
    if run.which("lvm") is None:
        return {}
    try:
        result = run.run(list(PVS), check=False, timeout=3 * BLKID_TIMEOUT)
    except subprocess.TimeoutExpired:
        return {}
    return parse_pvs(result.stdout) if result.returncode == 0 else {}
