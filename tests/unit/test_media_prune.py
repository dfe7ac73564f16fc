"""Prune: the newest N sets are kept, and every set a kept one builds on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from resurgo.errors import BadInput
from resurgo.media import SetInfo, SetKind, plan_prune

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def make(parents: list[int | None]) -> list[SetInfo]:
    """Sets in time order; parents[i] is the index of set i's parent (an older set) or None."""
    out: list[SetInfo] = []
    for i, p in enumerate(parents):
        out.append(
            SetInfo(
                id=f"20260101T{i // 3600:02d}{i // 60 % 60:02d}{i % 60:02d}Z-{i:04x}",
                created=T0 + timedelta(seconds=i),
                kind=SetKind.FULL if p is None else SetKind.INCREMENTAL,
                parent=None if p is None else out[p].id,
                host=None,
                size=1,
                file_count=1,
                labels={},
            )
        )
    return out


@st.composite
def forests(draw: st.DrawFn) -> list[int | None]:
    n = draw(st.integers(1, 30))
    parents: list[int | None] = []
    for i in range(n):
        parents.append(None if i == 0 else draw(st.one_of(st.none(), st.integers(0, i - 1))))
    return parents


@given(forests(), st.integers(1, 35), st.randoms())
def test_no_kept_set_loses_a_parent(parents: list[int | None], keep: int, rnd: object) -> None:
    sets = make(parents)
    shuffled = list(sets)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    plan = plan_prune(shuffled, keep)
    kept = {s.id for s in plan.keep}
    deleted = {s.id for s in plan.delete}
    assert kept | deleted == {s.id for s in sets} and not kept & deleted
    # the newest N are kept
    assert {s.id for s in sets[-keep:]} <= kept
    # no kept set loses its parent
    assert all(s.parent in kept for s in plan.keep if s.parent is not None)
    # and nothing else is kept: each kept set is new, or an ancestor of a new one
    needed: set[str] = set()
    by_id = {s.id: s for s in sets}
    for s in sets[-keep:]:
        cur: SetInfo | None = s
        while cur is not None:
            needed.add(cur.id)
            cur = by_id.get(cur.parent) if cur.parent else None
    assert kept == needed
    # deleted newest first: an interrupted prune never orphans a remaining set
    order = [s.created for s in plan.delete]
    assert order == sorted(order, reverse=True)
    for i in range(len(plan.delete)):
        remaining = kept | {s.id for s in plan.delete[i:]}
        assert all(by_id[r].parent in remaining for r in remaining if by_id[r].parent)
    assert plan.broken == ()


def test_example_chain() -> None:
    f1, i1, f2, i2, i3 = make([None, 0, None, 2, 3])
    plan = plan_prune([f1, i1, f2, i2, i3], 1)
    assert plan.keep == (f2, i2, i3)
    assert plan.delete == (i1, f1)


def test_a_kept_set_whose_parent_is_gone_is_reported() -> None:
    f1, i1 = make([None, 0])
    plan = plan_prune([i1], 1)
    assert plan.keep == (i1,) and plan.broken == (i1.id,)
    assert f1.id == i1.parent


def test_keep_at_least_one() -> None:
    with pytest.raises(BadInput):
        plan_prune([], 0)
    assert plan_prune([], 3).keep == ()
