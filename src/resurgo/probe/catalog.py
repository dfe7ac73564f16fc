"""The catalog of unchangeable files: package-owned files that still match their package.

A file that an installed package put on disk and that nobody changed since can be
had again by reinstalling that package version; the catalog lists them, so that a
backup may leave them out and a recovery may check what it restored. A file whose
content changed since install (digest mismatch), a configuration file (dpkg
conffiles, rpm %config), anything that is not a regular file, and files no package
owns are not in it.

Sources: on dpkg systems var/lib/dpkg/status (installed packages, versions,
conffiles), var/lib/dpkg/info/<pkg>[:<arch>].md5sums (read once each) and
var/lib/dpkg/diversions (a diverted file lives where the diversion put it); on rpm
systems ``rpm --root ROOT -qa --qf ...`` with the file digests rpm recorded.

The catalog file (format version 1)
-----------------------------------
A zstd-compressed UTF-8 text file, one record a line, fields separated by one TAB.
The first line is the header::

    resurgo-catalog<TAB>1<TAB><package manager: dpkg | rpm>

then one line per file, sorted by path::

    <digest><TAB><sha256><TAB><size><TAB><mode><TAB><package><TAB><version><TAB><arch><TAB><path>

- digest: the package manager's own digest of the file, "<algorithm>:<hex>"
  (dpkg: md5; rpm: the package's FILEDIGESTALGO, usually sha256), as recorded at
  install time and verified against the file now;
- sha256: the file's SHA-256 in hex, computed in the same pass that reads the
  file for the md5 check, so the file is read once. Measured on the 2-core build
  machine (96,000 files, 4.8 GiB, warm page cache, bench/describe_bench.py), it
  adds about a third to the check (19 s -> 25 s); with a cold cache the reads
  dominate and its share is smaller. It is kept because the later steps (backup
  manifest, verify) then have a digest that is not broken, in the algorithm the
  rest of resurgo uses (ConfigFile.sha256), without reading 5 GB again.
  "-" when the writer was asked not to compute it (write_catalog(sha256=False));
- size: bytes; mode: permission bits in octal (e.g. 0755, 4755);
- package: the package name (no architecture suffix); version: the full package
  version (dpkg's, or rpm's [epoch:]version-release); arch: its architecture;
- path: absolute, as in the restored system, with every directory symlink
  resolved inside the system (/bin/sh -> /usr/bin/sh on merged /usr), so each file
  appears once, at the place a walk of the filesystem finds it. "%", control
  characters (0x00-0x1F, 0x7F) and bytes that are not UTF-8 are written as %XX.

Readers must refuse a header whose version they do not know; a new field or
meaning means a new version, never a changed version 1.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import stat
import tempfile
import urllib.parse
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from resurgo import run
from resurgo.errors import BadInput, ToolMissing
from resurgo.model import CatalogRef
from resurgo.packages import PACKAGES
from resurgo.probe import dpkg, rootfs

log = logging.getLogger(__name__)

MAGIC = "resurgo-catalog"
FORMAT_VERSION = 1
CATALOG_NAME = "catalog.zst"
CHUNK = 1024 * 1024
# Files handed to one worker at a time: big enough that the pool's own overhead
# vanishes next to the hashing, small enough to keep every thread busy to the end.
BATCH = 64

RPM_DBS = ("var/lib/rpm", "usr/lib/sysimage/rpm")
# rpm's FILEDIGESTALGO values (RFC 4880 hash ids).
RPM_ALGORITHMS = {1: "md5", 2: "sha1", 8: "sha256", 9: "sha384", 10: "sha512", 11: "sha224"}
RPMFILE_CONFIG = 1 << 0
RPMFILE_GHOST = 1 << 6
RPM_QUERY = (
    "[%{=NAME}\t%{=EPOCH}\t%{=VERSION}\t%{=RELEASE}\t%{=ARCH}\t%{=FILEDIGESTALGO}\t"
    "%{FILEDIGESTS}\t%{FILESIZES}\t%{FILEMODES}\t%{FILEFLAGS}\t%{FILENAMES}\n]"
)

_ESCAPE = re.compile("[%\x00-\x1f\x7f\udc80-\udcff]")


@dataclass(frozen=True)
class CatalogEntry:
    path: str
    package: str
    version: str
    architecture: str
    size: int
    # Permission bits (stat.S_IMODE).
    mode: int
    # The package manager's digest, "md5:<hex>" / "sha256:<hex>".
    digest: str
    sha256: str | None


@dataclass(frozen=True)
class Owned:
    """A package-owned file to check: the digest its package recorded for it."""

    path: str
    algorithm: str
    digest: str
    package: str
    version: str
    architecture: str
    size: int | None = None


# ---------------------------------------------------------------------------------------
# the line format


def escape_path(path: str) -> str:
    def one(m: re.Match[str]) -> str:
        c = ord(m.group())
        return f"%{c - 0xDC00 if c >= 0xDC80 else c:02X}"

    return _ESCAPE.sub(one, path)


def unescape_path(text: str) -> str:
    if "%" not in text:
        return text
    return urllib.parse.unquote_to_bytes(text).decode("utf-8", "surrogateescape")


def header(package_manager: str) -> str:
    return f"{MAGIC}\t{FORMAT_VERSION}\t{package_manager}\n"


def format_entry(e: CatalogEntry) -> str:
    return (
        f"{e.digest}\t{e.sha256 or '-'}\t{e.size}\t{e.mode:04o}\t{e.package}\t{e.version}\t"
        f"{e.architecture}\t{escape_path(e.path)}\n"
    )


def parse_header(line: str) -> str:
    """The package manager a header line names; BadInput for anything else."""
    fields = line.rstrip("\n").split("\t")
    if len(fields) != 3 or fields[0] != MAGIC:
        raise BadInput("not a resurgo catalog (bad header line)")
    if fields[1] != str(FORMAT_VERSION):
        raise BadInput(
            f"catalog format version {fields[1]!r} is not one this resurgo reads "
            f"({FORMAT_VERSION})",
            "use the resurgo version that wrote it, or a newer one",
        )
    return fields[2]


def parse_entry(line: str) -> CatalogEntry:
    fields = line.rstrip("\n").split("\t", 7)
    if len(fields) != 8:
        raise BadInput(f"catalog line with {len(fields)} fields, not 8: {line[:80]!r}")
    digest, sha256, size, mode, package, version, arch, path = fields
    try:
        return CatalogEntry(
            path=unescape_path(path),
            package=package,
            version=version,
            architecture=arch,
            size=int(size),
            mode=int(mode, 8),
            digest=digest,
            sha256=None if sha256 == "-" else sha256,
        )
    except ValueError as e:
        raise BadInput(f"bad catalog line {line[:80]!r}: {e}") from None


def parse_catalog(text: str) -> tuple[str, list[CatalogEntry]]:
    lines = text.splitlines()
    if not lines:
        raise BadInput("not a resurgo catalog (empty)")
    return parse_header(lines[0]), [parse_entry(line) for line in lines[1:] if line]


# ---------------------------------------------------------------------------------------
# what the package managers say


def dpkg_owned(root: Path, packages: Sequence[dpkg.Package]) -> list[Owned]:
    """Every file an installed package owns with the md5 it was installed with, minus
    conffiles; diverted files at the place the diversion moved them to."""
    try:
        diversions = dpkg.parse_diversions(
            (root / dpkg.DIVERSIONS).read_text(encoding="utf-8", errors="surrogateescape")
        )
    except FileNotFoundError:
        diversions = {}
    info = root / dpkg.INFO
    out: list[Owned] = []
    for pkg in packages:
        if not pkg.installed:
            continue
        data = dpkg.read_md5sums(info, pkg)
        if data is None:
            continue
        conffiles = set(pkg.conffiles)
        for md5, path in dpkg.parse_md5sums(data):
            if path in conffiles:
                continue
            diverted = diversions.get(path)
            if diverted is not None and diverted[1] != pkg.name:
                path = diverted[0]
            out.append(Owned(path, "md5", md5, pkg.name, pkg.version, pkg.architecture))
    return out


def parse_rpm_query(text: str) -> tuple[list[Owned], int]:
    """(files to check, installed package count) from ``rpm -qa --qf RPM_QUERY``."""
    out: list[Owned] = []
    packages: set[tuple[str, str, str]] = set()
    for line in text.splitlines():
        fields = line.split("\t", 10)
        if len(fields) != 11:
            continue
        name, epoch, ver, rel, arch, algo, digest, size, mode, flags, path = fields
        version = f"{ver}-{rel}" if epoch in ("(none)", "", "0") else f"{epoch}:{ver}-{rel}"
        packages.add((name, version, arch))
        try:
            mode_i, flags_i, size_i = int(mode), int(flags), int(size)
            algorithm = RPM_ALGORITHMS.get(int(algo) if algo != "(none)" else 1)
        except ValueError:
            continue
        if not digest or algorithm is None or not stat.S_ISREG(mode_i):
            continue
        if flags_i & (RPMFILE_CONFIG | RPMFILE_GHOST):
            continue
        out.append(Owned(path, algorithm, digest.lower(), name, version, arch, size_i))
    return out, len(packages)


def rpm_db(root: Path) -> str | None:
    """The tree's rpm database directory (absolute inside the tree), if it has one."""
    for db in RPM_DBS:
        real = rootfs.resolve(root, "/" + db)
        if real is None:
            continue
        host = rootfs.host_path(root, real)
        if host.is_dir() and any(host.iterdir()):
            return real
    return None


