"""What recovering, restoring and checking did, for people (lines) and as JSON.

The lines are those `resurgo recover` prints as the events come (event_text), and the
same that RecoverReport.text() gives once it is over; RecoverReport.data() is its --json.
"""

from __future__ import annotations

import dataclasses
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from resurgo import finalize
from resurgo.apply import report as layout
from resurgo.apply.execute import ActionResult, Outcome
from resurgo.engine import Mismatch
from resurgo.errors import ExitCode, ResurgoError
from resurgo.finalize import FinalizeReport
from resurgo.finalize.planned import SKIPPED, plan_data
from resurgo.plan.model import Plan
from resurgo.recovery.check import CheckOutcome, UnitCheck
from resurgo.recovery.events import (
    Advanced,
    Event,
    PlanReady,
    Progress,
    Step,
    StepEnded,
    StepStarted,
    StepTime,
    Warned,
)
from resurgo.recovery.restore import CommandResult, RestoreOutcome, Status
from resurgo.units import human

MARK = {Status.DONE: "done", Status.FAILED: "FAILED", Status.NOT_RUN: "not run"}
SHOWN_MISMATCHES = 20


def command_line(r: CommandResult) -> str:
    head = f"[{r.seq}] {MARK[r.status]:<8} {r.line}"
    if r.status == Status.DONE and r.entries:
        head += (f": {r.entries} entries, {r.files} files, {human(r.data_bytes)} "
                 f"({r.seconds:.1f} s)")
    elif r.status == Status.DONE:
        head += f" ({r.seconds:.1f} s)"
    if r.status == Status.FAILED:
        if r.damaged:
            head += f"\n      damaged archive: {r.damaged}"
            if r.damaged_paths:
                head += "\n      files concerned: " + ", ".join(r.damaged_paths)
        head += "\n" + "\n".join("      " + m for m in r.message.splitlines())
    for w in r.warnings[:5]:
        head += f"\n      warning: {w}"
    return head


def restore_summary(o: RestoreOutcome) -> str:
    done = [r for r in o.results if r.status == Status.DONE]
    failed = [r for r in o.results if r.status == Status.FAILED]
    if o.ok:
        text = (f"data restored: {len(done)} command(s), {sum(r.entries for r in done)} "
                f"entries, {human(sum(r.data_bytes for r in done))} of file data\n")
        passed = o.passed_failures()
        if passed:
            text += (f"{len(passed)} command(s) failed and were passed, as their records "
                     "allow (on_failure = continue): "
                     + ", ".join(str(r.seq) for r in passed) + "\n")
        return text
    text = f"restoring the data FAILED: {len(failed)} command(s) failed"
    if o.aborted_at is not None:
        text += f", the recovery stopped at command {o.aborted_at}"
    return text + "\n"


def command_data(r: CommandResult) -> dict[str, Any]:
    d = dataclasses.asdict(r)
    d["status"] = str(r.status)
    d["seconds"] = round(r.seconds, 3)
    return d


def restore_data(o: RestoreOutcome) -> dict[str, Any]:
    return {"ok": o.ok, "aborted_at": o.aborted_at,
            "commands": [command_data(r) for r in o.results]}


def check_line(u: UnitCheck) -> str:
    if u.error is not None:
        return f"  {u.label}: could not be checked: {u.error}"
    state = "same as saved" if not u.mismatches else f"{len(u.mismatches)} difference(s)"
    text = f"  {u.label}: {state}"
    if u.expected:
        text += f" ({len(u.expected)} made by finalize on purpose)"
    for m in u.mismatches[:SHOWN_MISMATCHES]:
        text += f"\n      {shown(u, m)}"
    if len(u.mismatches) > SHOWN_MISMATCHES:
        text += f"\n      ... and {len(u.mismatches) - SHOWN_MISMATCHES} more (--json lists all)"
    return text


def shown(u: UnitCheck, m: Mismatch) -> str:
    """The mismatch with its path as the restored system sees it."""
    base = u.mountpoint if u.mountpoint is not None else f"[{u.label}]"
    path = base if m.path in (".", "") else posixpath.join(base, m.path)
    return str(Mismatch(path, m.what, m.expected, m.actual))


def check_summary(o: CheckOutcome) -> str:
    how = "content and metadata" if o.content else "metadata; the content was checked " \
        "while restoring"
    if o.ok:
        return f"verified: every entry of {len(o.units)} tree(s) matches its manifest ({how})\n"
    bad = sum(1 for u in o.units if not u.ok)
    return (f"verification FAILED: {o.mismatches} difference(s) in {bad} of "
            f"{len(o.units)} tree(s) ({how})\n")


def check_data(o: CheckOutcome) -> dict[str, Any]:
    return {
        "ok": o.ok,
        "content": o.content,
        "seconds": round(o.seconds, 3),
        "trees": [
            {
                "id": u.key,
                "what": u.label,
                "mountpoint": u.mountpoint,
                "ok": u.ok,
                "error": u.error,
                "mismatches": [dataclasses.asdict(m) for m in u.mismatches],
                # Paths are relative to the tree's mountpoint (or its subvolume).
                "expected": [dataclasses.asdict(m) for m in u.expected],
                "seconds": round(u.seconds, 3),
            }
            for u in o.units
        ],
    }


# ---------------------------------------------------------------- recover


def action_line(n: int, total: int, r: ActionResult) -> str:
    return layout.line(n, total, r)


def layout_summary(o: Outcome) -> str:
    return layout.summary(o).rstrip("\n")


@dataclass(frozen=True)
class SetRef:
    id: str
    medium: str


