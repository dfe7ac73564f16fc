"""Recovery sets as directories of a file tree (a local directory, an SFTP server).

Layout under the medium's root::

    <root>/<set id>/set.json            committed sets: the directory appears by rename
    <root>/<set id>/description.toml ...
    <root>/.incomplete-<set id>/        a save in progress (or interrupted): invisible
    <root>/.deleting-<set id>/          a delete in progress (or interrupted): invisible

A set is written into ``.incomplete-<id>/``, every file synced, the index
written and synced last, and the directory renamed to ``<id>``: rename(2) of a
directory is atomic, so a listing sees the whole set or nothing. Deleting
renames first, then removes. The next save removes the leftovers of both, except a
staging directory that a running save holds: on any tree medium its lease,
``<root>/.lease-<set id>`` (lease.py: taken by exclusive create, renewed by a rename over
it), and on a local directory also an flock: two saves to one USB disk or SFTP directory
at once, from one machine or two, both complete. Should a staging vanish anyway (a lease
broken as expired), its save fails at its commit, naming what vanished (SetWriter checks
the staged files first).

Directories are made 0700 and files 0600 whatever the umask (a set holds /etc/shadow).
Below the root nothing is followed: a set directory or file that is a symbolic link, or a
file that is not a regular one, is refused unread, and set.json is read up to
limits.INDEX bytes at most.
"""

from __future__ import annotations

import logging
import posixpath
import secrets
from collections.abc import Callable
from typing import Protocol

from resurgo.errors import OperationFailed
from resurgo.media import lease, limits, setindex
from resurgo.media.base import Backend, Staging
from resurgo.media.lease import LeaseStore
from resurgo.media.streams import Sink, Source

log = logging.getLogger("resurgo.media")

INCOMPLETE = ".incomplete-"
DELETING = ".deleting-"
# A lease's replacement while a renewal writes it: .lease-<id>.renewing-<random>.
_RENEWING = ".renewing-"


def parts_below(root: str, path: str) -> list[str]:
    """The names leading from root to path, each to be looked at without following a
    link ([] for root itself); ValueError for a path outside root."""
    rel = posixpath.relpath(path, root)
    if rel == ".." or rel.startswith("../"):
        raise ValueError(f"{path} is not below {root}")
    return [] if rel == "." else rel.split("/")


def not_plain(path: str, url: str, changed: str = "the medium was changed") -> OperationFailed:
    """The error for a set's directory or file (or one on the way to it) that is a link,
    or neither a regular file nor a directory: it is refused unread."""
    return OperationFailed(
        f"{path} on {url} is a symbolic link or not a regular file or directory: "
        "refused unread",
        "a recovery set holds plain files and directories only; "
        f"{changed} by hand or by someone else: use another set or medium",
    )


class FileOps(Protocol):
    """The file operations a tree medium needs, on '/'-separated paths."""

    def listdir(self, path: str) -> list[str] | None:
        """Names in a directory, or None if it does not exist."""

    def read_small(self, path: str, limit: int) -> bytes | None:
        """A small file's bytes, or None if it does not exist; refused (OperationFailed)
        when it has more than limit bytes or is not a regular file."""

    def open_read(self, path: str) -> Source:
        """A regular file below the root, reached through no symbolic link."""

    def open_write(self, path: str) -> Sink:
        """A new file (it must not exist), mode 0600; synced to stable storage by finish()."""

    def mkdir(self, path: str) -> None:
        """Create a directory whose parent exists, mode 0700."""

    def rename(self, src: str, dst: str) -> None: ...

    def remove_tree(self, path: str) -> None:
        """Remove a file or a directory and all below it; a missing path is no error."""

    def file_sizes(self, path: str) -> dict[str, int]:
        """Every regular file below path, by relative '/'-separated name, with its size."""

    def sync_dir(self, path: str) -> None:
        """Make the entries of a directory durable (renames, new files)."""

    def hold(self, path: str) -> Callable[[], None]:
        """Mark the directory as in use by this save until the returned function is
        called (so that another save does not take it for a leftover)."""

    def busy(self, path: str) -> bool:
        """Whether a running save holds the directory."""


