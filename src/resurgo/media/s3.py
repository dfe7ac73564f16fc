"""An S3 bucket (AWS or any S3-compatible server) as a medium.

Layout: ``<prefix>/<set id>/<file name>`` for each file, and
``<prefix>/<set id>/set.json`` written LAST. S3 has no rename; a set exists
when its index object exists, and S3's strong read-after-write consistency
makes that single PUT the atomic step. A set prefix without an index is the
leftover of an interrupted save (or delete, which removes the index first) unless a save
holds its lease, ``<prefix>/.lease-<set id>`` (lease.py): it is invisible, and the next
save removes it and aborts its unfinished multipart uploads.

The window this closes: a cleaner lists the prefixes, finds one without an index, and
removes every object under it. Without leases, a save that wrote its index between that
look and the removal lost its whole committed set, index included, after it had reported
success (and one that was still writing lost its objects and failed at its commit). Now a
save takes its lease before its first object and releases it only after its index is
written; a cleaner reads the lease after it found no index, and when there is none, reads
the index again before it removes anything: a prefix is removed only when neither a live
lease nor an index was there at that second look, that is when its save is gone. The same
holds for the multipart uploads, which a listing of objects does not show.
"""

from __future__ import annotations

import logging

from resurgo.errors import OperationFailed
from resurgo.media import lease, limits, setindex
from resurgo.media.base import Backend, Staging
from resurgo.media.lease import LeaseStore
from resurgo.media.s3client import DEFAULT_PART, ObjectSource, S3Client, UploadSink
from resurgo.media.streams import Sink, Source

log = logging.getLogger("resurgo.media.s3")


class S3Backend(Backend):
    def __init__(self, client: S3Client, prefix: str, part_size: int = DEFAULT_PART) -> None:
        self.client = client
        self.url = client.url
        self.root = prefix + "/" if prefix else ""
        self.part_size = part_size

    def key(self, set_id: str, name: str = "") -> str:
        return f"{self.root}{set_id}/{name}"

    def _set_prefixes(self) -> list[str]:
        listing = self.client.list_objects(self.root, "/")
        out = []
        for p in listing.prefixes:
            name = p[len(self.root) :].rstrip("/")
            if setindex.is_set_id(name):
                out.append(name)
        return sorted(out)

    def candidate_ids(self) -> list[str]:
        return self._set_prefixes()

    def read_index(self, set_id: str) -> bytes | None:
        return self.client.get_small(self.key(set_id, setindex.INDEX_NAME), limits.INDEX)

    def begin(self, set_id: str) -> Staging:
        self.client.check_bucket()
        self.clean_leftovers()
        return S3Staging(self, set_id)

    def clean_leftovers(self) -> None:
        gone: set[str] = set()
        for set_id in self._set_prefixes():
            if self._leftover(set_id):
                log.info("removing %s/%s, left over by an interrupted save or delete",
                         self.url, set_id)
                self._remove_prefix(set_id)
                gone.add(set_id)
        for key, upload_id in self.client.multipart_uploads(self.root):
            set_id = key[len(self.root):].split("/", 1)[0]
            if set_id in gone or (setindex.is_set_id(set_id) and self._leftover(set_id)):
                self.client.abort_upload(key, upload_id)
        for set_id in self.lease_ids():  # leases whose save is gone: broken if expired
            lease.live_holder(self, set_id, self.url)

    def _leftover(self, set_id: str) -> bool:
        """A staged set no save holds: no index, no live lease, and still no index once the
        lease was looked at (its save releases its lease only after writing its index)."""
        if self.read_index(set_id) is not None:
            return False
        holder = lease.live_holder(self, set_id, self.url)
        if holder is not None:
            log.info("leaving %s/%s alone: the save of %s is writing it", self.url, set_id,
                     holder.who())
            return False
        return self.read_index(set_id) is None

    # --- leases (lease.LeaseStore) ---

    def leases(self) -> LeaseStore:
        return self

    def _lease_key(self, set_id: str) -> str:
        return self.root + lease.lease_name(set_id)

    def lease_create(self, set_id: str, data: bytes) -> bool:
        key = self._lease_key(set_id)
        # Only if absent (412 otherwise); a retry of a PUT that went through also gets 412.
        self.client.request("PUT", key, body=data, headers={"If-None-Match": "*"},
                            allow=(412,))
        # Read back: a server that ignores the condition lets the last writer win.
        return self.lease_read(set_id) == data

    def lease_read(self, set_id: str) -> bytes | None:
        return self.client.get_small(self._lease_key(set_id), lease.MAX_LEASE)

    def lease_replace(self, set_id: str, data: bytes) -> None:
        self.client.put(self._lease_key(set_id), data)

    def lease_remove(self, set_id: str) -> None:
        self.client.delete(self._lease_key(set_id))

    def lease_ids(self) -> list[str]:
        listing = self.client.list_objects(self.root + lease.PREFIX, "/")
        found = (lease.lease_id(k[len(self.root):]) for k, _ in listing.objects)
        return sorted(i for i in found if i is not None)

    def _remove_prefix(self, set_id: str) -> None:
        for key, _ in self.client.list_objects(self.key(set_id)).objects:
            self.client.delete(key)

    def open_file(self, set_id: str, name: str) -> Source:
        return ObjectSource(self.client, self.key(set_id, name))

    def file_sizes(self, set_id: str) -> dict[str, int]:
        prefix = self.key(set_id)
        sizes = {k[len(prefix) :]: size for k, size in self.client.list_objects(prefix).objects}
        sizes.pop(setindex.INDEX_NAME, None)
        return sizes

    def delete(self, set_id: str) -> None:
        self.client.delete(self.key(set_id, setindex.INDEX_NAME))
        self._remove_prefix(set_id)

    def close(self) -> None:
        self.client.close()


class S3Staging(Staging):
    def __init__(self, backend: S3Backend, set_id: str) -> None:
        self._b = backend
        self._id = set_id

    def create(self, name: str) -> Sink:
        return UploadSink(self._b.client, self._b.key(self._id, name), self._b.part_size)

    def commit(self, index: bytes) -> None:
        self._b.client.put(self._b.key(self._id, setindex.INDEX_NAME), index)

    def sizes(self) -> dict[str, int]:
        prefix = self._b.key(self._id)
        return {k[len(prefix):]: size for k, size in self._b.client.list_objects(prefix).objects}

    def abort(self) -> None:
        try:
            self._b._remove_prefix(self._id)
        except OperationFailed as e:
            log.warning("could not remove the objects of %s (the next save will): %s", self._id, e)
