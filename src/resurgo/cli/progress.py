"""The progress of a command's long work, on standard error (resurgo.progress).

On standard error in all three forms: standard output keeps what it holds today (the
text of the steps and the report, or under --json the one JSON document), so that
`resurgo save --json > report.json` stays parseable, and the JSON progress objects are
read from standard error, one per line. A terminal line is erased before any other
line of the command is written, and when the piece of work ends; while a piece tells
nothing (a program running for minutes) the meter's ticker keeps its time going.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

from resurgo.progress import Form, Meter
from resurgo.recovery.events import Advanced, Event, OnEvent, StepEnded


def meter(as_json: bool) -> Meter:
    """The meter of this command: on standard error, JSON with --json, else a refreshing
    line on a terminal and a plain line now and then elsewhere."""
    return Meter(sys.stderr, Form.choose(as_json, sys.stderr))


@contextlib.contextmanager
def shown(as_json: bool, show: OnEvent) -> Iterator[OnEvent]:
    """An on_event that shows Advanced events on the meter and hands the others to show
    (after erasing the terminal line); whatever happens, no line is left standing."""
    m = meter(as_json)

    def on_event(event: Event) -> None:
        if isinstance(event, Advanced):
            m.update(str(event.step), event.what, event.done, event.total)
            return
        if isinstance(event, StepEnded):
            m.end()
        else:
            m.clear()
        show(event)

    try:
        with m.ticking():
            yield on_event
        m.end()  # the last piece is done: JSON says so
    finally:
        m.clear()


__all__ = ["meter", "shown"]
