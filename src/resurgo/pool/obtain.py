"""Save's side of the pool: which files a set may take from packages, and the packages.

A file of the catalog (unchanged since its package installed it: resurgo.probe.catalog) is
a candidate; its package must then be had, whole and the right one:

- from the pool already, when a package of that name, version and architecture is there:
  read whole, its sha256 must be its name's, its control the package expected, and its own
  md5sums must give each file the digest the catalog has;
- else from the system's package cache (/var/cache/apt/archives), once the package
  database vouches for the file (vouch.py: its package lists' SHA256 and size, or failing
  those dpkg's md5 of every file it holds), or downloaded with the package manager's own
  command (``apt-get download``, with the saved system's sources and
  package lists, into a private directory; apt checks what it fetches against the signed
  lists). Such a package is read whole before it goes into the pool: the same checks, and
  every file the set takes from it extracted and its sha256 compared with the catalog's.

A package that cannot be had (built locally, a version the mirror no longer has) or that
fails a check leaves its files in the archive, with a note in the report.

A package once had gives back two more kinds of files than those it installs: the files of
its control archive that dpkg keeps in var/lib/dpkg/info (its maintainer scripts, md5sums,
conffiles, templates, ...: ``control_candidates``) and the package file itself where apt's
cache holds a copy (``cache_candidates``). Their sha256 is the package's own (computed as it
is read); the save takes such a file only when its content has it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import posixpath
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from resurgo import run
from resurgo.errors import ResurgoError
from resurgo.media.streams import Source
from resurgo.pool import deb, lists, vouch
from resurgo.pool.lists import PackageRef
from resurgo.pool.store import PackagePool
from resurgo.probe import catalog, dpkg

log = logging.getLogger("resurgo.pool")

CACHE = "var/cache/apt/archives"
_CHUNK = 1 << 20
MAX_NOTES = 200

Key = tuple[str, str, str]  # package, version, architecture


@dataclass(frozen=True)
class Candidate:
    """A file of the saved system that its package may give back."""

    path: str  # in the system, as the catalog has it
    key: Key
    member: str  # its path in the package, without "/" (see lists.PooledFile.source)
    md5: str  # "" where the package's md5sums say nothing of it (control, deb)
    sha256: str
    source: str = lists.DATA


def deb_name(key: Key) -> str:
    """The file name apt gives a package (":" of an epoch as "%3a")."""
    name, version, arch = key
    return f"{name}_{version.replace(':', '%3a')}_{arch}.deb"


def candidates(root: Path, entries: list[catalog.CatalogEntry]) -> dict[str, Candidate]:
    """The catalog's files that a package may give back, by system path; each with its path
    in the package (which differs where a directory symlink or a diversion moved it)."""
    wanted = {e.path: e for e in entries
              if e.sha256 is not None and e.digest.startswith("md5:")}
    try:
        diversions = dpkg.parse_diversions(
            (root / dpkg.DIVERSIONS).read_text(encoding="utf-8", errors="surrogateescape"))
    except FileNotFoundError:
        diversions = {}
    places = catalog._Places(root)
    info = root / dpkg.INFO
    out: dict[str, Candidate] = {}
    for pkg in dpkg.read_status(root) or []:
        if not pkg.installed:
            continue
        data = dpkg.read_md5sums(info, pkg)
        if data is None:
            continue
        for md5, path in dpkg.parse_md5sums(data):
            live = path
            diverted = diversions.get(path)
            if diverted is not None and diverted[1] != pkg.name:
                live = diverted[0]
            real = places.real(live)
            e = wanted.get(real) if real is not None else None
            if (e is None or real in out or e.package != pkg.name
                    or e.version != pkg.version or e.digest != f"md5:{md5}"):
                continue
            assert e.sha256 is not None and real is not None
            out[real] = Candidate(real, (pkg.name, pkg.version, pkg.architecture),
                                  path.lstrip("/"), md5, e.sha256)
    return out


@dataclass
class Checked:
    """A package read whole: its sha256 and size, and the members found as wanted."""

    sha256: str
    size: int
    good: set[str] = field(default_factory=set)
    # The control archive's files by name, with their sha256 (deb.Control.files).
    control: dict[str, str] = field(default_factory=dict)


def check_package(src: deb.Readable, key: Key, wanted: dict[str, Candidate], *,
                  data: bool) -> Checked:
    """Read a package whole: its control must be ``key``'s, its md5sums give each wanted
    member (by member path) the catalog's md5; with ``data``, each wanted member extracted
    must have the catalog's sha256. Raises DebError for a package that is not ``key``."""
    hashing = deb.Hashing(src)
    good: set[str] = set()
    seen: set[str] = set()
    control: dict[str, str] = {}

    def on_control(c: deb.Control) -> None:
        if (c.package, c.version, c.architecture) != key:
            raise deb.DebError(f"it is {c.package} {c.version} ({c.architecture}), not the "
                               f"package expected")
        for member, cand in wanted.items():
            if c.md5sums.get("/" + member) == cand.md5:
                good.add(member)
        control.update(c.files)

    def on_file(m: deb.Member) -> Callable[[deb.Limited], None] | None:
        cand = wanted.get(m.path)
        if cand is None or m.path not in good:
            return None

        def take(body: deb.Limited) -> None:
            h = hashlib.sha256()
            while chunk := body.read(_CHUNK):
                h.update(chunk)
            seen.add(m.path)
            if h.hexdigest() != cand.sha256:
                good.discard(m.path)
        return take

    deb.read_deb(hashing, on_file if data else None, on_control)
    if data:
        good &= seen  # a member its data lacks gives nothing
    hashing.drain()
    return Checked(hashing.sha256.hexdigest(), hashing.size, good, control)


