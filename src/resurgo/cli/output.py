"""How every command prints its result: one report, as text or, with --json, as JSON.

A command's result is a report (a frozen dataclass) that renders itself both ways; the
choice between them is made here, once, so that no command decides it twice. Progress
lines are text alone: with --json, standard output holds the JSON document and nothing
else. Warnings and errors go to standard error either way, and so does the progress of
long work (cli/progress.py). The report emitted is also the result of the command's
lasting report, for the commands that leave one (cli/reports.py).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any, Protocol, TextIO

from resurgo.cli import reports


class Report(Protocol):
    def text(self) -> str:
        """The report as a person reads it (whole lines, each ending in a newline)."""
        ...

    def data(self) -> Any:
        """The report as JSON data (dicts, lists, strings, numbers, None)."""
        ...


def emit(report: Report, as_json: bool, *, text_to: TextIO | None = None) -> None:
    """Print the report: its JSON on standard output, or its text on ``text_to`` (default
    standard output)."""
    reports.keep(report.data())
    if as_json:
        sys.stdout.write(json.dumps(report.data(), indent=2) + "\n")
    else:
        (text_to or sys.stdout).write(report.text())


def progress(as_json: bool) -> Callable[[str], None]:
    """Where a command's progress lines go: printed as they come (flushed, so that a slow
    step shows), or dropped under --json."""

    def say(line: str) -> None:
        if not as_json:
            print(line, flush=True)

    return say


def drop(stream: TextIO) -> None:
    """Send what is left of a stream whose reader went away to /dev/null, as Python's
    documentation of SIGPIPE recommends: Python flushes standard output and error once
    more at exit, which would fail again and say so (exit code 120). Closing the stream
    instead would close the caller's too (main() runs in-process in the tests)."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return  # not a file (a caller's buffer): nothing flushes it at exit
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def warn(message: str) -> None:
    """A warning about the result, on standard error whatever the output format."""
    print(f"resurgo: warning: {message}", file=sys.stderr)
