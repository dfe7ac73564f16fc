"""The keys of the LUKS volumes an unattended recovery recreates, from a key medium.

`resurgo.keys=DEV[:/dir]` names a filesystem (a USB stick an administrator keeps apart
from the backups) that the agent mounts read-only at KEYS_MOUNT. A file below /dir
named after a LUKS volume of the description, by its id as `resurgo show` lists it
(luks.md127) or by its LUKS UUID, with or without ".key", becomes `--key-file ID=PATH`
for recover or plan. Only the path travels: the secret stays off the kernel command
line, argv and the logs. A --key-file given in resurgo.args for a volume wins.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Volume:
    id: str
    uuid: str


def file_names(volume: Volume) -> list[str]:
    """The names a key file of ``volume`` may have, in the order they are preferred."""
    return [f"{volume.id}.key", volume.id, f"{volume.uuid}.key", volume.uuid]


def given(args: Sequence[str]) -> set[str]:
    """The volumes ``args`` already give a key for (--key-file ID=FILE, --key-file=ID=FILE)."""
    out = set()
    for i, word in enumerate(args):
        if word == "--key-file" and i + 1 < len(args):
            value = args[i + 1]
        elif word.startswith("--key-file="):
            value = word.removeprefix("--key-file=")
        else:
            continue
        volume, sep, _path = value.partition("=")
        if sep:
            out.add(volume)
    return out


def key_file_args(
    volumes: Sequence[Volume], names: Iterable[str], directory: Path, args: Sequence[str]
) -> tuple[list[str], list[str]]:
    """(--key-file arguments for the volumes with a key file among ``names`` in
    ``directory``, one line per volume saying where its key comes from)."""
    present = set(names)
    already = given(args)
    argv: list[str] = []
    lines: list[str] = []
    for vol in volumes:
        if vol.id in already:
            lines.append(f"{vol.id}: its key file is given in resurgo.args")
            continue
        name = next((n for n in file_names(vol) if n in present), None)
        if name is None:
            tried = ", ".join(file_names(vol))
            lines.append(f"{vol.id}: no key file in {directory} (looked for {tried})")
            continue
        argv += ["--key-file", f"{vol.id}={directory / name}"]
        lines.append(f"{vol.id}: key file {directory / name}")
    return argv, lines
