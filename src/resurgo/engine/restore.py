"""Restoring the tree a manifest describes, from the archives of its chain.

The last manifest of a chain lists the complete tree and, for each entry, the set whose
archive holds it. The restore reads each needed archive once, oldest first, merged with
the manifest entries of that set (both in walk order, so neither is held in memory), and
extracts exactly those entries: every file is written once, files deleted since an older
set are never written, and a renamed file comes from the set that saved it under its new
name. Hard links are made when all files exist, and directories get their metadata last
(deepest first), when nothing will be created in them any more.

One thread reads and checks the archive stream; a pool of threads creates the files
(os.write, fchown and the rest release the GIL), in batches to keep the per-file
overhead down. Every file's content is hashed as it is written and compared with both the
digest that follows it in the archive and the manifest's.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from resurgo.engine import fsmeta
from resurgo.engine.errors import ArchiveDamaged, ArchiveError, RestoreFailed
from resurgo.engine.manifest import Entry, xattr_digest
from resurgo.engine.names import ROOT, components, escape, walk_key
from resurgo.engine.pipes import DecompressedReader, Written
from resurgo.engine.records import (
    BLK,
    CHR,
    DIGEST_SIZE,
    DIR,
    FIFO,
    FILE,
    HARDLINK,
    SYMLINK,
    FormatError,
    Header,
    RecordReader,
    decode_header,
    encode_header,
)
from resurgo.engine.source import ManifestStream, Source
from resurgo.engine.targets import NEW_FILE_FLAGS, DirCache, replace

CHUNK = 1 << 20
SMALL = 1 << 20  # files up to this size go to the pool whole
_BATCH_ITEMS = 256
_BATCH_BYTES = 8 << 20
_ZEROS = memoryview(bytes(CHUNK))
MAX_WARNINGS = 1000


@dataclass(frozen=True)
class RestoreResult:
    set_id: str
    entries: int
    files: int
    data_bytes: int
    archives: tuple[tuple[str, Written], ...]  # (name, size and sha256 of what was read)
    warnings: tuple[str, ...] = field(default=())  # e.g. attributes the target refused


def _default_threads() -> int:
    return min(8, 2 * (os.cpu_count() or 1))


class _Item:
    """One entry for the pool: where it goes, its header and (files) its data."""

    __slots__ = ("data", "digest", "dir_fd", "header", "name")

    def __init__(self, dir_fd: int, name: bytes, header: Header, data: bytes,
                 digest: bytes) -> None:
        self.dir_fd = dir_fd
        self.name = name
        self.header = header
        self.data = data
        self.digest = digest


def _hash_zeros(h: hashlib._Hash, n: int) -> None:
    while n > 0:
        step = min(n, CHUNK)
        h.update(_ZEROS[:step])
        n -= step


def _write_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n


class _Writer:
    """What the pool threads do; shared warnings."""

    def __init__(self, archive: str) -> None:
        self.archive = archive
        self.warnings: list[str] = []
        self._lock = threading.Lock()

    def warn(self, path: bytes, refused: list[str]) -> None:
        if refused:
            with self._lock:
                if len(self.warnings) < MAX_WARNINGS:
                    self.warnings.append(
                        f"{escape(path)}: the target refused {', '.join(refused)}")

    def finish_fd(self, fd: int, h: Header) -> None:
        # chown first (it clears setuid and capabilities), then the mode, then the
        # attributes (ACLs agree with the mode; the capability comes last), then the times.
        os.fchown(fd, h.uid, h.gid)
        os.fchmod(fd, h.mode & 0o7777)
        self.warn(h.path, fsmeta.apply_xattrs(fd, h.xattrs))
        os.utime(fd, ns=(h.atime_ns, h.mtime_ns))

    def new_file(self, dir_fd: int, name: bytes) -> int:
        box: list[int] = []
        replace(lambda: box.append(os.open(name, NEW_FILE_FLAGS, 0o600, dir_fd=dir_fd)),
                dir_fd, name)
        return box[0]

    def file(self, item: _Item) -> None:
        h = item.header
        fd = self.new_file(item.dir_fd, item.name)
        try:
            data = item.data
            if len(h.extents) == 1 and h.extents[0] == (0, h.size):
                _write_all(fd, data, 0)
                actual = hashlib.sha256(data).digest()
            else:
                os.ftruncate(fd, h.size)
                hasher = hashlib.sha256()
                pos = 0
                view = memoryview(data)
                for offset, length in h.extents:
                    _hash_zeros(hasher, offset - pos)
                    chunk = view[:length]
                    view = view[length:]
                    _write_all(fd, chunk, offset)
                    hasher.update(chunk)
                    pos = offset + length
                _hash_zeros(hasher, h.size - pos)
                actual = hasher.digest()
            if actual != item.digest:
                raise ArchiveDamaged(self.archive, "a file's content differs from its digest",
                                     [escape(h.path)])
            self.finish_fd(fd, h)
        finally:
            os.close(fd)

    def other(self, item: _Item) -> None:
        h, dir_fd, name = item.header, item.dir_fd, item.name
        kind = h.kind
        if kind == SYMLINK:
            replace(lambda: os.symlink(h.target, name, dir_fd=dir_fd), dir_fd, name)
        elif kind == FIFO:
            replace(lambda: os.mkfifo(name, 0o600, dir_fd=dir_fd), dir_fd, name)
        else:
            replace(lambda: os.mknod(name, h.mode, h.rdev, dir_fd=dir_fd), dir_fd, name)
        os.chown(name, h.uid, h.gid, dir_fd=dir_fd, follow_symlinks=False)
        if kind != SYMLINK:  # a symlink has no mode of its own
            os.chmod(name, h.mode & 0o7777, dir_fd=dir_fd)
        self.warn(h.path, fsmeta.apply_xattrs(fsmeta.proc_path(dir_fd, name), h.xattrs))
        os.utime(name, ns=(h.atime_ns, h.mtime_ns), dir_fd=dir_fd, follow_symlinks=False)

    def batch(self, items: list[_Item], fds: list[int]) -> None:
        try:
            for item in items:
                try:
                    if item.header.kind == FILE:
                        self.file(item)
                    else:
                        self.other(item)
                except OSError as e:
                    raise RestoreFailed(
                        f"cannot restore {escape(item.header.path)}: {e.strerror}",
                        archive=self.archive, paths=(escape(item.header.path),),
                    ) from None
        finally:
            for fd in fds:
                os.close(fd)


class _Batches:
    """Items grouped for the pool, with a bound on what is in flight (memory)."""

    def __init__(self, pool: ThreadPoolExecutor, writer: _Writer, threads: int) -> None:
        self._pool = pool
        self._writer = writer
        self._limit = 2 * threads
        self._inflight: deque[Future[None]] = deque()
        self._items: list[_Item] = []
        self._fds: list[int] = []
        self._dir: tuple[bytes, ...] | None = None  # the directory of the last dup
        self._bytes = 0

    def add(self, parent: tuple[bytes, ...], dir_fd: int, name: bytes, header: Header,
            data: bytes = b"", digest: bytes = b"") -> None:
        if parent != self._dir or not self._fds:
            # The pool outlives the parser's descriptors: each batch owns duplicates.
            self._fds.append(os.dup(dir_fd))
            self._dir = parent
        self._items.append(_Item(self._fds[-1], name, header, data, digest))
        self._bytes += len(data)
        if len(self._items) >= _BATCH_ITEMS or self._bytes >= _BATCH_BYTES:
            self.submit()

    def submit(self) -> None:
        if not self._items:
            return
        while len(self._inflight) >= self._limit:
            self._inflight.popleft().result()
        self._inflight.append(self._pool.submit(self._writer.batch, self._items, self._fds))
        self._items, self._fds, self._bytes, self._dir = [], [], 0, None

    def drain(self) -> None:
        self.submit()
        while self._inflight:
            self._inflight.popleft().result()

    def abandon(self) -> None:
        for future in self._inflight:
            future.cancel()
        for future in self._inflight:
            if not future.cancelled():
                with contextlib.suppress(Exception):
                    future.result()
        for fd in self._fds:
            os.close(fd)
        self._inflight.clear()
        self._fds = []


def _check_against(h: Header, e: Entry, archive: str) -> None:
    """The archive's header must say what the manifest says about the entry."""
    same = (
        h.kind == e.kind and h.mode == e.mode and h.uid == e.uid and h.gid == e.gid
        and h.mtime_ns == e.mtime_ns and (h.kind not in (FILE, HARDLINK) or h.size == e.size)
        and h.rdev == (e.rdev if h.kind in (CHR, BLK) else 0)
        and (h.kind not in (SYMLINK, HARDLINK) or h.target == e.target)
        and (h.kind == HARDLINK or xattr_digest(h.xattrs) == e.xattr_digest)
    )
    if not same:
        raise ArchiveDamaged(archive, "an entry differs from its manifest line",
                             [escape(h.path)])


