"""Package files that differ from their packages: a check against the package database.

The catalog lists the files whose content is still what their package says; every other
file a package installed (configuration files aside, which are the administrator's to
change) is missing, or changed since: a local change worth knowing, or a sign of
tampering. Save lists them in the set (``package-changes.txt``, in clear, covered by the
index like every file of it), its report says how many and shows the first, and
``resurgo status`` shows them for the newest set.

The file (version 1)::

    #resurgo-package-changes 1
    <changed | missing><TAB><package><TAB><path, escaped as the catalog's>
    #end <how many in all>

at most MAX_LISTED lines, sorted by path; the end line counts them all.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from resurgo.probe import catalog, dpkg, rootfs

CHANGES_NAME = "package-changes.txt"
MAGIC = "#resurgo-package-changes"
VERSION = "1"
MAX_LISTED = 1000
MAX_BYTES = 1 << 20


@dataclass(frozen=True)
class Changed:
    path: str
    package: str
    why: str  # changed (content, or not a regular file now) | missing


@dataclass(frozen=True)
class PackageChanges:
    listed: tuple[Changed, ...]
    total: int


def find(root: Path, entries: list[catalog.CatalogEntry]) -> PackageChanges:
    """The installed packages' files (no configuration file) that the catalog does not list
    as unchanged."""
    unchanged = {e.path for e in entries}
    packages = dpkg.read_status(root) or []
    places = catalog._Places(root)
    found: dict[str, Changed] = {}
    for owned in catalog.dpkg_owned(root, packages):
        real = places.real(owned.path)
        if real is None or real in unchanged or real in found:
            continue
        host = rootfs.host_path(root, real)
        why = "changed" if os.path.lexists(host) else "missing"
        found[real] = Changed(real, owned.package, why)
    rows = sorted(found.values(), key=lambda c: c.path)
    return PackageChanges(tuple(rows[:MAX_LISTED]), len(rows))


def encode(changes: PackageChanges) -> bytes:
    lines = [f"{MAGIC} {VERSION}\n"]
    lines += [f"{c.why}\t{c.package}\t{catalog.escape_path(c.path)}\n" for c in changes.listed]
    lines.append(f"#end {changes.total}\n")
    return "".join(lines).encode()


def decode(data: bytes) -> PackageChanges:
    """The list; ValueError for one that is not well formed."""
    if len(data) > MAX_BYTES:
        raise ValueError("a list of package changes larger than any")
    lines = data.decode().split("\n")
    if lines[0] != f"{MAGIC} {VERSION}" or lines[-1] != "" or len(lines) < 3:
        raise ValueError("not a list of package changes of version 1")
    end = lines[-2]
    if not end.startswith("#end ") or not end[5:].isdigit():
        raise ValueError("a list of package changes without its end line")
    rows = []
    for line in lines[1:-2]:
        fields = line.split("\t")
        if len(fields) != 3 or fields[0] not in ("changed", "missing"):
            raise ValueError(f"a bad line {line[:80]!r}")
        rows.append(Changed(catalog.unescape_path(fields[2]), fields[1], fields[0]))
    total = int(end[5:])
    if len(rows) > MAX_LISTED or total < len(rows):
        raise ValueError("a list of package changes that miscounts")
    return PackageChanges(tuple(rows), total)
