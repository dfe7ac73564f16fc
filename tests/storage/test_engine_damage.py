"""Damaged, truncated, encrypted and hostile archives: each stops the restore with an
OperationFailed naming the archive (and the files, where known), never a traceback, and
nothing is ever written outside the target."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from resurgo.engine import (
    ArchiveDamaged,
    ArchiveError,
    DecryptionFailed,
    SaveResult,
    Source,
    UnsafePath,
    restore_tree,
    save_tree,
    verify_tree,
)
from resurgo.engine.manifest import Entry, ManifestHeader, ManifestWriter
from resurgo.engine.records import (
    FILE,
    SYMLINK,
    Header,
    block_frame,
    end_record,
    entry_record,
    start_record,
)
from resurgo.errors import Damaged, ExitCode, OperationFailed, Undecryptable
from tests.support.trees import write

pytestmark = [pytest.mark.storage, pytest.mark.usefixtures("engine_tools")]


def _tree(root: Path) -> None:
    write(root / "big", os.urandom(3 << 20))
    for i in range(200):
        write(root / f"small/{i:03d}", os.urandom(i * 20))
    os.symlink("big", root / "link")


def _save(src: Path, out: Path, set_id: str = "s", **kw: object) -> tuple[SaveResult, Path, Path]:
    out.mkdir(exist_ok=True)
    archive, manifest = out / f"{set_id}.archive", out / f"{set_id}.manifest"
    with open(archive, "wb") as a, open(manifest, "wb") as m:
        result = save_tree(src, a, m, set_id=set_id, **kw)  # type: ignore[arg-type]
    return result, archive, manifest


def _restore(target: Path, archive: Path, manifest: Path, set_id: str = "s",
             **kw: object) -> None:
    if target.exists():
        shutil.rmtree(target)
    target.mkdir()
    restore_tree(target, Source.file(manifest), {set_id: Source.file(archive)}, **kw)  # type: ignore[arg-type]


@pytest.fixture
def saved(tmp_path: Path) -> tuple[SaveResult, Path, Path]:
    src = tmp_path / "src"
    _tree(src)
    return _save(src, tmp_path / "out")


def test_intact_archive_restores_and_reports_what_it_read(
        saved: tuple[SaveResult, Path, Path], tmp_path: Path) -> None:
    result, archive, manifest = saved
    target = tmp_path / "target"
    target.mkdir()
    restored = restore_tree(target, Source.file(manifest), {"s": Source.file(archive)})
    # what was read is what was written: the checksum entry a caller can keep and check
    assert restored.archives == ((str(archive), result.archive),)
    assert verify_tree(target, Source.file(manifest)) == []


@pytest.mark.parametrize("where", [0.02, 0.3, 0.5, 0.7, 0.95])
def test_one_corrupted_byte_is_found_and_named(
        saved: tuple[SaveResult, Path, Path], tmp_path: Path, where: float) -> None:
    _, archive, manifest = saved
    data = bytearray(archive.read_bytes())
    at = int(len(data) * where)
    data[at] ^= 0x5A
    damaged = tmp_path / "damaged.archive"
    damaged.write_bytes(data)
    with pytest.raises(ArchiveDamaged) as info:
        _restore(tmp_path / "target", damaged, manifest)
    assert str(damaged) in str(info.value)
    # Its own exit code: the rescue tells damage from other failures.
    assert isinstance(info.value, OperationFailed) and info.value.exit_code == ExitCode.DAMAGED
    assert isinstance(info.value, Damaged)


def test_damaged_file_data_names_the_file(saved: tuple[SaveResult, Path, Path],
                                          tmp_path: Path) -> None:
    # Half of "big" is incompressible and stored raw by zstd: a flipped byte there passes
    # zstd's block decoding and is found by the file's digest, which names the file.
    _, archive, manifest = saved
    data = bytearray(archive.read_bytes())
    data[len(data) // 8] ^= 0x01
    damaged = tmp_path / "damaged.archive"
    damaged.write_bytes(data)
    with pytest.raises(ArchiveDamaged) as info:
        _restore(tmp_path / "target", damaged, manifest)
    assert info.value.paths == ("big",)
    assert "big" in str(info.value)


@pytest.mark.parametrize("keep", [0.5, -5])
def test_truncated_archive_is_refused(saved: tuple[SaveResult, Path, Path], tmp_path: Path,
                                      keep: float) -> None:
    _, archive, manifest = saved
    data = archive.read_bytes()
    cut = tmp_path / "cut.archive"
    cut.write_bytes(data[: int(len(data) * keep)] if keep > 0 else data[: int(keep)])
    with pytest.raises(ArchiveDamaged, match=str(cut)):
        _restore(tmp_path / "target", cut, manifest)


def test_truncated_manifest_is_refused(saved: tuple[SaveResult, Path, Path],
                                       tmp_path: Path) -> None:
    _, archive, manifest = saved
    plain = subprocess.run(["zstd", "-dc", str(manifest)], check=True,
                           capture_output=True).stdout
    cut = tmp_path / "cut.manifest"
    cut.write_bytes(subprocess.run(["zstd", "-q", "-c"], input=plain[: len(plain) // 2],
                                   check=True, capture_output=True).stdout)
    with pytest.raises(ArchiveDamaged, match="truncated") as info:
        _restore(tmp_path / "target", archive, cut)
    assert str(cut) in str(info.value)


def test_wrong_and_missing_archives(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _tree(src)
    _, _, m1 = _save(src, tmp_path / "out", "one")
    _, a2, _ = _save(src, tmp_path / "out", "two")
    target = tmp_path / "target"
    target.mkdir()
    with pytest.raises(ArchiveDamaged, match="holds set two"):
        restore_tree(target, Source.file(m1), {"one": Source.file(a2)})
    with pytest.raises(ArchiveError, match="archive of set one is missing"):
        restore_tree(target, Source.file(m1), {})


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, str, Path]:
    if shutil.which("age") is None:
        pytest.skip("needs age (apt-get install age)")
    key, other = tmp_path / "key.txt", tmp_path / "other.txt"
    for k in (key, other):
        subprocess.run(["age-keygen", "-o", str(k)], check=True, capture_output=True)
    recipient = subprocess.run(["age-keygen", "-y", str(key)], check=True, capture_output=True,
                               text=True).stdout.strip()
    return key, recipient, other


def test_encrypted_archive(tmp_path: Path, keys: tuple[Path, str, Path]) -> None:
    key, recipient, other = keys
    src = tmp_path / "src"
    _tree(src)
    _, archive, manifest = _save(src, tmp_path / "out", recipients=[recipient])
    for stream in (archive, manifest):
        assert stream.read_bytes().startswith(b"age-encryption.org/v1")
        assert b"small/" not in stream.read_bytes()
    with pytest.raises(DecryptionFailed, match="no identity was given") as refused:
        _restore(tmp_path / "target", archive, manifest)
    assert refused.value.exit_code == ExitCode.DECRYPT_FAILED
    with pytest.raises(DecryptionFailed, match="no identity matched") as refused:
        _restore(tmp_path / "target", archive, manifest, identity=other)
    assert refused.value.exit_code == ExitCode.DECRYPT_FAILED
    assert isinstance(refused.value, Undecryptable)
    _restore(tmp_path / "target", archive, manifest, identity=key)
    assert verify_tree(tmp_path / "target", Source.file(manifest), identity=key) == []
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0x01
    damaged = tmp_path / "damaged.archive"
    damaged.write_bytes(data)
    with pytest.raises(ArchiveDamaged, match="authenticate") as info:
        _restore(tmp_path / "target", damaged, manifest, identity=key)
    assert info.value.exit_code == ExitCode.DAMAGED


def _craft(out: Path, items: list[tuple[Header, bytes]], *, blocks: bool = False,
           parent: bytes | None = None) -> tuple[Path, Path]:
    """An archive and manifest as a hostile or broken program might write them. With
    ``blocks``, the runs of entries that may share a block share one (whose directory is
    ``parent`` when given, else the first entry's)."""
    from blake3 import blake3

    records = [start_record("s")]
    payload = 0
    man = []
    run: list[bytes] = []
    run_payload = 0
    run_parent: bytes | None = None

    def end_run() -> None:
        nonlocal run, run_payload, run_parent
        if run:
            assert run_parent is not None
            body = b"".join(run)
            records.append(block_frame(parent if parent is not None else run_parent,
                                       len(run) // 2, run_payload, len(body)))
            records.append(body)
        run, run_payload, run_parent = [], 0, None

    for h, data in items:
        digest = blake3(data).digest() if h.kind == FILE else b""
        body = data + digest if h.kind == FILE else b""
        payload += len(body)
        here = h.path.rpartition(b"/")[0] if b"/" in h.path else b"."
        if blocks and h.kind not in ("d", "h") and (run_parent in (None, here)):
            run += [entry_record(h), body]
            run_payload += len(body)
            run_parent = here
        else:
            end_run()
            records += [entry_record(h), body]
        man.append(Entry(h.kind, h.path, h.mode, h.uid, h.gid, h.size, h.mtime_ns, 0, 0, 0,
                         digest.hex(), "", 0, h.target))
    end_run()
    records.append(end_record(len(items), payload))
    archive, manifest = out / "crafted.archive", out / "crafted.manifest"
    zstd = ["zstd", "-q", "-c"]
    archive.write_bytes(subprocess.run(zstd, input=b"".join(records), check=True,
                                       capture_output=True).stdout)
    lines: list[bytes] = []
    w = ManifestWriter(lines.append, ManifestHeader(("s",)))
    for e in man:
        w.add(e)
    w.finish()
    manifest.write_bytes(subprocess.run(zstd, input=b"".join(lines), check=True,
                                        capture_output=True).stdout)
    return archive, manifest


def _dir(path: bytes) -> tuple[Header, bytes]:
    return Header("d", path, 0o40755, 0, 0, 1, 1), b""


def _file(path: bytes, data: bytes) -> tuple[Header, bytes]:
    return Header(FILE, path, 0o100644, 0, 0, 1, 1, 0, len(data), b"", (),
                  ((0, len(data)),) if data else ()), data


@pytest.mark.parametrize("blocks", [False, True])
@pytest.mark.parametrize("writers", [0, 2])
def test_symlink_traversal_is_refused(tmp_path: Path, writers: int, blocks: bool) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    archive, manifest = _craft(tmp_path, [
        _dir(b"."),
        (Header(SYMLINK, b"link", 0o120777, 0, 0, 1, 1, 0, 0, str(outside).encode()), b""),
        _file(b"link/evil", b"must not land outside"),
    ], blocks=blocks)
    with pytest.raises(ArchiveError) as info:
        _restore(tmp_path / "target", archive, manifest, writers=writers)
    assert isinstance(info.value, OperationFailed)
    assert os.listdir(outside) == []


@pytest.mark.parametrize("blocks", [False, True])
def test_parent_paths_are_refused(tmp_path: Path, blocks: bool) -> None:
    (tmp_path / "target").mkdir()
    archive, manifest = _craft(tmp_path, [_dir(b"."), _file(b"../evil", b"x")], blocks=blocks)
    with pytest.raises(ArchiveDamaged, match="unsafe"):
        _restore(tmp_path / "target", archive, manifest)
    assert not (tmp_path / "evil").exists()


@pytest.mark.parametrize("writers", [0, 2])
def test_an_entry_in_the_block_of_another_directory_is_refused(tmp_path: Path,
                                                               writers: int) -> None:
    """A block says its directory; an entry of another one in it is damage, whatever
    the manifest says: nothing lands in a directory the reader did not check."""
    items = [_dir(b"."), _dir(b"a"), _dir(b"b"), _file(b"b/x", b"1")]
    archive, manifest = _craft(tmp_path, items, blocks=True, parent=b"a")
    with pytest.raises(ArchiveDamaged, match="does not belong") as info:
        _restore(tmp_path / "target", archive, manifest, writers=writers)
    assert info.value.paths == ("b/x",)
    assert not (tmp_path / "target/b/x").exists()


@pytest.mark.parametrize("blocks", [False, True])
def test_unsafe_path_in_archive_only(tmp_path: Path, blocks: bool) -> None:
    """The manifest is fine, the archive says otherwise: refused before anything is made."""
    archive, _ = _craft(tmp_path, [_dir(b"."), _file(b"../evil", b"x")], blocks=blocks)
    bad_archive = tmp_path / "bad.archive"
    archive.rename(bad_archive)
    _, manifest = _craft(tmp_path, [_dir(b"."), _file(b"a/evil", b"x")])
    with pytest.raises(ArchiveDamaged, match=str(bad_archive)):
        _restore(tmp_path / "target", bad_archive, manifest)
    assert not (tmp_path / "evil").exists()


def test_unsafe_path_error_type() -> None:
    assert issubclass(UnsafePath, OperationFailed)


@pytest.mark.parametrize("blocks", [False, True])
def test_manifest_and_archive_must_list_the_same_entries(tmp_path: Path, blocks: bool) -> None:
    """A set's archive holds exactly its manifest's entries: one more or one fewer on
    either side is damage, named."""
    items = [_dir(b"."), _file(b"a", b"1"), _file(b"b", b"2")]
    archive, _ = _craft(tmp_path, items, blocks=blocks)
    full = tmp_path / "full.archive"
    archive.rename(full)
    _, short_manifest = _craft(tmp_path, items[:2])
    with pytest.raises(ArchiveDamaged, match="more than its manifest lists") as info:
        _restore(tmp_path / "target", full, short_manifest)
    assert info.value.paths == ("b",)
    short_archive, _ = _craft(tmp_path, items[:2], blocks=blocks)
    short = tmp_path / "short.archive"
    short_archive.rename(short)
    _, long_manifest = _craft(tmp_path, items)
    with pytest.raises(ArchiveDamaged, match="lacks an entry") as info:
        _restore(tmp_path / "target", short, long_manifest)
    assert info.value.paths == ("b",)
