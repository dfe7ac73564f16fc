"""resurgo list MEDIUM: the recovery sets on a medium, oldest first."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from resurgo.cli.medium import MEDIUM_HELP, add_medium_arguments, medium_options
from resurgo.cli.output import emit
from resurgo.errors import ExitCode
from resurgo.media import SetInfo, open_medium
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


def table(sets: Sequence[SetInfo]) -> str:
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


@dataclass(frozen=True)
class Listing:
    # The medium as the command line named it.
    medium: str
    sets: tuple[SetInfo, ...]
    # Trusted signers were given: only the sets they signed are listed.
    checked: bool
    # The sets left out as not authentic, (id, why); each was named on stderr as found.
    refused: tuple[tuple[str, str], ...]

    @property
    def exit_code(self) -> ExitCode:
        """4 when trusted signers are given and every set on the medium failed them."""
        return ExitCode.NOT_AUTHENTIC if self.refused and not self.sets else ExitCode.OK

    def text(self) -> str:
        if not self.sets:
            signed = " signed by a trusted key" if self.checked else ""
            return f"no recovery sets on {self.medium}{signed}\n"
        note = ("every set listed is signed by a trusted key (signed_by in --json)\n"
                if self.checked else "")
        return table(self.sets) + note

    def data(self) -> list[dict[str, Any]]:
        return [set_data(s) for s in self.sets]


def run(args: argparse.Namespace) -> int:
    url: str = args.medium
    with open_medium(url, medium_options(args)) as medium:
        listing = Listing(url, tuple(medium.list_sets()), checked=medium.trust is not None,
                          refused=medium.refused)
    emit(listing, args.json)
    return listing.exit_code
