"""The options of plan, recover and verify that say where they read from (a recovery set
on a medium, or for the layout alone a description file), as SourceOptions."""

from __future__ import annotations

import argparse

from resurgo.cli.medium import MEDIUM_HELP, add_medium_arguments, medium_options
from resurgo.recovery.source import SourceOptions


def add_source_arguments(p: argparse.ArgumentParser, *, description_file: bool) -> None:
    what = MEDIUM_HELP + (", or a recovery description file (for the layout alone)"
                          if description_file else "")
    p.add_argument("--from", dest="source", required=True, metavar="SOURCE", help=what)
    p.add_argument("--set", metavar="ID",
                   help="the recovery set to use (default: the newest on the medium)")
    add_medium_arguments(p)


def source_options(args: argparse.Namespace) -> SourceOptions:
    return SourceOptions(location=args.source, set_id=args.set, medium=medium_options(args))
