"""The lease checks every shared medium passes (directory, SFTP, S3): see media/lease.py.

Each takes a function opening a new Medium on one and the same location, the way a
second machine would, and a pytest monkeypatch to move the leases' clock.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from resurgo.errors import OperationFailed, PreconditionFailed
from resurgo.media import Medium, SetKind, SetMeta, lease, prune
from resurgo.media.lease import Holder

Opener = Callable[[], Medium]


def _store(medium: Medium) -> lease.LeaseStore:
    store = medium.backend.leases()
    assert store is not None
    return store


def _holder(medium: Medium, set_id: str) -> Holder:
    data = _store(medium).lease_read(set_id)
    assert data is not None, f"no lease for {set_id}"
    holder = Holder.decode(data)
    assert holder is not None
    return holder


def _elsewhere(set_id: str, expires: datetime, parent: str | None = None) -> bytes:
    """A lease as a save on another machine writes it."""
    return Holder(set_id, "other-host", 4242, "f" * 32, expires, parent, "other-boot").encode()


def held_while_saving_and_released(open_medium: Opener) -> None:
    """A save holds its set's lease (host, pid, token, expiry) from begin to commit; a
    second save meanwhile (another machine: no flock reaches it) leaves its files alone,
    and both sets end up whole."""
    with open_medium() as first, open_medium() as second:
        w1 = first.begin_set(SetMeta(SetKind.FULL, host="one"))
        w1.write_bytes("a.bin", b"A" * 1000)
        held = _holder(first, w1.id)
        assert held.set_id == w1.id and held.token and held.pid > 0 and held.host
        assert held.expires > datetime.now(UTC) + timedelta(minutes=20)
        with second.begin_set(SetMeta(SetKind.FULL, host="two")) as w2:
            w2.write_bytes("b.bin", b"B" * 1000)
            info2 = w2.commit()
        info1 = w1.commit()
        assert _store(first).lease_read(w1.id) is None
        assert _store(first).lease_read(w2.id) is None
        first.open_set(info1.id).verify()
        first.open_set(info2.id).verify()
        assert _store(first).lease_ids() == []


def renewed_as_it_writes(open_medium: Opener, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [datetime.now(UTC)]
    monkeypatch.setattr(lease, "utc_now", lambda: clock[0])
    with open_medium() as medium, medium.begin_set(SetMeta(SetKind.FULL)) as w:
        first = _holder(medium, w.id).expires
        with w.create("a.bin") as f:
            f.write(b"x")
            clock[0] += timedelta(seconds=lease.RENEW_AFTER - 5)
            f.write(b"x")  # not due yet
            assert _holder(medium, w.id).expires == first
            clock[0] += timedelta(seconds=10)
            f.write(b"x")
        renewed = _holder(medium, w.id).expires
        assert renewed - first >= timedelta(seconds=lease.RENEW_AFTER)
        info = w.commit()
    assert info.file_count == 1


def a_live_lease_keeps_a_staged_set(open_medium: Opener, stage: Callable[[Medium, str], None],
                                    staged: Callable[[Medium, str], bool],
                                    caplog: pytest.LogCaptureFixture) -> None:
    """A staged set of another machine's save (its lease live) is no leftover; once the
    lease has expired it is one, broken with a message naming its holder."""
    live, dead = "20261201T010000Z-aaaa", "20261201T010000Z-bbbb"
    now = datetime.now(UTC)
    with open_medium() as medium:
        for set_id, expires in ((live, now + timedelta(minutes=30)),
                                (dead, now - timedelta(seconds=lease.SKEW + 60))):
            assert _store(medium).lease_create(set_id, _elsewhere(set_id, expires))
            stage(medium, set_id)
        with caplog.at_level(logging.INFO, "resurgo.media"), \
                medium.begin_set(SetMeta(SetKind.FULL)) as w:
            w.write_bytes("a.bin", b"a")
            w.commit()
        assert staged(medium, live)
        assert not staged(medium, dead)
        assert _store(medium).lease_ids() == [live]
        text = caplog.text
        assert f"breaking the lease of set {dead}" in text and "other-host, pid 4242" in text
        assert "expired at" in text


def an_expired_lease_is_taken_over(open_medium: Opener,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A save that stalled beyond its lease finds it broken (its staging removed by another
    save) and fails at its commit without writing its index."""
    clock = [datetime.now(UTC)]
    monkeypatch.setattr(lease, "utc_now", lambda: clock[0])
    with open_medium() as stalled, open_medium() as other:
        w = stalled.begin_set(SetMeta(SetKind.FULL))
        w.write_bytes("a.bin", b"a" * 100)
        # Seen from elsewhere: another machine's save (the flock, where there is one,
        # reaches no other machine), and its lease long expired.
        store = _store(other)
        mine = _holder(stalled, w.id)
        foreign = Holder(w.id, "other-host", mine.pid, mine.token, mine.expires, None, "x")
        store.lease_replace(w.id, foreign.encode())
        clock[0] += timedelta(seconds=lease.LEASE_SECONDS + lease.SKEW + 1)
        assert lease.live_holder(store, w.id, other.url) is None
        assert store.lease_read(w.id) is None
        with pytest.raises(OperationFailed, match="not committed"):
            w.commit()
        assert w.id not in [s.id for s in other.list_sets()]


