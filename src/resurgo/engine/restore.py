"""Restoring the tree a manifest describes, from the archives of its chain.

The last manifest of a chain lists the complete tree and, for each entry, the set whose
archive holds it. The restore reads each needed archive once, oldest first, merged with
the manifest entries of that set (both in walk order, so neither is held in memory), and
extracts exactly those entries: every file is written once, files deleted since an older
set are never written, and a renamed file comes from the set that saved it under its new
name. Hard links are made when all files exist, and directories get their metadata last
(deepest first), when nothing will be created in them any more.

One thread reads the archive stream, makes the directories and writes the large files
(their big writes and hashing release the GIL). The other entries come in blocks of one
directory's entries, each read whole into a slot of shared memory with its manifest lines
(or, one by one, are gathered into one): writer processes (see resurgo.engine.writer)
check them against their frame and manifest lines and turn them into files on every core.
Each file's content is hashed as it is written and compared with the digest that follows
it in the archive, which is compared with the manifest's.

Nothing leaves the target, whatever the archive (see Confinement in resurgo.engine): the
reader refuses an entry out of walk order or listed twice (_SetRestore.follows) before it
goes anywhere, the writers do the same within their run, and every piece of metadata is
set through a descriptor of the object just made.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import mmap
import os
import subprocess
import sys
import tempfile
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent import futures
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, cast

import resurgo
from resurgo import digest as content_digest
from resurgo import run
from resurgo.engine.errors import ArchiveDamaged, ArchiveError, RestoreFailed, UnsafePath
from resurgo.engine.kept import Kept
from resurgo.engine.manifest import decode_entry
from resurgo.engine.names import (
    ROOT,
    BadPath,
    components,
    escape,
    order_key,
    parent_of,
    unescape,
)
from resurgo.engine.pipes import DecompressedReader, Written
from resurgo.engine.records import (
    DIGEST_SIZE,
    DIR,
    FILE,
    HARDLINK,
    MAX_BLOCK,
    MAX_BLOCK_ENTRIES,
    Block,
    FormatError,
    Header,
    RecordReader,
    decode_header,
    decode_raw,
    encode_header,
)
from resurgo.engine.source import ManifestStream, Source
from resurgo.engine.targets import DirCache, replace
from resurgo.engine.writer import (
    Applier,
    check_against,
    error_from,
    failed_order,
    message,
    pwrite_all,
    warn_if_slow,
)
from resurgo.progress import TALLY_ENTRIES, Tally

# A large file goes out in chunks that stay in the CPU's cache from the pipe's read,
# through the hash, to the write: with 1 MiB chunks (4 in flight) the kernel's copy into the
# page cache cost a second more of a 2 GB restore on this project's 2-core machine.
CHUNK = 256 << 10
SMALL = 1 << 20  # files with more data are written by the reader itself, streaming
SLOT = MAX_BLOCK + (1 << 20)  # a block, its manifest lines and its directory's path
SLOT_RECORDS = MAX_BLOCK_ENTRIES  # a slot goes out at this many records even when not full


def _update(hasher: content_digest.Hasher, chunk: bytes) -> None:
    hasher.update(chunk)


@dataclass(frozen=True)
class RestoreResult:
    set_id: str
    entries: int
    files: int
    data_bytes: int
    archives: tuple[tuple[str, Written], ...]  # (name, bytes read)
    warnings: tuple[str, ...] = field(default=())  # e.g. attributes the target refused


# The writers' interpreter is isolated (-I: no current directory or script directory on
# its path, no PYTHON* variables, no user site): a resurgo/ planted where an administrator
# runs `recover` is never imported as root. It imports resurgo (and blake3, which the
# rescue image keeps beside it on PYTHONPATH, which -I ignores) from where this process
# did, given explicitly.
_WRITER_MAIN = ("import sys, importlib; n = int(sys.argv[1]); sys.path[:0] = sys.argv[2:2 + n]; "
                "sys.exit(importlib.import_module(sys.argv[2 + n]).main(sys.argv[3 + n:]))")


def writer_command(module: str = "resurgo.engine.writer") -> list[str]:
    """The argv that starts a writer process (``module``'s main: the restore's writer, or
    the package pool's), its own arguments to follow."""
    roots = [Path(resurgo.__file__).resolve().parent.parent]
    blake3 = sys.modules.get("blake3")
    if blake3 is not None and blake3.__file__ is not None:
        found = Path(blake3.__file__).resolve()
        roots.append(found.parent.parent if found.name == "__init__.py" else found.parent)
    paths = list(dict.fromkeys(str(p) for p in roots))
    return [sys.executable, "-I", "-c", _WRITER_MAIN, str(len(paths)), *paths, module]


def default_writers() -> int:
    return min(8, os.cpu_count() or 1)


class _Writers:
    """Writer processes and the shared slots they read records from, started on first
    need: a small restore never starts them."""

    def __init__(self, target_fd: int, count: int, applier: Applier) -> None:
        self.target_fd = target_fd
        self.count = count
        self.applier = applier  # the reader's own, for what never goes to a process
        self.archive = applier.archive
        self.procs: list[tuple[subprocess.Popen[bytes], IO[bytes], IO[bytes], IO[bytes]]] = []
        self.pending: deque[tuple[int, int]] = deque()  # (writer, slot) in dispatch order
        self.slots = max(2, 3 * count)
        self.memfd = os.memfd_create("resurgo-restore", os.MFD_CLOEXEC)
        os.ftruncate(self.memfd, self.slots * SLOT)
        self.area = mmap.mmap(self.memfd, self.slots * SLOT)
        self.view = memoryview(self.area)
        self.free = list(range(self.slots))
        self.hasher = ThreadPoolExecutor(1, thread_name_prefix="hash")
        self.writes = ThreadPoolExecutor(1, thread_name_prefix="write")
        self.next_writer = 0
        self.load: list[int] = []  # slots dispatched to each writer and not yet done
        self.warnings: list[str] = []
        self.files = 0  # made by the writers (and by apply here)
        self.data_bytes = 0

    def slot(self) -> int:
        """A free slot, waiting for a writer to finish one when none is."""
        while not self.free:
            self._collect()
        return self.free.pop()

    def memory(self, slot: int) -> memoryview:
        return self.view[slot * SLOT:(slot + 1) * SLOT]

    def dispatch(self, slot: int, size: int, lines: bytes, parent: bytes, entries: int,
                 payload: int) -> None:
        """Hand on the ``entries`` entries of ``parent`` in the first ``size`` bytes of a
        slot, with their manifest lines (see Applier.apply); the slot is free again when
        they are made. The lines and the path must fit in the rest of the slot."""
        memory = self.memory(slot)
        if self.count and not self.procs:
            self._start()
        if self.count == 0:
            self.made(self.applier.apply(memory[:size], lines, parent, entries, payload))
            self.free.append(slot)
            return
        end = size + len(lines)
        memory[size:end] = lines
        memory[end:end + len(parent)] = parent
        # To the writer with the fewest slots waiting (ties in turn): a slot of many tiny
        # files takes longer than one of a few bigger ones.
        start = self.next_writer
        writer = min(range(self.count),
                     key=lambda i: (self.load[i], (i - start) % self.count))
        self.next_writer = (writer + 1) % self.count
        self.load[writer] += 1
        stdin = self.procs[writer][1]
        try:
            stdin.write(message(slot * SLOT, size, len(lines), len(parent), entries, payload))
            stdin.flush()
        except BrokenPipeError:
            raise self._died(writer) from None
        self.pending.append((writer, slot))

    def made(self, counts: tuple[int, int]) -> None:
        self.files += counts[0]
        self.data_bytes += counts[1]

    def _start(self) -> None:
        if not os.path.isdir(f"/proc/{os.getpid()}/fd"):
            # The writers open our descriptors through /proc: without it, write here.
            self.count = 0
            return
        self.load = [0] * self.count
        for _ in range(self.count):
            stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()
            proc = run.spawn(
                [*writer_command(), str(os.getpid()), str(self.target_fd), str(self.memfd),
                 str(self.slots * SLOT), self.archive],
                stdin=-1, stdout=-1, stderr=stderr,
            )
            assert proc.stdin is not None and proc.stdout is not None
            self.procs.append((proc, proc.stdin, proc.stdout, stderr))

    def _died(self, writer: int) -> RestoreFailed:
        stderr = self.procs[writer][3]
        stderr.seek(0)
        tail = stderr.read().decode(errors="replace").strip().splitlines()[-5:]
        return RestoreFailed("a writer process stopped: " + " / ".join(tail), archive=self.archive)

    def _reply(self, writer: int) -> dict[str, object]:
        line = self.procs[writer][2].readline()
        if not line:
            raise self._died(writer)
        reply: dict[str, object] = json.loads(line)
        if "error" in reply:
            raise error_from(reply, self.archive)
        return reply

    def _collect(self) -> None:
        writer, slot = self.pending.popleft()
        reply = self._reply(writer)
        self.made((int(cast(int, reply["files"])), int(cast(int, reply["bytes"]))))
        self.load[writer] -= 1
        self.free.append(slot)

    def drain(self) -> None:
        while self.pending:
            self._collect()

    def finish(self) -> None:
        self.drain()
        for writer, (proc, stdin, _, _) in enumerate(self.procs):
            stdin.write(message(0, 0, 0, 0, 0, 0))
            stdin.flush()
            reply = self._reply(writer)
            warnings = reply.get("warnings")
            if isinstance(warnings, list):
                self.warnings += [str(w) for w in warnings]
            proc.wait()
        self.warnings += self.applier.warnings
        self._close_procs()

    def _close_procs(self) -> None:
        for proc, stdin, stdout, stderr in self.procs:
            for pipe in (stdin, stdout, stderr):
                with contextlib.suppress(OSError):
                    pipe.close()
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        self.procs = []

    def close(self) -> None:
        self._close_procs()
        self.hasher.shutdown()
        self.writes.shutdown()
        os.close(self.memfd)
        # Views of a slot may live on in an exception's traceback: the mapping then goes
        # with the last of them.
        with contextlib.suppress(BufferError):
            self.view.release()
            self.area.close()


class _SetRestore:
    """The extraction of one set's archive, merged with the manifest's entries of that set."""

    def __init__(self, target_fd: int, name: str, writers: _Writers, dirs: Kept,
                 links: Kept) -> None:
        self.name = name
        self.dirs_cache = DirCache(target_fd, name)
        self.writers = writers
        self.dirs = dirs
        self.links = links
        self.files = 0  # made here (the writers count theirs)
        self.data_bytes = 0
        self.entries = 0
        self.parent: bytes | None = None  # of the last entry handed on, made already
        # The slot being filled entry by entry: records, lines, count and payload bytes.
        self.slot: int | None = None
        self.used = 0
        self.lines: list[bytes] = []
        self.lines_size = 0
        self.records = 0
        self.payload = 0
        self.hasher = writers.hasher
        self.writes = writers.writes
        self.last_key: bytes | None = None  # order_key of the last entry handed on
        self.last_leaf = b""  # its path + "/" when it is not a directory
        # Told how far the restore is (with the bytes of the large file being written):
        # every TALLY_ENTRIES entries and every chunk of a large file, never per entry.
        self.tell: Callable[[int], None] | None = None
        self.tell_at = 1 << 62

    def follows(self, path: bytes, kind: str, last: bytes | None = None) -> None:
        """Entries come in strict walk order, each path once (a run's own order is
        checked by whoever makes it: ``last`` is its last path): refused otherwise, before
        anything of it is made, so that no two processes ever make one name. Nothing is
        inside what is not a directory (in walk order it would come right after it), and
        the root is one."""
        key = order_key(path)
        if self.last_key is not None and key <= self.last_key:
            raise failed_order(self.name, path)
        if path == ROOT and kind != DIR:
            raise UnsafePath(self.name, escape(path), "the root that is not a directory")
        if self.last_leaf and path.startswith(self.last_leaf):
            raise UnsafePath(self.name, escape(path), "inside an entry that is not a directory")
        self.last_key = key if last is None else max(key, order_key(last))
        self.last_leaf = b"" if kind == DIR else (last or path) + b"/"

    def run(self, rr: RecordReader, wanted: Iterator[tuple[bytes, int, str]], *,
            partial: bool = False) -> bool:
        """Extract the archive's entries that ``wanted`` (path, set, manifest line) lists.
        ``partial`` (a selection of the tree): stop reading once the last of them is
        made, rather than at the archive's end. Whether the archive was read whole."""
        w = next(wanted, None)
        while (found := rr.next_raw()) is not None:
            if partial and w is None:
                self.flush()
                return False
            if self.entries >= self.tell_at:
                self.told()
            raw, kind, path, payload = found
            self.follows(path, kind)  # all of them, also those another set's manifest takes
            if w is not None and path == w[0]:
                self.extract(rr, raw, kind, path, payload, w[2].encode())
                self.entries += 1
                w = next(wanted, None)
                continue
            if w is not None and order_key(path) > order_key(w[0]):
                raise ArchiveDamaged(self.name, "the archive lacks an entry of its manifest",
                                     [escape(w[0])])
            rr.skip(payload)
        if w is not None:
            raise ArchiveDamaged(self.name, "the archive lacks an entry of its manifest",
                                 [escape(w[0])])
        self.flush()
        return True

    def run_paired(self, rr: RecordReader, lines: Iterator[bytes]) -> None:
        """A chain of one set: its archive holds exactly the manifest's entries, in the
        same order, so each record goes with the next line, unparsed here. Whoever
        handles the record decodes the line and checks that both say the same. A block
        goes whole, with as many lines."""
        while (item := rr.next_item()) is not None:
            if self.entries >= self.tell_at:
                self.told()
            if isinstance(item, Block):
                taken = list(itertools.islice(lines, item.entries))
                if len(taken) < item.entries or not self.block(rr, item, taken):
                    # Entry by entry: the one the manifest lacks is named, and lines too
                    # long for a slot go with fewer entries each.
                    rr.open_block()
                    lines = itertools.chain(taken, lines)
                continue
            raw, kind, path, payload = item
            line = next(lines, None)
            if line is None:
                raise ArchiveDamaged(self.name, "the archive holds more than its manifest lists",
                                     [escape(path)])
            self.follows(path, kind)
            self.extract(rr, raw, kind, path, payload, line)
            self.entries += 1
        line = next(lines, None)
        if line is not None:
            text = line.decode("utf-8", "replace")
            raise ArchiveDamaged(self.name, "the archive lacks an entry of its manifest",
                                 [text.split("\t")[1] if "\t" in text else text[:80]])
        self.flush()

    def told(self, writing: int = 0) -> None:
        """Tell the progress; ``writing``: the bytes of the large file being written."""
        assert self.tell is not None
        self.tell_at = self.entries + TALLY_ENTRIES
        self.tell(writing)

    def block(self, rr: RecordReader, block: Block, lines: list[bytes]) -> bool:
        """A block, whole, to a writer; False when its lines do not fit in a slot."""
        text = b"".join(lines)
        if block.size + len(text) + len(block.parent) > SLOT:
            return False
        # Each entry is checked to be its line by the writer, which checks the order of
        # the lines too: here, the order from the last entry to this block.
        first = self.line_path(lines[0])
        if parent_of(first) != block.parent:  # the writer would refuse it, after make_parent
            raise ArchiveDamaged(self.name, "an entry that does not belong in its block",
                                 [escape(first)])
        self.follows(first, FILE, self.line_path(lines[-1]))
        self.flush()
        self.make_parent(block.parent)
        slot = self.writers.slot()
        rr.read_block_into(self.writers.memory(slot)[:block.size])
        self.writers.dispatch(slot, block.size, text, block.parent, block.entries,
                              block.payload_bytes)
        self.entries += block.entries
        return True

    def line_path(self, line: bytes) -> bytes:
        try:
            path = line.split(b"\t", 2)[1]
            return unescape(path.decode("utf-8", "surrogateescape")) if b"\\" in path else path
        except (IndexError, BadPath):
            raise ArchiveDamaged(self.name, "a malformed manifest line") from None

    def make_parent(self, parent: bytes) -> None:
        # Made now, in order: the writers only ever open existing directories.
        if parent != self.parent:
            self.dirs_cache.fd(components(parent))
            self.parent = parent

    def flush(self) -> None:
        if self.slot is not None:
            assert self.parent is not None
            self.writers.dispatch(self.slot, self.used, b"".join(self.lines), self.parent,
                                  self.records, self.payload)
            self.slot = None

    def extract(self, rr: RecordReader, raw: bytes, kind: str, path: bytes, payload: int,
                line: bytes) -> None:
        if kind in (DIR, HARDLINK) or path == ROOT or (
            kind == FILE and payload - DIGEST_SIZE > SMALL
        ):
            self.extract_here(rr, raw, payload, line)
            return
        head, slash, _ = path.rpartition(b"/")
        parent = head if slash else ROOT
        if parent != self.parent:
            self.flush()  # a slot holds the entries of one directory
            self.make_parent(parent)
        size = len(raw) + payload
        if size + len(line) + len(parent) > SLOT:
            # A header with huge attributes: not worth a slot of its own.
            self.flush()
            buf = bytearray(raw) + rr.read_exact(payload)
            self.writers.made(self.writers.applier.apply(memoryview(buf), line, parent, 1,
                                                         payload))
            return
        if self.slot is not None and (
            self.used + size + self.lines_size + len(line) + len(parent) > SLOT
            or self.records >= SLOT_RECORDS
        ):
            self.flush()
        if self.slot is None:
            self.slot = self.writers.slot()
            self.used = self.lines_size = self.records = self.payload = 0
            self.lines = []
        memory = self.writers.memory(self.slot)
        start = self.used
        memory[start:start + len(raw)] = raw
        start += len(raw)
        if payload:
            rr.read_into(memory[start:start + payload])
        self.used = start + payload
        self.lines.append(line)
        self.lines_size += len(line)
        self.records += 1
        self.payload += payload

    def extract_here(self, rr: RecordReader, raw: bytes, payload: int, line: bytes) -> None:
        """Directories, hard links and large files: by the reader itself."""
        h = decode_raw(raw)
        if payload != h.payload_size:
            raise FormatError(f"entry payload of {payload} bytes, its header says "
                              f"{h.payload_size}")
        e = decode_entry(line.decode("utf-8", "surrogateescape"))
        if h.kind == FILE:
            check_against(h, e, None, self.name)  # the digest follows the data
            self.large_file(rr, h, bytes.fromhex(e.digest))
            self.files += 1
            self.data_bytes += payload - DIGEST_SIZE
            return
        check_against(h, e, None, self.name)
        if h.kind == HARDLINK:
            # The first path of its group, made already: never one still to come, never
            # the root (a directory, which no file is a link of).
            if h.target == ROOT:
                raise UnsafePath(self.name, escape(h.path), "a hard link to the root")
            if order_key(h.target) >= order_key(h.path):
                raise UnsafePath(self.name, escape(h.path),
                                 "a hard link to a path that is not before it")
            self.links.append(h.path + b"\0" + h.target)  # a path holds no NUL
            return
        if h.path != ROOT:
            parts = components(h.path)
            parent = self.dirs_cache.fd(parts[:-1])
            # It exists already: lost+found of a fresh ext4, or a restore over a tree.
            with contextlib.suppress(FileExistsError):
                os.mkdir(parts[-1], 0o700, dir_fd=parent)
        self.dirs.append(encode_header(h))

    def large_file(self, rr: RecordReader, h: Header, expected: bytes) -> None:
        parts = components(h.path)
        dir_fd = self.dirs_cache.fd(parts[:-1])
        applier = self.writers.applier
        sparse = not (len(h.extents) == 1 and h.extents[0] == (0, h.size))
        if sparse:
            applier.spend_holes(h)
        # Its data must fit in what is free (root may use the reserved blocks): said
        # now rather than after writing what fits.
        fs = os.fstatvfs(dir_fd)
        if h.data_size > fs.f_bfree * fs.f_frsize:
            raise RestoreFailed(
                f"{escape(h.path)} holds {h.data_size} bytes of data, the target has "
                f"{fs.f_bfree * fs.f_frsize} free", archive=self.name,
                paths=(escape(h.path),))
        try:
            fd = applier.create(dir_fd, parts[-1], 0o600)
        except OSError as e:
            raise RestoreFailed(f"cannot create {escape(h.path)}: {e.strerror}",
                                archive=self.name, paths=(escape(h.path),)) from None
        # The hash and the writes run in threads of their own while this one reads the
        # next chunk: the hasher, os.pwrite and the pipe's read all release the GIL.
        pending: deque[Future[None]] = deque()
        try:
            if sparse:
                applier.truncate(fd, h.size, h.path)
            hasher = content_digest.new()
            pos = written = 0
            zeros = content_digest.update_zeros
            for offset, length in h.extents:
                pending.append(self.hasher.submit(zeros, hasher, offset - pos))
                done = 0
                while done < length:
                    chunk = rr.read_exact(min(CHUNK, length - done))
                    pending.append(self.hasher.submit(_update, hasher, chunk))
                    pending.append(self.writes.submit(pwrite_all, fd, chunk, offset + done))
                    done += len(chunk)
                    while len(pending) > 8:
                        pending.popleft().result()
                    if self.tell is not None:
                        self.told(written + done)
                written += length
                pos = offset + length
            pending.append(self.hasher.submit(zeros, hasher, h.size - pos))
            while pending:
                pending.popleft().result()
            digest = rr.read_exact(DIGEST_SIZE)
            if digest != expected:
                raise ArchiveDamaged(self.name, "a file's digest differs from its manifest's",
                                     [escape(h.path)])
            if hasher.digest() != digest:
                raise ArchiveDamaged(self.name, "a file's content differs from its digest",
                                     [escape(h.path)])
            applier.finish_fd(fd, h)
        except OSError as e:
            raise RestoreFailed(f"cannot restore {escape(h.path)}: {e.strerror}",
                                archive=self.name, paths=(escape(h.path),)) from None
        finally:
            # No write may still be on its way when the descriptor is closed (and reused).
            for job in pending:
                job.cancel()
            futures.wait(pending)
            os.close(fd)


def _restore_set(
    target_fd: int,
    source: Source,
    set_id: str,
    wanted: Iterator[tuple[bytes, int, str]] | Iterator[bytes],
    identity: Path | str | None,
    writers: _Writers,
    dirs: Kept,
    links: Kept,
    paired: bool,
    partial: bool = False,
    tell: Callable[[_SetRestore, int], None] | None = None,
) -> tuple[_SetRestore, Written]:
    stream = source.open()
    plain: DecompressedReader | None = None
    job = _SetRestore(target_fd, source.name, writers, dirs, links)
    if tell is not None:
        job.tell = lambda writing: tell(job, writing)
        job.tell_at = TALLY_ENTRIES
    rr: RecordReader | None = None
    try:
        plain = DecompressedReader(stream, source.name, identity=identity)
        rr = RecordReader(plain.read, plain.readinto)
        found = rr.start()
        if found != set_id:
            raise ArchiveDamaged(source.name, f"it holds set {found}, the manifest names {set_id}")
        whole = True
        if paired:
            job.run_paired(rr, cast(Iterator[bytes], wanted))
        else:
            whole = job.run(rr, cast(Iterator[tuple[bytes, int, str]], wanted),
                            partial=partial)
        writers.drain()
        # A selection stops reading after its last entry: each entry made was checked
        # against its manifest line and its digest; the end record is left unread.
        return job, plain.finish() if whole else plain.consumed()
    except (FormatError, ArchiveDamaged) as e:
        # Damage shows first as whatever notices it: a framing error, a wrong digest, an
        # early end. Stop the programs and prefer their own complaint when they have one.
        if plain is None or (isinstance(e, ArchiveDamaged) and e.archive != source.name):
            raise  # not this archive's: the manifest's
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


def _finish_links(target_fd: int, links: Kept, name: str) -> None:
    sources = DirCache(target_fd, name)
    dests = DirCache(target_fd, name)
    try:
        for record in links:
            path, _, first = record.partition(b"\0")
            src_parts, dst_parts = components(first), components(path)
            try:
                src_fd = sources.fd(src_parts[:-1], create=False)
                dst_fd = dests.fd(dst_parts[:-1])
                _link(src_fd, src_parts[-1], dst_fd, dst_parts[-1])
            except OSError as e:
                raise RestoreFailed(
                    f"cannot link {escape(path)} to {escape(first)}: {e.strerror}",
                    archive=name, paths=(escape(path),)) from None
    finally:
        sources.close()
        dests.close()


def _finish_dirs(target_fd: int, dirs: Kept, applier: Applier, name: str) -> None:
    cache = DirCache(target_fd, name)
    try:
        for raw in reversed(dirs):
            h = decode_header(raw)
            parts = components(h.path)
            try:
                fd = cache.fd(parts, create=False) if parts else target_fd
                applier.finish_fd(fd, h)
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
    writers: int | None = None,
    select: Callable[[bytes], bool] | None = None,
    progress: Tally | None = None,
    before_dirs: Callable[[], None] | None = None,
) -> RestoreResult:
    """Restore the tree ``manifest`` describes into the directory ``target``.

    ``archives`` gives the archive of each set id of the manifest's chain (a mapping or a
    function). ``identity`` is the age identity file for encrypted sets. ``writers`` is
    the number of writer processes (default: one per CPU, at most 8; 0 writes everything
    from this process). Damage stops the restore with an ArchiveError naming the archive
    and the files concerned; nothing is ever written outside ``target``, which should be
    empty (a fresh file system): what is there already and not in the manifest stays.

    ``select`` restores only the entries whose path it accepts (their parents should be
    among them, or are made with mode 0700): each archive is read up to the last entry
    wanted from it, and an archive holding none of them is not read at all.
    ``progress`` is told the entries handed on and the bytes of file data written, in
    batches (resurgo.progress.Tally).
    ``before_dirs`` is called once every entry is made, before the hard links and the
    directories' metadata: what else writes into the tree meanwhile (the package pool's
    extraction) is waited for there, and an error it raises stops the restore.
    """
    lookup: Callable[[str], Source] = (
        archives.__getitem__ if isinstance(archives, Mapping) else archives
    )
    warn_if_slow()
    target_fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    applier = Applier(target_fd, manifest.name)
    pool = _Writers(target_fd, default_writers() if writers is None else writers, applier)
    dirs = Kept(target_fd)
    links = Kept(target_fd)
    read: list[tuple[str, Written]] = []
    entries = files = data_bytes = 0

    def tell(job: _SetRestore, writing: int) -> None:
        # The writers' bytes come back as they finish their slots: a little behind.
        assert progress is not None
        progress(entries + job.entries, pool.data_bytes + data_bytes + job.data_bytes + writing)

    try:
        with ManifestStream(manifest, identity) as first:
            chain = first.header.chain
            counts = [0] * len(chain)
            if len(chain) == 1 and select is None:
                counts[0] = 1  # one set holds everything: no need to count
            else:
                for path, set_index, _ in first.raw_entries():
                    if select is None or select(path):
                        counts[set_index] += 1
        try:
            sources = [lookup(set_id) for set_id in chain]
        except KeyError as e:
            raise ArchiveError(f"the archive of set {e.args[0]} is missing",
                               "give every archive of the set's chain") from None
        for index, set_id in enumerate(chain):
            if not counts[index]:
                continue
            pool.archive = applier.archive = sources[index].name
            with ManifestStream(manifest, identity) as ms:
                paired = len(chain) == 1 and select is None
                wanted = ms.entry_byte_lines() if paired else (
                    w for w in ms.raw_entries()
                    if w[1] == index and (select is None or select(w[0])))
                job, written = _restore_set(target_fd, sources[index], set_id, wanted,
                                            identity, pool, dirs, links, paired,
                                            partial=select is not None,
                                            tell=tell if progress is not None else None)
            read.append((sources[index].name, written))
            entries += job.entries
            files += job.files
            data_bytes += job.data_bytes
        pool.finish()
        files += pool.files
        data_bytes += pool.data_bytes
        if progress is not None:
            progress(entries, data_bytes)
        if before_dirs is not None:
            before_dirs()
        _finish_links(target_fd, links, manifest.name)
        _finish_dirs(target_fd, dirs, applier, manifest.name)
    finally:
        pool.close()
        applier.close()
        dirs.close()
        links.close()
        os.close(target_fd)
    return RestoreResult(chain[-1], entries, files, data_bytes, tuple(read),
                         tuple(pool.warnings))
