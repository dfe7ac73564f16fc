"""resurgo check --from MEDIUM [--set ID | --all] [--read-data]: recovery sets checked on
their medium without restoring anything (recovery.setcheck), the result recorded for
status.

Exit 0 every set checked is good; 1 the check could not run (the medium unreachable, no
such set); 2 bad input; 4 a set is not authentic (trusted signers given, and it or a set
of its chain is not signed by them, or changed since); 5 a set is damaged or incomplete
(a file missing, of another size or, with --read-data, another digest; a set of its
chain missing or damaged).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from resurgo.cli.medium import MEDIUM_HELP, add_medium_arguments, medium_options
from resurgo.cli.output import emit, progress, warn
from resurgo.cli.progress import shown
from resurgo.cli.reports import reported
from resurgo.media import open_medium
from resurgo.recovery.events import Progress, Step
from resurgo.recovery.setcheck import CheckOptions, check_sets

STATE_DIR_HELP = ("where check records its result and status reads it (default "
                  "/var/lib/resurgo): check-HOST.json, and rehearse-HOST.json")


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "check",
        parents=[common],
        help="check recovery sets on their medium without restoring anything",
        description="Check a recovery set where it is stored, restoring nothing: its "
        "index (and, with trusted signers, its signature), every file present with its "
        "recorded size, its description valid with an archive and a manifest for each "
        "tree, every set its incremental chain builds on present and good; with "
        "--read-data every file read and its digest compared. Damaged files are named "
        "one per line; a set saved without its rescue image is flagged. The result is "
        "recorded for `resurgo status`. Exit 0 good; 1 the check could not run; 2 bad "
        "input; 4 a set is not authentic; 5 a set is damaged or incomplete.",
    )
    p.add_argument("--from", dest="source", required=True, metavar="MEDIUM", help=MEDIUM_HELP)
    which = p.add_mutually_exclusive_group()
    which.add_argument("--set", metavar="ID",
                       help="the set to check (default: the newest of this host, or the "
                       "newest when the medium holds one host's sets); its chain is "
                       "checked with it")
    which.add_argument("--all", action="store_true", help="check every set on the medium")
    p.add_argument("--read-data", action="store_true",
                   help="read every file of the set and compare its digest with the index "
                   "(reads the whole set from the medium)")
    p.add_argument("--state-dir", type=Path, metavar="DIR", help=STATE_DIR_HELP)
    add_medium_arguments(p)
    reported(p, "check")
    p.set_defaults(handler=run)


def options(args: argparse.Namespace) -> CheckOptions:
    from resurgo.recovery.status import host_name

    return CheckOptions(set_id=args.set, all=args.all, read_data=args.read_data,
                        host=host_name(Path("/")), state_dir=args.state_dir)


def run(args: argparse.Namespace) -> int:
    opts = options(args)
    say = progress(args.json)
    # The lines go through the events: a terminal's progress line is erased first.
    with open_medium(args.source, medium_options(args)) as medium, \
            shown(args.json, lambda e: say(e.line) if isinstance(e, Progress) else None) \
            as on_event:
        report = check_sets(medium, opts, lambda line: on_event(Progress(Step.VERIFY_SET,
                                                                         line)), on_event)
    for w in report.warnings:
        warn(w)
    emit(report, args.json)
    return report.exit_code
