"""The keys of the LUKS volumes an unattended recovery recreates, from a key medium.

`resurgo.keys=DEV[:/dir]` names a filesystem (a USB stick an administrator keeps apart
from the backups) that the agent mounts read-only at KEYS_MOUNT. A file below /dir
named after a LUKS volume of the description, by its id as `resurgo show` lists it
(luks.md127) or by its LUKS UUID, with or without ".key", or as the saved crypttab names
its key file (the stick the system itself unlocks with at boot: crypttab's
``/dev/disk/by-label/KEYS:/root.key`` for passdev, or a path), becomes
`--key-file ID=PATH` for recover or plan. A file named AGE_IDENTITY there (the age
identity, secret key, of encrypted sets) becomes `--identity PATH`. Only the path travels:
the secret stays off the kernel command line, argv and the logs. A --key-file given in
resurgo.args for a volume wins, and so does an --identity given there.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

#: The key medium's file holding the age identity of encrypted sets.
AGE_IDENTITY: Final = "age-identity"


@dataclass(frozen=True)
class Volume:
    id: str
    uuid: str
    # The name of its key file in the saved crypttab (a base name only), if it has one.
    crypttab_key: str | None = None


def file_names(volume: Volume) -> list[str]:
    """The names a key file of ``volume`` may have, in the order they are preferred."""
    names = [f"{volume.id}.key", volume.id, f"{volume.uuid}.key", volume.uuid]
    if volume.crypttab_key and volume.crypttab_key not in names:
        names.append(volume.crypttab_key)
    return names


# Key fields that name no file: a prompt, a random key, a device read whole.
_NO_FILE = ("none", "-", "")
_UUID = re.compile(r"""^UUID=(["']?)([0-9A-Fa-f-]+)\1$""")


def _key_name(field: str) -> str | None:
    """The base name of the key file a crypttab key field names, or None: a path
    (/etc/keys/root.key), passdev's DEVICE:PATH[:TIMEOUT]; a device (/dev/sdb, a
    random key) names none."""
    if field in _NO_FILE:
        return None
    device, colon, rest = field.partition(":")
    if colon:
        # passdev: the device, the path on its filesystem, maybe a timeout.
        path = rest.split(":", 1)[0]
    elif device.startswith("/dev/"):
        return None
    else:
        path = device
    name = posixpath.basename(path)
    if name in ("", ".", "..") or len(name) > 255:
        return None
    return name


def crypttab_keys(text: str) -> dict[str, str]:
    """Key file base names by what a crypttab line names its volume by: its mapping name,
    and its LUKS UUID (lower case) when the source is UUID=. The text is the saved
    system's: only a base name comes out, and it is used only when a file of that name
    is on the key medium."""
    out: dict[str, str] = {}
    for line in text[: 1 << 20].splitlines():
        fields = line.split()
        if len(fields) < 3 or fields[0].startswith("#"):
            continue
        name = _key_name(fields[2])
        if name is None:
            continue
        out.setdefault(fields[0], name)
        m = _UUID.match(fields[1])
        if m:
            out.setdefault(m.group(2).lower(), name)
    return out


def crypttab_key(keys: Mapping[str, str], name: str | None, uuid: str) -> str | None:
    """The saved crypttab's key file of a volume, by its mapping name or its UUID."""
    return (keys.get(name) if name else None) or keys.get(uuid.lower())


def _values(args: Sequence[str], option: str) -> list[str]:
    """The values ``args`` give ``option`` (``--opt VALUE`` and ``--opt=VALUE``)."""
    out = []
    for i, word in enumerate(args):
        if word == option and i + 1 < len(args):
            out.append(args[i + 1])
        elif word.startswith(option + "="):
            out.append(word.removeprefix(option + "="))
    return out


def given(args: Sequence[str]) -> set[str]:
    """The volumes ``args`` already give a key for (--key-file ID=FILE, --key-file=ID=FILE)."""
    out = set()
    for value in _values(args, "--key-file"):
        volume, sep, _path = value.partition("=")
        if sep:
            out.add(volume)
    return out


def identity_args(names: Iterable[str], directory: Path,
                  args: Sequence[str]) -> tuple[list[str], list[str]]:
    """(--identity for the key medium's AGE_IDENTITY, unless ``args`` give one; what to
    say about it). Nothing without that file: an unencrypted set needs none, and recover
    says so of an encrypted one."""
    if _values(args, "--identity"):
        return [], ["age identity: given in resurgo.args"]
    if AGE_IDENTITY not in set(names):
        return [], []
    path = directory / AGE_IDENTITY
    return ["--identity", str(path)], [f"age identity: {path}"]


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
