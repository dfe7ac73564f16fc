"""What restoring and checking did, for people (lines) and as JSON."""

from __future__ import annotations

import dataclasses
import posixpath
from typing import Any

from resurgo.engine import Mismatch
from resurgo.recovery.check import CheckOutcome, UnitCheck
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