class TreeBackend(Backend):
    def __init__(self, url: str, ops: FileOps, root: str) -> None:
        self.url = url
        self.ops = ops
        self.root = root
        self.held: list[Callable[[], None]] = []  # of the stagings not yet committed

    def _path(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    def _entries(self) -> list[str]:
        names = self.ops.listdir(self.root)
        if names is None:
            raise OperationFailed(
                f"the medium {self.url} does not exist",
                "check the path (is the disk mounted?); a save creates it if its parent exists",
            )
        return names

    def candidate_ids(self) -> list[str]:
        return sorted(n for n in self._entries() if setindex.is_set_id(n))

    def read_index(self, set_id: str) -> bytes | None:
        return self.ops.read_small(self._path(set_id, setindex.INDEX_NAME), limits.INDEX)

    def begin(self, set_id: str) -> Staging:
        if self.ops.listdir(self.root) is None:
            self.ops.mkdir(self.root)
        self.clean_leftovers()
        stage = self._path(INCOMPLETE + set_id)
        self.ops.mkdir(stage)
        release = self.ops.hold(stage)
        self.held.append(release)
        return TreeStaging(self, set_id, stage, release)

    def clean_leftovers(self) -> None:
        names = self._entries()
        for name in names:
            if name.startswith((INCOMPLETE, DELETING)):
                if self.ops.busy(self._path(name)):
                    log.info("leaving %s/%s alone: a save is writing it", self.url, name)
                    continue
                if name.startswith(INCOMPLETE):
                    holder = lease.live_holder(self, name[len(INCOMPLETE):], self.url)
                    if holder is not None:
                        log.info("leaving %s/%s alone: the save of %s is writing it",
                                 self.url, name, holder.who())
                        continue
                log.info(
                    "removing %s/%s, left over by an interrupted save or delete", self.url, name
                )
                self.ops.remove_tree(self._path(name))
        # Leases whose save is gone (expired: broken with a message), and the replacements
        # a renewal left half done.
        for name in names:
            set_id = lease.lease_id(name)
            if set_id is not None:
                lease.live_holder(self, set_id, self.url)
            elif name.startswith(lease.PREFIX) and _RENEWING in name:
                set_id = lease.lease_id(name.split(_RENEWING)[0])
                if set_id is not None and lease.live_holder(self, set_id, self.url) is None:
                    self.ops.remove_tree(self._path(name))

    # --- leases (lease.LeaseStore) ---

    def leases(self) -> LeaseStore:
        return self

    def lease_create(self, set_id: str, data: bytes) -> bool:
        if self.ops.listdir(self.root) is None:
            self.ops.mkdir(self.root)
        path = self._path(lease.lease_name(set_id))
        if self.ops.read_small(path, lease.MAX_LEASE) is not None:
            return False
        try:
            sink = self.ops.open_write(path)  # exclusive: O_EXCL, SSH_FXF_EXCL
        except OperationFailed:
            if self.ops.read_small(path, lease.MAX_LEASE) is not None:
                return False  # another save created it first
            raise
        self._fill(sink, data)
        return True

    def _fill(self, sink: Sink, data: bytes) -> None:
        try:
            sink.write(data)
            sink.finish()
        except BaseException:
            sink.discard()
            raise

    def lease_read(self, set_id: str) -> bytes | None:
        return self.ops.read_small(self._path(lease.lease_name(set_id)), lease.MAX_LEASE)

    def lease_replace(self, set_id: str, data: bytes) -> None:
        path = self._path(lease.lease_name(set_id))
        new = f"{path}{_RENEWING}{secrets.token_hex(4)}"
        self._fill(self.ops.open_write(new), data)
        try:
            self.ops.rename(new, path)
        except BaseException:
            self.ops.remove_tree(new)
            raise

    def lease_remove(self, set_id: str) -> None:
        self.ops.remove_tree(self._path(lease.lease_name(set_id)))

    def lease_ids(self) -> list[str]:
        return sorted(i for i in map(lease.lease_id, self._entries()) if i is not None)

    def write_beside(self, set_id: str, name: str, data: bytes) -> None:
        path = self._path(set_id, name)
        new = self._path(set_id, f".{name}.{secrets.token_hex(4)}")
        self._fill(self.ops.open_write(new), data)
        try:
            self.ops.rename(new, path)
        except BaseException:
            self.ops.remove_tree(new)
            raise
        self.ops.sync_dir(self._path(set_id))

    def open_file(self, set_id: str, name: str) -> Source:
        return self.ops.open_read(self._path(set_id, name))

    def close(self) -> None:
        # A staging neither committed nor aborted is abandoned: a leftover for the next save.
        while self.held:
            self.held.pop()()

    def file_sizes(self, set_id: str) -> dict[str, int]:
        sizes = self.ops.file_sizes(self._path(set_id))
        sizes.pop(setindex.INDEX_NAME, None)
        return sizes

    def delete(self, set_id: str) -> None:
        doomed = self._path(DELETING + set_id)
        self.ops.rename(self._path(set_id), doomed)
        self.ops.sync_dir(self.root)
        self.ops.remove_tree(doomed)


class TreeStaging(Staging):
    def __init__(self, backend: TreeBackend, set_id: str, stage: str,
                 release: Callable[[], None]) -> None:
        self._b = backend
        self._id = set_id
        self._stage = stage
        self._release = release
        self._dirs: set[str] = {""}

    def create(self, name: str) -> Sink:
        parent = posixpath.dirname(name)
        self._makedirs(parent)
        return self._b.ops.open_write(posixpath.join(self._stage, name))

    def _makedirs(self, rel: str) -> None:
        if rel in self._dirs:
            return
        self._makedirs(posixpath.dirname(rel))
        self._b.ops.mkdir(posixpath.join(self._stage, rel))
        self._dirs.add(rel)

    def commit(self, index: bytes) -> None:
        ops = self._b.ops
        sink = ops.open_write(posixpath.join(self._stage, setindex.INDEX_NAME))
        try:
            sink.write(index)
            sink.finish()
        except BaseException:
            sink.discard()
            raise
        for rel in sorted(self._dirs, key=len, reverse=True):
            ops.sync_dir(posixpath.join(self._stage, rel) if rel else self._stage)
        ops.rename(self._stage, self._b._path(self._id))
        ops.sync_dir(self._b.root)
        self._release()

    def sizes(self) -> dict[str, int]:
        try:
            return self._b.ops.file_sizes(self._stage)
        except OperationFailed:
            return {}  # the staging directory is gone

    def abort(self) -> None:
        try:
            self._b.ops.remove_tree(self._stage)
        except OperationFailed as e:
            log.warning("could not remove %s (the next save will): %s", self._stage, e)
        finally:
            self._release()
