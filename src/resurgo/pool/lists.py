"""The two files a package-aware set adds: its packages, and each tree's pooled files (pure).

``packages.txt`` (in clear, listed and signed in the set's index like every file of it)::

    #resurgo-packages 2
    <sha256 of the .deb><TAB><size><TAB><package><TAB><version><TAB><architecture><TAB>
        <sha256 of its twin><TAB><twin's size>
    #end <number of packages>

one line per package the set needs from the medium's pool (resurgo.pool.store), sorted. It
is in clear so that prune (which holds no secret key) knows what a set needs. The twin is
the package with its members recompressed (resurgo.pool.twins), which the recovery reads
instead of the package: "-" and "-" for a package read as it is. Version 1 had no twin
fields; it is still read.

``archives/<unit>.pooled`` (zstd-compressed and, in an encrypted set, age-encrypted like the
manifest beside it)::

    #resurgo-pooled 2
    <path><TAB><mode><TAB><uid><TAB><gid><TAB><size><TAB><mtime_ns><TAB><digest><TAB>
        <sha256><TAB><package sha256><TAB><member><TAB><xattrs><TAB><from>
    #end <number of files>

one line per file of the tree left out of its archive and manifest (the manifest's header
says ``#pooled``), in walk order: the path in the tree and the metadata the system had
(st_mode in octal, owner, size, mtime), the content's digest as the manifest gives it
(BLAKE3, resurgo.digest) and its sha256 (the catalog's), the package file it is taken from
(by its sha256, which packages.txt lists) and its path in that package (escaped like the
path), its extended attributes: ``hex(name)=hex(value)`` joined by commas, empty for none,
and where in the package its content is (``from``):

- ``data``: the member of the package's data archive at <member> (a file it installs);
- ``control``: the file <member> of its control archive ("postinst", "md5sums", ...), which
  dpkg keeps as var/lib/dpkg/info/<package>.<member> byte for byte;
- ``deb``: the package file itself, whole (a copy in apt's package cache); <member> is "-".

Version 1 had no ``from`` field (every file ``data``); it is still read. Readers refuse a
version they do not know; a new field means a new version.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from resurgo.engine.manifest import Entry, xattr_digest
from resurgo.engine.names import BadPath, check_path, escape, unescape, walk_key
from resurgo.engine.records import FILE, MAX_XATTR_VALUES

PACKAGES_NAME = "packages.txt"
PACKAGES_MAGIC = "#resurgo-packages"
POOLED_MAGIC = "#resurgo-pooled"
VERSION = "2"  # of packages.txt
PACKAGES_READ = ("1", "2")
POOLED_VERSION = "2"
POOLED_READ = ("1", "2")
# Where a pooled file's content is in its package (see the module docstring).
DATA = "data"
CONTROL = "control"
WHOLE = "deb"
SOURCES = (DATA, CONTROL, WHOLE)
WHOLE_MEMBER = b"-"
# A set of a large server needs a few thousand packages: a list beyond this is not one.
MAX_PACKAGES = 1 << 20
MAX_PACKAGES_BYTES = 64 << 20
# A line holds at most a path (32 KiB), a member path and the attributes in hex.
MAX_LINE = 2 * MAX_XATTR_VALUES + (1 << 18)
_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX = re.compile(r"[0-9a-f]+")
_NAME = re.compile(r"[a-z0-9][a-z0-9+.-]*")
_VERSION = re.compile(r"[A-Za-z0-9.+~:-]+")
_ARCH = re.compile(r"[a-z0-9-]+")


class ListError(ValueError):
    """A packages or pooled list that is not well formed (damaged, or not one)."""


@dataclass(frozen=True, order=True)
class PackageRef:
    """A package file of the pool: its sha256 and size, and what it is."""

    sha256: str
    size: int
    name: str
    version: str
    architecture: str
    # Its twin's (resurgo.pool.twins), which the recovery reads instead: "" and 0 for none.
    twin_sha256: str = ""
    twin_size: int = 0

    def label(self) -> str:
        return f"{self.name} {self.version} ({self.architecture})"

    @property
    def stored_sha256(self) -> str:
        """The sha256 of the pool's file a recovery reads: the twin's, or the package's."""
        return self.twin_sha256 or self.sha256

    @property
    def stored_size(self) -> int:
        return self.twin_size if self.twin_sha256 else self.size

    def package(self) -> PackageRef:
        """The package itself, without its twin."""
        return PackageRef(self.sha256, self.size, self.name, self.version, self.architecture)

    def with_twin(self, sha256: str, size: int) -> PackageRef:
        return PackageRef(self.sha256, self.size, self.name, self.version, self.architecture,
                          sha256, size)


