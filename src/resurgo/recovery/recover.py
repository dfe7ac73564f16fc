"""recover: a recovery set's system recreated on this machine.

In order, each step announced and timed by events (recovery.events):

  1. with verify_set, every file of the set and of the sets it builds on read against
     its digest (the set is read twice, but damage is found before any disk is wiped);
  2. the plan shown (PlanReady), then refused when a precondition fails, when it is not
     the plan the given hash names, without root, or when the person does not confirm:
     nothing is written in these cases;
  3. the layout: the plan's actions executed (apply.execute), resumable from the
     journal of an earlier run of the same plan;
  4. the description's commands, in order (the built-in restore of each filesystem and
     btrfs subvolume from its archives, each file's content hashed as it is written);
  5. each restored tree walked against its manifest (metadata: the content was hashed
     while it was written);
  6. finalize, making the system boot here, and the record of what it changed on
     purpose (for `resurgo verify`).

With layout_only, or from a description file (no set), only the layout is recreated.

The plan is computed before (plan_recovery): it is what `resurgo plan` shows with the
same options, and its hash is what --plan-hash approves.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from resurgo import finalize, run
from resurgo.apply import inuse, keys
from resurgo.apply.execute import ActionResult, AfterAction, Executor, Outcome
from resurgo.apply.journal import Journal, default_path
from resurgo.errors import BadInput, NotConfirmed, PreconditionFailed
from resurgo.finalize import FinalizeOptions
from resurgo.finalize.planned import SKIPPED, finalized
from resurgo.machine import ActualDisk
from resurgo.model import Description
from resurgo.plan import make_plan
from resurgo.plan.model import Plan, PlanOptions
from resurgo.recovery import report as lines
from resurgo.recovery.check import Changes, CheckOutcome, check_units, save_record
from resurgo.recovery.check import finalize_changes as check_changes
from resurgo.recovery.events import OnEvent, PlanReady, Progress, Step, Steps, Warned
from resurgo.recovery.load import LoadedSet
from resurgo.recovery.report import FinalizeResult, RecoverReport, SetRef
from resurgo.recovery.restore import RestoreOutcome, run_commands

# Asks a person whether to execute the plan (shown to them by PlanReady).
Confirm = Callable[[Plan], bool]
# Asks a person for a secret (a LUKS passphrase), with this prompt.
AskSecret = Callable[[str], str]


@dataclass(frozen=True)
class RecoverOptions:
    # The plan's options, as `resurgo plan` takes them (targets, maps, grow, keys, root).
    plan: PlanOptions
    # Recreate the layout alone: no command runs, nothing is finalized.
    layout_only: bool = False
    # Read every file of the set and of its chain against its digest first.
    verify_set: bool = False
    # (LUKS volume id, key file) pairs; the others are asked for (AskSecret).
    key_files: tuple[tuple[str, str], ...] = ()
    # Execute only the plan with this hash ("sha256:..." or its hex digits).
    plan_hash: str | None = None
    # The journal of completed actions (default: named by the plan's hash).
    journal: Path | None = None
    finalize: FinalizeOptions = field(default_factory=FinalizeOptions)
    skip_finalize: bool = False
    # Called once each action ran and the disks show it, before it is journaled (see
    # apply.execute): where a crash leaves an action done but unrecorded.
    after_action: AfterAction | None = None


def full_hash(value: str) -> str:
    value = value.strip()
    return value if value.startswith("sha256:") else "sha256:" + value


def journal_for(plan: Plan, options: RecoverOptions) -> Journal:
    return Journal(options.journal or default_path(plan.hash), plan.hash)


def plan_recovery(desc: Description, actual: Sequence[ActualDisk],
                  options: RecoverOptions) -> Plan:
    """The plan as `resurgo plan` computes it with the same options: its commands and what
    finalize will do included, and hashed. A net map naming no interface is bad input
    found here, before any disk is touched."""

    def planned(owned: set[str] | None = None) -> Plan:
        disks = inuse.without_own_uses(actual, options.plan.root, owned or ())
        return finalized(desc, make_plan(desc, disks, options.plan), options.finalize,
                         skip=options.skip_finalize)

    plan = planned()
    # An earlier run of this very plan holds the disks (its md arrays, its mappings):
    # those uses are ours. Its journal is named by the plan as that run could execute it,
    # finalize included, which a plan failing on those uses does not show: so the plan
    # without them is the one to look the journal up by.
    again = planned(inuse.own_holders(plan))
    return again if journal_for(again, options).exists() else plan


def recover_set(loaded: LoadedSet | None, plan: Plan, options: RecoverOptions,
                on_event: OnEvent, *, confirm: Confirm | None = None,
                ask_secret: AskSecret | None = None) -> RecoverReport:
    """Recover as the module docstring says. loaded is None for a description file (the
    layout alone). confirm is None when the options confirm (a plan hash, or --yes).

    Raises before anything is written: PreconditionFailed without root, NotConfirmed when
    the person says no, BadInput for a passphrase typed wrong, and whatever reading the
    set raises with verify_set (damage among others). A plan that fails its
    preconditions, or is not the one the hash names, is reported (report.refused)."""
    events = Steps(on_event)
    set_ref = None if loaded is None else SetRef(loaded.id, loaded.medium.url)
    if options.verify_set and loaded is not None:
        with events.step(Step.VERIFY_SET, f"reading every file of set {loaded.id} and the "
                         "sets it builds on") as step:
            for reader in loaded.chain.values():
                reader.verify()
            step.end(True)
    events(PlanReady(plan))
    refused = RecoverReport(plan, set_ref, options.layout_only, options.skip_finalize)
    if not plan.ok:
        events(Warned(f"the plan cannot be executed: {len(plan.failures)} precondition(s) "
                      "fail; nothing was written"))
        return refused
    if options.plan_hash is not None and full_hash(options.plan_hash) != plan.hash:
        return refused.refuse(PreconditionFailed(
            f"the plan computed now has the hash {plan.hash}, not "
            f"{full_hash(options.plan_hash)}: the disks or the description changed since; "
            "nothing was written",
            "review `resurgo plan` again and pass its hash",
        ))
    if not run.is_root():
        raise PreconditionFailed("recreating the layout needs root", "run resurgo as root")
    if confirm is not None and not confirm(plan):
        raise NotConfirmed("not confirmed: nothing was written")
    luks_keys = keys.gather(plan, dict(options.key_files), ask_secret)

    outcome = _layout(events, plan, options, luks_keys)
    report = refused.executed(outcome)
    if not outcome.ok or loaded is None or options.layout_only:
        return report.timed(events.times)
    return _restore(events, loaded, plan, options, report).timed(events.times)


def _layout(events: Steps, plan: Plan, options: RecoverOptions,
            luks_keys: dict[str, str]) -> Outcome:
    def progress(n: int, total: int, result: ActionResult) -> None:
        events(Progress(Step.LAYOUT, lines.action_line(n, total, result)))

    with events.step(Step.LAYOUT, f"recreating the layout ({len(plan.actions)} actions)") \
            as step:
        outcome = Executor(plan, journal_for(plan, options), luks_keys, progress,
                           after_action=options.after_action).run()
        step.end(outcome.ok, lines.layout_summary(outcome))
    return outcome


def _restore(events: Steps, loaded: LoadedSet, plan: Plan, options: RecoverOptions,
             report: RecoverReport) -> RecoverReport:
    """The commands, the check of what they restored, finalize."""
    root = Path(plan.root)
    restored: RestoreOutcome
    with events.step(Step.RESTORE, f"restoring the data from set {loaded.id} "
                     f"({len(loaded.description.commands)} commands)") as step:
        restored = run_commands(
            loaded, root, lambda r: events(Progress(Step.RESTORE, lines.command_line(r))),
            events)
        step.end(restored.ok, lines.restore_summary(restored).rstrip())
    report = report.restored(restored)
    if not restored.ok and restored.aborted_at is not None:
        return report
    # The content of every file was hashed as it was written: a walk of the metadata
    # (no second read of the data) finds what the target could not keep.
    done = restored.restored()
    checked: CheckOutcome
    with events.step(Step.CHECK, "checking the restored trees against their manifests") \
            as step:
        checked = check_units(
            loaded, root, content=False, only=lambda u: u.command.seq in done,
            changes=Changes(), report=lambda u: events(Progress(Step.CHECK,
                                                                lines.check_line(u))),
            on_event=events, step=Step.CHECK)
        step.end(checked.ok, lines.check_summary(checked).rstrip())
    report = report.checked(checked)
    if options.skip_finalize:
        with events.step(Step.FINALIZE, SKIPPED) as step:
            step.end(True)
        return report.finalized(FinalizeResult(skipped=True))
    return report.finalized(_finalize(events, loaded, plan, root, options))


def _finalize(events: Steps, loaded: LoadedSet, plan: Plan, root: Path,
              options: RecoverOptions) -> FinalizeResult:
    with events.step(Step.FINALIZE, "finalizing the restored system") as step:
        try:
            fin = finalize.finalize(loaded.description, plan, root, options.finalize,
                                    lambda line: events(Progress(Step.FINALIZE, line)))
        except BadInput as e:
            # Checked while planning against the description's copy of the configuration:
            # the restored one names other interfaces. The data is restored all the same.
            events(Warned(f"finalize not run: {e}"))
            step.end(False)
            return FinalizeResult(error=str(e))
        written = [f.path for f in fin.files if f.written]
        record = save_record(loaded.id, root, check_changes(written, fin.log))
        step.end(fin.ok, finalize.text(fin).rstrip())
    return FinalizeResult(report=fin, record=record)


__all__ = [
    "AskSecret",
    "Confirm",
    "RecoverOptions",
    "RecoverReport",
    "plan_recovery",
    "recover_set",
]
