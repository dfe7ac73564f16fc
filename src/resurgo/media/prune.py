"""Which recovery sets to keep, by a retention policy like restic's, and never breaking a chain.

The policy's rules (keep-last, keep-daily, keep-weekly, keep-monthly) apply to each host's
sets apart, and a set is kept when any rule keeps it:

- keep-last N keeps the N newest sets;
- keep-daily N keeps, for each of the N newest days that have sets, the newest set of that
  day; keep-weekly N likewise for ISO weeks (Monday to Sunday), keep-monthly N for calendar
  months. Days, weeks and months are those of the sets' creation times in UTC, whatever the
  machine's time zone, so that every machine sharing a medium counts them alike;
- as restic does, when a rule finds fewer days (weeks, months, sets) than it may keep, it
  also keeps the host's oldest set, which stretches the history kept as far back as it goes.

A kept incremental set is useless without every set it builds on, so the parents (and their
parents) of a kept set are kept too, however old. Sets are deleted newest first, so a prune
that is interrupted never leaves an incremental set whose parent is gone while the set itself
remains. A set that a save running now (on any machine: its lease names its parent) builds on
is kept too, with its chain (spare_in_use, Medium.in_use).

A set dated more than FUTURE_SLACK after now (a machine whose clock ran ahead, or a set
planted to look newest) is kept, with its chain, but no rule counts it: left in, a few
such sets would take every place keep-last has and push out every genuine one.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from resurgo.errors import BadInput
from resurgo.media.base import Medium, SetInfo


class Rule(StrEnum):
    LAST = "last"
    DAILY = "daily"
    WEEKLY = "weekly"
    MONTHLY = "monthly"

    @property
    def option(self) -> str:
        return f"--keep-{self.value}"


def _utc(when: datetime) -> datetime:
    # An index's time is UTC; one without a zone is taken as UTC, never as local time.
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _day(s: SetInfo) -> str:
    return f"{_utc(s.created):%Y-%m-%d}"


def _week(s: SetInfo) -> str:
    year, week, _ = _utc(s.created).isocalendar()
    return f"{year}-W{week:02d}"


def _month(s: SetInfo) -> str:
    return f"{_utc(s.created):%Y-%m}"


# The period a set falls in, per rule; keep-last's period is the set itself.
_PERIOD: dict[Rule, Callable[[SetInfo], str]] = {
    Rule.LAST: lambda s: s.id,
    Rule.DAILY: _day,
    Rule.WEEKLY: _week,
    Rule.MONTHLY: _month,
}
_UNIT = {Rule.LAST: "sets", Rule.DAILY: "days", Rule.WEEKLY: "weeks", Rule.MONTHLY: "months"}
# How far ahead of this machine's clock a set may be dated and still count (clocks of
# the machines sharing a medium differ, by minutes when NTP runs).
FUTURE_SLACK = timedelta(days=1)


@dataclass(frozen=True)
class Retention:
    """How many sets each rule keeps (None: the rule is not used)."""

    last: int | None = None
    daily: int | None = None
    weekly: int | None = None
    monthly: int | None = None

    def __post_init__(self) -> None:
        for rule, n in self.items():
            if n < 1:
                raise BadInput(f"{rule.option} {n}: a rule keeps at least 1 set",
                               "leave the rule out to not use it")

    def items(self) -> list[tuple[Rule, int]]:
        given = ((Rule.LAST, self.last), (Rule.DAILY, self.daily),
                 (Rule.WEEKLY, self.weekly), (Rule.MONTHLY, self.monthly))
        return [(rule, n) for rule, n in given if n is not None]

    @property
    def empty(self) -> bool:
        return not self.items()

    def text(self) -> str:
        return ", ".join(f"{rule.option} {n}" for rule, n in self.items()) or "no rule"

    def data(self) -> dict[str, int]:
        return {f"keep_{rule.value}": n for rule, n in self.items()}


@dataclass(frozen=True)
class PrunePlan:
    keep: tuple[SetInfo, ...]  # oldest first
    delete: tuple[SetInfo, ...]  # in the order to delete them: newest first
    broken: tuple[str, ...]  # kept sets whose parent is not on the medium
    # Why each kept set is kept, by id: the rules that keep it, the sets that build on it.
    reasons: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


def plan_retention(
    sets: Sequence[SetInfo],
    policy: Retention,
    hosts: Collection[str | None] | None = None,
    now: datetime | None = None,
) -> PrunePlan:
    """What the policy keeps and deletes of the sets of ``hosts`` (None: of every host).

    The sets of other hosts are neither kept nor deleted, but a kept set's parent is looked
    for among all of them. Given ``now``, sets dated after now + FUTURE_SLACK are kept and
    counted by no rule."""
    if policy.empty:
        raise BadInput("no retention rule given: prune would delete every set",
                       "give at least one of --keep-last, --keep-daily, --keep-weekly, "
                       "--keep-monthly")
    ordered = sorted(sets, key=lambda s: (s.created, s.id))
    by_id = {s.id: s for s in ordered}
    chosen = [s for s in ordered if hosts is None or s.host in hosts]
    reasons: dict[str, list[str]] = {}
    limit = None if now is None else _utc(now) + FUTURE_SLACK
    groups: dict[str | None, list[SetInfo]] = {}
    for s in chosen:
        if limit is not None and _utc(s.created) > limit:
            reasons[s.id] = [f"dated {_utc(s.created):%Y-%m-%d %H:%M} UTC, after this "
                             "machine's clock: kept, counted by no rule (a clock ahead, or "
                             "a planted set)"]
        else:
            groups.setdefault(s.host, []).append(s)
    for group in groups.values():
        for set_id, why in _by_rules(group, policy):
            reasons.setdefault(set_id, []).append(why)
    broken: list[str] = []
    walked: set[str] = set()
    # Newest first, so that a set's first reason of this kind names the newest set on it.
    for s in reversed(ordered):
        child: SetInfo | None = s if s.id in reasons else None
        while child is not None and child.id not in walked:
            walked.add(child.id)
            if child.parent is None:
                break
            parent = by_id.get(child.parent)
            if parent is None:
                broken.append(child.id)
                break
            reasons.setdefault(parent.id, []).append(f"{child.id} builds on it")
            child = parent
    kept = set(reasons)
    return PrunePlan(
        tuple(s for s in ordered if s.id in kept),
        tuple(s for s in reversed(chosen) if s.id not in kept),
        tuple(broken),
        {k: tuple(v) for k, v in reasons.items()},
    )


def _by_rules(group: Sequence[SetInfo], policy: Retention) -> list[tuple[str, str]]:
    """(set id, reason) for each set of one host that a rule keeps: for each rule, going
    from the newest set back, the first set of each period until the rule has kept its
    number; and the oldest set when a rule is left wanting."""
    newest_first = list(reversed(group))
    out: list[tuple[str, str]] = []
    for rule, n in policy.items():
        period = _PERIOD[rule]
        left = n
        last: str | None = None
        for i, s in enumerate(newest_first):
            if left == 0:
                break
            p = period(s)
            if p != last:
                last = p
                left -= 1
                out.append((s.id, f"{rule.option} {n}: one of the {n} newest sets"
                            if rule is Rule.LAST else
                            f"{rule.option} {n}: the newest set of {p}"))
            elif i == len(newest_first) - 1:
                out.append((s.id, f"{rule.option} {n}: the oldest set (only {n - left} "
                            f"{_UNIT[rule]} with sets)"))
                left -= 1
    return out


def plan_prune(sets: Sequence[SetInfo], keep: int) -> PrunePlan:
    """The newest ``keep`` sets of each host, and the sets they build on."""
    return plan_retention(sets, Retention(last=keep))


def prune(
    medium: Medium,
    policy: Retention | int,
    hosts: Collection[str | None] | None = None,
) -> PrunePlan:
    """Delete the sets of ``hosts`` (None: of every host) that the policy does not keep."""
    if isinstance(policy, int):
        policy = Retention(last=policy)
    plan = spare_in_use(medium, plan_retention(medium.list_sets(), policy, hosts,
                                               now=datetime.now(UTC)))
    for s in plan.delete:
        medium.delete_set(s.id)  # which looks at the leases again, just before
    return plan


def spare_in_use(medium: Medium, plan: PrunePlan) -> PrunePlan:
    """The plan with the sets that saves running now build on (and their chains) kept."""
    in_use = medium.in_use()
    spared = [s for s in plan.delete if s.id in in_use]
    if not spared:
        return plan
    keep = sorted((*plan.keep, *spared), key=lambda s: (s.created, s.id))
    reasons = {**plan.reasons, **{s.id: (in_use[s.id],) for s in spared}}
    return replace(plan, keep=tuple(keep),
                   delete=tuple(s for s in plan.delete if s.id not in in_use), reasons=reasons)
