"""Progress of long work (a save, a restore, a verify, a rescue build), shown as it goes.

Three forms, one per kind of reader:

- TERMINAL (standard error is a terminal): one line, rewritten in place (a carriage
  return, the new text, spaces over what is left of the old one): bytes and entries done
  of the total, the rate, the time left;
- PLAIN (a log file, a pipe, the rescue's serial console): the same text as one whole
  line every PLAIN_EVERY seconds, so that a log gets a line now and then, not a
  carriage-return soup;
- JSON (--json): one JSON object per line (see Meter.data), every JSON_EVERY seconds and
  once more when the piece of work ends.

Nothing is shown for work that ends within QUIET seconds (a terminal line), or before
the first interval (the others): short work stays quiet. The work is told in pieces (a
tree saved, a tree restored): ``update(what, done, total)`` as often as the work likes,
since a call that is not due costs a clock reading and a comparison; ``end()`` when it is
over (or a piece of another name begins). The clock, the intervals and the terminal's
width are given to the Meter, so that tests drive it without waiting. A piece that tells
nothing for a while (a program that runs for minutes, a huge file being read) still
shows its time passing when the meter ticks (``ticking``: a thread that renders the last
state at the interval); a line erased for other output stays erased until the work tells
more, so that the ticker never writes between the erasure and that output.

Below the orchestrators: nothing here knows about sets or steps.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TextIO

from resurgo.units import human

# Seconds of work before a terminal line appears, and between two renderings of it.
QUIET = 2.0
TERMINAL_EVERY = 0.25
# Seconds between two lines in a log, and between two JSON objects.
PLAIN_EVERY = 30.0
JSON_EVERY = 5.0

# How an engine tells what it did: (entries done, bytes done) so far, in batches (every
# TALLY_ENTRIES entries, every chunk of a large file), never per small file.
Tally = Callable[[int, int], None]
TALLY_ENTRIES = 64


class Form(StrEnum):
    TERMINAL = "terminal"
    PLAIN = "plain"
    JSON = "json"

    @classmethod
    def choose(cls, as_json: bool, stream: TextIO) -> Form:
        if as_json:
            return cls.JSON
        try:
            return cls.TERMINAL if stream.isatty() else cls.PLAIN
        except (AttributeError, ValueError):  # a closed or odd stream
            return cls.PLAIN


@dataclass(frozen=True)
class Amount:
    """Entries (files, directories, links...) and bytes of file data."""

    entries: int = 0
    bytes: int = 0


def duration(seconds: float) -> str:
    s = int(seconds + 0.5)
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}"


class Meter:
    """One command's progress on one stream, in one form (see the module docstring)."""

    def __init__(self, stream: TextIO, form: Form, *,
                 clock: Callable[[], float] = time.monotonic,
                 interval: float | None = None, quiet: float | None = None,
                 width: Callable[[], int] | None = None) -> None:
        self.stream = stream
        self.form = form
        self.clock = clock
        self.interval = interval if interval is not None else {
            Form.TERMINAL: TERMINAL_EVERY, Form.PLAIN: PLAIN_EVERY, Form.JSON: JSON_EVERY,
        }[form]
        self.quiet = QUIET if quiet is None else quiet
        self.width = width or (lambda: shutil.get_terminal_size((80, 24)).columns)
        self.step = ""
        self.what: str | None = None
        self.done = Amount()
        self.total: Amount | None = None
        self.started = 0.0
        self.due = 0.0
        self.shown = False  # anything of this piece shown
        self.on_line = 0  # characters of the terminal line standing now
        self.held = False  # erased for other output: not shown again until an update
        self.lock = threading.Lock()

    # ------------------------------------------------------------ what the work tells

    def update(self, step: str, what: str, done: Amount, total: Amount | None = None) -> None:
        with self.lock:
            now = self.clock()
            if what != self.what or step != self.step:
                self._end()
                self.step, self.what, self.total = step, what, total
                self.started = now
                first = self.quiet if self.form is Form.TERMINAL else self.interval
                self.due = now + first
            elif total is not None:
                self.total = total
            self.done = done
            self.held = False
            self._due(now)

    def tick(self) -> None:
        """Show the last state again when it is due (the time goes on)."""
        with self.lock:
            if self.what is not None and not self.held:
                self._due(self.clock())

    def end(self) -> None:
        """The piece is over: a terminal line is erased (the step's own summary follows),
        JSON says it is done when it said anything of it."""
        with self.lock:
            self._end()

    def clear(self) -> None:
        """Erase the terminal line before other text is written to the terminal (it
        comes back once the work tells more)."""
        with self.lock:
            self._clear()
            self.held = True

    @contextlib.contextmanager
    def ticking(self) -> Iterator[None]:
        """A thread that ticks at the interval (at most every second) while in here."""
        stop = threading.Event()

        def run() -> None:
            while not stop.wait(min(max(self.interval, 0.1), 1.0)):
                self.tick()

        thread = threading.Thread(target=run, name="progress", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def _due(self, now: float) -> None:
        if now >= self.due:
            self.due = now + self.interval
            self._show(now, final=False)

    def _end(self) -> None:
        if self.what is None:
            return
        if self.form is Form.JSON and self.shown:
            self._show(self.clock(), final=True)
        self._clear()
        self.what = None
        self.shown = False

    def _clear(self) -> None:
        if self.on_line:
            self._write("\r" + " " * self.on_line + "\r")
            self.on_line = 0

    # ------------------------------------------------------------ what it shows

    def rate(self, now: float) -> float:
        elapsed = now - self.started
        return self.done.bytes / elapsed if elapsed > 0 else 0.0

    def left(self, now: float) -> float | None:
        """Seconds left, from the rate so far: by bytes when there is a total of bytes,
        else by entries; None when unknown (no total, nothing done yet, past the total:
        the total was an estimate)."""
        t, d, elapsed = self.total, self.done, now - self.started
        if t is None or elapsed <= 0:
            return None
        if t.bytes > 0 and d.bytes > 0:
            return (t.bytes - d.bytes) / (d.bytes / elapsed) if d.bytes < t.bytes else None
        if t.entries > 0 and d.entries > 0:
            return ((t.entries - d.entries) / (d.entries / elapsed)
                    if d.entries < t.entries else None)
        return None

    def text(self, now: float) -> str:
        """The line: what is known of bytes and entries (work that counts neither, a
        program running, shows its time alone)."""
        d, t = self.done, self.total
        parts = []
        if t is not None and t.bytes > 0:
            size = f"{human(d.bytes)} of {human(t.bytes)}"
            if d.bytes <= t.bytes:
                size += f" ({100 * d.bytes // t.bytes}%)"
            parts.append(size)
        elif d.bytes:
            parts.append(human(d.bytes))
        if t is not None and t.entries > 0:
            parts.append(f"{d.entries} of {t.entries} entries")
        elif d.entries:
            parts.append(f"{d.entries} entries")
        if d.bytes:
            parts.append(f"{human(int(self.rate(now)))}/s")
        left = self.left(now)
        parts.append(f"{duration(left)} left" if left is not None
                     else f"{duration(now - self.started)} so far")
        return f"{self.what}: " + ", ".join(parts)

    def data(self, now: float, final: bool) -> dict[str, Any]:
        """One JSON progress object; its keys are documented in the README."""
        d, t = self.done, self.total
        left = None if final else self.left(now)
        return {
            "type": "progress",
            "step": self.step,
            "what": self.what,
            "entries_done": d.entries,
            "entries_total": t.entries if t is not None and t.entries > 0 else None,
            "bytes_done": d.bytes,
            "bytes_total": t.bytes if t is not None and t.bytes > 0 else None,
            "bytes_per_second": int(self.rate(now)),
            "seconds": round(now - self.started, 3),
            "seconds_left": None if left is None else round(left, 1),
            "done": final,
        }

    def _show(self, now: float, final: bool) -> None:
        self.shown = True
        if self.form is Form.JSON:
            self._write(json.dumps(self.data(now, final)) + "\n")
        elif self.form is Form.PLAIN:
            self._write(self.text(now) + "\n")
        else:
            # One column short of the width: a line that fills it wraps on some terminals,
            # and a wrapped line is not erased by a carriage return.
            line = self.text(now)[:max(1, self.width() - 1)]
            pad = max(0, self.on_line - len(line))
            self._write("\r" + line + " " * pad)
            self.on_line = len(line)

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            pass  # a reader that went away: the work goes on without its progress


__all__ = ["Amount", "Form", "Meter", "Tally", "duration"]
