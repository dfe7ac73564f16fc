"""verify --packages ROOT: a system's package files against the catalog of a set.

Like debsums, without trusting the checked system's package database: the reference is the
catalog saved in the set (its digest in the description, the description's in the set's
signed index), which lists each package file with its sha256 and mode. Each is read under
ROOT (never through a symbolic link at its last component) and compared: missing, not a
regular file, its content (sha256) or its permission bits differ.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from resurgo.errors import Damaged, ExitCode, OperationFailed
from resurgo.probe import catalog, rootfs
from resurgo.recovery.load import LoadedSet

_CHUNK = 1 << 20
MAX_SHOWN = 10000


@dataclass(frozen=True)
class PackageMismatch:
    path: str
    what: str  # missing, kind, content, mode
    package: str
    expected: str = ""
    actual: str = ""

    def line(self) -> str:
        more = f" (expected {self.expected}, found {self.actual})" if self.expected else ""
        return f"{self.path}: {self.what}{more} [{self.package}]"


@dataclass(frozen=True)
class PackageCheck:
    set_id: str
    root: Path
    files: int
    mismatches: tuple[PackageMismatch, ...]
    total: int
    seconds: float

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.OK if not self.total else ExitCode.FAILED

    def text(self) -> str:
        lines = [f"package files of {self.root} against the catalog of set {self.set_id}: "
                 f"{self.files} checked in {self.seconds:.1f} s"]
        lines += [f"  {m.line()}" for m in self.mismatches]
        if self.total > len(self.mismatches):
            lines.append(f"  ... and {self.total - len(self.mismatches)} more")
        lines.append("verified: every package file is its package's" if not self.total
                     else f"{self.total} package file(s) differ")
        return "\n".join(lines) + "\n"

    def data(self) -> dict[str, Any]:
        return {"set": self.set_id, "root": str(self.root), "files": self.files,
                "ok": not self.total, "differences": self.total,
                "mismatches": [{"path": m.path, "what": m.what, "package": m.package,
                                "expected": m.expected, "actual": m.actual}
                               for m in self.mismatches],
                "seconds": round(self.seconds, 3)}


def _one(root: Path, e: catalog.CatalogEntry) -> PackageMismatch | None:
    host = rootfs.host_path(root, e.path)
    try:
        fd = os.open(host, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return PackageMismatch(e.path, "missing", e.package)
    except OSError as err:
        if os.path.lexists(host):
            return PackageMismatch(e.path, "kind", e.package, "a regular file",
                                   "a symbolic link" if os.path.islink(host) else
                                   err.strerror or "unreadable")
        return PackageMismatch(e.path, "missing", e.package)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return PackageMismatch(e.path, "kind", e.package, "a regular file",
                                   "something else")
        h = hashlib.sha256()
        while chunk := os.read(fd, _CHUNK):
            h.update(chunk)
    finally:
        os.close(fd)
    if e.sha256 is not None and h.hexdigest() != e.sha256:
        return PackageMismatch(e.path, "content", e.package, e.sha256, h.hexdigest())
    if stat.S_IMODE(st.st_mode) != e.mode:
        return PackageMismatch(e.path, "mode", e.package, f"{e.mode:04o}",
                               f"{stat.S_IMODE(st.st_mode):04o}")
    return None


def check_packages(loaded: LoadedSet, root: Path) -> PackageCheck:
    start = time.monotonic()
    ref = loaded.description.catalog
    if ref is None:
        raise OperationFailed(f"set {loaded.id} has no catalog of package files to check "
                              "against", "save with the catalog (without --no-catalog)")
    data = loaded.reader.read_bytes(ref.path)
    if hashlib.sha256(data).hexdigest() != ref.sha256:
        raise Damaged(f"the catalog of set {loaded.id} is not the one its description "
                      "names", "use another set")
    with tempfile.TemporaryDirectory(prefix="resurgo-catalog-") as tmp:
        path = Path(tmp) / "catalog.zst"
        path.write_bytes(data)
        entries = list(catalog.read_catalog(path))
    files, found = check_tree(root, entries)
    return PackageCheck(loaded.id, root, files, tuple(found[:MAX_SHOWN]), len(found),
                        time.monotonic() - start)


def check_tree(root: Path, entries: list[catalog.CatalogEntry]
               ) -> tuple[int, list[PackageMismatch]]:
    """(files checked, what differs) of the tree at root against catalog entries."""
    with ThreadPoolExecutor(max_workers=min(16, 4 * (os.cpu_count() or 1))) as pool:
        found = [m for m in pool.map(lambda e: _one(root, e), entries, chunksize=64)
                 if m is not None]
    return len(entries), found
