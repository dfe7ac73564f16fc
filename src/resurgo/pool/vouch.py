"""What the package database says a cached package is, checked before it enters the pool.

apt checks what it downloads against its package lists (whose index the signed Release
file covers), not what it finds in the package cache (/var/cache/apt/archives) later: a
file there may have been damaged, or replaced by anyone who could write the cache. So a
cached package enters the pool only when the saved system's package database vouches for
it:

- its package lists (apt's, of the saved system: ``apt-cache show`` with its sources,
  lists and status) give that package version's SHA256 and size: the file must have both.
  A file that differs is refused, whatever else it holds;
- when the lists no longer know that version (a point release replaced it, or the lists
  were cleaned), dpkg's own record of the installed package: every regular file in its
  data must have the md5 that dpkg's md5sums gives it, or, for a configuration file, its
  status (the md5 of the file as the package shipped it), and every file of its control
  archive (maintainer scripts, md5sums, conffiles, triggers, ...; the control file aside,
  which dpkg keeps in its status) the content of dpkg's copy in var/lib/dpkg/info. A file
  dpkg does not list for the package, or one that differs, refuses it.

A package refused here is downloaded instead (``apt-get download``, which checks it), and
failing that its files are archived; the save's report notes which and why.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from resurgo import run
from resurgo.errors import ResurgoError
from resurgo.pool import deb
from resurgo.probe import dpkg

log = logging.getLogger("resurgo.pool")

Key = tuple[str, str, str]  # package, version, architecture
_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX32 = re.compile(r"[0-9a-f]{32}")
_CHUNK = 1 << 20
# apt-cache's answer for a few thousand packages is a few MiB; more is not its answer.
MAX_SHOW = 64 << 20


@dataclass(frozen=True)
class Listed:
    """What the package lists say of one package version: its file's SHA256s and sizes
    (more than one when two sources carry different builds of it)."""

    files: frozenset[tuple[str, int]]


def parse_show(text: str, keys: set[Key]) -> dict[Key, Listed]:
    """apt-cache show's paragraphs, for the keys asked: each one's SHA256 and size (a
    paragraph without both, as an installed package's status gives, says nothing)."""
    found: dict[Key, set[tuple[str, int]]] = {}
    for fields in dpkg.paragraphs(text):
        key = (fields.get("Package", ""), fields.get("Version", ""),
               fields.get("Architecture", ""))
        sha256 = fields.get("SHA256", "").lower()
        size = fields.get("Size", "")
        if key in keys and _HEX64.fullmatch(sha256) and size.isdigit():
            found.setdefault(key, set()).add((sha256, int(size)))
    return {k: Listed(frozenset(v)) for k, v in found.items()}


def listed(apt_argv: list[str], keys: list[Key]) -> dict[Key, Listed]:
    """What the saved system's package lists say of these package versions (those they
    do not know are absent). ``apt_argv``: apt with the saved system's configuration
    (obtain.apt_argv), whose first word is replaced by apt-cache."""
    if not keys or run.which("apt-cache") is None:
        return {}
    argv = ["apt-cache", *apt_argv[1:], "show", "--no-all-versions",
            *(f"{n}:{a}={v}" for n, v, a in keys)]
    try:
        # A version the lists do not know is a note on stderr, not an error (exit 0).
        result = run.run(argv, check=False)
    except ResurgoError as e:
        log.warning("the package lists cannot be read: %s", e)
        return {}
    if result.returncode != 0 and not result.stdout:
        log.warning("apt-cache show failed (exit %d): %s", result.returncode,
                    result.stderr.strip()[-300:])
        return {}
    if len(result.stdout) > MAX_SHOW:
        log.warning("apt-cache show said more than any package list does: ignored")
        return {}
    return parse_show(result.stdout, set(keys))


def installed_md5s(root: Path, key: Key) -> dict[str, str] | None:
    """The md5 of every file dpkg recorded for the installed package (member path, without
    "/" -> md5): its md5sums, and its configuration files as shipped (status); None when
    dpkg has no record of that version installed."""
    pkg = next((p for p in dpkg.read_status(root) or []
                if (p.name, p.version, p.architecture) == key and p.installed), None)
    if pkg is None:
        return None
    out: dict[str, str] = {}
    status = (root / dpkg.STATUS).read_text(encoding="utf-8", errors="surrogateescape")
    for fields in dpkg.paragraphs(status):
        if (fields.get("Package"), fields.get("Version"), fields.get("Architecture")) == key:
            for line in fields.get("Conffiles", "").splitlines():
                words = line.split()
                if len(words) >= 2 and _HEX32.fullmatch(words[1]):
                    out[words[0].lstrip("/")] = words[1]
    for md5, path in dpkg.parse_md5sums(dpkg.read_md5sums(root / dpkg.INFO, pkg) or b""):
        out[path.lstrip("/")] = md5
    return out


def check_against_dpkg(src: deb.Readable, md5s: dict[str, str]) -> str | None:
    """None when every regular file of the package has the md5 dpkg recorded for it;
    else why not. Raises DebError for what is no package."""
    problems: list[str] = []

    def on_file(m: deb.Member) -> Callable[[deb.Limited], None] | None:
        expected = md5s.get(m.path)
        if expected is None:
            problems.append(f"{m.path} is no file dpkg lists for the package")
            return None

        def take(body: deb.Limited) -> None:
            h = hashlib.md5(usedforsecurity=False)
            while chunk := body.read(_CHUNK):
                h.update(chunk)
            if h.hexdigest() != expected:
                problems.append(f"{m.path} is not the file dpkg installed (md5)")
        return take

    deb.read_deb(src, on_file)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        return problems[0] + more
    return None


def control_differs(root: Path, key: Key, control: dict[str, str]) -> str | None:
    """None when every file of the package's control archive (name -> sha256; "control"
    aside) is dpkg's copy of it in var/lib/dpkg/info; else why not."""
    pkg = next((p for p in dpkg.read_status(root) or []
                if (p.name, p.version, p.architecture) == key and p.installed), None)
    if pkg is None:
        return "dpkg has no record of it installed"
    info = root / dpkg.INFO
    for member, sha256 in sorted(control.items()):
        if member == "control":
            continue
        for name in pkg.info_names():
            try:
                data = (info / f"{name}.{member}").read_bytes()
            except FileNotFoundError:
                continue
            if hashlib.sha256(data).hexdigest() != sha256:
                return f"its {member} is not dpkg's copy of it"
            break
        else:
            return f"its {member} is none dpkg keeps for the package"
    return None
