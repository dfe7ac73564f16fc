"""Reading Debian packages (.deb) without dpkg: the ar container and its two tar members.

A .deb is an ar archive of ``debian-binary`` ("2.0"), ``control.tar[.gz|.xz|.zst]`` and
``data.tar[.gz|.xz|.zst]``. The control member's files (``control``, ``md5sums``, the
maintainer scripts, ``conffiles``, ``triggers``, ``shlibs``, ...) are what dpkg keeps in its
database as ``var/lib/dpkg/info/<package>.<file>``, byte for byte, ``control`` aside. It is
read front to back (a pooled package streams from SFTP as well as from a USB disk),
decompressed with the standard library (gzip, xz) or the zstd program (which the rescue
carries for the archives anyway).

Nothing of a package's own paths decides where anything is written: a reader gets the
content of the regular members it asks for, by their path inside the package, and the
caller writes it where the set says, after checking its digest. Links, devices,
directories and anything else in the tar are only skipped over. Every size a header
gives is bounded before it is believed (the control member, long names, pax headers).
"""

from __future__ import annotations

import hashlib
import io
import lzma
import threading
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Protocol, cast

from resurgo.engine.pipes import DecompressedReader
from resurgo.errors import ResurgoError
from resurgo.pool import xzblocks
from resurgo.probe import dpkg

try:
    import zstandard
except ImportError:  # a rescue or system without it: the zstd program decompresses
    zstandard = None  # type: ignore[assignment]

AR_MAGIC = b"!<arch>\n"
BLOCK = 512
CHUNK = 1 << 20
# The control member of a real package is a few KiB to a few hundred; its files together
# and any one long name or pax header stay far below these.
MAX_CONTROL = 16 << 20
MAX_NAME = 1 << 16
MAX_PAX = 1 << 20
# What a data member may hold after its tar's end: tar pads to its record (10 KiB with
# GNU tar's default blocking); far more is no package's, and is not decoded on.
MAX_TRAILER = 1 << 20
# tar type flags of regular files: "0", the old NUL, and contiguous files ("7").
_REGULAR = (b"0", b"\0", b"7")


class DebError(Exception):
    """A package that is not a well-formed .deb (damaged, truncated, or not one)."""


class Readable(Protocol):
    def read(self, size: int, /) -> bytes: ...


def read_exact(src: Readable, n: int) -> bytes:
    parts: list[bytes] = []
    got = 0
    while got < n:
        chunk = src.read(min(CHUNK, n - got))
        if not chunk:
            raise DebError(f"truncated: {n - got} bytes missing")
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def skip(src: Readable, n: int) -> None:
    while n > 0:
        chunk = src.read(min(CHUNK, n))
        if not chunk:
            raise DebError(f"truncated: {n} bytes missing")
        n -= len(chunk)


class Limited:
    """At most ``size`` bytes of ``src``: one member's."""

    def __init__(self, src: Readable, size: int) -> None:
        self._src = src
        self.left = size

    def read(self, n: int = CHUNK) -> bytes:
        if self.left <= 0:
            return b""
        data = self._src.read(min(n, self.left, CHUNK))
        if not data:
            raise DebError(f"truncated: {self.left} bytes of a member missing")
        self.left -= len(data)
        return data

    def drain(self) -> None:
        skip(self._src, self.left)
        self.left = 0


class Hashing:
    """A reader that hashes (sha256) and counts what goes through it."""

    def __init__(self, src: Readable) -> None:
        self._src = src
        self.sha256 = hashlib.sha256()
        self.size = 0

    def read(self, n: int) -> bytes:
        data = self._src.read(n)
        self.sha256.update(data)
        self.size += len(data)
        return data

    def drain(self) -> None:
        while self.read(CHUNK):
            pass


class _Xz:
    """An xz-decompressing reader over a member."""

    def __init__(self, src: Readable) -> None:
        self._src = src
        self._d = lzma.LZMADecompressor(memlimit=1 << 30)

    def read(self, n: int) -> bytes:
        d = self._d
        try:
            while not d.eof:
                data = b"" if not d.needs_input else self._src.read(CHUNK)
                if d.needs_input and not data:
                    raise DebError("an xz member ends before its stream does")
                out = d.decompress(data, n)
                if out:
                    return out
        except lzma.LZMAError as e:
            raise DebError(f"xz: {e}") from None
        return b""


class _Gz:
    """A gzip-decompressing reader over a member."""

    def __init__(self, src: Limited) -> None:
        self._src = src
        self._d = zlib.decompressobj(wbits=31)

    def read(self, n: int) -> bytes:
        d = self._d
        try:
            while not d.eof:
                data = d.unconsumed_tail or self._src.read(CHUNK)
                if not data:
                    raise DebError("a gzip member ends before its stream does")
                out = d.decompress(data, n)
                if out:
                    return out
        except zlib.error as e:
            raise DebError(f"gzip: {e}") from None
        return b""


