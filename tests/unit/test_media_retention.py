"""The retention policy (keep-last/daily/weekly/monthly) on dated sets: restic's rules, per
host, in UTC, the union of the rules, and never a chain broken."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resurgo.errors import BadInput
from resurgo.media import Retention, SetInfo, SetKind, plan_retention

_counter = iter(range(1, 1 << 30))


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def one(when: datetime | str, parent: SetInfo | None = None, host: str | None = "a") -> SetInfo:
    created = at(when) if isinstance(when, str) else when
    return SetInfo(
        id=f"{created:%Y%m%dT%H%M%SZ}-{next(_counter) % 0x10000:04x}",
        created=created,
        kind=SetKind.FULL if parent is None else SetKind.INCREMENTAL,
        parent=None if parent is None else parent.id,
        host=host,
        size=1,
        file_count=1,
        labels={},
    )


def kept(sets: Sequence[SetInfo], policy: Retention, **kw: object) -> list[SetInfo]:
    return list(plan_retention(sets, policy, **kw).keep)  # type: ignore[arg-type]


def nightly(first: str, days: int, hour: int = 2) -> list[SetInfo]:
    start = at(first) + timedelta(hours=hour)
    return [one(start + timedelta(days=d)) for d in range(days)]


def test_keep_daily_takes_the_newest_of_each_of_the_last_days_that_have_sets() -> None:
    # Three sets on Dec 1, none on Dec 2 and 3, two on Dec 4, one on Dec 5.
    d1 = [one("2026-12-01T01:00"), one("2026-12-01T12:00"), one("2026-12-01T23:59:59")]
    d4 = [one("2026-12-04T00:00"), one("2026-12-04T08:00")]
    d5 = [one("2026-12-05T03:00")]
    sets = d1 + d4 + d5
    # Days without sets do not count: the third day back is Dec 1, not Dec 3.
    assert kept(sets, Retention(daily=3)) == [d1[2], d4[1], d5[0]]
    assert kept(sets, Retention(daily=2)) == [d4[1], d5[0]]
    plan = plan_retention(sets, Retention(daily=2))
    assert plan.delete == (d4[0], d1[2], d1[1], d1[0])  # newest first
    assert plan.reasons[d4[1].id] == ("--keep-daily 2: the newest set of 2026-12-04",)


def test_days_are_utc_days_whatever_the_time_zone() -> None:
    before = one("2026-12-01T23:59:59")
    after = one("2026-12-02T00:00:00")
    late = one("2026-12-02T05:00:00")
    old_tz = os.environ.get("TZ")
    try:
        for tz in ("UTC", "America/New_York", "Asia/Tokyo"):
            os.environ["TZ"] = tz
            time.tzset()
            # In New York both are Dec 1 evening; in UTC they are two days.
            assert kept([before, after, late], Retention(daily=2)) == [before, late]
    finally:
        if old_tz is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = old_tz
        time.tzset()


def test_a_time_with_another_offset_counts_in_utc() -> None:
    # 2026-12-02 01:00 at +02:00 is Dec 1, 23:00 UTC.
    shifted = one(datetime(2026, 12, 2, 1, 0, tzinfo=timezone(timedelta(hours=2))))
    newer = one("2026-12-02T10:00")
    plan = plan_retention([shifted, newer], Retention(daily=2))
    assert list(plan.keep) == [shifted, newer]
    assert plan.reasons[shifted.id] == ("--keep-daily 2: the newest set of 2026-12-01",)


def test_keep_weekly_uses_iso_weeks_across_the_new_year() -> None:
    sun52 = one("2024-12-29T02:00")  # Sunday: 2024-W52
    mon01 = one("2024-12-30T02:00")  # Monday: 2025-W01, still in December
    sun01 = one("2025-01-05T02:00")  # Sunday: 2025-W01
    mon02 = one("2025-01-06T02:00")  # Monday: 2025-W02
    sets = [sun52, mon01, sun01, mon02]
    assert kept(sets, Retention(weekly=2)) == [sun01, mon02]
    assert kept(sets, Retention(weekly=3)) == [sun52, sun01, mon02]
    reasons = plan_retention(sets, Retention(weekly=3)).reasons
    assert reasons[sun01.id] == ("--keep-weekly 3: the newest set of 2025-W01",)
    assert reasons[sun52.id] == ("--keep-weekly 3: the newest set of 2024-W52",)


def test_keep_monthly_by_calendar_month() -> None:
    jan = [one("2026-01-01T00:00"), one("2026-01-31T23:59:59")]
    feb = [one("2026-02-01T00:00:00"), one("2026-02-28T12:00")]
    apr = [one("2026-04-15T12:00")]  # no set in March
    sets = jan + feb + apr
    assert kept(sets, Retention(monthly=2)) == [feb[1], apr[0]]
    assert kept(sets, Retention(monthly=3)) == [jan[1], feb[1], apr[0]]


def test_a_rule_left_wanting_keeps_the_oldest_set_too() -> None:
    # restic: with fewer periods than the rule may keep, the oldest set is kept as well,
    # which keeps the history as long as it goes.
    sets = [one("2026-12-01T01:00"), one("2026-12-01T05:00"), one("2026-12-02T05:00")]
    plan = plan_retention(sets, Retention(daily=7))
    assert list(plan.keep) == sets
    assert plan.reasons[sets[0].id] == (
        "--keep-daily 7: the oldest set (only 2 days with sets)",)
    # A rule that is filled does not.
    assert kept(sets, Retention(daily=2)) == sets[1:]
    # keep-last never needs to: each set is a period of its own.
    assert kept(sets, Retention(last=5)) == sets


def test_the_rules_keep_their_union_and_say_which_kept_what() -> None:
    sets = nightly("2026-10-01", 60)  # Oct 1 .. Nov 29, one a night
    plan = plan_retention(sets, Retention(last=2, daily=5, weekly=3, monthly=3))
    by_id = {s.id: s for s in sets}
    days = {f"{by_id[s.id].created:%Y-%m-%d}" for s in plan.keep}
    expected = {
        # the 5 newest days (the 2 newest sets among them)
        "2026-11-29", "2026-11-28", "2026-11-27", "2026-11-26", "2026-11-25",
        # the newest of the 3 newest ISO weeks: W48 ends Sun Nov 29, W47 Nov 22, W46 Nov 15
        "2026-11-22", "2026-11-15",
        # the newest of each of the 3 newest months: Nov, Oct, and the rule left wanting
        # keeps the oldest set too
        "2026-10-31", "2026-10-01",
    }
    assert days == expected
    newest = plan.reasons[sets[-1].id]
    assert newest == (
        "--keep-last 2: one of the 2 newest sets",
        "--keep-daily 5: the newest set of 2026-11-29",
        "--keep-weekly 3: the newest set of 2026-W48",
        "--keep-monthly 3: the newest set of 2026-11",
    )
    assert plan.delete == tuple(s for s in reversed(sets) if s not in plan.keep)


def test_a_kept_set_keeps_its_whole_chain_across_the_boundaries() -> None:
    # A full set in October, incremental sets on it every night into November.
    full = one("2026-10-30T02:00")
    chain = [full]
    for day in ("2026-10-31", "2026-11-01", "2026-11-02", "2026-11-03"):
        chain.append(one(f"{day}T02:00", parent=chain[-1]))
    other = one("2026-10-15T02:00")  # an older full set nothing builds on
    sets = [other, *chain]
    plan = plan_retention(sets, Retention(daily=1))
    # The newest day's set needs all of its chain, across the month boundary.
    assert list(plan.keep) == chain
    assert plan.delete == (other,)
    assert plan.reasons[chain[3].id] == (f"{chain[4].id} builds on it",)
    assert plan.reasons[full.id] == (f"{chain[1].id} builds on it",)
    # keep-monthly 1 keeps the newest of November and so October's sets it builds on
    assert list(plan_retention(sets, Retention(monthly=1)).keep) == chain
    # a set kept by a rule and by its child says both
    both = plan_retention(sets, Retention(daily=2)).reasons[chain[3].id]
    assert both == ("--keep-daily 2: the newest set of 2026-11-02",
                    f"{chain[4].id} builds on it")


def test_hosts_are_pruned_apart() -> None:
    a = nightly("2026-12-01", 4)
    b = [one(s.created + timedelta(minutes=30), host="b") for s in a]
    none = [one(s.created + timedelta(minutes=40), host=None) for s in a[:2]]
    sets = sorted(a + b + none, key=lambda s: s.created)
    plan = plan_retention(sets, Retention(last=1))
    assert {s.id for s in plan.keep} == {a[-1].id, b[-1].id, none[-1].id}
    # One host alone: the others' sets are neither kept nor removed.
    plan = plan_retention(sets, Retention(daily=2), hosts=("b",))
    assert list(plan.keep) == b[2:]
    assert list(plan.delete) == [b[1], b[0]]
    plan = plan_retention(sets, Retention(daily=2), hosts=("nobody",))
    assert plan.keep == () and plan.delete == ()


def test_a_parent_of_another_host_is_kept_not_pruned() -> None:
    # Not what save makes, but a chain is followed wherever it leads.
    base = one("2026-12-01T02:00", host="b")
    top = one("2026-12-02T02:00", parent=base, host="a")
    plan = plan_retention([base, top], Retention(last=1), hosts=("a",))
    assert list(plan.keep) == [base, top] and plan.delete == ()


def test_broken_and_looping_chains() -> None:
    gone = one("2026-12-01T02:00")
    orphan = one("2026-12-02T02:00", parent=gone)
    plan = plan_retention([orphan], Retention(last=1))
    assert plan.keep == (orphan,) and plan.broken == (orphan.id,)
    # a hostile medium's loop of parents ends the walk
    x = one("2026-12-03T02:00")
    y = one("2026-12-04T02:00", parent=x)
    x = SetInfo(**{**x.__dict__, "parent": y.id, "kind": SetKind.INCREMENTAL})
    plan = plan_retention([x, y], Retention(last=1))
    assert {s.id for s in plan.keep} == {x.id, y.id} and plan.broken == ()


@pytest.mark.parametrize("policy", [
    {}, {"last": 0}, {"daily": 0}, {"weekly": -1}, {"monthly": 0, "last": 3}])
def test_no_rule_or_a_rule_below_one_is_refused(policy: dict[str, int]) -> None:
    with pytest.raises(BadInput):
        plan_retention([one("2026-12-01T00:00")], Retention(**policy))


# ------------------------------------------------------------------ property


@st.composite
def histories(draw: st.DrawFn) -> list[SetInfo]:
    n = draw(st.integers(1, 40))
    start = at("2026-12-20T00:00")
    gaps = draw(st.lists(st.integers(1, 5 * 24 * 60), min_size=n, max_size=n))
    out: list[SetInfo] = []
    when = start
    for gap in gaps:
        when += timedelta(minutes=gap)
        host = draw(st.sampled_from(["a", "b", None]))
        mine = [s for s in out if s.host == host]
        parent = draw(st.one_of(st.none(), st.sampled_from(mine))) if mine else None
        out.append(one(when, parent=parent, host=host))
    return out


policies = st.builds(
    Retention,
    last=st.one_of(st.none(), st.integers(1, 6)),
    daily=st.one_of(st.none(), st.integers(1, 8)),
    weekly=st.one_of(st.none(), st.integers(1, 5)),
    monthly=st.one_of(st.none(), st.integers(1, 4)),
).filter(lambda p: not p.empty)


def _periods(s: SetInfo) -> Iterator[tuple[str, str]]:
    c = s.created.astimezone(UTC)
    yield "last", s.id
    yield "daily", c.date().isoformat()
    iso = c.isocalendar()
    yield "weekly", f"{iso.year}-{iso.week}"
    yield "monthly", f"{c.year}-{c.month}"


def _expected(sets: list[SetInfo], policy: Retention) -> set[str]:
    """The rules as restic's documentation states them, computed another way: for each
    host and rule, group the sets by period, take the N newest periods' newest sets, and
    the oldest set when there are fewer periods than N; then close over parents."""
    keep: set[str] = set()
    for host in {s.host for s in sets}:
        mine = sorted((s for s in sets if s.host == host), key=lambda s: (s.created, s.id))
        for rule, n in policy.items():
            newest: dict[str, SetInfo] = {}
            for s in mine:
                newest[dict(_periods(s))[rule.value]] = s  # later sets replace earlier
            chosen = sorted(newest.values(), key=lambda s: (s.created, s.id))[-n:]
            keep |= {s.id for s in chosen}
            if len(newest) < n:
                keep.add(mine[0].id)
    by_id = {s.id: s for s in sets}
    todo = list(keep)
    while todo:
        parent = by_id[todo.pop()].parent
        if parent and parent not in keep:
            keep.add(parent)
            todo.append(parent)
    return keep


@settings(max_examples=150, deadline=None)
@given(histories(), policies, st.randoms())
def test_the_policy_keeps_exactly_what_the_rules_say(
    sets: list[SetInfo], policy: Retention, rnd: object
) -> None:
    shuffled = list(sets)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    plan = plan_retention(shuffled, policy)
    kept_ids = {s.id for s in plan.keep}
    assert kept_ids == _expected(sets, policy)
    assert kept_ids | {s.id for s in plan.delete} == {s.id for s in sets}
    assert set(plan.reasons) == kept_ids
    # the newest set of each host is always kept
    for host in {s.host for s in sets}:
        assert max((s for s in sets if s.host == host), key=lambda s: s.created).id in kept_ids
    # deleted newest first: at every moment of an interrupted prune, no set lacks its parent
    by_id = {s.id: s for s in sets}
    for i in range(len(plan.delete) + 1):
        remaining = kept_ids | {s.id for s in plan.delete[i:]}
        assert all(by_id[r].parent in remaining for r in remaining if by_id[r].parent)


def test_sets_dated_after_the_clock_are_kept_and_count_for_no_rule() -> None:
    """Two sets planted with dates in 2099 (or saved by a machine whose clock ran ahead)
    must not take keep-last's places: the genuine newest sets stay, and so do they."""
    now = at("2026-12-07T12:00")
    genuine = nightly("2026-12-01", 6)
    planted = [one("2099-12-31T23:59"), one("2099-12-31T23:58")]
    ahead = one("2026-12-08T06:00")  # within a day of the clock: a set like the others
    plan = plan_retention([*genuine, *planted, ahead], Retention(last=2), now=now)
    assert {s.id for s in plan.keep} == {genuine[-1].id, ahead.id, *(s.id for s in planted)}
    assert plan.delete == tuple(reversed(genuine[:-1]))
    for s in planted:
        (why,) = plan.reasons[s.id]
        assert "after this machine's clock" in why and "counted by no rule" in why
    # Without a clock (the pure policy), dates are taken as they are.
    blind = plan_retention([*genuine, *planted], Retention(last=2))
    assert {s.id for s in blind.keep} == {s.id for s in planted}


def test_a_future_set_keeps_the_chain_it_builds_on() -> None:
    now = at("2026-12-07T12:00")
    base = one("2026-11-01T02:00")
    newer = [one(f"2026-12-0{d}T02:00") for d in range(2, 6)]
    planted = one("2099-01-01T00:00", parent=base)
    plan = plan_retention([base, *newer, planted], Retention(last=1), now=now)
    assert base in plan.keep and planted in plan.keep and newer[-1] in plan.keep
    assert plan.reasons[base.id] == (f"{planted.id} builds on it",)