def _read_source(source: Source) -> Iterator[bytes]:
    try:
        while chunk := source.read(_CHUNK):
            yield chunk
    finally:
        source.close()


@dataclass
class Obtained:
    # The packages the set may take files from, by key, with the members each gives.
    packages: dict[Key, tuple[PackageRef, frozenset[str]]] = field(default_factory=dict)
    # Their control archives' files, by name, with their sha256.
    controls: dict[Key, dict[str, str]] = field(default_factory=dict)
    added: list[PackageRef] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # How many packages were unobtainable, and their files (archived instead).
    missing: int = 0
    missing_files: int = 0

    def note(self, text: str) -> None:
        log.info("%s", text)
        if len(self.notes) < MAX_NOTES:
            self.notes.append(text)


def by_key(cands: dict[str, Candidate]) -> dict[Key, dict[str, Candidate]]:
    out: dict[Key, dict[str, Candidate]] = {}
    for c in cands.values():
        out.setdefault(c.key, {})[c.member] = c
    return out


def _label(key: Key) -> str:
    return f"{key[0]} {key[1]} ({key[2]})"


def _from_pool(pool: PackagePool, held: list[PackageRef], key: Key,
               wanted: dict[str, Candidate]) -> tuple[PackageRef, Checked] | None:
    for ref in held:
        try:
            with contextlib.closing(pool.open(ref)) as src:
                checked = check_package(src, key, wanted, data=False)
        except (deb.DebError, ResurgoError) as e:
            log.warning("the pool's %s is not usable: %s", pool.where(ref), e)
            continue
        if checked.sha256 != ref.sha256 or checked.size != ref.size:
            log.warning("the pool's %s is damaged (its sha256 is not its name's)",
                        pool.where(ref))
            continue
        return ref, checked
    return None


Vouch = Callable[[Checked], str | None]


