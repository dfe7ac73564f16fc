"""The pool's parallel paths: packages extracted by several threads (beside the archive's
restore), and checked by several threads before anything is written."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tarfile
import threading
from pathlib import Path

import pytest

from resurgo import digest as content_digest
from resurgo.engine import Source, restore_tree, save_tree, verify_tree
from resurgo.engine.errors import ArchiveDamaged
from resurgo.errors import Damaged
from resurgo.media import open_medium
from resurgo.pool import lists, xzblocks
from resurgo.pool.extract import Extraction, extract
from resurgo.pool.needs import PoolNeeds, check
from resurgo.pool.store import PackagePool, file_name
from tests.support.debs import Member, ar, compress, tar
from tests.support.debs import deb as make_deb

ROOTED = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOTED, reason="restoring owners needs root")
needs_zstd = pytest.mark.skipif(shutil.which("zstd") is None, reason="needs zstd")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pool_with(tmp_path: Path, packages: list[tuple[str, bytes]], *, local: bool = True
              ) -> tuple[PackagePool, dict[str, lists.PackageRef]]:
    pool = PackagePool(open_medium(str(tmp_path / "medium")))
    # An SFTP medium is read by one thread at a time: the same pool read that way.
    pool.local = local
    refs = {}
    for name, data in packages:
        ref = lists.PackageRef(sha(data), len(data), name, "1.0", "amd64")
        pool.add(ref, [data])
        refs[ref.sha256] = ref
    return pool, refs


def pooled(path: str, content: bytes, ref: lists.PackageRef, *, mode: int = 0o100644,
           owner: tuple[int, int] = (0, 0), mtime_ns: int = 1_600_000_000_000_000_000,
           member: str | None = None) -> lists.PooledFile:
    return lists.PooledFile(path.encode(), mode, owner[0], owner[1], len(content), mtime_ns,
                            content_digest.of(content).hex(), sha(content), ref.sha256,
                            (member or path).encode())


def many_packages(count: int) -> list[tuple[str, bytes, dict[str, bytes]]]:
    """Packages of different sizes, each with a few files in shared directories."""
    out = []
    for n in range(count):
        files = {f"usr/share/p{n}/f{k}": os.urandom(500 * (n + 1) * (k + 1)) for k in range(4)}
        files[f"usr/bin/tool{n}"] = os.urandom(200 + 2000 * n)
        # gzip: quick to make (xz's own paths have tests of their own)
        out.append((f"pkg{n}", make_deb(f"pkg{n}", "1.0", "amd64", [
            Member(f"./{path}", data) for path, data in files.items()], compression="gz"),
            files))
    return out


@needs_root
@pytest.mark.parametrize(("local", "processes"), [(True, True), (False, True), (True, False)],
                         ids=["local", "one-reader", "threads"])
def test_packages_are_extracted_by_workers_each_file_whole_with_its_metadata(
    tmp_path: Path, local: bool, processes: bool
) -> None:
    packages = many_packages(7)
    pool, refs = pool_with(tmp_path, [(name, data) for name, data, _ in packages], local=local)
    by_name = {r.name: r for r in refs.values()}
    files = []
    for n, (name, _, contents) in enumerate(packages):
        for k, (path, data) in enumerate(sorted(contents.items())):
            files.append(pooled(path, data, by_name[name], mode=0o100600 + k,
                                owner=(1000 + n, 2000 + k), mtime_ns=10**18 + n * 1000 + k))
    target = tmp_path / "target"
    target.mkdir()
    done = extract(target, files, PoolNeeds(pool, refs), workers=3, processes=processes)
    assert (done.files, done.data_bytes) == (len(files), sum(f.size for f in files))
    for f in files:
        st = os.lstat(target / os.fsdecode(f.path))
        assert (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns) == (f.mode, f.uid, f.gid,
                                                                      f.mtime_ns)
        assert sha((target / os.fsdecode(f.path)).read_bytes()) == f.sha256
    found = sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file())
    assert found == sorted(os.fsdecode(f.path) for f in files)
    assert not [t for t in threading.enumerate() if t.name.startswith("pool ")]


@needs_root
def test_a_damaged_member_stops_every_thread_and_names_its_package(tmp_path: Path) -> None:
    packages = many_packages(6)
    trojan = make_deb("bad", "1.0", "amd64", [Member("./usr/bin/bad", b"trojan")])
    pool, refs = pool_with(tmp_path, [(name, data) for name, data, _ in packages]
                           + [("bad", trojan)])
    by_name = {r.name: r for r in refs.values()}
    files = [pooled(path, data, by_name[name]) for name, _, contents in packages
             for path, data in contents.items()]
    files.append(pooled("usr/bin/bad", b"honest", by_name["bad"]))
    target = tmp_path / "target"
    target.mkdir()
    with pytest.raises(ArchiveDamaged, match=r"bad 1.0 \(amd64\).*digest differs"):
        extract(target, files, PoolNeeds(pool, refs), workers=2)
    assert not (target / "usr/bin/bad").exists()
    assert not [t for t in threading.enumerate() if t.name.startswith("pool ")]


@needs_root
@pytest.mark.skipif(shutil.which("xz") is None, reason="needs the xz program")
def test_a_package_of_several_xz_blocks_is_decoded_by_threads_of_its_worker(
    tmp_path: Path
) -> None:
    contents = {f"lib/modules/m{n}.ko": os.urandom(20_000) * 4 for n in range(12)}
    data = subprocess.run(["xz", "-c", "-T2", "--block-size=65536"], input=tar([
        Member(f"./{path}", content) for path, content in contents.items()]),
        capture_output=True, check=True).stdout
    # Blocks of 64 KiB that give their sizes, as xz with threads (and dpkg-deb) writes them.
    assert xzblocks.block_sizes(data[12:12 + (data[12] + 1) * 4]) is not None
    package = ar([("debian-binary", b"2.0\n"),
                  ("control.tar.xz", compress(tar([Member(
                      "./control", b"Package: k\nVersion: 1.0\nArchitecture: amd64\n")]), "xz")),
                  ("data.tar.xz", data)])
    pool, refs = pool_with(tmp_path, [("k", package)])
    (ref,) = refs.values()
    target = tmp_path / "target"
    target.mkdir()
    files = [pooled(path, content, ref) for path, content in contents.items()]
    for processes in (True, False):
        shutil.rmtree(target / "lib", ignore_errors=True)
        done = extract(target, files, PoolNeeds(pool, refs), workers=2, processes=processes)
        assert done.files == len(files)
        for path, content in contents.items():
            assert (target / path).read_bytes() == content


@needs_root
def test_a_package_is_read_only_up_to_the_last_member_taken(tmp_path: Path) -> None:
    content = b"wanted" * 100
    whole = tar([Member("./usr/bin/wanted", content)])
    # What follows the member in this package's data is not even a tar header: a reader
    # that went on would refuse it (the package was hashed whole before, by check()).
    data = whole[:512 + 1024] + b"\xff" * 1024
    package = ar([("debian-binary", b"2.0\n"),
                  ("control.tar.xz", compress(tar([Member(
                      "./control", b"Package: p\nVersion: 1.0\nArchitecture: amd64\n")]), "xz")),
                  ("data.tar.xz", compress(data, "xz"))])
    pool, refs = pool_with(tmp_path, [("p", package)])
    (ref,) = refs.values()
    target = tmp_path / "target"
    target.mkdir()
    done = extract(target, [pooled("usr/bin/wanted", content, ref)], PoolNeeds(pool, refs))
    assert done.files == 1 and (target / "usr/bin/wanted").read_bytes() == content
    other = pooled("usr/bin/other", b"", ref)
    with pytest.raises(ArchiveDamaged, match=r"p 1.0 \(amd64\).*wrong checksum"):
        extract(tmp_path / "target", [other], PoolNeeds(pool, refs))


@needs_zstd
@needs_root
def test_the_extraction_runs_beside_the_archive_restore_and_ends_before_its_directories(
    tmp_path: Path
) -> None:
    """The directories of the pooled files get their saved times: the restore waits for
    the extraction before it sets them (a file made in a directory afterwards would change
    its mtime)."""
    src = tmp_path / "src"
    packaged = {f"usr/lib/mod{n}/file{k}": os.urandom(3000 + 100 * k)
                for n in range(5) for k in range(20)}
    for path, data in packaged.items():
        (src / path).parent.mkdir(parents=True, exist_ok=True)
        (src / path).write_bytes(data)
    for n in range(5):
        (src / f"usr/lib/mod{n}/own.conf").write_bytes(b"the machine's own %d" % n)
    for folder in sorted({p.parent for p in src.rglob("*")}, key=lambda p: -len(p.parts)):
        os.utime(folder, ns=(1, 1_500_000_000_123_456_789))

    class Pooling:
        def __init__(self) -> None:
            self.taken: dict[bytes, tuple[os.stat_result, str]] = {}

        def wants(self, rel: bytes) -> str | None:
            data = packaged.get(os.fsdecode(rel))
            return None if data is None else sha(data)

        def take(self, rel: bytes, st: os.stat_result, digest: str, sha256: str,
                 xattrs: tuple[tuple[str, bytes], ...]) -> None:
            self.taken[rel] = (st, digest)

    pooling = Pooling()
    archive, manifest = tmp_path / "a", tmp_path / "m"
    with open(archive, "wb") as a, open(manifest, "wb") as m:
        save_tree(src, a, m, set_id="s1", pooling=pooling)
    debs = [(f"mod{n}", make_deb(f"mod{n}", "1.0", "amd64", [
        Member(f"./{path}", data) for path, data in packaged.items()
        if path.startswith(f"usr/lib/mod{n}/")])) for n in range(5)]
    pool, refs = pool_with(tmp_path, debs)
    by_name = {r.name: r for r in refs.values()}
    files = []
    for rel, (st, digest) in sorted(pooling.taken.items()):
        path = os.fsdecode(rel)
        files.append(lists.PooledFile(rel, st.st_mode, st.st_uid, st.st_gid, st.st_size,
                                      st.st_mtime_ns, digest, sha(packaged[path]),
                                      by_name[path.split("/")[2]].sha256, rel))
    assert len(files) == len(packaged)
    out = tmp_path / "out"
    out.mkdir()
    told: list[tuple[int, int]] = []
    job = Extraction(out, files, PoolNeeds(pool, refs), workers=2,
                     progress=lambda n, b: told.append((n, b)))
    waited: list[int] = []
    try:
        restore_tree(out, Source.file(manifest), {"s1": Source.file(archive)},
                     before_dirs=lambda: waited.append(job.wait().files))
    finally:
        job.stop()
    assert waited == [len(files)]
    # the progress is told after each package, counting up to every file and byte
    assert len(told) == 5 and told == sorted(told)
    assert told[-1] == (len(files), sum(len(d) for d in packaged.values()))
    extra = [f.entry() for f in files]
    assert verify_tree(out, Source.file(manifest), extra=extra) == []
    assert os.stat(out / "usr/lib/mod3").st_mtime_ns == 1_500_000_000_123_456_789


@pytest.mark.parametrize("local", [True, False], ids=["local", "one-reader"])
def test_every_package_is_hashed_and_each_damaged_one_named(tmp_path: Path,
                                                            local: bool) -> None:
    packages = many_packages(6)
    pool, refs = pool_with(tmp_path, [(name, data) for name, data, _ in packages], local=local)
    needs = PoolNeeds(pool, refs)
    check(needs, read=True)
    for victim in ("pkg1", "pkg4"):
        ref = next(r for r in refs.values() if r.name == victim)
        path = tmp_path / "medium/pool" / file_name(ref)
        damaged = bytearray(path.read_bytes())
        damaged[len(damaged) // 2] ^= 1
        path.write_bytes(bytes(damaged))
    with pytest.raises(Damaged) as e:
        check(needs, read=True)
    assert e.value.message.count("is damaged") == 2
    assert "pkg1 1.0 (amd64) is damaged" in e.value.message
    assert "pkg4 1.0 (amd64) is damaged" in e.value.message


def test_a_symlink_member_never_counts_as_the_file_taken(tmp_path: Path) -> None:
    package = make_deb("p", "1.0", "amd64", [
        Member("./usr/bin/x", kind=tarfile.SYMTYPE, target="/etc/shadow")])
    pool, refs = pool_with(tmp_path, [("p", package)])
    (ref,) = refs.values()
    target = tmp_path / "target"
    target.mkdir()
    with pytest.raises(ArchiveDamaged, match="lacks 1 file"):
        extract(target, [pooled("usr/bin/x", b"", ref)], PoolNeeds(pool, refs), workers=2)
    assert list(target.iterdir()) == []
