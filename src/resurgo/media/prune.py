"""Keep the newest N recovery sets without breaking an incremental chain.

A kept incremental set is useless without every set it builds on, so the
parents (and their parents) of a kept set are kept too, however old. Sets are
deleted newest first, so a prune that is interrupted never leaves an
incremental set whose parent is gone while the set itself remains.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from resurgo.errors import BadInput
from resurgo.media.base import Medium, SetInfo


@dataclass(frozen=True)
class PrunePlan:
    keep: tuple[SetInfo, ...]  # oldest first
    delete: tuple[SetInfo, ...]  # in the order to delete them: newest first
    broken: tuple[str, ...]  # kept sets whose parent is not on the medium


def plan_prune(sets: Sequence[SetInfo], keep: int) -> PrunePlan:
    if keep < 1:
        raise BadInput("prune must keep at least one recovery set")
    ordered = sorted(sets, key=lambda s: (s.created, s.id))
    by_id = {s.id: s for s in ordered}
    kept: set[str] = set()
    broken: list[str] = []
    for s in ordered[-keep:]:
        current: SetInfo | None = s
        while current is not None and current.id not in kept:
            kept.add(current.id)
            if current.parent is None:
                break
            parent = by_id.get(current.parent)
            if parent is None:
                broken.append(current.id)
            current = parent
    return PrunePlan(
        tuple(s for s in ordered if s.id in kept),
        tuple(s for s in reversed(ordered) if s.id not in kept),
        tuple(broken),
    )


def prune(medium: Medium, keep: int) -> PrunePlan:
    """Delete all but the newest ``keep`` sets (and the parents those need)."""
    plan = plan_prune(medium.list_sets(), keep)
    for s in plan.delete:
        medium.delete_set(s.id)
    return plan
