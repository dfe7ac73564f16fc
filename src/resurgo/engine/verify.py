"""Checking an existing tree against a manifest: content and metadata, entry by entry.

The tree is walked the way it was saved (same excludes, same directories kept empty, not
crossing into other file systems) and merged with the manifest; every difference is one
Mismatch. Inode numbers and ctimes are not compared: a restore cannot keep them.
"""

from __future__ import annotations

import contextlib
import heapq
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from resurgo import digest as content_digest
from resurgo.engine import fsmeta
from resurgo.engine.manifest import Entry, xattr_digest
from resurgo.engine.names import ROOT, components, escape, walk_key
from resurgo.engine.records import BLK, CHR, DIR, FILE, HARDLINK, SYMLINK
from resurgo.engine.source import ManifestStream, Source
from resurgo.engine.targets import DIR_FLAGS
from resurgo.engine.walk import walk
from resurgo.progress import TALLY_ENTRIES, Tally

CHUNK = 1 << 20
MAX_MISMATCHES = 10000


@dataclass(frozen=True)
class Mismatch:
    path: str  # escaped like the manifest's paths
    what: str  # missing, unexpected, kind, mode, owner, mtime, size, rdev, target, xattrs,
    #            content, hard link, unreadable
    expected: str = ""
    actual: str = ""

    def __str__(self) -> str:
        if self.expected or self.actual:
            return f"{self.path}: {self.what} (expected {self.expected}, found {self.actual})"
        return f"{self.path}: {self.what}"


def file_digest(fd: int) -> str:
    h = content_digest.new()
    while chunk := os.read(fd, CHUNK):
        h.update(chunk)
    return h.hexdigest()


class _Checker:
    def __init__(self, content: bool) -> None:
        self.content = content
        self.found: list[Mismatch] = []
        self.inodes: dict[bytes, int] = {}  # path of a multiply linked file → its inode

    def add(self, path: bytes, what: str, expected: object = "", actual: object = "") -> None:
        if len(self.found) < MAX_MISMATCHES:
            self.found.append(Mismatch(escape(path), what, str(expected), str(actual)))

    def compare(self, e: Entry, name: bytes, dir_fd: int, st: os.stat_result,
                own_fd: int | None) -> None:
        path = e.path
        kind = fsmeta.kind_of(st.st_mode)
        if kind == FILE and st.st_nlink > 1:
            self.inodes.setdefault(path, st.st_ino)
        wanted = FILE if e.kind == HARDLINK else e.kind
        if kind != wanted:
            self.add(path, "kind", e.kind, kind)
            return
        if e.kind == HARDLINK and self.inodes.get(e.target) != st.st_ino:
            self.add(path, "hard link", f"same file as {escape(e.target)}", "another file")
        if st.st_mode != e.mode:
            self.add(path, "mode", f"{e.mode:o}", f"{st.st_mode:o}")
        if (st.st_uid, st.st_gid) != (e.uid, e.gid):
            self.add(path, "owner", f"{e.uid}:{e.gid}", f"{st.st_uid}:{st.st_gid}")
        if st.st_mtime_ns != e.mtime_ns:
            self.add(path, "mtime", e.mtime_ns, st.st_mtime_ns)
        if kind in (FILE, SYMLINK) and st.st_size != e.size:
            self.add(path, "size", e.size, st.st_size)
        if kind in (CHR, BLK) and st.st_rdev != e.rdev:
            self.add(path, "rdev", e.rdev, st.st_rdev)
        try:
            if kind == SYMLINK:
                target = os.readlink(name, dir_fd=dir_fd)
                if target != e.target:
                    self.add(path, "target", escape(e.target), escape(target))
            if kind == DIR:
                assert own_fd is not None
                xattrs = fsmeta.read_xattrs(own_fd)
            elif kind == FILE:
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                             dir_fd=dir_fd)
                try:
                    xattrs = fsmeta.read_xattrs(fd)
                    if self.content and e.kind == FILE:
                        digest = file_digest(fd)
                        if digest != e.digest:
                            self.add(path, "content", e.digest, digest)
                finally:
                    os.close(fd)
            else:
                xattrs = fsmeta.read_xattrs(fsmeta.proc_path(dir_fd, name))
        except OSError as err:
            self.add(path, "unreadable", "", err.strerror)
            return
        if xattr_digest(xattrs) != e.xattr_digest:
            self.add(path, "xattrs", e.xattr_digest or "none",
                     ", ".join(n for n, _ in xattrs) or "none")


