"""The resurgo command line as the tests run it.

`run` calls `resurgo.cli.main.main(argv)` in this process: what the unit tier uses, a
few milliseconds a call where a new interpreter costs a second. main() returns every
exit code and undoes its logging; the runner gives each call its own standard streams,
environment and cwd, and puts back the umask and signal handlers a command may change.
`spawn` runs `python -m resurgo` as a process of its own, for what needs one: root
operations whose failure must not take pytest with it, a process killed and resumed, a
terminal or its absence, a hash seed of its own. Both give a `Result` with the exit
code and what was printed; a traceback fails the test (in process, the exception
propagates).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from resurgo.cli.main import main

SRC = Path(__file__).resolve().parents[2] / "src"

# Signals whose handlers a command could change; restored after each in-process run.
_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE)


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def json(self) -> Any:
        return json.loads(self.stdout)


class _Sink(io.BytesIO):
    """A captured stream that outlives the command closing it (main closes stderr when
    its reader went away)."""

    def close(self) -> None:
        pass


def _text(data: bytes) -> io.TextIOWrapper:
    return io.TextIOWrapper(_Sink(data), encoding="utf-8", errors="surrogateescape")


def _decoded(stream: io.TextIOWrapper) -> str:
    with contextlib.suppress(ValueError):  # already closed: flushed when it was
        stream.flush()
    buffer = stream.buffer
    assert isinstance(buffer, _Sink)
    return buffer.getvalue().decode("utf-8", errors="replace")


@contextlib.contextmanager
def _environment(env: Mapping[str, str | None]) -> Iterator[None]:
    saved = dict(os.environ)
    for name, value in env.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@contextlib.contextmanager
def _process_state(cwd: Path | None) -> Iterator[None]:
    """What a command may change for the whole process: cwd, umask, signal handlers."""
    old_cwd = os.getcwd()
    mask = os.umask(0o022)
    os.umask(mask)
    main_thread = threading.current_thread() is threading.main_thread()
    handlers = {s: signal.getsignal(s) for s in _SIGNALS} if main_thread else {}
    if cwd is not None:
        os.chdir(cwd)
    try:
        yield
    finally:
        os.chdir(old_cwd)
        os.umask(mask)
        for s, handler in handlers.items():
            signal.signal(s, handler)


def run(
    *argv: str | Path,
    env: Mapping[str, str | None] | None = None,
    stdin: str = "",
    cwd: Path | None = None,
    state: Path | None = None,
) -> Result:
    """Run `resurgo ARGV` in this process. `env` adds to the environment for this run (a
    None value removes a variable); `stdin` is what it reads (never a terminal); `state`
    is where journals and records go (RESURGO_STATE_DIR)."""
    out, err, inp = _text(b""), _text(b""), _text(stdin.encode())
    saved = sys.stdin, sys.stdout, sys.stderr
    env = {**(env or {}), **_state_env(state)}
    with _environment(env), _process_state(cwd):
        sys.stdin, sys.stdout, sys.stderr = inp, out, err
        try:
            code = main([str(a) for a in argv])
        finally:
            sys.stdin, sys.stdout, sys.stderr = saved
    return Result(code, _decoded(out), _decoded(err))


def _state_env(state: Path | None) -> dict[str, str]:
    return {} if state is None else {"RESURGO_STATE_DIR": str(state)}


def clean_env(state: Path | None = None, **extra: str) -> dict[str, str]:
    """The environment of a spawned resurgo: the test's, without any RESURGO_ variable it
    may carry (and without a configuration file), this tree's sources first on the path,
    STATE as run() takes it, and EXTRA."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESURGO_")}
    # Nor the machine's configuration file: a test that wants one passes it.
    env["RESURGO_CONFIG"] = ""
    env["PYTHONPATH"] = str(SRC) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(_state_env(state))
    env.update(extra)
    return env


def command(*argv: str | Path) -> list[str]:
    """The argv of `python -m resurgo ARGV`, for a test that drives the process itself
    (with clean_env())."""
    return [sys.executable, "-m", "resurgo", *map(str, argv)]


def _reports_apart(argv: tuple[str | Path, ...], state: Path | None) -> list[str | Path]:
    words = [str(a) for a in argv]
    if not set(words) & _reported_commands() or "--report-dir" in words:
        return list(argv)
    # Beside the state directory, not in it: a test that checks a refused run wrote no
    # state (no journal) checks that the directory does not exist.
    where = state.with_name(state.name + "-reports") if state is not None else Path(
        tempfile.gettempdir()) / "resurgo-test-reports"
    return [*argv, "--report-dir", where]


def _reported_commands() -> set[str]:
    import argparse

    from resurgo.cli.main import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {name for name, p in sub.choices.items() if p.get_default("reported")}


def spawn(
    *argv: str | Path,
    env: Mapping[str, str] | None = None,
    stdin: str | None = None,
    cwd: Path | None = None,
    state: Path | None = None,
    timeout: float = 600,
) -> Result:
    """Run `python -m resurgo ARGV` as a process of its own, in a session of its own (no
    controlling terminal to ask on), with `clean_env()` plus ENV and STATE as run()
    takes it; stdin is STDIN or /dev/null. A command that leaves a report keeps it under
    STATE (or the system's temporary directory), never in the machine's /var/log/resurgo."""
    proc = subprocess.run(
        command(*_reports_apart(argv, state)),
        capture_output=True,
        text=True,
        env=clean_env(state, **(env or {})),
        cwd=cwd,
        timeout=timeout,
        check=False,
        input=stdin,
        stdin=subprocess.DEVNULL if stdin is None else None,
        start_new_session=True,
    )
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    return Result(proc.returncode, proc.stdout, proc.stderr)
