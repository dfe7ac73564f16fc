"""save: the system described and its files archived into one recovery set on a medium.

In order: describe the system at the root (the catalog of package files beside it), then
for each ``resurgo:restore`` command of the description one archive and one manifest
streamed by the engine straight into the set's files (nothing is staged on local disk),
the description and its digest, the rescue image when asked for, and the commit that
makes the whole set visible at once. The pre-save and post-save hooks (recovery.hooks)
run just before and just after the archives are read. Before the archives, save writes
a canary file of fresh random content into the running system and records it, with the
units failed then, in the description, for a rehearsal to check (rehearse.savefacts). In
an encrypted set
the secret config files are sealed: the description (and the rescue image, which
carries it) keeps their records without content, and secrets.age holds the contents,
encrypted like the archives (recovery.secrets); an unencrypted set holds them in clear,
and save warns once. Killed at any point, the medium keeps the sets it had: the next save
removes the leftovers.

Left out of every set: the contents of /proc, /sys, /dev, /run and /tmp (the
directories themselves are kept), the paths given with --exclude, the recovery set
itself when the medium is a directory inside the saved tree, and this machine's copies
of the manifests. The disk a directory medium lives on (a USB disk mounted below the
saved tree) is left out of the description, unless it holds the system (mediumdisk.py).

Incremental sets build on the newest set of the same host on the medium: each unit's
archive holds only what changed since (see the engine), and its manifest the whole tree.
A plain (compressed, never encrypted) copy of each manifest is kept on the saved machine
(under the state directory) so that the next incremental save needs no secret key, even
when the sets are encrypted.
"""

from __future__ import annotations

import contextlib
import logging
import os
import posixpath
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from resurgo import fileformat, needs, signing
from resurgo.apply.journal import state_dir
from resurgo.engine import SYSTEM_EMPTY_DIRS, SaveResult, Source, save_filesystem, save_tree
from resurgo.engine.pipes import DEFAULT_LEVEL
from resurgo.engine.source import ManifestStream
from resurgo.errors import BadInput, OperationFailed, PreconditionFailed, ResurgoError
from resurgo.media import (
    Medium,
    Retention,
    SetInfo,
    SetKind,
    SetMeta,
    SetReader,
    SetWriter,
    prune,
)
from resurgo.media.url import DirectorySpec, SftpSpec, parse_url
from resurgo.model import ConfigFile, Description, MadeAtRecovery, Rehearsal
from resurgo.pool import changes as package_changes
from resurgo.pool import saving
from resurgo.pool.prune import prune_pool
from resurgo.pool.saving import PackagesMode, PackagesSaved
from resurgo.pool.store import PackagePool
from resurgo.probe.catalog import read_catalog
from resurgo.probe.describe import DescribeOptions, describe
from resurgo.probe.system import probe_system
from resurgo.progress import Amount, Tally
from resurgo.recovery import (
    hooks,
    initramfsout,
    lvmsnapshots,
    secrets,
    setfiles,
    snapshots,
    views,
)
from resurgo.recovery.events import (
    Advanced,
    OnEvent,
    Progress,
    Step,
    Steps,
    advancing,
    ignore,
)
from resurgo.recovery.initramfsout import InitramfsMode, LeftOut
from resurgo.recovery.load import file_source
from resurgo.recovery.mediumdisk import medium_disks
from resurgo.recovery.trees import btrfs_device
from resurgo.rehearse import savefacts
from resurgo.restoreunits import Unit, file_key, under, units
from resurgo.units import human

if TYPE_CHECKING:
    from resurgo.rescue import RescueOptions
    from resurgo.rescue.access import ImageAccess

log = logging.getLogger("resurgo.recovery")

CACHE = "manifests"
_INCOMPLETE = ".incomplete-"
CACHED_SETS = 2
_COPY = 1 << 20


@dataclass(frozen=True)
class RescueChoices:
    """How the rescue image save builds into the set boots, as `resurgo rescue` takes it
    (the configuration's [rescue] table): its own description, medium, set and signers
    are the set's whatever these say."""

    unattended: bool = False
    # What the unattended recovery does when done: poweroff, reboot or shell.
    after: str = "poweroff"
    kernel_args: tuple[str, ...] = ()
    menu_timeout: int = 5
    modules: tuple[str, ...] = ()
    programs: tuple[str, ...] = ()
    compression_level: int | None = None
    # How the image reaches a network medium (its endpoint, CA; credentials only when
    # embedded on request): rescue.access.
    access: ImageAccess | None = None
    # auto, required or off (rescue --secure-boot).
    secure_boot: str = "auto"


