"""Where plan, recover and verify read from: a recovery set on a medium, or (for the
layout alone) a description file."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from resurgo import fileformat
from resurgo.errors import BadInput
from resurgo.media import MediumOptions, open_medium
from resurgo.media.url import DirectorySpec, parse_url
from resurgo.model import Description
from resurgo.recovery import setfiles
from resurgo.recovery.load import LoadedSet, load_set


@dataclass(frozen=True)
class SourceOptions:
    # A medium's URL or a description file (--from).
    location: str
    # The set to use (--set); None: the newest on the medium.
    set_id: str | None = None
    medium: MediumOptions = field(default_factory=MediumOptions)


@dataclass(frozen=True)
class SetSource:
    description: Description
    # How the plan names it.
    name: str
    # Local paths of the source: the disks holding them are never recovery targets.
    recovery_paths: tuple[Path, ...]
    loaded: LoadedSet | None = None


def is_description_file(source: str) -> bool:
    """A file, or a name that can only be one (a description is a .toml file)."""
    if "://" in source or source.startswith("floppy:"):
        return False
    return os.path.isfile(source) or (source.endswith(".toml") and not os.path.isdir(source))


@contextlib.contextmanager
def open_source(options: SourceOptions, *, identity: Path | None = None,
                read_manifests: bool = False, read_packages: bool | None = None
                ) -> Iterator[SetSource]:
    """The description to plan from and, from a medium, the set it belongs to, loaded
    (recovery.load: every check before any write; ``read_packages`` as load_set's), its
    medium open while in use."""
    source = options.location
    if is_description_file(source):
        if options.set_id:
            raise BadInput(f"--set {options.set_id}: --from {source} is a description file, "
                           "not a medium holding sets")
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
    with open_medium(source, options.medium) as medium:
        loaded = load_set(medium, options.set_id, identity=identity,
                          read_manifests=read_manifests, read_packages=read_packages)
        yield SetSource(loaded.description, f"{medium.url} set {loaded.id}", paths, loaded)
