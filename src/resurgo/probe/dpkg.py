"""dpkg's database, read directly: var/lib/dpkg/status, info/*.md5sums, diversions.

Reading the files (rather than running dpkg-query) works on any tree, including a
system mounted at --root whose dpkg cannot run here, and lets the catalog read
each md5sums file exactly once. The formats are dpkg's stable on-disk interface
(deb-control(5)-style paragraphs in status; "md5<two spaces>path" in md5sums).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

STATUS = "var/lib/dpkg/status"
INFO = "var/lib/dpkg/info"
DIVERSIONS = "var/lib/dpkg/diversions"


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    architecture: str
    # The third word of Status: installed, config-files, half-installed, ...
    state: str
    multi_arch: str = ""
    # Conffile paths (absolute, as dpkg lists them): configuration, free to change.
    conffiles: tuple[str, ...] = ()

    @property
    def installed(self) -> bool:
        return self.state == "installed"

    def info_names(self) -> tuple[str, str]:
        """The two names dpkg may have used for this package's info files.

        Multi-Arch: same packages have "name:arch" files; the others have plain
        "name" files on current dpkg (older databases may use either).
        """
        qualified = f"{self.name}:{self.architecture}"
        if self.multi_arch == "same":
            return qualified, self.name
        return self.name, qualified


def paragraphs(text: str) -> Iterator[dict[str, str]]:
    """deb822 paragraphs as field -> value; continuation lines keep their newline."""
    fields: dict[str, str] = {}
    key: str | None = None
    for line in text.splitlines():
        if not line.strip():
            if fields:
                yield fields
            fields, key = {}, None
        elif line[0] in " \t":
            if key is not None:
                fields[key] += "\n" + line.strip()
        elif ":" in line:
            key, _, value = line.partition(":")
            key = key.strip()
            fields[key] = value.strip()
    if fields:
        yield fields


def parse_status(text: str) -> list[Package]:
    packages = []
    for fields in paragraphs(text):
        name = fields.get("Package")
        if not name:
            continue
        status = fields.get("Status", "").split()
        conffiles = tuple(
            line.split()[0] for line in fields.get("Conffiles", "").splitlines() if line.strip()
        )
        packages.append(
            Package(
                name=name,
                version=fields.get("Version", ""),
                architecture=fields.get("Architecture", ""),
                state=status[2] if len(status) == 3 else "",
                multi_arch=fields.get("Multi-Arch", ""),
                conffiles=conffiles,
            )
        )
    return packages


def parse_md5sums(data: bytes) -> list[tuple[str, str]]:
    """(md5, absolute path) pairs of one info/*.md5sums file.

    Paths are bytes on disk; they are decoded with surrogateescape so that a
    name that is not UTF-8 still reaches the file it names.
    """
    out = []
    for raw in data.splitlines():
        md5, sep, path = raw.partition(b"  ")
        if not sep or len(md5) != 32:
            continue
        out.append((md5.decode("ascii").lower(), "/" + path.decode("utf-8", "surrogateescape")))
    return out


def parse_diversions(text: str) -> dict[str, tuple[str, str]]:
    """Diverted path -> (where the diverted file now lives, the diverting package).

    The file is a sequence of three-line records: from, to, package (":" for a
    local diversion made by the administrator).
    """
    lines = text.splitlines()
    out: dict[str, tuple[str, str]] = {}
    for i in range(0, len(lines) - 2, 3):
        out[lines[i]] = (lines[i + 1], lines[i + 2])
    return out


def read_md5sums(info: Path, pkg: Package) -> bytes | None:
    """The package's md5sums file in dpkg's info directory, under either of its names
    (None when it has none: a package without files, or one that ships no md5sums)."""
    for name in pkg.info_names():
        try:
            return (info / f"{name}.md5sums").read_bytes()
        except FileNotFoundError:
            continue
    return None


def read_status(root: Path) -> list[Package] | None:
    """The packages of the tree at root, or None when it has no dpkg database."""
    path = root / STATUS
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return None
    return parse_status(text)


def installed_names(root: Path) -> set[str]:
    """Names of the installed packages (empty without a dpkg database)."""
    return {p.name for p in read_status(root) or () if p.installed}
