"""What a package-aware save does beside the engine: the pool filled, each tree's pooled
list written as the engine walks it, the set's list of packages."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from resurgo.engine.names import escape
from resurgo.engine.pipes import CompressedWriter
from resurgo.errors import OperationFailed
from resurgo.media import Medium, SetWriter
from resurgo.pool import lists, obtain, twins
from resurgo.pool.store import PackagePool, twin_name
from resurgo.probe import catalog

log = logging.getLogger("resurgo.pool")


class PackagesMode(StrEnum):
    OFF = "off"
    POOL = "pool"


@dataclass
class PoolSave:
    """The pool's part of one save."""

    pool: PackagePool
    candidates: dict[str, obtain.Candidate]
    obtained: obtain.Obtained
    twins: twins.Twins = field(default_factory=twins.Twins)
    # The packages the set's trees took files from, by sha256.
    used: dict[str, lists.PackageRef] = field(default_factory=dict)
    # Those of them a file is a copy of, whole (apt's cache): read as they are, not twinned.
    whole: set[str] = field(default_factory=set)

    def report(self, pooled: int, pooled_bytes: int) -> PackagesSaved:
        added = self.obtained.added
        return PackagesSaved(
            packages=len(self.used), files=pooled, file_bytes=pooled_bytes,
            added=len(added), added_bytes=sum(p.size for p in added),
            missing=self.obtained.missing, missing_files=self.obtained.missing_files,
            twins_added=len(self.twins.added),
            twins_added_bytes=sum(size for _, size in self.twins.added),
            notes=(*self.obtained.notes, *self.twins.notes)[:obtain.MAX_NOTES])

    def refs(self) -> list[lists.PackageRef]:
        """The set's packages, each with its twin where the recovery reads one."""
        out = []
        for ref in self.used.values():
            twin = self.twins.of.get(ref.sha256)
            out.append(ref.with_twin(*twin) if twin and ref.sha256 not in self.whole
                       else ref)
        return out


@dataclass(frozen=True)
class PackagesSaved:
    """What the report says of the pool."""

    packages: int  # the set needs from the pool
    files: int  # left out of the archives, taken from them
    file_bytes: int
    added: int  # packages this save put into the pool
    added_bytes: int
    missing: int  # packages that could not be had: their files archived
    missing_files: int
    twins_added: int = 0  # twins this save made and put into the pool
    twins_added_bytes: int = 0
    notes: tuple[str, ...] = ()

    def data(self) -> dict[str, Any]:
        return {"packages": self.packages, "files": self.files, "file_bytes": self.file_bytes,
                "added": self.added, "added_bytes": self.added_bytes,
                "missing": self.missing, "missing_files": self.missing_files,
                "twins_added": self.twins_added,
                "twins_added_bytes": self.twins_added_bytes, "notes": list(self.notes)}


def prepare(medium: Medium, root: Path, catalog_file: Path | None,
            warnings: list[str]) -> PoolSave | None:
    """The pool's candidates and packages, before the trees are read; None (with a
    warning) when the system has no catalog to go by."""
    pool = PackagePool(medium)
    if catalog_file is None:
        warnings.append("--packages pool: the system has no dpkg catalog, so every file is "
                        "archived")
        return None
    entries = list(catalog.read_catalog(catalog_file))
    cands = obtain.candidates(root, entries)
    got = obtain.obtain(root, pool, cands)
    # A package apt's cache holds a copy of is read whole to give the copy back: the
    # recovery reads it as it is, and a twin would be made for nothing.
    cached = frozenset(key for key in got.packages
                       if (root / obtain.CACHE / obtain.deb_name(key)).is_file())
    made = twins.ensure(pool, got, obtain.by_key(cands), cached)
    for key, (ref, good) in list(got.packages.items()):
        gives = made.gives.get(ref.sha256)
        if gives is not None:
            got.packages[key] = (ref, good & gives)
    # Beside the files the packages install: dpkg's copies of their control files and
    # apt's cached copies of the packages themselves.
    cands.update(obtain.control_candidates(root, got))
    cands.update(obtain.cache_candidates(got))
    return PoolSave(pool, cands, got, made)


class UnitPooling:
    """The engine's Pooling for one tree: its candidates, its pooled list."""

    def __init__(self, save: PoolSave, mountpoint: str, writer: lists.PooledWriter) -> None:
        self._save = save
        self._wanted = obtain.unit_candidates(save.candidates, save.obtained, mountpoint)
        self._writer = writer

    def wants(self, rel: bytes) -> str | None:
        found = self._wanted.get(rel)
        return found[0].sha256 if found is not None else None

    def take(self, rel: bytes, st: os.stat_result, digest: str, sha256: str,
             xattrs: tuple[tuple[str, bytes], ...]) -> None:
        cand, ref = self._wanted[rel]
        self._save.used[ref.sha256] = ref
        if cand.source == lists.WHOLE:
            self._save.whole.add(ref.sha256)
        self._writer.add(lists.PooledFile(
            rel, st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns, digest,
            sha256, ref.sha256, os.fsencode(cand.member), xattrs, cand.source))


class PooledOutput:
    """A tree's pooled list, streamed into the set as the engine walks."""

    def __init__(self, w: SetWriter, name: str, recipients: tuple[str, ...], level: int) -> None:
        self._file = w.create(name)
        self._compressed = CompressedWriter(self._file, name, recipients=recipients,
                                            level=level)
        self.writer = lists.PooledWriter(self._compressed.write)

    def close(self) -> None:
        self.writer.finish()
        self._compressed.close()
        self._file.close()

    def abort(self) -> None:
        self._compressed.abort()


def finish(save: PoolSave, w: SetWriter) -> None:
    """The set's packages list, once the pool is seen to hold every one of them still (a
    prune elsewhere decides by the sets committed: it cannot know this one's)."""
    held = save.pool.packages()
    held_twins = save.pool.twins()
    refs = save.refs()
    gone = [p for p in refs
            if p.sha256 not in held or held[p.sha256].size != p.size
            or (p.twin_sha256
                and held_twins.get(p.sha256, {}).get(twin_name(p)) != p.twin_size)]
    if gone:
        shown = ", ".join(p.label() for p in gone[:5])
        raise OperationFailed(
            f"the set was not committed: {len(gone)} package(s) it needs vanished from "
            f"{save.pool.url}'s pool while it was saved ({shown})",
            "a prune ran meanwhile: save again")
    w.write_bytes(lists.PACKAGES_NAME, lists.encode_packages(refs))


__all__ = ["PackagesMode", "PackagesSaved", "PoolSave", "PooledOutput", "UnitPooling",
           "escape", "finish", "prepare"]
