"""Checking restored trees against their set's manifests: every entry, content and metadata.

Paths in the results are those of the restored system (the unit's mountpoint joined with
the path in its tree; a subvolume that is not mounted is named by its path in the
btrfs). What finalize changed on purpose (files it rewrote or created, and the directories
holding them, whose mtimes moved) is told apart from real differences: recover leaves the
list in its state directory, and verify reads it.
"""

from __future__ import annotations

import json
import posixpath
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from resurgo import private
from resurgo.apply.journal import state_dir
from resurgo.engine import Mismatch, verify_tree
from resurgo.errors import ExitCode, ResurgoError, failure_code
from resurgo.progress import Amount
from resurgo.recovery.events import OnEvent, Step, advancing, ignore
from resurgo.recovery.load import LoadedSet
from resurgo.recovery.restore import totals
from resurgo.recovery.trees import unit_tree
from resurgo.restoreunits import Unit

RECORD_PREFIX = "finalized-"
# What a recovery itself leaves in the recovered system's /var/log/resurgo: finalize's
# record, recover's report, the rescue's log (resurgo.reports.keep_in_target). Their
# directories' changes are explained by finalize's record, which is among them.
_OWN_LOGS = re.compile(r"^/var/log/resurgo/(recovery-[^/]*\.log|recover-[^/]*\.json|"
                       r"rescue-[^/]*\.log)$")
# What a new or rewritten file does to the directories above it (or a new one creates).
_PARENT_WHATS = frozenset({"mtime", "unexpected"})


@dataclass(frozen=True)
class UnitCheck:
    key: str
    label: str
    mountpoint: str | None
    # Differences not explained by finalize.
    mismatches: tuple[Mismatch, ...] = ()
    # Differences finalize made on purpose.
    expected: tuple[Mismatch, ...] = ()
    error: str | None = None
    seconds: float = 0.0
    # The exit code of the error that kept it from being checked (a damaged manifest: 5).
    exit_code: int = 0

    @property
    def ok(self) -> bool:
        return self.error is None and not self.mismatches


@dataclass(frozen=True)
class Changes:
    """The files finalize wrote or created in the restored system (its paths)."""

    files: frozenset[str] = frozenset()

    def explains(self, path: str, what: str) -> bool:
        if path in self.files or (what == "unexpected" and _OWN_LOGS.match(path)):
            return True
        prefix = path.rstrip("/") + "/"
        return what in _PARENT_WHATS and any(f.startswith(prefix) for f in self.files)


def finalize_changes(files: Iterable[str], log: str | None) -> Changes:
    """The files finalize wrote, and the record of the recovery it left (``log``)."""
    paths = [*files, *([log] if log else [])]
    return Changes(frozenset(posixpath.normpath("/" + f.lstrip("/")) for f in paths))


def record_path(set_id: str, directory: Path | None = None) -> Path:
    return (directory or state_dir()) / f"{RECORD_PREFIX}{set_id}.json"


def save_record(set_id: str, root: Path, changes: Changes) -> Path | None:
    """Where verify finds what finalize changed; None when the state dir is not writable."""
    path = record_path(set_id)
    data = {"set": set_id, "root": str(root.resolve()), "files": sorted(changes.files)}
    try:
        private.makedirs(path.parent)
        private.write_text(path, json.dumps(data, indent=2) + "\n")
    except OSError:
        return None
    return path


def load_record(set_id: str, root: Path) -> Changes:
    try:
        data = json.loads(record_path(set_id).read_text())
    except (OSError, ValueError):
        return Changes()
    if not isinstance(data, dict) or data.get("root") != str(root.resolve()):
        return Changes()
    files = data.get("files", [])
    return Changes(frozenset(str(f) for f in files if isinstance(f, str)))


def system_path(unit: Unit, rel: str) -> str:
    base = unit.mountpoint or ("/" + unit.path_in_top_level if unit.path_in_top_level else "/")
    if rel in (".", ""):
        return base
    return posixpath.join(base, rel)


def check_unit(loaded: LoadedSet, unit: Unit, root: Path, *, content: bool,
               changes: Changes | None = None, on_event: OnEvent = ignore,
               step: Step = Step.VERIFY) -> UnitCheck:
    changes = changes or Changes()
    start = time.monotonic()
    total = None
    if on_event is not ignore:
        # Metadata alone reads no content: only the entries count.
        total = totals(loaded, unit)
        if total is not None and not content:
            total = Amount(total.entries, 0)
    tally = advancing(on_event, step, f"checking {unit.label}", total)
    try:
        pooled = [f.entry() for f in loaded.pooled(unit)]
        with unit_tree(unit, root, writable=False) as tree:
            found = verify_tree(tree.path, loaded.manifest(unit), identity=loaded.identity,
                                content=content, progress=tally, extra=pooled)
    except ResurgoError as e:
        return UnitCheck(unit.key, unit.label, unit.mountpoint, error=str(e),
                         seconds=time.monotonic() - start, exit_code=e.exit_code)
    real: list[Mismatch] = []
    expected: list[Mismatch] = []
    for m in found:
        explained = unit.mountpoint is not None and changes.explains(
            system_path(unit, m.path), m.what)
        (expected if explained else real).append(m)
    return UnitCheck(unit.key, unit.label, unit.mountpoint, tuple(real), tuple(expected),
                     seconds=time.monotonic() - start)


@dataclass
class CheckOutcome:
    units: list[UnitCheck] = field(default_factory=list)
    content: bool = True
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(u.ok for u in self.units)

    @property
    def mismatches(self) -> int:
        return sum(len(u.mismatches) for u in self.units)

    @property
    def exit_code(self) -> ExitCode:
        """OK, or what kept a tree from being checked (damage, decryption) before the
        differences found (FAILED)."""
        if self.ok:
            return ExitCode.OK
        return failure_code(u.exit_code for u in self.units if u.error is not None)


def check_units(loaded: LoadedSet, root: Path, *, content: bool,
                only: Callable[[Unit], bool] = lambda u: True,
                changes: Changes | None = None,
                report: Callable[[UnitCheck], None] | None = None,
                on_event: OnEvent = ignore, step: Step = Step.VERIFY) -> CheckOutcome:
    start = time.monotonic()
    if changes is None:
        changes = load_record(loaded.id, root)
    outcome = CheckOutcome(content=content)
    for unit in loaded.units:
        if not only(unit):
            continue
        result = check_unit(loaded, unit, root, content=content, changes=changes,
                            on_event=on_event, step=step)
        outcome.units.append(result)
        if report is not None:
            report(result)
    outcome.seconds = time.monotonic() - start
    return outcome
