"""What every medium must do, written once; each medium's test module subclasses it.

A subclass provides ``open_medium()`` (a Medium on a fresh, empty location,
the same location each time it is called within a test) and the means to
damage a set behind the medium's back (``replace``, ``remove``) and to see
what an interrupted save left (``leftovers``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import resource
import signal
import stat
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import pytest
from blake3 import blake3

from resurgo.errors import BadInput, OperationFailed, PreconditionFailed
from resurgo.media import Medium, SetInfo, SetKind, SetMeta, limits, prune
from tests.support.consts import MIB


def pattern(seed: int, size: int, chunk: int = MIB) -> Iterator[bytes]:
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


def stream_sha256(f: object, block: int = MIB) -> tuple[int, str]:
    h = hashlib.sha256()
    n = 0
    while chunk := f.read(block):  # type: ignore[attr-defined]
        h.update(chunk)
        n += len(chunk)
    return n, h.hexdigest()


DESCRIPTION = b'[resurgo]\nversion = 1\nhost = "db1"\n'


class MediumContract:
    holds_archives = True
    big_size = 100 * MIB

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
            for part in pattern(9, 12 * MIB):
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
            # One host's sets (retention applies to each host's apart).
            f1 = self.save(medium, seed=1)
            i1 = self.save(medium, SetMeta(SetKind.INCREMENTAL, f1.id, "db1"), seed=2)
            f2 = self.save(medium, seed=3)
            i2 = self.save(medium, SetMeta(SetKind.INCREMENTAL, f2.id, "db1"), seed=4)
            i3 = self.save(medium, SetMeta(SetKind.INCREMENTAL, i2.id, "db1"), seed=5)
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


# ---------------------------------------------------------------- hostile media


class Hung(BaseException):
    """Raised into a block that took too long: no OSError (which the code under test
    would take for the medium's error) and no Exception (which it may catch)."""


@contextlib.contextmanager
def within(seconds: int) -> Iterator[None]:
    """Fail, instead of hanging, when the block takes longer (an open of a FIFO)."""

    def expire(_sig: int, _frame: FrameType | None) -> None:
        raise Hung(f"still blocked after {seconds} s")

    old = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@contextlib.contextmanager
def memory_bound(extra: int = 512 * MIB) -> Iterator[None]:
    """This process may map little more than it has: reading /dev/zero whole fails with
    MemoryError at once instead of taking the machine's memory."""
    status = Path("/proc/self/status").read_text()
    vm_line = next(line for line in status.splitlines() if line.startswith("VmSize:"))
    vm_kib = int(vm_line.split()[1])
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (vm_kib * 1024 + extra, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def unblock_fifo(path: Path) -> None:
    """Release a reader blocked in an open of the FIFO (a server on the old code)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def loose_modes(top: Path) -> list[str]:
    """The paths at and below top that a group or others may read, write or enter."""
    out = []
    for p in [top, *top.rglob("*")]:
        mode = p.lstat().st_mode
        if stat.S_IMODE(mode) & 0o077:
            out.append(f"{p.relative_to(top.parent)} {stat.filemode(mode)}")
    return out


class HostileTreeContract:
    """A medium whose sets are directories of files the test can reach as local paths
    (``self.root``): a directory, or an SFTP server on this machine. Someone else wrote
    the medium: links, FIFOs and huge files where the set's files should be are refused
    unread, and nothing hangs."""

    root: Path

    def open_medium(self) -> Medium:
        raise NotImplementedError

    def open_at(self, path: Path) -> Medium:
        """The medium at another local path."""
        raise NotImplementedError

    def saved(self, seed: int = 1) -> tuple[Medium, str]:
        medium = self.open_medium()
        return medium, MediumContract().save(medium, seed=seed).id

    def test_set_json_linked_to_dev_zero_is_refused_unread(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        medium, set_id = self.saved()
        good = MediumContract().save(medium, seed=2).id
        index = self.root / set_id / "set.json"
        index.unlink()
        index.symlink_to("/dev/zero")
        with within(20), memory_bound():
            assert [s.id for s in medium.list_sets()] == [good]
            with pytest.raises(OperationFailed, match="symbolic link"):
                medium.open_set(set_id)
        assert "symbolic link" in caplog.text

    def test_an_oversized_set_json_is_refused(self) -> None:
        medium, set_id = self.saved()
        index = self.root / set_id / "set.json"
        data = index.read_bytes()
        index.write_bytes(data + b" " * (limits.INDEX + 1 - len(data)))
        with pytest.raises(OperationFailed, match="more than the 16777216") as e:
            medium.open_set(set_id)
        assert "refused unread" in e.value.message
        assert medium.list_sets() == []

    def test_a_fifo_named_set_json_does_not_hang(self) -> None:
        medium, set_id = self.saved()
        index = self.root / set_id / "set.json"
        index.unlink()
        os.mkfifo(index)
        try:
            with within(20):
                assert medium.list_sets() == []
                with pytest.raises(OperationFailed, match="not a regular file"):
                    medium.open_set(set_id)
        finally:
            unblock_fifo(index)

    def test_a_linked_set_directory_is_refused(self, tmp_path: Path) -> None:
        # A whole set elsewhere (another user's directory), linked in under a set's name.
        medium, set_id = self.saved()
        elsewhere = tmp_path / "elsewhere"
        (self.root / set_id).rename(elsewhere)
        (self.root / set_id).symlink_to(elsewhere)
        assert medium.list_sets() == []
        with pytest.raises(OperationFailed, match="symbolic link"):
            medium.open_set(set_id)

    def test_linked_and_fifo_files_of_a_set_are_refused(self, tmp_path: Path) -> None:
        medium, set_id = self.saved()
        reader = medium.open_set(set_id)
        # The archive: a link to a file of this machine of the recorded size.
        archive = self.root / set_id / "archives" / "boot.tar.zst"
        secret = tmp_path / "secret"
        secret.write_bytes(archive.read_bytes())
        archive.unlink()
        archive.symlink_to(secret)
        with within(20), pytest.raises(OperationFailed, match="symbolic link"):
            reader.open("archives/boot.tar.zst")
        # The description: a FIFO.
        desc = self.root / set_id / "description.toml"
        desc.unlink()
        os.mkfifo(desc)
        try:
            with within(20), pytest.raises(OperationFailed, match="not a regular file"):
                reader.read_bytes("description.toml")
        finally:
            unblock_fifo(desc)
        # A directory of the set: a link.
        archives = self.root / set_id / "archives"
        archives.rename(tmp_path / "archives")
        archives.symlink_to(tmp_path / "archives")
        with within(20), pytest.raises(OperationFailed, match="symbolic link"):
            reader.open("archives/boot.tar.zst")

    @pytest.mark.parametrize("mask", [0o022, 0o000])
    def test_a_saved_set_is_private_whatever_the_umask(self, mask: int) -> None:
        with umask(mask):
            medium = self.open_medium()
            info = MediumContract().save(medium, seed=1)
            w = medium.begin_set()  # a save in progress: its staging too
            w.write_bytes("description.toml", b"x")
            staged = [p for p in self.root.iterdir() if p.name.startswith(".incomplete-")]
            assert len(staged) == 1 and loose_modes(staged[0]) == []
            w.abort()
        assert loose_modes(self.root / info.id) == []
        assert stat.S_IMODE((self.root / info.id / "set.json").stat().st_mode) == 0o600
        assert stat.S_IMODE((self.root / info.id).stat().st_mode) == 0o700

    def test_the_medium_directory_a_save_creates_is_private(self) -> None:
        with umask(0o000), self.open_at(self.root / "new") as medium:
            info = MediumContract().save(medium, seed=1)
        assert loose_modes(self.root / "new") == []
        assert (self.root / "new" / info.id / "set.json").is_file()
