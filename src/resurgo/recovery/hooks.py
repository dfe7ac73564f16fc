"""The save's hooks: commands that quiesce applications around the point where the saved
trees are taken: the creation of the btrfs snapshots (recovery.snapshots), and the reading
of the trees that have none.

``pre-save`` runs just before, ``post-save`` just after, and the post hook runs whatever
happened once the pre hook was started: the save done, failed, or stopped by Ctrl-C or
SIGTERM. A pre hook that fails (exit status other than 0, killed, or out of time) fails
the save, after the post hook has run. A post hook that fails is a warning: the set is
whole. Each is a command line split into words as a POSIX shell splits them (shlex),
run without a shell by resurgo's one helper (clean environment, stdin from /dev/null),
with RESURGO_HOOK (pre-save, post-save) and, for the post hook, RESURGO_SAVE (ok,
failed, interrupted) in its environment. Their exit codes and the end of their output
(standard output and error as they came) go into the save's report.

A hook's output is also told line by line as it comes (the save's progress, and the log
with --debug), so that whoever watches a long quiesce sees what it is doing: each line
cut at LINE_CHARS characters, its control characters replaced, and at most SHOWN_LINES
lines of a hook (the report keeps the end).
"""

from __future__ import annotations

import logging
import os
import selectors
import shlex
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass

from resurgo import run
from resurgo.errors import BadInput, OperationFailed, PreconditionFailed

# A hook that quiesces an application takes seconds; one still running after this is
# stopped (and counts as failed), so a hung hook cannot hold the save for ever.
TIMEOUT = 600.0
# What the report keeps of a hook's output (stdout and stderr as they came): its end.
KEPT_OUTPUT = 4096
# What is told of it as it comes: lines cut at this length, and this many lines a hook.
LINE_CHARS = 300
SHOWN_LINES = 1000
# A hook that has ended but whose children still hold its output open (a daemon started
# by it) is read this much longer, then left: the save does not wait for them.
GRACE = 2.0

PRE, POST = "pre-save", "post-save"

log = logging.getLogger("resurgo.recovery")


@dataclass(frozen=True)
class HookRun:
    hook: str  # pre-save or post-save
    argv: tuple[str, ...]
    returncode: int | None  # None: stopped after TIMEOUT
    output: str  # the end of its stdout and stderr
    seconds: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def line(self) -> str:
        how = ("ran out of time" if self.returncode is None
               else f"exit {self.returncode}")
        return f"{self.hook}: {shlex.join(self.argv)}: {how} ({self.seconds:.1f} s)"

    def data(self) -> dict[str, object]:
        return {"hook": self.hook, "argv": list(self.argv), "exit": self.returncode,
                "ok": self.ok, "output": self.output, "seconds": round(self.seconds, 3)}


def parse(text: str, what: str) -> tuple[str, ...]:
    """A hook's command line as words; BadInput (exit 2) for one that is not."""
    try:
        argv = tuple(shlex.split(text))
    except ValueError as e:
        raise BadInput(f"{what} {text!r}: {e}") from None
    if not argv:
        raise BadInput(f"{what}: an empty command")
    return argv


def check(argv: tuple[str, ...], what: str) -> None:
    """Before anything is done: the hook's program is there (exit 3 otherwise)."""
    program = argv[0]
    found = run.which(program) if "/" not in program else program
    if found is None or not _executable(found):
        raise PreconditionFailed(f"{what}: there is no program {program!r} to run",
                                 "give its absolute path, or install it")


def _executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def _tail(text: str) -> str:
    return text if len(text) <= KEPT_OUTPUT else "..." + text[-KEPT_OUTPUT:]


def _printable(line: str) -> str:
    """A line as it is shown: its control characters (escape sequences) made harmless,
    cut at LINE_CHARS."""
    shown = "".join(c if c.isprintable() or c == "\t" else "?" for c in line.rstrip("\r"))
    return shown if len(shown) <= LINE_CHARS else shown[:LINE_CHARS] + "..."