class _Blocks:
    """An xz member's blocks decompressed by threads (resurgo.pool.xzblocks)."""

    def __init__(self, src: Limited, threads: int) -> None:
        try:
            self._reader, self.close = xzblocks.open_xz(src, _Xz, threads)
        except xzblocks.XzError as e:
            raise DebError(str(e)) from None

    def read(self, n: int) -> bytes:
        try:
            return self._reader.read(n)
        except xzblocks.XzError as e:
            raise DebError(str(e)) from None


# What one zstd frame may ask of the decoder: the zstd program's own default limit.
ZSTD_MAX_WINDOW = 1 << 27
_zstd_contexts = threading.local()


class _Zst:
    """A zstd-decompressing reader over a member, in this process (python-zstandard): a
    twin's members need no program started for each, and one decoder a thread, reused,
    keeps its memory from one member to the next."""

    def __init__(self, src: Limited) -> None:
        assert zstandard is not None
        d = getattr(_zstd_contexts, "d", None)
        if d is None:
            d = zstandard.ZstdDecompressor(max_window_size=ZSTD_MAX_WINDOW)
            _zstd_contexts.d = d
        # (It only calls read(size) on its source.)
        self._reader = d.stream_reader(cast("IO[bytes]", src), read_size=CHUNK,
                                       read_across_frames=True, closefd=False)

    def read(self, n: int) -> bytes:
        try:
            return self._reader.read(n)
        except zstandard.ZstdError as e:
            raise DebError(f"zstd: {e}") from None

    def close(self) -> None:
        self._reader.close()


class _Plain:
    def __init__(self, src: Limited) -> None:
        self._src = src

    def read(self, n: int) -> bytes:
        return self._src.read(n)


@dataclass
class Opened:
    reader: Readable
    close: Callable[[], None] = lambda: None


def decompressed(name: str, src: Limited, threads: int = 1) -> Opened:
    if name.endswith(".xz"):
        if threads > 1:
            blocks = _Blocks(src, threads)
            return Opened(blocks, blocks.close)
        return Opened(_Xz(src))
    if name.endswith(".gz"):
        return Opened(_Gz(src))
    if name.endswith(".zst"):
        if zstandard is not None:
            zst = _Zst(src)
            return Opened(zst, zst.close)
        try:
            z = DecompressedReader(src, name)
        except ResurgoError as e:
            raise DebError(f"{name}: {e}") from None
        return Opened(z, z.close)
    if name.endswith(".tar"):
        return Opened(_Plain(src))
    raise DebError(f"a member {name!r} in a compression this reader does not know")


def _octal(field: bytes) -> int:
    if field[:1] and field[0] & 0x80:  # GNU base-256
        value = int.from_bytes(field[1:], "big")
        return value
    text = field.split(b"\0", 1)[0].strip()
    try:
        return int(text, 8) if text else 0
    except ValueError:
        raise DebError(f"a tar header with a bad number {field!r}") from None


def _clean(name: bytes) -> str:
    """A member's path as the package lists it: without "./", "/" or a trailing "/"."""
    text = name.decode("utf-8", "surrogateescape")
    while text.startswith("./"):
        text = text[2:]
    return text.strip("/")


def _pax_path(data: bytes) -> bytes | None:
    """The path record of a pax extended header ("<len> path=<value>\\n" records)."""
    pos = 0
    found = None
    while pos < len(data):
        space = data.find(b" ", pos)
        if space < 0:
            break
        try:
            length = int(data[pos:space])
        except ValueError:
            raise DebError("a bad pax header") from None
        if length <= 0 or pos + length > len(data):
            raise DebError("a bad pax header")
        record = data[space + 1:pos + length - 1]
        key, _, value = record.partition(b"=")
        if key == b"path":
            found = value
        pos += length
    return found


@dataclass(frozen=True)
class Member:
    path: str  # as the package lists it, without "./"
    regular: bool
    size: int


def tar_members(src: Readable) -> Iterator[tuple[Member, Limited]]:
    """The members of a tar stream, each with a reader of its data (what the caller does not
    read is skipped)."""
    long_name: bytes | None = None
    while True:
        header = read_exact(src, BLOCK)
        if header == bytes(BLOCK):
            return
        stored = sum(header[:148]) + 8 * 32 + sum(header[156:])
        if _octal(header[148:156]) != stored:
            raise DebError("a tar header with a wrong checksum")
        size = _octal(header[124:136])
        kind = header[156:157]
        name = header[:100].split(b"\0", 1)[0]
        if header[257:263] == b"ustar\0":
            prefix = header[345:500].split(b"\0", 1)[0]
            if prefix:
                name = prefix + b"/" + name
        padded = -size % BLOCK
        if kind in (b"L", b"x"):
            if size > (MAX_NAME if kind == b"L" else MAX_PAX):
                raise DebError(f"a tar extended header of {size} bytes")
            data = read_exact(src, size)
            skip(src, padded)
            long_name = data.split(b"\0", 1)[0] if kind == b"L" else _pax_path(data)
            continue
        if kind in (b"g", b"K"):
            skip(src, size + padded)
            continue
        if long_name is not None:
            name, long_name = long_name, None
        regular = kind in _REGULAR
        data_size = size if regular else 0
        if not regular and kind not in (b"1", b"2", b"3", b"4", b"5", b"6"):
            data_size = size  # unknown kinds: their data is skipped
        body = Limited(src, data_size)
        yield Member(_clean(name), regular, size), body
        body.drain()
        skip(src, -data_size % BLOCK)


