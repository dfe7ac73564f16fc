"""The one way resurgo runs an external program.

argv lists only (no shell), a clean minimal environment, stdin closed unless
input is given, every command logged as one ``+ cmd args`` line at debug level,
and failures raised as CommandFailed naming the command, its exit code and the
tail of its stderr. Secrets are passed on stdin and never logged.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from resurgo.errors import CommandFailed, ToolMissing
from resurgo.packages import PACKAGES

log = logging.getLogger("resurgo.run")

PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Result:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


def which(program: str) -> str | None:
    return shutil.which(program, path=PATH)


def require(*programs: str) -> None:
    """Fail up front, with the package to install, when a program is missing."""
    for program in programs:
        if which(program) is None:
            raise ToolMissing(program, PACKAGES.get(program))


def environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {"LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "PATH": PATH}
    if extra:
        env.update(extra)
    return env


def run(
    argv: Sequence[str],
    *,
    check: bool = True,
    input: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    cwd: Path | None = None,
) -> Result:
    """Run argv and capture its output as text.

    ``input`` is fed on stdin (the way secrets are passed); otherwise stdin is
    /dev/null so that no program ever waits on the terminal. ``cwd``: where it runs (for
    a program that writes there, as apt-get download does).
    """
    args = [str(a) for a in argv]
    program = args[0]
    if "/" not in program and which(program) is None:
        raise ToolMissing(program, PACKAGES.get(program))
    log.debug("+ %s", shlex.join(args))
    proc = subprocess.run(
        args,
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        errors="surrogateescape",
        env=environment(env),
        timeout=timeout,
        check=False,
        cwd=cwd,
    )
    result = Result(tuple(args), proc.returncode, proc.stdout, proc.stderr)
    if check and proc.returncode != 0:
        raise CommandFailed(args, proc.returncode, proc.stderr)
    return result


def spawn(
    argv: Sequence[str],
    *,
    stdin: int | IO[bytes] | None = subprocess.DEVNULL,
    stdout: int | IO[bytes] | None = subprocess.PIPE,
    stderr: int | IO[bytes] | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start argv with binary pipes, for data streamed through a program (ssh, zstd).

    The caller owns the process: it closes the pipes and waits for it.
    """
    args = [str(a) for a in argv]
    program = args[0]
    if "/" not in program and which(program) is None:
        raise ToolMissing(program, PACKAGES.get(program))
    log.debug("+ %s", shlex.join(args))
    return subprocess.Popen(
        args, stdin=stdin, stdout=stdout, stderr=stderr, env=environment(env)
    )


def output(argv: Sequence[str], *, timeout: float | None = None) -> str:
    """stdout of a command that must succeed."""
    return run(argv, timeout=timeout).stdout


def is_root() -> bool:
    return os.geteuid() == 0
