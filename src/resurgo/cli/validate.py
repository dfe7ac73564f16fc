"""resurgo validate FILE: check a description and list every problem in it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from resurgo.errors import ExitCode
from resurgo.fileformat import document


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
    raw = document.load_bytes(path)
    expected = None if args.rehash else document.read_digest(path)
    report = document.check_bytes(raw, str(path), expected_digest=expected)
    valid = report.description is not None
    if valid and args.rehash:
        document.write_digest(path, document.sha256_hex(raw))
    if args.json:
        out: dict[str, Any] = {
            "file": str(path),
            "valid": valid,
            "problems": [
                {"where": p.location(), "line": p.line, "record": p.record, "message": p.message}
                for p in report.problems
            ],
            "warnings": report.warnings,
        }
        print(json.dumps(out, indent=2))
    else:
        for w in report.warnings:
            print(f"warning: {w}")
        for m in report.messages():
            print(m)
        if valid:
            print(
                f"{path}: valid recovery description"
                + (" (digest rewritten)" if args.rehash else "")
            )
        else:
            print(f"{path}: {len(report.problems)} problem(s)")
    return ExitCode.OK if valid else ExitCode.BAD_INPUT
