"""The keys of the LUKS volumes a plan formats: from --key-file, or typed on the terminal.

A key stays in memory and reaches cryptsetup on its stdin only: never in argv, a log or
the journal. A key file is passed byte for byte (a trailing newline is part of the key,
as with `cryptsetup --key-file`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from resurgo.errors import BadInput, OperationFailed
from resurgo.plan.model import LuksFormatParams, LuksOpenParams, Plan

Ask = Callable[[str], str]


def read_key_file(path: str) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise BadInput(f"cannot read the key file {path}: {e.strerror}") from None
    if not data:
        raise BadInput(f"the key file {path} is empty")
    # Bytes that are not UTF-8 survive the trip through run.run's text stdin unchanged.
    return data.decode("utf-8", "surrogateescape")


def volumes(plan: Plan) -> dict[str, str]:
    """LUKS volume id -> the device it is made on, for every LUKS volume of the plan."""
    out: dict[str, str] = {}
    for a in plan.actions:
        if isinstance(a.params, LuksFormatParams | LuksOpenParams):
            out.setdefault(a.params.volume, a.params.device)
    return out


def gather(plan: Plan, key_files: Mapping[str, str], ask: Ask | None) -> dict[str, str]:
    """A key for each LUKS volume of the plan; a typed passphrase is asked for twice."""
    keys: dict[str, str] = {}
    for volume, device in sorted(volumes(plan).items()):
        if volume in key_files:
            keys[volume] = read_key_file(key_files[volume])
            continue
        if ask is None:
            raise OperationFailed(
                f"no key for the LUKS volume {volume} ({device}) and no terminal to ask on",
                f"give one with --key-file {volume}=FILE",
            )
        first = ask(f"passphrase for the new LUKS volume {volume} on {device}: ")
        if not first:
            raise BadInput(f"an empty passphrase for {volume}")
        if ask(f"the passphrase for {volume} again: ") != first:
            raise BadInput(f"the two passphrases for {volume} differ")
        keys[volume] = first
    return keys
