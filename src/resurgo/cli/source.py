"""Where plan, recover and verify read from: a recovery set on a medium, or (for the
layout alone) a description file."""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from resurgo import fileformat
from resurgo.cli.medium import MEDIUM_HELP, add_medium_arguments, open_from_args
from resurgo.errors import BadInput
from resurgo.media.url import DirectorySpec, parse_url
from resurgo.model import Description
from resurgo.recovery import setfiles
from resurgo.recovery.load import LoadedSet, load_set


@dataclass(frozen=True)
class SetSource:
    description: Description
    # How the plan names it.
    name: str
    # Local paths of the source: the disks holding them are never recovery targets.
    recovery_paths: tuple[Path, ...]
    loaded: LoadedSet | None = None


def add_source_arguments(p: argparse.ArgumentParser, *, description_file: bool) -> None:
    what = MEDIUM_HELP + (", or a recovery description file (for the layout alone)"
                          if description_file else "")
    p.add_argument("--from", dest="source", required=True, metavar="SOURCE", help=what)
    p.add_argument("--set", metavar="ID",
                   help="the recovery set to use (default: the newest on the medium)")
    add_medium_arguments(p)


def is_description_file(source: str) -> bool:
    """A file, or a name that can only be one (a description is a .toml file)."""
    if "://" in source or source.startswith("floppy:"):
        return False
    return os.path.isfile(source) or (source.endswith(".toml") and not os.path.isdir(source))


@contextlib.contextmanager
def open_source(args: argparse.Namespace, *, identity: Path | None = None,
                read_manifests: bool = False) -> Iterator[SetSource]:
    source: str = args.source
    if is_description_file(source):
        if args.set:
            raise BadInput(f"--set {args.set}: --from {source} is a description file, not a "
                           "medium holding sets")
        path = Path(source)
        yield SetSource(fileformat.read(path), source, (path,))
        return
    spec = parse_url(source)
    paths: tuple[Path, ...] = ()
    if isinstance(spec, DirectorySpec):
        paths = (Path(spec.path),)
        if (Path(spec.path) / setfiles.DESCRIPTION).is_file() and not any(
            p.name == "set.json" for p in Path(spec.path).glob("*/set.json")
        ):
            raise BadInput(
                f"{source} holds a description, not recovery sets",
                f"name the description file ({Path(spec.path) / setfiles.DESCRIPTION}) for "
                "the layout alone, or give the medium a save wrote to",
            )
    with open_from_args(source, args) as medium:
        loaded = load_set(medium, args.set, identity=identity, read_manifests=read_manifests)
        yield SetSource(loaded.description, f"{medium.url} set {loaded.id}", paths, loaded)
