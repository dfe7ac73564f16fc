"""What recreating the layout did, for people (one line per action) and as JSON."""

from __future__ import annotations

import dataclasses
from typing import Any

from resurgo.apply.execute import ActionResult, Outcome, Status

MARK = {
    Status.DONE: "done",
    # Done by an earlier run of the same plan and checked on the disks again: skipped.
    Status.VERIFIED: "verified",
    Status.WARNING: "WARNING",
    Status.FAILED: "FAILED",
    Status.NOT_RUN: "not run",
}


def line(n: int, total: int, r: ActionResult) -> str:
    width = len(str(total))
    head = f"[{n:>{width}}/{total}] {MARK[r.status]:<8} {r.summary or r.id}  [{r.id}]"
    if r.status in (Status.DONE, Status.FAILED):
        head += f" ({r.seconds:.2f} s)"
    if r.message:
        head += "\n" + "\n".join("      " + m for m in r.message.splitlines())
    return head


def summary(o: Outcome) -> str:
    counts = {s: sum(1 for r in o.results if r.status == s) for s in Status}
    parts = [f"{counts[s]} {MARK[s].lower()}" for s in Status if counts[s]]
    head = "layout recreated" if o.ok else "recreating the layout FAILED"
    text = f"{head}: {', '.join(parts) or 'nothing to do'}\njournal: {o.journal}"
    warnings = [r for r in o.results if r.status == Status.WARNING]
    if warnings:
        text += "\nwarnings:\n" + "\n".join(f"  - {r.id}: {r.message}" for r in warnings)
    if o.error:
        text += f"\nerror: {o.error}"
    return text + "\n"


def data(o: Outcome) -> dict[str, Any]:
    return {
        "ok": o.ok,
        "plan_hash": o.plan_hash,
        "journal": o.journal,
        "resumed": o.resumed,
        "error": o.error,
        "results": [
            {**dataclasses.asdict(r), "status": str(r.status), "seconds": round(r.seconds, 3)}
            for r in o.results
        ],
    }