@dataclass(frozen=True)
class SaveOptions:
    root: Path = Path("/")
    incremental: bool = False
    recipients: tuple[str, ...] = ()
    # Paths of the saved system (as it sees them), left out with what is below them.
    excludes: tuple[str, ...] = ()
    # Disks left out of the description (and so of the set), e.g. the one it is saved to.
    exclude_disks: tuple[str, ...] = ()
    # Applied to this host's sets once the new set is committed (None: nothing is deleted).
    retention: Retention | None = None
    rescue: bool = True
    # A rescue image that cannot be built is an error: refused up front (exit 3) when
    # this machine lacks what the build needs, the save failed (exit 1) when the build does.
    require_rescue: bool = False
    catalog: bool = True
    level: int = DEFAULT_LEVEL
    # Where the plain copies of the manifests live (default: the state directory).
    cache_dir: Path | None = None
    # Signs the set's index; the rescue image then carries `trust` (default: this key).
    sign_key: signing.SignKey | None = None
    trust: signing.Trust | None = None
    image: RescueChoices = RescueChoices()
    # Commands (words) run just before the trees are read and just after (recovery.hooks).
    pre_save: tuple[str, ...] | None = None
    post_save: tuple[str, ...] | None = None
    # Read btrfs trees and filesystems on LVM from snapshots (recovery.snapshots).
    snapshot: snapshots.SnapshotMode = snapshots.SnapshotMode.AUTO
    # A classic LVM snapshot's room for changes, in percent of its volume.
    snapshot_size: int = lvmsnapshots.DEFAULT_SIZE_PERCENT
    # pool: unchanged package files come from the medium's package pool (resurgo.pool).
    packages: PackagesMode = PackagesMode.OFF
    # rebuild: the initramfs images are left out, made at recovery (initramfsout).
    initramfs: InitramfsMode = InitramfsMode.KEEP


@dataclass(frozen=True)
class UnitSaved:
    key: str
    label: str
    mountpoint: str | None
    entries: int
    stored: int
    data_bytes: int
    archive_bytes: int
    manifest_bytes: int
    seconds: float
    incremental: bool
    notes: tuple[str, ...] = ()
    # Files that changed while they were read, twice (their content may be torn): the
    # manifest lists them all; here their number and the first of them.
    changed: tuple[str, ...] = ()
    changed_count: int = 0
    # How the tree was read: from a read-only snapshot, or live (and why).
    read_from: str = ""
    # Files left out of the archive: the package pool gives them back.
    pooled: int = 0
    pooled_bytes: int = 0


