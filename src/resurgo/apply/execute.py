"""Execute a plan's actions on the disks, exactly as planned; resumable after any crash.

For each action, in the plan's order:

  - journaled by an earlier run of this plan, nothing it depends on redone now, and
    still true on the disks (apply.verify): skipped as "verified";
  - otherwise done: destructive actions (wipe, partition table, md, LUKS format, PV, VG,
    LV, mkfs, mkswap) run their command again; bring-up actions (LUKS open, subvolumes,
    default subvolume, mount) first look whether what they make is already there.
    Before each command the guard checks the device lies on the plan's target disks;
    afterwards the result is checked on the disks, and only then journaled.

How each kind of action is done and checked on the disks is its executor's
(apply.executors); this module runs them in order, skips, releases and journals.

A destructive action that runs marks everything depending on it as not skippable.

after_action, when given, is called for each action done now, once the disks show it and
before it is journaled: where a crash leaves an action done but not recorded
(apply.crash stops the process there, for the kill-and-resume tests).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from resurgo import run
from resurgo.apply import devices
from resurgo.apply.executors import Context, Warned, executor, joined
from resurgo.apply.guard import Guard
from resurgo.apply.journal import Journal
from resurgo.errors import OperationFailed, ResurgoError
from resurgo.plan.model import Action, Plan
from resurgo.probe import mounts


class Status(StrEnum):
    # Done now.
    DONE = "done"
    # Done by an earlier run of this plan, and checked on the disks: skipped.
    VERIFIED = "verified"
    # Could not be done on this machine, but the layout is complete without it.
    WARNING = "warning"
    FAILED = "failed"
    # Not reached: an earlier action failed.
    NOT_RUN = "not-run"


@dataclass(frozen=True)
class ActionResult:
    id: str
    kind: str
    summary: str
    status: Status
    message: str = ""
    seconds: float = 0.0


@dataclass
class Outcome:
    plan_hash: str
    journal: str
    resumed: bool
    results: list[ActionResult] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and all(r.status != Status.FAILED for r in self.results)


Report = Callable[[int, int, ActionResult], None]
# Called once an action ran and the disks show it, before it is journaled: with its
# position in the plan (1-based) and the action.
AfterAction = Callable[[int, Action], None]


class Executor:
    def __init__(
        self,
        plan: Plan,
        journal: Journal,
        keys: Mapping[str, str],
        report: Report | None = None,
        after_action: AfterAction | None = None,
    ) -> None:
        self.plan = plan
        self.journal = journal
        self.guard = Guard(plan)
        self.context = Context(plan, self.guard, keys)
        self.report = report
        self.after_action = after_action
        # Actions whose result is new in this run: what depends on them cannot be skipped.
        self.dirty: set[str] = set()

    # ------------------------------------------------------------ the loop

    def run(self) -> Outcome:
        self.journal.open()
        outcome = Outcome(self.plan.hash, str(self.journal.path), self.journal.resumed)
        self._drop_stale_private_mounts()
        total = len(self.plan.actions)
        for n, a in enumerate(self.plan.actions, 1):
            start = time.monotonic()
            try:
                status, message = self._one(n, a)
            except Warned as e:
                status, message = Status.WARNING, e.message
            except ResurgoError as e:
                result = ActionResult(a.id, str(a.kind), a.summary, Status.FAILED, str(e),
                                      time.monotonic() - start)
                outcome.results.append(result)
                self._report(n, total, result)
                outcome.error = f"{a.id} failed: {e}"
                for m, rest in enumerate(self.plan.actions[n:], n + 1):
                    skipped = ActionResult(rest.id, str(rest.kind), rest.summary, Status.NOT_RUN)
                    outcome.results.append(skipped)
                    self._report(m, total, skipped)
                return outcome
            result = ActionResult(a.id, str(a.kind), a.summary, status, message,
                                  time.monotonic() - start)
            outcome.results.append(result)
            self._report(n, total, result)
        return outcome

    def _report(self, n: int, total: int, result: ActionResult) -> None:
        if self.report is not None:
            self.report(n, total, result)

    def _one(self, n: int, a: Action) -> tuple[Status, str]:
        x = executor(a)
        depends_dirty = any(d in self.dirty for d in a.depends_on)
        note = ""
        if a.id in self.journal.done and not depends_dirty:
            found = x.check(self.context)
            if not found:
                return Status.VERIFIED, ""
            note = f"redone: an earlier run did it, but now {joined(found)}"
        if depends_dirty:
            self.dirty.add(a.id)
        if x.destructive:
            self._release(x.releases())
            x.run(self.context)
            self.dirty.add(a.id)
        else:
            # Bring-up actions: whatever is already as planned is left as it is.
            if x.check(self.context):
                x.run(self.context)
        found = x.check(self.context)
        if found:
            raise OperationFailed(f"{a.id} ran, but the disks do not show it: {joined(found)}")
        if self.after_action is not None:
            self.after_action(n, a)
        self.journal.record(a.id, str(a.kind))
        return Status.DONE, note

    # ------------------------------------------------------------ releasing our own uses

    def _release(self, targets: tuple[str, ...]) -> None:
        """Before rewriting devices: unmount recovery's own mounts of them and what is on them.

        A rerun may redo an action whose device an earlier run mounted under the root (or
        under the private run directory). Any other use is left alone: the command fails.
        """
        names: set[str] = set()
        for t in targets:
            if devices.exists(t):
                names |= devices.built_on(devices.kname(t))
        if not names:
            return
        entries = mounts.read_mountinfo()
        ours = [e for e in devices.mounts_on(names, entries)
                if devices.is_ours(e.mountpoint, self.plan.root)]
        for e in sorted(ours, key=lambda e: e.mountpoint.count("/"), reverse=True):
            run.run(["umount", "--recursive", e.mountpoint], check=False)

    def _drop_stale_private_mounts(self) -> None:
        """Top-level btrfs mounts an earlier run left in the run directory when killed.

        Only those on this plan's disks: another recovery may be running beside this one.
        """
        entries = mounts.read_mountinfo()
        prefix = str(devices.RUN_DIR) + "/"
        targets = set(self.guard.targets.values())
        for e in reversed(entries):
            if not e.mountpoint.startswith(prefix) or not e.source.startswith("/dev/"):
                continue
            if not devices.exists(e.source) or not devices.disks_under(e.source) <= targets:
                continue
            run.run(["umount", e.mountpoint], check=False)
            with contextlib.suppress(OSError):
                os.rmdir(e.mountpoint)
