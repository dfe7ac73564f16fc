"""The "newc" cpio archive the Linux kernel unpacks as its initramfs.

The kernel accepts several archives one after the other, each compressed on its own
(Documentation/driver-api/early-userspace/buffer-format.rst): the rescue's initramfs is
dracut's archive (programs, libraries, modules) followed by one written here (Python,
resurgo, /init), so the files resurgo chooses never pass through a second copy.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import BinaryIO

MAGIC = b"070701"
TRAILER = "TRAILER!!!"


@dataclass(frozen=True)
class Entry:
    """One member: ``name`` is its path inside the archive, without a leading /."""

    name: str
    mode: int
    data: bytes = b""
    mtime: int = 0

    @classmethod
    def directory(cls, name: str, perm: int = 0o755, mtime: int = 0) -> Entry:
        return cls(name, stat.S_IFDIR | perm, b"", mtime)

    @classmethod
    def file(cls, name: str, data: bytes, perm: int = 0o644, mtime: int = 0) -> Entry:
        return cls(name, stat.S_IFREG | perm, data, mtime)

    @classmethod
    def symlink(cls, name: str, target: str, mtime: int = 0) -> Entry:
        return cls(name, stat.S_IFLNK | 0o777, target.encode(), mtime)


def _pad(n: int) -> bytes:
    return b"\0" * (-n % 4)


def header(entry: Entry, ino: int) -> bytes:
    name = entry.name.encode() + b"\0"
    nlink = 2 if stat.S_ISDIR(entry.mode) else 1
    fields = (ino, entry.mode, 0, 0, nlink, entry.mtime, len(entry.data), 0, 0, 0, 0, len(name), 0)
    head = MAGIC + b"".join(b"%08X" % f for f in fields) + name
    return head + _pad(len(head))


class Writer:
    """Writes entries to a binary stream; parents must come before their children."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.ino = 0
        self.names: set[str] = set()

    def add(self, entry: Entry) -> None:
        name = str(PurePosixPath(entry.name.lstrip("/")))
        if name in self.names or name in ("", "."):
            raise ValueError(f"cpio: {entry.name!r} is already in the archive")
        parent = str(PurePosixPath(name).parent)
        if parent != "." and parent not in self.names:
            raise ValueError(f"cpio: {name!r} comes before its directory {parent!r}")
        self.names.add(name)
        self.ino += 1
        self.out.write(header(Entry(name, entry.mode, entry.data, entry.mtime), self.ino))
        self.out.write(entry.data + _pad(len(entry.data)))

    def ensure_dirs(self, name: str, mtime: int = 0) -> None:
        """Add the missing directories above ``name``."""
        parts = PurePosixPath(name.lstrip("/")).parts[:-1]
        for n in range(1, len(parts) + 1):
            d = "/".join(parts[:n])
            if d not in self.names:
                self.add(Entry.directory(d, mtime=mtime))

    def add_tree(
        self, source: os.PathLike[str] | str, dest: str, skip: frozenset[str] = frozenset()
    ) -> int:
        """Add the files, links and directories below ``source`` at ``dest`` (but not
        the directories named in ``skip``); returns the number of regular files."""
        files = 0
        base = os.fspath(source)
        self.ensure_dirs(dest.rstrip("/") + "/x")
        for top, dirs, names in os.walk(base):
            dirs[:] = sorted(d for d in dirs if d not in skip)
            rel = os.path.relpath(top, base)
            here = dest.strip("/") if rel == "." else f"{dest.strip('/')}/{rel}"
            if rel != "." and here not in self.names:
                self.add(Entry.directory(here, stat.S_IMODE(os.lstat(top).st_mode)))
            for name in sorted(names + [d for d in dirs if os.path.islink(os.path.join(top, d))]):
                path = os.path.join(top, name)
                st = os.lstat(path)
                target = f"{here}/{name}"
                if stat.S_ISLNK(st.st_mode):
                    self.add(Entry.symlink(target, os.readlink(path), int(st.st_mtime)))
                elif stat.S_ISREG(st.st_mode):
                    with open(path, "rb") as f:
                        data = f.read()
                    self.add(Entry(target, st.st_mode, data, int(st.st_mtime)))
                    files += 1
            dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(top, d))]
        return files

    def close(self) -> None:
        self.out.write(header(Entry(TRAILER, 0), 0))
        self.out.flush()


def write(out: BinaryIO, entries: Iterable[Entry]) -> None:
    w = Writer(out)
    for e in entries:
        w.ensure_dirs(e.name)
        w.add(e)
    w.close()


def read(data: bytes) -> list[Entry]:
    """Parse uncompressed newc archives, one after the other as the kernel reads them
    (zero bytes may pad between them); for tests and checks of a built image."""
    out: list[Entry] = []
    pos = 0
    while pos < len(data):
        if data[pos] == 0:
            pos += 1
            continue
        if data[pos : pos + 6] != MAGIC:
            raise ValueError(f"cpio: no newc header at offset {pos}")
        fields = [int(data[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        mode, mtime, size, namesize = fields[1], fields[5], fields[6], fields[11]
        start = pos + 110
        name = data[start : start + namesize - 1].decode()
        pos = start + namesize
        pos += -pos % 4
        body = data[pos : pos + size]
        pos += size
        pos += -pos % 4
        if name != TRAILER:
            out.append(Entry(name, mode, body, mtime))
    return out
