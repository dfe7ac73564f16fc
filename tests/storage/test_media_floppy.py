"""The floppy medium: a 1.44 MB FAT12 image written and read with mtools."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from resurgo.errors import BadInput, OperationFailed
from resurgo.media import Medium, SetMeta, open_medium
from tests.support.media_contract import MediumContract, memory_bound, umask, unblock_fifo, within


def mtools(*argv: str) -> str:
    return subprocess.run(
        argv, check=True, capture_output=True, text=True, stdin=subprocess.DEVNULL
    ).stdout


class TestFloppyMedium(MediumContract):
    holds_archives = False

    @pytest.fixture(autouse=True)
    def _image(self, tmp_path: Path) -> None:
        self.image = tmp_path / "description.img"

    def open_medium(self) -> Medium:
        return open_medium(f"floppy:{self.image}")

    def replace(self, medium: Medium, set_id: str, name: str, data: bytes) -> None:
        local = self.image.with_name("replacement")
        local.write_bytes(data)
        mtools("mcopy", "-o", "-i", str(self.image), str(local), f"::/{set_id}/{name}")

    def remove(self, medium: Medium, set_id: str, name: str) -> None:
        mtools("mdel", "-i", str(self.image), f"::/{set_id}/{name}")

    def leftovers(self, medium: Medium) -> list[str]:
        return sorted(p.name for p in self.image.parent.glob(".description.img.incomplete-*"))

    def test_a_fresh_image_is_a_fat12_floppy(self) -> None:
        assert not self.image.exists()
        with self.open_medium() as medium:
            assert medium.list_sets() == []
            assert not self.image.exists()  # reading creates nothing
            info = self.save(medium, seed=1)
        data = self.image.read_bytes()
        assert len(data) == 1474560
        assert data[54:62] == b"FAT12   "
        assert data[510:512] == b"\x55\xaa"
        listing = mtools("mdir", "-b", "-i", str(self.image), f"::/{info.id}")
        assert sorted(line.rsplit("/", 1)[-1] for line in listing.split()) == [
            "description.toml",
            "description.toml.sha256",
            "set.json",
        ]

    def test_only_the_description_and_its_digest(self) -> None:
        with self.open_medium() as medium, medium.begin_set() as w:
            for name in ("archives/root.tar.zst", "catalog.zst", "rescue.iso"):
                with pytest.raises(BadInput, match="only the description and its digest"):
                    w.create(name)

    def test_files_are_kept_beside_ours(self) -> None:
        with self.open_medium() as medium:
            self.save(medium, seed=1)
        readme = self.image.with_name("README")
        readme.write_text("attach me as virtual media\n")
        mtools("mcopy", "-i", str(self.image), str(readme), "::/README.TXT")
        with self.open_medium() as medium:
            self.save(medium, seed=2)
            assert len(medium.list_sets()) == 2
        assert "README" in mtools("mdir", "-b", "-i", str(self.image), "::/")

    def test_a_full_floppy_keeps_what_it_had(self) -> None:
        big = bytes(range(256)) * 2048  # 512 KiB of description
        with self.open_medium() as medium:
            ids = []
            with pytest.raises(OperationFailed, match="full") as e:
                for _ in range(4):
                    with medium.begin_set(SetMeta()) as w:
                        w.write_bytes("description.toml", big)
                        ids.append(w.commit().id)
            assert e.value.hint is not None and "prune" in e.value.hint
            assert len(ids) == 2
            assert [s.id for s in medium.list_sets()] == ids
            assert self.leftovers(medium) == []
            for set_id in ids:
                assert medium.open_set(set_id).read_bytes("description.toml") == big
            with pytest.raises(OperationFailed, match="does not fit"), medium.begin_set() as w:
                w.write_bytes("description.toml", big * 3)

    def test_not_a_fat_image(self) -> None:
        self.image.write_bytes(b"\x01" * 4096)
        with pytest.raises(OperationFailed, match="not a FAT floppy image"):
            self.open_medium().list_sets()

    @pytest.mark.parametrize("mask", [0o022, 0o000])
    def test_the_image_is_private_whatever_the_umask(self, mask: int) -> None:
        with umask(mask), self.open_medium() as medium:
            self.save(medium, seed=1)  # a fresh image
            assert stat.S_IMODE(self.image.stat().st_mode) == 0o600
            self.image.chmod(0o644)  # as an earlier resurgo left it
            self.save(medium, seed=2)  # a copy changed, then renamed over it
            assert stat.S_IMODE(self.image.stat().st_mode) == 0o600
            assert len(medium.list_sets()) == 2

    def test_an_image_that_is_no_file_is_refused_unread(self) -> None:
        self.image.symlink_to("/dev/zero")
        with within(20), memory_bound(), pytest.raises(OperationFailed, match="neither a file"):
            self.open_medium().list_sets()
        self.image.unlink()
        os.mkfifo(self.image)
        try:
            with within(20), pytest.raises(OperationFailed, match="neither a file"):
                self.open_medium().list_sets()
        finally:
            unblock_fifo(self.image)

    def test_an_image_larger_than_any_floppy_is_refused(self) -> None:
        with self.open_medium() as medium:
            self.save(medium, seed=1)
        with open(self.image, "ab") as f:
            f.truncate(5 * 1024 * 1024)
        with pytest.raises(OperationFailed, match="more than the 4194304"):
            self.open_medium().list_sets()

    def test_a_file_beyond_its_cap_is_refused(self) -> None:
        with self.open_medium() as medium:
            info = self.save(medium, seed=1)
        self.replace(self.open_medium(), info.id, "description.toml.sha256", b"0" * 5000)
        with pytest.raises(OperationFailed, match="more than 4096"):
            self.open_medium().open_set(info.id).read_bytes("description.toml.sha256")
