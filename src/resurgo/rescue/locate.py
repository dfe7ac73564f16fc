"""Finding the recovery set from inside the rescue system.

A set is a directory named by its set id holding ``set.json`` (see media.tree); a
medium is the directory above. On a local disk the rescue mounts each filesystem
read-only and looks a few levels down for such directories; a remote medium (SFTP, S3)
is listed through resurgo.media.

Which set, when several are found. Anyone who can write to a disk of the machine can put
a set there, so the choice rests on what the image itself holds:

- trusted signers (``--trust``, or the signing key of ``save --sign-key``): only sets they
  signed are candidates at all (the others are refused as they are listed); the newest
  one of the image's host wins;
- else the pin of the set the image was saved into (``save`` builds every image with
  the set's id and the digest of all its other files): that set, and no other;
- else (an image built by ``resurgo rescue`` with neither) the set whose description is
  the image's own (same digest), the newest such, failing that the newest of the same
  host, with a warning that a planted set cannot be told apart.

A set named on the kernel command line (resurgo.set=) narrows the choice to that set
and nothing else: it must still be signed by a trusted signer (when the image has any)
or match the image's pin (when it has one), and be found once.

A set on a disk that the saved layout names (the same serial or WWN: the plan would
overwrite it) is never taken. Sets of several other hosts and no way to tell: no guess,
the unattended run stops (it would erase disks), listing what it found.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

DESCRIPTION = "description.toml"
#: How deep below a filesystem's root sets are looked for (/resurgo/host1/<set id>).
MAX_DEPTH = 4
_SKIP_DIRS = frozenset({"lost+found", "proc", "sys", "dev", "run", "tmp"})


@dataclass(frozen=True)
class Candidate:
    medium: str  # the medium URL: a directory (on a mounted filesystem) or sftp://, s3://
    set_id: str
    created: datetime
    host: str | None
    description_digest: str | None  # from the set's index; None: it holds no description
    device: str | None = None  # the block device of a local medium
    # media.setindex.content_pin of its index, leaving the rescue image out.
    pin: str | None = None
    # The trusted principal that signed it (only signed sets are candidates then).
    signed_by: str | None = None

    @property
    def where(self) -> str:
        on = f" on {self.device}" if self.device else ""
        return f"{self.medium} set {self.set_id}{on}"


@dataclass(frozen=True)
class Embedded:
    """What the image knows of its own set."""

    digest: str | None  # of the image's description.toml, as a set index has it
    host: str | None
    # The set save built the image into: its id and content pin.
    set_id: str | None = None
    set_pin: str | None = None
    # The image carries trusted signers: every candidate was signed by one of them.
    signed: bool = False


@dataclass(frozen=True)
class Choice:
    candidate: Candidate | None  # None: only the embedded description
    reason: str


class NoChoice(Exception):
    """Nothing to recover from, or no way to tell which set."""


def find_set_dirs(root: Path, max_depth: int = MAX_DEPTH) -> list[tuple[Path, str]]:
    """(medium directory, set id) of every committed set at most max_depth levels below
    root. Hidden directories (a save in progress) are not entered."""
    # Here, not at the top: resurgo.media pulls in http and ssl, which a rescue booted
    # only for its shell never needs.
    from resurgo.media import setindex

    found: list[tuple[Path, str]] = []

    def walk(d: Path, depth: int) -> None:
        try:
            names = sorted(os.listdir(d))
        except OSError:
            return
        for name in names:
            if name.startswith(".") or name in _SKIP_DIRS:
                continue
            p = d / name
            if p.is_symlink() or not p.is_dir():
                continue
            if setindex.is_set_id(name) and (p / setindex.INDEX_NAME).is_file():
                found.append((d, name))
            elif depth < max_depth:
                walk(p, depth + 1)

    walk(root, 1)
    return found


def listing(cands: Iterable[Candidate]) -> str:
    return "; ".join(f"{c.where} (host {c.host or '?'})" for c in cands) or "none"


def choose(candidates: Sequence[Candidate], embedded: Embedded | None) -> Choice:
    """The set an unattended recovery uses (raises NoChoice with the reason)."""
    usable = [c for c in candidates if c.description_digest is not None]
    if embedded is not None and embedded.signed:
        return _choose_signed(usable, embedded)
    if embedded is not None and embedded.set_pin:
        own = [c for c in usable
               if c.set_id == embedded.set_id and c.pin == embedded.set_pin]
        if own:
            return Choice(own[0], "the set this image was saved into (its id and files "
                                  "match the image's pin)")
        raise NoChoice(
            f"the set this image was saved into ({embedded.set_id}) was not found, and the "
            "image trusts no signers to take another: found " + listing(candidates))
    if embedded is not None and embedded.digest:
        same = [c for c in usable if c.description_digest == embedded.digest]
        if same:
            best = _newest(same)
            return Choice(best, "its description is the one in this image")
    if embedded is not None and embedded.host:
        same_host = [c for c in usable if c.host == embedded.host]
        if same_host:
            best = _newest(same_host)
            return Choice(
                best,
                f"the newest set of host {embedded.host} (its description differs from the "
                "one in this image: the machine changed since the image was made)",
            )
    if embedded is not None and embedded.digest:
        others = sorted({c.host or "?" for c in usable})
        note = f" (found only sets of other hosts: {', '.join(others)})" if others else ""
        return Choice(None, "no set on the disks holds this image's description" + note)
    hosts = {c.host for c in usable}
    if len(hosts) == 1:
        return Choice(_newest(usable), "the newest set found (the only host)")
    if not usable:
        raise NoChoice("no recovery set was found, and this image holds no description")
    raise NoChoice(
        "recovery sets of several hosts were found ("
        + ", ".join(sorted(h or "?" for h in hosts))
        + ") and this image holds no description to tell which: pass resurgo.from="
    )


def choose_named(candidates: Sequence[Candidate], set_id: str, embedded: Embedded | None,
                 *, signed: bool) -> Choice:
    """The set resurgo.set= names (raises NoChoice unless it is found once and passes the
    image's checks). ``signed``: the image trusts signers (with or without a description
    of its own), so the set must carry a trusted signature."""
    named = [c for c in candidates if c.set_id == set_id and c.description_digest is not None]
    what = f"the set named on the kernel command line (resurgo.set={set_id})"
    if signed:
        named = [c for c in named if c.signed_by is not None]
    elif embedded is not None and embedded.set_pin:
        if set_id != embedded.set_id:
            raise NoChoice(f"{what} is not the set this image was saved into "
                           f"({embedded.set_id}), and the image trusts no signers to take "
                           "another")
        named = [c for c in named if c.pin == embedded.set_pin]
    elif embedded is not None and embedded.host:
        # An older image, neither signers nor a pin: choose() never takes a set of another
        # host for it, and a name on the command line must not make it do so either.
        named = [c for c in named if c.host == embedded.host]
        what += f" of host {embedded.host}"
    if not named:
        raise NoChoice(f"{what} was not found" + (" signed by a trusted key" if signed else "")
                       + ": found " + listing(candidates))
    if len(named) > 1:
        raise NoChoice(f"{what} was found more than once ({listing(named)}): name its "
                       "medium with resurgo.from=")
    (best,) = named
    if best.signed_by is not None:
        return Choice(best, f"{what}, signed by a trusted key ({best.signed_by})")
    if embedded is not None and embedded.set_pin:
        return Choice(best, f"{what}, the set this image was saved into (its id and files "
                            "match the image's pin)")
    return Choice(best, what)


def _choose_signed(usable: Sequence[Candidate], embedded: Embedded) -> Choice:
    if not usable and embedded.digest:
        return Choice(None, "no recovery set was found (the description in this image)")
    if embedded.set_pin:
        own = [c for c in usable
               if c.set_id == embedded.set_id and c.pin == embedded.set_pin]
        newer = [c for c in usable if c.host == embedded.host and own
                 and (c.created, c.set_id) > (own[0].created, own[0].set_id)]
        if own and not newer:
            return Choice(own[0], f"the set this image was saved into, signed by "
                                  f"{own[0].signed_by}")
    same_host = [c for c in usable if embedded.host is not None and c.host == embedded.host]
    if same_host:
        best = _newest(same_host)
        return Choice(best, f"the newest set of host {embedded.host} signed by a trusted key "
                            f"({best.signed_by})")
    hosts = {c.host for c in usable}
    if embedded.host is None and len(hosts) == 1:
        best = _newest(usable)
        return Choice(best, f"the newest set signed by a trusted key ({best.signed_by})")
    raise NoChoice("no recovery set of this image's host signed by a trusted key was found: "
                   "found " + listing(usable))


def numbered(cands: Sequence[Candidate]) -> list[str]:
    """The lines a person picks a set from (resurgo.recover=ask), newest first."""
    return [f"{n}) {c.set_id}  host {c.host or '?'}  "
            + (f"signed by {c.signed_by}" if c.signed_by else "not signed")
            + f"  {c.where}" for n, c in enumerate(cands, 1)]


def picked(cands: Sequence[Candidate], answer: str) -> Candidate | None:
    """The set a person's answer names (its number or its id); None for anything else."""
    answer = answer.strip()
    if answer.isdigit() and 1 <= int(answer) <= len(cands):
        return cands[int(answer) - 1]
    return next((c for c in cands if c.set_id == answer), None)


def by_age(cands: Iterable[Candidate]) -> list[Candidate]:
    """Newest first."""
    return sorted(cands, key=lambda c: (c.created, c.set_id), reverse=True)


def _newest(cands: Iterable[Candidate]) -> Candidate:
    return max(cands, key=lambda c: (c.created, c.set_id))
