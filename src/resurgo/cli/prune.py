"""resurgo prune --from MEDIUM --keep-...: apply a retention policy to the sets on a medium.

Exit 0 pruned (or, with --dry-run, the plan printed); 1 failed (the medium unreachable, a
set could not be deleted: those left are whole); 2 bad input (no retention rule, a number
below 1).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from resurgo.cli.medium import MEDIUM_HELP, add_medium_arguments, medium_options
from resurgo.cli.output import emit, progress
from resurgo.cli.reports import reported
from resurgo.cli.retention import add_retention_arguments, retention
from resurgo.errors import BadInput, ExitCode
from resurgo.media import open_medium
from resurgo.recovery.prune import PruneOptions, prune_sets


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "prune",
        parents=[common],
        help="delete the recovery sets a retention policy does not keep",
        description="Apply a retention policy like restic's to the recovery sets of this "
        "host (or --host's, or every host's, each apart): keep what a --keep-* rule keeps "
        "and every set a kept set builds on, delete the rest, newest first (an interrupted "
        "prune never leaves a set without its parent). --dry-run prints what would be kept "
        "and removed, and which rule keeps each set. Sets being saved are never touched; "
        "a set dated more than a day after this machine's clock is kept and counted by no "
        "rule. "
        "Exit 0 pruned (or planned); 1 failed (the medium unreachable, a set could not be "
        "deleted); 2 bad input (no rule given, a number below 1).",
    )
    p.add_argument("--from", dest="source", metavar="MEDIUM", help=MEDIUM_HELP)
    hosts = p.add_mutually_exclusive_group()
    hosts.add_argument("--host", action="append", metavar="HOST",
                       help="prune the sets of this host (repeat for several; default: this "
                       "machine's host name, as save records it)")
    hosts.add_argument("--all-hosts", action="store_true",
                       help="prune the sets of every host, each host's apart")
    p.add_argument("--dry-run", action="store_true",
                   help="delete nothing: print what would be kept and removed, and why")
    add_retention_arguments(p)
    add_medium_arguments(p)
    reported(p, "prune")
    p.set_defaults(handler=run)


def options(args: argparse.Namespace) -> PruneOptions:
    if not args.source:
        raise BadInput("prune needs the medium: give --from MEDIUM")
    policy = retention(args)
    if policy.empty:
        raise BadInput("no retention rule given: prune would delete every set",
                       "give at least one of --keep-last, --keep-daily, --keep-weekly, "
                       "--keep-monthly")
    hosts: tuple[str, ...] | None
    if args.all_hosts:
        hosts = None
    elif args.host:
        hosts = tuple(dict.fromkeys(args.host))
    else:
        hosts = (this_host(),)
    return PruneOptions(policy, hosts, dry_run=args.dry_run)


def this_host() -> str:
    """The host name save records for this machine."""
    import socket

    from resurgo.probe.system import probe_system

    return probe_system(Path("/")).hostname or socket.gethostname()


def run(args: argparse.Namespace) -> int:
    opts = options(args)
    with open_medium(args.source, medium_options(args, writes=not args.dry_run)) as medium:
        report = prune_sets(medium, opts, progress(args.json))
    emit(report, args.json)
    return ExitCode.OK