def verify_tree(
    root: Path | str,
    manifest: Source,
    *,
    identity: Path | str | None = None,
    content: bool = True,
    progress: Tally | None = None,
    extra: Iterable[Entry] = (),
) -> list[Mismatch]:
    """Every difference between the tree below ``root`` and the manifest (empty: equal).

    ``extra``: entries the tree has beside the manifest's, in walk order (the files of a
    package pool, resurgo.pool), compared as the manifest's are.

    ``content=False`` skips reading the files (metadata only). ``progress`` is told the
    manifest's entries checked and the bytes of file content read, in batches
    (resurgo.progress.Tally).
    """
    checker = _Checker(content)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    # Entries of the manifest gone by, and the bytes of content read: told every
    # TALLY_ENTRIES entries, one comparison per entry.
    count = nbytes = 0
    tell_at = TALLY_ENTRIES if progress is not None else 1 << 62
    try:
        with ManifestStream(manifest, identity) as ms:
            header = ms.header
            entries = heapq.merge(ms.entries(), extra, key=lambda x: walk_key(x.path))
            e = next(entries, None)
            for rel, name, dir_fd, st, own_fd in walk(
                fd, excludes=frozenset(header.excludes), empty_dirs=frozenset(header.empty_dirs)
            ):
                if count >= tell_at:
                    tell_at = count + TALLY_ENTRIES
                    assert progress is not None
                    progress(count, nbytes)
                if stat.S_ISSOCK(st.st_mode):
                    continue
                key = walk_key(rel)
                while e is not None and walk_key(e.path) < key:
                    checker.add(e.path, "missing")
                    count += 1
                    e = next(entries, None)
                if e is not None and e.path == rel:
                    checker.compare(e, name, dir_fd, st, own_fd)
                    count += 1
                    if content and e.kind == FILE:
                        nbytes += e.size
                    e = next(entries, None)
                elif rel != ROOT:
                    checker.add(rel, "unexpected")
            while e is not None:
                checker.add(e.path, "missing")
                count += 1
                e = next(entries, None)
    finally:
        os.close(fd)
    if progress is not None:
        progress(count, nbytes)
    return checker.found


def verify_entries(root: Path | str, entries: Iterable[Entry], *,
                   content: bool = True) -> list[Mismatch]:
    """Every difference between these entries (in walk order, a part of a manifest) and
    what stands at their paths below ``root``: what a restore of a selection made. Each
    directory on the way is opened with O_NOFOLLOW: a symlink there is a difference
    (``missing``), never followed. A hard link is compared with the earlier entry it names,
    which must be among ``entries``."""
    checker = _Checker(content)
    top = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    opened: list[tuple[bytes, int]] = []  # the directories leading to the current one
    try:
        for e in entries:
            parts = components(e.path)
            parents = parts[:-1]
            keep = 0
            while keep < min(len(opened), len(parents)) and opened[keep][0] == parents[keep]:
                keep += 1
            while len(opened) > keep:
                os.close(opened.pop()[1])
            try:
                for part in parents[keep:]:
                    parent = opened[-1][1] if opened else top
                    opened.append((part, os.open(part, DIR_FLAGS, dir_fd=parent)))
                dir_fd = opened[-1][1] if opened else top
                if not parts:
                    checker.compare(e, b".", top, os.fstat(top), top)
                    continue
                st = os.stat(parts[-1], dir_fd=dir_fd, follow_symlinks=False)
            except OSError:
                checker.add(e.path, "missing")
                continue
            if stat.S_ISDIR(st.st_mode):
                try:
                    own = os.open(parts[-1], DIR_FLAGS, dir_fd=dir_fd)
                except OSError as err:
                    checker.add(e.path, "unreadable", "", err.strerror)
                    continue
                try:
                    checker.compare(e, parts[-1], dir_fd, st, own)
                finally:
                    os.close(own)
            else:
                checker.compare(e, parts[-1], dir_fd, st, None)
    finally:
        while opened:
            with contextlib.suppress(OSError):
                os.close(opened.pop()[1])
        os.close(top)
    return checker.found
