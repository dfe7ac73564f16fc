"""An S3 bucket (AWS or any S3-compatible server) as a medium.

Layout: ``<prefix>/<set id>/<file name>`` for each file, and
``<prefix>/<set id>/set.json`` written LAST. S3 has no rename; a set exists
when its index object exists, and S3's strong read-after-write consistency
makes that single PUT the atomic step. A set prefix without an index is the
leftover of an interrupted save (or delete, which removes the index first):
it is invisible, and the next save removes it and aborts its unfinished
multipart uploads. S3 has no locks either: a save running meanwhile loses its objects
that way, and fails at its commit, naming them, rather than write an index for a set
that is not whole. (A second save that lists the first one's prefix just before its
index is written and removes it just after still takes the whole set away: one save at a
time per prefix.)
"""

from __future__ import annotations

import logging

from resurgo.errors import OperationFailed
from resurgo.media import limits, setindex
from resurgo.media.base import Backend, Staging
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
        incomplete = [i for i in self._set_prefixes() if self.read_index(i) is None]
        for set_id in incomplete:
            log.info("removing %s/%s, left over by an interrupted save or delete", self.url, set_id)
            self._remove_prefix(set_id)
        for key, upload_id in self.client.multipart_uploads(self.root):
            rest = key[len(self.root) :]
            if rest.split("/", 1)[0] in incomplete or not self.read_index(rest.split("/", 1)[0]):
                self.client.abort_upload(key, upload_id)

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
