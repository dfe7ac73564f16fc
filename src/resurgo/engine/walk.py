"""The walk of one file system's tree, in walk order, through directory descriptors.

Depth first, pre-order, names sorted as bytes (names.walk_key): the order of archives and
manifests. It never leaves the device of the root (a mountpoint or a btrfs subvolume below
is yielded as a directory but not entered), skips excluded paths entirely and does not
enter the directories whose contents are excluded (they are still yielded, with their own
metadata). Each directory is opened relative to its parent, so no path is ever resolved
from the top again: depth is limited by open descriptors (one per level), not PATH_MAX.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Collection, Iterator

from resurgo.engine import plainsave
from resurgo.engine.names import MAX_PATH, ROOT, join

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

# (relative path, name in its directory, the directory's fd, lstat, own fd for directories)
Item = tuple[bytes, bytes, int, os.stat_result, int | None]
# Takes a run of plain files off a directory's names, from a position on (see walk).
Plain = Callable[[int, bytes, list[bytes], int], int]


def sorted_names(dir_fd: int) -> list[bytes]:
    return sorted(os.fsencode(name) for name in os.listdir(dir_fd))


# The same, compiled when it is built: no str made and encoded again for each name.
listed = plainsave.sorted_names or sorted_names


class _Listing:
    """A directory being walked: its fd, path, sorted names and the next one's position."""

    __slots__ = ("fd", "names", "pos", "rel")

    def __init__(self, fd: int, rel: bytes, names: list[bytes]) -> None:
        self.fd = fd
        self.rel = rel
        self.names = names
        self.pos = 0


def _by_parent(excludes: Collection[bytes]) -> dict[bytes, frozenset[bytes]]:
    """The excluded names of each directory that has some."""
    names: dict[bytes, set[bytes]] = {}
    for path in excludes:
        head, slash, name = path.rpartition(b"/")
        names.setdefault(head if slash else ROOT, set()).add(name)
    return {parent: frozenset(n) for parent, n in names.items()}


def walk(
    root_fd: int,
    *,
    excludes: Collection[bytes] = (),
    empty_dirs: Collection[bytes] = (),
    note: Callable[[bytes, str], None] = lambda path, why: None,
    plain: Plain | None = None,
) -> Iterator[Item]:
    """Every entry below root_fd (the root first, as ``.``) in walk order.

    A directory's own fd is valid only until the next item is asked for. ``note`` is told
    about what is skipped besides the excludes (sockets are the caller's business).
    ``plain(dir_fd, dir_rel, names, pos)``, when given, is offered the names of a
    directory from ``pos`` on before each is looked at, and takes as many as it likes
    (never a directory), returning the position of the first it left: those it took are
    not yielded. Excluded names are never offered.
    """
    excluded = _by_parent(excludes)

    def listing(fd: int, rel: bytes) -> _Listing:
        names = listed(fd)
        if rel in excluded:
            gone = excluded[rel]
            names = [n for n in names if n not in gone]
        return _Listing(fd, rel, names)

    root_st = os.fstat(root_fd)
    device = root_st.st_dev
    yield ROOT, ROOT, root_fd, root_st, root_fd
    stack = [listing(root_fd, ROOT)]
    isdir = stat.S_ISDIR
    try:
        while stack:
            top = stack[-1]
            dir_fd, names = top.fd, top.names
            if plain is not None and top.pos < len(names):
                top.pos = plain(dir_fd, top.rel, names, top.pos)
            if top.pos >= len(names):
                stack.pop()
                if dir_fd != root_fd:
                    os.close(dir_fd)
                continue
            name = names[top.pos]
            top.pos += 1
            rel = join(top.rel, name)
            if len(rel) > MAX_PATH:  # what a restore refuses is not saved either
                note(rel[:200] + b"...", f"a path longer than {MAX_PATH} bytes: not saved")
                continue
            try:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                note(rel, "vanished while saving")
                continue
            if isdir(st.st_mode):
                try:
                    own = os.open(name, DIR_FLAGS, dir_fd=dir_fd)
                except (FileNotFoundError, NotADirectoryError):
                    note(rel, "vanished while saving")
                    continue
                try:
                    yield rel, name, dir_fd, st, own
                except BaseException:
                    os.close(own)
                    raise
                if st.st_dev != device or rel in empty_dirs:
                    os.close(own)
                else:
                    try:
                        below = listing(own, rel)
                    except BaseException:
                        os.close(own)
                        raise
                    stack.append(below)
            elif st.st_dev != device:
                note(rel, "on another file system (a file mounted over this one)")
            else:
                yield rel, name, dir_fd, st, None
    finally:
        for top in stack:
            if top.fd != root_fd:
                os.close(top.fd)
