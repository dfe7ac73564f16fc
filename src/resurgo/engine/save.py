"""Saving a tree: one pass of the walk writes the archive and the manifest side by side.

Each regular file is read once, with big os.read calls, and hashed while it streams into
the archive. In an incremental save the walk is merged with the previous manifest (both
in walk order), and an entry whose inode says it has not changed is copied into the new
manifest with the set that already holds it, without being read. The change rule
(``unchanged``): same kind, st_mode, uid, gid, size, mtime_ns, ctime_ns, inode number and
rdev. ctime is the cheap guard: it cannot be set from user space, and the kernel moves it
on every write, chmod, chown, xattr change, link and rename, so a file rewritten with the
same size whose mtime was put back (touch -d, rsync -t, tar -x) is still caught, without
hashing anything again. What it cannot catch is a change made with the clock turned back
or by writing to the block device under the file system; a full set does.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from resurgo import digest as content_digest
from resurgo.engine import fsmeta, plainsave, views
from resurgo.engine.errors import SaveFailed
from resurgo.engine.manifest import Entry, ManifestHeader, ManifestWriter, xattr_digest
from resurgo.engine.names import ROOT, BadPath, check_path, escape, walk_key
from resurgo.engine.pipes import DEFAULT_LEVEL, CompressedWriter, Writable, Written
from resurgo.engine.records import (
    DIGEST_SIZE,
    DIR,
    FILE,
    HARDLINK,
    MAX_BLOCK,
    MAX_BLOCK_ENTRIES,
    MAX_XATTR_VALUES,
    SYMLINK,
    Header,
    block_frame,
    end_record,
    entry_record,
    start_record,
    stored_ns,
    whole_file_record,
)
from resurgo.engine.source import ManifestStream, Source
from resurgo.engine.walk import Plain, walk
from resurgo.progress import TALLY_ENTRIES, Tally

log = logging.getLogger("resurgo.engine")


CHUNK = 1 << 20
SMALL = 1 << 20  # files up to this size are read with one call
_BUFFER = 1 << 20
_MAX_PARTS = 1000  # below IOV_MAX
# The inode of the empty directory a btrfs snapshot shows where a subvolume was nested
# (BTRFS_EMPTY_SUBVOL_DIR_OBJECTID).
EMPTY_SUBVOLUME_DIR = 2
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOATIME
MAX_NOTES = 1000

# The contents of these are not saved when the system's root is (the directories are).
SYSTEM_EMPTY_DIRS = (b"proc", b"sys", b"dev", b"run", b"tmp")


class Pooling(Protocol):
    """Where a save puts the files its package pool holds (resurgo.pool): they are left
    out of the archive and the manifest, and listed by ``take`` instead."""

    def wants(self, rel: bytes) -> str | None:
        """The sha256 a file must have to be taken from its package; None: archived."""

    def take(self, rel: bytes, st: os.stat_result, digest: str, sha256: str,
             xattrs: tuple[tuple[str, bytes], ...]) -> None:
        """The file, read now and found as its package has it (called in walk order)."""


@dataclass(frozen=True)
class SaveResult:
    set_id: str
    chain: tuple[str, ...]
    entries: int  # in the manifest: the whole tree
    stored: int  # records in this set's archive (all of them in a full set)
    data_bytes: int  # file data in this archive, holes not counted
    archive: Written
    manifest: Written
    local_manifest: Written | None
    notes: tuple[str, ...] = field(default=())  # skipped or changed while saving
    # Files whose content changed while they were read, twice (see _Saver.save_file):
    # their paths (escaped, at most MAX_NOTES of them) and their number.
    changed: tuple[str, ...] = field(default=())
    changed_count: int = 0
    # Files left to the package pool (see Pooling) and their bytes.
    pooled: int = 0
    pooled_bytes: int = 0


def steady(before: os.stat_result, after: os.stat_result) -> bool:
    """Nothing wrote to a file between two fstat calls: the same size, mtime and ctime
    (every write moves ctime, even one that sets mtime back)."""
    return (before.st_size == after.st_size and before.st_mtime_ns == after.st_mtime_ns
            and before.st_ctime_ns == after.st_ctime_ns)


def unchanged(prev: Entry, kind: str, st: os.stat_result) -> bool:
    """The rule of incremental saves (see the module docstring)."""
    return (
        prev.kind == kind
        and prev.mode == st.st_mode
        and prev.uid == st.st_uid
        and prev.gid == st.st_gid
        and prev.size == st.st_size
        and prev.mtime_ns == stored_ns(st.st_mtime_ns)
        and prev.ctime_ns == st.st_ctime_ns
        and prev.ino == st.st_ino
        and prev.rdev == st.st_rdev
    )


class _Previous:
    """The previous manifest, merged with the walk: ``get(path)`` in walk order."""

    def __init__(self, entries: Iterator[Entry]) -> None:
        self._entries = entries
        self._next = next(entries, None)

    def get(self, path: bytes) -> Entry | None:
        nxt = self._next
        if nxt is None:
            return None
        if nxt.path == path:
            self._next = next(self._entries, None)
            return nxt
        key = walk_key(path)
        while nxt is not None and walk_key(nxt.path) < key:
            nxt = next(self._entries, None)
        self._next = nxt
        if nxt is not None and nxt.path == path:
            self._next = next(self._entries, None)
            return nxt
        return None


class _Saver:
    def __init__(self, archive: CompressedWriter, manifest: ManifestWriter, set_index: int,
                 tally: Tally | None = None, device: int = 0):
        self.archive = archive
        self.device = device  # of the saved tree's root
        self.manifest = manifest
        self.set_index = set_index
        # Told the entries and the bytes of file data gone by (saved, or unchanged since
        # the previous set: ``seen``), every TALLY_ENTRIES entries and every chunk of a
        # large file.
        self.tally = tally
        # The progress is told every TALLY_ENTRIES entries: one comparison per entry or
        # run of plain files, a call only per batch (never per small file).
        self.tell_at = TALLY_ENTRIES if tally is not None else 1 << 62
        self.seen = 0
        self.parts: list[bytes] = []
        self.pending = 0
        self.entries = 0
        self.stored = 0
        self.payload = 0
        self.data_bytes = 0
        self.links: dict[int, tuple[bytes, str, str]] = {}  # inode → first path, digests
        self.notes: list[str] = []
        self.changed: list[str] = []
        self.changed_count = 0
        self.pooled = 0
        self.pooled_bytes = 0
        # The block being gathered: the entries of one directory (see records.Block).
        self.block: list[bytes] = []
        self.block_parent: bytes | None = None
        self.block_size = 0
        self.block_entries = 0
        self.block_payload = 0

    def tell(self) -> None:
        """The progress, when TALLY_ENTRIES more entries have gone by."""
        count = self.manifest.count
        if count >= self.tell_at:
            self.tell_at = count + TALLY_ENTRIES
            assert self.tally is not None
            self.tally(count, self.data_bytes + self.seen)

    def plain_files(self, general: Callable[[bytes], object] | None = None) -> Plain | None:
        """The walk's taker of runs of plain files (walk.Plain), when the compiled path is
        built: a full save's many small files without attributes, holes or other links,
        saved as save_small saves them, byte for byte (see _plainsave.c). A run stops
        before a name ``general`` says something of (not None: a file the package pool
        may hold), which the walk then hands to the general path."""
        run = plainsave.save_run
        if run is None:
            plainsave.say_once()
            return None
        digest_of = content_digest.of
        set_index = self.set_index
        device = self.device

        def take(dir_fd: int, dir_rel: bytes, names: list[bytes], pos: int) -> int:
            prefix = b"" if dir_rel == ROOT else dir_rel + b"/"
            end = len(names)
            if general is not None:
                end = next((i for i in range(pos, end)
                            if general(prefix + names[i]) is not None), end)
            while pos < end:
                if self.block_parent is not None and self.block_parent != dir_rel:
                    self.end_block()
                status, pos, records, lines, files, data = run(
                    dir_fd, names, pos, end, prefix, device, set_index,
                    MAX_BLOCK - self.block_size, MAX_BLOCK_ENTRIES - self.block_entries,
                    digest_of)
                if files:
                    payload = data + files * DIGEST_SIZE
                    self.block_parent = dir_rel
                    self.block.append(records)
                    self.block_size += len(records)
                    self.block_entries += files
                    self.block_payload += payload
                    self.stored += files
                    self.payload += payload
                    self.data_bytes += data
                    self.manifest.add_lines(lines, files)
                    self.tell()
                if status != plainsave.FULL or self.block_parent is None:
                    return pos
                self.end_block()
            return pos

        return take

    def fitting(self, rel: bytes, xattrs: tuple[tuple[str, bytes], ...]
                ) -> tuple[tuple[str, bytes], ...]:
        """The attributes a restore takes: their values within MAX_XATTR_VALUES (XFS holds
        more). The rest are left out with a note, rather than saved into an entry its own
        restore refuses as damaged."""
        total = sum(len(v) for _, v in xattrs)
        if total <= MAX_XATTR_VALUES:
            return xattrs
        kept: list[tuple[str, bytes]] = []
        left: list[str] = []
        room = MAX_XATTR_VALUES
        for name, value in xattrs:
            if len(value) <= room:
                kept.append((name, value))
                room -= len(value)
            else:
                left.append(name)
        self.note(rel, f"{len(left)} extended attributes left out ({', '.join(left[:3])}"
                       f"{' ...' if len(left) > 3 else ''}): {total} bytes of values, more "
                       f"than the {MAX_XATTR_VALUES} an entry holds")
        return tuple(kept)

    def note(self, path: bytes, why: str) -> None:
        log.info("%s: %s", escape(path), why)
        if len(self.notes) < MAX_NOTES:
            self.notes.append(f"{escape(path)}: {why}")

    def emit(self, data: bytes) -> None:
        # Gathered and written with one writev: no copy into a buffer of our own.
        self.parts.append(data)
        self.pending += len(data)
        if self.pending >= _BUFFER or len(self.parts) >= _MAX_PARTS:
            self.flush()

    def flush(self) -> None:
        parts = self.parts
        for start in range(0, len(parts), _MAX_PARTS):
            self.archive.writev(parts[start:start + _MAX_PARTS])
        self.parts = []
        self.pending = 0

    def emit_large(self, data: bytes) -> None:
        self.flush()
        self.archive.write(data)

    def record(self, h: Header) -> None:
        """An entry on its own, outside any block."""
        self.end_block()
        self.emit(entry_record(h))
        self.stored += 1

    def blocked(self, rel: bytes, parts: tuple[bytes, ...], size: int, payload: int) -> None:
        """An entry (its record and payload, ``size`` bytes) into the block of its
        directory. The caller knows it may be in one: not a directory, not a hard link."""
        head, slash, _ = rel.rpartition(b"/")
        parent = head if slash else ROOT
        if self.block_parent is not None and (
            parent != self.block_parent or self.block_size + size > MAX_BLOCK
            or self.block_entries == MAX_BLOCK_ENTRIES
        ):
            self.end_block()
        self.stored += 1
        self.payload += payload
        if size > MAX_BLOCK:  # huge attributes: on its own
            self.parts += parts
            self.pending += size
            return
        self.block_parent = parent
        self.block += parts
        self.block_size += size
        self.block_entries += 1
        self.block_payload += payload

    def end_block(self) -> None:
        if self.block_parent is None:
            return
        frame = block_frame(self.block_parent, self.block_entries, self.block_payload,
                            self.block_size)
        self.parts.append(frame)
        self.parts += self.block
        self.pending += len(frame) + self.block_size
        self.block = []
        self.block_parent = None
        self.block_size = self.block_entries = self.block_payload = 0
        if self.pending >= _BUFFER:
            self.flush()

    def add(self, kind: str, rel: bytes, st: os.stat_result, digest: str,
            xattrs: tuple[tuple[str, bytes], ...], target: bytes) -> None:
        self.manifest.add(Entry(
            kind, rel, st.st_mode, st.st_uid, st.st_gid, st.st_size, stored_ns(st.st_mtime_ns),
            st.st_ctime_ns, st.st_ino, st.st_rdev, digest,
            xattr_digest(xattrs) if xattrs else "", self.set_index, target,
        ))

    def save_file(self, rel: bytes, name: bytes, dir_fd: int, st: os.stat_result) -> None:
        """One regular file, checked for changes while it is read: its size, mtime and
        ctime by fstat before and after. A small file that changed is read once more (its
        record is made after the read); a large one has streamed into the archive by
        then, so it is read once more only to hash it: what was stored stands if that read
        is steady and finds the same content. Otherwise the file is recorded as changed
        (the manifest's ``#changed`` lines, the result's ``changed``): its content may be
        torn. The entry keeps the metadata of the fstat before the read it stores, so the
        next incremental save reads it again."""
        try:
            fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
        except FileNotFoundError:
            self.note(rel, "vanished while saving")
            return
        except OSError as e:
            raise SaveFailed(f"cannot open {escape(rel)}: {e.strerror}") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                self.note(rel, "replaced by something else while saving")
                return
            changed = False
            while True:
                xattrs = self.fitting(rel, fsmeta.read_xattrs(fd))
                size = st.st_size
                # Asked of every file: most occupy their size and need no system call;
                # one that occupies less is not always sparse (ZFS counts compressed
                # blocks).
                extents = fsmeta.data_extents(fd, size, st.st_blocks)
                if size <= SMALL and extents == (((0, size),) if size else ()):
                    data = os.pread(fd, size, 0) if size else b""
                    after = os.fstat(fd)
                    if not steady(st, after) and not changed:
                        st, changed = after, True  # read once more
                        continue
                    changed = changed and not steady(st, after)
                    digest = self.save_small(rel, st, data, xattrs)
                    break
                self.record(Header(FILE, rel, st.st_mode, st.st_uid, st.st_gid,
                                   st.st_mtime_ns, st.st_atime_ns, 0, size, b"", xattrs,
                                   extents))
                digest = self.copy_data(fd, rel, size, extents)
                after = os.fstat(fd)
                changed = not steady(st, after) and not self.same_again(fd, after, digest)
                break
        except OSError as e:
            raise SaveFailed(f"reading {escape(rel)} failed: {e.strerror}") from None
        finally:
            os.close(fd)
        if changed:
            # Not a note: the result lists these apart (SaveResult.changed).
            log.info("%s: changed while it was read, twice", escape(rel))
            self.changed_count += 1
            if len(self.changed) < MAX_NOTES:
                self.changed.append(escape(rel))
            self.manifest.changed(rel)
        hexdigest = digest.hex()
        if st.st_nlink > 1:
            self.links[st.st_ino] = (rel, hexdigest, xattr_digest(xattrs))
        self.add(FILE, rel, st, hexdigest, xattrs, b"")

    def pool_file(self, rel: bytes, name: bytes, dir_fd: int, pooling: Pooling,
                  sha256: str) -> bool:
        """A file the package pool may hold: read and hashed now (both digests, one read),
        taken by ``pooling`` when it is steady, has one link and the content its package
        gives. False: it is saved into the archive as any other file."""
        try:
            fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
        except OSError:
            return False  # gone or unreadable: the archive's path says what it is
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
                return False
            xattrs = fsmeta.read_xattrs(fd)
            if sum(len(v) for _, v in xattrs) > MAX_XATTR_VALUES:
                return False
            h = content_digest.new()
            s = hashlib.sha256()
            while chunk := os.read(fd, CHUNK):
                h.update(chunk)
                s.update(chunk)
            if not steady(st, os.fstat(fd)) or s.hexdigest() != sha256:
                return False
        except OSError:
            return False
        finally:
            os.close(fd)
        pooling.take(rel, st, h.hexdigest(), sha256, xattrs)
        self.pooled += 1
        self.pooled_bytes += st.st_size
        self.seen += st.st_size
        return True

    def same_again(self, fd: int, before: os.stat_result, digest: bytes) -> bool:
        """A large file that changed while it streamed into the archive, read once more
        (hashed only): steady during this read, and the content what was stored."""
        extents = fsmeta.data_extents(fd, before.st_size, before.st_blocks)
        h = content_digest.new()
        pos = 0
        for offset, length in extents:
            content_digest.update_zeros(h, offset - pos)
            os.lseek(fd, offset, os.SEEK_SET)
            remaining = length
            while remaining:
                chunk = os.read(fd, min(CHUNK, remaining))
                if not chunk:
                    return False
                h.update(chunk)
                remaining -= len(chunk)
            pos = offset + length
        content_digest.update_zeros(h, before.st_size - pos)
        return steady(before, os.fstat(fd)) and h.digest() == digest

    def save_small(self, rel: bytes, st: os.stat_result, data: bytes,
                   xattrs: tuple[tuple[str, bytes], ...]) -> bytes:
        """Most files of a tree: no holes, read with one call. Its record, data and digest
        go into the block of its directory (the general path, record and copy_data, gives
        the same entry)."""
        size = st.st_size
        if len(data) < size:
            self.note(rel, "shrank while saving (the rest is stored as zeros)")
            data += bytes(size - len(data))
        digest = content_digest.of(data)
        if xattrs:
            record = entry_record(Header(FILE, rel, st.st_mode, st.st_uid, st.st_gid,
                                         st.st_mtime_ns, st.st_atime_ns, 0, size, b"", xattrs,
                                         ((0, size),) if size else ()))
        else:
            record = whole_file_record(rel, st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns,
                                       st.st_atime_ns, size)
        self.data_bytes += size
        self.blocked(rel, (record, data, digest), len(record) + size + DIGEST_SIZE,
                     size + DIGEST_SIZE)
        return digest

    def copy_data(self, fd: int, rel: bytes, size: int,
                  extents: tuple[tuple[int, int], ...]) -> bytes:
        """Stream the extents into the archive; the digest of the whole content."""
        h = content_digest.new()
        pos = 0
        for offset, length in extents:
            content_digest.update_zeros(h, offset - pos)
            os.lseek(fd, offset, os.SEEK_SET)
            remaining = length
            while remaining:
                chunk = os.read(fd, min(CHUNK, remaining))
                if not chunk:
                    self.note(rel, "shrank while saving (the rest is stored as zeros)")
                    chunk = bytes(min(CHUNK, remaining))
                h.update(chunk)
                self.emit_large(chunk)
                remaining -= len(chunk)
                if self.tally is not None:
                    self.tally(self.manifest.count,
                               self.data_bytes + self.seen + length - remaining)
            pos = offset + length
            self.data_bytes += length
            self.payload += length
        content_digest.update_zeros(h, size - pos)
        digest = h.digest()
        self.emit(digest)
        self.payload += DIGEST_SIZE
        return digest

    def save_entry(self, rel: bytes, name: bytes, dir_fd: int, st: os.stat_result,
                   own_fd: int | None, kind: str) -> None:
        target = b""
        for what, ns in (("mtime", st.st_mtime_ns), ("atime", st.st_atime_ns)):
            if stored_ns(ns) != ns:
                self.note(rel, f"its {what} ({ns // 10**9} s after 1970) is outside what a "
                          "set stores (1677 to 2262): restored as the nearest end")
        if kind == FILE:
            self.save_file(rel, name, dir_fd, st)
            return
        if kind == HARDLINK:
            target, digest, xdigest = self.links[st.st_ino]
            self.record(Header(HARDLINK, rel, st.st_mode, st.st_uid, st.st_gid,
                               st.st_mtime_ns, st.st_atime_ns, 0, st.st_size, target))
            self.manifest.add(Entry(
                HARDLINK, rel, st.st_mode, st.st_uid, st.st_gid, st.st_size,
                stored_ns(st.st_mtime_ns),
                st.st_ctime_ns, st.st_ino, st.st_rdev, digest, xdigest, self.set_index, target,
            ))
            return
        try:
            if kind == DIR:
                assert own_fd is not None
                xattrs = self.fitting(rel, fsmeta.read_xattrs(own_fd))
            else:
                xattrs = self.fitting(rel, fsmeta.read_xattrs(fsmeta.proc_path(dir_fd, name)))
                if kind == SYMLINK:
                    target = os.readlink(name, dir_fd=dir_fd)
        except FileNotFoundError:
            self.note(rel, "vanished while saving")
            return
        except OSError as e:
            raise SaveFailed(f"reading {escape(rel)} failed: {e.strerror}") from None
        h = Header(kind, rel, st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns,
                   st.st_atime_ns, st.st_rdev, 0, target, xattrs)
        if kind == DIR:
            self.record(h)
        else:
            record = entry_record(h)
            self.blocked(rel, (record,), len(record), 0)
        self.add(kind, rel, st, "", xattrs, target)


def _relative(paths: Sequence[bytes | str]) -> frozenset[bytes]:
    result = set()
    for p in paths:
        raw = os.fsencode(p).strip(b"/")
        try:
            result.add(check_path(raw))
        except BadPath:
            raise SaveFailed(f"not a path below the saved tree: {p!r}") from None
    return frozenset(result)


def save_fd(
    root_fd: int,
    archive: Writable,
    manifest: Writable,
    *,
    set_id: str,
    root_name: bytes = b"",
    previous: Source | None = None,
    identity: Path | str | None = None,
    excludes: Sequence[bytes | str] = (),
    empty_dirs: Sequence[bytes | str] = (),
    recipients: Sequence[str] = (),
    local_manifest: Writable | None = None,
    level: int = DEFAULT_LEVEL,
    progress: Tally | None = None,
    live_fd: int | None = None,
    pooling: Pooling | None = None,
) -> SaveResult:
    """save_tree on an open directory (see save_tree)."""
    excluded = _relative(excludes)
    emptied = _relative(empty_dirs)
    with contextlib.ExitStack() as stack:
        prev: _Previous | None = None
        chain: tuple[str, ...] = (set_id,)
        if previous is not None:
            old = stack.enter_context(ManifestStream(previous, identity))
            chain = (*old.header.chain, set_id)
            prev = _Previous(old.entries())
        if len(set(chain)) != len(chain):
            raise SaveFailed(f"the set id {set_id!r} is already in the chain {chain}")
        header = ManifestHeader(chain, root_name, tuple(sorted(excluded)),
                                tuple(sorted(emptied)), pooling is not None)
        writers = [
            CompressedWriter(archive, getattr(archive, "name", "archive"), recipients=recipients,
                             level=level),
            CompressedWriter(manifest, getattr(manifest, "name", "manifest"),
                             recipients=recipients, level=level),
        ]
        if local_manifest is not None:
            writers.append(CompressedWriter(local_manifest, "local manifest", level=level))
        done = False
        try:
            result = _save(root_fd, writers, header, prev, excluded, emptied, progress,
                           live_fd, pooling)
            done = True
            return result
        finally:
            if not done:
                for w in writers:
                    w.abort()
    raise AssertionError("unreachable")


def _save(root_fd: int, writers: list[CompressedWriter], header: ManifestHeader,
          prev: _Previous | None, excluded: frozenset[bytes],
          emptied: frozenset[bytes], progress: Tally | None = None,
          live_fd: int | None = None, pooling: Pooling | None = None) -> SaveResult:
    archive_w, manifest_w, *local = writers

    def write_manifest(data: bytes) -> None:
        manifest_w.write(data)
        for w in local:
            w.write(data)

    man = ManifestWriter(write_manifest, header)
    saver = _Saver(archive_w, man, header.set_index, progress, os.fstat(root_fd).st_dev)
    saver.emit(start_record(header.set_id))
    # An incremental save looks at every entry beside its previous line.
    plain = saver.plain_files(pooling.wants if pooling is not None else None) \
        if prev is None else None
    for rel, name, dir_fd, st, own_fd in walk(root_fd, excludes=excluded, empty_dirs=emptied,
                                             note=saver.note, plain=plain):
        saver.tell()
        kind = fsmeta.kind_of(st.st_mode)
        if kind is None:
            continue  # a socket: recreated by its program, never saved
        if kind == FILE and st.st_nlink > 1 and st.st_ino in saver.links:
            kind = HARDLINK
        if kind == FILE and pooling is not None and st.st_nlink == 1:
            sha256 = pooling.wants(rel)
            if sha256 is not None and saver.pool_file(rel, name, dir_fd, pooling, sha256):
                continue
        live_own = None
        if live_fd is not None and kind == DIR and st.st_ino == EMPTY_SUBVOLUME_DIR \
                and rel != ROOT:
            # A subvolume below, as a snapshot shows it: saved as a live save saves it,
            # with the metadata of that subvolume's root.
            with contextlib.suppress(OSError):
                live_own = os.open(rel, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
                                   | os.O_CLOEXEC, dir_fd=live_fd)
                st = os.fstat(live_own)
                own_fd = live_own
        old = prev.get(rel) if prev is not None else None
        if old is not None and unchanged(old, kind, st) and (
            kind != HARDLINK or old.target == saver.links[st.st_ino][0]
        ):
            man.add(old)
            if kind == FILE:
                saver.seen += st.st_size
                if st.st_nlink > 1:
                    saver.links[st.st_ino] = (rel, old.digest, old.xattr_digest)
        else:
            saver.save_entry(rel, name, dir_fd, st, own_fd, kind)
        if live_own is not None:
            os.close(live_own)
    saver.end_block()
    saver.emit(end_record(saver.stored, saver.payload))
    saver.flush()
    man.finish()
    if progress is not None:
        progress(man.count, saver.data_bytes + saver.seen)
    return SaveResult(
        set_id=header.set_id,
        chain=header.chain,
        entries=man.count,
        stored=saver.stored,
        data_bytes=saver.data_bytes,
        archive=writers[0].close(),
        manifest=writers[1].close(),
        local_manifest=writers[2].close() if len(writers) > 2 else None,
        notes=tuple(saver.notes),
        changed=tuple(saver.changed),
        changed_count=saver.changed_count,
        pooled=saver.pooled,
        pooled_bytes=saver.pooled_bytes,
    )


def save_tree(
    root: Path | str,
    archive: Writable,
    manifest: Writable,
    *,
    set_id: str,
    previous: Source | None = None,
    identity: Path | str | None = None,
    excludes: Sequence[bytes | str] = (),
    empty_dirs: Sequence[bytes | str] = (),
    recipients: Sequence[str] = (),
    local_manifest: Writable | None = None,
    level: int = DEFAULT_LEVEL,
    progress: Tally | None = None,
    live: Path | str | None = None,
    pooling: Pooling | None = None,
) -> SaveResult:
    """Save the tree below ``root`` (without crossing into other file systems).

    ``archive`` and ``manifest`` receive the compressed (and, with ``recipients``,
    age-encrypted) streams; they are not closed. ``previous`` is the manifest of the last
    set for an incremental save (readable with ``identity`` when encrypted; or pass the
    ``local_manifest`` copy of the last save, which is compressed but never encrypted:
    keep it on the saved machine, and saving never needs a secret). ``excludes`` are
    left out entirely, ``empty_dirs`` saved without their contents; both are paths
    relative to ``root``. ``progress`` is told the entries and bytes of file data gone by
    (saved, or found unchanged), in batches (resurgo.progress.Tally). ``live``: when
    ``root`` is a btrfs snapshot, the tree it was taken of; a subvolume below shows in a
    snapshot as an empty directory (inode 2) and is saved with the metadata of its live
    root, as a save of the live tree saves it.
    """
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    live_fd = None
    if live is not None:
        try:
            live_fd = os.open(live, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except BaseException:
            os.close(fd)
            raise
    try:
        return save_fd(fd, archive, manifest, set_id=set_id, root_name=os.fsencode(root),
                       previous=previous, identity=identity, excludes=excludes,
                       empty_dirs=empty_dirs, recipients=recipients,
                       local_manifest=local_manifest, level=level, progress=progress,
                       live_fd=live_fd, pooling=pooling)
    finally:
        os.close(fd)
        if live_fd is not None:
            os.close(live_fd)


def save_filesystem(
    mountpoint: Path | str,
    archive: Writable,
    manifest: Writable,
    *,
    set_id: str,
    previous: Source | None = None,
    identity: Path | str | None = None,
    excludes: Sequence[Path | str] = (),
    empty_dirs: Sequence[Path | str] | None = None,
    recipients: Sequence[str] = (),
    local_manifest: Writable | None = None,
    level: int = DEFAULT_LEVEL,
    progress: Tally | None = None,
    pooling: Pooling | None = None,
) -> SaveResult:
    """Save the file system mounted at ``mountpoint``, as it is below any other mounts.

    The tree is read from a private, read-only, non-recursive bind mount of the mountpoint
    (views.private_view): the directories other file systems are mounted on are saved as
    they are on this one (their own owner, mode and times; files hidden under a mount are
    saved too), and nothing mounted below — another file system, or a bind mount of a
    part of this one — is entered. ``excludes`` and ``empty_dirs`` are absolute paths of
    the running system; those outside this file system are ignored. ``empty_dirs``
    defaults to /proc, /sys, /dev, /run and /tmp when the mountpoint is /.
    """
    top = Path(mountpoint).resolve()
    if empty_dirs is None:
        empty_dirs = [top / os.fsdecode(d) for d in SYSTEM_EMPTY_DIRS] if top == Path("/") else []

    def below(paths: Sequence[Path | str]) -> list[bytes]:
        result = []
        for p in paths:
            try:
                rel = Path(os.path.abspath(p)).relative_to(top)
            except ValueError:
                continue
            if rel.parts:
                result.append(os.fsencode(rel))
        return result

    with views.private_view(top) as fd:
        return save_fd(fd, archive, manifest, set_id=set_id, root_name=os.fsencode(top),
                       previous=previous, identity=identity, excludes=below(excludes),
                       empty_dirs=below(empty_dirs), recipients=recipients,
                       local_manifest=local_manifest, level=level, progress=progress,
                       pooling=pooling)


__all__ = ["ROOT", "SYSTEM_EMPTY_DIRS", "Pooling", "SaveResult", "save_filesystem", "save_tree",
           "steady", "unchanged"]
