"""An initramfs-tools image's copies of rewritten files, changed in the image itself.

initramfs-tools puts into the image what unlocks, assembles and resumes the root before
it is mounted: the root's crypttab entries (cryptroot/crypttab), mdadm.conf,
conf.d/resume, /etc/lvm. When finalize renamed identities in those files and no driver
lacks, a rebuild (update-initramfs: hundreds of programs and hooks, minutes on a slow
machine and under emulation) would make the image it has with those copies renamed. Here
the copies are renamed in the image: its last, compressed archive is unpacked in memory,
each copy gets the same line changes as its file, and the archive is packed again
(seconds). Every other member stays byte for byte as it was.

Whatever is not as expected leaves the image to a rebuild (``Unpatchable``): a
compression not undone here, a copy whose lines are not the file's, an archive that does
not parse, or a saved identity still named afterwards by a copy or by what the hooks
derive (conf/, cryptroot/: a rebuild would derive it anew). A copy the image does not
hold is not added: the image never used that file.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import subprocess
import tempfile
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from resurgo import run
from resurgo.finalize.model import LineChange

# Far above any initramfs (tens of MiB packed, a few hundred unpacked); the image is read
# whole and unpacked in memory, so a larger one (or a crafted stream that would inflate
# past it) is left to the rebuild before it is all in memory.
MAX_IMAGE = 1 << 30
MAX_UNPACKED = 1 << 30
_MAGICS = (b"070701", b"070702")
_HEADER = 110
_TRAILER = "TRAILER!!!"
# What the hooks derive from the system's configuration: scanned for saved identities.
_DERIVED = ("conf/", "cryptroot/")
_GZIP, _XZ, _ZSTD = b"\x1f\x8b", b"\xfd7zXZ\x00", b"\x28\xb5\x2f\xfd"


class Unpatchable(Exception):
    """Why the image is left to a rebuild."""


@dataclass(frozen=True)
class Copy:
    """A rewritten file of the restored system: its text before and after, the lines."""

    path: str
    before: str
    after: str
    changes: tuple[LineChange, ...]


def image_path(path: str) -> str | None:
    """Where an initramfs-tools image keeps its copy of ``path`` (None: no copy changed
    here; the initramfs.conf and modules change what the image is made of)."""
    if path == "/etc/crypttab":
        return "cryptroot/crypttab"
    if path == "/etc/mdadm/mdadm.conf" or path.startswith("/etc/lvm/"):
        return path.removeprefix("/")
    if path.startswith("/etc/initramfs-tools/conf.d/"):
        return "conf/conf.d/" + path.removeprefix("/etc/initramfs-tools/conf.d/")
    return None


def spellings(uuids: Iterable[str]) -> frozenset[bytes]:
    """Every spelling of each identity a file may use, lower case: as given, without
    separators, with dashes (8-4-4-4-12), with mdadm's colons (8:8:8:8)."""
    out: set[bytes] = set()
    for u in uuids:
        out.add(u.lower().encode())
        bare = u.replace("-", "").replace(":", "").lower()
        out.add(bare.encode())
        if len(bare) == 32:
            out.add(f"{bare[:8]}-{bare[8:12]}-{bare[12:16]}-{bare[16:20]}-{bare[20:]}".encode())
            out.add(":".join(bare[i : i + 8] for i in range(0, 32, 8)).encode())
    return frozenset(s for s in out if len(s) >= 8)


# ------------------------------------------------------------------ the archive


@dataclass
class _Member:
    header: bytes  # up to and including the name's padding
    name: str
    mode: int
    data: bytes