@dataclass(frozen=True)
class FinalizeResult:
    """What finalize did: skipped (--no-finalize), not run (error), or its report and the
    record of what it changed on purpose (None when the state directory is not
    writable)."""

    skipped: bool = False
    report: FinalizeReport | None = None
    error: str | None = None
    record: Path | None = None

    @property
    def ok(self) -> bool:
        return self.skipped or (self.report is not None and self.report.ok)


@dataclass(frozen=True)
class RecoverReport:
    """What recover_set did: every step it reached, in order; a step not reached is None."""

    plan: Plan
    set: SetRef | None
    layout_only: bool = False
    skip_finalize: bool = False
    # Why the plan was not executed, when an error tells it (the plan hash differs).
    refused: ResurgoError | None = None
    outcome: Outcome | None = None
    restore: RestoreOutcome | None = None
    check: CheckOutcome | None = None
    finalize: FinalizeResult | None = None
    steps: tuple[StepTime, ...] = ()

    def refuse(self, error: ResurgoError) -> RecoverReport:
        return dataclasses.replace(self, refused=error)

    def executed(self, outcome: Outcome) -> RecoverReport:
        return dataclasses.replace(self, outcome=outcome)

    def restored(self, restore: RestoreOutcome) -> RecoverReport:
        return dataclasses.replace(self, restore=restore)

    def checked(self, check: CheckOutcome) -> RecoverReport:
        return dataclasses.replace(self, check=check)

    def finalized(self, result: FinalizeResult) -> RecoverReport:
        return dataclasses.replace(self, finalize=result)

    def timed(self, steps: Sequence[StepTime]) -> RecoverReport:
        return dataclasses.replace(self, steps=tuple(steps))

    @property
    def ok(self) -> bool:
        """Everything it was asked to do was done."""
        if self.outcome is None or not self.outcome.ok:
            return False
        if self.set is None or self.layout_only:
            return True
        return (self.restore is not None and self.restore.ok and self.check is not None
                and self.check.ok and self.finalize is not None and self.finalize.ok)

    @property
    def exit_code(self) -> ExitCode:
        """As `resurgo recover` exits: a restore that failed on a damaged archive, or on
        one it could not decrypt, says so (errors.ExitCode)."""
        if self.refused is not None:
            return self.refused.exit_code
        if not self.plan.ok:
            return ExitCode.PRECONDITION
        if self.ok:
            return ExitCode.OK
        if self.restore is not None and not self.restore.ok:
            return self.restore.exit_code
        if self.check is not None and not self.check.ok:
            return self.check.exit_code
        return ExitCode.FAILED

    def data(self) -> dict[str, Any]:
        """The --json of recover: the keys appear as the steps are reached."""
        out: dict[str, Any] = {"plan": plan_data(self.plan), "outcome": None}
        if self.set is not None:
            out["set"] = {"id": self.set.id, "medium": self.set.medium}
        if self.outcome is not None:
            out["outcome"] = layout.data(self.outcome)
        if self.restore is not None:
            out["commands"] = restore_data(self.restore)
        if self.check is not None:
            out["verify"] = check_data(self.check)
        if self.finalize is not None:
            out["finalize"] = _finalize_data(self.finalize)
            if self.finalize.record is not None:
                out["finalize_record"] = str(self.finalize.record)
        if self.steps:
            out["steps"] = [{"step": str(t.step), "ok": t.ok, "seconds": round(t.seconds, 3)}
                            for t in self.steps]
        return out

    def text(self) -> str:
        """What recover printed after the plan, once the plan was confirmed: the same
        lines as the events gave them."""
        out: list[str] = []
        if self.outcome is not None:
            o = self.outcome
            out.append(f"\nrecreating the layout ({len(self.plan.actions)} actions)")
            out += [action_line(n, len(self.plan.actions), r)
                    for n, r in enumerate(o.results, 1)]
            out.append(layout_summary(o))
        if self.restore is not None and self.set is not None:
            out.append(f"\nrestoring the data from set {self.set.id} "
                       f"({len(self.restore.results)} commands)")
            out += [command_line(r) for r in self.restore.results]
            out.append(restore_summary(self.restore).rstrip())
        if self.check is not None:
            out.append("\nchecking the restored trees against their manifests")
            out += [check_line(u) for u in self.check.units]
            out.append(check_summary(self.check).rstrip())
        fin = self.finalize
        if fin is not None and fin.skipped:
            out.append("\n" + SKIPPED)
        elif fin is not None:
            out.append("\nfinalizing the restored system")
            if fin.report is not None:
                out.append(finalize.text(fin.report).rstrip())
        return "".join(line + "\n" for line in out)


def _finalize_data(f: FinalizeResult) -> dict[str, Any] | None:
    if f.skipped:
        return None
    if f.report is None:
        return {"ok": False, "errors": [f.error]}
    return finalize.data(f.report)


# The steps of recover that follow the plan, each after a blank line.
_RECOVER_STEPS = frozenset({Step.LAYOUT, Step.RESTORE, Step.CHECK, Step.FINALIZE})


def event_text(event: Event) -> str | None:
    """The line(s) a person sees for an event (no newline at the end), None for none: a
    step's title (a step of recover after the plan, after a blank line), its progress,
    its summary.
    PlanReady and Warned are shown by the caller (the plan with its source's name; a
    warning on stderr), Advanced by its progress meter (resurgo.progress)."""
    if isinstance(event, StepStarted):
        return "\n" + event.title if event.step in _RECOVER_STEPS else event.title
    if isinstance(event, Progress):
        return event.line
    if isinstance(event, StepEnded):
        return event.summary or None
    assert isinstance(event, PlanReady | Warned | Advanced)
    return None
