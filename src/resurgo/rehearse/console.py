"""A guest under qemu, its serial console read as it comes: every byte kept in a log file,
every protocol message (protocol.parse) timed on arrival by the host's clock.

qemu runs in a session of its own and gets SIGKILL when this process dies, however it
dies (PR_SET_PDEATHSIG); ``Guest`` stops it on every path out of its ``with`` block.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO

from resurgo import run
from resurgo.rehearse import protocol

log = logging.getLogger("resurgo.rehearse")

_PR_SET_PDEATHSIG = 1
# How much of the console's end a report shows.
TAIL_LINES = 40
# A console line longer than this is cut when shown (the log keeps it whole).
SHOWN_LINE = 400
# A rehearsal's guests say a few dozen messages; a system stuck printing markers in a
# loop is not let fill the host's memory (the log on disk keeps everything).
MAX_MESSAGES = 10_000
# What a console shows when its boot has come to a dead end and will say nothing more
# of use (a panicked kernel, an initramfs shell, a boot loader's prompt, firmware that
# found nothing to boot): the host stops waiting then, instead of at the timeout.
DEAD_ENDS = (
    "Kernel panic - not syncing",
    "Dropping to a shell",  # initramfs-tools, its root not found
    "grub rescue>",
    "you need to load the kernel first",  # GRUB, a kernel it could not load
    "No bootable device",  # SeaBIOS
    "No bootable option or device was found",  # OVMF
)
# A kernel's panic is the rescue's dead end (its agent has no shell to fall into).
RESCUE_DEAD_ENDS = ("Kernel panic - not syncing",)
# How long the console is read on after a dead end (the rest of a panic's trace).
DEAD_END_GRACE = 5.0


@dataclass(frozen=True)
class Timed:
    """A message and when it arrived (seconds since the guest started)."""

    at: float
    message: protocol.Message


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class _Pump(threading.Thread):
    """Copies qemu's standard output (the serial console) to the log; times messages."""

    def __init__(self, stream: IO[bytes], sink: IO[bytes], started: float,
                 dead_ends: Sequence[str] = ()) -> None:
        super().__init__(daemon=True, name="rehearse-console")
        self.stream, self.sink, self.started = stream, sink, started
        self.messages: list[Timed] = []
        self.dead_ends = tuple(d.encode() for d in dead_ends)
        # The first line that showed a dead end, and when it came; whether the line had
        # not ended yet.
        self.dead_end: tuple[float, str] | None = None
        self._partial = False
        self.lock = threading.Lock()
        self.arrived = threading.Condition(self.lock)

    def _look(self, raw: bytes, *, whole: bool) -> None:
        """Whether ``raw`` shows a dead end: a line (``whole``), or the start of one that
        has not ended yet (a prompt waits so), whose whole line then replaces it."""
        if self.dead_end is not None and not self._partial:
            return
        if not any(d in raw for d in self.dead_ends):
            return
        text = "".join(c for c in raw[-SHOWN_LINE:].decode("utf-8", "replace")
                       if c.isprintable()).strip()
        with self.arrived:
            at = self.dead_end[0] if self.dead_end is not None else round(
                time.monotonic() - self.started, 3)
            self.dead_end = (at, text)
            self._partial = not whole
            self.arrived.notify_all()

    def _line(self, raw: bytes) -> None:
        self._look(raw, whole=True)
        if protocol.MARK.encode() not in raw:
            return
        message = protocol.parse(raw[-protocol.MAX_LINE:].decode("utf-8", "replace"))
        if message is None or len(self.messages) >= MAX_MESSAGES:
            return
        with self.arrived:
            self.messages.append(Timed(round(time.monotonic() - self.started, 3), message))
            self.arrived.notify_all()

    def run(self) -> None:
        pending = b""
        fd = self.stream.fileno()
        try:
            while chunk := os.read(fd, 65536):
                self.sink.write(chunk)
                self.sink.flush()
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for raw in lines:
                    self._line(raw)
                # A "line" without its end for this long is console garbage: keep its end.
                pending = pending[-protocol.MAX_LINE:]
                # A prompt waits without a line's end.
                self._look(pending, whole=False)
        except OSError:
            pass
        if pending:
            self._line(pending)
        with self.arrived:
            self.arrived.notify_all()


class Guest:
    """qemu running ``argv``, its console going to ``log_path``. Use as a context
    manager: qemu is stopped (TERM, then KILL) when the block ends, however it ends."""

    def __init__(self, argv: Sequence[str], log_path: Path,
                 dead_ends: Sequence[str] = ()) -> None:
        self.argv = list(argv)
        self.log_path = log_path
        self.dead_ends = tuple(dead_ends)
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self._sink: IO[bytes] | None = None
        self._pump: _Pump | None = None

    def __enter__(self) -> Guest:
        log.debug("+ %s", shlex.join(self.argv))
        self._sink = open(self.log_path, "ab")
        self.started = time.monotonic()
        try:
            self.proc = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, env=run.environment(), start_new_session=True,
                preexec_fn=_die_with_parent)
        except BaseException:
            self._sink.close()
            raise
        assert self.proc.stdout is not None
        self._pump = _Pump(self.proc.stdout, self._sink, self.started, self.dead_ends)
        self._pump.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started

    @property
    def messages(self) -> list[Timed]:
        assert self._pump is not None
        with self._pump.lock:
            return list(self._pump.messages)

    @property
    def dead_end(self) -> tuple[float, str] | None:
        """When the console showed a dead end (DEAD_ENDS), and the line that did."""
        assert self._pump is not None
        with self._pump.lock:
            return self._pump.dead_end

    def wait(self, timeout: float, until: str | None = None) -> bool:
        """Wait until qemu exits (True) or ``timeout`` seconds after it started (False);
        with ``until``, also stop waiting (True) once a message of that kind came; and
        DEAD_END_GRACE seconds after the console showed a dead end (True)."""
        assert self.proc is not None and self._pump is not None
        deadline = self.started + timeout
        while True:
            if self.proc.poll() is not None:
                self._pump.join(timeout=10)
                return True
            if until is not None and any(t.message.kind == until for t in self.messages):
                return True
            dead = self.dead_end
            if dead is not None:
                deadline = min(deadline, self.started + dead[0] + DEAD_END_GRACE)
                if time.monotonic() >= deadline:
                    return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            with self._pump.arrived:
                self._pump.arrived.wait(timeout=min(left, 0.5))

    @property
    def exited(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def stop(self) -> None:
        """qemu stopped (it is gone when this returns), the log closed. Idempotent."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if self._pump is not None:
            self._pump.join(timeout=10)
        if proc is not None and proc.stdout is not None:
            proc.stdout.close()
        if self._sink is not None and not self._sink.closed:
            self._sink.close()


def tail(path: Path, lines: int = TAIL_LINES) -> list[str]:
    """The console's last lines, printable (a console holds escapes and garbage)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            data = f.read()
    except OSError:
        return []
    out = []
    for raw in data.decode("utf-8", "replace").splitlines()[-lines:]:
        text = "".join(c if c.isprintable() else "" for c in raw.replace("\t", " "))
        out.append(text[:SHOWN_LINE])
    return out
