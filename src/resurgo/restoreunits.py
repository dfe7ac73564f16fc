"""What a recovery set archives: one unit per ``resurgo:restore`` command (pure).

The description's commands are the contract between save and recover: save writes an
archive and a manifest for each ``resurgo:restore ID [MOUNTPOINT]`` command, recover
restores each from them, in the commands' order. ID is a filesystem (restored where it is
mounted; for a btrfs: its top level) or a btrfs subvolume (restored through the top level
of its filesystem, mounted or not).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from resurgo.errors import BadInput
from resurgo.model import Command, Description, Filesystem, FsType, Subvolume

RESTORE = "resurgo:restore"
BUILTIN_PREFIX = "resurgo:"

_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]")


@dataclass(frozen=True)
class Unit:
    """One tree with an archive of its own: a filesystem, a btrfs top level or subvolume."""

    key: str  # the id the command names
    filesystem: Filesystem
    subvolume: Subvolume | None
    # Where it is mounted in the saved system; None: a btrfs tree that is not mounted.
    mountpoint: str | None
    command: Command

    @property
    def btrfs(self) -> bool:
        return self.filesystem.type == FsType.BTRFS

    @property
    def path_in_top_level(self) -> str:
        """A btrfs tree's path below the top level ("" for the top level itself)."""
        return self.subvolume.path.strip("/") if self.subvolume is not None else ""

    @property
    def readonly(self) -> bool:
        return self.subvolume is not None and self.subvolume.readonly

    @property
    def label(self) -> str:
        """How reports name it: the mountpoint, or the subvolume's path."""
        if self.subvolume is not None:
            at = f" at {self.mountpoint}" if self.mountpoint else ""
            return f"btrfs subvolume {self.subvolume.path}{at}"
        if self.btrfs:
            return f"btrfs top level of {self.filesystem.id}" + (
                f" at {self.mountpoint}" if self.mountpoint else ""
            )
        return self.mountpoint or self.key

    @property
    def archive_name(self) -> str:
        return f"archives/{file_key(self.key)}.archive"

    @property
    def manifest_name(self) -> str:
        return f"archives/{file_key(self.key)}.manifest"

    @property
    def pooled_name(self) -> str:
        """The files of the tree its packages give back (a package-aware set's)."""
        return f"archives/{file_key(self.key)}.pooled"


def file_key(key: str) -> str:
    """The id as a name a set may hold (letters, digits and ._+-, not starting with a dot)."""
    safe = _UNSAFE.sub("_", key)[:100]
    return "_" + safe[1:] if safe.startswith(".") else safe or "_"


def under(root: Path, mountpoint: str) -> Path:
    """Where a saved mountpoint is on a system mounted at root."""
    return root / mountpoint.lstrip("/") if mountpoint != "/" else root


def is_restore(command: Command) -> bool:
    return command.program == RESTORE


def unit_of(desc: Description, command: Command) -> Unit:
    """The unit a ``resurgo:restore`` command names; BadInput when it names nothing."""
    where = f"command {command.seq} ({RESTORE} {' '.join(command.args)})"
    if len(command.args) not in (1, 2) or not command.args[0]:
        raise BadInput(f"{where}: takes an id and a mountpoint (ID MOUNTPOINT)")
    key = command.args[0]
    mountpoint = command.args[1] if len(command.args) == 2 and command.args[1] else None
    filesystems = {fs.id: fs for fs in desc.filesystems}
    subvolume = next((sv for sv in desc.subvolumes if sv.id == key), None)
    if subvolume is not None:
        fs = filesystems.get(subvolume.filesystem)
        if fs is None:
            raise BadInput(f"{where}: subvolume {key} is in no filesystem of the description")
    else:
        found = filesystems.get(key)
        if found is None:
            raise BadInput(f"{where}: the description has no filesystem or subvolume {key!r}")
        fs = found
    if mountpoint is not None and not mountpoint.startswith("/"):
        raise BadInput(f"{where}: the mountpoint {mountpoint!r} is not an absolute path")
    if fs.type != FsType.BTRFS:
        if mountpoint is None:
            raise BadInput(f"{where}: a {fs.type} filesystem is restored where it is mounted: "
                           "name its mountpoint")
        if mountpoint not in {m.mountpoint for m in fs.mounts}:
            raise BadInput(f"{where}: {fs.id} is not mounted at {mountpoint} in the description")
    else:
        mounted = {m.mountpoint: m.subvolume for m in fs.mounts}
        want = subvolume.id if subvolume is not None else None
        if mountpoint is not None and mounted.get(mountpoint, want) != want:
            # One archive per btrfs tree: the top level is not what is mounted there.
            raise BadInput(
                f"{where}: {mountpoint} is subvolume {mounted[mountpoint]} of {fs.id}, not "
                f"{'its top level' if want is None else want}",
                "restore each btrfs subvolume by its own command (describe writes them)",
            )
    return Unit(key, fs, subvolume, mountpoint, command)


def units(desc: Description) -> list[Unit]:
    """The units of every ``resurgo:restore`` command, in the commands' order."""
    out = [unit_of(desc, c) for c in desc.commands if is_restore(c)]
    names: dict[str, str] = {}
    for u in out:
        other = names.setdefault(u.archive_name, u.key)
        if other != u.key:
            raise BadInput(f"{other} and {u.key} would share the archive {u.archive_name}",
                           "give the records ids that differ in more than punctuation")
        if other == u.key and sum(1 for v in out if v.key == u.key) > 1:
            raise BadInput(f"{u.key} is restored by more than one command")
    return out
