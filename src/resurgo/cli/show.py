"""resurgo show FILE: a description at a glance (or as JSON)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from resurgo import fileformat, summary
from resurgo.errors import ExitCode


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


def run(args: argparse.Namespace) -> int:
    desc = fileformat.read(args.file)
    sys.stdout.write(fileformat.dumps_json(desc) if args.json else summary.render(desc))
    return ExitCode.OK
