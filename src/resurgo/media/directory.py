"""A directory as a medium: a local path, a mounted USB disk, an NFS mount."""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO, TypeVar

from resurgo.errors import OperationFailed
from resurgo.media.streams import Sink, Source
from resurgo.media.tree import TreeBackend

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


class LocalSink:
    def __init__(self, url: str, path: Path) -> None:
        self._url = url
        self._path = path
        try:
            self._file: BinaryIO = open(path, "xb")  # noqa: SIM115 - closed by finish/discard
        except OSError as e:
            raise os_error(url, e, f"create {path}") from None

    def write(self, data: bytes) -> None:
        try:
            self._file.write(data)
        except OSError as e:
            raise os_error(self._url, e, f"write {self._path}") from None

    def finish(self) -> None:
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
        except OSError as e:
            raise os_error(self._url, e, f"write {self._path}") from None

    def discard(self) -> None:
        with suppress(OSError):
            self._file.close()
        with suppress(OSError):
            self._path.unlink()


class LocalSource:
    def __init__(self, url: str, path: Path) -> None:
        self._url = url
        self._path = path
        try:
            self._file: BinaryIO = open(path, "rb")  # noqa: SIM115 - closed by close()
        except FileNotFoundError:
            raise OperationFailed(
                f"{path} is missing on {url}", "the set is incomplete: use another set"
            ) from None
        except OSError as e:
            raise os_error(url, e, f"open {path}") from None

    def read(self, size: int) -> bytes:
        try:
            return self._file.read(size)
        except OSError as e:
            raise os_error(self._url, e, f"read {self._path}") from None

    def fileno(self) -> int:
        return self._file.fileno()

    def close(self) -> None:
        self._file.close()


class LocalFiles:
    """FileOps on the local filesystem."""

    def __init__(self, url: str) -> None:
        self.url = url

    @contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        try:
            yield
        except OSError as e:
            raise os_error(self.url, e, doing) from None

    def _guard(self, doing: str, fn: Callable[[], T]) -> T:
        with self._errors(doing):
            return fn()

    def listdir(self, path: str) -> list[str] | None:
        try:
            return os.listdir(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as e:
            raise os_error(self.url, e, f"list {path}") from None

    def read_small(self, path: str) -> bytes | None:
        try:
            return Path(path).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as e:
            raise os_error(self.url, e, f"read {path}") from None

    def open_read(self, path: str) -> Source:
        return LocalSource(self.url, Path(path))

    def open_write(self, path: str) -> Sink:
        return LocalSink(self.url, Path(path))

    def mkdir(self, path: str) -> None:
        try:
            os.mkdir(path)
        except FileNotFoundError:
            raise OperationFailed(
                f"cannot create {path} for {self.url}: its parent directory does not exist",
                "check the path (is the USB disk mounted?)",
            ) from None
        except OSError as e:
            raise os_error(self.url, e, f"create directory {path}") from None

    def rename(self, src: str, dst: str) -> None:
        self._guard(f"rename {src}", lambda: os.rename(src, dst))

    def remove_tree(self, path: str) -> None:
        p = Path(path)
        with self._errors(f"remove {path}"):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            elif p.exists() or p.is_symlink():
                p.unlink()

    def file_sizes(self, path: str) -> dict[str, int]:
        base = Path(path)
        out: dict[str, int] = {}
        with self._errors(f"list {path}"):
            for dirpath, _dirs, files in os.walk(base):
                for name in files:
                    full = Path(dirpath, name)
                    if full.is_file() and not full.is_symlink():
                        out[full.relative_to(base).as_posix()] = full.stat().st_size
        return out

    def hold(self, path: str) -> Callable[[], None]:
        """An exclusive flock on the staging directory, for as long as the save runs: the
        lock goes with the process, so a killed save leaves a directory nobody holds."""
        with self._errors(f"lock {path}"):
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
        with self._errors(f"sync {path}"):
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def directory_backend(path: str) -> TreeBackend:
    root = os.path.abspath(path)
    return TreeBackend(root, LocalFiles(root), root)