@dataclass(frozen=True)
class SaveReport:
    set: SetInfo
    medium: str
    units: tuple[UnitSaved, ...]
    seconds: float
    describe_seconds: float
    warnings: tuple[str, ...] = ()
    excluded: tuple[str, ...] = ()
    emptied: tuple[str, ...] = ()
    pruned: tuple[str, ...] = ()
    rescue: str = ""  # what became of the rescue image
    canary: str = ""  # what became of the rehearsal's canary
    hooks: tuple[hooks.HookRun, ...] = ()
    # With --packages pool: what the pool gives and what this save added to it.
    packages: PackagesSaved | None = None
    # Package files that differ from their packages (with a dpkg catalog).
    package_changes: package_changes.PackageChanges | None = None
    # The initramfs images left out, made at recovery (--initramfs rebuild).
    initramfs: LeftOut | None = None

    @property
    def changed_count(self) -> int:
        return sum(u.changed_count for u in self.units)

    def text(self) -> str:
        s = self.set
        units = self.units
        kind = str(s.kind) + (f" (on {s.parent})" if s.parent else "")
        lines = [
            "",
            f"saved recovery set {s.id} on {self.medium}",
            f"  kind:    {kind}",
            f"  host:    {s.host}",
            f"  files:   {s.file_count} in the set, {human(s.size)}",
            f"  entries: {sum(u.entries for u in units)} in {len(units)} tree(s), "
            f"{sum(u.stored for u in units)} stored in this set, "
            f"{human(sum(u.data_bytes for u in units))} of file data",
            f"  rescue:  {self.rescue}",
            f"  canary:  {self.canary}",
            f"  changed: {self.changed_count} file(s) changed while read, their content "
            "may be torn" if self.changed_count else "  changed: no file changed while read",
            f"  time:    {self.seconds:.1f} s (describe {self.describe_seconds:.1f} s)",
        ]
        for h in self.hooks:
            lines.append(f"  hook:    {h.line()}")
        if self.initramfs is not None and self.initramfs.images:
            lines.append(f"  initramfs: {', '.join(self.initramfs.paths)} "
                         f"({human(self.initramfs.bytes)}) left out, made at recovery")
        pc = self.package_changes
        if pc is not None and pc.total:
            lines.append(f"  package files: {pc.total} differ from their packages "
                         "(changed or missing since installed; configuration files aside)")
            lines.extend(f"    {c.why}: {c.path} ({c.package})" for c in pc.listed[:10])
            if pc.total > 10:
                lines.append(f"    ... {pc.total - 10} more in {package_changes.CHANGES_NAME}")
        elif pc is not None:
            lines.append("  package files: every one is its package's")
        p = self.packages
        if p is not None:
            lines.append(f"  packages: {p.files} files ({human(p.file_bytes)}) from "
                         f"{p.packages} packages of the medium's pool, {p.added} added to it "
                         f"({human(p.added_bytes)})"
                         + (f", {p.twins_added} twins made ({human(p.twins_added_bytes)})"
                            if p.twins_added else ""))
            if p.missing:
                lines.append(f"  packages: {p.missing} package(s) not obtainable: their "
                             f"{p.missing_files} files archived")
            lines.extend(f"    {n}" for n in p.notes)
        for u in units:
            changed = f", {u.changed_count} changed while read" if u.changed_count else ""
            pooled = f", {u.pooled} from packages" if u.pooled else ""
            lines.append(f"    {u.label}: {u.entries} entries, {u.stored} stored, "
                         f"{human(u.archive_bytes)} archive, {u.seconds:.1f} s{changed}"
                         f"{pooled}")
            if u.read_from:
                lines.append(f"      read from: {u.read_from}")
            lines.extend(f"      changed: {path}" for path in u.changed)
        if self.pruned:
            lines.append(f"  pruned:  {', '.join(self.pruned)}")
        return "\n".join(lines) + "\n"

    def data(self) -> dict[str, Any]:
        s = self.set
        return {
            "set": {
                "id": s.id,
                "kind": str(s.kind),
                "parent": s.parent,
                "host": s.host,
                "created": s.created.isoformat(),
                "files": s.file_count,
                "bytes": s.size,
                "labels": dict(s.labels),
                "has_rescue": s.has_rescue,
            },
            "medium": self.medium,
            "units": [
                {
                    "id": u.key,
                    "what": u.label,
                    "mountpoint": u.mountpoint,
                    "entries": u.entries,
                    "stored": u.stored,
                    "data_bytes": u.data_bytes,
                    "archive_bytes": u.archive_bytes,
                    "manifest_bytes": u.manifest_bytes,
                    "incremental": u.incremental,
                    "seconds": round(u.seconds, 3),
                    "notes": list(u.notes),
                    "changed": list(u.changed),
                    "changed_count": u.changed_count,
                    "read_from": u.read_from,
                    "pooled": u.pooled,
                    "pooled_bytes": u.pooled_bytes,
                }
                for u in self.units
            ],
            "excluded": list(self.excluded),
            "emptied": list(self.emptied),
            "rescue": self.rescue,
            "canary": self.canary,
            "pruned": list(self.pruned),
            "changed_count": self.changed_count,
            "hooks": [h.data() for h in self.hooks],
            "packages": self.packages.data() if self.packages is not None else None,
            "initramfs": None if self.initramfs is None else {
                "left_out": list(self.initramfs.paths), "bytes": self.initramfs.bytes},
            "package_changes": None if self.package_changes is None else {
                "total": self.package_changes.total,
                "listed": [{"path": c.path, "package": c.package, "why": c.why}
                           for c in self.package_changes.listed]},
            "warnings": list(self.warnings),
            "seconds": round(self.seconds, 3),
        }



# ---------------------------------------------------------------- paths


def system_path(root: Path, host_path: str) -> str | None:
    """A path of the machine as the saved system (mounted at root) sees it; None outside."""
    real = os.path.realpath(host_path)
    top = os.path.realpath(root)
    if real == top:
        return "/"
    if not real.startswith(top.rstrip("/") + "/"):
        return None
    return "/" + real[len(top.rstrip("/")) + 1:]


def relative_to(mountpoint: str, path: str) -> str | None:
    """path below mountpoint, relative ("" for the mountpoint itself); None elsewhere."""
    mp = posixpath.normpath(mountpoint)
    p = posixpath.normpath(path)
    if p == mp:
        return ""
    prefix = mp.rstrip("/") + "/"
    return p[len(prefix):] if p.startswith(prefix) else None


