"""md RAID arrays: `mdadm --detail --export` for what the superblock says, sysfs for the geometry.

mdadm's export names the level, metadata version, UUID, name and each member's role;
it does not give the chunk size or the layout, which /sys/block/mdX/md/ holds (in
bytes, and as the kernel's layout number).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from resurgo import run
from resurgo.errors import OperationFailed
from resurgo.model import RaidArray
from resurgo.probe import ids, sysfs
from resurgo.probe.blockdev import SYS_CLASS_BLOCK, SYSFS_SECTOR

# Levels whose chunk size means something (linear's "chunk" is only a rounding).
CHUNKED_LEVELS = frozenset({"raid0", "raid4", "raid5", "raid6", "raid10"})

# The kernel's raid5/raid6 layout numbers (drivers/md/raid5.h), named as mdadm --layout takes them.
_PARITY_LAYOUTS = {
    0: "left-asymmetric",
    1: "right-asymmetric",
    2: "left-symmetric",
    3: "right-symmetric",
    4: "parity-first",
    5: "parity-last",
    8: "ddf-zero-restart",
    9: "ddf-N-restart",
    10: "ddf-N-continue",
}
_RAID6_ONLY_LAYOUTS = {
    16: "left-asymmetric-6",
    17: "right-asymmetric-6",
    18: "left-symmetric-6",
    19: "right-symmetric-6",
    20: "parity-first-6",
}

# Levels an array assembled from external metadata (IMSM, DDF) reports for its container.
_CONTAINER_LEVEL = "container"


def parse_detail_export(text: str) -> dict[str, str]:
    """KEY=VALUE lines of `mdadm --detail --export` (or --examine --export)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, eq, value = line.partition("=")
        if eq and key.strip():
            out[key.strip()] = value.strip()
    return out


def _member_key(kname: str) -> str:
    # mdadm names each member after its sysfs entry dev-<kname>, non-alphanumerics as "_".
    return re.sub(r"[^A-Za-z0-9]", "_", f"dev-{kname}")


def member_roles(fields: Mapping[str, str], member_knames: list[str]) -> dict[str, str]:
    """kernel name -> role ("0", "1", ... or "spare") of the members mdadm lists.

    Members are matched by the key mdadm derives from their sysfs name, then by the
    device path it prints (MD_DEVICE_<key>_DEV).
    """
    by_key = {_member_key(k): k for k in member_knames}
    out: dict[str, str] = {}
    for key, role in fields.items():
        m = re.fullmatch(r"MD_DEVICE_(.+)_ROLE", key)
        if m is None:
            continue
        kname = by_key.get(m.group(1))
        if kname is None:
            path = fields.get(f"MD_DEVICE_{m.group(1)}_DEV", "")
            kname = os.path.basename(path) if os.path.basename(path) in member_knames else None
        if kname is not None:
            out[kname] = role
    return out


def layout_name(level: str, number: int) -> str | None:
    """The name mdadm --layout takes for the kernel's layout number, None when it has none."""
    if level in ("raid5", "raid6"):
        name = _PARITY_LAYOUTS.get(number)
        if name is None and level == "raid6":
            name = _RAID6_ONLY_LAYOUTS.get(number)
        return name
    if level == "raid10":
        # The low byte counts near copies, the next far copies; bit 16 makes far copies offset.
        near, far, offset = number & 0xFF, (number >> 8) & 0xFF, bool(number & 0x10000)
        if far > 1:
            return f"{'o' if offset else 'f'}{far}"
        return f"n{near}" if near >= 1 else None
    return None


def describe_array(
    kname: str,
    detail_text: str,
    member_ids: Mapping[str, str],
    *,
    sys_block: Path = SYS_CLASS_BLOCK,
    warnings: list[str] | None = None,
) -> RaidArray:
    """The array kname from its `mdadm --detail --export` text and its sysfs entry.

    member_ids maps the kernel names of its member devices to their record ids; members
    that have none (outside the described disks) are left out with a warning.
    """
    warn = warnings if warnings is not None else []
    path = f"/dev/{kname}"
    fields = parse_detail_export(detail_text)
    level = fields.get("MD_LEVEL", "").lower()
    metadata = fields.get("MD_METADATA", "")
    uuid = fields.get("MD_UUID", "")
    if not level or not uuid:
        raise OperationFailed(f"{path}: mdadm --detail --export names no level or UUID")
    if level == _CONTAINER_LEVEL or metadata.startswith(("imsm", "ddf", "external")):
        raise OperationFailed(
            f"{path}: arrays with external metadata ({metadata or level}) are not described")
    slaves = list(member_ids)
    roles = member_roles(fields, slaves)
    members: list[tuple[int, str]] = []
    spares: list[str] = []
    for k, role in roles.items():
        state = sysfs.attribute(sys_block / kname / f"md/dev-{k}/state") or ""
        if "faulty" in state.split(","):
            warn.append(f"{path}: member /dev/{k} is faulty and is left out")
        elif role.isdigit():
            members.append((int(role), member_ids[k]))
        elif role == "spare":
            spares.append(member_ids[k])
        else:
            warn.append(f"{path}: member /dev/{k} has the role {role!r} and is left out")
    for k in slaves:
        if k not in roles:
            warn.append(f"{path}: mdadm does not list /dev/{k} as a member; it is left out")
    members.sort()
    raid_disks = int(fields.get("MD_DEVICES", "0") or 0)
    if raid_disks and len(members) < raid_disks:
        warn.append(f"{path} is degraded or partly outside the described disks: "
                    f"{len(members)} of its {raid_disks} members are described")
    if not members:
        raise OperationFailed(f"{path}: none of its active members is described")
    base = sys_block / kname
    chunk = sysfs.int_attribute(base / "md/chunk_size") if level in CHUNKED_LEVELS else None
    number = sysfs.int_attribute(base / "md/layout")
    layout = layout_name(level, number) if number is not None else None
    size = sysfs.int_attribute(base / "size", 0) * SYSFS_SECTOR
    return RaidArray(
        id=ids.raid(kname),
        path=path,
        level=level,
        metadata=metadata,
        uuid=uuid,
        members=tuple(rid for _, rid in members),
        size=size,
        name=fields.get("MD_NAME") or None,
        chunk=chunk or None,
        spares=tuple(spares),
        layout=layout,
    )


def read_detail(kname: str) -> str:
    """`mdadm --detail --export /dev/KNAME`: the array as its superblock describes it."""
    return run.output(["mdadm", "--detail", "--export", f"/dev/{kname}"])
