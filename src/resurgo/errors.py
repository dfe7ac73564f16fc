"""Errors a user can cause, each with its own message, hint and exit code.

Tracebacks are for our bugs; everything here is shown as one message. The exit codes
tell a caller (the rescue agent, rehearse, a script) what went wrong without reading the
message: 5 to 7 say what to do next (another copy of the set, another identity, someone
at the console), as borg's own codes do for its errors.
"""

from __future__ import annotations

import signal
from collections.abc import Iterable
from enum import IntEnum

from resurgo.packages import hint_for


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1
    BAD_INPUT = 2
    PRECONDITION = 3
    NOT_AUTHENTIC = 4
    DAMAGED = 5
    DECRYPT_FAILED = 6
    NOT_CONFIRMED = 7

    @property
    def meaning(self) -> str:
        return MEANINGS[self]


# As `resurgo --help` and the README list them.
MEANINGS = {
    ExitCode.OK: "success",
    ExitCode.FAILED: "the operation failed",
    ExitCode.BAD_INPUT: "bad input or usage",
    ExitCode.PRECONDITION: "a recovery precondition does not hold",
    ExitCode.NOT_AUTHENTIC: "a recovery set is not authentic (unsigned or not signed by a "
    "trusted key, or changed since it was signed)",
    ExitCode.DAMAGED: "a recovery set is damaged or incomplete (a file missing, or not the "
    "bytes that were saved)",
    ExitCode.DECRYPT_FAILED: "an encrypted set cannot be decrypted with the identity given",
    ExitCode.NOT_CONFIRMED: "the recovery was not confirmed (nothing was written)",
}

# A command stopped from outside ends as a shell reports a program killed by that signal
# (128 + its number): not an outcome of the operation, so not an ExitCode (the rescue
# says these are not resurgo's). Documented below the README's table and in the man page.
INTERRUPTED = 128 + signal.SIGINT  # 130
OUTPUT_CLOSED = 128 + signal.SIGPIPE  # 141
STOPPED = {
    INTERRUPTED: "interrupted (Ctrl-C, or SIGTERM where the command takes it as Ctrl-C)",
    OUTPUT_CLOSED: "the reader of its standard output went away (`| head`): the command "
    "stopped there, quietly, whatever it had found, as a program killed by SIGPIPE",
}

# The failures that name their cause in the exit code of the command that failed (a
# restore, a check) rather than as 1.
ARCHIVE_FAILURES = frozenset({ExitCode.DAMAGED, ExitCode.DECRYPT_FAILED})


def failure_code(codes: Iterable[int]) -> ExitCode:
    """The exit code of an operation that failed for these reasons (the first that names
    its cause), in order: FAILED when none does."""
    for code in codes:
        if code in ARCHIVE_FAILURES:
            return ExitCode(code)
    return ExitCode.FAILED


class ResurgoError(Exception):
    """A problem the user can act on."""

    exit_code: ExitCode = ExitCode.FAILED

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if self.hint is None else f"{self.message}\n  hint: {self.hint}"


class OperationFailed(ResurgoError):
    exit_code = ExitCode.FAILED


class BadInput(ResurgoError):
    exit_code = ExitCode.BAD_INPUT


class PreconditionFailed(ResurgoError):
    exit_code = ExitCode.PRECONDITION


# The attribute that carries a set's id on the log record of its refusal as not
# authentic (media.base), for a caller that says refusals in its own words.
REFUSED_SET = "resurgo_refused_set"


class NotAuthentic(ResurgoError):
    """A recovery set that trusted signers did not sign: unsigned, signed by another key,
    or changed since it was signed. Nothing of it is used."""

    exit_code = ExitCode.NOT_AUTHENTIC


class Damaged(OperationFailed):
    """A file of a recovery set that is missing, or not the bytes that were saved: its
    size or digest differs from the set's index, or its content is not what its format
    says. Another copy of the set, or another set, is needed."""

    exit_code = ExitCode.DAMAGED


class Undecryptable(OperationFailed):
    """An encrypted file of a set that the identity given cannot open."""

    exit_code = ExitCode.DECRYPT_FAILED


class NotConfirmed(ResurgoError):
    """The person asked to confirm a recovery did not: nothing was written."""

    exit_code = ExitCode.NOT_CONFIRMED


class ToolMissing(OperationFailed):
    def __init__(self, program: str, package: str | None) -> None:
        how = hint_for(program) or (f"apt-get install {package}" if package else None)
        hint = f"install it: {how}" if how else None
        super().__init__(f"the program {program!r} is needed but not installed", hint)
        self.program = program
        self.package = package


class CommandFailed(OperationFailed):
    def __init__(self, argv: list[str], returncode: int, stderr: str) -> None:
        tail = "\n".join(stderr.strip().splitlines()[-5:])
        msg = f"command failed with exit code {returncode}: {' '.join(argv)}"
        if tail:
            msg += "\n" + "\n".join("  | " + line for line in tail.splitlines())
        super().__init__(msg)
        self.argv = argv
        self.returncode = returncode
        self.stderr = stderr