def _cache_vouch(root: Path, path: Path, key: Key, listed: vouch.Listed | None) -> Vouch:
    """Why the package database does not vouch for a cached package (None: it does)."""
    def why(checked: Checked) -> str | None:
        if listed is not None:
            if (checked.sha256, checked.size) in listed.files:
                return None
            return ("differs from the SHA256 and size its package lists give (damaged, "
                    "or replaced since apt fetched it)")
        md5s = vouch.installed_md5s(root, key)
        if md5s is None:
            return "is known neither to the package lists nor to dpkg"
        problem = vouch.control_differs(root, key, checked.control)
        if problem is None:
            try:
                with open(path, "rb") as f:
                    problem = vouch.check_against_dpkg(f, md5s)
            except (deb.DebError, OSError) as e:
                problem = str(e)
        return None if problem is None else (
            f"is not in the package lists, and not what dpkg installed: {problem}")
    return why


def _add_local(pool: PackagePool, path: Path, key: Key, wanted: dict[str, Candidate],
               obtained: Obtained, vouched: Vouch | None = None) -> bool:
    """Check a local package file whole (data included; with ``vouched``, against what
    the package database says of it) and add it to the pool."""
    try:
        with open(path, "rb") as f:
            checked = check_package(f, key, wanted, data=True)
    except (deb.DebError, OSError) as e:
        obtained.note(f"{_label(key)}: {path.name} is not usable ({e})")
        return False
    refused = vouched(checked) if vouched is not None else None
    if refused is not None:
        obtained.note(f"{_label(key)}: the cached {path.name} {refused}: not pooled")
        return False
    if not checked.good:
        obtained.note(f"{_label(key)}: {path.name} gives none of the files as they are")
        return False
    ref = PackageRef(checked.sha256, checked.size, *key)
    pool.add_file(ref, path)
    obtained.packages[key] = (ref, frozenset(checked.good))
    obtained.controls[key] = checked.control
    obtained.added.append(ref)
    return True


def apt_argv(root: Path, work: Path) -> list[str]:
    """apt-get with the saved system's sources and lists, nothing of it written."""
    return [
        "apt-get", "-q", "-o", f"Dir={root}",
        "-o", f"Dir::State::Lists={root}/var/lib/apt/lists",
        "-o", f"Dir::State::status={root}/{dpkg.STATUS}",
        "-o", f"Dir::Cache={work}/cache", "-o", "Dir::Cache::pkgcache=",
        "-o", "Dir::Cache::srcpkgcache=", "-o", "Debug::NoLocking=1",
        "-o", "APT::Sandbox::User=root",
    ]


def download(root: Path, keys: list[Key], work: Path) -> dict[Key, Path]:
    """``apt-get download`` of these packages into work; the files it got. A batch that
    fails (one package it cannot find fails them all) is split in halves."""
    if not keys or run.which("apt-get") is None:
        return {}
    (work / "cache").mkdir(exist_ok=True)
    got: dict[Key, Path] = {}

    def batch(part: list[Key]) -> None:
        argv = [*apt_argv(root, work), "download",
                *(f"{n}:{a}={v}" for n, v, a in part)]
        result = run.run(argv, check=False, cwd=work)
        if result.returncode != 0 and len(part) > 1:
            half = len(part) // 2
            batch(part[:half])
            batch(part[half:])
            return
        for key in part:
            path = work / deb_name(key)
            if path.is_file():
                got[key] = path

    batch(keys)
    return got


