"""The package pool of a medium: package files named by their sha256, shared by its sets.

Layout on a tree medium (a directory, an SFTP server, an NFS or CIFS share)::

    <root>/pool/<sha256>_<package>_<version>_<architecture>.deb
    <root>/pool/<sha256>_<package>_<version>_<architecture>.<twin>.zst.deb   a twin of it
    <root>/pool/.incoming-<random>          a package being added (or left by a killed save)

A twin (resurgo.pool.twins) is the package with its members recompressed with zstd, named
after the package it was made from and, as <twin>, the first 16 hex digits of its own
sha256 (the sets that use it list the whole sha256 and its size). Two saves with another
zstd may make different twins of one package: each has its own name, and a set's twin is
never replaced under it.

A package is written under a temporary name, synced, and renamed into place: a name in the
pool is always a whole file, and the same package added by two saves at once is one file.

On S3 (and S3-compatible servers) the pool is the objects ``<prefix>/pool/<same name>``:
an object appears whole when its PUT (or its multipart upload) completes, so no temporary
name is needed; what a killed save leaves is an unfinished multipart upload under
``<prefix>/pool/``, which prune aborts. Two saves adding the same package write the same
bytes to the same key.

The name says what the file is meant to be; nothing trusts it: a set lists the sha256 and
size of each package it needs (packages.txt, covered by its index and signature), and every
reader checks them (resurgo.pool.needs). Versions are written as apt writes them in file
names (":" as "%3a").

A small FAT image (floppy:) holds no pool: it holds a set's description and rescue only,
never archives, and a pool of a few hundred MiB would not fit on it either.
"""

from __future__ import annotations

import contextlib
import hashlib
import posixpath
import re
import secrets
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from resurgo.errors import BadInput, OperationFailed
from resurgo.media import Medium
from resurgo.media.directory import LocalFiles
from resurgo.media.s3 import S3Backend
from resurgo.media.s3client import ObjectSource, UploadSink
from resurgo.media.streams import Source
from resurgo.media.tree import TreeBackend
from resurgo.pool.lists import PackageRef

POOL_DIR = "pool"
INCOMING = ".incoming-"
_NAME = re.compile(
    r"(?P<sha256>[0-9a-f]{64})_(?P<name>[a-z0-9][a-z0-9+.-]*)_(?P<version>[A-Za-z0-9.+~%-]+)"
    r"_(?P<arch>[a-z0-9-]+)(?:\.(?P<twin>[0-9a-f]{16})\.zst)?\.deb")
TWIN_SUFFIX = ".zst.deb"
TWIN_DIGITS = 16
_CHUNK = 1 << 20
# What a medium that cannot hold a pool is told.
UNSUPPORTED = ("directory, SFTP, NFS, CIFS and S3 media can; a small FAT image holds no "
               "archives, and the packages would not fit on it")


def package_name(p: PackageRef) -> str:
    """The package's own file."""
    return f"{p.sha256}_{p.name}_{p.version.replace(':', '%3a')}_{p.architecture}.deb"


def twin_name(p: PackageRef) -> str:
    """The name of the twin ``p`` names (its twin_sha256)."""
    assert p.twin_sha256, p
    return f"{package_name(p).removesuffix('.deb')}.{p.twin_sha256[:TWIN_DIGITS]}{TWIN_SUFFIX}"


def file_name(p: PackageRef) -> str:
    """The file a recovery reads: the twin when the set recorded one, else the package."""
    return twin_name(p) if p.twin_sha256 else package_name(p)


def parse_name(name: str, size: int) -> PackageRef | None:
    """The package a package file's name says (None for a twin's or another name)."""
    m = _NAME.fullmatch(name)
    if m is None or m["twin"]:
        return None
    return PackageRef(m["sha256"], size, m["name"], m["version"].replace("%3a", ":"),
                      m["arch"])


def can_hold(medium: Medium) -> bool:
    return isinstance(medium.backend, TreeBackend | S3Backend)


class _Store(Protocol):
    """Where a pool's files are, by name in the pool."""

    def sizes(self) -> dict[str, int] | None:
        """Every file in the pool with its size; None when there is no pool yet."""

    def open(self, name: str) -> Source: ...

    def add(self, name: str, chunks: Iterable[bytes]) -> None:
        """Write a whole file, seen under its name only once it is whole."""

    def remove(self, name: str) -> None: ...

    def leftovers(self) -> list[str]:
        """What killed saves left (shown as names)."""

    def clear_leftovers(self) -> None: ...


class _TreeStore:
    def __init__(self, backend: TreeBackend) -> None:
        self._backend = backend
        self._ops = backend.ops
        self._dir = posixpath.join(backend.root, POOL_DIR)

    def sizes(self) -> dict[str, int] | None:
        if self._ops.listdir(self._dir) is None:
            return None
        return {n: s for n, s in self._ops.file_sizes(self._dir).items() if "/" not in n}

    def open(self, name: str) -> Source:
        return self._ops.open_read(posixpath.join(self._dir, name))

    def add(self, name: str, chunks: Iterable[bytes]) -> None:
        ops = self._ops
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
        final = posixpath.join(self._dir, name)
        try:
            ops.rename(temp, final)
        except OperationFailed:
            # SFTP renames onto no existing name: another save added it meanwhile.
            ops.remove_tree(temp)
            if name not in (ops.listdir(self._dir) or []):
                raise
        ops.sync_dir(self._dir)

    def remove(self, name: str) -> None:
        self._ops.remove_tree(posixpath.join(self._dir, name))

    def leftovers(self) -> list[str]:
        names = self._ops.listdir(self._dir) or []
        return [n for n in names if n.startswith(INCOMING)]

    def clear_leftovers(self) -> None:
        for name in self.leftovers():
            self.remove(name)


