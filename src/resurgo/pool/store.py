"""The package pool of a medium: package files named by their sha256, shared by its sets.

Layout on a tree medium (a directory, an SFTP server)::

    <root>/pool/<sha256>_<package>_<version>_<architecture>.deb
    <root>/pool/.incoming-<random>          a package being added (or left by a killed save)

A package is written under a temporary name, synced, and renamed into place: a name in the
pool is always a whole file, and the same package added by two saves at once is one file.
The name says what the file is meant to be; nothing trusts it: a set lists the sha256 and
size of each package it needs (packages.txt, covered by its index and signature), and every
reader checks them (resurgo.pool.needs). Versions are written as apt writes them in file
names (":" as "%3a").
"""

from __future__ import annotations

import posixpath
import re
import secrets
from collections.abc import Iterable

from resurgo.errors import BadInput, OperationFailed
from resurgo.media import Medium
from resurgo.media.streams import Source
from resurgo.media.tree import TreeBackend
from resurgo.pool.lists import PackageRef

POOL_DIR = "pool"
INCOMING = ".incoming-"
_NAME = re.compile(
    r"(?P<sha256>[0-9a-f]{64})_(?P<name>[a-z0-9][a-z0-9+.-]*)_(?P<version>[A-Za-z0-9.+~%-]+)"
    r"_(?P<arch>[a-z0-9-]+)\.deb")
_COPY = 1 << 20


def file_name(p: PackageRef) -> str:
    return f"{p.sha256}_{p.name}_{p.version.replace(':', '%3a')}_{p.architecture}.deb"


def parse_name(name: str, size: int) -> PackageRef | None:
    m = _NAME.fullmatch(name)
    if m is None:
        return None
    return PackageRef(m["sha256"], size, m["name"], m["version"].replace("%3a", ":"),
                      m["arch"])


class PackagePool:
    """The pool of one medium (see the module docstring)."""

    def __init__(self, medium: Medium) -> None:
        backend = medium.backend
        if not isinstance(backend, TreeBackend):
            raise BadInput(
                f"{medium.url} cannot hold a package pool (directory and SFTP media can)",
                "save with --packages off to this medium")
        self.url = medium.url
        self._backend = backend
        self._dir = posixpath.join(backend.root, POOL_DIR)

    def packages(self) -> dict[str, PackageRef]:
        """What the pool holds, by sha256 (as the names say: read() checks them)."""
        if self._backend.ops.listdir(self._dir) is None:
            return {}
        out: dict[str, PackageRef] = {}
        for name, size in self._backend.ops.file_sizes(self._dir).items():
            p = parse_name(name, size)
            if p is not None:
                out[p.sha256] = p
        return out

    def leftovers(self) -> list[str]:
        names = self._backend.ops.listdir(self._dir) or []
        return [n for n in names if n.startswith(INCOMING)]

    def open(self, p: PackageRef) -> Source:
        return self._backend.ops.open_read(posixpath.join(self._dir, file_name(p)))

    def where(self, p: PackageRef) -> str:
        return f"{self.url}/{POOL_DIR}/{file_name(p)}"

    def add(self, p: PackageRef, chunks: Iterable[bytes]) -> None:
        """Write a package into the pool (whole, then renamed into place)."""
        ops = self._backend.ops
        if ops.listdir(self._backend.root) is None:
            ops.mkdir(self._backend.root)
        if ops.listdir(self._dir) is None:
            try:
                ops.mkdir(self._dir)
            except OperationFailed:
                if ops.listdir(self._dir) is None:  # not made by another save meanwhile
                    raise
        temp = posixpath.join(self._dir, INCOMING + secrets.token_hex(8))
        sink = ops.open_write(temp)
        try:
            for chunk in chunks:
                sink.write(chunk)
            sink.finish()
        except BaseException:
            sink.discard()
            raise
        final = posixpath.join(self._dir, file_name(p))
        try:
            ops.rename(temp, final)
        except OperationFailed:
            # SFTP renames onto no existing name: another save added it meanwhile.
            ops.remove_tree(temp)
            if file_name(p) not in (ops.listdir(self._dir) or []):
                raise
        ops.sync_dir(self._dir)

    def remove(self, name: str) -> None:
        if "/" in name or not (name.startswith(INCOMING) or _NAME.fullmatch(name)):
            raise BadInput(f"{name} is not a file of the package pool")
        self._backend.ops.remove_tree(posixpath.join(self._dir, name))

    def file_names(self) -> dict[str, int]:
        if self._backend.ops.listdir(self._dir) is None:
            return {}
        return {n: s for n, s in self._backend.ops.file_sizes(self._dir).items()
                if _NAME.fullmatch(n)}