class _SetRestore:
    """The extraction of one set's archive, merged with the manifest's entries of that set."""

    def __init__(self, target_fd: int, name: str, batches: _Batches, writer: _Writer,
                 dirs: list[bytes], links: list[tuple[bytes, bytes]]) -> None:
        self.name = name
        self.dirs_cache = DirCache(target_fd, name)
        self.batches = batches
        self.writer = writer
        self.dirs = dirs
        self.links = links
        self.files = 0
        self.data_bytes = 0
        self.entries = 0
        self.target_fd = target_fd

    def run(self, rr: RecordReader, wanted: Iterator[Entry]) -> None:
        w = next(wanted, None)
        last: tuple[bytes, ...] | None = None
        while (h := rr.next_header()) is not None:
            key = walk_key(h.path)
            if last is not None and key <= last:
                raise FormatError("entries out of walk order")
            last = key
            if w is not None and h.path == w.path:
                _check_against(h, w, self.name)
                self.extract(rr, h, w)
                self.entries += 1
                w = next(wanted, None)
                continue
            if w is not None and key > walk_key(w.path):
                raise ArchiveDamaged(self.name, "the archive lacks an entry of its manifest",
                                     [escape(w.path)])
            rr.skip(h.payload_size)
        if w is not None:
            raise ArchiveDamaged(self.name, "the archive lacks an entry of its manifest",
                                 [escape(w.path)])

    def extract(self, rr: RecordReader, h: Header, e: Entry) -> None:
        kind = h.kind
        if kind == HARDLINK:
            self.links.append((h.path, h.target))
            return
        if h.path == ROOT:
            self.dirs.append(encode_header(h))
            return
        parts = components(h.path)
        parent_parts = parts[:-1]
        parent = self.dirs_cache.fd(parent_parts)
        name = parts[-1]
        if kind == DIR:
            # It exists already: lost+found of a fresh ext4, or a restore over a tree.
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, 0o700, dir_fd=parent)
            self.dirs.append(encode_header(h))
            return
        if kind != FILE:
            self.batches.add(parent_parts, parent, name, h)
            return
        self.files += 1
        self.data_bytes += h.data_size
        expected = bytes.fromhex(e.digest)
        if h.data_size <= SMALL:
            data = rr.read_exact(h.data_size)
            digest = rr.read_exact(DIGEST_SIZE)
            if digest != expected:
                raise ArchiveDamaged(self.name, "a file's digest differs from its manifest's",
                                     [escape(h.path)])
            self.batches.add(parent_parts, parent, name, h, data, digest)
            return
        self.large_file(rr, parent, name, h, expected)

    def large_file(self, rr: RecordReader, dir_fd: int, name: bytes, h: Header,
                   expected: bytes) -> None:
        try:
            fd = self.writer.new_file(dir_fd, name)
        except OSError as e:
            raise RestoreFailed(f"cannot create {escape(h.path)}: {e.strerror}",
                                archive=self.name, paths=(escape(h.path),)) from None
        try:
            dense = len(h.extents) == 1 and h.extents[0] == (0, h.size)
            if not dense:
                os.ftruncate(fd, h.size)
            hasher = hashlib.sha256()
            pos = 0
            for offset, length in h.extents:
                _hash_zeros(hasher, offset - pos)
                done = 0
                while done < length:
                    chunk = rr.read_exact(min(CHUNK, length - done))
                    hasher.update(chunk)
                    _write_all(fd, chunk, offset + done)
                    done += len(chunk)
                pos = offset + length
            _hash_zeros(hasher, h.size - pos)
            digest = rr.read_exact(DIGEST_SIZE)
            if hasher.digest() != digest or digest != expected:
                raise ArchiveDamaged(self.name, "a file's content differs from its digest",
                                     [escape(h.path)])
            self.writer.finish_fd(fd, h)
        except OSError as e:
            raise RestoreFailed(f"cannot restore {escape(h.path)}: {e.strerror}",
                                archive=self.name, paths=(escape(h.path),)) from None
        finally:
            os.close(fd)


