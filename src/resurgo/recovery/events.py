"""What an orchestrator tells while it runs: steps started and ended (with their times),
progress lines and warnings, as typed events.

The orchestrator never prints: it hands each event to the ``on_event`` callable it is
given. The command line prints them (recovery.report.event_text says how); another
caller may record them, time the steps, or drop them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum

from resurgo.plan.model import Plan
from resurgo.progress import Amount, Tally


class Step(StrEnum):
    # Every file of the set and of the sets it builds on read against its digest.
    VERIFY_SET = "verify-set"
    # The plan's actions executed on the disks.
    LAYOUT = "layout"
    # The description's commands run (the built-in restore of each tree among them).
    RESTORE = "restore"
    # The restored trees walked against their manifests.
    CHECK = "check"
    FINALIZE = "finalize"
    # Verifying: a restored system's trees against the manifests, content included.
    VERIFY = "verify"
    # Saving: the system described, each tree archived, the rescue image built.
    DESCRIBE = "describe"
    SAVE = "save"
    RESCUE = "rescue"


@dataclass(frozen=True)
class StepStarted:
    step: Step
    # The line that announces it, for people.
    title: str
    # time.monotonic() when it started.
    at: float


@dataclass(frozen=True)
class StepEnded:
    step: Step
    ok: bool
    # What it did, for people ("" when it says nothing).
    summary: str
    started: float
    at: float

    @property
    def seconds(self) -> float:
        return self.at - self.started


@dataclass(frozen=True)
class Progress:
    """One item of a step done: an action, a command, a tree checked."""

    step: Step
    line: str


@dataclass(frozen=True)
class Advanced:
    """How far a long piece of a step is (a tree saved, restored or verified): told in
    batches as the engine goes, the first time with nothing done. ``total`` is what the
    piece will amount to when it is known (statvfs for a save, the manifest for a restore
    or a verify), an estimate that ``done`` may pass. resurgo.progress shows it."""

    step: Step
    what: str
    done: Amount
    total: Amount | None = None


def advancing(on_event: OnEvent, step: Step, what: str, total: Amount | None) -> Tally:
    """A tally for an engine that turns its counts into Advanced events of this piece;
    told at once that nothing is done yet (the piece's clock starts)."""
    on_event(Advanced(step, what, Amount(), total))

    def tally(entries: int, nbytes: int) -> None:
        on_event(Advanced(step, what, Amount(entries, nbytes), total))

    return tally


@dataclass(frozen=True)
class Warned:
    """Something a person must know even when only data is printed (stderr)."""

    message: str


@dataclass(frozen=True)
class PlanReady:
    """The plan that will be executed, once the set is checked: shown before anything is
    asked or written."""

    plan: Plan


Event = StepStarted | StepEnded | Progress | Advanced | Warned | PlanReady
OnEvent = Callable[[Event], None]


def ignore(event: Event) -> None:
    """An on_event for callers that want the report alone."""


@dataclass(frozen=True)
class StepTime:
    """How long a step took, as the report keeps it."""

    step: Step
    ok: bool
    seconds: float


class StepResult:
    """What a step's body says of it when it is over (failed, without a summary, until
    it says otherwise)."""

    def __init__(self) -> None:
        self.ok = False
        self.summary = ""

    def end(self, ok: bool, summary: str = "") -> None:
        self.ok = ok
        self.summary = summary


class Steps:
    """An orchestrator's events: each step announced, ended and timed (times)."""

    def __init__(self, on_event: OnEvent) -> None:
        self.on_event = on_event
        self.times: list[StepTime] = []

    def __call__(self, event: Event) -> None:
        self.on_event(event)

    @contextmanager
    def step(self, step: Step, title: str) -> Iterator[StepResult]:
        """StepStarted, the body (which ends its StepResult), StepEnded; a body that raises
        ends nothing: the error tells."""
        started = time.monotonic()
        self(StepStarted(step, title, started))
        outcome = StepResult()
        yield outcome
        ended = time.monotonic()
        self.times.append(StepTime(step, outcome.ok, ended - started))
        self(StepEnded(step, outcome.ok, outcome.summary, started, ended))


__all__ = [
    "Advanced",
    "Event",
    "OnEvent",
    "PlanReady",
    "Progress",
    "Step",
    "StepEnded",
    "StepResult",
    "StepStarted",
    "StepTime",
    "Steps",
    "Warned",
    "advancing",
    "ignore",
]