def check_package(p: PackageRef) -> PackageRef:
    if not (_HEX64.fullmatch(p.sha256) and _NAME.fullmatch(p.name)
            and _VERSION.fullmatch(p.version) and _ARCH.fullmatch(p.architecture)
            and p.size >= 0
            and (_HEX64.fullmatch(p.twin_sha256) and p.twin_size > 0
                 if p.twin_sha256 else p.twin_size == 0)):
        raise ListError(f"not a package a pool holds: {p}")
    return p


def encode_packages(packages: Iterable[PackageRef]) -> bytes:
    rows = sorted(set(packages))
    lines = [f"{PACKAGES_MAGIC} {VERSION}\n"]
    lines += [f"{p.sha256}\t{p.size}\t{p.name}\t{p.version}\t{p.architecture}\t"
              f"{p.twin_sha256 or '-'}\t{p.twin_size if p.twin_sha256 else '-'}\n"
              for p in map(check_package, rows)]
    lines.append(f"#end {len(rows)}\n")
    return "".join(lines).encode()


def decode_packages(data: bytes) -> tuple[PackageRef, ...]:
    if len(data) > MAX_PACKAGES_BYTES:
        raise ListError("a packages list larger than any set's")
    try:
        lines = data.decode().split("\n")
    except UnicodeDecodeError:
        raise ListError("a packages list that is not UTF-8") from None
    magic, _, version = lines[0].partition(" ")
    if magic != PACKAGES_MAGIC or version not in PACKAGES_READ:
        raise ListError(f"not a packages list of a version this reader knows "
                        f"({', '.join(PACKAGES_READ)}): {lines[0][:60]!r}")
    width = 5 if version == "1" else 7
    if lines[-1] != "":
        raise ListError("a packages list that does not end with a line end (truncated)")
    out: list[PackageRef] = []
    body = lines[1:-1]
    for n, line in enumerate(body):
        if line.startswith("#end "):
            if line != f"#end {len(out)}" or n != len(body) - 1:
                raise ListError("a packages list whose end line does not count its lines")
            return tuple(out)
        fields = line.split("\t")
        if len(fields) != width or not fields[1].isdigit():
            raise ListError(f"a bad line in a packages list: {line[:120]!r}")
        ref = PackageRef(fields[0], int(fields[1]), fields[2], fields[3], fields[4])
        if width == 7 and fields[5:] != ["-", "-"]:
            if not fields[6].isdigit():
                raise ListError(f"a bad line in a packages list: {line[:120]!r}")
            ref = ref.with_twin(fields[5], int(fields[6]))
        out.append(check_package(ref))
        if len(out) > MAX_PACKAGES:
            raise ListError("a packages list longer than any set's")
    raise ListError("a packages list without its end line (truncated)")


@dataclass(frozen=True)
class PooledFile:
    path: bytes  # in the tree, as the manifest's
    mode: int  # st_mode
    uid: int
    gid: int
    size: int
    mtime_ns: int
    digest: str  # BLAKE3, as the manifest gives a file's
    sha256: str
    package: str  # sha256 of the package file
    member: bytes  # its path in the package, without "./" (see ``source``)
    xattrs: tuple[tuple[str, bytes], ...] = ()
    source: str = DATA  # where in the package: DATA, CONTROL or WHOLE

    def entry(self) -> Entry:
        """The manifest entry the file would have had (verify compares it so)."""
        return Entry(FILE, self.path, self.mode, self.uid, self.gid, self.size,
                     self.mtime_ns, 0, 0, 0, self.digest,
                     xattr_digest(self.xattrs) if self.xattrs else "", 0, b"")


def _xattrs_text(xattrs: tuple[tuple[str, bytes], ...]) -> str:
    return ",".join(f"{name.encode('utf-8', 'surrogateescape').hex()}={value.hex()}"
                    for name, value in xattrs)


