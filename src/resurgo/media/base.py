"""Recovery sets on a medium: the one API every medium offers.

A medium (directory, SFTP server, S3 bucket, floppy image) holds recovery
sets. Each kind of medium is a Backend that knows how to stage a set's files
out of sight and make the whole set visible in one atomic step; everything
above that (ids, the index, hashing, checks) is shared here.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType

from resurgo import signing
from resurgo.errors import (
    REFUSED_SET,
    BadInput,
    Damaged,
    NotAuthentic,
    OperationFailed,
    PreconditionFailed,
)
from resurgo.media import lease as leases
from resurgo.media import setindex
from resurgo.media.lease import Lease, LeaseStore
from resurgo.media.setindex import FileEntry, SetIndex, SetKind, SetMeta
from resurgo.media.streams import FileReader, FileWriter, Sink, Source

log = logging.getLogger("resurgo.media")


class Staging(ABC):
    """The files of one set while it is written, invisible until commit."""

    @abstractmethod
    def create(self, name: str) -> Sink: ...

    @abstractmethod
    def commit(self, index: bytes) -> None:
        """Make the set visible with this index, atomically."""

    @abstractmethod
    def abort(self) -> None:
        """Remove what was staged; never raises for a medium that went away."""

    @abstractmethod
    def sizes(self) -> dict[str, int]:
        """The staged files as the medium has them now, by name, with their sizes."""


class Backend(ABC):
    """What one kind of medium must do; Medium builds recovery sets on it."""

    url: str

    def check_file_allowed(self, name: str) -> None:  # noqa: B027 - most media hold any file
        """Refuse files this medium cannot hold (a floppy holds the description only)."""

    @property
    def holds_archives(self) -> bool:
        return True

    @abstractmethod
    def candidate_ids(self) -> list[str]:
        """Ids that may be committed sets (those without an index are skipped)."""

    @abstractmethod
    def read_index(self, set_id: str) -> bytes | None:
        """The set's index, or None if the set does not exist (or is incomplete)."""

    @abstractmethod
    def begin(self, set_id: str) -> Staging:
        """Clean leftovers of interrupted saves, then start staging a new set."""

    @abstractmethod
    def open_file(self, set_id: str, name: str) -> Source: ...

    @abstractmethod
    def file_sizes(self, set_id: str) -> dict[str, int]:
        """The files present in a committed set, by name, with their sizes."""

    @abstractmethod
    def delete(self, set_id: str) -> None:
        """Remove a set: first make it invisible, then remove its files."""

    def close(self) -> None:  # noqa: B027 - most backends hold nothing open
        """Release connections."""

    def leases(self) -> LeaseStore | None:
        """Where saves sharing this medium keep their leases (see lease.py); None for a
        medium that one save at a time writes whole (a floppy image)."""
        return None

    def host_key_line(self) -> str | None:
        """A network medium's host key as this connection verified it (a known_hosts
        line); None where there is no host to pin."""
        return None

    def write_beside(self, set_id: str, name: str, data: bytes) -> None:
        """Put a small file into a committed set's place, replacing one of that name: a
        file not listed in its index (rehearse leaves its report there), which goes with
        the set when it is deleted."""
        raise OperationFailed(f"{self.url} cannot hold a file beside a set")

    def read_signature(self, set_id: str) -> bytes | None:
        """The signature beside the set's index, or None when the set has none.

        Read through the set's listing and the file reader every medium has, and never
        more than a signature can be: a hostile medium gets no unbounded read here."""
        size = self.file_sizes(set_id).get(signing.SIGNATURE_NAME)
        if size is None:
            return None
        if size > signing.MAX_SIGNATURE:
            return b""  # not a signature: refused by the check
        source = self.open_file(set_id, signing.SIGNATURE_NAME)
        try:
            data = b""
            while len(data) <= signing.MAX_SIGNATURE:
                chunk = source.read(signing.MAX_SIGNATURE + 1 - len(data))
                if not chunk:
                    break
                data += chunk
        finally:
            source.close()
        return data


@dataclass(frozen=True)
class SetInfo:
    """One recovery set as listed: what its index says."""

    id: str
    created: datetime
    kind: SetKind
    parent: str | None
    host: str | None
    size: int
    file_count: int
    labels: Mapping[str, str]
    # The trusted principal whose key signed the set, when signatures were checked.
    signed_by: str | None = None
    # Whether the set holds its rescue image (a save without one, by --no-rescue or
    # because this machine could not build it, still makes a set: status and check say so).
    has_rescue: bool = False

    @classmethod
    def of(cls, index: SetIndex, signed_by: str | None = None) -> SetInfo:
        return cls(
            index.id,
            index.created,
            index.meta.kind,
            index.meta.parent,
            index.meta.host,
            index.size,
            len(index.files),
            index.meta.labels,
            signed_by,
            index.file(setindex.RESCUE) is not None,
        )


