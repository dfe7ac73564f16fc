"""The manifest of a set: the complete tree at its time, one line per entry (pure).

Text, UTF-8, one entry per line in walk order (see names.walk_key), fields separated by
tabs; lines starting with ``#`` are the header and the end line::

    #resurgo-manifest 3                            (4 when the tree has pooled files)
    #set 0 <set id of the full set>
    #set 1 <set id of the next incremental>        one line per set of the chain, in order;
    #root <path the tree was saved from>           the last one is this manifest's own set
    #exclude <relative path>                       not saved at all
    #empty <relative path>                         saved as an empty directory
    #pooled                                        (version 4) the tree's unchanged package
                                                   files are not listed here: the unit's
                                                   pooled list holds them (resurgo.pool)
    <kind> <path> <mode> <uid> <gid> <size> <mtime_ns> <ctime_ns> <ino> <rdev> <digest>
        <xattrs digest> <set> <target>
    #changed <path>                                a file listed above whose content
                                                   changed while it was read (twice)
    #end <number of entries>

kind is one of f d l h c b p (file, directory, symlink, hard link to an earlier file,
character device, block device, fifo); mode is octal st_mode; digest is the hex digest of
a file's content (empty for other kinds); xattrs digest the digest of its extended
attributes (see xattr_digest; empty when it has none); set the index in the chain of the
set whose archive holds the entry's record; target the symlink's target or the hard
link's first path. Paths and targets are escaped with names.escape.

The ``#changed`` lines (version 3; version 2 has none, and is read as well) follow the
entries, in walk order, each naming a file of the list above: the save saw its size,
mtime or ctime move while it read it, read it once more and saw it move again, so its
content in the archive may be torn (a database written during the save). They come
after the entries because a save knows it only once the file is read; the entry lines
themselves are version 2's, which the restore's writers check as they are.

Version 4 is version 3 with the ``#pooled`` header line: the save left the files the
catalog lists as unchanged out of the archive and this manifest, and listed them, with
their metadata and the packages they come from, in the unit's pooled list
(resurgo.pool.pooled); the tree is this manifest's entries and those. A reader that knows
only version 3 refuses it rather than restore a tree without its package files. A save
without pooled files writes version 3.

A manifest always lists the complete tree (with its pooled list), so the last manifest of
a chain alone says what a restore must produce; the end line tells a complete manifest
from a truncated one.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

from resurgo import digest as content_digest
from resurgo.engine.names import BadPath, check_path, escape, unescape, walk_key
from resurgo.engine.records import HARDLINK, KINDS

MANIFEST_VERSION = 3
POOLED_VERSION = 4
READ_VERSIONS = ("2", "3", "4")
_MAGIC = "#resurgo-manifest"
_FIELDS = 14
# Sets of a chain, excluded paths and empty directories are a few dozen in any real set;
# a reader keeps them all, so a header with more lines is refused, not held.
MAX_HEADER_LINES = 1 << 16


class ManifestError(ValueError):
    """Text that is not a valid manifest (damaged, truncated, or not a manifest)."""


class Entry(NamedTuple):
    kind: str
    path: bytes
    mode: int
    uid: int
    gid: int
    size: int
    mtime_ns: int
    ctime_ns: int
    ino: int
    rdev: int
    digest: str  # hex digest (BLAKE3) of the content; "" for all but files and hard links
    xattr_digest: str  # "" when the entry has no extended attributes
    set_index: int
    target: bytes  # symlink target / first path of the hard-link group; b"" otherwise


@dataclass(frozen=True)
class ManifestHeader:
    chain: tuple[str, ...]  # set ids, full set first; the last is this manifest's set
    root: bytes = b""
    excludes: tuple[bytes, ...] = ()
    empty_dirs: tuple[bytes, ...] = ()
    # The tree's unchanged package files are in its pooled list, not here (version 4).
    pooled: bool = False

    @property
    def set_id(self) -> str:
        return self.chain[-1]

    @property
    def set_index(self) -> int:
        return len(self.chain) - 1


def xattr_digest(xattrs: Iterable[tuple[str, bytes]]) -> str:
    """A digest of extended attributes, independent of the order they are listed in."""
    items = sorted(xattrs)
    if not items:
        return ""
    h = content_digest.new()
    for name, value in items:
        raw = name.encode("utf-8", "surrogateescape")
        h.update(struct.pack("<II", len(raw), len(value)))
        h.update(raw)
        h.update(value)
    return h.hexdigest()


def encode_entry(e: Entry) -> str:
    return (
        f"{e.kind}\t{escape(e.path)}\t{e.mode:o}\t{e.uid}\t{e.gid}\t{e.size}\t{e.mtime_ns}\t"
        f"{e.ctime_ns}\t{e.ino}\t{e.rdev}\t{e.digest}\t{e.xattr_digest}\t{e.set_index}\t"
        f"{escape(e.target) if e.target else ''}\n"
    )


def decode_entry(line: str) -> Entry:
    fields = line.rstrip("\n").split("\t")
    if len(fields) != _FIELDS:
        raise ManifestError(f"an entry line has {len(fields)} fields, not {_FIELDS}: {line!r}")
    kind, path, mode, uid, gid, size, mtime, ctime, ino, rdev, digest, xdigest, sx, tgt = fields
    try:
        entry = Entry(
            kind, check_path(unescape(path)), int(mode, 8), int(uid), int(gid), int(size),
            int(mtime), int(ctime), int(ino), int(rdev), digest, xdigest, int(sx),
            unescape(tgt),
        )
        if kind == HARDLINK:
            check_path(entry.target)
    except (ValueError, BadPath) as e:
        raise ManifestError(f"bad entry line {line!r}: {e}") from None
    if kind not in KINDS:
        raise ManifestError(f"unknown kind {kind!r} in {line!r}")
    return entry


def encode_header(header: ManifestHeader) -> str:
    version = POOLED_VERSION if header.pooled else MANIFEST_VERSION
    lines = [f"{_MAGIC} {version}\n"]
    lines += [f"#set {i} {set_id}\n" for i, set_id in enumerate(header.chain)]
    lines.append(f"#root {escape(header.root)}\n")
    lines += [f"#exclude {escape(p)}\n" for p in header.excludes]
    lines += [f"#empty {escape(p)}\n" for p in header.empty_dirs]
    if header.pooled:
        lines.append("#pooled\n")
    return "".join(lines)


class ManifestWriter:
    """Writes a manifest line by line to ``write`` (bytes), buffered."""

    def __init__(self, write: Callable[[bytes], object], header: ManifestHeader) -> None:
        self._write = write
        self._lines: list[bytes] = [encode_header(header).encode()]
        self._pending = 0
        self.count = 0
        # Kept to the end: the paths of the files that changed while they were read.
        self._changed: list[bytes] = []

    def add(self, entry: Entry) -> None:
        line = encode_entry(entry).encode()
        self._lines.append(line)
        self._pending += len(line)
        self.count += 1
        if self._pending > 1 << 16:
            self.flush()

    def add_lines(self, lines: bytes, count: int) -> None:
        """``count`` entry lines as encode_entry makes them (the save's compiled path
        makes those)."""
        self._lines.append(lines)
        self._pending += len(lines)
        self.count += count
        if self._pending > 1 << 16:
            self.flush()

    def flush(self) -> None:
        if self._lines:
            self._write(b"".join(self._lines))
            self._lines = []
            self._pending = 0

    def changed(self, path: bytes) -> None:
        """The entry just added (a file) changed while it was read: a ``#changed`` line."""
        self._changed.append(f"#changed {escape(path)}\n".encode())

    def finish(self) -> None:
        self._lines += self._changed
        self._lines.append(f"#end {self.count}\n".encode())
        self.flush()


