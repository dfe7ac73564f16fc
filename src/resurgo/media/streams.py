"""The binary streams a medium hands out: written once, front to back; read front to back.

Writers hash what passes through them (the set index records size and digest
without a second read); readers check both when they reach the end, so a file
that was damaged on the medium is never taken for good. Both are io.RawIOBase,
so io.BufferedReader, shutil.copyfileobj and the archive engine can use them.
"""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Callable
from types import TracebackType
from typing import Protocol

from resurgo import digest
from resurgo.errors import Damaged
from resurgo.media import limits
from resurgo.media.setindex import FileEntry


class Sink(Protocol):
    """Where a medium puts the bytes of one file."""

    def write(self, data: bytes) -> None: ...

    def finish(self) -> None:
        """The file is complete: make it durable (fsync, upload the last part)."""

    def discard(self) -> None:
        """Abandon the file; never raises."""


class Source(Protocol):
    """Where a medium reads the bytes of one file from."""

    def read(self, size: int) -> bytes:
        """Up to size bytes (at least one unless at the end)."""

    def close(self) -> None: ...


class FileWriter(io.RawIOBase):
    """One file of a set being written. ``close()`` completes it; leaving a
    ``with`` block by an exception abandons it."""

    def __init__(self, name: str, sink: Sink, done: Callable[[FileEntry], None]) -> None:
        super().__init__()
        self.name = name
        self._sink = sink
        self._done = done
        self._hash = digest.new()
        self._size = 0
        self._finished = False

    def writable(self) -> bool:
        return True

    def write(self, b: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        if self.closed:
            raise ValueError("write to a closed file")
        data = bytes(b)
        if data:
            self._sink.write(data)
            self._hash.update(data)
            self._size += len(data)
        return len(data)

    @property
    def size(self) -> int:
        return self._size

    def close(self) -> None:
        if self.closed:
            return
        try:
            if not self._finished:
                self._finished = True
                self._sink.finish()
                self._done(FileEntry(self.name, self._size, self._hash.hexdigest()))
        except BaseException:
            self._sink.discard()
            raise
        finally:
            super().close()

    def abort(self) -> None:
        """Abandon this file: it is not part of the set."""
        if not self.closed:
            self._finished = True
            self._sink.discard()
            super().close()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self.abort()
        else:
            self.close()


class FileReader(io.RawIOBase):
    """One file of a set being read; at the end its size and digest must match the index.

    Whatever the medium hands out, no more than the recorded size and one byte (which
    tells a longer file) is asked of it: a file that grew, or a server that sends more,
    costs nothing. A file read whole (description.toml) is refused unread when the index
    records more than such a file may have (limits.READ_WHOLE).
    """

    def __init__(self, entry: FileEntry, source: Source, where: str) -> None:
        super().__init__()
        self.entry = entry
        self._source = source
        self._where = where
        self._hash = digest.new()
        self._size = 0
        self._checked = False
        self._stopped = False  # see stop_check
        self._local: int | None = None  # the descriptor local_file() handed out
        cap = limits.READ_WHOLE.get(entry.name)
        if cap is not None and entry.size > cap:
            source.close()
            super().close()
            raise limits.too_large(entry.name, where, entry.size, cap)

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1, /) -> bytes:
        # The source's bytes as they are: RawIOBase.read would copy them twice more
        # (into a buffer for readinto, then out of it), and an archive is gigabytes.
        if size < 0:
            return self.readall()
        if self._checked or size == 0:
            return b""
        data = self._source.read(min(size, self.entry.size + 1 - self._size))
        if not data:
            self._check_end()
            return b""
        self._hash.update(data)
        self._size += len(data)
        if self._size > self.entry.size:
            raise self._damaged(f"it is longer than the {self.entry.size} bytes recorded")
        return data

    def readall(self) -> bytes:
        # The whole file in memory: only for the small files, never an archive that the
        # index says is huge.
        if self.entry.size > limits.ANY_WHOLE:
            raise limits.too_large(self.entry.name, self._where, self.entry.size,
                                   limits.ANY_WHOLE)
        parts = []
        while chunk := self.read(1 << 20):
            parts.append(chunk)
        return b"".join(parts)

    def local_file(self) -> int | None:
        """The descriptor of the stored file itself when it is a local regular file of the
        recorded size that nothing was read from yet: a program may read it directly
        (zstd, without a copy through Python), and check_whole() then checks it. (A file
        of another size is read through read(), which stops past the recorded size.)"""
        fileno = getattr(self._source, "fileno", None)
        if fileno is None or self._size or self._checked:
            return None
        fd: int = fileno()
        st = os.fstat(fd)
        self._local = fd if stat.S_ISREG(st.st_mode) and st.st_size == self.entry.size else None
        return self._local

    def check_whole(self) -> int:
        """Check the size and digest of the local file (see local_file) as read() does at
        the end, reading it beside whoever reads it through the descriptor; its size."""
        fd = self._local  # as local_file() handed it out: it may have grown since
        if fd is None or self._size or self._checked:
            raise ValueError("check_whole needs a local file nothing was read from")
        # pread into one buffer: no file offset shared with the other reader, and less
        # work than mapping (a mapping of the whole file would also count it all in the
        # process's resident memory).
        buffer = bytearray(4 << 20)
        view = memoryview(buffer)
        size = 0
        # One byte past the recorded size at most: a file that grew meanwhile is told by
        # its size, not hashed to its end.
        while not self._stopped and size <= self.entry.size and (
            n := os.preadv(fd, [view[: self.entry.size + 1 - size]], size)
        ):
            self._hash.update(view[:n])
            size += n
        self._size = size
        if self._stopped:
            return size  # nothing checked, nothing claimed
        self._check_end()
        return size

    def stop_check(self) -> None:
        """Stop check_whole where it is, unfinished: for a reader that needs only the
        start of the file (a restore of chosen entries), whose entries are checked on
        their own. Nothing is said of the file's digest then."""
        self._stopped = True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(b).cast("B")
        data = self.read(len(view))
        view[:len(data)] = data
        return len(data)

    def _check_end(self) -> None:
        self._checked = True
        if self._size != self.entry.size:
            raise self._damaged(f"it has {self._size} bytes, the set recorded {self.entry.size}")
        if self._hash.hexdigest() != self.entry.digest:
            raise self._damaged("its digest differs from the one recorded when it was saved")

    def _damaged(self, why: str) -> Damaged:
        return Damaged(
            f"{self.entry.name} in {self._where} is damaged: {why}",
            "do not restore from this copy: use another recovery set or another copy of the medium",
        )

    def close(self) -> None:
        if not self.closed:
            try:
                self._source.close()
            finally:
                super().close()


class BytesSource:
    """A Source over bytes held in memory (the small files of a floppy)."""

    def __init__(self, data: bytes) -> None:
        self._buf = io.BytesIO(data)

    def read(self, size: int) -> bytes:
        return self._buf.read(size)

    def close(self) -> None:
        self._buf.close()
