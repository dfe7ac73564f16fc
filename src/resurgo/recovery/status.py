"""status: is the newest recovery set of this host still good enough to recover from?

The newest set of the host (by its host name, as save names its sets) on the medium: its
age, kind, size and chain (the sets it builds on, each present on the medium), whether
it holds its rescue image; whether it is still current: the system at the root described
now by the same code save uses, its storage compared with the set's description
(resurgo.layoutdiff: a disk, partition, volume or filesystem added, removed or resized
makes the set stale); the last check's and the last rehearsal's results
(recovery.results). Nothing is written, but the metrics file the command line asks for.

Good (exit 0) is: a set, whole chain, current, no older than the maximum age when one is
given, and not found damaged by the last check of it. A set without its rescue image is
flagged, and still good: the set restores from any rescue image.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from resurgo.durations import format_duration
from resurgo.errors import ExitCode, OperationFailed
from resurgo.layoutdiff import Difference, compare_layouts
from resurgo.media import Medium, SetInfo
from resurgo.model import Description
from resurgo.pool import changes as package_changes
from resurgo.recovery import results
from resurgo.recovery.listing import set_data
from resurgo.recovery.load import checked_description
from resurgo.units import human

log = logging.getLogger("resurgo.recovery")

# Describes the live system (root, disks to leave out): probe.describe by default.
Describer = Callable[[Path, tuple[str, ...]], Description]


@dataclass(frozen=True)
class StatusOptions:
    # The system whose newest set is looked at (as describe and save take it).
    root: Path = Path("/")
    # Older than this (seconds) is not good.
    max_age: int | None = None
    # Disks left out of the description, as given to save (--exclude-disk).
    exclude_disks: tuple[str, ...] = ()
    # Where check and rehearse record their results (default: the state directory).
    state_dir: Path | None = None


@dataclass(frozen=True)
class StatusReport:
    host: str
    medium: str
    # When the status was taken (UTC).
    at: datetime
    set: SetInfo | None = None
    # The sets it builds on, its parent first.
    chain: tuple[str, ...] = ()
    # Why its chain is not whole (a parent missing), else None.
    broken_chain: str | None = None
    rescue_image: bool = False
    # The live layout against the set's; None when they could not be compared.
    differences: tuple[Difference, ...] | None = None
    # Why they could not be compared.
    not_compared: str | None = None
    max_age: int | None = None
    last_check: results.Result | None = None
    last_rehearsal: results.Result | None = None
    # Sets on the medium left out as not authentic (trusted signers given).
    refused: int = 0
    warnings: tuple[str, ...] = field(default=())
    # The set's package files that differed from their packages when it was saved.
    package_changes: package_changes.PackageChanges | None = None

    @property
    def age(self) -> float | None:
        return None if self.set is None else (self.at - self.set.created).total_seconds()

    @property
    def current(self) -> bool:
        return self.differences == ()

    @property
    def too_old(self) -> bool:
        age = self.age
        return self.max_age is not None and age is not None and age > self.max_age

    @property
    def check_failed(self) -> bool:
        """The last check found the newest set (or a set of its chain) not good."""
        if self.set is None or self.last_check is None:
            return False
        return any(not r.ok for i in (self.set.id, *self.chain)
                   if (r := self.last_check.about(i)) is not None)

    def problems(self) -> list[str]:
        """Why the status is not good, one line each; none when it is."""
        if self.set is None:
            refused = (f" ({self.refused} set(s) on it refused as not authentic)"
                       if self.refused else "")
            return [f"there is no recovery set of host {self.host} on {self.medium}{refused}"]
        out: list[str] = []
        if self.broken_chain:
            out.append(self.broken_chain)
        if self.not_compared:
            out.append(f"the layout could not be compared: {self.not_compared}")
        elif not self.current:
            assert self.differences is not None
            out.append(f"stale: the layout changed since the set was saved "
                       f"({len(self.differences)} difference(s))")
        if self.too_old:
            assert self.max_age is not None and self.age is not None
            out.append(f"too old: {format_duration(self.age)}, more than the "
                       f"{format_duration(self.max_age)} allowed (--max-age)")
        if self.check_failed:
            out.append("the last check found the set damaged")
        return out

    @property
    def ok(self) -> bool:
        return not self.problems()

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.OK if self.ok else ExitCode.FAILED

    # ------------------------------------------------------------ rendering

    def text(self) -> str:
        lines = [f"host:     {self.host} on {self.medium}"]
        s = self.set
        if s is None:
            lines.append("set:      none")
        else:
            assert self.age is not None
            kind = str(s.kind) + (f" on {s.parent}" if s.parent else "")
            lines += [
                f"set:      {s.id} ({kind}), saved {s.created:%Y-%m-%d %H:%M:%S} UTC, "
                f"{format_duration(self.age)} ago",
                f"size:     {human(s.size)} in {s.file_count} files",
                "chain:    " + (" <- ".join((s.id, *self.chain)) if self.chain else
                               "none (a full set)"),
                "rescue:   " + ("included" if self.rescue_image else
                               "MISSING: the set was saved without its rescue image"),
            ]
            if self.not_compared:
                lines.append(f"layout:   not compared: {self.not_compared}")
            elif self.current:
                lines.append("layout:   current (the disks, volumes and filesystems are "
                             "those the set describes)")
            else:
                assert self.differences is not None
                lines.append("layout:   STALE, changed since the set was saved:")
                lines += [f"  {d.text()}" for d in self.differences]
        pc = self.package_changes
        if pc is not None and pc.total:
            lines.append(f"packages: {pc.total} package file(s) differed from their packages "
                         "when the set was saved:")
            lines += [f"  {c.why}: {c.path} ({c.package})" for c in pc.listed[:20]]
            if pc.total > 20:
                lines.append(f"  ... and {pc.total - 20} more")
        lines.append("check:    " + _result_text(self.last_check, self.set))
        lines.append("rehearse: " + _result_text(self.last_rehearsal, self.set))
        problems = self.problems()
        lines.append("status:   " + ("good" if not problems else "NOT GOOD"))
        lines += [f"  {p}" for p in problems]
        return "\n".join(lines) + "\n"

    def data(self) -> dict[str, Any]:
        s = self.set
        return {
            "host": self.host,
            "medium": self.medium,
            "time": self.at.isoformat(),
            "set": None if s is None else {
                **set_data(s),
                "age_seconds": round(self.age or 0.0, 3),
                "chain": list(self.chain),
                "chain_whole": self.broken_chain is None,
            },
            "current": self.current,
            "differences": None if self.differences is None else
            [d.data() for d in self.differences],
            "not_compared": self.not_compared,
            "max_age_seconds": self.max_age,
            "too_old": self.too_old,
            "last_check": None if self.last_check is None else self.last_check.data(),
            "last_rehearsal": None if self.last_rehearsal is None else
            self.last_rehearsal.data(),
            "refused": self.refused,
            "package_changes": None if self.package_changes is None else {
                "total": self.package_changes.total,
                "listed": [{"path": c.path, "package": c.package, "why": c.why}
                           for c in self.package_changes.listed]},
            "ok": self.ok,
            "problems": self.problems(),
        }


def _result_text(result: results.Result | None, newest: SetInfo | None) -> str:
    if result is None:
        return "none recorded"
    when = f"{result.time:%Y-%m-%d %H:%M:%S} UTC"
    about = result.about(newest.id) if newest is not None else None
    if about is None:
        verdict = "good" if result.ok else "NOT GOOD"
        return f"{when}: {verdict} ({result.detail}), not of the newest set"
    if about.ok:
        return f"{when}: good ({result.detail})"
    return f"{when}: NOT GOOD ({result.detail}): " + "; ".join(about.problems[:3])


def host_name(root: Path) -> str:
    """The host the sets of the system at root are named by, as save names them."""
    from resurgo.probe.system import probe_system

    return probe_system(root).hostname or socket.gethostname()


def describe_live(root: Path, exclude_disks: tuple[str, ...]) -> Description:
    """The system at root, described by the code save uses (without the catalog)."""
    from resurgo.probe.describe import DescribeOptions, describe

    desc, warnings = describe(DescribeOptions(root=root.resolve(), exclude_disks=exclude_disks))
    for w in warnings:
        log.info("%s", w)
    return desc


def set_status(medium: Medium, options: StatusOptions, *, host: str | None = None,
               describer: Describer = describe_live,
               now: datetime | None = None) -> StatusReport:
    """The status of the newest set of the host (default: that of the system at the
    root) on medium; see the module docstring."""
    from resurgo.recovery.mediumdisk import medium_disks

    at = now or datetime.now(UTC)
    host = host or host_name(options.root)
    last_check = results.read_result(results.Verb.CHECK, host, options.state_dir)
    last_rehearsal = results.read_result(results.Verb.REHEARSE, host, options.state_dir)
    every = medium.list_sets()
    mine = [s for s in every if s.host == host]
    base = StatusReport(host, medium.url, at, max_age=options.max_age,
                        last_check=last_check, last_rehearsal=last_rehearsal,
                        refused=len(medium.refused))
    if not mine:
        return base
    newest = mine[-1]
    chain, broken = _chain(newest, {s.id: s for s in every}, medium.url)
    reader = medium.open_set(newest.id)
    differences: tuple[Difference, ...] | None = None
    not_compared = None
    try:
        saved = checked_description(reader)[0]
    except OperationFailed as e:
        not_compared = f"the set's description cannot be read: {e.message}"
    else:
        excluded = (*options.exclude_disks, *medium_disks(options.root, medium.url))
        differences = compare_layouts(saved, describer(options.root, excluded))
    changes = None
    if reader.index.file(package_changes.CHANGES_NAME) is not None:
        try:
            changes = package_changes.decode(reader.read_bytes(package_changes.CHANGES_NAME))
        except (OperationFailed, ValueError) as e:
            log.warning("the set's %s cannot be read: %s", package_changes.CHANGES_NAME, e)
    return StatusReport(host, medium.url, at, newest, chain, broken, newest.has_rescue,
                        differences, not_compared, options.max_age, last_check,
                        last_rehearsal, len(medium.refused), package_changes=changes)


def _chain(newest: SetInfo, sets: dict[str, SetInfo], url: str,
           ) -> tuple[tuple[str, ...], str | None]:
    """The ids of the sets newest builds on, parent first, and why the chain is not
    whole (None when it is)."""
    chain: list[str] = []
    current = newest
    while current.parent is not None:
        parent = current.parent
        if parent in chain or parent == newest.id:
            return tuple(chain), f"the chain of set {newest.id} builds on itself"
        chain.append(parent)
        found = sets.get(parent)
        if found is None:
            return tuple(chain), (f"broken chain: set {current.id} builds on set {parent}, "
                                  f"which is not on {url}")
        current = found
    return tuple(chain), None


__all__ = ["StatusOptions", "StatusReport", "host_name", "set_status"]
