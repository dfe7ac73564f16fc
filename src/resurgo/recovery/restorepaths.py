"""restore --path: chosen files and trees of a set, into a directory, with all their metadata.

Each path chosen (a path of the saved system, see systempaths) is restored at that path
below the target directory (``/etc/hostname`` into ``DIR/etc/hostname``), a directory
with everything below it, including the filesystems that were mounted inside it. The
directories on the way are made with their saved metadata (owner, mode, xattrs, ACLs,
times), the target directory itself is left as it is (unless ``/`` is chosen).

The engine does the work (engine.restore_tree with a selection): every entry is checked
against its manifest line and its content against its digest as it is written, hard links
among what is restored are made again, sparse files keep their holes. Afterwards every
entry restored is compared again with its manifest line (content digest and metadata, as
verify does): the report counts the entries, files, bytes and differences.

Nothing is written before everything is checked: every path is in the set; no symlink
nor file stands in the target where a directory is to be restored (never followed, and
refused: a symlink in the target could lead a write out of it); and nothing stands where
a file, link or device is to be restored, unless ``overwrite`` (then a file or symlink
there is replaced, never followed; a directory there is always refused).
Directories that exist already are restored into: what they hold and the set does not
stays.

A hard link whose group's first file is not chosen cannot be made to it: that first file
is restored too, the link made to it, and then it is removed again (with the directories
made for it alone), so the chosen link holds the content and keeps its other chosen
links.

In a package-aware set, the chosen files that the tree's pooled list holds (unchanged
package files, resurgo.pool) are written from their packages in the medium's pool, as a
recovery writes them (resurgo.pool.extract: only the member each file names, to the path
the set lists, through the same confinement, its sha256 checked before its metadata is
set), before the archives' entries; every package they need is read whole and its sha256
checked before anything is written, and they are compared again afterwards like the rest.

An archive is a stream (zstd, maybe age, no index): the restore decompresses each needed
archive from its start up to the last chosen entry it holds and stops there; archives of
units, and of sets of an incremental chain, that hold nothing chosen are not read at all.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from resurgo.engine import Mismatch
from resurgo.engine.manifest import Entry
from resurgo.engine.names import ROOT, components, escape, parent_of, walk_key
from resurgo.engine.records import DIR, FILE, HARDLINK
from resurgo.engine.restore import restore_tree
from resurgo.engine.source import ManifestStream
from resurgo.engine.targets import DIR_FLAGS
from resurgo.engine.verify import verify_entries
from resurgo.errors import BadInput, ExitCode, OperationFailed, PreconditionFailed
from resurgo.pool import needs as pool_needs
from resurgo.pool.extract import extract
from resurgo.pool.lists import PooledFile
from resurgo.progress import Amount
from resurgo.recovery.browse import decoded, shown
from resurgo.recovery.events import OnEvent, Step, advancing, ignore
from resurgo.recovery.load import LoadedSet
from resurgo.recovery.systempaths import Mounted, Selection, SystemTree, Wanted

# Refusals listed in one message before "and N more".
SHOWN = 10


@dataclass(frozen=True)
class RestorePathsOptions:
    paths: tuple[str, ...]  # normalised absolute paths of the saved system
    target: Path  # an existing directory
    overwrite: bool = False


@dataclass
class UnitPick:
    """What a restore takes from one unit's tree."""

    mounted: Mounted
    entries: list[Entry] = field(default_factory=list)  # chosen and parents, walk order
    chosen: set[bytes] = field(default_factory=set)
    # First files of hard-link groups that are not chosen, with a chosen link.
    carriers: set[bytes] = field(default_factory=set)
    # The chosen files its packages give back (their entries are in entries too).
    pooled: list[PooledFile] = field(default_factory=list)

    @property
    def wanted(self) -> set[bytes]:
        return {e.path for e in self.entries} | self.carriers

    def destination(self, rel: bytes) -> tuple[bytes, ...]:
        """The components of rel's place below the target directory."""
        return tuple(os.fsencode(p) for p in
                     self.mounted.system_path(rel).split("/") if p)


@dataclass(frozen=True)
class UnitRestored:
    unit: str
    mountpoint: str
    entries: int
    files: int
    data_bytes: int
    archives: tuple[str, ...]  # those read (up to the last entry chosen in each)
    warnings: tuple[str, ...]
    mismatches: tuple[Mismatch, ...]