def _members(data: bytes) -> tuple[list[_Member], bytes]:
    """The members of one newc archive up to and including its trailer, and what follows."""
    out: list[_Member] = []
    pos = 0
    while True:
        if data[pos : pos + 6] not in _MAGICS or pos + _HEADER > len(data):
            raise Unpatchable(f"no cpio header at offset {pos} of the unpacked archive")
        try:
            fields = [int(data[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        except ValueError as e:
            raise Unpatchable(f"a damaged cpio header at offset {pos}") from e
        mode, size, namesize = fields[1], fields[6], fields[11]
        end_name = pos + _HEADER + namesize
        start = end_name + (-end_name % 4)
        end = start + size
        if namesize < 1 or end > len(data):
            raise Unpatchable(f"a cpio member runs past the archive at offset {pos}")
        name = data[pos + _HEADER : end_name - 1].decode("utf-8", "surrogateescape")
        out.append(_Member(data[pos:start], name, mode, data[start:end]))
        pos = end + (-end % 4)
        if name == _TRAILER:
            return out, data[pos:]


def _packed(members: Sequence[_Member], rest: bytes) -> bytes:
    parts: list[bytes] = []
    for m in members:
        header = m.header
        if int(header[6 + 8 * 6 : 14 + 8 * 6], 16) != len(m.data):
            check = sum(m.data) & 0xFFFFFFFF if header[:6] == b"070702" else 0
            header = (header[: 6 + 8 * 6] + b"%08X" % len(m.data) + header[14 + 8 * 6 : 6 + 8 * 12]
                      + b"%08X" % check + header[14 + 8 * 12 :])
        parts += [header, m.data, b"\0" * (-len(m.data) % 4)]
    parts.append(rest)
    return b"".join(parts)


def _split(image: bytes) -> tuple[bytes, bytes]:
    """(the uncompressed archives before the compressed one, the compressed one)."""
    pos = 0
    while image[pos : pos + 6] in _MAGICS:
        _, rest = _members(image[pos:])
        pos = len(image) - len(rest)
        while pos < len(image) and image[pos] == 0:
            pos += 1
    if pos >= len(image):
        raise Unpatchable("no compressed archive after the uncompressed ones")
    return image[:pos], image[pos:]


def _unpack(kind: bytes, data: bytes, tmp: Path) -> bytes:
    """The archive, at most MAX_UNPACKED bytes of it: what would inflate further is refused
    before it is in memory."""
    if kind == _GZIP:
        z = zlib.decompressobj(wbits=31)
        out = z.decompress(data, MAX_UNPACKED + 1)
        if len(out) > MAX_UNPACKED or z.unconsumed_tail:
            raise Unpatchable(f"its last archive unpacks to more than {MAX_UNPACKED >> 20} MiB")
        if not z.eof or z.unused_data.strip(b"\0"):
            raise Unpatchable("its last archive ends early or is several gzip streams")
        return out
    if kind == _XZ:
        import lzma  # only here: a Python without it still finalizes

        x = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
        out = x.decompress(data, MAX_UNPACKED + 1)
        if len(out) > MAX_UNPACKED or (not x.needs_input and not x.eof):
            raise Unpatchable(f"its last archive unpacks to more than {MAX_UNPACKED >> 20} MiB")
        if not x.eof or x.unused_data.strip(b"\0"):
            raise Unpatchable("its last archive ends early or is several xz streams")
        return out
    packed = tmp / "in.zst"
    packed.write_bytes(data)
    # zstd's frame header need not state the size: read what it writes, up to the bound.
    proc = run.spawn(["zstd", "-q", "-d", "-c", str(packed)], stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    try:
        out = proc.stdout.read(MAX_UNPACKED + 1)
        if len(out) > MAX_UNPACKED:
            raise Unpatchable(f"its last archive unpacks to more than {MAX_UNPACKED >> 20} MiB")
    except BaseException:
        proc.kill()
        raise
    finally:
        proc.stdout.close()
        code = proc.wait()
    if code != 0:
        raise Unpatchable(f"zstd could not unpack its last archive (exit {code})")
    return out


def _pack(kind: bytes, data: bytes, tmp: Path) -> bytes:
    if kind == _GZIP:
        return gzip.compress(data, compresslevel=6, mtime=0)
    if kind == _XZ:
        import lzma

        # The kernel's XZ decoder checks CRC32 only.
        return lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32)
    plain, packed = tmp / "in", tmp / "out.zst"
    plain.write_bytes(data)
    run.run(["zstd", "-q", "-f", "-3", str(plain), "-o", str(packed)], timeout=600)
    return packed.read_bytes()


# ------------------------------------------------------------------ the copies


def _renamed(text: str, copy: Copy) -> str:
    """The image's copy with the file's changed lines changed alike: the whole new file
    for a copy that was the whole file; else each changed line, where the copy has it."""
    if text == copy.before:
        return copy.after
    if any(c.before is None or c.after is None for c in copy.changes):
        raise Unpatchable(f"the image's copy of {copy.path} is not the file, and lines "
                          "were added to or removed from the file")
    new = {c.before: c.after for c in copy.changes if c.before is not None}
    out: list[str] = []
    for line in text.splitlines(keepends=True):
        body = line.rstrip("\r\n")
        after = new.get(body)
        out.append(line if after is None else after + line[len(body):])
    return "".join(out)


def patch(image: Path, copies: Sequence[Copy], saved_ids: Iterable[str]) -> list[str]:
    """Rename the copies ``image`` holds of ``copies``; returns the members changed
    (nothing written when none). Raises Unpatchable, the image untouched, when a rebuild
    must do it; ``saved_ids`` are the identities that changed, as saved."""
    wanted: Mapping[str, Copy] = {p: c for c in copies if (p := image_path(c.path))}
    if len(wanted) != len(copies):
        raise Unpatchable("a file the image may derive more from than a copy was rewritten")
    try:
        if os.path.getsize(image) > MAX_IMAGE:
            raise Unpatchable(f"{image} is larger than {MAX_IMAGE >> 20} MiB")
        raw = image.read_bytes()
    except OSError as e:
        raise Unpatchable(f"{image}: {e.strerror}") from e
    head, compressed = _split(raw)
    kind = next((k for k in (_GZIP, _XZ, _ZSTD) if compressed.startswith(k)), None)
    if kind is None:
        raise Unpatchable("its last archive is compressed in a way not undone here")
    with tempfile.TemporaryDirectory(prefix="resurgo-initramfs-") as d:
        try:
            unpacked = _unpack(kind, compressed, Path(d))
        except Exception as e:
            # Whatever fails here (zlib.error, lzma.LZMAError, EOFError, OSError, a zstd
            # that failed or is missing), the rebuild remains.
            raise Unpatchable(f"its last archive could not be unpacked ({e})") from e
        members, rest = _members(unpacked)
        changed: list[str] = []
        for m in members:
            copy = wanted.get(m.name)
            if copy is None or (m.mode & 0o170000) != 0o100000:
                continue
            text = m.data.decode("utf-8", "surrogateescape")
            new = _renamed(text, copy)
            if new != text:
                m.data = new.encode("utf-8", "surrogateescape")
                changed.append(m.name)
        spelt = spellings(saved_ids)
        for m in members:
            if (m.name in wanted or m.name.startswith(_DERIVED)) and (
                m.mode & 0o170000) == 0o100000:
                low = m.data.lower()
                if any(s in low for s in spelt):
                    raise Unpatchable(f"its {m.name} still names a saved identity")
        if not changed:
            return []
        try:
            packed = _pack(kind, _packed(members, rest), Path(d))
        except Exception as e:
            raise Unpatchable(f"its last archive could not be packed again ({e})") from e
    _replace(image, head + packed)
    return changed


def _replace(image: Path, data: bytes) -> None:
    """The new image in place of the old, whole or not at all, with the old one's mode."""
    mode = os.stat(image).st_mode & 0o7777
    fd, tmp = tempfile.mkstemp(prefix=f".{image.name}.", dir=image.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, image)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
