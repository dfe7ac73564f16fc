"""ls: the entries of a set as the saved system showed them, read from its manifests.

A set's last manifest of each unit lists that tree whole at the time of the set, each
entry with its metadata and the set of the chain whose archive holds its data: an
incremental set is listed as it was saved, entries kept from its parents included, and no
archive is read. Paths are the saved system's (systempaths): a directory lists its
children, the roots of the filesystems mounted on it among them; a file lists itself.

In a package-aware set a tree's unchanged package files are not in its manifest but in its
pooled list (resurgo.pool.lists), with the same metadata: they are listed with the others,
each naming the package of the medium's pool that holds its content.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from resurgo.engine.manifest import Entry, ManifestError, decode_entry
from resurgo.engine.names import ROOT, escape
from resurgo.engine.records import BLK, CHR, DIR, FIFO, FILE, HARDLINK, SYMLINK
from resurgo.engine.source import ManifestStream
from resurgo.errors import BadInput, Damaged, ExitCode
from resurgo.pool.lists import PackageRef
from resurgo.recovery.load import LoadedSet
from resurgo.recovery.systempaths import Mounted, SystemTree, is_under, parent

KIND_NAMES = {FILE: "file", DIR: "directory", SYMLINK: "symlink", HARDLINK: "hardlink",
              CHR: "char-device", BLK: "block-device", FIFO: "fifo"}


def shown(path: str) -> str:
    """A system path as it is printed: bytes that are not printable UTF-8 escaped (\\xHH),
    as in the manifests, so that no name can play tricks on a terminal."""
    return escape(os.fsencode(path))


@dataclass(frozen=True)
class Listed:
    path: str  # in the saved system
    mounted: Mounted
    entry: Entry
    chain: tuple[str, ...]  # the sets of the manifest's chain
    # The package of the pool holding a pooled file's content (None: an archive does).
    package: PackageRef | None = None

    @property
    def key(self) -> tuple[str, ...]:
        return tuple(p for p in self.path.split("/") if p)

    def data(self) -> dict[str, Any]:
        e = self.entry
        return {
            "path": shown(self.path),
            "type": KIND_NAMES[e.kind],
            "filesystem": self.mounted.unit.key,
            "unit": self.mounted.unit.label,
            "mountpoint": self.mounted.mountpoint,
            "mode": e.mode,
            "permissions": stat.filemode(e.mode),
            "uid": e.uid,
            "gid": e.gid,
            "size": e.size,
            "mtime_ns": e.mtime_ns,
            "mtime": mtime_text(e.mtime_ns, iso=True),
            "rdev": [os.major(e.rdev), os.minor(e.rdev)] if e.kind in (CHR, BLK) else None,
            "digest": e.digest or None,
            "xattrs_digest": e.xattr_digest or None,
            "target": self.target(),
            "set": self.chain[e.set_index],
            "package": None if self.package is None else {
                "name": self.package.name, "version": self.package.version,
                "architecture": self.package.architecture, "sha256": self.package.sha256},
        }

    def target(self) -> str | None:
        e = self.entry
        if e.kind == SYMLINK:
            return escape(e.target)
        if e.kind == HARDLINK:
            return shown(self.mounted.system_path(e.target))
        return None


def decoded(line: str, name: str) -> Entry:
    """A manifest line whose path and order raw_entries checked, decoded whole."""
    try:
        return decode_entry(line)
    except ManifestError as e:
        raise Damaged(f"{name} is damaged: {e}", "use another copy of the set, or another "
                      "set") from None


def mtime_text(ns: int, *, iso: bool = False) -> str:
    when = datetime.fromtimestamp(ns // 1_000_000_000, UTC)
    return when.isoformat() if iso else f"{when:%Y-%m-%d %H:%M:%S}"


@dataclass(frozen=True)
class Browse:
    set_id: str
    medium: str
    path: str
    long: bool
    recursive: bool
    entries: tuple[Listed, ...]

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.OK

    def name(self, item: Listed) -> str:
        if item.path == self.path:
            return shown(item.path)
        cut = len(self.path) if self.path != "/" else 0
        return shown(item.path[cut:].lstrip("/"))

    def text(self) -> str:
        if not self.long:
            return "".join(self.name(i) + "\n" for i in self.entries)
        rows = []
        for i in self.entries:
            e = i.entry
            size = (f"{os.major(e.rdev)}, {os.minor(e.rdev)}" if e.kind in (CHR, BLK)
                    else str(e.size))
            name = self.name(i)
            target = i.target()
            if target is not None:
                name += (" -> " if e.kind == SYMLINK else " => ") + target
            if i.package is not None:
                name += f"  [{i.package.name} {i.package.version}]"
            rows.append((stat.filemode(e.mode), f"{e.uid}:{e.gid}", size,
                         mtime_text(e.mtime_ns), i.mounted.unit.key, name))
        if not rows:
            return ""
        widths = [max(len(r[c]) for r in rows) for c in range(5)]
        return "".join(
            f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}  "
            f"{r[3]}  {r[4]:<{widths[4]}}  {r[5]}\n" for r in rows)

    def data(self) -> dict[str, Any]:
        return {"set": self.set_id, "medium": self.medium, "path": shown(self.path),
                "entries": [i.data() for i in self.entries]}


def _read(loaded: LoadedSet, m: Mounted, path: str, recursive: bool, *, root_only: bool,
          found: list[Listed]) -> Listed | None:
    """The entries of m's tree at path and (below it) to list; the one at path."""
    at: Listed | None = None
    rel = m.rel(path) if is_under(path, m.mountpoint) else None
    with ManifestStream(loaded.manifest(m.unit), loaded.identity) as ms:
        chain = ms.header.chain
        seen = False
        # Only the lines listed are decoded whole.
        for epath, _, line in ms.raw_entries():
            if root_only:
                if epath == ROOT:
                    found.append(Listed(m.mountpoint, m, decoded(line, ms.name), chain))
                break
            inside = rel is not None and (
                rel == ROOT or epath == rel or epath.startswith(rel + b"/"))
            if not inside:
                if seen:
                    break  # walk order: the subtree is behind us
                continue
            seen = True
            if not m.owns(epath):
                continue
            system_path = m.system_path(epath)
            if system_path != path and not recursive and parent(system_path) != path:
                continue
            item = Listed(system_path, m, decoded(line, ms.name), chain)
            if item.path == path:
                at = item
            elif recursive or parent(item.path) == path:
                found.append(item)
    if not root_only and rel is not None:
        pooled = _pooled(loaded, m, path, rel, recursive, found)
        at = at or pooled
    return at