class SetWriter:
    """A recovery set being written. Nothing of it is visible until ``commit()``.

    Used as a context manager, a set that was not committed when the block ends
    (by an exception or by forgetting) is aborted.
    """

    def __init__(
        self,
        medium: Medium,
        staging: Staging,
        set_id: str,
        meta: SetMeta,
        created: datetime,
        sign_key: signing.SignKey | None = None,
        lease: Lease | None = None,
    ) -> None:
        self._medium = medium
        self._lease = lease
        self._sign_key = sign_key
        self._staging = staging
        self.id = set_id
        self.meta = meta
        self.created = created
        self._entries: dict[str, FileEntry] = {}
        self._open: dict[str, FileWriter] = {}
        self._state = "open"

    def create(self, name: str) -> FileWriter:
        """A new file of the set, to be written front to back and closed."""
        self._require_open()
        setindex.check_file_name(name)
        self._medium.backend.check_file_allowed(name)
        if name in self._entries or name in self._open:
            raise BadInput(f"{name} is written twice into recovery set {self.id}")
        sink = self._staging.create(name)
        if self._lease is not None:
            sink = _Renewing(sink, self._lease)
        writer = FileWriter(name, sink, self._file_done)
        self._open[name] = writer
        return writer

    def write_bytes(self, name: str, data: bytes) -> None:
        with self.create(name) as f:
            f.write(data)

    def pin(self, leave_out: str) -> str:
        """setindex.content_pin of the files written so far (all closed), but one."""
        if self._open:
            raise OperationFailed(f"{', '.join(self._open)} still being written: no pin yet")
        return setindex.content_pin(self.id, self._entries.values(), leave_out)

    def _file_done(self, entry: FileEntry) -> None:
        self._open.pop(entry.name, None)
        self._entries[entry.name] = entry

    def _require_open(self) -> None:
        if self._state != "open":
            raise OperationFailed(f"recovery set {self.id} is already {self._state}")

    def commit(self) -> SetInfo:
        """Write the index and make the whole set visible at once."""
        self._require_open()
        for writer in list(self._open.values()):
            if not writer.closed:
                raise OperationFailed(
                    f"{writer.name} is still being written: close it before committing "
                    f"recovery set {self.id}"
                )
        index = setindex.build(self.id, self.created, self.meta, list(self._entries.values()))
        try:
            self._check_staged()
            self._check_parent()
            if self._lease is not None:
                self._lease.check()
            encoded = setindex.encode(index)
            if self._sign_key is not None:
                # Staged before the index: a set is visible only once whole, signature included.
                with FileWriter(signing.SIGNATURE_NAME,
                                self._staging.create(signing.SIGNATURE_NAME),
                                lambda _entry: None) as sig:
                    sig.write(self._sign_key.sign(encoded))
            self._staging.commit(encoded)
        except BaseException:
            self.abort()
            raise
        self._state = "committed"
        self._release()
        log.info("recovery set %s committed on %s", self.id, self._medium.url)
        return SetInfo.of(index)

    def _release(self) -> None:
        if self._lease is not None:
            self._lease.release()
            self._medium.held.discard(self._lease)

    def _check_parent(self) -> None:
        """The parent still there: a prune elsewhere that decided before this save took
        its lease may have deleted it since (see lease.py)."""
        parent = self.meta.parent
        if (parent is not None and self._medium.holds_archives
                and self._medium.backend.read_index(parent) is None):
            raise OperationFailed(
                f"recovery set {self.id} was not committed: its parent set {parent} was "
                f"deleted from {self._medium.url} while it was saved",
                "a prune ran elsewhere meanwhile: save again (a full set if no other is left)",
            )

    def _check_staged(self) -> None:
        """Every file written must still be there as written: SFTP and S3 have no locks,
        and a second save started meanwhile takes this one's files for the leftovers of
        an interrupted save. Committed anyway, the set would look whole and not be."""
        staged = self._staging.sizes()
        gone = sorted(e.name for e in self._entries.values() if staged.get(e.name) != e.size)
        if gone:
            shown = ", ".join(gone[:5]) + (f" and {len(gone) - 5} more" if len(gone) > 5 else "")
            raise OperationFailed(
                f"recovery set {self.id} was not committed: {shown} vanished from "
                f"{self._medium.url} while it was saved",
                "another save to the same place at the same time may have taken them for "
                "the leftovers of an interrupted save: save again, one save at a time",
            )

    def abort(self) -> None:
        """Drop the set: what was written is removed, earlier sets are untouched."""
        if self._state != "open":
            return
        self._state = "aborted"
        try:
            for writer in list(self._open.values()):
                writer.abort()
            self._staging.abort()
        finally:
            self._release()

    def __enter__(self) -> SetWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.abort()


