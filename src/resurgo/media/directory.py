"""A directory as a medium: a local path, a mounted USB disk, an NFS mount."""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO, TypeVar

from resurgo.errors import Damaged, OperationFailed
from resurgo.media import limits
from resurgo.media.streams import Sink, Source
from resurgo.media.tree import TreeBackend, not_plain, parts_below

T = TypeVar("T")


def os_error(url: str, e: OSError, doing: str) -> OperationFailed:
    """One clear message for an OSError on a medium."""
    what = os.strerror(e.errno) if e.errno else str(e)
    hint = None
    if e.errno == errno.ENOSPC or e.errno == errno.EDQUOT:
        hint = "the medium is full: delete old recovery sets (prune) or use a larger medium"
    elif e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        hint = "the medium must be writable by this user (is it mounted read-only?)"
    elif e.errno == errno.EIO:
        hint = "the medium reports I/O errors: check the disk and its cable"
    return OperationFailed(f"cannot {doing} on {url}: {what}", hint)


# Below the medium's root nothing is followed: a set directory, a subdirectory or a file
# that is a symbolic link is refused (it could point at /dev/zero, or at files of the
# machine), and a file is opened without blocking (a FIFO named set.json would hang an open)
# and must be a regular file.
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class NotPlain(Exception):
    """A path below the medium's root that is a symbolic link or not a regular file."""


class LocalSink:
    def __init__(self, url: str, path: Path, fd: int, shown: str | None = None) -> None:
        self._url = url
        self._path = path
        self._shown = shown or str(path)
        self._file: BinaryIO = os.fdopen(fd, "wb")

    def write(self, data: bytes) -> None:
        try:
            self._file.write(data)
        except OSError as e:
            raise os_error(self._url, e, f"write {self._shown}") from None

    def finish(self) -> None:
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
        except OSError as e:
            raise os_error(self._url, e, f"write {self._shown}") from None

    def discard(self) -> None:
        with suppress(OSError):
            self._file.close()
        with suppress(OSError):
            self._path.unlink()


class LocalSource:
    def __init__(self, url: str, path: Path, fd: int, shown: str | None = None) -> None:
        """The file at path, open as fd: LocalFiles.open_read opens it, a regular file
        reached through no link (its one way in); ``shown``: its name in messages."""
        self._url = url
        self._path = path
        self._shown = shown or str(path)
        self._file: BinaryIO = os.fdopen(fd, "rb")

    def read(self, size: int) -> bytes:
        try:
            return self._file.read(size)
        except OSError as e:
            raise os_error(self._url, e, f"read {self._shown}") from None

    def fileno(self) -> int:
        return self._file.fileno()

    def close(self) -> None:
        self._file.close()


def _plain_file(fd: int) -> int:
    """fd, if it is a regular file (closed and NotPlain otherwise), in blocking mode again."""
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotPlain
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _private(fd: int, mode: int, private: limits.Private) -> None:
    try:
        private.make(fd, mode)
    except BaseException:
        os.close(fd)
        raise


