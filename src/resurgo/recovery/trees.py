"""Where a unit's tree is, on a mounted system: the saved one (under its root) or the
recreated one (under the recovery root). Both are reached through private views, so a
restore or a walk never enters another filesystem mounted below, and sees what is hidden
under those mounts."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from resurgo.errors import OperationFailed
from resurgo.recovery import views
from resurgo.restoreunits import Unit, under


def btrfs_device(unit: Unit, root: Path) -> str:
    """The device of a unit's btrfs: the source of any of its mounts under root."""
    for m in unit.filesystem.mounts:
        entry = views.mount_at(under(root, m.mountpoint))
        if entry is not None and entry.fstype == "btrfs" and entry.source.startswith("/dev/"):
            return entry.source
    where = ", ".join(str(under(root, m.mountpoint)) for m in unit.filesystem.mounts)
    raise OperationFailed(
        f"the btrfs {unit.filesystem.id} is not mounted under {root} (at {where or 'nowhere'})",
        "mount it where the description says",
    )


@dataclass(frozen=True)
class Tree:
    path: Path  # the unit's tree
    top: Path | None = None  # a btrfs's top level, where all its subvolumes are


@contextlib.contextmanager
def unit_tree(unit: Unit, root: Path, *, writable: bool) -> Iterator[Tree]:
    """The directory holding the unit's tree, for as long as the block runs."""
    if not unit.btrfs:
        assert unit.mountpoint is not None
        at = under(root, unit.mountpoint)
        views.require_mounted(at, unit.label)
        with views.filesystem_view(at, writable=writable) as view:
            yield Tree(view)
        return
    with views.btrfs_top_level(btrfs_device(unit, root), writable=writable) as top:
        path = top / unit.path_in_top_level if unit.path_in_top_level else top
        if not path.is_dir():
            raise OperationFailed(
                f"there is no {unit.label} in the btrfs {unit.filesystem.id} under {root}"
            )
        yield Tree(path, top)
