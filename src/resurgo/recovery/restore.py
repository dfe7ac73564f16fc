"""The description's commands, run in order once the layout is recreated and mounted.

``resurgo:restore ID [MOUNTPOINT]`` restores a unit's tree (see units.py) from the archives
of its chain into the recreated filesystem, through a private view (trees.py); a read-only
btrfs subvolume is made writable for the time of its restore. Any other program runs as
given, with RESURGO_ROOT naming the recovery root. A failing command stops the recovery
(``on_failure = "abort"``) or is reported and passed (``"continue"``); every command's
result is reported, those never reached as not run.

The restore checks every file's content as it writes it (the sha256 of what was written
against the one the archive carries, which the reader compared with the manifest's), so
no second read of the data is needed afterwards; damage stops the command with the
archive and the files named.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from resurgo import run
from resurgo.engine import ArchiveError, restore_tree
from resurgo.engine.source import manifest_totals
from resurgo.errors import ExitCode, ResurgoError, failure_code
from resurgo.model import Command, OnFailure
from resurgo.pool.extract import Extracted, Extraction
from resurgo.progress import Amount
from resurgo.recovery.events import OnEvent, Step, advancing, ignore
from resurgo.recovery.load import LoadedSet
from resurgo.recovery.trees import Tree, unit_tree
from resurgo.restoreunits import BUILTIN_PREFIX, Unit, is_restore


class Status(StrEnum):
    DONE = "done"
    FAILED = "failed"
    NOT_RUN = "not-run"


@dataclass(frozen=True)
class CommandResult:
    seq: int
    program: str
    args: tuple[str, ...]
    on_failure: str
    status: Status
    description: str | None = None
    message: str = ""
    seconds: float = 0.0
    entries: int = 0
    files: int = 0
    data_bytes: int = 0
    archive_bytes: int = 0
    # Damage found while streaming: the archive and the files concerned.
    damaged: str | None = None
    damaged_paths: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    # The exit code of the error that failed it (damage 5, decryption 6, else 1).
    exit_code: int = 0

    @property
    def line(self) -> str:
        return " ".join((self.program, *self.args))


@dataclass
class RestoreOutcome:
    results: list[CommandResult] = field(default_factory=list)
    # The command that stopped the recovery.
    aborted_at: int | None = None

    @property
    def ok(self) -> bool:
        """No command failed that the recovery needs (on_failure = "continue" says one
        may fail: it is reported, and does not fail the recovery)."""
        return not any(r.status == Status.FAILED and r.on_failure != OnFailure.CONTINUE
                       for r in self.results)

    @property
    def exit_code(self) -> ExitCode:
        """OK, or that of the first command that failed the recovery: DAMAGED or
        DECRYPT_FAILED when its archive was the cause, else FAILED."""
        if self.ok:
            return ExitCode.OK
        return failure_code(r.exit_code for r in self.results
                            if r.status == Status.FAILED and r.on_failure != OnFailure.CONTINUE)

    def passed_failures(self) -> list[CommandResult]:
        return [r for r in self.results
                if r.status == Status.FAILED and r.on_failure == OnFailure.CONTINUE]

    def restored(self) -> set[int]:
        return {r.seq for r in self.results if r.status == Status.DONE}


Report = Callable[[CommandResult], None]


@contextlib.contextmanager
def _writable(loaded: LoadedSet, unit: Unit, tree: Tree) -> Iterator[None]:
    """Read-only subvolumes are recreated read-only; while a tree of their btrfs is restored
    they are writable: their own tree is written, and their root directory's metadata is
    set by the restore of the tree that holds it."""
    if tree.top is None:
        yield
        return
    readonly = [tree.top / sv.path.strip("/") for sv in loaded.description.subvolumes
                if sv.filesystem == unit.filesystem.id and sv.readonly]
    made: list[Path] = []
    try:
        for path in readonly:
            if path.is_dir():
                run.run(["btrfs", "property", "set", "-ts", str(path), "ro", "false"])
                made.append(path)
        yield
    finally:
        for path in reversed(made):
            run.run(["btrfs", "property", "set", "-ts", str(path), "ro", "true"])


def totals(loaded: LoadedSet, unit: Unit) -> Amount | None:
    """What the unit's manifest lists (entries, bytes of file content): the total of its
    restore's or verify's progress. None for a manifest that cannot be read: the restore
    or verify itself says why."""
    try:
        entries, nbytes = manifest_totals(loaded.manifest(unit), loaded.identity)
    except ResurgoError:
        return None
    return Amount(entries, nbytes)


class _Sum:
    """One tree's progress: the archive's restore's counts and the packages' extraction's,
    each told from its own thread, added."""

    def __init__(self, tally: Callable[[int, int], None]) -> None:
        self._tally = tally
        self._lock = threading.Lock()
        self._archive = (0, 0)
        self._packages = (0, 0)

    def archive(self, entries: int, nbytes: int) -> None:
        with self._lock:
            self._archive = (entries, nbytes)
            self._tell()

    def packages(self, files: int, nbytes: int) -> None:
        with self._lock:
            self._packages = (files, nbytes)
            self._tell()

    def _tell(self) -> None:
        self._tally(self._archive[0] + self._packages[0], self._archive[1] + self._packages[1])


def restore_unit(loaded: LoadedSet, unit: Unit, root: Path,
                 on_event: OnEvent = ignore) -> CommandResult:
    start = time.monotonic()
    c = unit.command
    pooled = loaded.pooled(unit)
    # The manifest is read once more for the totals only when someone listens; the files
    # the packages give count with the archive's.
    total = totals(loaded, unit) if on_event is not ignore else None
    if total is not None and loaded.pool and pooled:
        total = Amount(total.entries + len(pooled),
                       total.bytes + sum(f.size for f in pooled))
    tally = _Sum(advancing(on_event, Step.RESTORE, f"restoring {unit.label}", total))
    with unit_tree(unit, root, writable=True) as tree, _writable(loaded, unit, tree):
        extracted = Extracted()
        if not (loaded.pool and pooled):
            result = restore_tree(tree.path, loaded.manifest(unit), loaded.archives(unit),
                                  identity=loaded.identity, progress=tally.archive)
        else:
            # The package files are written beside the archive's entries, and are all there
            # before the archive's restore gives the directories their saved metadata. A
            # medium that is read one request at a time (SFTP) gives the packages first.
            job = Extraction(tree.path, pooled, loaded.pool, progress=tally.packages)
            try:
                if not loaded.pool.pool.local:
                    extracted = job.wait()

                def packages_done() -> None:
                    nonlocal extracted
                    extracted = job.wait()

                result = restore_tree(tree.path, loaded.manifest(unit), loaded.archives(unit),
                                      identity=loaded.identity, progress=tally.archive,
                                      before_dirs=packages_done)
            finally:
                job.stop()
    from_packages = f", {extracted.files} from packages" if extracted.files else ""
    return CommandResult(
        c.seq, c.program, c.args, str(c.on_failure), Status.DONE, c.description,
        f"{result.entries + extracted.files} entries, {result.files + extracted.files} "
        f"files{from_packages}",
        time.monotonic() - start, result.entries + extracted.files,
        result.files + extracted.files, result.data_bytes + extracted.data_bytes,
        sum(w.size for _, w in result.archives),
        warnings=(*result.warnings, *extracted.warnings),
    )


def _external(c: Command, root: Path) -> CommandResult:
    start = time.monotonic()
    run.run([c.program, *c.args], env={"RESURGO_ROOT": str(root)})
    return CommandResult(c.seq, c.program, c.args, str(c.on_failure), Status.DONE,
                         c.description, "", time.monotonic() - start)


def run_commands(loaded: LoadedSet, root: Path, report: Report | None = None,
                 on_event: OnEvent = ignore) -> RestoreOutcome:
    """Every command in order (see the module docstring); each result to ``report``, the
    progress of each tree restored to ``on_event``."""
    outcome = RestoreOutcome()
    by_seq = {u.command.seq: u for u in loaded.units}
    commands = list(loaded.description.commands)
    for n, c in enumerate(commands):
        start = time.monotonic()
        try:
            if is_restore(c):
                result = restore_unit(loaded, by_seq[c.seq], root, on_event)
            elif c.program.startswith(BUILTIN_PREFIX):
                raise ResurgoError(f"{c.program} is no step built into this resurgo")
            else:
                result = _external(c, root)
        except ResurgoError as e:
            damaged = e.archive if isinstance(e, ArchiveError) else None
            paths = e.paths if isinstance(e, ArchiveError) else ()
            result = CommandResult(c.seq, c.program, c.args, str(c.on_failure), Status.FAILED,
                                   c.description, str(e), time.monotonic() - start,
                                   damaged=damaged, damaged_paths=paths,
                                   exit_code=e.exit_code)
        outcome.results.append(result)
        if report is not None:
            report(result)
        if result.status == Status.FAILED and c.on_failure == OnFailure.ABORT:
            outcome.aborted_at = c.seq
            for rest in commands[n + 1:]:
                skipped = CommandResult(rest.seq, rest.program, rest.args, str(rest.on_failure),
                                        Status.NOT_RUN, rest.description)
                outcome.results.append(skipped)
                if report is not None:
                    report(skipped)
            break
    return outcome