class LocalFiles:
    """FileOps on the local filesystem; nothing below ``root`` is followed if a link.

    Messages name a path as it is, or, when ``inside``, by its place below the root
    (next to the URL, which names the root): a share's root is a /proc/self/fd path of
    this process, which would tell its reader nothing."""

    def __init__(self, url: str, root: str, *, inside: bool = False) -> None:
        self.url = url
        self.root = root
        self.inside = inside
        self.private = limits.Private(url)

    def shown(self, path: str) -> str:
        """``path`` as messages name it."""
        if not self.inside:
            return path
        try:
            return "/".join(parts_below(self.root, path)) or "."
        except ValueError:
            return path

    @contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        try:
            yield
        except OSError as e:
            raise os_error(self.url, e, doing) from None

    def _guard(self, doing: str, fn: Callable[[], T]) -> T:
        with self._errors(doing):
            return fn()

    @staticmethod
    def _at(dir_fd: int, name: str, flags: int, mode: int = 0) -> int:
        try:
            return os.open(name, flags, mode, dir_fd=dir_fd)
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENOTDIR):
                with suppress(OSError):
                    if stat.S_ISLNK(os.lstat(name, dir_fd=dir_fd).st_mode):
                        raise NotPlain from None
            raise

    def _dir(self, parts: list[str]) -> int:
        """The directory root/parts, walked down from the root without following a link
        (the root itself may be one: the user named it)."""
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        for part in parts:
            try:
                new = self._at(fd, part, _DIR)
            finally:
                os.close(fd)
            fd = new
        return fd

    def _open(self, path: str, flags: int, mode: int = 0) -> int:
        """Open a path below the root, nothing on the way followed."""
        *parents, name = parts_below(self.root, path)
        fd = self._dir(parents)
        try:
            return self._at(fd, name, flags, mode)
        finally:
            os.close(fd)

    def listdir(self, path: str) -> list[str] | None:
        try:
            return os.listdir(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as e:
            raise os_error(self.url, e, f"list {self.shown(path)}") from None

    def read_small(self, path: str, limit: int) -> bytes | None:
        try:
            fd = _plain_file(self._open(path, _READ))
        except (FileNotFoundError, NotADirectoryError):
            return None
        except NotPlain:
            raise not_plain(self.shown(path), self.url) from None
        except OSError as e:
            raise os_error(self.url, e, f"read {self.shown(path)}") from None
        with os.fdopen(fd, "rb") as f:
            try:
                size = os.fstat(f.fileno()).st_size
                if size > limit:
                    raise limits.too_large(self.shown(path), self.url, size, limit)
                data = f.read(limit + 1)  # a file that grew meanwhile: refused too
            except OSError as e:
                raise os_error(self.url, e, f"read {self.shown(path)}") from None
        if len(data) > limit:
            raise limits.too_large(self.shown(path), self.url, f"more than {limit}", limit)
        return data

    def open_read(self, path: str) -> Source:
        try:
            fd = _plain_file(self._open(path, _READ))
        except FileNotFoundError:
            raise Damaged(
                f"{self.shown(path)} is missing on {self.url}",
                "the set is incomplete: use another set",
            ) from None
        except NotPlain:
            raise not_plain(self.shown(path), self.url) from None
        except OSError as e:
            raise os_error(self.url, e, f"open {self.shown(path)}") from None
        return LocalSource(self.url, Path(path), fd, self.shown(path))

    def open_write(self, path: str) -> Sink:
        try:
            fd = self._open(path, _CREATE, limits.FILE_MODE)
            _private(fd, limits.FILE_MODE, self.private)
        except NotPlain:
            raise not_plain(self.shown(path), self.url) from None
        except OSError as e:
            raise os_error(self.url, e, f"create {self.shown(path)}") from None
        return LocalSink(self.url, Path(path), fd, self.shown(path))

    def mkdir(self, path: str) -> None:
        try:
            parts = parts_below(self.root, path)
            if not parts:  # the medium's own directory, when a save creates it
                os.mkdir(self.root, limits.DIR_MODE)
                fd = os.open(self.root, _DIR)
            else:
                parent = self._dir(parts[:-1])
                try:
                    os.mkdir(parts[-1], limits.DIR_MODE, dir_fd=parent)
                    fd = self._at(parent, parts[-1], _DIR)
                finally:
                    os.close(parent)
            _private(fd, limits.DIR_MODE, self.private)
            os.close(fd)
        except FileNotFoundError:
            raise OperationFailed(
                f"cannot create {self.shown(path)} for {self.url}: its parent directory does "
                "not exist",
                "check the path (is the USB disk mounted?)",
            ) from None
        except NotPlain:
            raise not_plain(self.shown(path), self.url) from None
        except OSError as e:
            raise os_error(self.url, e, f"create directory {self.shown(path)}") from None

    def rename(self, src: str, dst: str) -> None:
        self._guard(f"rename {self.shown(src)}", lambda: os.rename(src, dst))

    def remove_tree(self, path: str) -> None:
        p = Path(path)
        with self._errors(f"remove {self.shown(path)}"):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            elif p.exists() or p.is_symlink():
                p.unlink()

    def file_sizes(self, path: str) -> dict[str, int]:
        base = Path(path)
        out: dict[str, int] = {}
        with self._errors(f"list {self.shown(path)}"):
            if base.is_symlink():  # os.walk would list the directory it points to
                raise not_plain(self.shown(path), self.url)
            for dirpath, _dirs, files in os.walk(base):
                for name in files:
                    full = Path(dirpath, name)
                    if full.is_file() and not full.is_symlink():
                        out[full.relative_to(base).as_posix()] = full.stat().st_size
        return out

    def hold(self, path: str) -> Callable[[], None]:
        """An exclusive flock on the staging directory, for as long as the save runs: the
        lock goes with the process, so a killed save leaves a directory nobody holds."""
        with self._errors(f"lock {self.shown(path)}"):
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BaseException:
                os.close(fd)
                raise
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                os.close(fd)

        return release

    def busy(self, path: str) -> bool:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:
            return False  # a file system without locks: as before, a leftover
        finally:
            os.close(fd)
        return False

    def sync_dir(self, path: str) -> None:
        with self._errors(f"sync {self.shown(path)}"):
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def directory_backend(path: str) -> TreeBackend:
    root = os.path.abspath(path)
    return TreeBackend(root, LocalFiles(root, root), root)
