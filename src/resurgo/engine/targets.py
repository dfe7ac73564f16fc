"""Creating entries below a restore target without ever leaving it.

Every directory is opened relative to its parent with O_NOFOLLOW | O_DIRECTORY, starting
from the target's own descriptor, so a symlink in the archive (or already in the target)
can never redirect a write: a path that needs a directory where a symlink or a file is
stops the restore with UnsafePath. Names come from archives that passed names.check_path,
so ``..`` and absolute paths never get here.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable
from typing import TypeVar

from resurgo.engine.errors import RestoreFailed, UnsafePath
from resurgo.engine.names import escape

T = TypeVar("T")

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def open_dir(parent_fd: int, name: bytes, *, create: bool, archive: str, path: bytes) -> int:
    """The directory ``name`` in parent_fd, made (mode 0700) when missing and ``create``."""
    for _ in range(2):
        try:
            return os.open(name, DIR_FLAGS, dir_fd=parent_fd)
        except FileNotFoundError:
            if not create:
                raise
            with contextlib.suppress(FileExistsError):  # made meanwhile: open it
                os.mkdir(name, 0o700, dir_fd=parent_fd)
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENOTDIR):
                raise UnsafePath(archive, escape(path),
                                 "a symlink or a file stands where a directory must be") from None
            raise RestoreFailed(f"cannot open the directory {escape(path)}: {e.strerror}",
                                archive=archive, paths=(escape(path),)) from None
    raise RestoreFailed(f"cannot make the directory {escape(path)}", archive=archive)


def replace(make: Callable[[], T], dir_fd: int, name: bytes) -> T:
    """make() the entry; when something is in the way (a restore over an existing tree),
    remove it first — a file or symlink only, never a directory with its contents."""
    try:
        return make()
    except FileExistsError:
        try:
            os.unlink(name, dir_fd=dir_fd)
        except IsADirectoryError:
            os.rmdir(name, dir_fd=dir_fd)
        return make()


class DirCache:
    """Open descriptors of the directories leading to the current one.

    Entries arrive in walk order, so the parent of the next entry is nearly always the
    current directory or close to it: only the components that differ are opened. With
    ``track_setgid``, ``setgid`` tells whether the current directory has the setgid bit
    (its new files get its group, not the creator's).
    """

    def __init__(self, root_fd: int, archive: str, *, track_setgid: bool = False) -> None:
        self._root = root_fd
        self._fds: list[int] = []
        self._names: list[bytes] = []
        self._track = track_setgid
        self._setgid: list[bool] = [self._is_setgid(root_fd)] if track_setgid else [False]
        self.archive = archive

    def _is_setgid(self, fd: int) -> bool:
        return bool(os.fstat(fd).st_mode & stat.S_ISGID) if self._track else False

    @property
    def setgid(self) -> bool:
        return self._setgid[-1]

    def fd(self, parts: tuple[bytes, ...] | list[bytes], *, create: bool = True) -> int:
        names = self._names
        n = 0
        limit = min(len(names), len(parts))
        while n < limit and names[n] == parts[n]:
            n += 1
        while len(names) > n:
            names.pop()
            self._setgid.pop()
            os.close(self._fds.pop())
        for part in parts[n:]:
            parent = self._fds[-1] if self._fds else self._root
            fd = open_dir(parent, part, create=create, archive=self.archive,
                          path=b"/".join([*names, part]))
            self._fds.append(fd)
            self._setgid.append(self._is_setgid(fd))
            names.append(part)
        return self._fds[-1] if self._fds else self._root

    def close(self) -> None:
        while self._fds:
            os.close(self._fds.pop())
            self._setgid.pop()
        self._names.clear()
