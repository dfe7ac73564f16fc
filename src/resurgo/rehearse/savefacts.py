"""What save records in a set for a later rehearsal to check: the canary and the units
that were failed at the time (model.Rehearsal, in the set's description, signed with it).

The canary is a file of fresh random content written into the saved system just before
its archives are made: the recovered system must hold it with the digest recorded. It is
written only into the running system (a --root tree is someone else's to change, and
what failed there is not known), and only where the set will hold it: not below a path
the set leaves out, and on a filesystem the set saves.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from resurgo import run
from resurgo.apply import confine
from resurgo.errors import ResurgoError
from resurgo.fileformat.values import UNIT_NAME_MAX, absolute_path_problem
from resurgo.model import Canary, Rehearsal

# In the saved system. Not in the manifest cache below it (state_dir()/manifests), which
# every set leaves out.
CANARY_PATH = "/var/lib/resurgo/canary"
CANARY_BYTES = 64
# The failed units of a broken system: far fewer than this.
MAX_UNITS = 1024


@dataclass(frozen=True)
class Recorded:
    rehearsal: Rehearsal
    # What became of the canary, for the save's report.
    canary: str


def is_live(root: Path) -> bool:
    """Whether root is the running system's own root."""
    return os.path.realpath(root) == "/"


def systemd_running(run_dir: Path = Path("/run/systemd/system")) -> bool:
    """sd_booted(): systemd is the running init."""
    return run_dir.is_dir()


def parse_failed_units(text: str) -> tuple[str, ...]:
    """Unit names from `systemctl list-units --plain --no-legend` output: the first word
    of each line (after the "●" some versions put before a failed unit even then)."""
    out: list[str] = []
    for line in text.splitlines():
        words = line.split()
        if words and "." not in words[0] and len(words) > 1:
            words = words[1:]
        if words and len(words[0]) <= UNIT_NAME_MAX and words[0].isprintable():
            out.append(words[0])
    return tuple(dict.fromkeys(out))[:MAX_UNITS]


def failed_units(live: bool) -> tuple[str, ...] | None:
    """The units failed now; None when that cannot be known (not the running system, or
    systemd is not running it, or systemctl fails)."""
    if not live or not systemd_running():
        return None
    try:
        result = run.run(["systemctl", "list-units", "--state=failed", "--plain",
                          "--no-legend", "--no-pager"], check=False, timeout=60)
    except (ResurgoError, OSError, TimeoutError):
        return None
    if result.returncode != 0:
        return None
    return parse_failed_units(result.stdout)


def _below(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def canary_refusal(path: str, leftout: Iterable[str], mountpoints: Sequence[str]) -> str | None:
    """Why the set would not hold a file at path (a path left out or emptied, or on no
    filesystem it saves), or None."""
    for top in leftout:
        if _below(path, posixpath.normpath(top)):
            return f"{top} is left out of the set"
    if not any(_below(path, mp) for mp in mountpoints):
        return "no saved filesystem holds it"
    return None


def _holder(path: str, mountpoints: Sequence[str]) -> str:
    return max((mp for mp in mountpoints if _below(path, mp)), key=len)


def write_canary(root: Path, path: str, mountpoints: Sequence[str]) -> Canary | str:
    """A new canary at path in the system at root (0600, its directories made 0700 where
    missing, none followed if it is a symbolic link), replacing the last one; its record,
    or why none was written: it would land on another filesystem than the saved one that
    should hold it (something mounted in between that the set does not save)."""
    if absolute_path_problem(path) is not None:
        raise ValueError(f"{path!r}: not a normal absolute path")
    directory, name = posixpath.split(path)
    data = secrets.token_hex(CANARY_BYTES).encode() + b"\n"
    top = str(root)
    try:
        dir_fd = confine.open_dirs(top, confine.under_root(top, directory), 0o700)
    except (ResurgoError, OSError) as e:
        return f"cannot make {directory}: {e}"
    try:
        holder = os.stat(confine.under_root(top, _holder(path, mountpoints)))
        if os.fstat(dir_fd).st_dev != holder.st_dev:
            return f"{directory} is on a filesystem the set does not save"
        confine.replace_at(dir_fd, name, data, 0o600)
    except OSError as e:
        return f"cannot write {path}: {e.strerror}"
    finally:
        os.close(dir_fd)
    return Canary(path, hashlib.sha256(data).hexdigest())


def record(root: Path, leftout: Iterable[str], mountpoints: Sequence[str], *,
           live: bool, path: str = CANARY_PATH) -> Recorded:
    """The rehearsal facts of a save of the system at root, whose set leaves out leftout
    (system paths) and saves the filesystems mounted at mountpoints; the canary written
    only when live (root is the running system)."""
    units = failed_units(live)
    if not live:
        return Recorded(Rehearsal(None, units), "none: the saved tree is not the running "
                                                "system (--root)")
    why = canary_refusal(path, leftout, mountpoints)
    if why is not None:
        return Recorded(Rehearsal(None, units), f"none at {path}: {why}")
    canary = write_canary(root, path, mountpoints)
    if isinstance(canary, str):
        return Recorded(Rehearsal(None, units), f"none: {canary}")
    return Recorded(Rehearsal(canary, units), f"written at {path}")


__all__ = ["CANARY_PATH", "Recorded", "canary_refusal", "failed_units", "is_live",
           "parse_failed_units", "record", "write_canary"]
