"""Leases on a directory medium (lease.py): held, renewed, broken when expired, respected by
the cleaning of leftovers and by prune; and the lease file read as hostile input."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from resurgo.errors import BadInput
from resurgo.media import Medium, SetKind, SetMeta, lease, open_medium
from resurgo.media.lease import Holder
from tests.support import leases
from tests.support.cli import run


def opener(root: Path) -> Callable[[], Medium]:
    return lambda: open_medium(str(root))


def stage(root: Path) -> Callable[[Medium, str], None]:
    def make(_medium: Medium, set_id: str) -> None:
        where = root / f".incomplete-{set_id}"
        where.mkdir()
        (where / "a.bin").write_bytes(b"staged")
    return make


def staged(root: Path) -> Callable[[Medium, str], bool]:
    return lambda _medium, set_id: (root / f".incomplete-{set_id}" / "a.bin").exists()


def test_held_while_saving_and_released(tmp_path: Path) -> None:
    leases.held_while_saving_and_released(opener(tmp_path))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_renewed_as_it_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    leases.renewed_as_it_writes(opener(tmp_path), monkeypatch)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_live_lease_keeps_a_staged_set(tmp_path: Path,
                                         caplog: pytest.LogCaptureFixture) -> None:
    leases.a_live_lease_keeps_a_staged_set(opener(tmp_path), stage(tmp_path),
                                           staged(tmp_path), caplog)


def test_an_expired_lease_is_taken_over(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    leases.an_expired_lease_is_taken_over(opener(tmp_path), monkeypatch)
    assert not list(tmp_path.glob(".incomplete-*"))


def test_prune_keeps_what_a_running_save_builds_on(tmp_path: Path) -> None:
    leases.prune_keeps_what_a_running_save_builds_on(opener(tmp_path))


def test_the_lease_is_private_and_exclusive(tmp_path: Path) -> None:
    with open_medium(str(tmp_path)) as medium, medium.begin_set() as w:
        path = tmp_path / f".lease-{w.id}"
        assert path.stat().st_mode & 0o777 == 0o600
        store = medium.backend.leases()
        assert store is not None
        assert not store.lease_create(w.id, b"{}")  # already held
        assert Holder.decode(path.read_bytes()) is not None


def test_a_killed_save_of_this_machine_is_no_holder(tmp_path: Path) -> None:
    """A lease of this host and boot whose process is gone needs no expiry to be broken."""
    with open_medium(str(tmp_path)) as medium:
        store = medium.backend.leases()
        assert store is not None
        set_id = "20261201T010000Z-dddd"
        dead = Holder(set_id, lease.socket.gethostname(), 2**22 + 12345, "t",
                      datetime.now(UTC) + timedelta(minutes=30), None, lease.boot_id())
        assert store.lease_create(set_id, dead.encode())
        assert lease.live_holder(store, set_id, medium.url) is None
        assert store.lease_read(set_id) is None


@pytest.mark.parametrize("data", [
    b"", b"\xff", b"[]", b'{"version": 2}', b'{"version": 1, "set": "../x"}',
    Holder("20261201T010000Z-eeee", "h", 1, "t", datetime.now(UTC)).encode().replace(
        b"20261201T010000Z-eeee", b"20261201T010000Z-ffff"),
])
def test_a_lease_that_is_not_one_is_broken(tmp_path: Path, data: bytes,
                                           caplog: pytest.LogCaptureFixture) -> None:
    set_id = "20261201T010000Z-eeee"
    (tmp_path / f".lease-{set_id}").write_bytes(data)
    with open_medium(str(tmp_path)) as medium:
        store = medium.backend.leases()
        assert store is not None
        assert lease.live_holder(store, set_id, medium.url) is None
    assert not (tmp_path / f".lease-{set_id}").exists()
    assert "breaking the lease" in caplog.text


def test_a_save_whose_lease_is_held_by_another_draws_another_id(tmp_path: Path) -> None:
    with open_medium(str(tmp_path)) as medium:
        store = medium.backend.leases()
        assert store is not None
        with medium.begin_set(SetMeta(SetKind.FULL)) as w:
            taken = w.id
        assert store.lease_create(taken, b"{}")
        with pytest.raises(BadInput, match="being saved"):
            medium.begin_set(set_id=taken)


def test_the_prune_command_keeps_what_a_running_save_builds_on(tmp_path: Path) -> None:
    with open_medium(str(tmp_path)) as medium:
        ids = []
        for n in range(2):
            with medium.begin_set(SetMeta(SetKind.FULL, host="h")) as w:
                w.write_bytes("a.bin", bytes([n]))
                ids.append(w.commit().id)
        store = medium.backend.leases()
        assert store is not None
        building = "20261201T020000Z-cccc"
        store.lease_create(building, Holder(building, "other-host", 7, "t",
                                            datetime.now(UTC) + timedelta(minutes=30),
                                            ids[0]).encode())
    result = run("prune", "--from", tmp_path, "--keep-last", "1")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == sorted(ids)


@pytest.mark.parametrize("change", [
    {"pid": 1 << 70},          # os.kill would overflow
    {"pid": 0}, {"pid": -1},   # a process group, every process
    {"pid": True},
    {"host": "web1\x1b[2J"},   # printed in warnings: no terminal control
    {"token": "t\n"},
    {"expires": 12},
])
def test_a_crafted_lease_is_no_lease(change: dict[str, object]) -> None:
    """A lease is read from a shared medium: one that is not of the shape save writes is
    not taken for a holder (and so never reaches os.kill or a warning)."""
    import json

    good = Holder("20261207T010203Z-ab12", "web1", 4242, "t0k", datetime(2026, 12, 7, tzinfo=UTC))
    assert Holder.decode(good.encode()) == good
    crafted = {**json.loads(good.encode()), **change}
    assert Holder.decode(json.dumps(crafted).encode()) is None