class ManifestReader:
    """Reads a manifest from an iterable of byte lines (a binary file): the header at once,
    the entries as they are iterated. Raises ManifestError on anything malformed, and when
    the lines end before the end line (a truncated manifest)."""

    def __init__(self, lines: Iterable[bytes]) -> None:
        self._lines = iter(lines)
        self._first: str | None = None
        self.version = ""
        self.header = self._read_header()
        self.count = 0
        # The paths of its #changed lines, once the entries are read to the end.
        self.changed: list[bytes] = []

    def _next_text(self) -> str | None:
        raw = next(self._lines, None)
        if raw is None:
            return None
        try:
            return raw.decode()
        except UnicodeDecodeError:
            raise ManifestError(f"a line is not UTF-8: {raw[:80]!r}") from None

    def _read_header(self) -> ManifestHeader:
        first = self._next_text()
        if first is None or not first.startswith(_MAGIC + " "):
            raise ManifestError("not a resurgo manifest (its first line is not the header)")
        version = first.split()[1]
        self.version = version
        if version not in READ_VERSIONS:
            raise ManifestError(
                f"manifest format version {version}, this resurgo reads "
                f"{' and '.join(READ_VERSIONS)}"
            )
        chain: list[str] = []
        root = b""
        excludes: list[bytes] = []
        empty: list[bytes] = []
        pooled = False
        while True:
            line = self._next_text()
            if line is None:
                raise ManifestError("the manifest ends inside its header (truncated)")
            if len(chain) + len(excludes) + len(empty) >= MAX_HEADER_LINES:
                raise ManifestError(f"a header of more than {MAX_HEADER_LINES} lines")
            if not line.startswith("#") or line.startswith("#end "):
                self._first = line
                break
            key, _, value = line.rstrip("\n").partition(" ")
            if key == "#set":
                index, _, set_id = value.partition(" ")
                if index != str(len(chain)) or not set_id:
                    raise ManifestError(f"bad set line {line!r}")
                chain.append(set_id)
            elif key == "#root":
                root = unescape(value)
            elif key == "#exclude":
                excludes.append(unescape(value))
            elif key == "#empty":
                empty.append(unescape(value))
            elif key == "#pooled" and version == "4" and not value:
                pooled = True
            else:
                raise ManifestError(f"unknown header line {line!r}")
        if not chain:
            raise ManifestError("the manifest names no set")
        if version == "4" and not pooled:
            raise ManifestError("a version 4 manifest without its #pooled line")
        return ManifestHeader(tuple(chain), root, tuple(excludes), tuple(empty), pooled)

    def __iter__(self) -> Iterator[Entry]:
        for _, _, line in self.raw():
            yield decode_entry(line)

    def lines(self) -> Iterator[str]:
        """The entry lines as they are, only counted (for the end line): their reader
        decodes them."""
        line = self._first
        self._first = None
        while line is not None:
            if line.startswith("#"):
                self._check_end(line)
                return
            self.count += 1
            yield line
            line = self._next_text()
        raise ManifestError(f"the manifest ends after {self.count} entries (truncated)")

    def byte_lines(self) -> Iterator[bytes]:
        """lines(), as the bytes they are (with their newline): for a restore that hands
        them on, unparsed, to whoever checks its entries (writer.check_line)."""
        first = self._first
        self._first = None
        if first is None:
            return
        line: bytes | None = first.encode()
        lines = self._lines
        while line is not None:
            if line.startswith(b"#"):
                self._check_end(line.decode(errors="replace"))
                return
            self.count += 1
            yield line
            line = next(lines, None)
        raise ManifestError(f"the manifest ends after {self.count} entries (truncated)")

    def _check_end(self, line: str) -> None:
        """The lines after the entries: #changed lines (version 3) and the end line."""
        previous: tuple[bytes, ...] | None = None
        while line.startswith("#changed ") and self.version != "2":
            if len(self.changed) >= self.count:
                raise ManifestError("more #changed lines than entries")
            try:
                path = check_path(unescape(line.rstrip("\n").partition(" ")[2]))
            except (ValueError, BadPath) as e:
                raise ManifestError(f"bad line {line!r}: {e}") from None
            key = walk_key(path)
            if previous is not None and key <= previous:
                raise ManifestError(f"{line!r} is out of walk order")
            previous = key
            self.changed.append(path)
            following = self._next_text()
            if following is None:
                raise ManifestError(f"the manifest ends after {self.count} entries (truncated)")
            line = following
        if not line.startswith("#end "):
            raise ManifestError(f"a header line among the entries: {line!r}")
        try:
            count = int(line.split()[1])
        except (IndexError, ValueError):
            raise ManifestError(f"bad end line {line!r}") from None
        if count != self.count:
            raise ManifestError(
                f"the end line counts {count} entries, the manifest has {self.count}"
            )
        if self._next_text() is not None:
            raise ManifestError("lines after the end line")

    def raw(self) -> Iterator[tuple[bytes, int, str]]:
        """(path, set index, line) of each entry: the lines checked for their number of
        fields, a safe path, the set, the walk order and the end; not decoded further."""
        line = self._first
        self._first = None
        sets = len(self.header.chain)
        previous: tuple[bytes, ...] | None = None
        while line is not None:
            if line.startswith("#"):
                self._check_end(line)
                return
            fields = line.split("\t")
            if len(fields) != _FIELDS:
                raise ManifestError(
                    f"an entry line has {len(fields)} fields, not {_FIELDS}: {line!r}")
            try:
                path = check_path(unescape(fields[1]))
                set_index = int(fields[12])
            except (ValueError, BadPath) as e:
                raise ManifestError(f"bad entry line {line!r}: {e}") from None
            if not 0 <= set_index < sets:
                raise ManifestError(f"entry {line!r} names set {set_index} of {sets}")
            key = walk_key(path)
            if previous is not None and key <= previous:
                raise ManifestError(f"entry {line!r} is out of walk order")
            previous = key
            self.count += 1
            yield path, set_index, line
            line = self._next_text()
        raise ManifestError(f"the manifest ends after {self.count} entries (truncated)")
