"""A recovery's steps as lines of the rehearsal protocol, as they start and end:
`resurgo recover --step-lines FILE`, which the rescue in rehearsal mode points at the
output it copies to the consoles (rescue.agent)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from types import TracebackType
from typing import IO

from resurgo.errors import BadInput
from resurgo.recovery.events import Event, OnEvent, StepEnded, StepStarted
from resurgo.rehearse import protocol


def step_line(event: Event) -> str | None:
    """The protocol line of a step started or ended; None for the other events."""
    if isinstance(event, StepStarted):
        return protocol.line("step", step=str(event.step), event="start")
    if isinstance(event, StepEnded):
        return protocol.line("step", step=str(event.step), event="end", ok=event.ok)
    return None


class StepLines:
    """The file the lines go to, opened for appending (made 0600 if missing; /dev/fd/N,
    /proc/self/fd/N and consoles are taken as they are: they are links or devices). A
    write that fails (the reader gone) stops the lines, never the recovery."""

    def __init__(self, path: Path) -> None:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise BadInput(f"--step-lines {path}: cannot open it: {e.strerror}") from None
        self.file: IO[str] | None = os.fdopen(fd, "w", encoding="ascii")

    def write(self, event: Event) -> None:
        text = step_line(event)
        if text is None or self.file is None:
            return
        try:
            self.file.write(text)
            self.file.flush()
        except OSError:
            self.close()

    def wrap(self, on_event: OnEvent) -> OnEvent:
        """on_event, with each step's line written first."""

        def both(event: Event) -> None:
            self.write(event)
            on_event(event)

        return both

    def close(self) -> None:
        file, self.file = self.file, None
        if file is not None:
            with contextlib.suppress(OSError):
                file.close()

    def __enter__(self) -> StepLines:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


__all__ = ["StepLines", "step_line"]
