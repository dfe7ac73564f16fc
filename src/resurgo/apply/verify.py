"""Is what an action makes really on the disks? Read-only checks, one per kind of action.

Each check returns the list of differences between the plan and the disks (empty: it
holds). The comparisons are pure functions of the tools' machine-readable output
(`sfdisk --json`, `blkid -p -o export`, `mdadm --detail --export`, lvm's JSON reports,
/proc/self/mountinfo), unit-tested on recorded output; the read_* functions run the tools.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

from resurgo import run
from resurgo.apply import commands, devices
from resurgo.errors import OperationFailed
from resurgo.model import PartitionKind, TableLabel
from resurgo.plan.model import (
    LvParams,
    MdParams,
    MountParams,
    TableParams,
)
from resurgo.probe import filesystems, mounts, partitions
from resurgo.probe.mounts import MountEntry
from resurgo.probe.partitions import ParsedTable

# The inode number of the root directory of every btrfs subvolume (BTRFS_FIRST_FREE_OBJECTID).
BTRFS_SUBVOL_INODE = 256
BTRFS_TOP_LEVEL = 5


def _same_text(a: str | None, b: str | None) -> bool:
    return (a or "") == (b or "")


def _uuid(value: str) -> str:
    """A UUID without its punctuation: mdadm writes a:b:c:d, blkid 8-4-4-4-12 for one id."""
    return re.sub(r"[^0-9a-z]", "", value.lower())


def _mbr_code(value: str) -> int | None:
    try:
        return int(value, 16)
    except ValueError:
        return None


def _same_type(label: TableLabel, planned: str, found: str) -> bool:
    if label == TableLabel.DOS:
        return _mbr_code(planned) == _mbr_code(found)
    return planned.lower() == found.lower()


def _same_table_id(label: TableLabel, planned: str, found: str) -> bool:
    if label == TableLabel.DOS:
        return _mbr_code(planned) == _mbr_code(found)
    return planned.lower() == found.lower()


# ---------------------------------------------------------------- partition tables


def table_differences(found: ParsedTable | None, t: TableParams) -> list[str]:
    """How the table sfdisk reads differs from the planned one (empty: the same)."""
    if found is None:
        return [f"{t.device} has no partition table"]
    out: list[str] = []
    if found.table.label != t.label:
        return [f"{t.device} has a {found.table.label} table, not {t.label}"]
    if not _same_table_id(t.label, t.id, found.table.id):
        out.append(f"table id {found.table.id}, not {t.id}")
    if found.sector_size is not None and found.sector_size != t.sector_size:
        out.append(f"{found.sector_size}-byte sectors, not {t.sector_size}")
    if t.label == TableLabel.GPT:
        if t.first_lba and found.table.first_lba != t.first_lba:
            out.append(f"first LBA {found.table.first_lba}, not {t.first_lba}")
        if t.last_lba and found.table.last_lba != t.last_lba:
            out.append(f"last LBA {found.table.last_lba}, not {t.last_lba}")
    have = {e.number: e for e in found.entries}
    want = {e.number: e for e in t.partitions}
    for n in sorted(set(have) - set(want)):
        out.append(f"partition {n} is not in the plan")
    for n, w in sorted(want.items()):
        h = have.get(n)
        if h is None:
            out.append(f"partition {n} is missing")
            continue
        what = []
        if (h.start, h.size) != (w.start, w.size):
            what.append(f"sectors {h.start}+{h.size}, not {w.start}+{w.size}")
        if not _same_type(t.label, w.type, h.type):
            what.append(f"type {h.type}, not {w.type}")
        if t.label == TableLabel.GPT:
            if w.uuid and (h.uuid or "").lower() != w.uuid.lower():
                what.append(f"uuid {h.uuid}, not {w.uuid}")
            if w.name and not _same_text(h.name, w.name):
                what.append(f"name {h.name!r}, not {w.name!r}")
            if w.attrs and not _same_text(h.attrs, w.attrs):
                what.append(f"attributes {h.attrs!r}, not {w.attrs!r}")
        elif h.bootable != w.bootable:
            what.append("bootable" if h.bootable else "not bootable")
        if what:
            out.append(f"partition {n}: " + ", ".join(what))
    return out


def kernel_differences(kernel: Mapping[int, tuple[int, int]], t: TableParams) -> list[str]:
    """Partitions of the table the kernel does not use as planned (it needs a partx -u)."""
    out = []
    for e in t.partitions:
        if e.kind == PartitionKind.EXTENDED:
            continue  # the kernel shows an extended partition as 1 KiB
        want = (e.start * t.sector_size, e.size * t.sector_size)
        have = kernel.get(e.number)
        if have != want:
            out.append(f"the kernel's partition {e.number} is {have}, not {want}")
    return out


def read_table(device: str) -> ParsedTable | None:
    if not filesystems.read_blkid(device).get("PTTYPE"):
        return None
    return partitions.read_table(device)


# ---------------------------------------------------------------- signatures


def signature_differences(
    found: Mapping[str, str],
    device: str,
    type_name: str,
    uuid: str | None = None,
    label: str | None = None,
    version: str | None = None,
) -> list[str]:
    """How blkid's view of device differs from a planned signature (type, UUID, label)."""
    have = found.get("TYPE")
    if have != type_name:
        return [f"{device} holds {have or 'no signature'}, not {type_name}"]
    out = []
    if uuid and _uuid(found.get("UUID", "")) != _uuid(uuid):
        out.append(f"{device} has UUID {found.get('UUID')}, not {uuid}")
    if label and found.get("LABEL") != label:
        out.append(f"{device} has label {found.get('LABEL')!r}, not {label!r}")
    if version and found.get("VERSION") != version:
        out.append(f"{device} is version {found.get('VERSION')}, not {version}")
    return out


