"""What finalize will do, as `resurgo plan` and `resurgo recover` show it before writing.

The options that decide it (--net-map, --no-finalize) are plan options
(cli.plan.add_plan_arguments): `plan` and `recover` take them alike, so that what a
person reviews is what recover runs. A --net-map is checked while planning, against the
network configuration the description carries and this machine's interfaces: a typo
stops recover before any disk is touched, not after the data is restored.

What finalize will do is part of the plan and of its hash (plan.render.with_finalize):
`recover --plan-hash H` finalizes as the plan that printed H showed, and --no-finalize
gives another hash. A `recover --layout-only` shows and hashes the same plan as `plan`
with its options (so that the hash `plan` printed is the one it takes) and executes only
its layout part: no command runs, no finalize.

Testing aid: when the environment variable RESURGO_FINALIZE_SYSFS names a directory,
finalize reads this machine's network interfaces and controllers from it as from /sys
(a recorded one), so that the pairing can be tested without the NICs it would need.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from resurgo import finalize
from resurgo.finalize import FinalizeOptions, FinalizeReport
from resurgo.finalize.report import change_lines, nic_pair
from resurgo.model import Description
from resurgo.plan.model import Plan
from resurgo.plan.render import to_data, with_finalize, words

ENV_SYSFS = "RESURGO_FINALIZE_SYSFS"
_BY = {"map": "by --net-map", "order": "in PCI order", "mac": "same MAC", "name": "same name"}


def options(args: argparse.Namespace) -> FinalizeOptions:
    opts = FinalizeOptions(net_map=tuple(args.net_map))
    sysfs = os.environ.get(ENV_SYSFS)
    return replace(opts, sysfs=Path(sysfs)) if sysfs else opts


def in_plan(args: argparse.Namespace) -> bool:
    """Whether the plan these arguments describe ends with finalize."""
    return not args.no_finalize


def finalized(args: argparse.Namespace, desc: Description, plan: Plan) -> Plan:
    """The plan with what finalize will do in it and in its hash: the preview, or None
    when finalize will not run or the plan cannot be executed.

    Raises BadInput for a --net-map naming an interface the saved configuration does not
    name or this machine does not have, or one twice (even when finalize will not run:
    the option is wrong all the same).
    """
    return with_finalize(plan, preview(args, desc, plan))


def preview(args: argparse.Namespace, desc: Description, plan: Plan) -> FinalizeReport | None:
    """What finalize will change, from the description's copy of the configuration; None
    when it will not run or the plan cannot be executed. Raises BadInput as finalized."""
    if not args.net_map and not (in_plan(args) and plan.ok):
        return None
    report = finalize.preview(desc, plan, options(args))
    return report if in_plan(args) and plan.ok else None


def plan_data(plan: Plan) -> dict[str, Any]:
    """The plan as JSON data with the finalize preview (null when there is none); the hash
    stays the last key."""
    data = to_data(plan)
    digest = data.pop("hash")
    data["finalize"] = None if plan.finalize is None else finalize.data(plan.finalize)
    data["hash"] = digest
    return data


def section(args: argparse.Namespace, plan: Plan) -> list[str]:
    """The finalize part of a plan's text."""
    if args.no_finalize:
        return ["finalize: skipped (--no-finalize)"]
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
            out.append(f"    {where}{words(cmd.argv)}")
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
