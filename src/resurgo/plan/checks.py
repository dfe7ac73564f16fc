"""Preconditions that depend on the machine: disks in use, tools present, keys at hand.

Each check returns every failure it finds; the plan lists them all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from resurgo.machine import ActualDisk
from resurgo.packages import hint_for
from resurgo.plan.model import (
    Action,
    ActionKind,
    Check,
    LuksFormatParams,
    MkfsParams,
    PreconditionFailure,
)

# The programs an executor runs for each kind of action.
TOOLS: dict[ActionKind, tuple[str, ...]] = {
    ActionKind.WIPE: ("wipefs",),
    ActionKind.PARTITION_TABLE: ("sfdisk", "partx"),
    ActionKind.MD_CREATE: ("mdadm",),
    ActionKind.LUKS_FORMAT: ("cryptsetup",),
    ActionKind.LUKS_OPEN: ("cryptsetup",),
    ActionKind.PV_CREATE: ("lvm",),
    ActionKind.VG_CREATE: ("lvm",),
    ActionKind.LV_CREATE: ("lvm",),
    ActionKind.MKSWAP: ("mkswap",),
    ActionKind.SUBVOLUME_CREATE: ("btrfs",),
    ActionKind.SUBVOLUME_DEFAULT: ("btrfs",),
    ActionKind.MOUNT: ("mount",),
}


def in_use(disks: Iterable[ActualDisk]) -> list[PreconditionFailure]:
    out = []
    for d in disks:
        why = [f"mounted: {m}" for m in d.mounted]
        why += [f"active swap: {s}" for s in d.swaps]
        why += [f"held by {h}" for h in d.holders]
        if why:
            out.append(
                PreconditionFailure(
                    Check.TARGET_IN_USE,
                    d.path,
                    f"{d.path} is in use ({'; '.join(why)})",
                    "unmount it, swapoff it, stop the md arrays / close the LUKS and LVM "
                    "volumes on it, or choose another disk",
                )
            )
    return out


def tools(
    actions: Sequence[Action], which: Callable[[str], str | None]
) -> list[PreconditionFailure]:
    needed: dict[str, list[str]] = {}
    for a in actions:
        programs = list(TOOLS.get(a.kind, ()))
        if isinstance(a.params, MkfsParams) and a.params.program:
            programs.append(a.params.program)
        for p in programs:
            needed.setdefault(p, []).append(a.id)
    out = []
    for program in sorted(needed):
        if which(program) is None:
            how = hint_for(program)
            out.append(
                PreconditionFailure(
                    Check.TOOL_MISSING,
                    program,
                    f"the program {program} is needed ({needed[program][0]}"
                    + (f" and {len(needed[program]) - 1} more" if len(needed[program]) > 1 else "")
                    + ") but not installed",
                    f"install it: {how}" if how else None,
                )
            )
    return out


def keys(
    actions: Sequence[Action], have: frozenset[str], interactive: bool
) -> list[PreconditionFailure]:
    out = []
    for a in actions:
        if not isinstance(a.params, LuksFormatParams):
            continue
        vol = a.params.volume
        if vol in have or interactive:
            continue
        out.append(
            PreconditionFailure(
                Check.KEY_MISSING,
                vol,
                f"no key for the LUKS volume {vol} ({a.params.device}) and no terminal to ask on",
                f"give one with --key-file {vol}=FILE, or run on a terminal",
            )
        )
    return out
