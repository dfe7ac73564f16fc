"""resurgo show FILE: a description at a glance (or as JSON)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from resurgo import fileformat, summary
from resurgo.cli.output import emit
from resurgo.errors import ExitCode
from resurgo.model import Description


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "show",
        parents=[common],
        help="summarise a recovery description",
        description="Print each disk as a tree of partitions and volumes with "
        "sizes and mountpoints, then the drivers and the restore commands.",
    )
    p.add_argument("file", type=Path, metavar="FILE")
    p.set_defaults(handler=run)


@dataclass(frozen=True)
class Shown:
    """A description as `show` prints it: the summary, or the whole of it as JSON."""

    description: Description

    def text(self) -> str:
        return summary.render(self.description)

    def data(self) -> dict[str, Any]:
        return fileformat.to_data(self.description)


def run(args: argparse.Namespace) -> int:
    path: Path = args.file
    emit(Shown(fileformat.read(path)), args.json)
    return ExitCode.OK