def read_signature(device: str) -> dict[str, str]:
    if not devices.exists(device):
        return {}
    return filesystems.read_blkid(device)


# ---------------------------------------------------------------- md


def parse_export(text: str) -> dict[str, str]:
    return filesystems.parse_blkid_export(text)


def md_differences(found: Mapping[str, str], p: MdParams) -> list[str]:
    if not found:
        return [f"{p.device} is not a running md array"]
    out = []
    if _uuid(found.get("MD_UUID", "")) != _uuid(p.uuid):
        out.append(f"{p.device} has UUID {found.get('MD_UUID')}, not {p.uuid}")
    level = found.get("MD_LEVEL", "")
    if level.lower() != p.level.lower():
        out.append(f"{p.device} is {level}, not {p.level}")
    return out


def read_md(device: str) -> dict[str, str]:
    if not devices.exists(device):
        return {}
    result = run.run(["mdadm", "--detail", "--export", device], check=False)
    return parse_export(result.stdout) if result.returncode == 0 else {}


# ---------------------------------------------------------------- LVM


def lvm_report(text: str, kind: str) -> list[dict[str, str]]:
    """The rows of one kind ("pv", "vg", "lv") of an lvm --reportformat json report."""
    try:
        data: Any = json.loads(text)
        rows = [row for rep in data["report"] for row in rep.get(kind, [])]
    except (ValueError, KeyError, TypeError) as e:
        raise OperationFailed(f"cannot read lvm's JSON report: {e}") from None
    return [{str(k): str(v) for k, v in row.items()} for row in rows]


def read_lvm(kind: str, fields: str, name: str, scope: Sequence[str]) -> list[dict[str, str]]:
    """One PV, VG or LV by name, as lvm sees it on the devices of scope (the plan's
    physical volumes: commands.lvm_scoped); [] when lvm does not know it."""
    result = run.run(
        commands.lvm_scoped(
            ["lvm", f"{kind}s", "--reportformat", "json", "--units", "b", "--nosuffix",
             "-o", fields, name], scope),
        check=False,
    )
    if result.returncode != 0:
        return []
    return lvm_report(result.stdout, kind)


def vg_differences(rows: Sequence[Mapping[str, str]], name: str, extent_size: int,
                   pv_count: int) -> list[str]:
    if not rows:
        return [f"there is no volume group {name}"]
    row = rows[0]
    out = []
    if row.get("vg_extent_size") != str(extent_size):
        out.append(f"{name} has extents of {row.get('vg_extent_size')} bytes, not {extent_size}")
    if row.get("pv_count") != str(pv_count):
        out.append(f"{name} has {row.get('pv_count')} physical volume(s), not {pv_count}")
    return out


# lvs segtype of each LV type resurgo creates.
SEGTYPES = {
    "linear": ("linear", "striped"),
    "striped": ("striped", "linear"),
    "thin-pool": ("thin-pool",),
    "thin": ("thin",),
    "mirror": ("raid1", "mirror"),
}


def lv_differences(rows: Sequence[Mapping[str, str]], p: LvParams) -> list[str]:
    if not rows:
        return [f"there is no logical volume {p.vg_name}/{p.name}"]
    seg = rows[0].get("segtype", "")
    allowed = SEGTYPES.get(str(p.type), (str(p.type),))
    if seg not in allowed:
        return [f"{p.vg_name}/{p.name} is {seg}, not {p.type}"]
    return []


def lv_active(rows: Sequence[Mapping[str, str]]) -> bool:
    return bool(rows) and rows[0].get("lv_active", "") == "active"


# ---------------------------------------------------------------- mounts


def mounted_as_planned(
    entries: Sequence[MountEntry], p: MountParams, device_num: tuple[int, int] | None
) -> list[str]:
    """Whether the planned device (and btrfs subvolume) is what is visible at the target."""
    target = os.path.normpath(p.target)
    top = [e for e in mounts.visible(list(entries)) if e.mountpoint == target]
    if not top:
        return [f"nothing is mounted on {target}"]
    e = top[-1]
    if device_num is None or mounts.mount_devnum(e) != device_num:
        return [f"{target} holds {e.source}, not {p.device}"]
    want = next((o.removeprefix("subvol=") for o in p.options if o.startswith("subvol=")), None)
    if want is not None and (e.btrfs_subvol or "").strip("/") != want.strip("/"):
        return [f"{target} holds subvolume {e.btrfs_subvol}, not {want}"]
    return []


# ---------------------------------------------------------------- btrfs


def is_subvolume(path: str) -> bool:
    try:
        # Not followed: a link planted where a subvolume is expected is not one.
        return os.stat(path, follow_symlinks=False).st_ino == BTRFS_SUBVOL_INODE
    except OSError:
        return False


def parse_rootid(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise OperationFailed(f"btrfs inspect-internal rootid printed {text.strip()!r}") from None