def rpm_owned(root: Path) -> tuple[list[Owned], int]:
    db = rpm_db(root)
    if db is None:
        return [], 0
    if run.which("rpm") is None:
        raise ToolMissing("rpm", PACKAGES.get("rpm"))
    # --dbpath names the tree's own database: the rpm running here may be built to
    # look elsewhere (Debian's looks in ~/.rpmdb).
    argv = ["rpm", "--root", str(root), "--dbpath", db, "-qa", "--qf", RPM_QUERY]
    return parse_rpm_query(run.output(argv))


# ---------------------------------------------------------------------------------------
# checking the files


class _Places:
    """Host paths of in-tree paths, directory symlinks resolved inside the tree (cached)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.dirs: dict[str, str | None] = {}

    def real(self, path: str) -> str | None:
        parent, _, name = path.rpartition("/")
        real_parent = self.dirs.get(parent, "")
        if real_parent == "":
            real_parent = rootfs.resolve(self.root, parent or "/")
            self.dirs[parent] = real_parent
        if real_parent is None or not name:
            return None
        return f"{real_parent.rstrip('/')}/{name}"


def _open(path: str) -> int:
    # O_NOATIME: a probe changes nothing, not even access times (root may use it on any file).
    try:
        return os.open(path, os.O_RDONLY | os.O_NOATIME | os.O_NOFOLLOW | os.O_CLOEXEC)
    except PermissionError:
        return os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)


def _verify(host: str, real: str, f: Owned, with_sha256: bool) -> CatalogEntry | None:
    try:
        fd = _open(host)
    except OSError:
        return None  # gone, a symlink now (O_NOFOLLOW), or unreadable: not provably unchanged
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or (f.size is not None and st.st_size != f.size):
            return None
        h = hashlib.new(f.algorithm)
        s = hashlib.sha256() if with_sha256 else None
        while chunk := os.read(fd, CHUNK):
            h.update(chunk)
            if s is not None:
                s.update(chunk)
    except OSError:
        return None
    finally:
        os.close(fd)
    if h.hexdigest() != f.digest:
        return None
    return CatalogEntry(
        path=real,
        package=f.package,
        version=f.version,
        architecture=f.architecture,
        size=st.st_size,
        mode=stat.S_IMODE(st.st_mode),
        digest=f"{f.algorithm}:{f.digest}",
        sha256=s.hexdigest() if s is not None else None,
    )


def verify(
    root: Path, owned: Iterable[Owned], *, workers: int | None = None, sha256: bool = True
) -> list[CatalogEntry]:
    """The owned files whose content still matches, sorted by path, each path once.

    hashlib releases the GIL while hashing and os.read while reading, so threads
    overlap the I/O and use every core.
    """
    places = _Places(root)
    todo: list[tuple[str, str, Owned]] = []
    seen: set[str] = set()
    for f in owned:
        real = places.real(f.path)
        if real is None or real in seen:
            continue
        seen.add(real)
        todo.append((os.fspath(rootfs.host_path(root, real)), real, f))
    batches = [todo[i : i + BATCH] for i in range(0, len(todo), BATCH)]

    def check(batch: list[tuple[str, str, Owned]]) -> list[CatalogEntry]:
        out = []
        for host, real, f in batch:
            e = _verify(host, real, f, sha256)
            if e is not None:
                out.append(e)
        return out

    n = workers or min(32, 4 * (os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=n, thread_name_prefix="catalog") as pool:
        found = [e for batch in pool.map(check, batches) for e in batch]
    found.sort(key=lambda e: e.path)
    return found


# ---------------------------------------------------------------------------------------
# writing and reading catalog files


def package_manager(root: Path) -> str | None:
    if (root / dpkg.STATUS).is_file():
        return "dpkg"
    if rpm_db(root) is not None:
        return "rpm"
    return None


def collect(
    root: Path, *, workers: int | None = None, sha256: bool = True
) -> tuple[str, list[CatalogEntry]] | None:
    """(package manager, entries) of the tree at root; None without a package database."""
    manager = package_manager(root)
    if manager == "dpkg":
        packages = dpkg.read_status(root) or []
        owned = dpkg_owned(root, packages)
    elif manager == "rpm":
        owned, _ = rpm_owned(root)
    else:
        return None
    return manager, verify(root, owned, workers=workers, sha256=sha256)


def write_file(path: Path, manager: str, entries: Iterable[CatalogEntry]) -> str:
    """Write a catalog file (atomically); its sha256."""
    run.require("zstd")
    text = header(manager) + "".join(format_entry(e) for e in entries)
    # zstd makes its output anew with the umask's mode (0666 under umask 0): it writes in a
    # directory of ours (0700) so that nobody else can open the file before it is 0600,
    # private like the description beside it.
    work = tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent)
    tmp = os.path.join(work, path.name)
    try:
        run.run(["zstd", "-q", "-f", "-T0", "-o", tmp, "-"], input=text)
        os.chmod(tmp, 0o600)
        digest = hashlib.sha256(Path(tmp).read_bytes()).hexdigest()
        os.replace(tmp, path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return digest


def write_catalog(
    root: Path,
    directory: Path,
    name: str = CATALOG_NAME,
    *,
    workers: int | None = None,
    sha256: bool = True,
    warnings: list[str] | None = None,
) -> CatalogRef | None:
    """Catalog the tree at root into directory/name (beside the description).

    None, with a warning, when the tree has no package database resurgo knows.
    The CatalogRef's path is relative to directory, where the description lives.
    """
    result = collect(root, workers=workers, sha256=sha256)
    if result is None:
        message = f"{root}: no dpkg or rpm database, so no catalog of package files"
        if warnings is None:
            log.warning("%s", message)
        else:
            warnings.append(message)
        return None
    manager, entries = result
    digest = write_file(directory / name, manager, entries)
    return CatalogRef(
        path=name,
        sha256=digest,
        files=len(entries),
        packages=len({(e.package, e.architecture) for e in entries}),
        package_manager=manager,
    )


def read_catalog(path: Path) -> Iterator[CatalogEntry]:
    """The entries of a catalog file; BadInput when it is not one this version reads."""
    if not path.is_file():
        raise BadInput(f"{path}: no such catalog file")
    result = run.run(["zstd", "-q", "-d", "-c", "--", str(path)], check=False)
    if result.returncode != 0:
        raise BadInput(f"{path}: not a zstd-compressed catalog ({result.stderr.strip()})")
    _, entries = parse_catalog(result.stdout)
    yield from entries