class _Renewing:
    """A sink that renews the save's lease as data flows to the medium (through the one
    connection the save uses: no second thread talks to the medium)."""

    def __init__(self, sink: Sink, lease: Lease) -> None:
        self._sink = sink
        self._lease = lease

    def write(self, data: bytes) -> None:
        self._lease.renew_if_due()
        self._sink.write(data)

    def finish(self) -> None:
        self._sink.finish()

    def discard(self) -> None:
        self._sink.discard()


class SetReader:
    """A committed recovery set, read through its index."""

    def __init__(self, medium: Medium, index: SetIndex, signed_by: str | None = None) -> None:
        self._medium = medium
        self.index = index
        self.id = index.id
        self.info = SetInfo.of(index, signed_by)

    @property
    def where(self) -> str:
        return f"{self._medium.url} set {self.id}"

    def files(self) -> tuple[FileEntry, ...]:
        return self.index.files

    def open(self, name: str) -> FileReader:
        """The file's bytes; at the end of the stream its size and digest are checked."""
        entry = self.index.file(name)
        if entry is None:
            raise OperationFailed(
                f"recovery set {self.where} has no file {name!r}",
                "its files are: " + ", ".join(f.name for f in self.index.files),
            )
        return FileReader(entry, self._medium.backend.open_file(self.id, name), self.where)

    def read_bytes(self, name: str) -> bytes:
        with self.open(name) as f:
            return f.read()

    def problems(self) -> list[str]:
        """Files of the index that are missing or have the wrong size on the medium."""
        present = self._medium.backend.file_sizes(self.id)
        out: list[str] = []
        for entry in self.index.files:
            size = present.get(entry.name)
            if size is None:
                out.append(f"{entry.name} is missing")
            elif size != entry.size:
                out.append(f"{entry.name} has {size} bytes, the set recorded {entry.size}")
        return out

    def check(self) -> None:
        """Refuse a set whose files are not all present with their recorded sizes.

        Cheap (no file is read): run it before anything is written to disks.
        """
        problems = self.problems()
        if problems:
            raise Damaged(
                f"recovery set {self.where} is incomplete: " + "; ".join(problems),
                "restore from another set, or save a new one",
            )

    def verify(self) -> None:
        """Read every file and compare its digest with the index."""
        self.check()
        for entry in self.index.files:
            self.read_through(entry.name)

    def read_through(self, name: str) -> None:
        """Read a file to its end, which checks its size and digest against the index."""
        with self.open(name) as f:
            while f.read(1 << 20):
                pass