@dataclass(frozen=True)
class Leaveouts:
    """The system paths left out (excludes) or saved empty (emptied)."""

    excludes: tuple[str, ...]
    emptied: tuple[str, ...]

    def for_unit(self, unit: Unit, tree: Path) -> tuple[list[str], list[str]]:
        """(excludes, emptied) relative to the unit's tree. A path that is the unit's
        mountpoint itself leaves out everything in it: the tree is saved empty (for an
        emptied one, its directories are kept, empty)."""
        excludes: list[str] = []
        emptied: list[str] = []
        if unit.mountpoint is None:
            return excludes, emptied
        for p in self.excludes:
            rel = relative_to(unit.mountpoint, p)
            if rel == "":
                excludes.extend(sorted(os.listdir(tree)))
            elif rel is not None:
                excludes.append(rel)
        for p in self.emptied:
            rel = relative_to(unit.mountpoint, p)
            if rel == "":
                for name in sorted(os.listdir(tree)):
                    entry = tree / name
                    is_dir = entry.is_dir() and not entry.is_symlink()
                    (emptied if is_dir else excludes).append(name)
            elif rel is not None:
                emptied.append(rel)
        return excludes, emptied


def leaveouts(root: Path, medium_url: str, excludes: tuple[str, ...],
              cache: Path) -> Leaveouts:
    out: list[str] = []
    for e in excludes:
        if not e.startswith("/"):
            raise BadInput(f"--exclude {e}: give an absolute path of the saved system")
        out.append(posixpath.normpath(e))
    spec = parse_url(medium_url)
    if isinstance(spec, DirectorySpec):
        inside = system_path(root, os.path.abspath(spec.path))
        if inside == "/":
            raise BadInput(f"the medium {medium_url} is the saved tree itself",
                           "save to a directory below it, or elsewhere")
        if inside is not None:
            out.append(inside)
    inside_cache = system_path(root, str(cache))
    if inside_cache is not None and inside_cache != "/":
        out.append(inside_cache)
    emptied = tuple("/" + os.fsdecode(d) for d in SYSTEM_EMPTY_DIRS)
    return Leaveouts(tuple(dict.fromkeys(out)), emptied)


# ---------------------------------------------------------------- the manifest cache


def _private_dir(path: Path) -> None:
    """path as a directory of mode 0700 whatever the umask, made if missing; never
    through a symbolic link (OSError then)."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fchmod(fd, 0o700)
    finally:
        os.close(fd)


def private_file(path: Path) -> BinaryIO:
    """A new file of mode 0600 whatever the umask (a manifest lists every file of the
    system with its owner and digest), never through a symbolic link."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    try:
        os.fchmod(fd, 0o600)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "wb")


