"""Records a restore keeps for its end (directories' headers, hard links), in bounded memory.

A restore sets a directory's metadata and makes the hard links when every file exists, so
it keeps one record per directory and per hard link until then: as many as an archive
lists, each up to a header's size. Up to MEMORY bytes stay in memory (all of them, for any
ordinary tree); the rest goes to an unnamed file on the target itself (O_TMPFILE: never
visible in the tree, gone when closed), so the memory a restore takes does not grow with
what an archive lists, and the rescue system's RAM disk is not where it goes either.
"""

from __future__ import annotations

import contextlib
import errno
import os
import struct
import tempfile
from collections.abc import Iterator

from resurgo.engine.errors import RestoreFailed

# Each of a restore's two (directories, hard links): 64 MiB between them, as the engine
# docstring's Memory section says.
MEMORY = 32 << 20
_OVERHEAD = 64  # a bytes object's own and the list's share, counted against MEMORY
_LENGTH = struct.Struct("<I")


class Kept:
    """Byte records, appended, then read back in order or in reverse order."""

    def __init__(self, target_fd: int) -> None:
        self._target = target_fd
        self._records: list[bytes] = []
        self._size = 0
        self._fd: int | None = None
        self._end = 0  # bytes in the file: each record framed by its length on both sides

    def append(self, record: bytes) -> None:
        if self._fd is None and self._size + len(record) + _OVERHEAD <= MEMORY:
            self._records.append(record)
            self._size += len(record) + _OVERHEAD
            return
        length = _LENGTH.pack(len(record))
        data = length + record + length
        try:
            if self._fd is None:
                self._fd = self._open()
            done = 0
            while done < len(data):
                done += os.pwrite(self._fd, data[done:], self._end + done)
        except OSError as e:
            raise RestoreFailed("cannot keep the directories and hard links still to finish "
                                f"in a file on the target: {e.strerror}") from None
        self._end += len(data)

    def _open(self) -> int:
        try:
            return os.open(".", os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600,
                           dir_fd=self._target)
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                raise
        with tempfile.TemporaryFile() as f:  # a file system without O_TMPFILE
            return os.dup(f.fileno())

    def _read(self, offset: int, n: int) -> bytes:
        assert self._fd is not None
        try:
            data = os.pread(self._fd, n, offset)
        except OSError as e:
            data = b""
            why = e.strerror
        else:
            why = "it is cut"
        if len(data) != n:
            raise RestoreFailed("cannot read back the directories and hard links still to "
                                f"finish from their file on the target: {why}")
        return data

    def __iter__(self) -> Iterator[bytes]:
        yield from self._records
        pos = 0
        while pos < self._end:
            (n,) = _LENGTH.unpack(self._read(pos, _LENGTH.size))
            yield self._read(pos + _LENGTH.size, n)
            pos += n + 2 * _LENGTH.size

    def __reversed__(self) -> Iterator[bytes]:
        pos = self._end
        while pos > 0:
            (n,) = _LENGTH.unpack(self._read(pos - _LENGTH.size, _LENGTH.size))
            pos -= n + 2 * _LENGTH.size
            yield self._read(pos + _LENGTH.size, n)
        yield from reversed(self._records)

    def close(self) -> None:
        self._records = []
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