class _S3Store:
    def __init__(self, backend: S3Backend) -> None:
        self._backend = backend
        self._client = backend.client
        self._prefix = f"{backend.root}{POOL_DIR}/"

    def sizes(self) -> dict[str, int] | None:
        listing = self._client.list_objects(self._prefix)
        out = {key[len(self._prefix):]: size for key, size in listing.objects}
        # Keys with a "/" below pool/ are none of the pool's: left alone, not shown.
        return {n: s for n, s in out.items() if n and "/" not in n} or None

    def open(self, name: str) -> Source:
        return ObjectSource(self._client, self._prefix + name)

    def add(self, name: str, chunks: Iterable[bytes]) -> None:
        sink = UploadSink(self._client, self._prefix + name, self._backend.part_size)
        try:
            for chunk in chunks:
                sink.write(chunk)
            sink.finish()
        except BaseException:
            sink.discard()
            raise

    def remove(self, name: str) -> None:
        self._client.delete(self._prefix + name)

    def _uploads(self) -> list[tuple[str, str]]:
        return [(k, u) for k, u in self._client.multipart_uploads(self._prefix)
                if k.startswith(self._prefix) and "/" not in k[len(self._prefix):]]

    def leftovers(self) -> list[str]:
        return [f"{k[len(self._prefix):]} (an unfinished upload)" for k, _ in self._uploads()]

    def clear_leftovers(self) -> None:
        for key, upload_id in self._uploads():
            self._client.abort_upload(key, upload_id)


class PackagePool:
    """The pool of one medium (see the module docstring)."""

    def __init__(self, medium: Medium) -> None:
        backend = medium.backend
        store: _Store
        if isinstance(backend, TreeBackend):
            store = _TreeStore(backend)
        elif isinstance(backend, S3Backend):
            store = _S3Store(backend)
        else:
            raise BadInput(f"{medium.url} cannot hold a package pool ({UNSUPPORTED})",
                           "save with --packages off to this medium, or save the set to "
                           "a medium that can")
        self.url = medium.url
        self._store = store
        # A local directory (a disk, a mounted share) is read by several threads at once;
        # an SFTP connection or an S3 client carries one stream of requests: one thread
        # at a time.
        self.local = isinstance(backend, TreeBackend) and isinstance(backend.ops, LocalFiles)

    def packages(self) -> dict[str, PackageRef]:
        """What the pool holds, by sha256 (as the names say: read() checks them)."""
        out: dict[str, PackageRef] = {}
        for name, size in (self._store.sizes() or {}).items():
            p = parse_name(name, size)
            if p is not None:
                out[p.sha256] = p
        return out

    def leftovers(self) -> list[str]:
        return self._store.leftovers()

    def clear_leftovers(self) -> None:
        self._store.clear_leftovers()

    def twins(self) -> dict[str, dict[str, int]]:
        """The twins the pool holds, by the sha256 of their package: their sizes by name."""
        out: dict[str, dict[str, int]] = {}
        for name, size in sorted((self._store.sizes() or {}).items()):
            m = _NAME.fullmatch(name)
            if m is not None and m["twin"]:
                out.setdefault(m["sha256"], {})[name] = size
        return out

    def open(self, p: PackageRef) -> Source:
        """The file a recovery reads (file_name)."""
        return self._store.open(file_name(p))

    def open_name(self, name: str) -> Source:
        """A file of the pool by its name (twins(): whatever its content)."""
        if "/" in name or not _NAME.fullmatch(name):
            raise BadInput(f"{name} is not a file of the package pool")
        return self._store.open(name)

    def where(self, p: PackageRef) -> str:
        return f"{self.url}/{POOL_DIR}/{file_name(p)}"

    def add(self, p: PackageRef, chunks: Iterable[bytes]) -> None:
        """Write a package (or, for a ref with a twin, its twin) into the pool (seen there
        only once whole)."""
        self._store.add(file_name(p), chunks)

    def add_file(self, p: PackageRef, path: Path) -> None:
        """Write the local file at ``path``, whose sha256 is ``p``'s stored one, into the
        pool as add() does, then read it back: what reached the pool must be what was
        checked (OperationFailed otherwise)."""
        with open(path, "rb") as f:
            self.add(p, iter(lambda: f.read(_CHUNK), b""))
        h = hashlib.sha256()
        with contextlib.closing(self.open(p)) as back:
            for chunk in iter(lambda: back.read(_CHUNK), b""):
                h.update(chunk)
        if h.hexdigest() != p.stored_sha256:
            raise OperationFailed(f"{self.where(p)} differs from what was written to it",
                                  "check the medium")

    def remove(self, name: str) -> None:
        if "/" in name or not _NAME.fullmatch(name):
            raise BadInput(f"{name} is not a file of the package pool")
        self._store.remove(name)

    def file_names(self) -> dict[str, int]:
        return {n: s for n, s in (self._store.sizes() or {}).items() if _NAME.fullmatch(n)}