@dataclass(frozen=True)
class RestorePathsReport:
    set_id: str
    medium: str
    target: Path
    paths: tuple[str, ...]
    units: tuple[UnitRestored, ...]
    seconds: float

    @property
    def mismatches(self) -> int:
        return sum(len(u.mismatches) for u in self.units)

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.FAILED if self.mismatches else ExitCode.OK

    def text(self) -> str:
        lines = []
        for u in self.units:
            lines.append(f"{u.mountpoint} ({u.unit}): {u.entries} entries, {u.files} files, "
                         f"{u.data_bytes} bytes of data, from {len(u.archives)} archive(s)")
            lines += [f"  warning: {w}" for w in u.warnings]
            lines += [f"  differs: {m}" for m in u.mismatches]
        entries = sum(u.entries for u in self.units)
        files = sum(u.files for u in self.units)
        data = sum(u.data_bytes for u in self.units)
        verdict = (f"{self.mismatches} difference(s) from the set" if self.mismatches
                   else "every entry checked against the set: identical")
        lines.append(f"restored {entries} entries ({files} files, {data} bytes) of set "
                     f"{self.set_id} into {self.target} in {self.seconds:.1f} s; {verdict}")
        return "".join(line + "\n" for line in lines)

    def data(self) -> dict[str, Any]:
        return {
            "set": self.set_id, "medium": self.medium, "target": str(self.target),
            "paths": [shown(p) for p in self.paths],
            "entries": sum(u.entries for u in self.units),
            "files": sum(u.files for u in self.units),
            "data_bytes": sum(u.data_bytes for u in self.units),
            "mismatches": self.mismatches,
            "seconds": round(self.seconds, 3),
            "units": [{
                "unit": u.unit, "mountpoint": u.mountpoint, "entries": u.entries,
                "files": u.files, "data_bytes": u.data_bytes,
                "archives": list(u.archives),
                "warnings": list(u.warnings),
                "mismatches": [{"path": m.path, "what": m.what, "expected": m.expected,
                                "actual": m.actual} for m in u.mismatches],
            } for u in self.units],
        }


def pick(loaded: LoadedSet, paths: tuple[str, ...]) -> list[UnitPick]:
    """What each unit gives to a restore of the paths; BadInput for a path not in the set.
    The entries chosen are held in memory (a few hundred bytes each)."""
    tree = SystemTree(loaded.units)
    selection = Selection(tree, paths)
    found: set[str] = set()
    picks: list[UnitPick] = []
    for m in selection.units():
        p = UnitPick(m)
        with ManifestStream(loaded.manifest(m.unit), loaded.identity) as ms:
            # Only the lines chosen are decoded whole: a file of a big tree is quick.
            for path, _, line in ms.raw_entries():
                wanted = selection.wants(m, path)
                if wanted is None:
                    continue
                e = decoded(line, loaded.manifest(m.unit).name)
                p.entries.append(e)
                if wanted == Wanted.CHOSEN:
                    p.chosen.add(e.path)
                    found.add(m.system_path(e.path))
        _pick_pooled(loaded, selection, p, found)
        p.carriers = {e.target for e in p.entries
                      if e.kind == HARDLINK and e.target not in p.chosen}
        if p.entries:
            picks.append(p)
    missing = [path for path in selection.paths if path not in found]
    if missing:
        raise BadInput(
            f"not in recovery set {loaded.id}: {', '.join(shown(p) for p in missing)}",
            "resurgo ls --from MEDIUM [--set ID] DIRECTORY lists what it holds")
    return picks


def _pick_pooled(loaded: LoadedSet, selection: Selection, p: UnitPick,
                 found: set[str]) -> None:
    """The chosen files of the unit's pooled list, merged into p.entries in walk order."""
    m = p.mounted
    if loaded.pool is None:
        return
    for f in loaded.pooled(m.unit):
        if selection.wants(m, f.path) != Wanted.CHOSEN:
            continue
        p.pooled.append(f)
        p.chosen.add(f.path)
        found.add(m.system_path(f.path))
    if p.pooled:
        p.entries = sorted([*p.entries, *(f.entry() for f in p.pooled)],
                           key=lambda e: walk_key(e.path))


def _check_packages(loaded: LoadedSet, picks: list[UnitPick]) -> None:
    """Every package the chosen pooled files need: in the pool, read whole, its sha256 the
    set's (Damaged naming each that is not), before anything is written."""
    if loaded.pool is None:
        return
    wanted = {f.package for p in picks for f in p.pooled}
    if not wanted:
        return
    packages = {k: v for k, v in loaded.pool.packages.items() if k in wanted}
    pool_needs.check(pool_needs.PoolNeeds(loaded.pool.pool, packages), read=True)


