"""What finalize will do, as part of the plan that `resurgo plan` and `resurgo recover`
show before writing.

The options that decide it (--net-map, --no-finalize) are plan options: `plan` and
`recover` take them alike, so that what a person reviews is what recover runs. A
--net-map is checked while planning, against the network configuration the description
carries and this machine's interfaces: a typo stops recover before any disk is touched,
not after the data is restored.

What finalize will do is part of the plan and of its hash (plan.render.with_finalize):
`recover --plan-hash H` finalizes as the plan that printed H showed, and --no-finalize
gives another hash. A `recover --layout-only` shows and hashes the same plan as `plan`
with its options (so that the hash `plan` printed is the one it takes) and executes only
its layout part: no command runs, no finalize.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from resurgo.finalize import FinalizeOptions, FinalizeReport, StepStatus, data, preview
from resurgo.finalize.report import change_lines, nic_pair
from resurgo.model import Description, InitramfsImage
from resurgo.plan.model import Plan
from resurgo.plan.render import to_data, with_finalize, words

_BY = {"map": "by --net-map", "order": "in PCI order", "mac": "same MAC", "name": "same name"}
SKIPPED = "finalize: skipped (--no-finalize)"


def finalized(desc: Description, plan: Plan, options: FinalizeOptions, *, skip: bool) -> Plan:
    """The plan with what finalize will do in it and in its hash: the preview, or None
    when finalize will not run (skip) or the plan cannot be executed.

    Raises BadInput for a net map naming an interface the saved configuration does not
    name or this machine does not have, or one twice (even when finalize will not run:
    the option is wrong all the same).
    """
    made = desc.initramfs_made_at_recovery()
    if skip and made:
        plan = dataclasses.replace(plan, warnings=(*plan.warnings, unmade(made)))
    return with_finalize(plan, planned(desc, plan, options, skip=skip))


def unmade(images: Sequence[InitramfsImage]) -> str:
    """What --no-finalize leaves of a set that carries no initramfs."""
    return (f"the set leaves out {', '.join(i.path for i in images)} for finalize to make "
            "(saved with --initramfs rebuild): with --no-finalize the restored system has "
            "no initramfs and will not boot until `resurgo finalize` (or update-initramfs "
            "-c in it) makes one")


def planned(desc: Description, plan: Plan, options: FinalizeOptions, *,
            skip: bool) -> FinalizeReport | None:
    """What finalize will change, from the description's copy of the configuration; None
    when it will not run or the plan cannot be executed. Raises BadInput as finalized."""
    runs = not skip and plan.ok
    if not options.net_map and not runs:
        return None
    report = preview(desc, plan, options)
    return report if runs else None


def plan_data(plan: Plan) -> dict[str, Any]:
    """The plan as JSON data with the finalize preview (null when there is none); the hash
    stays the last key."""
    out = to_data(plan)
    digest = out.pop("hash")
    out["finalize"] = None if plan.finalize is None else data(plan.finalize)
    out["hash"] = digest
    return out


def section(plan: Plan, *, skip: bool) -> list[str]:
    """The finalize part of a plan's text."""
    if skip:
        return [SKIPPED]
    report = plan.finalize
    if report is None:
        return []
    out = ["finalize, once the data is restored (from the configuration the description "
           "carries):"]
    changed = [f for f in report.files if f.changes]
    if not changed:
        out.append("  nothing to rewrite: every device and interface is named as it will be")
    for f in changed:
        out.append(f"  {f.path}" + (" (new)" if f.created else ""))
        out += change_lines(f)
    if report.nics:
        out.append("  network interfaces (saved -> this machine):")
        for n in report.nics:
            out.append(f"    {nic_pair(n)}  [{_BY.get(n.by, n.by)}]")
    if report.commands:
        out.append("  commands:")
        for cmd in report.commands:
            where = "[chroot] " if cmd.chroot else ""
            when = "if needed: " if cmd.status == StepStatus.IF_NEEDED else ""
            out.append(f"    {when}{where}{words(cmd.argv)}")
            out.append(f"      because {cmd.why}")
    for title, items in (
        ("notes", report.notes),
        ("warnings", report.warnings),
        ("will fail", report.errors),
    ):
        if items:
            out.append(f"  {title}:")
            out += [f"    - {i}" for i in items]
    return out
