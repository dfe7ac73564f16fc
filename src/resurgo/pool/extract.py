"""Recovery's side of the pool: a tree's pooled files written from their packages.

What is written, and how it is checked, is resurgo.pool.worker's: only the files the set
lists, each at its own path, from a regular member of its package (of its data, or of its
control for dpkg's copies of control files) or from the package whole (apt's cached copy),
its digest compared with the set's, through the archive's restore's confined writer.
Every package was read whole and its sha256 compared with the set's before any disk was
touched (needs.check): here a package is read only up to its last member the set takes
(to its end when a file is a copy of it).

Packages are decompressed and written by a few worker processes at once (as the archive's
restore has its writers: each with an interpreter of its own, none waiting on another's
GIL), the largest package first. A thread here feeds each worker the packages' bytes, read
from the medium: by several threads at once from a local directory, one request at a time
from SFTP (one stream of requests). A package's xz blocks, when it has several (a kernel's),
are decoded by threads of its worker (resurgo.pool.xzblocks). Without /proc (where a worker
opens the target) the same code runs in threads of this process.

The extraction may run beside the archive's restore of the same tree (``Extraction``): it
only makes files the set lists and directories (0700), and must be over before the archive's
restore gives the directories their saved metadata (restore_tree's ``before_dirs``).
Memory stays bounded: per worker a chunk, a decompressor and at most xzblocks.AHEAD + 1
decoded blocks.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import queue
import select
import subprocess
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from resurgo import run
from resurgo.engine.errors import ArchiveDamaged, RestoreFailed
from resurgo.engine.names import escape
from resurgo.engine.restore import writer_command
from resurgo.engine.writer import MAX_WARNINGS, Applier, error_from
from resurgo.errors import ResurgoError
from resurgo.media.streams import Source
from resurgo.pool import worker, xzblocks
from resurgo.pool.lists import WHOLE, PackageRef, PooledFile
from resurgo.pool.needs import PoolNeeds, default_workers
from resurgo.pool.worker import NAME, Members, Stopped, frame

_CHUNK = worker.CHUNK


@dataclass
class Extracted:
    files: int = 0
    data_bytes: int = 0
    warnings: list[str] = field(default_factory=list)


Job = tuple[PackageRef, Members]


def _jobs(files: list[PooledFile], needs: PoolNeeds) -> list[Job]:
    """The packages to read with the members each gives, the largest package first (the
    one that takes longest starts first, the small ones fill in beside it)."""
    by_package: dict[str, Members] = {}
    for f in files:
        if f.package not in needs.packages:
            raise ArchiveDamaged(NAME, f"a pooled file names a package the set does not list "
                                 f"({f.package})", [escape(f.path)])
        if f.source == WHOLE and needs.packages[f.package].twin_sha256:
            # A twin is not the package: a copy of the package is only ever made from it.
            raise ArchiveDamaged(NAME, f"a copy of a package names one the set reads by "
                                 f"its twin ({f.package})", [escape(f.path)])
        member = (f.source, os.fsdecode(f.member))
        by_package.setdefault(f.package, {}).setdefault(member, []).append(f)
    refs = sorted((needs.packages[sha256] for sha256 in by_package),
                  key=lambda r: (-r.size, r.sha256))
    return [(ref, by_package[ref.sha256]) for ref in refs]


class _Serial:
    """A package's source read under a lock shared by the extraction's threads."""

    def __init__(self, source: Source, lock: threading.Lock) -> None:
        self._source = source
        self._lock = lock

    def read(self, n: int) -> bytes:
        with self._lock:
            return self._source.read(n)

    def close(self) -> None:
        with self._lock:
            self._source.close()


class _InProcess:
    """A worker that is a thread of this process (no /proc)."""

    def __init__(self, target_fd: int, xz_threads: int) -> None:
        # Made before any thread runs: making one reads the umask by setting it.
        self.applier = Applier(target_fd, NAME)
        self.xz_threads = xz_threads

    def run(self, ref: PackageRef, members: Members, src: Source | _Serial,
            stop: threading.Event) -> tuple[int, int, list[str]]:
        counts = worker.write_package(self.applier, ref, members, src, self.xz_threads,
                                      stop.is_set)
        warnings, self.applier.warnings = self.applier.warnings, []
        return counts[0], counts[1], warnings

    def close(self) -> None:
        self.applier.close()


class _Process:
    """A worker process (resurgo.pool.worker's main) and its pipes."""

    def __init__(self, target_fd: int, xz_threads: int) -> None:
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()
        self.proc = run.spawn(
            [*writer_command("resurgo.pool.worker"), str(os.getpid()), str(target_fd),
             str(xz_threads)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self.stderr)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.stdin: IO[bytes] = self.proc.stdin
        self.stdout: IO[bytes] = self.proc.stdout
        self.answered = select.poll()
        self.answered.register(self.stdout.fileno(), select.POLLIN)

    def _died(self) -> RestoreFailed:
        self.stderr.seek(0)
        tail = self.stderr.read().decode(errors="replace").strip().splitlines()[-5:]
        return RestoreFailed("a package pool worker process stopped: " + " / ".join(tail),
                             archive=NAME)

    def run(self, ref: PackageRef, members: Members, src: Source | _Serial,
            stop: threading.Event) -> tuple[int, int, list[str]]:
        try:
            # The worker was started by this process: the job is ours, not a medium's.
            self.stdin.write(frame(pickle.dumps((ref, members))))
            # The package's bytes until the worker answers (it has all it takes, or met a
            # problem) or the extraction stops; then the end.
            while not stop.is_set() and not self.answered.poll(0):
                chunk = src.read(_CHUNK)
                if not chunk:
                    break
                self.stdin.write(frame(chunk))
            self.stdin.write(frame(b""))
            self.stdin.flush()
        except BrokenPipeError:
            raise self._died() from None
        line = self.stdout.readline()
        if not line:
            raise self._died()
        reply = json.loads(line)
        if "error" in reply:
            if stop.is_set():
                raise Stopped
            raise error_from(reply, str(reply.get("archive") or NAME))
        warnings = [str(w) for w in reply.get("warnings", [])]
        return int(reply["files"]), int(reply["bytes"]), warnings

    def close(self) -> None:
        for pipe in (self.stdin, self.stdout):
            with contextlib.suppress(OSError):
                pipe.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.stderr.close()


class Extraction:
    """The pooled files of one tree being written (see the module docstring): started
    when made; ``wait()`` gives what was written or raises the first error met, ``stop()``
    stops what is still running (after an error elsewhere) and waits for it."""

    def __init__(self, target: Path, files: list[PooledFile], needs: PoolNeeds, *,
                 workers: int | None = None, processes: bool = True,
                 progress: Callable[[int, int], None] | None = None) -> None:
        self.needs = needs
        # Told the files and bytes written so far after each package (from the threads
        # that feed the workers, one at a time).
        self._progress = progress
        jobs = _jobs(files, needs)
        self._jobs: queue.SimpleQueue[Job] = queue.SimpleQueue()
        for job in jobs:
            self._jobs.put(job)
        self._stop = threading.Event()
        self._lock: threading.Lock | None = None if needs.pool.local else threading.Lock()
        self._errors: list[BaseException] = []
        self._result = Extracted()
        self._count_lock = threading.Lock()
        count = max(1, min(default_workers() if workers is None else workers, len(jobs)))
        # A package of several xz blocks (a kernel's) is decoded on as many threads.
        xz_threads = min(xzblocks.AHEAD, default_workers() if workers is None else workers)
        self._target_fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._workers: list[_Process | _InProcess] = []
        self._threads: list[threading.Thread] = []
        self._closed = False
        try:
            in_process = not processes or not os.path.isdir(f"/proc/{os.getpid()}/fd")
            for _ in range(count if jobs else 0):
                self._workers.append(_InProcess(self._target_fd, xz_threads) if in_process
                                     else _Process(self._target_fd, xz_threads))
            self._threads = [threading.Thread(target=self._feed, args=(w,), daemon=True,
                                              name=f"pool {n}")
                             for n, w in enumerate(self._workers)]
            for t in self._threads:
                t.start()
        except BaseException:
            self.stop()
            raise

    def _feed(self, w: _Process | _InProcess) -> None:
        try:
            while not self._stop.is_set():
                try:
                    ref, members = self._jobs.get_nowait()
                except queue.Empty:
                    return
                with contextlib.closing(self._open(ref)) as src:
                    files, data_bytes, warnings = w.run(ref, members, src, self._stop)
                with self._count_lock:
                    self._result.files += files
                    self._result.data_bytes += data_bytes
                    self._result.warnings += warnings
                    if self._progress is not None:
                        self._progress(self._result.files, self._result.data_bytes)
        except Stopped:
            pass
        except BaseException as e:  # handed to wait()
            with self._count_lock:
                self._errors.append(e)
            self._stop.set()

    def _open(self, ref: PackageRef) -> Source | _Serial:
        if self._lock is None:
            return self.needs.pool.open(ref)
        with self._lock:
            return _Serial(self.needs.pool.open(ref), self._lock)

    def wait(self) -> Extracted:
        """What was written, once every worker is done; the first error met, if any."""
        self._join()
        if self._errors:
            error = self._errors[0]
            if isinstance(error, ResurgoError) or not isinstance(error, Exception):
                raise error
            raise RestoreFailed(f"the package pool's extraction failed: {error}",
                                archive=NAME) from error
        self._result.warnings = self._result.warnings[:MAX_WARNINGS]
        return self._result

    def stop(self) -> None:
        """Stop the workers at their next member and wait for them (their errors dropped)."""
        self._stop.set()
        self._join()

    def _join(self) -> None:
        for t in self._threads:
            t.join()
        if self._closed:
            return
        self._closed = True
        for w in self._workers:
            w.close()
        os.close(self._target_fd)


def extract(target: Path, files: list[PooledFile], needs: PoolNeeds, *,
            workers: int | None = None, processes: bool = True) -> Extracted:
    """Write the pooled files into the tree at ``target`` (see the module docstring), and
    return once they are all written."""
    job = Extraction(target, files, needs, workers=workers, processes=processes)
    try:
        return job.wait()
    finally:
        job.stop()
