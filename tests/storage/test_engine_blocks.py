"""Blocks: the entries of one directory framed together in an archive. A save makes them
(at most MAX_BLOCK_ENTRIES entries and MAX_BLOCK bytes each, never a directory, a hard link
or a large file); a restore hands them whole to the writers, or entry by entry when a
block and its manifest lines do not fit in a slot. Every way gives the same tree."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from resurgo.engine import Source, restore, restore_tree, save_tree, verify_tree
from resurgo.engine.pipes import DecompressedReader
from resurgo.engine.records import MAX_BLOCK, MAX_BLOCK_ENTRIES, Block, RecordReader
from tests.support.loopdisks import Rig
from tests.support.trees import assert_same_trees, snapshot, try_setxattr, write

pytestmark = [pytest.mark.storage, pytest.mark.usefixtures("engine_tools")]


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("blocks")
    src = root / "src"
    for i in range(MAX_BLOCK_ENTRIES + 300):
        write(src / f"many/{i:05d}", os.urandom(i % 700))
    for i in range(40):  # more bytes than a block holds
        write(src / f"wide/{i:02d}", os.urandom(200_000))
    write(src / "wide/zz-large", os.urandom(3 << 20))
    os.symlink("00", src / "wide/link")
    os.mkfifo(src / "wide/fifo")
    os.link(src / "wide/00", src / "wide/hard")
    tagged = write(src / "many/tagged", b"with an attribute")
    assert try_setxattr(tagged, "user.resurgo", b"kept")
    deep = src / ("d" * 200) / ("e" * 200)
    for i in range(50):
        write(deep / (f"{i:03d}" + "f" * 200), os.urandom(30_000))
    archive, manifest = root / "s.archive", root / "s.manifest"
    with open(archive, "wb") as a, open(manifest, "wb") as m:
        save_tree(src, a, m, set_id="s")
    return src, archive, manifest


def _items(archive: Path) -> list[Block | bytes]:
    """Each block's frame, and each entry outside a block by its path."""
    with open(archive, "rb") as f:
        plain = DecompressedReader(f, "archive")
        try:
            rr = RecordReader(plain.read, plain.readinto)
            rr.start()
            found: list[Block | bytes] = []
            while (item := rr.next_item()) is not None:
                if isinstance(item, Block):
                    found.append(item)
                    rr.read_block_into(memoryview(bytearray(item.size)))
                else:
                    found.append(item[2])
                    rr.skip(item[3])
            plain.finish()
            return found
        finally:
            plain.close()


def test_a_save_frames_each_directory_in_blocks(saved: tuple[Path, Path, Path]) -> None:
    _, archive, _ = saved
    items = _items(archive)
    blocks = [i for i in items if isinstance(i, Block)]
    alone = [i for i in items if not isinstance(i, Block)]
    assert all(b.entries <= MAX_BLOCK_ENTRIES and b.size <= MAX_BLOCK for b in blocks)
    many = [b for b in blocks if b.parent == b"many"]
    assert sum(b.entries for b in many) == MAX_BLOCK_ENTRIES + 301 and len(many) == 2
    wide = [b for b in blocks if b.parent == b"wide"]
    assert len(wide) >= 2 and sum(b.entries for b in wide) == 42  # 40 files, link, fifo
    # Directories, the hard link and the large file stand alone.
    assert sorted(alone) == sorted([b".", b"many", b"wide", b"wide/hard", b"wide/zz-large",
                                    b"d" * 200, b"d" * 200 + b"/" + b"e" * 200])


@pytest.mark.parametrize("writers", [0, 2])
def test_blocks_restore_whole(saved: tuple[Path, Path, Path], tmp_path: Path,
                              writers: int) -> None:
    src, archive, manifest = saved
    target = tmp_path / "target"
    target.mkdir()
    result = restore_tree(target, Source.file(manifest), {"s": Source.file(archive)},
                          writers=writers)
    assert result.files == MAX_BLOCK_ENTRIES + 300 + 1 + 41 + 50
    assert verify_tree(target, Source.file(manifest)) == []
    assert_same_trees(snapshot(src), snapshot(target))


def test_blocks_too_big_for_a_slot_restore_entry_by_entry(
        saved: tuple[Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With slots smaller than the blocks (and than some entries), every block goes
    entry by entry, and what fits in no slot is made by the reader itself."""
    src, archive, manifest = saved
    monkeypatch.setattr(restore, "SLOT", 64 << 10)
    target = tmp_path / "target"
    target.mkdir()
    restore_tree(target, Source.file(manifest), {"s": Source.file(archive)}, writers=2)
    assert verify_tree(target, Source.file(manifest)) == []
    assert_same_trees(snapshot(src), snapshot(target))


def test_small_files_go_in_blocks_and_sparse_ones_alone(rig: Rig, tmp_path: Path) -> None:
    """A small file goes in its directory's block when its data is one whole extent, also
    when ext4 keeps it inside its inode (inline data); a small file with a hole goes alone,
    its extents recorded, and comes back sparse."""
    disk = rig.disk("inline", 64 << 20)
    rig.sh("mkfs.ext4", "-q", "-O", "inline_data", "-E", "nodiscard", disk.path)
    src = rig.mount(disk.path, tmp_path / "src")
    for i in range(20):
        write(src / f"tiny/{i:02d}", b"x" * (i + 1))
    with open(src / "tiny/sparse", "wb") as f:  # beyond inline data's reach
        f.write(os.urandom(8192))
        f.truncate(512 << 10)
    rig.sh("sync")
    archive, manifest = tmp_path / "s.archive", tmp_path / "s.manifest"
    with open(archive, "wb") as a, open(manifest, "wb") as m:
        save_tree(src, a, m, set_id="s")
    items = _items(archive)
    tiny = [i for i in items if isinstance(i, Block) and i.parent == b"tiny"]
    assert sum(b.entries for b in tiny) == 20
    assert b"tiny/sparse" in items
    target = tmp_path / "target"
    target.mkdir()
    restore_tree(target, Source.file(manifest), {"s": Source.file(archive)}, writers=2)
    assert verify_tree(target, Source.file(manifest)) == []
    assert_same_trees(snapshot(src), snapshot(target))
