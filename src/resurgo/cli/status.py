"""resurgo status [--from MEDIUM] [--root PATH] [--max-age DURATION] [--prometheus FILE]:
is the newest recovery set of this host still good (recovery.status)?

Exit 0 good: a set whose layout is still the system's (current), whose chain is whole,
not older than --max-age, and not found damaged by the last check; 1 not good: stale
(the differences listed), too old, a broken chain, no set of this host at all, or the
last check found it damaged; 2 bad input; 3 not run as root (the layout is described
anew).
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from resurgo.cli.check import STATE_DIR_HELP
from resurgo.cli.medium import MEDIUM_HELP, add_medium_arguments, medium_options
from resurgo.cli.output import emit
from resurgo.durations import parse_duration
from resurgo.errors import BadInput, PreconditionFailed, ResurgoError
from resurgo.media import open_medium
from resurgo.recovery.status import StatusOptions, host_name, set_status


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "status",
        parents=[common],
        help="is the newest recovery set of this host current (for people and monitoring)",
        description="The newest recovery set of this host on the medium: its age, kind, "
        "size, the chain of sets it builds on, whether it holds its rescue image; whether "
        "it is still current: the system described now (as save describes it) against "
        "the set's description, as `rear checklayout` does: a disk, partition, RAID, LUKS "
        "or LVM volume, filesystem or swap added, removed, resized or made anew makes it "
        "stale, each difference listed; the last `check` and rehearsal results. Exit 0 "
        "good; 1 stale, older than --max-age, a broken chain, no set of this host, or "
        "found damaged by the last check; 2 bad input; 3 not run as root.",
    )
    p.add_argument("--from", dest="source", metavar="MEDIUM", help=MEDIUM_HELP)
    p.add_argument("--root", type=Path, default=Path("/"), metavar="PATH",
                   help="the system mounted at PATH (default: the running system)")
    p.add_argument("--max-age", metavar="DURATION",
                   help="a set older than this is not good: 26h, 2d, 90m, 1w, 1d12h")
    p.add_argument("--exclude-disk", action="append", default=[], metavar="DEV",
                   help="a disk left out of the sets (as given to save --exclude-disk; "
                   "repeat)")
    p.add_argument("--prometheus", type=Path, metavar="FILE",
                   help="also write the status as metrics for node_exporter's textfile "
                   "collector (a .prom file in its directory), replaced atomically")
    p.add_argument("--state-dir", type=Path, metavar="DIR", help=STATE_DIR_HELP)
    add_medium_arguments(p)
    p.set_defaults(handler=run)


def options(args: argparse.Namespace) -> StatusOptions:
    root: Path = args.root
    if not root.is_dir():
        raise BadInput(f"--root {root}: not a directory")
    # A string on the command line; the configuration may give a number of seconds.
    max_age = parse_duration(str(args.max_age), "--max-age") if args.max_age else None
    if args.prometheus is not None and not args.prometheus.parent.is_dir():
        raise BadInput(f"--prometheus {args.prometheus}: the directory "
                       f"{args.prometheus.parent} does not exist")
    return StatusOptions(root=root, max_age=max_age, exclude_disks=tuple(args.exclude_disk),
                         state_dir=args.state_dir)


def run(args: argparse.Namespace) -> int:
    if not args.source:
        raise BadInput("status needs a medium: give --from MEDIUM, or set medium in the "
                       "configuration file (see docs/config.md)")
    opts = options(args)
    from resurgo import run as runner

    if not runner.is_root():
        raise PreconditionFailed("status describes the system's layout anew, which needs "
                                 "root (partition tables and superblocks are read from the "
                                 "devices)", "run resurgo as root")
    from resurgo.recovery import prometheus

    host = host_name(opts.root)
    # The medium's label as a good status names it (its URL once opened).
    label: str = args.source
    try:
        with open_medium(args.source, medium_options(args)) as medium:
            label = medium.url
            report = set_status(medium, opts, host=host)
    except ResurgoError as e:
        if args.prometheus is not None:
            # Else the collector would go on reading the last run's verdict.
            prometheus.write_metrics(prometheus.failure_metrics(
                host, label, datetime.now(UTC), e.exit_code), args.prometheus)
        raise
    if args.prometheus is not None:
        prometheus.write_metrics(report, args.prometheus)
    emit(report, args.json)
    return report.exit_code