def _restore_set(
    target_fd: int,
    source: Source,
    set_id: str,
    wanted: Iterator[Entry],
    identity: Path | str | None,
    batches: _Batches,
    writer: _Writer,
    dirs: list[bytes],
    links: list[tuple[bytes, bytes]],
) -> tuple[_SetRestore, Written]:
    stream = source.open()
    plain: DecompressedReader | None = None
    job = _SetRestore(target_fd, source.name, batches, writer, dirs, links)
    rr: RecordReader | None = None
    try:
        plain = DecompressedReader(stream, source.name, identity=identity)
        rr = RecordReader(plain.read)
        found = rr.start()
        if found != set_id:
            raise ArchiveDamaged(source.name, f"it holds set {found}, the manifest names {set_id}")
        job.run(rr, wanted)
        batches.drain()
        return job, plain.finish()
    except (FormatError, ArchiveDamaged) as e:
        # Damage shows first as whatever notices it: a framing error, a wrong digest, an
        # early end. Stop the programs and prefer their own complaint when they have one.
        if plain is None:
            raise
        if isinstance(e, FormatError):
            why, paths = str(e), [escape(rr.last_path)] if rr and rr.last_path else []
        else:
            why, paths = e.why, list(e.paths)
        raise plain.failure(why, paths) from None
    finally:
        job.dirs_cache.close()
        if plain is not None:
            plain.close()
        with contextlib.suppress(OSError):
            stream.close()