def prune_keeps_what_a_running_save_builds_on(open_medium: Opener) -> None:
    with open_medium() as medium:
        ids = []
        for n in range(3):
            with medium.begin_set(SetMeta(SetKind.FULL, host="h")) as w:
                w.write_bytes("a.bin", bytes([n]))
                ids.append(w.commit().id)
        # A save elsewhere builds on the oldest set.
        building = "20261201T020000Z-cccc"
        _store(medium).lease_create(building, _elsewhere(
            building, datetime.now(UTC) + timedelta(minutes=30), parent=ids[0]))
        plan = prune(medium, 1)
        assert [s.id for s in plan.delete] == [ids[1]]
        assert "the save of set 20261201T020000Z-cccc (host other-host, pid 4242) builds on " \
            "it" in plan.reasons[ids[0]]
        assert sorted(s.id for s in medium.list_sets()) == sorted([ids[0], ids[2]])
        with pytest.raises(PreconditionFailed, match="builds on it"):
            medium.delete_set(ids[0])
        _store(medium).lease_remove(building)
        medium.delete_set(ids[0])


class LeaseContract:
    """The checks above as tests of a medium's test class, which opens media on one
    location (open_medium) and stages a set by hand as a save elsewhere would."""

    def open_medium(self) -> Medium:
        raise NotImplementedError

    def stage_by_hand(self, medium: Medium, set_id: str) -> None:
        raise NotImplementedError

    def is_staged(self, medium: Medium, set_id: str) -> bool:
        raise NotImplementedError

    def test_lease_held_while_saving_and_released(self) -> None:
        held_while_saving_and_released(self.open_medium)

    def test_lease_renewed_as_it_writes(self, monkeypatch: pytest.MonkeyPatch) -> None:
        renewed_as_it_writes(self.open_medium, monkeypatch)

    def test_a_live_lease_keeps_a_staged_set(self, caplog: pytest.LogCaptureFixture) -> None:
        a_live_lease_keeps_a_staged_set(self.open_medium, self.stage_by_hand, self.is_staged,
                                        caplog)

    def test_an_expired_lease_is_taken_over(self, monkeypatch: pytest.MonkeyPatch) -> None:
        an_expired_lease_is_taken_over(self.open_medium, monkeypatch)

    def test_prune_keeps_what_a_running_save_builds_on(self) -> None:
        prune_keeps_what_a_running_save_builds_on(self.open_medium)

    def test_the_lease_is_taken_once(self) -> None:
        with self.open_medium() as medium, medium.begin_set() as w:
            assert not _store(medium).lease_create(w.id, b"{}")
            assert _holder(medium, w.id).set_id == w.id