class _Lines:
    """A hook's output as it comes: each whole line told (bounded), the end kept."""

    def __init__(self, hook: str, say: Callable[[str], None]) -> None:
        self.hook = hook
        self.say = say
        self.kept = bytearray()  # the end of the output, a few times KEPT_OUTPUT bytes
        self.total = 0
        self.pending = bytearray()  # a line not ended yet
        self.skipping = False  # the rest of a line already told cut
        self.told = 0

    def feed(self, chunk: bytes) -> None:
        self.total += len(chunk)
        self.kept += chunk
        del self.kept[:-4 * KEPT_OUTPUT]
        *whole, rest = chunk.split(b"\n")
        for part in whole:
            if not self.skipping:
                self._tell(bytes(self.pending + part))
            self.pending.clear()
            self.skipping = False
        if not self.skipping:
            self.pending += rest
            if len(self.pending) > 4 * LINE_CHARS:
                self._tell(bytes(self.pending))
                self.pending.clear()
                self.skipping = True

    def close(self) -> None:
        if self.pending and not self.skipping:
            self._tell(bytes(self.pending))
        self.pending.clear()

    def _tell(self, raw: bytes) -> None:
        self.told += 1
        if self.told > SHOWN_LINES:
            if self.told == SHOWN_LINES + 1:
                self.say(f"{self.hook}: ... (more output; its end is in the report)")
            return
        line = f"{self.hook}: {_printable(raw.decode(errors='replace'))}"
        log.info("%s", line)
        self.say(line)

    def output(self) -> str:
        text = bytes(self.kept).decode(errors="replace")
        if self.total > len(self.kept) and len(text) <= KEPT_OUTPUT:
            return "..." + text
        return _tail(text)


def run_hook(hook: str, argv: tuple[str, ...], env: dict[str, str],
             say: Callable[[str], None] = lambda line: None) -> HookRun:
    """Run one hook, telling its output line by line to ``say`` as it comes."""
    start = time.monotonic()
    lines = _Lines(hook, say)
    proc = run.spawn(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                     env={"RESURGO_HOOK": hook, **env})
    assert proc.stdout is not None
    out = proc.stdout
    returncode: int | None = None
    try:
        fd = out.fileno()
        os.set_blocking(fd, False)
        deadline = start + TIMEOUT
        ended: float | None = None
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while True:
                now = time.monotonic()
                if ended is None and proc.poll() is not None:
                    ended = now
                limit = deadline if ended is None else min(deadline, ended + GRACE)
                if now >= limit:
                    break
                if not sel.select(min(limit - now, 0.5)):
                    continue
                try:
                    chunk = os.read(fd, 65536)
                except BlockingIOError:
                    continue
                if not chunk:
                    break
                lines.feed(chunk)
        lines.close()
        if proc.poll() is None and time.monotonic() < deadline:
            # Its output closed, the hook itself not done yet: it has the rest of its time.
            with suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        returncode = proc.poll()
    finally:
        if proc.poll() is None:  # out of time, or the save stopped (Ctrl-C)
            proc.kill()
            proc.wait()
        out.close()
    return HookRun(hook, argv, returncode, lines.output(), time.monotonic() - start)


@contextmanager
def around(pre: tuple[str, ...] | None, post: tuple[str, ...] | None,
           ran: list[HookRun], say: Callable[[str], None] = lambda line: None,
           ) -> Iterator[None]:
    """Run pre before the body and post after it, whatever happens in between (see the
    module docstring); each run is appended to ``ran`` as it ends, its output told to
    ``say`` line by line as it comes."""
    if pre is None and post is None:
        yield
        return
    status = "failed"
    try:
        if pre is not None:
            first = run_hook(PRE, pre, {}, say)
            ran.append(first)
            if not first.ok:
                raise OperationFailed(
                    f"the pre-save hook failed, so nothing was saved: {first.line()}"
                    + (f"\n{first.output.rstrip()}" if first.output.strip() else ""),
                    "the post-save hook has run; fix the hook, or save without it")
        yield
        status = "ok"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        if post is not None:
            last = run_hook(POST, post, {"RESURGO_SAVE": status}, say)
            ran.append(last)
            if not last.ok and status != "ok":
                log.warning("%s", last.line())


__all__ = ["POST", "PRE", "HookRun", "around", "check", "parse"]
