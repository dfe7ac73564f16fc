"""What the consoles of a rehearsal say: the time of each phase, the checks of the
recovered system, and, when it failed, the step that failed and why. Pure: the timed
messages of the two boots in, a verdict out.

The phases, from the host's arrival times of the messages (protocol):

    rescue boot    qemu started -> the rescue's first message (its agent running)
    set checks     the agent's "set" step (finding the set, its checks) and verify-set
    layout         the plan executed on the blank disks
    restore        the description's commands (each tree restored)
    finalize       the restored system made to boot on this (virtual) hardware
    check          the restored trees checked against the manifests (check, verify)
    recovery       the rescue's whole run, qemu started -> powered off
    first boot     the recovered disks alone, qemu started -> the check's result
    total          the rehearsal's run, from the rescue's start to the result
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from resurgo.rehearse.console import Timed

PHASES = ("rescue_boot", "set_checks", "layout", "restore", "finalize", "check",
          "recovery", "first_boot", "total")
# The steps each phase sums (the agent's own and recovery.events.Step's values).
_STEPS = {
    "set_checks": ("set", "verify-set"),
    "layout": ("layout",),
    "restore": ("restore",),
    "finalize": ("finalize",),
    "check": ("check", "verify"),
}
# The properties the recovered system's check reports, in the order a report lists them.
CHECKS = ("boot", "units", "mounts", "swap", "canary", "hostname", "machine-id", "network")


@dataclass(frozen=True)
class BootRun:
    """One boot as the host saw it: the messages with their times, how long qemu ran,
    and whether it ended by itself (powered off) or was stopped at the timeout."""

    messages: tuple[Timed, ...]
    seconds: float
    timed_out: bool
    # qemu's exit code when it ended by itself.
    exit_code: int | None = None
    # The console line that showed the boot at a dead end (console.DEAD_ENDS), when one
    # did: the host stopped the guest soon after it.
    dead_end: str | None = None


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str = ""


@dataclass(frozen=True)
class Failure:
    # The step that failed: a recovery step (layout, restore, ...), "rescue boot",
    # "recovery", "first boot" or "check".
    step: str
    reason: str


@dataclass(frozen=True)
class Verdict:
    phases: dict[str, float | None]
    checks: tuple[Check, ...]
    failure: Failure | None
    # The recovery's own exit code, as the rescue reported it.
    recovery_exit: int | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None


def _steps(messages: Sequence[Timed]) -> dict[str, tuple[float | None, float | None, bool]]:
    """Each step's first start, last end and whether every end was ok."""
    out: dict[str, tuple[float | None, float | None, bool]] = {}
    for t in messages:
        m = t.message
        if m.kind != "step":
            continue
        name, event = m.text("step"), m.text("event")
        start, end, ok = out.get(name, (None, None, True))
        if event == "start" and start is None:
            start = t.at
        elif event == "end":
            end = t.at
            ok = ok and m.flag("ok") is not False
        out[name] = (start, end, ok)
    return out


def _duration(steps: dict[str, tuple[float | None, float | None, bool]],
              names: Sequence[str]) -> float | None:
    total: float | None = None
    for name in names:
        start, end, _ = steps.get(name, (None, None, True))
        if start is not None and end is not None and end >= start:
            total = (total or 0.0) + (end - start)
    return None if total is None else round(total, 1)


def _first(messages: Sequence[Timed], kind: str) -> Timed | None:
    return next((t for t in messages if t.message.kind == kind), None)


