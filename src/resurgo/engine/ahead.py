"""Reading small files ahead of the save's serializer, in a thread.

The save walks the tree and writes one stream in walk order. Per small file the costly
part is system calls and hashing (fstat, the attribute list, read, sha256, close), all of
which release the GIL; the walk, the record encoding and the manifest line are Python. So
the walk opens each small file (its directory's descriptor is only valid until the walk
moves on) and hands batches of open descriptors to a reader thread, which does the rest
while the walk goes on; the results come back in walk order. Everything that is not a
small file goes into the same queue as a call made when its turn comes, so the stream
keeps the walk's order exactly.

Memory stays bounded: a batch closes at BATCH_FILES files or BATCH_BYTES of data, and at
most DEPTH batches wait.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from resurgo.engine import fsmeta

SMALL = 1 << 20
BATCH_FILES = 64
BATCH_BYTES = 8 << 20
BATCH_ITEMS = 256
DEPTH = 3


@dataclass(frozen=True)
class Read:
    """A small file as the reader thread found it."""

    st: os.stat_result
    xattrs: tuple[tuple[str, bytes], ...]
    data: bytes
    digest: bytes
    shrank: bool


@dataclass(frozen=True)
class Stream:
    """Not a small dense file after all (it grew, or has holes): the serializer streams
    it from the descriptor, which it then owns."""

    fd: int
    st: os.stat_result


@dataclass(frozen=True)
class Failed:
    why: str  # "replaced" or the system's message


Result = Read | Stream | Failed
# What the serializer is given back for each small file: (path, result).
OnFile = Callable[[bytes, Result], None]


def is_small(st: os.stat_result) -> bool:
    """A file read in one piece: at most SMALL bytes, no holes."""
    return st.st_size <= SMALL and st.st_blocks * 512 >= st.st_size


def read_small(fd: int, st: os.stat_result) -> Result:
    """Everything about an open small file; closes fd unless it returns a Stream."""
    keep = False
    try:
        now = os.fstat(fd)
        if not stat.S_ISREG(now.st_mode):
            return Failed("replaced")
        if now.st_ino != st.st_ino:
            st = now
        if not is_small(now):
            keep = True
            return Stream(fd, st)
        xattrs = fsmeta.read_xattrs(fd)
        size = st.st_size
        data = os.read(fd, size) if size else b""
        shrank = len(data) < size
        if shrank:
            data += bytes(size - len(data))
        return Read(st, xattrs, data, hashlib.sha256(data).digest(), shrank)
    except OSError as e:
        return Failed(e.strerror or str(e))
    finally:
        if not keep:
            os.close(fd)


def _read_batch(files: list[tuple[int, os.stat_result]]) -> list[Result]:
    return [read_small(fd, st) for fd, st in files]


# A queued item: a file (path, fd, lstat, read ahead or not) or a call.
_Item = tuple[bytes, int, os.stat_result, bool] | Callable[[], None]


def _close(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


class ReadAhead:
    """The queue between the walk and the serializer (see the module docstring).

    Every descriptor given to it is delivered (a Read result's is closed already, a
    Stream's goes to on_file) or, when close() comes first, closed.
    """

    def __init__(self, on_file: OnFile) -> None:
        self._on_file = on_file
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="read-ahead")
        self._waiting: deque[tuple[list[_Item], Future[list[Result]] | None]] = deque()
        self._batch: list[_Item] = []
        self._files = 0
        self._bytes = 0

    def file(self, rel: bytes, fd: int, st: os.stat_result) -> None:
        """A file the walk opened (fd is ours now): a small one is read ahead, any other
        comes back as a Stream in its turn."""
        small = is_small(st)
        self._batch.append((rel, fd, st, small))
        if small:
            self._files += 1
            self._bytes += st.st_size
        if (self._files >= BATCH_FILES or self._bytes >= BATCH_BYTES
                or len(self._batch) >= BATCH_ITEMS):
            self._submit()

    def call(self, fn: Callable[[], None]) -> None:
        """fn() when its turn comes (after what was queued before it)."""
        self._batch.append(fn)
        if len(self._batch) >= BATCH_ITEMS:
            self._submit()

    def _submit(self) -> None:
        files = [(item[1], item[2]) for item in self._batch
                 if isinstance(item, tuple) and item[3]]
        future = self._pool.submit(_read_batch, files) if files else None
        self._waiting.append((self._batch, future))
        self._batch, self._files, self._bytes = [], 0, 0
        while len(self._waiting) > DEPTH:
            self._deliver()

    def _deliver(self) -> None:
        batch, future = self._waiting.popleft()
        try:
            found = future.result() if future is not None else []
        except BaseException:
            self._drop(batch, None)
            raise
        results = iter(found)
        done = 0
        try:
            for item in batch:
                if isinstance(item, tuple):
                    rel, fd, st, small = item
                    done += 1
                    self._on_file(rel, next(results) if small else Stream(fd, st))
                else:
                    done += 1
                    item()
        except BaseException:
            self._drop(batch[done:], list(results))
            raise

    @staticmethod
    def _drop(items: list[_Item], results: list[Result] | None) -> None:
        """Close the descriptors of what will not be delivered. ``results``: the reader's
        results still to deliver (None when it failed: its descriptors are closed)."""
        for item in items:
            if isinstance(item, tuple) and not item[3]:
                _close(item[1])
        for r in results or ():
            if isinstance(r, Stream):
                _close(r.fd)

    def finish(self) -> None:
        """Deliver everything queued."""
        if self._batch:
            self._submit()
        while self._waiting:
            self._deliver()

    def close(self) -> None:
        """Release everything (after finish, or on an error: nothing more is delivered)."""
        for item in self._batch:  # never handed to the reader: all still open here
            if isinstance(item, tuple):
                _close(item[1])
        self._batch = []
        while self._waiting:
            batch, future = self._waiting.popleft()
            results: list[Result] | None = None
            if future is not None:
                with contextlib.suppress(BaseException):
                    results = future.result()
            self._drop(batch, results)
        self._pool.shutdown()
