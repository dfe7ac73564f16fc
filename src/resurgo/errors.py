"""Errors a user can cause, each with its own message, hint and exit code.

Tracebacks are for our bugs; everything here is shown as one message.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1
    BAD_INPUT = 2
    PRECONDITION = 3
    NOT_AUTHENTIC = 4


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


class NotAuthentic(ResurgoError):
    """A recovery set that trusted signers did not sign: unsigned, signed by another key,
    or changed since it was signed. Nothing of it is used."""

    exit_code = ExitCode.NOT_AUTHENTIC


class NotConfirmed(ResurgoError):
    """The person asked to confirm a recovery did not: nothing was written."""

    exit_code = ExitCode.FAILED


class ToolMissing(OperationFailed):
    def __init__(self, program: str, package: str | None) -> None:
        hint = f"install it: apt-get install {package}" if package else None
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
