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

from resurgo.engine.names import MAX_PATH, ROOT, join

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

# (relative path, name in its directory, the directory's fd, lstat, own fd for directories)
Item = tuple[bytes, bytes, int, os.stat_result, int | None]


def sorted_names(dir_fd: int) -> list[bytes]:
    return sorted(os.fsencode(name) for name in os.listdir(dir_fd))


def walk(
    root_fd: int,
    *,
    excludes: Collection[bytes] = (),
    empty_dirs: Collection[bytes] = (),
    note: Callable[[bytes, str], None] = lambda path, why: None,
) -> Iterator[Item]:
    """Every entry below root_fd (the root first, as ``.``) in walk order.

    A directory's own fd is valid only until the next item is asked for. ``note`` is told
    about what is skipped besides the excludes (sockets are the caller's business).
    """
    root_st = os.fstat(root_fd)
    device = root_st.st_dev
    yield ROOT, ROOT, root_fd, root_st, root_fd
    stack: list[tuple[int, bytes, Iterator[bytes]]] = [
        (root_fd, ROOT, iter(sorted_names(root_fd)))
    ]
    isdir = stat.S_ISDIR
    try:
        while stack:
            dir_fd, dir_rel, names = stack[-1]
            name = next(names, None)
            if name is None:
                stack.pop()
                if dir_fd != root_fd:
                    os.close(dir_fd)
                continue
            rel = join(dir_rel, name)
            if rel in excludes:
                continue
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
                        listing = iter(sorted_names(own))
                    except BaseException:
                        os.close(own)
                        raise
                    stack.append((own, rel, listing))
            elif st.st_dev != device:
                note(rel, "on another file system (a file mounted over this one)")
            else:
                yield rel, name, dir_fd, st, None
    finally:
        for dir_fd, _, _ in stack:
            if dir_fd != root_fd:
                os.close(dir_fd)
