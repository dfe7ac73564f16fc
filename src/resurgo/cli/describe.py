"""resurgo describe: collect the state of this system (or one mounted at --root)."""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resurgo import fileformat
from resurgo.cli.output import emit
from resurgo.errors import BadInput, ExitCode
from resurgo.model import Description

if TYPE_CHECKING:
    from resurgo.probe.describe import DescribeOptions

log = logging.getLogger(__name__)


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "describe",
        parents=[common],
        help="describe this system's disks, volumes and configuration",
        description="Collect the state of the running system, or of a system mounted at --root, "
        "and write the recovery description (TOML; --json for JSON). Read-only.",
    )
    p.add_argument(
        "--root",
        type=Path,
        default=Path("/"),
        metavar="PATH",
        help="describe the system mounted at PATH (default: the running system)",
    )
    p.add_argument(
        "--output",
        "-o",
        type=Path,
        metavar="FILE",
        help="write the description to FILE (with FILE.sha256 and the catalog beside "
        "it, all 0600 whatever the umask: the description holds the configuration, "
        "secret files included) instead of standard output",
    )
    p.add_argument(
        "--include-disk",
        action="append",
        default=[],
        metavar="DEV",
        help="also describe this disk (repeatable)",
    )
    p.add_argument(
        "--exclude-disk",
        action="append",
        default=[],
        metavar="DEV",
        help="leave this disk out (repeatable)",
    )
    p.add_argument(
        "--no-catalog", action="store_true", help="skip the catalog of unchanged package files"
    )
    p.set_defaults(handler=run)


@dataclass(frozen=True)
class Described:
    """The description, whole on standard output (TOML, or JSON), or written to a file
    and named on standard error (--json still prints it)."""

    description: Description
    output: Path | None

    def text(self) -> str:
        desc = self.description
        if self.output is None:
            return fileformat.dumps(desc)
        catalog = ", catalog " + desc.catalog.path if desc.catalog else ""
        return (f"wrote {self.output} ({len(desc.disks)} disk(s), {len(desc.filesystems)} "
                f"filesystem(s){catalog})\n")

    def data(self) -> dict[str, Any]:
        return fileformat.to_data(self.description)


def options(args: argparse.Namespace) -> tuple[DescribeOptions, Path | None]:
    """What to describe, and the file to write it to (None: standard output)."""
    from resurgo.probe.describe import DescribeOptions

    root: Path = args.root
    if not root.is_dir():
        raise BadInput(f"--root {root}: not a directory")
    output: Path | None = args.output
    if output is not None:
        if output.is_dir():
            raise BadInput(
                f"--output {output} is a directory",
                f"name a file, e.g. {output / 'description.toml'}",
            )
        if not output.parent.is_dir():
            raise BadInput(f"--output {output}: the directory {output.parent} does not exist")
    catalog_dir = None
    if not args.no_catalog:
        if output is None:
            log.warning(
                "no catalog: it is written beside the description, so it needs "
                "--output FILE (or say --no-catalog)"
            )
        else:
            catalog_dir = output.parent
    opts = DescribeOptions(
        root=root.resolve(),
        include_disks=tuple(args.include_disk),
        exclude_disks=tuple(args.exclude_disk),
        catalog_dir=catalog_dir,
    )
    return opts, output


def run(args: argparse.Namespace) -> int:
    # Imported here: the probes are only needed by this command.
    from resurgo.probe.describe import describe

    opts, output = options(args)
    desc, warnings = describe(opts)
    for w in warnings:
        log.warning("%s", w)
    if output is not None:
        fileformat.write(desc, output)
    emit(Described(desc, output), args.json, text_to=sys.stderr if output else None)
    return ExitCode.OK
