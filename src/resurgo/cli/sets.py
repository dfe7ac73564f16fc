"""resurgo list MEDIUM: the recovery sets on a medium, oldest first."""

from __future__ import annotations

import argparse
from typing import Any

from resurgo.cli.medium import MEDIUM_HELP, add_medium_arguments, medium_options
from resurgo.cli.output import emit
from resurgo.media import open_medium
from resurgo.recovery.listing import list_sets


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "list",
        parents=[common],
        help="list the recovery sets on a medium",
        description="The complete recovery sets on the medium, oldest first: id, date, kind, "
        "the set an incremental one builds on, size, number of files, host. With trusted "
        "signers (--trust), only the sets they signed; the others are named on stderr "
        "(exit 4 when none is left).",
    )
    p.add_argument("medium", metavar="MEDIUM", help=MEDIUM_HELP)
    add_medium_arguments(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    url: str = args.medium
    with open_medium(url, medium_options(args)) as medium:
        listing = list_sets(medium, url)
    emit(listing, args.json)
    return listing.exit_code
