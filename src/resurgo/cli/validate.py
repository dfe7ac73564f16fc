"""resurgo validate FILE: check a description and list every problem in it."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from resurgo.cli.output import emit
from resurgo.fileformat.validation import validate_file


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "validate",
        parents=[common],
        help="check a recovery description",
        description="Check a recovery description: types, references, "
        "uniqueness, partition geometry, format version and digest.",
    )
    p.add_argument("file", type=Path, metavar="FILE")
    p.add_argument(
        "--rehash",
        action="store_true",
        help="after a deliberate edit: check the content and, if valid, "
        "write a new digest beside it",
    )
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    path: Path = args.file
    validation = validate_file(path, rehash=args.rehash)
    emit(validation, args.json)
    return validation.exit_code