def _pooled(loaded: LoadedSet, m: Mounted, path: str, rel: bytes, recursive: bool,
            found: list[Listed]) -> Listed | None:
    """_read's part for the tree's pooled files (all files: none is a directory)."""
    if loaded.pool is None:
        return None
    at: Listed | None = None
    for f in loaded.pooled(m.unit):
        if not (rel == ROOT or f.path == rel or f.path.startswith(rel + b"/")):
            continue
        if not m.owns(f.path):
            continue
        system_path = m.system_path(f.path)
        if system_path != path and not recursive and parent(system_path) != path:
            continue
        item = Listed(system_path, m, f.entry(), (loaded.id,),
                      loaded.pool.packages.get(f.package))
        if item.path == path:
            at = item
        else:
            found.append(item)
    return at


def list_path(loaded: LoadedSet, medium: str, path: str, *, long: bool = False,
              recursive: bool = False) -> Browse:
    """The entries at ``path`` of the saved system (a normalised absolute path), as the
    module docstring says. BadInput when the set holds no such path."""
    tree = SystemTree(loaded.units)
    owner = tree.owner(path)
    found: list[Listed] = []
    at = _read(loaded, owner, path, recursive, root_only=False, found=found) if owner else None
    if at is None:
        raise BadInput(f"{path} is not in recovery set {loaded.id}",
                       "resurgo ls --from MEDIUM [--set ID] DIRECTORY lists what it holds")
    if at.entry.kind == DIR:
        for m in tree.below(path):
            if m is owner:
                continue
            if recursive:
                root = _read(loaded, m, m.mountpoint, True, root_only=False, found=found)
                if root is not None:
                    found.append(root)
            elif parent(m.mountpoint) == path:
                _read(loaded, m, m.mountpoint, False, root_only=True, found=found)
        entries = _children(found, tree)
    else:
        entries = [at]
    return Browse(loaded.id, medium, path, long, recursive, tuple(entries))


def _children(found: list[Listed], tree: SystemTree) -> list[Listed]:
    """One entry per path (a mountpoint is its unit's root, not the directory under it),
    in walk order."""
    by_path: dict[str, Listed] = {}
    for item in found:
        owner = tree.owner(item.path)
        if owner is not None and owner.mountpoint != item.mounted.mountpoint:
            continue  # the directory a filesystem was mounted on: hidden by it
        by_path[item.path] = item
    return sorted(by_path.values(), key=lambda i: i.key)
