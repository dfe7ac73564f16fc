"""The retention options of save and prune (--keep-last, --keep-daily, --keep-weekly,
--keep-monthly), as a Retention. Their dests are keep_last ... keep_monthly, the names of
the configuration file's keys; None where not given."""

from __future__ import annotations

import argparse

from resurgo.media import Retention

RULES_HELP = (
    "A set is kept when any rule keeps it, each host's sets apart; days, weeks (ISO, Monday "
    "to Sunday) and months are those of the sets' creation times in UTC; a rule that finds "
    "fewer periods than it may keep also keeps the host's oldest set (as restic does); every "
    "set a kept set builds on is kept too."
)


def add_retention_arguments(p: argparse.ArgumentParser, *, keep_alias: bool = False) -> None:
    g = p.add_argument_group("retention", RULES_HELP)
    last = ["--keep-last", "--keep"] if keep_alias else ["--keep-last"]
    g.add_argument(*last, dest="keep_last", type=int, metavar="N",
                   help="keep the N newest sets" + (" (--keep N, the older spelling, is the "
                                                     "same)" if keep_alias else ""))
    g.add_argument("--keep-daily", dest="keep_daily", type=int, metavar="N",
                   help="keep the newest set of each of the N newest days that have sets")
    g.add_argument("--keep-weekly", dest="keep_weekly", type=int, metavar="N",
                   help="keep the newest set of each of the N newest ISO weeks that have sets")
    g.add_argument("--keep-monthly", dest="keep_monthly", type=int, metavar="N",
                   help="keep the newest set of each of the N newest months that have sets")


def retention(args: argparse.Namespace) -> Retention:
    """The rules given (BadInput for a number below 1)."""
    return Retention(last=args.keep_last, daily=args.keep_daily, weekly=args.keep_weekly,
                     monthly=args.keep_monthly)