def _xattrs(text: str) -> tuple[tuple[str, bytes], ...]:
    if not text:
        return ()
    out = []
    total = 0
    for item in text.split(","):
        name, sep, value = item.partition("=")
        if not sep or not _HEX.fullmatch(name) or (value and not _HEX.fullmatch(value)):
            raise ListError(f"bad extended attributes {text[:80]!r}")
        raw = bytes.fromhex(value)
        total += len(raw)
        if total > MAX_XATTR_VALUES or len(name) > 510:
            raise ListError("extended attributes larger than an entry holds")
        out.append((bytes.fromhex(name).decode("utf-8", "surrogateescape"), raw))
    return tuple(out)


def encode_pooled(f: PooledFile) -> str:
    return (f"{escape(f.path)}\t{f.mode:o}\t{f.uid}\t{f.gid}\t{f.size}\t{f.mtime_ns}\t"
            f"{f.digest}\t{f.sha256}\t{f.package}\t{escape(f.member)}\t"
            f"{_xattrs_text(f.xattrs)}\t{f.source}\n")


def decode_pooled(line: str, version: str = POOLED_VERSION) -> PooledFile:
    fields = line.rstrip("\n").split("\t")
    count = 11 if version == "1" else 12
    if len(fields) != count:
        raise ListError(f"a pooled line with {len(fields)} fields, not {count}: "
                        f"{line[:120]!r}")
    path, mode, uid, gid, size, mtime, digest, sha256, package, member, xattrs = fields[:11]
    source = fields[11] if count == 12 else DATA
    try:
        f = PooledFile(check_path(unescape(path)), int(mode, 8), int(uid), int(gid),
                       int(size), int(mtime), digest, sha256, package,
                       check_path(unescape(member)), _xattrs(xattrs), source)
    except (ValueError, BadPath) as e:
        raise ListError(f"bad pooled line {line[:120]!r}: {e}") from None
    if not (_HEX64.fullmatch(digest) and _HEX64.fullmatch(sha256)
            and _HEX64.fullmatch(package)) or f.size < 0 or f.mode >> 12 != 0o10:
        raise ListError(f"bad pooled line {line[:120]!r}")
    # A control file is one name at the control archive's top; the whole package is "-",
    # and then its content is the package's (the same sha256).
    if source not in SOURCES or (source == CONTROL and b"/" in f.member) or (
            source == WHOLE and (f.member != WHOLE_MEMBER or f.sha256 != f.package)):
        raise ListError(f"bad pooled line {line[:120]!r}")
    return f


class PooledWriter:
    """Writes a pooled list line by line to ``write`` (bytes)."""

    def __init__(self, write: Callable[[bytes], object]) -> None:
        self._write = write
        self._lines: list[str] = [f"{POOLED_MAGIC} {POOLED_VERSION}\n"]
        self.count = 0

    def add(self, f: PooledFile) -> None:
        self._lines.append(encode_pooled(f))
        self.count += 1
        if len(self._lines) >= 512:
            self.flush()

    def flush(self) -> None:
        if self._lines:
            self._write("".join(self._lines).encode())
            self._lines = []

    def finish(self) -> None:
        self._lines.append(f"#end {self.count}\n")
        self.flush()


def read_pooled(lines: Iterable[bytes]) -> Iterator[PooledFile]:
    """The files of a pooled list (byte lines, with their newlines), checked: the header,
    each line, the walk order, the end line and that nothing follows it."""
    it = iter(lines)
    first = next(it, b"")
    version = next((v for v in POOLED_READ if first == f"{POOLED_MAGIC} {v}\n".encode()), None)
    if version is None:
        raise ListError(f"not a pooled list of a version this resurgo reads "
                        f"({', '.join(POOLED_READ)}): {first[:60]!r}")
    count = 0
    previous: tuple[bytes, ...] | None = None
    for raw in it:
        if len(raw) > MAX_LINE or not raw.endswith(b"\n"):
            raise ListError("a pooled list with an overlong or unterminated line")
        try:
            line = raw.decode()
        except UnicodeDecodeError:
            raise ListError(f"a pooled line that is not UTF-8: {raw[:80]!r}") from None
        if line.startswith("#end "):
            if line != f"#end {count}\n":
                raise ListError("a pooled list whose end line does not count its lines")
            if next(it, None) is not None:
                raise ListError("lines after the end of a pooled list")
            return
        f = decode_pooled(line, version)
        key = walk_key(f.path)
        if previous is not None and key <= previous:
            raise ListError(f"a pooled list out of walk order at {escape(f.path)}")
        previous = key
        count += 1
        yield f
    raise ListError(f"a pooled list that ends after {count} files (truncated)")