def ar_members(src: Readable) -> Iterator[tuple[str, Limited]]:
    if read_exact(src, len(AR_MAGIC)) != AR_MAGIC:
        raise DebError("not an ar archive (no .deb)")
    while True:
        header = src.read(60)
        if not header:
            return
        if len(header) < 60:
            header += read_exact(src, 60 - len(header))
        if header[58:60] != b"`\n":
            raise DebError("a damaged ar member header")
        name = header[:16].decode("ascii", "replace").strip().rstrip("/")
        try:
            size = int(header[48:58].decode("ascii").strip())
        except ValueError:
            raise DebError("an ar member header with a bad size") from None
        body = Limited(src, size)
        yield name, body
        body.drain()
        skip(src, size % 2)


@dataclass(frozen=True)
class Control:
    package: str
    version: str
    architecture: str
    # "/usr/bin/x" -> md5 of the member, as the package lists it (empty without md5sums).
    md5sums: dict[str, str] = field(default_factory=dict)
    # The control member's regular files at its top ("postinst", "md5sums", ...): sha256.
    files: dict[str, str] = field(default_factory=dict)


def _control(name: str, body: Limited) -> tuple[Control, dict[str, bytes]]:
    """The control and the control member's regular files at its top (whole: they are
    small, and bounded together)."""
    opened = decompressed(name, body)
    files: dict[str, bytes] = {}
    total = 0
    try:
        for member, data in tar_members(opened.reader):
            if not member.regular or not member.path or "/" in member.path:
                continue
            total += member.size
            if total > MAX_CONTROL:
                raise DebError("a control member larger than any package's")
            files[member.path] = read_exact(data, member.size)
    finally:
        opened.close()
    body.drain()
    fields = next(dpkg.paragraphs(files.get("control", b"").decode("utf-8", "replace")), {})
    md5sums = {path: md5 for md5, path in dpkg.parse_md5sums(files.get("md5sums", b""))}
    package = fields.get("Package", "")
    if not package:
        raise DebError("its control file names no package")
    return Control(package, fields.get("Version", ""), fields.get("Architecture", ""),
                   md5sums, {n: hashlib.sha256(d).hexdigest() for n, d in files.items()}
                   ), files


# What the caller does with a data member it wants: given its path (as the package lists
# it) and its size, a function that receives the member's reader, or None to skip it.
OnFile = Callable[[Member], Callable[[Limited], None] | None]


def read_deb(src: Readable, on_file: OnFile | None = None,
             on_control: Callable[[Control], None] | None = None,
             on_control_file: OnFile | None = None, *, threads: int = 1) -> Control:
    """Read a .deb front to back: its control, then (with ``on_file``) the data members
    wanted. ``on_control`` is told the control before any file is handed on (to refuse a
    package that is not the one expected before reading more); ``on_control_file`` is then
    offered the control member's files (by their name: "postinst"). ``threads`` decompress
    the blocks of an xz data member that has several. Raises DebError."""
    members = ar_members(src)
    first = next(members, None)
    if first is None or first[0] != "debian-binary":
        raise DebError("its first member is not debian-binary")
    if not read_exact(first[1], min(first[1].left, 16)).startswith(b"2."):
        raise DebError("a package format other than 2.x")
    control: Control | None = None
    for name, body in members:
        if name.startswith("control.tar"):
            if control is not None:
                raise DebError("it has two control members")
            control, files = _control(name, body)
            if on_control is not None:
                on_control(control)
            for path, raw in files.items() if on_control_file is not None else ():
                assert on_control_file is not None
                handle = on_control_file(Member(path, True, len(raw)))
                if handle is not None:
                    handle(Limited(io.BytesIO(raw), len(raw)))
        elif name.startswith("data.tar"):
            if control is None:
                raise DebError("its data member comes before its control member")
            if on_file is None:
                continue
            opened = decompressed(name, body, threads)
            try:
                for member, data in tar_members(opened.reader):
                    handle = on_file(member) if member.regular else None
                    if handle is not None:
                        handle(data)
                # The stream's end (a tar's padding): its checksum, where it has one, is
                # then checked by the decoder.
                trailer = 0
                while chunk := opened.reader.read(CHUNK):
                    trailer += len(chunk)
                    if trailer > MAX_TRAILER:
                        raise DebError(f"more than {MAX_TRAILER} bytes after its data's tar")
            finally:
                opened.close()
    if control is None:
        raise DebError("it has no control member")
    return control