def obtain(root: Path, pool: PackagePool, cands: dict[str, Candidate],
           network: bool = True) -> Obtained:
    """Every package the candidates need, found in the pool, or added to it (see the
    module docstring)."""
    obtained = Obtained()
    held: dict[Key, list[PackageRef]] = {}
    for ref in pool.packages().values():
        held.setdefault((ref.name, ref.version, ref.architecture), []).append(ref)
    wanted = by_key(cands)
    todo: list[Key] = []
    cached: dict[Key, Path] = {}
    for key in sorted(wanted):
        found = _from_pool(pool, held.get(key, []), key, wanted[key])
        if found is not None:
            obtained.packages[key] = (found[0], frozenset(found[1].good))
            obtained.controls[key] = found[1].control
            continue
        in_cache = root / CACHE / deb_name(key)
        if in_cache.is_file():
            cached[key] = in_cache
        else:
            todo.append(key)
    if cached:
        with tempfile.TemporaryDirectory(prefix="resurgo-apt-") as tmp:
            os.chmod(tmp, 0o700)
            (Path(tmp) / "cache").mkdir()
            said = vouch.listed(apt_argv(root, Path(tmp)), sorted(cached))
        for key, in_cache in cached.items():
            check = _cache_vouch(root, in_cache, key, said.get(key))
            if not _add_local(pool, in_cache, key, wanted[key], obtained, check):
                todo.append(key)
        todo.sort()
    if todo and network:
        with tempfile.TemporaryDirectory(prefix="resurgo-debs-") as tmp:
            work = Path(tmp)
            os.chmod(work, 0o700)
            got = download(root, todo, work)
            for key in todo:
                path = got.get(key)
                if path is not None and _add_local(pool, path, key, wanted[key], obtained):
                    continue
                if path is None:
                    obtained.note(f"{_label(key)}: not in the pool, the package cache or "
                                  "the package sources: its files are archived")
                obtained.missing += 1
                obtained.missing_files += len(wanted[key])
            shutil.rmtree(work / "cache", ignore_errors=True)
    else:
        for key in todo:
            obtained.note(f"{_label(key)}: not in the pool or the package cache: its files "
                          "are archived")
            obtained.missing += 1
            obtained.missing_files += len(wanted[key])
    return obtained


def control_candidates(root: Path, obtained: Obtained) -> dict[str, Candidate]:
    """dpkg's copies of the had packages' control files (var/lib/dpkg/info/<name>.<file>,
    under either of the names dpkg gives a package's files there), by system path. The
    control file itself is not one: dpkg keeps it in its status file."""
    info = root / dpkg.INFO
    try:
        present = set(os.listdir(info))
    except OSError:
        return {}
    out: dict[str, Candidate] = {}
    for pkg in dpkg.read_status(root) or []:
        key = (pkg.name, pkg.version, pkg.architecture)
        files = obtained.controls.get(key)
        if not pkg.installed or files is None:
            continue
        for member, sha256 in sorted(files.items()):
            if member == "control":
                continue
            name = next((f"{n}.{member}" for n in pkg.info_names()
                         if f"{n}.{member}" in present), None)
            if name is not None:
                path = f"/{dpkg.INFO}/{name}"
                out[path] = Candidate(path, key, member, "", sha256, lists.CONTROL)
    return out


def cache_candidates(obtained: Obtained) -> dict[str, Candidate]:
    """The had packages as apt's cache would name them, by system path: a copy there whose
    content is the package's is taken from the pool."""
    out: dict[str, Candidate] = {}
    for key, (ref, _) in obtained.packages.items():
        path = f"/{CACHE}/{deb_name(key)}"
        out[path] = Candidate(path, key, os.fsdecode(lists.WHOLE_MEMBER), "", ref.sha256,
                              lists.WHOLE)
    return out


def unit_candidates(cands: dict[str, Candidate], obtained: Obtained,
                    mountpoint: str) -> dict[bytes, tuple[Candidate, PackageRef]]:
    """The candidates below a tree's mountpoint whose package gives them, by path in it."""
    prefix = mountpoint.rstrip("/") + "/"
    out: dict[bytes, tuple[Candidate, PackageRef]] = {}
    for path, c in cands.items():
        if not path.startswith(prefix):
            continue
        held = obtained.packages.get(c.key)
        if held is None or (c.source == lists.DATA and c.member not in held[1]):
            continue
        rel = posixpath.relpath(path, mountpoint)
        out[os.fsencode(rel)] = (c, held[0])
    return out
