"""The description's commands as the plan shows and hashes them (pure).

recover runs them in the description's order, as root, once the layout is mounted under
the root: ``resurgo:restore ID [MOUNTPOINT]`` restores a unit's tree (restoreunits,
recovery.trees), any other program runs as given with RESURGO_ROOT naming the root. Each
is listed with its program and arguments exactly, and where it writes, so that an
approved plan hash covers what will run.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from resurgo.model import Command, Description
from resurgo.plan.model import Action, MkfsParams, PlannedCommand
from resurgo.restoreunits import Unit, is_restore, under, unit_of


def planned(
    desc: Description, root: str, acts: Sequence[Action]
) -> tuple[PlannedCommand, ...]:
    """Every command of desc, in order. Raises BadInput for a restore command that names
    no filesystem or subvolume of desc (recover would refuse the set for it)."""
    devices = {
        a.params.filesystem: a.params.device for a in acts if isinstance(a.params, MkfsParams)
    }
    return tuple(_planned(c, desc, root, devices) for c in desc.commands)


def _planned(c: Command, desc: Description, root: str, devices: dict[str, str]) -> PlannedCommand:
    target = _target(unit_of(desc, c), root, devices) if is_restore(c) else ""
    return PlannedCommand(c.seq, c.program, c.args, str(c.on_failure), target, c.description)


def _target(unit: Unit, root: str, devices: dict[str, str]) -> str:
    """Where a restore writes: the same path the restore computes (trees.unit_tree)."""
    if not unit.btrfs:
        assert unit.mountpoint is not None  # unit_of requires it for other filesystems
        return str(under(Path(root), unit.mountpoint))
    device = devices.get(unit.filesystem.id, f"{unit.filesystem.id} (not recreated)")
    return f"{device}:/{unit.path_in_top_level}"