def _link(src_fd: int, src: bytes, dst_fd: int, dst: bytes) -> None:
    def make() -> None:
        os.link(src, dst, src_dir_fd=src_fd, dst_dir_fd=dst_fd, follow_symlinks=False)

    replace(make, dst_fd, dst)


def _finish_links(target_fd: int, links: list[tuple[bytes, bytes]], name: str) -> None:
    sources = DirCache(target_fd, name)
    dests = DirCache(target_fd, name)
    try:
        for path, first in links:
            src_parts, dst_parts = components(first), components(path)
            src_fd = sources.fd(src_parts[:-1], create=False)
            dst_fd = dests.fd(dst_parts[:-1])
            src, dst = src_parts[-1], dst_parts[-1]
            try:
                _link(src_fd, src, dst_fd, dst)
            except OSError as e:
                raise RestoreFailed(
                    f"cannot link {escape(path)} to {escape(first)}: {e.strerror}",
                    archive=name, paths=(escape(path),)) from None
    except FileNotFoundError:
        raise RestoreFailed("a hard link's first file is missing", archive=name) from None
    finally:
        sources.close()
        dests.close()


def _finish_dirs(target_fd: int, dirs: list[bytes], writer: _Writer, name: str) -> None:
    cache = DirCache(target_fd, name)
    try:
        for raw in reversed(dirs):
            h = decode_header(raw)
            parts = components(h.path)
            fd = cache.fd(parts, create=False) if parts else target_fd
            try:
                writer.finish_fd(fd, h)
            except OSError as e:
                raise RestoreFailed(f"cannot restore {escape(h.path)}: {e.strerror}",
                                    archive=name, paths=(escape(h.path),)) from None
    finally:
        cache.close()


def restore_tree(
    target: Path | str,
    manifest: Source,
    archives: Mapping[str, Source] | Callable[[str], Source],
    *,
    identity: Path | str | None = None,
    threads: int | None = None,
) -> RestoreResult:
    """Restore the tree ``manifest`` describes into the directory ``target``.

    ``archives`` gives the archive of each set id of the manifest's chain (a mapping or a
    function). ``identity`` is the age identity file for encrypted sets. Damage stops the
    restore with an ArchiveError naming the archive and the files concerned; nothing is
    ever written outside ``target``.
    """
    lookup: Callable[[str], Source] = (
        archives.__getitem__ if isinstance(archives, Mapping) else archives
    )
    target_fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    n_threads = threads or _default_threads()
    writer = _Writer(manifest.name)
    dirs: list[bytes] = []
    links: list[tuple[bytes, bytes]] = []
    read: list[tuple[str, Written]] = []
    entries = files = data_bytes = 0
    try:
        with ManifestStream(manifest, identity) as first:
            chain = first.header.chain
            counts = [0] * len(chain)
            if len(chain) == 1:
                counts[0] = 1  # one set holds everything: no need to count
            else:
                for entry in first.entries():
                    counts[entry.set_index] += 1
        try:
            sources = [lookup(set_id) for set_id in chain]
        except KeyError as e:
            raise ArchiveError(f"the archive of set {e.args[0]} is missing",
                               "give every archive of the set's chain") from None
        with ThreadPoolExecutor(n_threads, thread_name_prefix="restore") as pool:
            batches = _Batches(pool, writer, n_threads)
            try:
                for index, set_id in enumerate(chain):
                    if not counts[index]:
                        continue
                    writer.archive = sources[index].name
                    with ManifestStream(manifest, identity) as ms:
                        wanted = (e for e in ms.entries() if e.set_index == index)
                        job, written = _restore_set(target_fd, sources[index], set_id,
                                                    wanted, identity, batches, writer, dirs,
                                                    links)
                    read.append((sources[index].name, written))
                    entries += job.entries
                    files += job.files
                    data_bytes += job.data_bytes
            except BaseException:
                batches.abandon()
                raise
        _finish_links(target_fd, links, manifest.name)
        _finish_dirs(target_fd, dirs, writer, manifest.name)
    finally:
        os.close(target_fd)
    return RestoreResult(chain[-1], entries, files, data_bytes, tuple(read),
                         tuple(writer.warnings))
