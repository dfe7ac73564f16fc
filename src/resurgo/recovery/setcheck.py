"""check: recovery sets on their medium checked without restoring anything.

For each set checked: its index readable (and, with trusted signers, its signature good);
every file it lists present with its recorded size; its description there, valid and of
the digest recorded beside it, and an archive and a manifest for each tree it restores;
every set of its incremental chain present and good in turn. With ``read_data``, every
file is read to its end and its size and BLAKE3 digest compared with the index. A set
saved without its rescue image is flagged (it is no damage: the set restores from any
rescue image). The result is recorded for `status` (recovery.results), one file per host.

The default set is the newest of ``host`` (this machine) when the medium holds any of
it, else the newest when the medium holds one host's sets.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from resurgo.errors import BadInput, Damaged, ExitCode, NotAuthentic, OperationFailed
from resurgo.media import Medium, SetReader
from resurgo.media.setindex import is_set_id
from resurgo.pool import needs as pool_needs
from resurgo.progress import Amount
from resurgo.recovery import results, setfiles
from resurgo.recovery.events import OnEvent, Step, advancing, ignore
from resurgo.recovery.load import checked_description, choose_set
from resurgo.restoreunits import units
from resurgo.units import human


class SetStatus(StrEnum):
    GOOD = "good"
    DAMAGED = "damaged"
    NOT_AUTHENTIC = "not authentic"


_CHUNK = 1 << 20

@dataclass(frozen=True)
class CheckOptions:
    # The set to check (--set); None: the newest (see the module docstring).
    set_id: str | None = None
    # Every set on the medium (--all).
    all: bool = False
    # Read every file and compare its digest (--read-data).
    read_data: bool = False
    # This machine's host name: whose newest set is checked by default.
    host: str | None = None
    # Where the result is recorded (default: the state directory), and whether it is.
    state_dir: Path | None = None
    record: bool = True


@dataclass(frozen=True)
class SetChecked:
    id: str
    host: str | None
    kind: str
    parent: str | None
    status: SetStatus
    # What is wrong, one line each, naming the file (or the set it builds on).
    problems: tuple[str, ...] = ()
    # The set holds its rescue image.
    rescue_image: bool = True
    # The sets it builds on, its parent first.
    chain: tuple[str, ...] = ()
    files: int = 0
    size: int = 0
    signed_by: str | None = None
    # When it was saved (None: its index could not be read).
    created: datetime | None = None

    @property
    def order(self) -> tuple[datetime, str]:
        """Sets in the order they were saved (ids of one second do not sort so)."""
        if self.created is not None:
            return (self.created, self.id)
        # An index that could not be read: the time its id was made at.
        try:
            return (datetime.strptime(self.id[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC),
                    self.id)
        except ValueError:
            return (datetime.min.replace(tzinfo=UTC), self.id)

    @property
    def ok(self) -> bool:
        return self.status is SetStatus.GOOD

    def data(self) -> dict[str, Any]:
        return {"id": self.id, "host": self.host, "kind": self.kind, "parent": self.parent,
                "status": str(self.status), "ok": self.ok, "problems": list(self.problems),
                "rescue": self.rescue_image, "chain": list(self.chain),
                "files": self.files, "size": self.size, "signed_by": self.signed_by}


@dataclass(frozen=True)
class CheckReport:
    medium: str
    read_data: bool
    sets: tuple[SetChecked, ...]
    seconds: float
    # Where the results were recorded for status.
    recorded: tuple[Path, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def exit_code(self) -> ExitCode:
        """4 when a set is not authentic, else 5 when one is damaged or incomplete."""
        if any(s.status is SetStatus.NOT_AUTHENTIC for s in self.sets):
            return ExitCode.NOT_AUTHENTIC
        if any(s.status is SetStatus.DAMAGED for s in self.sets):
            return ExitCode.DAMAGED
        return ExitCode.OK

    def text(self) -> str:
        lines: list[str] = []
        for s in self.sets:
            what = f"{s.kind}" + (f" on {s.parent}" if s.parent else "")
            signed = f", signed by {s.signed_by}" if s.signed_by else ""
            lines.append(f"set {s.id} ({what}, host {s.host or '?'}, {s.files} files, "
                         f"{human(s.size)}{signed}): {s.status}")
            lines += [f"  {p}" for p in s.problems]
            if not s.rescue_image:
                lines.append("  flagged: saved without its rescue image")
        bad = [s for s in self.sets if not s.ok]
        how = "every file read and its digest compared" if self.read_data else \
            "every file present with its size (--read-data reads them)"
        verdict = "all good" if not bad else f"{len(bad)} not good"
        lines.append(f"checked {len(self.sets)} set(s) on {self.medium} in "
                     f"{self.seconds:.1f} s ({how}): {verdict}")
        return "\n".join(lines) + "\n"

    def data(self) -> dict[str, Any]:
        return {"medium": self.medium, "read_data": self.read_data, "ok": not self.exit_code,
                "exit_code": int(self.exit_code), "sets": [s.data() for s in self.sets],
                "seconds": round(self.seconds, 3),
                "recorded": [str(p) for p in self.recorded],
                "warnings": list(self.warnings)}


@dataclass
class _Checker:
    medium: Medium
    read_data: bool
    say: Callable[[str], None]
    done: dict[str, SetChecked] = field(default_factory=dict)
    on_event: OnEvent = ignore

    def by_id(self, set_id: str, *, as_parent_of: str | None = None) -> SetChecked:
        found = self.done.get(set_id)
        if found is not None:
            return found
        try:
            reader = self.medium.open_set(set_id)
        except NotAuthentic as e:
            found = SetChecked(set_id, None, "?", None, SetStatus.NOT_AUTHENTIC, (e.message,))
        except Damaged as e:
            found = SetChecked(set_id, None, "?", None, SetStatus.DAMAGED, (e.message,))
        except OperationFailed as e:
            if as_parent_of is None:
                raise
            found = SetChecked(set_id, None, "?", None, SetStatus.DAMAGED, (e.message,))
        else:
            found = self.reader(reader)
        self.done[set_id] = found
        return found

    def reader(self, reader: SetReader) -> SetChecked:
        info = reader.info
        self.say(f"checking set {info.id} ({info.file_count} files, {human(info.size)})")
        # Taken before the chain is walked: a chain that loops ends here.
        self.done[info.id] = SetChecked(info.id, info.host, str(info.kind), info.parent,
                                        SetStatus.DAMAGED, ("builds on itself",))
        problems = reader.problems()
        if self.read_data:
            problems += self._read(reader, _named(problems))
        # A file named already is not named again.
        problems += self._structure(reader, _named(problems))
        chain: list[str] = []
        not_authentic = False
        parent = info.parent
        if parent is not None:
            checked = self.by_id(parent, as_parent_of=info.id)
            chain = [parent, *checked.chain]
            if checked.status is SetStatus.NOT_AUTHENTIC:
                not_authentic = True
            if not checked.ok:
                problems.append(f"it builds on set {parent}, which is {checked.status}"
                                + (f": {checked.problems[0]}" if checked.problems else ""))
        status = SetStatus.GOOD
        if not_authentic:
            status = SetStatus.NOT_AUTHENTIC
        elif problems:
            status = SetStatus.DAMAGED
        return SetChecked(info.id, info.host, str(info.kind), info.parent, status,
                          tuple(problems), info.has_rescue,
                          tuple(chain), info.file_count, info.size, info.signed_by,
                          info.created)

    def _structure(self, reader: SetReader, missing: set[str]) -> list[str]:
        """The description whole and valid, an archive and a manifest for each of its
        trees."""
        index = reader.index
        name = setfiles.DESCRIPTION
        if index.file(name) is None:
            return [f"{name} is missing: the set holds no description"]
        if name in missing or setfiles.DESCRIPTION_DIGEST in missing:
            return []  # named already
        try:
            desc = checked_description(reader)[0]
        except Damaged as e:
            return [_damage(e)]
        except OperationFailed as e:
            return [f"{name}: {e.message}"]
        out: list[str] = []
        try:
            found = units(desc)
        except BadInput as e:
            return [f"{name}: {e.message}"]
        for u in found:
            for file_name in (u.manifest_name, u.archive_name):
                if index.file(file_name) is None:
                    out.append(f"{file_name} is missing: the set does not list it, and "
                               f"{u.label} is restored from it")
        # A package-aware set: every package it needs in the medium's pool, with its
        # size, and with read_data its sha256.
        try:
            needs = pool_needs.needs_of(self.medium, reader)
            if needs is not None:
                pool_needs.check(needs, read=self.read_data)
        except Damaged as e:
            out.append(e.message)
        return out

    def _read(self, reader: SetReader, missing: set[str]) -> list[str]:
        out: list[str] = []
        info = reader.info
        tally = advancing(self.on_event, Step.VERIFY_SET, f"reading set {info.id}",
                          Amount(info.file_count, info.size))
        files = nbytes = 0
        for entry in reader.files():
            files += 1
            if entry.name in missing:
                continue
            try:
                # As read_through, told a chunk at a time: an archive may take hours.
                with reader.open(entry.name) as f:
                    while chunk := f.read(_CHUNK):
                        nbytes += len(chunk)
                        tally(files - 1, nbytes)
                tally(files, nbytes)
            except Damaged as e:
                out.append(_damage(e))
            except OperationFailed as e:
                out.append(f"{entry.name} cannot be read: {e.message}")
        return out


def _named(problems: Iterable[str]) -> set[str]:
    """The files these problems name (each problem begins with its file's name)."""
    return {p.split(" ", 1)[0] for p in problems}


def _damage(e: Damaged) -> str:
    """A damaged file, as FileReader says it ("NAME in WHERE is damaged: WHY"), without
    the set's place, which the report names once."""
    name, sep, why = e.message.partition(" in ")
    _, sep2, reason = why.partition(" is damaged: ")
    return f"{name} is damaged: {reason}" if sep and sep2 else e.message


def chosen(medium: Medium, options: CheckOptions) -> list[str]:
    """The ids of the sets to check."""
    if options.all:
        ids = [i for i in medium.backend.candidate_ids()
               if is_set_id(i) and medium.backend.read_index(i) is not None]
        if not ids:
            raise OperationFailed(f"there is no recovery set on {medium.url}")
        return ids
    if options.set_id is not None:
        return [options.set_id]
    if options.host is not None:
        mine = [s for s in medium.list_sets() if s.host == options.host]
        if mine:
            return [mine[-1].id]
    return [choose_set(medium, None).id]


def check_sets(medium: Medium, options: CheckOptions,
               say: Callable[[str], None] = lambda line: None,
               on_event: OnEvent = ignore) -> CheckReport:
    """Check the sets the options choose (see the module docstring) and record the
    result for status; with read_data, how far the reading is told to on_event."""
    started = time.monotonic()
    checker = _Checker(medium, options.read_data, say, on_event=on_event)
    ids = chosen(medium, options)
    checked = tuple(sorted((checker.by_id(i) for i in ids), key=lambda s: s.order))
    report = CheckReport(medium.url, options.read_data, checked, time.monotonic() - started)
    if options.record:
        try:
            recorded = tuple(record(report, checker.done.values(), options.state_dir))
        except OSError as e:
            return replace(report, warnings=(
                f"the result could not be recorded for status: {e.filename}: {e.strerror}",))
        report = replace(report, recorded=recorded)
    return report


def record(report: CheckReport, every: Iterable[SetChecked],
           directory: Path | None) -> list[Path]:
    """One result per host of the sets checked (their chains included), for status."""
    hosts: dict[str, list[SetChecked]] = {}
    for s in every:
        if s.host is not None:
            hosts.setdefault(s.host, []).append(s)
    detail = "every file's data read" if report.read_data else "every file's size"
    written = []
    for host, sets in sorted(hosts.items()):
        sets.sort(key=lambda s: s.order)
        written.append(results.write_result(results.Result(
            results.Verb.CHECK, host, results.now(), report.medium,
            all(s.ok for s in sets), tuple(results.SetResult(s.id, s.ok, s.problems)
                                           for s in sets), detail), directory))
    return written


__all__ = ["CheckOptions", "CheckReport", "SetChecked", "SetStatus", "check_sets"]
