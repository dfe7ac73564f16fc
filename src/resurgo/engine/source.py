"""How the engine is handed the archives and manifests it reads: named, re-openable streams."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Protocol

from resurgo.engine.manifest import Entry, ManifestError, ManifestHeader, ManifestReader
from resurgo.engine.pipes import DecompressedReader
from resurgo.errors import ResurgoError

# No entry line comes near this (paths are at most a few KiB): a longer one is damage.
MAX_LINE = 1 << 20


class Stream(Protocol):
    """A readable binary stream (a medium's reader, an open file): read front to back."""

    def read(self, size: int, /) -> bytes: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Source:
    """An archive or manifest on a medium: its name (shown in errors) and how to open it.

    ``open`` returns a fresh stream from the start each time it is called: a restore reads
    the last manifest once per set of the chain, so no manifest is ever held in memory.
    """

    name: str
    open: Callable[[], Stream]

    @classmethod
    def file(cls, path: Path | str) -> Source:
        p = Path(path)
        return cls(str(p), lambda: open(p, "rb"))


class ManifestStream:
    """A manifest being read: ``header`` at once, ``entries()`` as they stream."""

    def __init__(self, source: Source, identity: Path | str | None) -> None:
        self.name = source.name
        self._stream = source.open()
        self._plain: DecompressedReader | None = None
        try:
            self._plain = DecompressedReader(self._stream, source.name, identity=identity)
            self.reader = ManifestReader(self._lines())
        except ManifestError as e:
            raise self._damaged(str(e)) from None
        except BaseException:
            self.close()
            raise
        self.header: ManifestHeader = self.reader.header

    def _lines(self) -> Iterator[bytes]:
        assert self._plain is not None
        read = self._plain.read
        buffered = b""
        while chunk := read(1 << 16):
            buffered += chunk
            lines = buffered.split(b"\n")
            buffered = lines.pop()
            if len(buffered) > MAX_LINE:
                raise ManifestError("a line longer than any entry can be")
            for line in lines:
                yield line + b"\n"
        if buffered:
            raise ManifestError("the manifest ends inside a line (truncated)")

    def _damaged(self, why: str) -> ResurgoError:
        assert self._plain is not None
        error = self._plain.failure(f"its manifest is unreadable: {why}")
        self.close()
        return error

    def entries(self) -> Iterator[Entry]:
        """The entries; at the end, the stream is checked to have ended cleanly."""
        try:
            yield from self.reader
            assert self._plain is not None
            self._plain.finish()
        except ManifestError as e:
            raise self._damaged(str(e)) from None

    def entry_lines(self) -> Iterator[str]:
        """The entry lines, undecoded (see ManifestReader.lines)."""
        try:
            yield from self.reader.lines()
            assert self._plain is not None
            self._plain.finish()
        except ManifestError as e:
            raise self._damaged(str(e)) from None

    def entry_byte_lines(self) -> Iterator[bytes]:
        """The entry lines as bytes, undecoded (see ManifestReader.byte_lines)."""
        try:
            yield from self.reader.byte_lines()
            assert self._plain is not None
            self._plain.finish()
        except ManifestError as e:
            raise self._damaged(str(e)) from None

    def raw_entries(self) -> Iterator[tuple[bytes, int, str]]:
        """(path, set index, line) of the entries (see ManifestReader.raw)."""
        try:
            yield from self.reader.raw()
            assert self._plain is not None
            self._plain.finish()
        except ManifestError as e:
            raise self._damaged(str(e)) from None

    def close(self) -> None:
        if self._plain is not None:
            self._plain.close()
        with contextlib.suppress(OSError):
            self._stream.close()

    def __enter__(self) -> ManifestStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def manifest_totals(source: Source, identity: Path | str | None = None) -> tuple[int, int]:
    """(entries, bytes of regular files' content) the manifest lists: what a restore or a
    verify of its tree will amount to, for its progress. One pass over the manifest, the
    lines split only for their size."""
    entries = nbytes = 0
    with ManifestStream(source, identity) as ms:
        for line in ms.entry_lines():
            entries += 1
            if line.startswith("f\t"):
                # A malformed line is the restore's to name.
                with contextlib.suppress(IndexError, ValueError):
                    nbytes += int(line.split("\t", 6)[5])
    return entries, nbytes
