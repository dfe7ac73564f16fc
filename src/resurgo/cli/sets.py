"""resurgo list MEDIUM: the recovery sets on a medium, oldest first."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from resurgo.cli.medium import MEDIUM_HELP, add_medium_arguments, open_from_args
from resurgo.errors import ExitCode
from resurgo.media import SetInfo
from resurgo.recovery import setfiles
from resurgo.units import human


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


def set_data(s: SetInfo) -> dict[str, Any]:
    return {
        "id": s.id,
        "created": s.created.isoformat(),
        "kind": str(s.kind),
        "parent": s.parent,
        "size": s.size,
        "files": s.file_count,
        "host": s.host,
        "encrypted": setfiles.encrypted(s.labels),
        "signed_by": s.signed_by,
        "labels": dict(s.labels),
    }


def table(sets: list[SetInfo]) -> str:
    rows = [("id", "created (UTC)", "kind", "parent", "size", "files", "host")]
    for s in sets:
        kind = str(s.kind) + (" (age)" if setfiles.encrypted(s.labels) else "")
        rows.append((s.id, f"{s.created:%Y-%m-%d %H:%M:%S}", kind, s.parent or "-",
                     human(s.size), str(s.file_count), s.host or "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() + "\n"
        for r in rows
    )


def run(args: argparse.Namespace) -> int:
    """Exit 0; 4 when trusted signers are given and every set on the medium failed them."""
    with open_from_args(args.medium, args) as medium:
        sets = medium.list_sets()
        refused = medium.refused
        checked = medium.trust is not None
    if args.json:
        sys.stdout.write(json.dumps([set_data(s) for s in sets], indent=2) + "\n")
    elif not sets:
        print(f"no recovery sets on {args.medium}" + (" signed by a trusted key" if checked
                                                       else ""))
    else:
        sys.stdout.write(table(sets))
        if checked:
            print("every set listed is signed by a trusted key (signed_by in --json)")
    # Each refused set was named, with why, on stderr as it was found.
    return ExitCode.NOT_AUTHENTIC if refused and not sets else ExitCode.OK
