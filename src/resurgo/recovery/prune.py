"""resurgo prune: apply a retention policy to the sets on a medium (see media/prune.py for
the policy), or with a dry run only say what it would keep and remove, and why.

Only committed sets are considered: a save in progress has no index yet, so it is neither
listed nor touched here, and leftovers of interrupted saves are the next save's to clean
(under its own rules), never prune's. With trusted signers, sets they did not sign are not
listed, and so never deleted, nor taken as the newest of a host.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from resurgo.errors import OperationFailed, ResurgoError
from resurgo.media import Medium, PrunePlan, Retention, SetInfo, plan_retention
from resurgo.media.prune import spare_in_use
from resurgo.pool.prune import PoolPruned, prune_pool
from resurgo.recovery.listing import set_data


@dataclass(frozen=True)
class PruneOptions:
    policy: Retention
    # The hosts whose sets are pruned; None: every host's, each apart.
    hosts: tuple[str, ...] | None
    dry_run: bool = False


@dataclass(frozen=True)
class PruneReport:
    medium: str
    options: PruneOptions
    plan: PrunePlan
    deleted: tuple[str, ...]
    # Sets left out as not authentic (with trusted signers): neither kept nor removed.
    refused: tuple[str, ...] = ()
    other_hosts: tuple[str, ...] = ()
    # The medium's package pool: what no set left needs (None: the medium has none).
    pool: PoolPruned | None = None

    def _hosts(self) -> str:
        hosts = self.options.hosts
        return "every host, each apart" if hosts is None else "host " + ", ".join(hosts)

    def text(self) -> str:
        o = self.options
        plan = self.plan
        dry = o.dry_run
        lines = [f"prune {self.medium}: {self._hosts()}; {o.policy.text()} "
                 "(days, weeks and months in UTC)"]
        for s in reversed(plan.keep):
            lines.append(f"  {'would keep' if dry else 'kept'}: {_line(s)}")
            lines.extend(f"      {why}" for why in plan.reasons.get(s.id, ()))
        for s in plan.delete:
            lines.append(f"  {'would remove' if dry else 'removed'}: {_line(s)}")
            lines.append("      no rule keeps it, and no kept set builds on it")
        for set_id in plan.broken:
            lines.append(f"  warning: {set_id} builds on a set that is not on the medium")
        if self.refused:
            lines.append(f"  left alone, not signed by a trusted signer: "
                         f"{', '.join(self.refused)}")
        if not plan.keep and not plan.delete:
            others = f" (the medium holds sets of {', '.join(self.other_hosts)}; --all-hosts " \
                "prunes those too)" if self.other_hosts else ""
            lines.append(f"  no set of {self._hosts()} on the medium{others}")
        if self.pool is not None:
            lines.append(f"  {self.pool.line(dry)}")
        if dry:
            lines.append(f"{len(plan.keep)} set(s) would be kept, {len(plan.delete)} removed "
                         "(dry run: nothing was deleted)")
        else:
            lines.append(f"{len(plan.keep)} set(s) kept, {len(plan.delete)} removed")
        return "\n".join(lines) + "\n"

    def data(self) -> dict[str, Any]:
        o = self.options
        plan = self.plan
        return {
            "medium": self.medium,
            "dry_run": o.dry_run,
            "hosts": None if o.hosts is None else list(o.hosts),
            "policy": o.policy.data(),
            "time_zone": "UTC",
            "keep": [{**set_data(s), "reasons": list(plan.reasons.get(s.id, ()))}
                     for s in plan.keep],
            "remove": [set_data(s) for s in plan.delete],
            "removed": list(self.deleted),
            "broken": list(plan.broken),
            "refused": list(self.refused),
            "pool": None if self.pool is None else self.pool.data(),
        }


def _line(s: SetInfo) -> str:
    parent = f" on {s.parent}" if s.parent else ""
    return f"{s.id}  {s.created:%Y-%m-%d %H:%M:%S}  {s.kind}{parent}  {s.host or '-'}"


def prune_sets(medium: Medium, opts: PruneOptions,
               say: Callable[[str], None] = lambda _line: None) -> PruneReport:
    """Plan the policy over the medium's sets and, unless a dry run, delete what it does not
    keep, newest first (an interrupted prune leaves no set without its parent)."""
    sets = medium.list_sets()
    # A set that a save running now builds on is kept (its lease names it).
    plan = spare_in_use(medium, plan_retention(sets, opts.policy, opts.hosts,
                                               now=datetime.now(UTC)))
    refused = tuple(set_id for set_id, _why in medium.refused)
    chosen = {s.id for s in plan.keep} | {s.id for s in plan.delete}
    others = tuple(sorted({s.host or "-" for s in sets if s.id not in chosen}))
    deleted: list[str] = []
    if not opts.dry_run:
        for s in plan.delete:
            say(f"removing {s.id}")
            try:
                medium.delete_set(s.id)
            except ResurgoError as e:
                raise OperationFailed(
                    f"prune stopped after removing {len(deleted)} of {len(plan.delete)} "
                    f"set(s) from {medium.url}: {e.message}",
                    "the sets left are whole (removed newest first): run prune again",
                ) from e
            deleted.append(s.id)
    # The packages only the deleted sets needed (in a dry run: those no set needs now).
    pool = prune_pool(medium, dry_run=opts.dry_run)
    return PruneReport(medium.url, opts, plan, tuple(deleted), refused, others, pool)


__all__ = ["PruneOptions", "PruneReport", "prune_sets"]
