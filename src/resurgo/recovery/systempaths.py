"""Paths of the saved system (``/etc/hostname``) and where a set holds them (pure).

A set archives one tree per filesystem (and btrfs subvolume): a path of the saved system
is in the tree of the unit mounted deepest above it, at the path below that mountpoint
(``/home/alice/x`` is ``alice/x`` of the unit mounted at ``/home``; ``/home`` itself is
that unit's root ``.``). What a unit's tree holds below another unit's mountpoint was
hidden by that mount in the saved system: it is no path of the system, and neither
``ls`` nor ``restore`` shows it. Units that were not mounted (btrfs subvolumes reached
through the top level alone) have no system paths.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from resurgo.engine.names import ROOT
from resurgo.errors import BadInput
from resurgo.restoreunits import Unit


def parse(text: str, option: str = "--path") -> str:
    """A path of the saved system as given on the command line, normalised: absolute,
    without ``.``, ``..``, empty components or a NUL byte."""
    if "\x00" in text:
        raise BadInput(f"{option} {text!r}: holds a NUL byte")
    if not text.startswith("/"):
        raise BadInput(f"{option} {text}: not an absolute path of the saved system",
                       "name it as it was on the saved system, e.g. /etc/hostname")
    parts = [p for p in text.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise BadInput(f"{option} {text}: holds '..'",
                       "name the path as it was on the saved system, without '..'")
    return "/" + "/".join(parts)


def is_under(path: str, top: str) -> bool:
    """path is top or below it (both normalised absolute paths)."""
    return top == "/" or path == top or path.startswith(top + "/")


def parent(path: str) -> str:
    return posixpath.dirname(path) if path != "/" else "/"


def depth(path: str) -> int:
    return 0 if path == "/" else path.count("/")


def ancestors(path: str) -> list[str]:
    """The directories above path, nearest last, "/" first; none for "/"."""
    out: list[str] = []
    while path != "/":
        path = parent(path)
        out.append(path)
    return out[::-1]


@dataclass(frozen=True)
class Mounted:
    unit: Unit
    mountpoint: str
    # The relative paths (in this unit's tree) of the mountpoints of units mounted below
    # it: what lies under them was hidden in the saved system.
    hidden: tuple[bytes, ...]

    def system_path(self, rel: bytes) -> str:
        if rel == ROOT:
            return self.mountpoint
        return posixpath.join(self.mountpoint, os.fsdecode(rel))

    def rel(self, path: str) -> bytes:
        """The path in this unit's tree of a system path at or under its mountpoint."""
        if path == self.mountpoint:
            return ROOT
        cut = len(self.mountpoint) if self.mountpoint != "/" else 0
        return os.fsencode(path[cut:].lstrip("/"))

    def owns(self, rel: bytes) -> bool:
        """The entry at rel was visible in the saved system (not under another mount)."""
        return rel == ROOT or not any(
            rel == h or rel.startswith(h + b"/") for h in self.hidden)


class SystemTree:
    """The units of a set that were mounted, each where."""

    def __init__(self, units: Iterable[Unit]) -> None:
        found = [(u.mountpoint, u) for u in units if u.mountpoint is not None]
        mounted: list[Mounted] = []
        for mountpoint, unit in sorted(found, key=lambda x: x[0]):
            hidden = tuple(
                Mounted(unit, mountpoint, ()).rel(other)
                for other, _ in found
                if other != mountpoint and is_under(other, mountpoint))
            mounted.append(Mounted(unit, mountpoint, hidden))
        self.mounted: tuple[Mounted, ...] = tuple(mounted)

    def owner(self, path: str) -> Mounted | None:
        """The unit whose tree holds the system path (the deepest mountpoint above it)."""
        best: Mounted | None = None
        for m in self.mounted:
            if is_under(path, m.mountpoint) and (
                    best is None or len(m.mountpoint) > len(best.mountpoint)):
                best = m
        return best

    def below(self, path: str) -> list[Mounted]:
        """The units mounted at or below the system path."""
        return [m for m in self.mounted if is_under(m.mountpoint, path)]


class Wanted(StrEnum):
    CHOSEN = "chosen"  # named, or below a directory named
    PARENT = "parent"  # a directory on the way to one: made, with its saved metadata


class Selection:
    """The system paths chosen: what each unit's entries are to a restore of them."""

    def __init__(self, tree: SystemTree, paths: Sequence[str]) -> None:
        self.tree = tree
        self.paths = tuple(dict.fromkeys(paths))
        self._parents = frozenset(a for p in self.paths for a in ancestors(p))

    def units(self) -> list[Mounted]:
        """The units holding a chosen path or a directory on the way to one, deepest
        mountpoint first (a restore in that order sets each directory's metadata after
        everything below it was made)."""
        found: dict[str, Mounted] = {}
        for p in self.paths:
            for m in self.tree.below(p):
                found[m.mountpoint] = m
            # "/" is the target directory itself: its tree is read for it only when
            # chosen, or for a directory on the way.
            for a in (*ancestors(p)[1:], p):
                owner = self.tree.owner(a)
                if owner is not None:
                    found[owner.mountpoint] = owner
        return sorted(found.values(), key=lambda m: (-depth(m.mountpoint), m.mountpoint))

    def wants(self, m: Mounted, rel: bytes) -> Wanted | None:
        if not m.owns(rel):
            return None
        path = m.system_path(rel)
        if any(is_under(path, p) for p in self.paths):
            return Wanted.CHOSEN
        # The target directory itself stands for "/": it keeps its own metadata unless
        # "/" is chosen.
        if path != "/" and path in self._parents:
            return Wanted.PARENT
        return None
