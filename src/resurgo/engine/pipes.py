"""Streams through zstd and age: serializer → zstd → age → the medium's writer, and back.

The system programs do the work (``zstd -T0`` compresses on every core; ``age -r``
encrypts to public keys, so saving needs no secret): they run in a small rescue image,
where a Python extension may not. Our side of each pipe is plain os.read/os.write on the
file descriptors, and a pump thread moves bytes between the pipe and the medium's object;
everything streams, nothing holds more than a chunk.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import subprocess
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol, cast

from resurgo import run
from resurgo.engine.errors import ArchiveDamaged, DecryptionFailed, SaveFailed
from resurgo.errors import ResurgoError

CHUNK = 1 << 20
# zstd's level when none is asked for. Level 2, not zstd's own 3: on a Debian /usr
# (5.9 GB) level 3 made 2.14 GB in 24 s of CPU, level 2 2.23 GB (+4 %) in 17 s, level 1
# 2.36 GB (+10 %) in 15 s. A save runs on the machine it protects, often beside its
# work; a third less CPU for 4 % more bytes is the better default. --compression-level
# chooses otherwise.
DEFAULT_LEVEL = 2
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
AGE_MAGICS = (b"age-encryption.org/", b"-----BEGIN AGE ENCRYPTED FILE-----")


class Writable(Protocol):
    def write(self, data: bytes, /) -> object: ...


class Readable(Protocol):
    def read(self, size: int, /) -> bytes: ...


@dataclass(frozen=True)
class Written:
    """How many bytes went to the medium (compressed/encrypted). Their checksum is the
    medium's business: its writers hash what they store and its readers check it, so the
    engine does not hash the stream a second time."""

    size: int


def _big_pipe(fd: int) -> None:
    # A 1 MiB pipe instead of 64 KiB: fewer wake-ups between us and zstd.
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, CHUNK)


def _write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _tail(stderr: IO[bytes]) -> str:
    stderr.seek(0)
    text = stderr.read().decode("utf-8", "replace").strip()
    # age closes every error with a line asking to report unhelpful errors: not the cause.
    lines = [line for line in text.splitlines() if "report unexpected" not in line]
    return " / ".join(lines[-3:])


class _Stage:
    """One running program of a pipeline, its stderr kept in a temporary file."""

    def __init__(self, argv: list[str], stdin: int | IO[bytes], stdout: int) -> None:
        self.argv = argv
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()
        self.proc: subprocess.Popen[bytes] = run.spawn(
            argv, stdin=stdin, stdout=stdout, stderr=self.stderr
        )

    def wait(self) -> int:
        return self.proc.wait()

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                self.proc.kill()
        self.proc.wait()

    def failure(self) -> str | None:
        """None when the program exited 0, else what it said."""
        rc = self.proc.wait()
        if rc == 0:
            return None
        return f"{self.argv[0]} exited with {rc}: {_tail(self.stderr) or 'no message'}"

    def close(self) -> None:
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        self.stderr.close()


class CompressedWriter:
    """Takes plaintext with write(); sends it through zstd (and age) to ``sink``.

    ``close()`` finishes the stream and returns what reached the sink; it does not close
    the sink, which belongs to the caller. ``abort()`` stops everything; never raises.
    """

    def __init__(
        self,
        sink: Writable,
        name: str,
        *,
        recipients: Sequence[str] = (),
        level: int = DEFAULT_LEVEL,
    ) -> None:
        run.require("zstd", *(["age"] if recipients else []))
        self.name = name
        self._sink = sink
        self._stages: list[_Stage] = []
        self._error: BaseException | None = None
        self._size = 0
        zstd = _Stage(["zstd", f"-{level}", "-T0", "-q", "-c"], subprocess.PIPE, subprocess.PIPE)
        self._stages.append(zstd)
        last = zstd
        if recipients:
            argv = ["age"]
            for recipient in recipients:
                argv += ["-r", recipient]
            assert zstd.proc.stdout is not None
            age = _Stage(argv, zstd.proc.stdout, subprocess.PIPE)
            zstd.proc.stdout.close()  # age holds it now
            zstd.proc.stdout = None
            self._stages.append(age)
            last = age
        assert zstd.proc.stdin is not None and last.proc.stdout is not None
        self._fd = zstd.proc.stdin.fileno()
        self._out = last.proc.stdout.fileno()
        _big_pipe(self._fd)
        _big_pipe(self._out)
        self._pump = threading.Thread(target=self._drain, name=f"pump {name}", daemon=True)
        self._pump.start()

    def _drain(self) -> None:
        try:
            while chunk := os.read(self._out, CHUNK):
                self._sink.write(chunk)
                self._size += len(chunk)
        except BaseException as e:  # re-raised by close() in the caller's thread
            self._error = e
            # Nobody reads the pipes any more: stop the programs so write() cannot block.
            for stage in self._stages:
                stage.kill()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        try:
            _write_all(self._fd, data)
        except BrokenPipeError:
            self._raise_failure()
            raise SaveFailed(f"writing {self.name}: the compressor stopped reading") from None

    def writev(self, parts: list[bytes]) -> None:
        try:
            n = os.writev(self._fd, parts)
            total = sum(len(p) for p in parts)
            if n < total:  # a pipe takes it all unless interrupted; finish what is left
                _write_all(self._fd, memoryview(b"".join(parts))[n:])
        except BrokenPipeError:
            self._raise_failure()
            raise SaveFailed(f"writing {self.name}: the compressor stopped reading") from None

    def _raise_failure(self) -> None:
        self._pump.join()
        if isinstance(self._error, ResurgoError):
            raise self._error
        if self._error is not None:
            raise SaveFailed(f"writing {self.name}: {self._error}", archive=self.name)
        for stage in self._stages:
            why = stage.failure()
            if why is not None:
                raise SaveFailed(f"writing {self.name}: {why}", archive=self.name)

    def close(self) -> Written:
        zstd = self._stages[0]
        try:
            assert zstd.proc.stdin is not None
            zstd.proc.stdin.close()
            self._raise_failure()
            return Written(self._size)
        finally:
            for stage in self._stages:
                stage.close()

    def abort(self) -> None:
        for stage in self._stages:
            stage.kill()
        self._pump.join()
        for stage in self._stages:
            stage.close()


class _LocalFile(Protocol):
    """A source that is a local file (the media's FileReader over one)."""

    def local_file(self) -> int | None: ...

    def check_whole(self) -> int: ...


def _read_head(source: Readable, n: int) -> bytes:
    parts: list[bytes] = []
    got = 0
    while got < n:
        chunk = source.read(n - got)
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


class DecompressedReader:
    """Plaintext of an archive or manifest read from ``source`` through age and zstd.

    ``read(n)`` returns n bytes, fewer only at the end. After the last byte the caller calls
    ``finish()``, which checks that every program exited cleanly and returns the size and
    the number of bytes read from the source. On a problem met while reading, ``failure()``
    gives the error that explains it best (the decryptor's or decompressor's complaint).
    ``close()`` always releases everything.
    """

    def __init__(self, source: Readable, name: str, *, identity: Path | str | None = None):
        self.name = name
        self._source = source
        self._error: BaseException | None = None
        self._size = 0
        self._stages: list[_Stage] = []
        self._identity = identity
        # A local file goes to the first program as its stdin: no copy through a pipe of
        # ours. The medium still checks it (size and digest) beside, through a mapping.
        local_file = getattr(source, "local_file", None)
        self._direct: int | None = local_file() if local_file is not None else None
        if self._direct is not None:
            self._head = os.pread(self._direct, 64, 0)
            os.lseek(self._direct, 0, os.SEEK_SET)
        else:
            self._head = _read_head(source, 64)
        stdin: int = subprocess.PIPE if self._direct is None else self._direct
        if self._head.startswith(AGE_MAGICS):
            if identity is None:
                raise DecryptionFailed(name, "it is encrypted with age and no identity was given")
            run.require("age", "zstd")
            age = _Stage(["age", "-d", "-i", str(identity)], stdin, subprocess.PIPE)
            self._stages.append(age)
            assert age.proc.stdout is not None
            zstd = _Stage(["zstd", "-d", "-q", "-c"], age.proc.stdout, subprocess.PIPE)
            age.proc.stdout.close()
            age.proc.stdout = None
            self._stages.append(zstd)
        elif self._head.startswith(ZSTD_MAGIC):
            run.require("zstd")
            zstd = _Stage(["zstd", "-d", "-q", "-c"], stdin, subprocess.PIPE)
            self._stages.append(zstd)
        elif not self._head:
            raise ArchiveDamaged(name, "it is empty")
        else:
            raise ArchiveDamaged(name, "it is neither zstd-compressed nor age-encrypted")
        first, last = self._stages[0], self._stages[-1]
        assert last.proc.stdout is not None
        if self._direct is None:
            assert first.proc.stdin is not None
            self._in = first.proc.stdin.fileno()
            _big_pipe(self._in)
        _big_pipe(last.proc.stdout.fileno())
        # A big buffer: the record reader's many small reads come from memory.
        reader = io.BufferedReader(cast(io.BufferedReader, last.proc.stdout).detach(),
                                   buffer_size=CHUNK)
        self._reader = last.proc.stdout = reader
        # The bound methods themselves, for the record reader's many small reads.
        self.read: Callable[[int], bytes] = reader.read
        self.readinto: Callable[[memoryview], int | None] = reader.readinto
        fill = self._fill if self._direct is None else self._check
        self._pump = threading.Thread(target=fill, name=f"pump {name}", daemon=True)
        self._pump.start()

    def _check(self) -> None:
        try:
            self._size = cast(_LocalFile, self._source).check_whole()
        except BaseException as e:  # re-raised by finish() or failure()
            self._error = e

    def _fill(self) -> None:
        first = self._stages[0]
        try:
            chunk = self._head
            while chunk:
                self._size += len(chunk)
                _write_all(self._in, chunk)
                chunk = self._source.read(CHUNK)
        except BrokenPipeError:
            pass  # the program stopped reading; its exit status says why
        except BaseException as e:
            self._error = e
        finally:
            assert first.proc.stdin is not None
            with contextlib.suppress(OSError):
                first.proc.stdin.close()

    def failure(self, context: str, paths: Sequence[str] = ()) -> ResurgoError:
        """The best explanation of a problem met while reading, after stopping everything."""
        # Closing our end makes a program still writing die of SIGPIPE; one that failed on
        # its own has exited already with its message.
        with contextlib.suppress(OSError):
            self._reader.close()
        for stage in self._stages:
            try:
                stage.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                stage.kill()
        self._pump.join()
        if isinstance(self._error, ResurgoError):
            return self._error
        if self._error is not None:
            return ArchiveDamaged(self.name, f"reading it failed: {self._error}", paths)
        for stage in self._stages:
            if stage.proc.returncode in (0, -9, -13):
                continue
            why = _tail(stage.stderr)
            if stage.argv[0] == "age" and ("no identity matched" in why
                                           or f'"{self._identity}"' in why):
                return DecryptionFailed(self.name, why)
            return ArchiveDamaged(self.name, f"{stage.argv[0]} says {why!r} ({context})",
                                  paths)
        return ArchiveDamaged(self.name, context, paths)

    def finish(self) -> Written:
        """Check the clean end of the stream; the raw size that was read."""
        if self._reader.read(1):
            raise self.failure("there is data after its end")
        for stage in self._stages:
            stage.wait()
        self._pump.join()
        if self._error is not None or any(s.proc.returncode != 0 for s in self._stages):
            raise self.failure("its programs failed")
        return Written(self._size)

    def consumed(self) -> Written:
        """What was read from the source so far, for a reader that stops before the end
        (whose close() then stops the programs)."""
        return Written(self._size)

    def close(self) -> None:
        for stage in self._stages:
            if stage.proc.poll() is None:
                stage.kill()
        if self._direct is not None and self._pump.is_alive():
            # A reader that stopped early: the rest of the local file is not hashed
            # (finish() was not reached, so no check of it is claimed either).
            stop = getattr(self._source, "stop_check", None)
            if stop is not None:
                stop()
        self._pump.join()
        for stage in self._stages:
            stage.close()
