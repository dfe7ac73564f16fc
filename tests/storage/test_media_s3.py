"""The S3 medium against a real S3-compatible server (SeaweedFS) on 127.0.0.1.

SeaweedFS checks the Signature Version 4 of every request against the
credentials in its configuration, so these tests also prove the signing.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from resurgo.errors import BadInput, Damaged, OperationFailed
from resurgo.media import Medium, MediumOptions, SetMeta, limits, open_medium
from resurgo.media.s3 import S3Backend
from resurgo.media.s3client import ObjectSource, S3Client, UploadSink
from resurgo.media.s3config import Credentials, S3Settings
from resurgo.pool import lists
from resurgo.pool.needs import PoolNeeds, check
from resurgo.pool.prune import prune_pool
from resurgo.pool.store import POOL_DIR, PackagePool, file_name
from tests.support.consts import MIB
from tests.support.leases import LeaseContract
from tests.support.media_contract import (
    MediumContract,
    memory_bound,
    pattern,
    pattern_sha256,
    stream_sha256,
    within,
)
from tests.support.media_servers import (
    ACCESS_KEY,
    LOCALHOST,
    SECRET_KEY,
    Answer,
    FakeS3,
    FaultProxy,
    Seaweed,
    free_ports,
)

BUCKET = "resurgo-sets"


@pytest.fixture(scope="module")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seaweed]:
    server = Seaweed(tmp_path_factory.mktemp("seaweed"))
    try:
        server.create_bucket(BUCKET)
        yield server
    finally:
        server.close()


_count = itertools.count()


def backend(medium: Medium) -> S3Backend:
    assert isinstance(medium.backend, S3Backend)
    return medium.backend


class TestS3Medium(MediumContract, LeaseContract):
    @pytest.fixture(autouse=True)
    def _prefix(self, seaweed: Seaweed) -> Iterator[None]:
        self.seaweed = seaweed
        self.prefix = f"host{next(_count)}/sets"
        self.opened: list[Medium] = []
        try:
            yield
        finally:
            for m in self.opened:
                m.close()

    def open_medium(self) -> Medium:
        m = open_medium(
            f"s3://{BUCKET}/{self.prefix}",
            # Plain HTTP on the loopback.
            MediumOptions(s3_endpoint=self.seaweed.endpoint, s3_insecure_http=True),
            s3_part_size=5 * MIB,  # the 100 MB file goes up in 20 parts
            environ=self.seaweed.environ(),
            home=Path("/nonexistent"),
        )
        self.opened.append(m)
        return m

    def replace(self, medium: Medium, set_id: str, name: str, data: bytes) -> None:
        b = backend(medium)
        b.client.put(b.key(set_id, name), data)

    def remove(self, medium: Medium, set_id: str, name: str) -> None:
        b = backend(medium)
        b.client.delete(b.key(set_id, name))

    def leftovers(self, medium: Medium) -> list[str]:
        b = backend(medium)
        objects = b.client.list_objects(b.root).objects
        indexed = {k.split("/")[-2] for k, _ in objects if k.endswith("/set.json")}
        stray = [k for k, _ in objects if k[len(b.root) :].split("/")[0] not in indexed]
        uploads = [f"upload:{k}" for k, _ in b.client.multipart_uploads(b.root)]
        return sorted(stray + uploads)

    def stage_by_hand(self, medium: Medium, set_id: str) -> None:
        b = backend(medium)
        b.client.put(b.key(set_id, "a.bin"), b"staged")

    def is_staged(self, medium: Medium, set_id: str) -> bool:
        b = backend(medium)
        return bool(b.client.list_objects(b.key(set_id)).objects)

    def test_a_cleaner_that_looked_before_a_commit_removes_nothing(
            self, monkeypatch: pytest.MonkeyPatch) -> None:
        """The window: a second save lists the set's prefix and finds no index, the first
        save writes its index, and the second then removed every object of the prefix,
        index included: a set reported saved was gone. Now it looks at the lease, and (the
        lease released with the commit) at the index again, and removes nothing."""
        with self.open_medium() as first, self.open_medium() as second:
            w = first.begin_set(SetMeta(host="one"))
            w.write_bytes("a.bin", b"a" * 1000)
            cleaner = backend(second)
            look = cleaner.read_index
            committed = []

            def read_index(set_id: str) -> bytes | None:
                seen = look(set_id)
                if set_id == w.id and not committed:
                    committed.append(w.commit())  # just after the cleaner's first look
                return seen

            monkeypatch.setattr(cleaner, "read_index", read_index)
            cleaner.clean_leftovers()
            assert committed
            first.open_set(w.id).verify()

    def test_a_cleaner_leaves_a_running_saves_uploads_alone(self) -> None:
        """A multipart upload in progress shows in no listing of objects: the lease keeps
        it too."""
        with self.open_medium() as first, self.open_medium() as second:
            w = first.begin_set(SetMeta(host="one"))
            f = w.create("big.bin")
            f.write(b"x" * (5 * MIB + 1))  # one part sent, the upload open
            b = backend(first)
            assert b.client.multipart_uploads(b.root)
            backend(second).clean_leftovers()
            assert b.client.multipart_uploads(b.root)
            f.close()
            first.open_set(w.commit().id).verify()

    def test_layout_in_the_bucket(self) -> None:
        with self.open_medium() as medium:
            info = self.save(medium, seed=1)
            b = backend(medium)
            keys = sorted(k for k, _ in b.client.list_objects(b.root).objects)
        assert keys == [
            f"{self.prefix}/{info.id}/{n}"
            for n in [
                "archives/boot.tar.zst",
                "catalog.zst",
                "description.toml",
                "description.toml.sha256",
                "manifest.json",
                "rescue.iso",
                "set.json",
            ]
        ]

    def test_an_oversized_set_json_is_refused(self) -> None:
        with self.open_medium() as medium:
            info = self.save(medium, seed=1)
            b = backend(medium)
            b.client.put(b.key(info.id, "set.json"), b" " * (limits.INDEX + 1))
            with pytest.raises(OperationFailed, match="more than the 16777216") as e:
                medium.open_set(info.id)
            assert "refused unread" in e.value.message
            assert medium.list_sets() == []

    def test_a_set_without_its_index_does_not_exist(self) -> None:
        with self.open_medium() as medium:
            info = self.save(medium, seed=1)
            b = backend(medium)
            b.client.delete(b.key(info.id, "set.json"))
            assert medium.list_sets() == []
            with pytest.raises(OperationFailed, match="no recovery set"):
                medium.open_set(info.id)

    def test_default_part_size_and_the_secret_stays_out_of_logs(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.DEBUG)
        size = 40 * MIB  # three parts of 16 MiB
        medium = open_medium(
            f"s3://{BUCKET}/{self.prefix}",
            MediumOptions(s3_endpoint=self.seaweed.endpoint, s3_insecure_http=True),
            environ=self.seaweed.environ(),
            home=Path("/nonexistent"),
        )
        self.opened.append(medium)
        with medium.begin_set(SetMeta()) as w:
            with w.create("archives/root.tar.zst") as f:
                for part in pattern(11, size):
                    f.write(part)
            info = w.commit()
        with medium.open_set(info.id).open("archives/root.tar.zst") as f:
            assert stream_sha256(f) == (size, pattern_sha256(11, size))
        assert SECRET_KEY not in caplog.text
        assert SECRET_KEY not in repr(backend(medium).client.s)


def settings(seaweed: Seaweed, secret: str = SECRET_KEY) -> S3Settings:
    return seaweed.settings(secret)


def test_wrong_secret_is_refused_without_showing_it(
    seaweed: Seaweed, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "not-the-secret-0123456789"
    medium = open_medium(
        f"s3://{BUCKET}/x",
        MediumOptions(s3_endpoint=seaweed.endpoint, s3_insecure_http=True),
        environ={"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": wrong},
        home=Path("/nonexistent"),
    )
    with pytest.raises(OperationFailed) as e:
        medium.list_sets()
    assert "refused the credentials" in e.value.message
    assert e.value.hint is not None and "AWS_SECRET_ACCESS_KEY" in e.value.hint
    assert wrong not in str(e.value) and wrong not in caplog.text


def test_unknown_access_key(seaweed: Seaweed) -> None:
    medium = open_medium(
        f"s3://{BUCKET}/x",
        MediumOptions(s3_endpoint=seaweed.endpoint, s3_insecure_http=True),
        environ={"AWS_ACCESS_KEY_ID": "nobody", "AWS_SECRET_ACCESS_KEY": SECRET_KEY},
        home=Path("/nonexistent"),
    )
    with pytest.raises(OperationFailed, match="refused the credentials"):
        medium.begin_set()


def test_missing_bucket(seaweed: Seaweed) -> None:
    medium = open_medium(
        "s3://no-such-bucket/x",
        MediumOptions(s3_endpoint=seaweed.endpoint, s3_insecure_http=True),
        environ=seaweed.environ(),
        home=Path("/nonexistent"),
    )
    with pytest.raises(OperationFailed, match="'no-such-bucket' does not exist") as e:
        medium.begin_set()
    assert e.value.hint is not None and "create it" in e.value.hint
    with pytest.raises(OperationFailed, match="does not exist"):
        medium.list_sets()


def test_unreachable_endpoint() -> None:
    (port,) = free_ports(1)
    s = S3Settings("http", f"{LOCALHOST}:{port}", "us-east-1", Credentials("a", "b"), True)
    waits: list[float] = []
    client = S3Client(s, BUCKET, url=f"s3://{BUCKET}", attempts=3, sleep=waits.append)
    with pytest.raises(OperationFailed, match="cannot reach the S3 endpoint") as e:
        client.list_objects("")
    assert "Connection refused" in e.value.message
    assert len(waits) == 2 and waits[0] < waits[1]  # backoff between the attempts


def test_credentials_from_a_profile_file(seaweed: Seaweed, tmp_path: Path) -> None:
    aws = tmp_path / ".aws"
    aws.mkdir()
    (aws / "credentials").write_text(
        f"[default]\naws_access_key_id = nobody\naws_secret_access_key = nothing\n\n"
        f"[backup]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n"
    )
    (aws / "config").write_text(f"[profile backup]\nendpoint_url = {seaweed.endpoint}\n")
    with open_medium(
        f"s3://{BUCKET}/profile", MediumOptions(s3_insecure_http=True),
        environ={"AWS_PROFILE": "backup"}, home=tmp_path,
    ) as medium:
        info = MediumContract().save(medium, seed=1)
        assert [s.id for s in medium.list_sets()] == [info.id]


def test_an_aborted_multipart_upload_leaves_no_upload(seaweed: Seaweed) -> None:
    client = S3Client(settings(seaweed), BUCKET, url=f"s3://{BUCKET}")
    sink = UploadSink(client, "aborted/big", 5 * MIB)
    for part in pattern(1, 12 * MIB):
        sink.write(part)
    assert [k for k, _ in client.multipart_uploads("aborted/")] == ["aborted/big"]
    sink.discard()
    assert client.multipart_uploads("aborted/") == []
    assert client.list_objects("aborted/").objects == []
    client.close()


@pytest.fixture
def proxy(seaweed: Seaweed) -> Iterator[FaultProxy]:
    p = FaultProxy(seaweed.port)
    try:
        yield p
    finally:
        p.close()


def test_transient_failures_are_retried(seaweed: Seaweed, proxy: FaultProxy) -> None:
    s = S3Settings(
        "http", f"{LOCALHOST}:{proxy.port}", "us-east-1", Credentials(ACCESS_KEY, SECRET_KEY), True
    )
    waits: list[float] = []
    client = S3Client(s, BUCKET, url=f"s3://{BUCKET}", sleep=waits.append)
    data = b"".join(pattern(3, 7 * MIB))
    proxy.faults = ["503", "reset", "503"]
    client.put("retried/object", data)
    assert len(waits) == 3 and proxy.connections == 4
    # A GET that drops after 3 MiB resumes where it stopped, twice.
    proxy.faults = [("cut", 3 * MIB), ("cut", 2 * MIB)]
    source = ObjectSource(client, "retried/object")
    received = b""
    while chunk := source.read(MIB):
        received += chunk
    source.close()
    assert received == data
    # Out of attempts: one clear message.
    client.close()  # the kept-alive connection would bypass the faults
    proxy.faults = ["503"] * 10
    with pytest.raises(OperationFailed, match="kept failing") as e:
        client.put("retried/other", b"x")
    assert "SlowDown" in e.value.message
    client.close()


def test_plain_http_needs_to_be_allowed(seaweed: Seaweed) -> None:
    with pytest.raises(BadInput, match="plain HTTP") as e:
        open_medium(f"s3://{BUCKET}/x", MediumOptions(s3_endpoint=seaweed.endpoint),
                    environ=seaweed.environ(), home=Path("/nonexistent"))
    assert e.value.hint is not None and "--s3-insecure-http" in e.value.hint


# ---------------------------------------------------------------- hostile servers


@pytest.fixture
def fake() -> Iterator[list[FakeS3]]:
    servers: list[FakeS3] = []
    try:
        yield servers
    finally:
        for server in servers:
            server.close()


def fake_medium(servers: list[FakeS3], answer: object) -> Medium:
    server = FakeS3(answer)  # type: ignore[arg-type]
    servers.append(server)
    return open_medium(
        f"s3://{BUCKET}/p", MediumOptions(s3_endpoint=server.endpoint, s3_insecure_http=True),
        environ={"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"},
        home=Path("/nonexistent"),
    )


def fake_client(medium: Medium) -> S3Client:
    client = backend(medium).client
    client.attempts, client._sleep = 2, lambda _s: None
    return client


DATA = bytes(range(256)) * 4096  # 1 MiB
CUT = 300_000
SET_ID = "20261206T000000Z-abcd"


def dropping_then(resumed: Answer) -> object:
    """A server whose first answer breaks off after CUT bytes; ``resumed`` answers the rest."""

    def answer(method: str, path: str, headers: Mapping[str, str]) -> Answer:
        if "range" not in headers:
            return 200, {"Content-Length": str(len(DATA)), "ETag": '"e1"'}, [DATA[:CUT]]
        return resumed

    return answer


def read_all(client: S3Client) -> bytes:
    source = ObjectSource(client, "k")
    try:
        out = b""
        while chunk := source.read(MIB):
            out += chunk
        return out
    finally:
        source.close()


def test_a_resumed_read_answered_with_the_whole_object_is_refused(fake: list[FakeS3]) -> None:
    # Spliced after the first 300,000 bytes, the stream would be the object's start twice.
    whole: Answer = (200, {"Content-Length": str(len(DATA)), "ETag": '"e1"'}, [DATA])
    client = fake_client(fake_medium(fake, dropping_then(whole)))
    with pytest.raises(OperationFailed, match="other bytes than asked") as e:
        read_all(client)
    assert "k on s3://" in e.value.message and "200 (the whole object)" in e.value.message
    assert fake[0].requests[-1][2]["range"] == f"bytes={CUT}-"


def test_a_resumed_read_answered_with_another_range_is_refused(fake: list[FakeS3]) -> None:
    wrong: Answer = (206, {"Content-Length": str(len(DATA)), "ETag": '"e1"',
                           "Content-Range": f"bytes 0-{len(DATA) - 1}/{len(DATA)}"}, [DATA])
    client = fake_client(fake_medium(fake, dropping_then(wrong)))
    with pytest.raises(OperationFailed, match="the range 'bytes 0-"):
        read_all(client)


def test_a_resumed_read_answered_with_its_range_goes_on(fake: list[FakeS3]) -> None:
    rest = DATA[CUT:]
    right: Answer = (206, {"Content-Length": str(len(rest)), "ETag": '"e1"',
                           "Content-Range": f"bytes {CUT}-{len(DATA) - 1}/{len(DATA)}"}, [rest])
    client = fake_client(fake_medium(fake, dropping_then(right)))
    assert read_all(client) == DATA


def test_an_index_said_to_be_huge_is_refused_unread(fake: list[FakeS3]) -> None:
    def answer(method: str, path: str, headers: Mapping[str, str]) -> Answer:
        def body() -> Iterator[bytes]:
            yield b"{"
            time.sleep(15)  # the rest never comes: only a reader that waits would notice
        return 200, {"Content-Length": str(5 << 30)}, body()

    medium = fake_medium(fake, answer)
    with within(10), pytest.raises(OperationFailed, match="5368709120 bytes, more than"):
        medium.open_set(SET_ID)


def test_an_endless_index_is_read_no_further_than_its_cap(fake: list[FakeS3]) -> None:
    def answer(method: str, path: str, headers: Mapping[str, str]) -> Answer:
        def body() -> Iterator[bytes]:
            while True:
                yield b"\0" * MIB
        return 200, {}, body()  # no Content-Length: the body ends when the server closes

    medium = fake_medium(fake, answer)
    with within(60), memory_bound(), pytest.raises(OperationFailed, match="more than 16777216"):
        medium.open_set(SET_ID)


def test_a_listing_that_never_ends_is_refused(fake: list[FakeS3]) -> None:
    """A server that answers every page with 'more to come' and the same token: the
    listing stops at the repeated token instead of growing for ever."""
    page = (b'<?xml version="1.0" encoding="UTF-8"?><ListBucketResult>'
            b"<IsTruncated>true</IsTruncated><NextContinuationToken>again"
            b"</NextContinuationToken><Contents><Key>p/x</Key><Size>1</Size></Contents>"
            b"</ListBucketResult>")

    def answer(method: str, path: str, headers: Mapping[str, str]) -> Answer:
        return 200, {"Content-Length": str(len(page))}, [page]

    medium = fake_medium(fake, answer)
    with pytest.raises(OperationFailed, match="listing does not end"):
        fake_client(medium).list_objects("p/")
    assert len(fake[-1].requests) == 2


# ---------------------------------------------------------------- the package pool on S3


def _pool_medium(seaweed: Seaweed) -> Medium:
    return open_medium(f"s3://{BUCKET}/pool{next(_count)}/sets",
                       MediumOptions(s3_endpoint=seaweed.endpoint, s3_insecure_http=True),
                       s3_part_size=5 * MIB, environ=seaweed.environ(),
                       home=Path("/nonexistent"))


def test_the_package_pool_on_s3_is_checked_kept_and_pruned_as_on_a_directory(
        seaweed: Seaweed) -> None:
    """Objects under PREFIX/pool/ named by their sha256: added whole (a large one in
    parts), read back, checked by the sets' needs (a damaged and a missing one named),
    pruned to what the sets need, unfinished uploads aborted, left alone under a lease."""
    with _pool_medium(seaweed) as medium:
        b = backend(medium)
        pool = PackagePool(medium)
        assert pool.packages() == {} and prune_pool(medium) is None
        contents = [b"".join(pattern(1, 6 * MIB)), b"second", b"third"]  # the first in two parts
        refs = [lists.PackageRef(hashlib.sha256(c).hexdigest(), len(c), f"p{n}", "1:1.0",
                                 "amd64") for n, c in enumerate(contents)]
        for ref, data in zip(refs, contents, strict=True):
            pool.add(ref, [data[i:i + MIB] for i in range(0, len(data), MIB)])
        assert pool.packages() == {r.sha256: r for r in refs}
        assert pool.where(refs[0]).endswith(f"/sets/{POOL_DIR}/{file_name(refs[0])}")
        assert "%3a" in file_name(refs[0])
        src = pool.open(refs[0])
        try:
            assert stream_sha256(src) == (refs[0].size, refs[0].sha256)
        finally:
            src.close()
        check(PoolNeeds(pool, {r.sha256: r for r in refs}), read=True)
        # Nothing of the pool is a set, nor a leftover of one.
        assert medium.list_sets() == []
        b.clean_leftovers()
        assert len(pool.packages()) == 3

        key = f"{b.root}{POOL_DIR}/{file_name(refs[1])}"
        b.client.put(key, b"secont")  # damaged: same size
        with pytest.raises(Damaged, match=r"p1 1:1\.0 \(amd64\) is damaged"):
            check(PoolNeeds(pool, {refs[1].sha256: refs[1]}), read=True)
        check(PoolNeeds(pool, {refs[1].sha256: refs[1]}), read=False)  # sizes only
        b.client.put(key, b"second")
        b.client.delete(f"{b.root}{POOL_DIR}/{file_name(refs[2])}")
        with pytest.raises(Damaged, match=r"p2 1:1\.0 \(amd64\) is missing"):
            check(PoolNeeds(pool, {refs[2].sha256: refs[2]}), read=False)
        pool.add(refs[2], [contents[2]])

        upload = b.client.create_upload(f"{b.root}{POOL_DIR}/{file_name(refs[2])}")
        assert pool.leftovers() and upload
        for needed in (refs[:1], refs[1:2]):
            with medium.begin_set(SetMeta(host="one")) as w:
                w.write_bytes(lists.PACKAGES_NAME, lists.encode_packages(needed))
                w.commit()
        dry = prune_pool(medium, dry_run=True)
        assert dry is not None and dry.removed == (file_name(refs[2]),) and dry.kept == 2
        assert len(pool.packages()) == 3 and pool.leftovers()
        # While a save holds a lease, the pool is left alone.
        w = medium.begin_set(SetMeta(host="two"))
        try:
            skipped = prune_pool(medium)
            assert skipped is not None and skipped.skipped and not skipped.removed
        finally:
            w.abort()
        done = prune_pool(medium)
        assert done is not None and done.removed == (file_name(refs[2]),)
        assert sorted(pool.packages()) == sorted(r.sha256 for r in refs[:2])
        assert pool.leftovers() == []