class _Places:
    """Looks at places below the target directory, never following a symlink: each
    directory is opened from its parent's descriptor with O_NOFOLLOW."""

    def __init__(self, top: int) -> None:
        self.top = top
        self.fds: list[tuple[bytes, int]] = []

    def dir(self, parts: tuple[bytes, ...]) -> int | None:
        """The open directory at parts; None when it is missing. OSError ELOOP/ENOTDIR
        when a symlink or a non-directory stands on the way."""
        keep = 0
        while (keep < min(len(self.fds), len(parts))
               and self.fds[keep][0] == parts[keep]):
            keep += 1
        while len(self.fds) > keep:
            os.close(self.fds.pop()[1])
        for part in parts[keep:]:
            parent = self.fds[-1][1] if self.fds else self.top
            try:
                self.fds.append((part, os.open(part, DIR_FLAGS, dir_fd=parent)))
            except FileNotFoundError:
                return None
        return self.fds[-1][1] if self.fds else self.top

    def close(self) -> None:
        while self.fds:
            os.close(self.fds.pop()[1])


def _shown_place(target: Path, parts: tuple[bytes, ...]) -> str:
    return escape(os.fsencode(str(target)).rstrip(b"/") + b"/" + b"/".join(parts))


def check_target(target: Path, picks: list[UnitPick], overwrite: bool) -> dict[int, set[bytes]]:
    """Refuse (PreconditionFailed, nothing written) what check_target's rules in the
    module docstring refuse. Returns, per pick, the directories below its unit's tree
    that the carriers need and that are missing now (removed again afterwards)."""
    top = os.open(target, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    places = _Places(top)
    unsafe: list[str] = []
    taken: list[str] = []
    made_for_carriers: dict[int, set[bytes]] = {}
    try:
        for n, p in enumerate(picks):
            for e in p.entries:
                where = p.destination(e.path)
                state = _state(places, where)
                if state == "unsafe":
                    unsafe.append(_shown_place(target, where))
                elif state is None or state == "missing":
                    continue
                elif e.kind == DIR:
                    if state != "dir":
                        unsafe.append(_shown_place(target, where))
                elif state == "dir" or not overwrite:
                    taken.append(_shown_place(target, where))
            missing: set[bytes] = set()
            restored = {e.path for e in p.entries}
            for c in sorted(p.carriers):
                where = p.destination(c)
                state = _state(places, where)
                if state == "unsafe":
                    unsafe.append(_shown_place(target, where))
                elif state != "missing" and state is not None:
                    taken.append(_shown_place(target, where) + " (the first file of a "
                                 "hard-link group chosen, needed for a moment)")
                d = parent_of(c)
                while d != ROOT and d not in restored and _state(
                        places, p.destination(d)) == "missing":
                    missing.add(d)
                    d = parent_of(d)
            made_for_carriers[n] = missing
    finally:
        places.close()
        os.close(top)
    if unsafe:
        raise PreconditionFailed(
            f"refusing to restore into {target}: a symbolic link or a file stands where a "
            f"directory is to be restored: {_listed(unsafe)}; nothing was written",
            "restore into an empty directory, or remove them (a symlink there could lead "
            "the restore out of the target)")
    if taken:
        raise PreconditionFailed(
            f"{target} holds already what is to be restored: {_listed(taken)}; nothing "
            "was written",
            "give --overwrite to replace them (files and symlinks; never a directory), or "
            "restore into an empty directory")
    return made_for_carriers


def _listed(items: list[str]) -> str:
    more = f" and {len(items) - SHOWN} more" if len(items) > SHOWN else ""
    return ", ".join(items[:SHOWN]) + more


def _state(places: _Places, where: tuple[bytes, ...]) -> str | None:
    """What stands at a place below the target: None (the target itself), "missing"
    (the place or a directory on its way), "dir", "other", or "unsafe" (a symlink or a
    file on the way)."""
    if not where:
        return None
    try:
        parent = places.dir(where[:-1])
        if parent is None:
            return "missing"
        st = os.stat(where[-1], dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return "missing"
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            return "unsafe"
        raise OperationFailed(f"cannot look into the target: {e.strerror}") from None
    return "dir" if stat.S_ISDIR(st.st_mode) else "other"


@contextlib.contextmanager
def _unit_target(target: Path, mountpoint: str) -> Iterator[str]:
    """A path that reaches the unit's place in the target (made when missing, mode 0700
    until its restore sets its metadata), through directories only, whatever stands
    there later: /proc/self/fd/N of its open descriptor."""
    top = os.open(target, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    fd = top
    try:
        for part in (os.fsencode(p) for p in mountpoint.split("/") if p):
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, 0o700, dir_fd=fd)
            try:
                child = os.open(part, DIR_FLAGS, dir_fd=fd)
            except OSError as e:
                raise PreconditionFailed(
                    f"refusing to restore under {target}{mountpoint}: {e.strerror} (a "
                    "symbolic link or a file stands on the way)") from None
            if fd != top:
                os.close(fd)
            fd = child
        yield f"/proc/self/fd/{fd}"
    finally:
        if fd != top:
            os.close(fd)
        os.close(top)


def _remove_carriers(unit_root: str, p: UnitPick, made: set[bytes]) -> None:
    """Unlink the carriers and the directories made for them alone; the directories they
    were in get their saved mtime back."""
    by_path = {e.path: e for e in p.entries}
    top = os.open(unit_root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    places = _Places(top)
    touched: set[bytes] = set()
    try:
        for c in sorted(p.carriers, key=components, reverse=True):
            parts = components(c)
            fd = places.dir(parts[:-1])
            if fd is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(parts[-1], dir_fd=fd)
                touched.add(parent_of(c))
        for d in sorted(made, key=components, reverse=True):
            parts = components(d)
            fd = places.dir(parts[:-1])
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.rmdir(parts[-1], dir_fd=fd)
                    touched.add(parent_of(d))
        for d in touched:
            e = by_path.get(d)
            if e is None:
                continue
            fd = places.dir(components(d))
            if fd is not None:
                os.utime(fd, ns=(os.fstat(fd).st_atime_ns, e.mtime_ns))
    finally:
        places.close()
        os.close(top)


def checked_entries(p: UnitPick) -> list[Entry]:
    """The entries as the restore must have made them: a hard link whose first file was
    not restored is the file itself (the first of its group chosen), and the other
    chosen links of its group are links to that one."""
    leaders: dict[bytes, bytes] = {}
    out = []
    for e in p.entries:
        if e.kind == HARDLINK and e.target in p.carriers:
            leader = leaders.setdefault(e.target, e.path)
            e = (e._replace(kind=FILE, target=b"") if leader == e.path
                 else e._replace(target=leader))
        out.append(e)
    return out


def restore_paths(loaded: LoadedSet, medium: str, options: RestorePathsOptions,
                  say: Callable[[str], None] = lambda line: None,
                  on_event: OnEvent = ignore) -> RestorePathsReport:
    """Restore the chosen paths into options.target (see the module docstring); the
    progress of each tree's restore told to on_event (Advanced)."""
    start = time.monotonic()
    if not options.target.is_dir():
        raise BadInput(f"--to {options.target}: not a directory")
    picks = pick(loaded, options.paths)
    made_for_carriers = check_target(options.target, picks, options.overwrite)
    _check_packages(loaded, picks)
    done: list[UnitRestored] = []
    for n, p in enumerate(picks):
        m = p.mounted
        wanted = p.wanted
        say(f"restoring {len(p.entries)} entries of {m.unit.label} into "
            f"{options.target}{'' if m.mountpoint == '/' else m.mountpoint}")
        with _unit_target(options.target, m.mountpoint) as unit_root:
            total = Amount(len(p.entries), sum(e.size for e in p.entries if e.kind == FILE))
            tally = advancing(on_event, Step.RESTORE, f"restoring {m.unit.label}", total)
            warnings: list[str] = []
            if p.pooled:
                assert loaded.pool is not None
                # Before the archive's entries, which give the directories their metadata.
                warnings += extract(Path(unit_root), p.pooled, loaded.pool).warnings
            result = restore_tree(unit_root, loaded.manifest(m.unit), loaded.archives(m.unit),
                                  identity=loaded.identity, select=wanted.__contains__,
                                  progress=tally)
            if p.carriers:
                _remove_carriers(unit_root, p, made_for_carriers[n])
        done.append(UnitRestored(
            m.unit.key, m.mountpoint, len(p.entries),
            sum(1 for e in p.entries if e.kind in (FILE, HARDLINK)),
            sum(e.size for e in p.entries if e.kind == FILE),
            tuple(name for name, _ in result.archives), (*warnings, *result.warnings), ()))
    # Checked when every unit is restored: a unit restored later sets the metadata of
    # the directories on the way to those restored before it.
    checked: list[UnitRestored] = []
    for p, u in zip(picks, done, strict=True):
        with _unit_target(options.target, p.mounted.mountpoint) as unit_root:
            found = verify_entries(unit_root, checked_entries(p))
        checked.append(UnitRestored(u.unit, u.mountpoint, u.entries, u.files, u.data_bytes,
                                    u.archives, u.warnings, tuple(found)))
    return RestorePathsReport(loaded.id, medium, options.target, options.paths,
                              tuple(checked), time.monotonic() - start)