class ManifestCache:
    """Plain copies of the manifests of the last sets saved from this machine: private
    (the directory and the ones made for it 0700, the files 0600), whatever the umask."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.usable = True

    def _make_directory(self) -> None:
        missing = []
        here = self.directory
        while not here.exists() and here != here.parent:
            missing.append(here)
            here = here.parent
        for path in reversed(missing):
            _private_dir(path)
        _private_dir(self.directory)  # made wider by an earlier resurgo: tightened

    def staging(self, set_id: str) -> Path | None:
        try:
            self._make_directory()
            for old in self.directory.glob(f"{_INCOMPLETE}*"):
                shutil.rmtree(old, ignore_errors=True)
            path = self.directory / f"{_INCOMPLETE}{set_id}"
            os.mkdir(path, 0o700)
            _private_dir(path)
            return path
        except OSError as e:
            log.warning("no local copy of the manifests (%s): %s", self.directory, e.strerror)
            self.usable = False
            return None

    def commit(self, set_id: str) -> None:
        staged = self.directory / f"{_INCOMPLETE}{set_id}"
        if not self.usable or not staged.is_dir():
            return
        with contextlib.suppress(OSError):
            os.rename(staged, self.directory / set_id)
            kept = sorted(p for p in self.directory.iterdir() if not p.name.startswith("."))
            for old in kept[:-CACHED_SETS]:
                shutil.rmtree(old, ignore_errors=True)

    def abort(self, set_id: str) -> None:
        shutil.rmtree(self.directory / f"{_INCOMPLETE}{set_id}", ignore_errors=True)

    def manifest(self, set_id: str, unit: Unit) -> Source | None:
        path = self.directory / set_id / f"{file_key(unit.key)}.manifest"
        return Source.file(path) if path.is_file() else None


# ---------------------------------------------------------------- the parent of an incremental


def find_parent(medium: Medium, host: str) -> SetReader:
    try:
        sets = [s for s in medium.list_sets() if s.host == host]
    except OperationFailed:
        if not isinstance(parse_url(medium.url), DirectorySpec) or os.path.exists(medium.url):
            raise
        sets = []  # a directory that does not exist yet holds no set
    if not sets:
        raise PreconditionFailed(
            f"there is no set of host {host} on {medium.url} for an incremental set to build on",
            "make a full one first (resurgo save without --incremental)",
        )
    reader = medium.open_set(sets[-1].id)
    reader.check()
    return reader


def previous_manifest(parent: SetReader, unit: Unit, cache: ManifestCache) -> Source | None:
    """The parent's manifest of this unit: the local plain copy, else the set's own."""
    cached = cache.manifest(parent.id, unit)
    if cached is not None:
        return cached
    if parent.index.file(unit.manifest_name) is None:
        return None  # a tree the parent did not have: saved in full
    if setfiles.encrypted(parent.info.labels):
        raise PreconditionFailed(
            f"the parent set {parent.id} is encrypted and this machine keeps no plain copy "
            f"of its manifest of {unit.label} (in {cache.directory})",
            "make a full set (without --incremental)",
        )
    return file_source(parent, unit.manifest_name)


def _check_previous(source: Source, parent: str) -> None:
    with ManifestStream(source, None) as ms:
        last = ms.header.chain[-1]
    if last != parent:
        raise OperationFailed(f"{source.name} is the manifest of set {last}, not of {parent}")


# ---------------------------------------------------------------- saving


def used(tree: Path) -> Amount | None:
    """What the filesystem holding tree uses (inodes, bytes): the estimate of a save of
    it, for its progress; None when statvfs cannot tell (no inode count: btrfs, vfat)."""
    try:
        st = os.statvfs(tree)
    except OSError:
        return None
    if not st.f_files:
        return None
    return Amount(st.f_files - st.f_ffree, (st.f_blocks - st.f_bfree) * st.f_frsize)


def _save_unit(unit: Unit, root: Path, w: SetWriter, cache_dir: Path | None,
               previous: Source | None, opts: SaveOptions, lo: Leaveouts,
               on_event: OnEvent = ignore,
               source: tuple[Path | None, str] = (None, ""),
               pool: saving.PoolSave | None = None) -> UnitSaved:
    """One unit's archive and manifest (and with the pool, its pooled list), its progress
    told as Advanced events."""
    start = time.monotonic()

    def progress(total: Amount | None) -> Tally:
        return advancing(on_event, Step.SAVE, f"saving {unit.label}", total)

    with contextlib.ExitStack() as stack:
        archive = stack.enter_context(w.create(unit.archive_name))
        manifest = stack.enter_context(w.create(unit.manifest_name))
        local = None
        if cache_dir is not None:
            local = stack.enter_context(private_file(cache_dir / f"{file_key(unit.key)}.manifest"))
        pooling = None
        output = None
        if pool is not None and unit.mountpoint is not None:
            output = saving.PooledOutput(w, unit.pooled_name, opts.recipients, opts.level)
            stack.callback(output.abort)
            pooling = saving.UnitPooling(pool, unit.mountpoint, output.writer)
        result: SaveResult
        if not unit.btrfs and source[0] is not None:
            # Read from its LVM snapshot, mounted privately (recovery.lvmsnapshots).
            excl, empty = lo.for_unit(unit, source[0])
            result = save_tree(
                source[0], archive, manifest, set_id=w.id, previous=previous,
                excludes=excl, empty_dirs=empty, recipients=opts.recipients,
                local_manifest=local, level=opts.level, progress=progress(used(source[0])))
        elif not unit.btrfs:
            assert unit.mountpoint is not None
            top = Path(os.path.realpath(under(root, unit.mountpoint)))
            views.require_mounted(top, unit.label)
            excl, empty = lo.for_unit(unit, top)
            result = save_filesystem(
                top, archive, manifest, set_id=w.id, previous=previous,
                excludes=[top / e for e in excl], empty_dirs=[top / e for e in empty],
                recipients=opts.recipients, local_manifest=local, level=opts.level,
                progress=progress(used(top)), pooling=pooling)
        else:
            device = btrfs_device(unit, root)
            top_view = stack.enter_context(views.btrfs_top_level(device, writable=False))
            live = top_view / unit.path_in_top_level if unit.path_in_top_level else top_view
            tree = live if source[0] is None else source[0]  # or a snapshot of it
            if not tree.is_dir():
                raise OperationFailed(f"there is no {unit.label} on {device}")
            excl, empty = lo.for_unit(unit, tree)
            if not unit.path_in_top_level:
                excl.append(snapshots.DIRECTORY)  # save's own, while it runs
            # statvfs of a subvolume tells the whole btrfs: no estimate of this tree.
            result = save_tree(
                tree, archive, manifest, set_id=w.id, previous=previous, excludes=excl,
                empty_dirs=empty, recipients=opts.recipients, local_manifest=local,
                level=opts.level, progress=progress(None),
                live=live if source[0] is not None else None, pooling=pooling)
        if output is not None:
            output.close()
    return UnitSaved(unit.key, unit.label, unit.mountpoint, result.entries, result.stored,
                     result.data_bytes, result.archive.size, result.manifest.size,
                     time.monotonic() - start, previous is not None, result.notes,
                     result.changed, result.changed_count, source[1], result.pooled,
                     result.pooled_bytes)


def _rescue_image(desc_path: Path, w: SetWriter, root: Path, medium_url: str,
                  events: Steps, signers: signing.Trust | None,
                  known_hosts: str | None, choices: RescueChoices) -> str:
    """Build the rescue image into the set, when this resurgo can; what became of it.

    It carries the description, knows where the set lives, and boots the saved system's
    own kernel (with its drivers); programs and Python come from the running system,
    which is the one running resurgo. It pins this set (its id and every other file of
    it, written by now) and carries the trusted signers, so that unattended it takes
    this set, or a newer one signed by them, and nothing planted.
    """
    try:
        from resurgo.rescue import build_rescue_image
    except ImportError:
        return "not included: this resurgo cannot build rescue images"
    with events.step(Step.RESCUE, "building the rescue image") as step, \
            tempfile.TemporaryDirectory(prefix="resurgo-rescue-") as tmp:
        iso = Path(tmp) / setfiles.RESCUE

        def phase(what: str) -> None:
            # Each phase a piece of its own: a meter shows its time going.
            events(Advanced(Step.RESCUE, f"building the rescue image: {what}", Amount()))

        report = build_rescue_image(iso, replace(
            image_options(choices),
            description=desc_path, from_url=medium_url, kernel_root=root,
            trusted_signers=signers.text if signers else None,
            known_hosts=known_hosts.encode() if known_hosts else None,
            set_id=w.id, set_pin=w.pin(setfiles.RESCUE)), phase)
        with open(iso, "rb") as src, w.create(setfiles.RESCUE) as dst:
            shutil.copyfileobj(src, dst, _COPY)
        step.end(True)
    return f"included ({report.size} bytes)"


def image_options(choices: RescueChoices) -> RescueOptions:
    """The RescueOptions of these choices (the set's own fields are save's to fill)."""
    from resurgo.rescue import After, RescueOptions
    from resurgo.rescue.secureboot import SecureBootMode

    return RescueOptions(
        secure_boot=SecureBootMode(choices.secure_boot),
        unattended=choices.unattended, after=After(choices.after),
        kernel_args=choices.kernel_args, menu_timeout=choices.menu_timeout,
        extra_modules=choices.modules, extra_programs=choices.programs,
        compression_level=choices.compression_level, access=choices.access)


def _write_description(desc: Description, w: SetWriter, tmp: Path,
                       recipients: tuple[str, ...], warnings: list[str]) -> Path:
    """Into the set, and into tmp (a file for the rescue image to carry).

    In an encrypted set the secret config files are sealed: the description (and so the
    rescue image) keeps their records without content, secrets.age holds the contents.
    """
    files: secrets.Sealed = {}
    if recipients:
        desc, files = secrets.seal(desc)
    else:
        _warn_clear(secrets.in_clear(desc), warnings)
    path = tmp / setfiles.DESCRIPTION
    digest = fileformat.write(desc, path)
    _check_written(path)
    w.write_bytes(setfiles.DESCRIPTION, path.read_bytes())
    w.write_bytes(setfiles.DESCRIPTION_DIGEST, f"{digest}  {setfiles.DESCRIPTION}\n".encode())
    if files:
        secrets.write(w, files, digest, recipients)
    return path


def _warn_clear(clear: list[ConfigFile], warnings: list[str]) -> None:
    """One warning for all the secret files an unencrypted set holds in clear."""
    if not clear:
        return
    shown = ", ".join(cf.path for cf in clear[:3]) + (
        f" and {len(clear) - 3} more" if len(clear) > 3 else "")
    warnings.append(
        f"the set holds secrets in clear: {len(clear)} configuration file(s) that the "
        f"system keeps private or that hold keys ({shown}) are readable by anyone who can "
        "read the set or its rescue image; save with --encrypt-to RECIPIENT to seal them")


def _check_written(path: Path) -> None:
    """The description as the recovery will read it must pass its checks now: a set whose
    description recover refuses would be found useless only on the day it is needed."""
    report = fileformat.check_file(path)
    if report.description is None:
        shown = report.messages()[:10]
        raise OperationFailed(
            "this system's description would be refused by recover, so no set was saved:\n"
            + "\n".join("  " + m.split(": ", 1)[-1] for m in shown),
            "a name or value resurgo cannot recreate safely (a control character in a "
            "label, a partition name or the host name, for one): change it on the system, "
            "or report it if the value is right",
        )


def _check_tools(medium: Medium, opts: SaveOptions) -> list[needs.Missing]:
    """Refuse the save (exit 3) when this machine lacks a program it will run, or, with
    require_rescue, anything the rescue image's build needs; else what that build lacks
    (the set is then saved without the image)."""
    missing = needs.programs(needs.save_programs(
        encrypt=bool(opts.recipients), sign=opts.sign_key is not None,
        sftp=isinstance(parse_url(medium.url), SftpSpec)))
    rescue = needs.rescue_missing(Path("/"), opts.root) if opts.rescue else []
    if missing or (rescue and opts.require_rescue):
        raise needs.refusal("this save", [*missing, *(rescue if opts.require_rescue else [])])
    return rescue


def _without_rescue(missing: list[needs.Missing]) -> str:
    shown = "; ".join(m.line() for m in missing)
    return (f"the set has no rescue image: this machine lacks what its build needs ({shown}); "
            "install them, or save with --require-rescue to make this an error")


@contextlib.contextmanager
def _timed() -> Iterator[list[float]]:
    box = [time.monotonic()]
    yield box
    box[0] = time.monotonic() - box[0]


def save_set(medium: Medium, opts: SaveOptions, on_event: OnEvent = ignore) -> SaveReport:
    """Save the system at opts.root into a new set on medium (see the module docstring),
    telling each step (describe, each tree saved, the rescue image) by events."""
    events = Steps(on_event)
    started = time.monotonic()
    root = opts.root
    if not root.is_dir():
        raise BadInput(f"--root {root}: not a directory")
    if not medium.holds_archives:
        raise BadInput(f"{medium.url} holds descriptions only, not the archives of a set",
                       "save to a directory, an SFTP server or an S3 bucket")
    # Before anything is written (and before the long describe): every program this save
    # will run, and what the rescue image's build needs.
    rescue_missing = _check_tools(medium, opts)
    if opts.pre_save is not None:
        hooks.check(opts.pre_save, "the pre-save hook")
    if opts.post_save is not None:
        hooks.check(opts.post_save, "the post-save hook")
    # Before the long describe: a key that cannot sign, or signers that would not trust
    # it, fail now.
    signers = signing.trust_for_save(opts.sign_key, opts.trust)
    if opts.packages == PackagesMode.POOL:
        if not opts.catalog:
            raise BadInput("--packages pool needs the catalog of package files",
                           "save without --no-catalog")
        PackagePool(medium)  # a medium that cannot hold one: refused now
    if opts.initramfs == InitramfsMode.REBUILD:
        initramfsout.generator(root)  # a system without one: refused now
    cache = ManifestCache(opts.cache_dir or state_dir() / CACHE)
    lo = leaveouts(root, medium.url, opts.excludes, cache.directory)
    # The host names the sets; known before the (maybe long) describe, so that an
    # incremental save with nothing to build on fails at once.
    host = probe_system(root).hostname or socket.gethostname()
    parent = find_parent(medium, host) if opts.incremental else None
    # The LVM snapshots a killed save left, before the system is described (they would be
    # described as volumes of the system).
    early: list[str] = []
    early.extend(f"removed {name}, an LVM snapshot left by an earlier save that was killed"
                 for name in lvmsnapshots.remove_leftovers(early))
    with tempfile.TemporaryDirectory(prefix="resurgo-save-") as tmp_name:
        tmp = Path(tmp_name)
        with _timed() as took, \
                events.step(Step.DESCRIBE, f"describing the system at {root}") as step:
            desc, warnings = describe(DescribeOptions(
                root=root.resolve(),
                exclude_disks=(*opts.exclude_disks, *medium_disks(root, medium.url)),
                catalog_dir=tmp if opts.catalog else None))
            step.end(True)
        warnings = [*early, *warnings]
        found = units(desc)
        left_out = None
        archived = lo
        if opts.initramfs == InitramfsMode.REBUILD:
            left_out = initramfsout.find(root)
            warnings.extend(left_out.notes)
            if left_out.images:
                archived = Leaveouts((*lo.excludes, *left_out.paths), lo.emptied)
                desc = replace(desc, made_at_recovery=MadeAtRecovery(left_out.images))
        # Just before the archives are made: the canary in the system and the set's
        # description, signed with the set.
        facts = savefacts.record(
            root, (*archived.excludes, *archived.emptied),
            [u.mountpoint for u in found if u.mountpoint is not None],
            live=savefacts.is_live(root))
        if facts.rehearsal != Rehearsal():
            desc = replace(desc, rehearsal=facts.rehearsal)
        meta = SetMeta(SetKind.INCREMENTAL if parent else SetKind.FULL,
                       parent.id if parent else None, host, setfiles.labels(opts.recipients))
        saved: list[UnitSaved] = []
        ran: list[hooks.HookRun] = []
        snapshots.refuse_unsnapshottable(found, root, opts.snapshot, opts.snapshot_size)

        def save_one(unit: Unit, source: tuple[Path | None, str]) -> UnitSaved:
            previous = None
            if parent is not None:
                previous = previous_manifest(parent, unit, cache)
                if previous is not None:
                    _check_previous(previous, parent.id)
            since = f" (changes since {parent.id})" if parent and previous else ""
            with events.step(Step.SAVE, f"saving {unit.label}{since}") as step:
                done = _save_unit(unit, root, w, staged, previous, opts, archived, events,
                                  source, pool)
                step.end(True)
            warnings.extend(f"{unit.label}: {n}" for n in done.notes)
            return done

        pool: saving.PoolSave | None = None
        changed: package_changes.PackageChanges | None = None
        with medium.begin_set(meta, sign_key=opts.sign_key) as w:
            staged = cache.staging(w.id)
            try:
                if opts.packages == PackagesMode.POOL:
                    # Under the set's lease: a prune leaves the pool alone meanwhile.
                    with events.step(Step.SAVE, "filling the package pool") as step:
                        pool = saving.prepare(
                            medium, root,
                            tmp / desc.catalog.path if desc.catalog is not None else None,
                            warnings)
                        step.end(True)
                desc_path = _write_description(desc, w, tmp, opts.recipients, warnings)
                host_key = medium.backend.host_key_line()
                if host_key:
                    w.write_bytes(setfiles.KNOWN_HOSTS, host_key.encode())
                if desc.catalog is not None:
                    with open(tmp / desc.catalog.path, "rb") as src, \
                            w.create(desc.catalog.path) as dst:
                        shutil.copyfileobj(src, dst, _COPY)
                    if desc.catalog.package_manager == "dpkg":
                        changed = package_changes.find(
                            root, list(read_catalog(tmp / desc.catalog.path)))
                        if changed.total:
                            w.write_bytes(package_changes.CHANGES_NAME,
                                          package_changes.encode(changed))
                # The hooks quiesce the applications while the snapshots are taken, and
                # while the trees that have none are read.
                with contextlib.ExitStack() as taken:
                    with hooks.around(opts.pre_save, opts.post_save, ran,
                                      lambda line: events(Progress(Step.SAVE, line))):
                        sources = snapshots.take(found, root, w.id, opts.snapshot, taken,
                                                 warnings, opts.snapshot_size)
                        for unit in found:
                            if sources[unit.key][0] is None:
                                saved.append(save_one(unit, sources[unit.key]))
                    for unit in found:
                        if sources[unit.key][0] is not None:
                            saved.append(save_one(unit, sources[unit.key]))
                order = {u.key: n for n, u in enumerate(found)}
                saved.sort(key=lambda u: order[u.key])
                warnings.extend(f"a hook failed: {h.line()}" for h in ran if not h.ok)
                rescue = "not included (--no-rescue)"
                if opts.rescue and rescue_missing:
                    rescue = "not included: this machine lacks what its build needs"
                    warnings.append(_without_rescue(rescue_missing))
                elif opts.rescue:
                    try:
                        rescue = _rescue_image(desc_path, w, root, medium.url, events,
                                               signers, host_key, opts.image)
                    except ResurgoError as e:
                        if opts.require_rescue:
                            raise OperationFailed(
                                f"the rescue image could not be built, so no set was saved "
                                f"(--require-rescue): {e.message}", e.hint) from e
                        rescue = f"not included: {e.message}"
                        warnings.append(f"the rescue image could not be built: {e.message}")
                if pool is not None:
                    saving.finish(pool, w)
                info = w.commit()
            except BaseException:
                cache.abort(w.id)
                raise
        cache.commit(info.id)
    pruned: tuple[str, ...] = ()
    if opts.retention is not None:
        # This host's sets alone: other machines' sets on a shared medium are theirs to prune.
        pruned = tuple(s.id for s in prune(medium, opts.retention, (host,)).delete)
        if pruned:
            prune_pool(medium)
    packages = None
    if pool is not None:
        packages = pool.report(sum(u.pooled for u in saved), sum(u.pooled_bytes for u in saved))
    return SaveReport(info, medium.url, tuple(saved), time.monotonic() - started, took[0],
                      tuple(warnings), lo.excludes, lo.emptied, pruned, rescue, facts.canary,
                      tuple(ran), packages, changed, left_out)


__all__ = ["SaveOptions", "SaveReport", "UnitSaved", "save_set"]