class Medium:
    """Where recovery sets live. Close it (or use ``with``) to release connections.

    With ``trust`` (trusted signers), a set is read only once its index's signature has
    been checked against them: a set that fails is not listed, and opening it raises
    NotAuthentic before anything else of it is read.
    """

    def __init__(self, backend: Backend, trust: signing.Trust | None = None) -> None:
        self.backend = backend
        self.trust = trust
        # The sets the last list_sets left out as not authentic: (id, why).
        self.refused: tuple[tuple[str, str], ...] = ()
        # The leases of the sets this process is writing (released on close at the latest).
        self.held: set[Lease] = set()

    @property
    def url(self) -> str:
        return self.backend.url

    @property
    def holds_archives(self) -> bool:
        return self.backend.holds_archives

    def _index(self, set_id: str) -> tuple[SetIndex, str | None] | None:
        """The set's index and who signed it (None: signatures are not checked)."""
        data = self.backend.read_index(set_id)
        if data is None:
            return None
        where = f"{self.url} set {set_id}"
        signed_by = None
        if self.trust is not None:
            signed_by = self.trust.verify(data, self.backend.read_signature(set_id), where)
        index = setindex.decode(data, where)
        if index.id != set_id:
            raise OperationFailed(
                f"recovery set {set_id} on {self.url} holds the index of set {index.id}",
                "the medium was changed by hand: delete the set",
            )
        return index, signed_by

    def list_sets(self) -> list[SetInfo]:
        """Complete sets, oldest first; damaged indexes are reported in the log and skipped."""
        out: list[SetInfo] = []
        refused: list[tuple[str, str]] = []
        for set_id in self.backend.candidate_ids():
            try:
                found = self._index(set_id)
            except NotAuthentic as e:
                # Tagged: a caller that says the refusals itself (the rescue's agent, from
                # self.refused) leaves these out of what it shows.
                log.warning("%s", e.message, extra={REFUSED_SET: set_id})
                refused.append((set_id, e.message))
                continue
            except OperationFailed as e:
                log.warning("%s", e.message)
                continue
            if found is not None:
                out.append(SetInfo.of(*found))
        self.refused = tuple(refused)
        return sorted(out, key=lambda s: (s.created, s.id))

    def open_set(self, set_id: str) -> SetReader:
        setindex.check_set_id(set_id)
        found = self._index(set_id)
        if found is None:
            raise OperationFailed(
                f"there is no recovery set {set_id} on {self.url}",
                "list the sets on the medium to see which exist",
            )
        return SetReader(self, *found)

    def begin_set(
        self,
        meta: SetMeta | None = None,
        *,
        set_id: str | None = None,
        sign_key: signing.SignKey | None = None,
        created: datetime | None = None,
    ) -> SetWriter:
        """Start writing a new set; leftovers of interrupted saves are removed first.
        With ``sign_key`` its index is signed when it is committed. ``created`` (default:
        now) is the time the index records, and a new id's.

        On a medium with leases (lease.py), the set's lease is taken first and held until
        the set is committed or dropped: saves on other machines leave its staged files
        alone, and a prune anywhere keeps the set it builds on.
        """
        meta = meta or SetMeta()
        created = created or datetime.now(UTC)
        given = set_id is not None
        set_id = setindex.check_set_id(set_id) if set_id else setindex.new_set_id(created)
        if self.backend.read_index(set_id) is not None:
            raise BadInput(f"recovery set {set_id} already exists on {self.url}")
        lease = self._take_lease(set_id, meta.parent, given)
        if lease is not None:
            set_id = lease.holder.set_id
        try:
            # After the lease: a prune that looks for leases from now on keeps the parent.
            if (
                meta.parent is not None
                and self.holds_archives
                and self.backend.read_index(meta.parent) is None
            ):
                raise PreconditionFailed(
                    f"the parent set {meta.parent} of the incremental set is not on {self.url}",
                    "save a full set first (an incremental set needs its parent on the same "
                    "medium)",
                )
            staging = self.backend.begin(set_id)
        except BaseException:
            if lease is not None:
                lease.release()
                self.held.discard(lease)
            raise
        return SetWriter(self, staging, set_id, meta, created, sign_key, lease)

    def _take_lease(self, set_id: str, parent: str | None, given: bool) -> Lease | None:
        store = self.backend.leases()
        if store is None:
            return None
        for _ in range(8):
            lease = Lease.take(store, self.url, set_id, parent)
            if lease is not None:
                self.held.add(lease)
                return lease
            if given:
                break
            # Another save drew the same id in the same second: draw again.
            set_id = setindex.new_set_id(datetime.now(UTC))
        raise BadInput(f"recovery set {set_id} is being saved on {self.url} by another save")

    def in_use(self) -> dict[str, str]:
        """The sets that saves running now (on any machine) build on: each one's parent and
        that parent's chain, with who needs it."""
        store = self.backend.leases()
        if store is None:
            return {}
        out: dict[str, str] = {}
        for holder in leases.live_holders(store, self.url):
            current = holder.parent
            while current is not None and current not in out:
                out[current] = f"the save of set {holder.set_id} ({holder.who()}) builds on it"
                data = self.backend.read_index(current)
                if data is None:
                    break
                try:
                    current = setindex.decode(data, f"{self.url} set {current}").meta.parent
                except OperationFailed:
                    break
        return out

    def write_beside(self, set_id: str, name: str, data: bytes) -> None:
        """A file beside the set's own (Backend.write_beside): never one of the set's
        files, its index or its signature, and only into a set that is there."""
        setindex.check_set_id(set_id)
        setindex.check_file_name(name)
        index = self._index(set_id)
        if index is None:
            raise OperationFailed(f"there is no recovery set {set_id} on {self.url}")
        if "/" in name or index[0].file(name) is not None:
            raise BadInput(f"{name} is a file of recovery set {set_id}: not replaced")
        self.backend.write_beside(set_id, name, data)

    def delete_set(self, set_id: str) -> None:
        setindex.check_set_id(set_id)
        if self.backend.read_index(set_id) is None:
            raise OperationFailed(f"there is no recovery set {set_id} on {self.url}")
        why = self.in_use().get(set_id)
        if why is not None:
            raise PreconditionFailed(f"recovery set {set_id} on {self.url} is kept: {why}",
                                     "delete it once that save is done")
        self.backend.delete(set_id)
        log.info("recovery set %s deleted from %s", set_id, self.url)

    def close(self) -> None:
        try:
            for lease in list(self.held):
                lease.release()
            self.held.clear()
        finally:
            self.backend.close()

    def __enter__(self) -> Medium:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
