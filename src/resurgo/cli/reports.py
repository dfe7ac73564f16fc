"""The commands that leave a lasting JSON report (resurgo.reports), and the report of a run.

A command declares it once, in its add_parser: ``reported(parser, "save")``. It gets a
``--report-dir DIR`` option, and main() then writes, however the command ends (done,
failed, refused, interrupted), one report: the command, its arguments, when it ran, its
exit code, the error that stopped it, and the result it printed through output.emit (or
handed to keep()). A recover that restored data also copies its report into the
recovered system (copy_into).
"""

from __future__ import annotations

import argparse
import errno
import logging
import socket
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from resurgo import __version__, reports
from resurgo.errors import ExitCode, ResurgoError

log = logging.getLogger("resurgo")


def reported(p: argparse.ArgumentParser, command: str) -> None:
    """Declare that the command leaves a report."""
    p.add_argument(
        "--report-dir", type=Path, metavar="DIR",
        help=f"keep this run's JSON report in DIR (default {reports.LOG_DIR}; the "
        f"newest {reports.KEEP} of each command are kept)")
    p.set_defaults(reported=command)


@dataclass
class Run:
    command: str
    directory: Path
    argv: list[str]
    started: datetime
    clock: float
    result: Any = None
    # The root of a recovered system the report is copied into as well.
    target: Path | None = None
    written: list[Path] = field(default_factory=list)


_current: list[Run] = []


def begin(args: argparse.Namespace, argv: list[str]) -> Run | None:
    command = getattr(args, "reported", None)
    if command is None:
        return None
    run = Run(command, getattr(args, "report_dir", None) or reports.DEFAULT_DIR,
              argv, datetime.now(UTC), time.monotonic())
    _current.append(run)
    return run


def keep(data: Any) -> None:
    """The result of the command running now, for its report (its --json data)."""
    if _current:
        _current[-1].result = data


def copy_into(root: Path) -> None:
    """Copy the report of the command running now into the system at root as well."""
    if _current:
        _current[-1].target = root


def data(run: Run, code: int | None, error: str | None) -> dict[str, Any]:
    ended = datetime.now(UTC)
    return {
        "command": run.command,
        "resurgo": __version__,
        "host": socket.gethostname(),
        "argv": ["resurgo", *run.argv],
        "started": run.started.isoformat(timespec="seconds"),
        "ended": ended.isoformat(timespec="seconds"),
        "seconds": round(time.monotonic() - run.clock, 3),
        "exit_code": code,
        "ok": code == ExitCode.OK,
        "error": error,
        "result": run.result,
        "target": str(run.target) if run.target is not None else None,
    }


def finish(run: Run | None, code: int | None, error: str | None) -> None:
    """Write the run's report (and its copy into a recovered system); a report that
    cannot be written is a warning, never the command's failure."""
    if run is None:
        return
    _current.remove(run)
    report = data(run, code, error)
    try:
        run.written.append(reports.write_report(run.directory, run.command, report,
                                                when=run.started))
    except OSError as e:
        # Not root: the default directory is root's, and the command needed root anyway.
        if not (e.errno in (errno.EACCES, errno.EPERM) and run.directory == reports.DEFAULT_DIR):
            _warn(f"the report of this {run.command} could not be kept in {run.directory}: "
                  f"{e.strerror or e}")
    if run.target is not None:
        name = f"{run.command}-{reports.stamp(run.started)}.json"
        try:
            run.written.append(reports.keep_in_target(run.target, name,
                                                      reports.encode(report)))
        except (OSError, ResurgoError) as e:
            _warn(f"the report could not be copied into {run.target}: {e}")


def _warn(message: str) -> None:
    try:
        print(f"resurgo: warning: {message}", file=sys.stderr)
    except BrokenPipeError:  # after the command, its reader gone too: the exit code tells
        from resurgo.cli.output import drop  # output keeps what emit prints here

        drop(sys.stderr)


__all__ = ["Run", "begin", "copy_into", "finish", "keep", "reported"]
