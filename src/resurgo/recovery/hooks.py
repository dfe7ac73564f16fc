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
go into the save's report.
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from resurgo import run
from resurgo.errors import BadInput, OperationFailed, PreconditionFailed

# A hook that quiesces an application takes seconds; one still running after this is
# stopped (and counts as failed), so a hung hook cannot hold the save for ever.
TIMEOUT = 600.0
# What the report keeps of a hook's output (stdout then stderr): its end.
KEPT_OUTPUT = 4096

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


def run_hook(hook: str, argv: tuple[str, ...], env: dict[str, str]) -> HookRun:
    start = time.monotonic()
    try:
        result = run.run(argv, check=False, env={"RESURGO_HOOK": hook, **env},
                         timeout=TIMEOUT)
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"") + (e.stderr or b"")
        text = out.decode(errors="replace") if isinstance(out, bytes) else str(out)
        return HookRun(hook, argv, None, _tail(text), time.monotonic() - start)
    return HookRun(hook, argv, result.returncode, _tail(result.stdout + result.stderr),
                   time.monotonic() - start)


@contextmanager
def around(pre: tuple[str, ...] | None, post: tuple[str, ...] | None,
           ran: list[HookRun]) -> Iterator[None]:
    """Run pre before the body and post after it, whatever happens in between (see the
    module docstring); each run is appended to ``ran`` as it ends."""
    if pre is None and post is None:
        yield
        return
    status = "failed"
    try:
        if pre is not None:
            first = run_hook(PRE, pre, {})
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
            last = run_hook(POST, post, {"RESURGO_SAVE": status})
            ran.append(last)
            if not last.ok and status != "ok":
                log.warning("%s", last.line())


__all__ = ["POST", "PRE", "HookRun", "around", "check", "parse"]
