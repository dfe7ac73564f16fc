"""What every medium must do, written once; each medium's test module subclasses it.

A subclass provides ``open_medium()`` (a Medium on a fresh, empty location,
the same location each time it is called within a test) and the means to
damage a set behind the medium's back (``replace``, ``remove``) and to see
what an interrupted save left (``leftovers``).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator

import pytest
from blake3 import blake3

from resurgo.errors import BadInput, OperationFailed, PreconditionFailed
from resurgo.media import Medium, SetInfo, SetKind, SetMeta, prune

MiB = 1024 * 1024


def pattern(seed: int, size: int, chunk: int = MiB) -> Iterator[bytes]:
    """Deterministic pseudo-random bytes, generated on the fly."""
    rng = random.Random(seed)
    left = size
    while left:
        n = min(chunk, left)
        yield rng.randbytes(n)
        left -= n


def pattern_sha256(seed: int, size: int) -> str:
    h = hashlib.sha256()
    for part in pattern(seed, size):
        h.update(part)
    return h.hexdigest()


def stream_sha256(f: object, block: int = MiB) -> tuple[int, str]:
    h = hashlib.sha256()
    n = 0
    while chunk := f.read(block):  # type: ignore[attr-defined]
        h.update(chunk)
        n += len(chunk)
    return n, h.hexdigest()


DESCRIPTION = b'[resurgo]\nversion = 1\nhost = "db1"\n'


class MediumContract:
    holds_archives = True
    big_size = 100 * MiB

    # --- provided by each medium's module ---

    def open_medium(self) -> Medium:
        raise NotImplementedError

    def replace(self, medium: Medium, set_id: str, name: str, data: bytes) -> None:
        raise NotImplementedError

    def remove(self, medium: Medium, set_id: str, name: str) -> None:
        raise NotImplementedError

    def leftovers(self, medium: Medium) -> list[str]:
        raise NotImplementedError

    # --- helpers ---

    def small_files(self, seed: int) -> dict[str, bytes]:
        files = {
            "description.toml": DESCRIPTION + f"seed = {seed}\n".encode(),
        }
        files["description.toml.sha256"] = (
            hashlib.sha256(files["description.toml"]).hexdigest() + "  description.toml\n"
        ).encode()
        if self.holds_archives:
            files["catalog.zst"] = bytes(random.Random(seed).randbytes(70_000))
            files["manifest.json"] = b'{"archives": ["root"]}\n'
            files["archives/boot.tar.zst"] = bytes(random.Random(seed + 1).randbytes(300_000))
            files["rescue.iso"] = b"\0" * 4096
        return files

    def save(
        self, medium: Medium, meta: SetMeta | None = None, seed: int = 0, big: int = 0
    ) -> SetInfo:
        with medium.begin_set(meta or SetMeta(host="db1")) as w:
            for name, data in self.small_files(seed).items():
                w.write_bytes(name, data)
            if big:
                with w.create("archives/root.tar.zst") as f:
                    for part in pattern(seed, big):
                        f.write(part)
            return w.commit()

    # --- the contract ---

    def test_round_trip(self) -> None:
        big = self.big_size if self.holds_archives else 0
        with self.open_medium() as medium:
            assert medium.list_sets() == []
            info = self.save(medium, SetMeta(host="db1", labels={"by": "test"}), seed=7, big=big)
            small = self.small_files(7)
            assert info.file_count == len(small) + (1 if big else 0)
            assert info.size == sum(len(d) for d in small.values()) + big
        with self.open_medium() as medium:
            (listed,) = medium.list_sets()
            assert listed == info
            assert (listed.kind, listed.parent, listed.host) == (SetKind.FULL, None, "db1")
            assert dict(listed.labels) == {"by": "test"}
            reader = medium.open_set(info.id)
            reader.check()
            names = sorted(f.name for f in reader.files())
            assert names == sorted([*small, *(["archives/root.tar.zst"] if big else [])])
            for name, data in small.items():
                assert reader.read_bytes(name) == data
                entry = reader.index.file(name)
                assert entry is not None and entry.digest == blake3(data).hexdigest()
            if big:
                with reader.open("archives/root.tar.zst") as f:
                    assert stream_sha256(f) == (big, pattern_sha256(7, big))
            reader.verify()

    def test_check_refuses_truncated_and_missing_files(self) -> None:
        with self.open_medium() as medium:
            info = self.save(medium, seed=3)
            small = self.small_files(3)
            victim = "archives/boot.tar.zst" if self.holds_archives else "description.toml"
            gone = "catalog.zst" if self.holds_archives else "description.toml.sha256"
            medium.open_set(info.id).check()
            cut = len(small[victim]) // 2
            self.replace(medium, info.id, victim, small[victim][:cut])
            self.remove(medium, info.id, gone)
        with self.open_medium() as medium:
            reader = medium.open_set(info.id)
            problems = reader.problems()
            assert problems == sorted(
                [
                    f"{victim} has {cut} bytes, the set recorded {len(small[victim])}",
                    f"{gone} is missing",
                ],
                key=lambda p: p.split()[0],
            )
            with pytest.raises(OperationFailed, match="is incomplete"):
                reader.check()
            with pytest.raises(OperationFailed, match="damaged"), reader.open(victim) as f:
                f.read()
            with pytest.raises(OperationFailed, match="missing"):
                reader.open(gone).read()

    def test_reading_detects_same_size_damage(self) -> None:
        with self.open_medium() as medium:
            info = self.save(medium, seed=4)
            data = self.small_files(4)["description.toml"]
            self.replace(medium, info.id, "description.toml", data[:-1] + b"X")
            reader = medium.open_set(info.id)
            reader.check()  # sizes are right...
            with pytest.raises(OperationFailed, match="digest differs"):
                reader.read_bytes("description.toml")  # ...the content is not

    def test_abort_keeps_earlier_sets_and_leaves_nothing(self) -> None:
        with self.open_medium() as medium:
            first = self.save(medium, seed=1)
            w = medium.begin_set()
            w.write_bytes("description.toml", b"half")
            f = w.create("description.toml.sha256")
            f.write(b"0" * 10)
            w.abort()
            assert [s.id for s in medium.list_sets()] == [first.id]
            assert self.leftovers(medium) == []
            with pytest.raises(OperationFailed, match="already aborted"):
                w.create("x")
            # A writer left by an exception aborts itself too.
            with pytest.raises(RuntimeError), medium.begin_set() as w2:
                w2.write_bytes("description.toml", b"x")
                raise RuntimeError("boom")
            assert [s.id for s in medium.list_sets()] == [first.id]
            medium.open_set(first.id).verify()

    def test_interrupted_save_is_invisible_and_cleaned_by_the_next(self) -> None:
        with self.open_medium() as medium:
            first = self.save(medium, seed=1)
        crashed = self.open_medium()
        w = crashed.begin_set()
        w.write_bytes("description.toml", b"never committed")
        if self.holds_archives:
            f = w.create("archives/root.tar.zst")
            for part in pattern(9, 12 * MiB):
                f.write(part)
        # The process dies here: no abort, no close of the file; the connection drops.
        crashed.close()
        with self.open_medium() as medium:
            assert [s.id for s in medium.list_sets()] == [first.id]
            if self.holds_archives:
                assert self.leftovers(medium) != []
            medium.open_set(first.id).verify()
            second = self.save(medium, seed=2)
            assert self.leftovers(medium) == []
            assert [s.id for s in medium.list_sets()] == [first.id, second.id]

    def test_prune_keeps_the_newest_and_their_chains(self) -> None:
        with self.open_medium() as medium:
            f1 = self.save(medium, seed=1)
            i1 = self.save(medium, SetMeta(SetKind.INCREMENTAL, parent=f1.id), seed=2)
            f2 = self.save(medium, seed=3)
            i2 = self.save(medium, SetMeta(SetKind.INCREMENTAL, parent=f2.id), seed=4)
            i3 = self.save(medium, SetMeta(SetKind.INCREMENTAL, parent=i2.id), seed=5)
            plan = prune(medium, 1)
            assert [s.id for s in plan.keep] == [f2.id, i2.id, i3.id]
            assert [s.id for s in plan.delete] == [i1.id, f1.id]
            assert [s.id for s in medium.list_sets()] == [f2.id, i2.id, i3.id]
            f3 = self.save(medium, seed=6)
            plan = prune(medium, 1)
            assert [s.id for s in medium.list_sets()] == [f3.id]
            for s in medium.list_sets():
                medium.open_set(s.id).verify()
            with pytest.raises(BadInput):
                prune(medium, 0)

    def test_delete(self) -> None:
        with self.open_medium() as medium:
            a = self.save(medium, seed=1)
            b = self.save(medium, seed=2)
            medium.delete_set(a.id)
            assert [s.id for s in medium.list_sets()] == [b.id]
            assert self.leftovers(medium) == []
            with pytest.raises(OperationFailed, match="no recovery set"):
                medium.open_set(a.id)
            with pytest.raises(OperationFailed, match="no recovery set"):
                medium.delete_set(a.id)
            medium.open_set(b.id).verify()

    def test_refusals(self) -> None:
        with self.open_medium() as medium:
            with pytest.raises(BadInput, match="not a recovery set id"):
                medium.open_set("../etc")
            with pytest.raises(OperationFailed, match="no recovery set"):
                medium.open_set("20000101T000000Z-abcd")
            if self.holds_archives:
                with pytest.raises(PreconditionFailed, match="parent set"):
                    medium.begin_set(SetMeta(SetKind.INCREMENTAL, parent="20000101T000000Z-abcd"))
            info = self.save(medium, seed=1)
            with pytest.raises(BadInput, match="already exists"):
                medium.begin_set(set_id=info.id)
            with medium.begin_set() as w:
                with pytest.raises(BadInput, match="cannot be the name"):
                    w.create("../escape")
                with pytest.raises(BadInput, match="cannot be the name"):
                    w.create("set.json")
                w.write_bytes("description.toml", b"x")
                with pytest.raises(BadInput, match="twice"):
                    w.create("description.toml")
                open_file = w.create("description.toml.sha256")
                with pytest.raises(OperationFailed, match="still being written"):
                    w.commit()
                open_file.close()
                w.commit()
            assert len(medium.list_sets()) == 2

    def test_a_save_during_a_save_never_leaves_a_broken_set(self) -> None:
        """Two saves to one place at once (two hosts, two timers): the second one's start
        cleans what it takes for leftovers. Each save then either commits a whole set or
        fails with a message; every set listed afterwards is whole."""
        with self.open_medium() as medium:
            first = self.save(medium, seed=1)
            w = medium.begin_set()
            for name, data in self.small_files(5).items():
                w.write_bytes(name, data)
            with self.open_medium() as other:
                second = self.save(other, seed=2)
            try:
                w.commit()
                committed = True
            except OperationFailed as e:
                committed = False
                assert "another save" in str(e)
            ids = [s.id for s in medium.list_sets()]
            assert sorted(ids) == sorted([first.id, second.id, *([w.id] if committed else [])])
            for set_id in ids:
                medium.open_set(set_id).verify()
            assert self.leftovers(medium) == []
