"""The directory medium (a local path, a mounted USB disk) on the real filesystem."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from resurgo.errors import OperationFailed
from resurgo.media import Medium, SetMeta, open_medium
from tests.support.consts import MIB
from tests.support.media_contract import HostileTreeContract, MediumContract, pattern

SRC = Path(__file__).resolve().parents[2] / "src"


class TestDirectoryMedium(MediumContract, HostileTreeContract):
    @pytest.fixture(autouse=True)
    def _root(self, tmp_path: Path) -> None:
        self.root = tmp_path / "medium"
        self.root.mkdir()

    def open_medium(self) -> Medium:
        return open_medium(str(self.root))

    def open_at(self, path: Path) -> Medium:
        return open_medium(str(path))

    def replace(self, medium: Medium, set_id: str, name: str, data: bytes) -> None:
        (self.root / set_id / name).write_bytes(data)

    def remove(self, medium: Medium, set_id: str, name: str) -> None:
        (self.root / set_id / name).unlink()

    def leftovers(self, medium: Medium) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.name.startswith("."))

    def test_layout_on_disk(self) -> None:
        with self.open_medium() as medium:
            info = self.save(medium, seed=1)
        assert sorted(p.relative_to(self.root).as_posix() for p in self.root.rglob("*")) == [
            info.id,
            f"{info.id}/archives",
            f"{info.id}/archives/boot.tar.zst",
            f"{info.id}/catalog.zst",
            f"{info.id}/description.toml",
            f"{info.id}/description.toml.sha256",
            f"{info.id}/manifest.json",
            f"{info.id}/rescue.iso",
            f"{info.id}/set.json",
        ]


KILLED_WRITER = textwrap.dedent(
    """
    import random, sys
    from resurgo.media import open_medium
    medium = open_medium(sys.argv[1])
    w = medium.begin_set()
    w.write_bytes("description.toml", b"x = 1\\n")
    f = w.create("archives/root.tar.zst")
    rng = random.Random(5)
    n = 0
    while True:
        f.write(rng.randbytes(1 << 20))
        n += 1
        if n == 8:
            print(w.id, flush=True)
    """
)


def test_a_killed_save_leaves_earlier_sets_and_invisible_leftovers(tmp_path: Path) -> None:
    root = tmp_path / "medium"
    root.mkdir()
    medium = open_medium(str(root))
    contract = MediumContract()
    first = contract.save(medium, seed=1)
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(root)],
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        assert proc.stdout is not None
        killed_id = proc.stdout.readline().strip()
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout:
            proc.stdout.close()
    assert killed_id, "the writer did not start"
    stage = root / f".incomplete-{killed_id}"
    partial = stage / "archives" / "root.tar.zst"
    assert partial.stat().st_size >= 8 * MIB
    assert not (stage / "set.json").exists()

    assert [s.id for s in medium.list_sets()] == [first.id]
    with pytest.raises(OperationFailed, match="no recovery set"):
        medium.open_set(killed_id)
    medium.open_set(first.id).verify()

    second = contract.save(medium, seed=2)
    assert not stage.exists()
    assert sorted(p.name for p in root.iterdir()) == sorted([first.id, second.id])


def test_a_save_in_progress_is_no_leftover_for_another_save(tmp_path: Path) -> None:
    root = tmp_path / "medium"
    root.mkdir()
    contract = MediumContract()
    running = open_medium(str(root))
    w = running.begin_set()
    w.write_bytes("description.toml", b"x = 1\n")
    f = w.create("archives/root.tar.zst")
    f.write(b"half of it")
    stage = root / f".incomplete-{w.id}"
    dead = root / ".incomplete-20000101T000000Z-dead"  # a killed save's: nobody holds it
    dead.mkdir()
    with open_medium(str(root)) as other:
        second = contract.save(other, seed=2)
    assert stage.is_dir() and not dead.exists()
    f.write(b" and the rest")
    f.close()
    first = w.commit()
    running.close()
    with open_medium(str(root)) as medium:
        assert sorted(s.id for s in medium.list_sets()) == sorted([first.id, second.id])
        medium.open_set(first.id).verify()
        assert medium.open_set(first.id).read_bytes("archives/root.tar.zst") == (
            b"half of it and the rest")


def test_missing_directory(tmp_path: Path) -> None:
    medium = open_medium(str(tmp_path / "not-mounted" / "resurgo"))
    with pytest.raises(OperationFailed, match="does not exist") as e:
        medium.list_sets()
    assert "mounted" in str(e.value)
    with pytest.raises(OperationFailed, match="parent directory does not exist"):
        medium.begin_set()
    # A directory whose parent exists is created by the first save.
    medium = open_medium(str(tmp_path / "resurgo"))
    info = MediumContract().save(medium, seed=1)
    assert [s.id for s in medium.list_sets()] == [info.id]


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_a_full_medium_fails_clearly_and_keeps_earlier_sets(small_tmpfs: Path) -> None:
    medium = open_medium(str(small_tmpfs))
    contract = MediumContract()
    first = contract.save(medium, seed=1)
    with pytest.raises(OperationFailed) as e, medium.begin_set(SetMeta()) as w:
        with w.create("archives/root.tar.zst") as f:
            for part in pattern(1, 8 * MIB):
                f.write(part)
        w.commit()
    assert "No space left on device" in e.value.message
    assert e.value.hint is not None and "full" in e.value.hint
    assert [s.id for s in medium.list_sets()] == [first.id]
    assert sorted(p.name for p in small_tmpfs.iterdir()) == [first.id]
    medium.open_set(first.id).verify()