def rescue_failure(rescue: BootRun) -> Failure | None:
    """Why the rescue's part failed (None: it recovered)."""
    steps = _steps(rescue.messages)
    failed = [name for name, (_, end, ok) in steps.items() if end is not None and not ok]
    recovered = _first(rescue.messages, "recovered")
    unended = [name for name, (start, end, _) in steps.items()
               if start is not None and end is None]
    if failed:
        name = failed[0]
        detail = next((t.message.text("detail") for t in rescue.messages
                       if t.message.kind == "step" and t.message.text("step") == name
                       and t.message.flag("ok") is False), "")
        return Failure(name, f"the {name} step failed" + (f": {detail}" if detail else ""))
    if recovered is not None and recovered.message.flag("ok") is not True:
        code = recovered.message.fields.get("exit")
        where = unended[-1] if unended else "recovery"
        detail = recovered.message.text("detail")
        return Failure(where, f"the recovery failed (exit code {code})"
                       + (f": {detail}" if detail else ""))
    if recovered is None:
        if rescue.dead_end is not None:
            where = unended[-1] if unended else "rescue boot"
            return Failure(where, f"the rescue came to a dead end: {rescue.dead_end!r} on "
                                  "its console")
        if not rescue.messages:
            what = ("timed out" if rescue.timed_out else "ended") + " before the rescue " \
                   "said anything (no rehearsal message on its console)"
            return Failure("rescue boot", f"the rescue {what}")
        where = unended[-1] if unended else "recovery"
        if rescue.timed_out:
            return Failure(where, f"the rescue timed out after {rescue.seconds:.0f} s "
                                  f"during {where}")
        return Failure(where, f"the rescue stopped during {where} without a result "
                              f"(qemu exit code {rescue.exit_code})")
    if rescue.timed_out:
        return Failure("poweroff", f"the rescue recovered the set but did not power off "
                                   f"within {rescue.seconds:.0f} s")
    return None


def boot_failure(boot: BootRun) -> tuple[tuple[Check, ...], Failure | None]:
    """The checks of the recovered system's first boot, and why it failed."""
    checks = tuple(Check(t.message.text("name") or "?", t.message.flag("ok") is True,
                         t.message.text("detail"))
                   for t in boot.messages if t.message.kind == "check")
    result = _first(boot.messages, "result")
    if result is None and boot.dead_end is not None:
        return checks, Failure("first boot", "first boot: the recovered system cannot boot: "
                                             f"{boot.dead_end!r} on its console (stopped "
                                             f"{boot.seconds:.0f} s after it started)")
    if result is None:
        how = (f"timed out after {boot.seconds:.0f} s" if boot.timed_out
               else f"ended (qemu exit code {boot.exit_code})")
        return checks, Failure("first boot", f"first boot: no result (the recovered system "
                                             f"{how} before its check reported)")
    bad = [c for c in checks if not c.ok]
    if bad or result.message.flag("ok") is not True:
        named = "; ".join(f"{c.name}: {c.detail}" if c.detail else c.name for c in bad)
        return checks, Failure("check", "the recovered system's check failed"
                               + (f": {named}" if named else ""))
    return checks, None


def verdict(rescue: BootRun, boot: BootRun | None, total: float | None = None) -> Verdict:
    """The phases, the checks and the failure of a rehearsal whose rescue ran (and whose
    recovered system booted, unless the rescue failed: ``boot`` None)."""
    steps = _steps(rescue.messages)
    phases: dict[str, float | None] = dict.fromkeys(PHASES)
    if rescue.messages:
        phases["rescue_boot"] = round(rescue.messages[0].at, 1)
    for phase, names in _STEPS.items():
        phases[phase] = _duration(steps, names)
    phases["recovery"] = round(rescue.seconds, 1)
    recovered = _first(rescue.messages, "recovered")
    code = recovered.message.fields.get("exit") if recovered is not None else None
    exit_code = code if isinstance(code, int) and not isinstance(code, bool) else None
    failure = rescue_failure(rescue)
    checks: tuple[Check, ...] = ()
    if failure is None and boot is not None:
        result = _first(boot.messages, "result")
        phases["first_boot"] = round(result.at, 1) if result is not None else None
        checks, failure = boot_failure(boot)
    elif failure is None:
        failure = Failure("first boot", "first boot: the recovered system was not booted")
    if total is not None:
        phases["total"] = round(total, 1)
    return Verdict(phases, checks, failure, exit_code)
