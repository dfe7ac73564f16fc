"""Uses of the target disks that recovery itself made, which must not block its rerun.

After an interrupted (or completed) run, the recreated filesystems are mounted under the
recovery root and md arrays, LUKS mappings and LVs of the plan are active: the planner
would call the disks "in use". Those uses are recovery's own:

  - mounts at or under the root, or in its private run directory, always (nobody else
    mounts a target disk there; the executor unmounts them before rewriting a device);
  - holders (md, dm) only when they are devices the plan itself creates and a journal of
    this plan exists, i.e. an earlier run of the very same plan made them.

Everything else still counts, and still fails the plan's precondition.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path

from resurgo.apply import devices
from resurgo.machine import ActualDisk
from resurgo.plan.model import LuksOpenParams, MdParams, Plan, VgParams
from resurgo.probe.blockdev import SYS_CLASS_BLOCK


def mountpoint_of(use: str) -> str:
    """The mountpoint in an ActualDisk.mounted entry, "KNAME on MOUNTPOINT"."""
    return use.partition(" on ")[2]


def holder_of(use: str) -> str:
    """The kernel name in an ActualDisk.holders entry, "dm-0" or "md127 (on sdb1)"."""
    return use.split(" ", 1)[0]


def own_holders(plan: Plan, sys_block: Path = SYS_CLASS_BLOCK) -> set[str]:
    """Kernel names of the md and dm devices of the plan that exist now."""
    mapper: set[str] = set()
    # Every LV of a planned group, the hidden ones of thin pools and RAID LVs included.
    vg_prefixes: set[str] = set()
    md_paths: list[str] = []
    for a in plan.actions:
        p = a.params
        if isinstance(p, LuksOpenParams):
            mapper.add(p.name)
        elif isinstance(p, VgParams):
            vg_prefixes.add(p.name.replace("-", "--") + "-")
        elif isinstance(p, MdParams):
            md_paths.append(p.device)
    out = {devices.kname(path) for path in md_paths if devices.exists(path)}
    try:
        names = os.listdir(sys_block)
    except OSError:
        names = []
    for name in names:
        if not name.startswith("dm-"):
            continue
        dm = devices.dm_name(name, sys_block) or ""
        if dm in mapper or any(is_lv_of(dm, prefix) for prefix in vg_prefixes):
            out.add(name)
    return out


def is_lv_of(dm_name: str, prefix: str) -> bool:
    """Whether a device-mapper name is an LV of the group whose names start with prefix.

    Dashes in VG and LV names are doubled, so "vg0-x" is an LV of vg0 and "vg0--x-y" is not.
    """
    rest = dm_name.removeprefix(prefix)
    return rest != dm_name and bool(rest) and not rest.startswith("-")


def without_own_uses(
    disks: Sequence[ActualDisk], root: str, holders: Iterable[str] = ()
) -> list[ActualDisk]:
    ours = set(holders)
    return [
        replace(
            d,
            mounted=tuple(m for m in d.mounted if not devices.is_ours(mountpoint_of(m), root)),
            holders=tuple(h for h in d.holders if holder_of(h) not in ours),
        )
        for d in disks
    ]
