"""The package pool's pieces: the .deb reader, the set's lists, the pool on a directory
medium, the engine leaving pooled files out, and extraction, hostile packages included."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tarfile
from pathlib import Path

import pytest

from resurgo import digest as content_digest
from resurgo.engine import Source, restore_tree, save_tree, verify_tree
from resurgo.engine.errors import ArchiveDamaged, UnsafePath
from resurgo.engine.manifest import ManifestReader
from resurgo.engine.source import ManifestStream
from resurgo.errors import Damaged
from resurgo.media import open_medium
from resurgo.pool import deb, lists
from resurgo.pool.extract import extract
from resurgo.pool.needs import PoolNeeds, check
from resurgo.pool.obtain import Candidate, check_package
from resurgo.pool.store import PackagePool, file_name, package_name, parse_name, twin_name
from tests.support.debs import Member
from tests.support.debs import deb as make_deb

ROOTED = os.geteuid() == 0
needs_zstd = pytest.mark.skipif(shutil.which("zstd") is None, reason="needs zstd")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------- the reader


@pytest.mark.parametrize("compression", ["xz", "gz", "none",
                                         pytest.param("zst", marks=needs_zstd)])
def test_a_package_is_read_with_its_control_md5sums_and_members(compression: str) -> None:
    data = make_deb("tool", "1:2.0-1", "amd64", [
        Member("./usr/", kind=tarfile.DIRTYPE),
        Member("./usr/bin/tool", b"#!/bin/sh\n" * 1000, mode=0o755),
        Member("./usr/bin/alias", kind=tarfile.SYMTYPE, target="tool"),
    ], compression=compression)
    seen: dict[str, bytes] = {}

    def on_file(m: deb.Member):  # type: ignore[no-untyped-def]
        return lambda body: seen.setdefault(m.path, deb.read_exact(body, m.size))

    control = deb.read_deb(io.BytesIO(data), on_file)
    assert (control.package, control.version, control.architecture) == ("tool", "1:2.0-1",
                                                                         "amd64")
    assert control.md5sums == {"/usr/bin/tool": hashlib.md5(b"#!/bin/sh\n" * 1000).hexdigest()}
    assert seen == {"usr/bin/tool": b"#!/bin/sh\n" * 1000}  # the symlink is never handed on


@pytest.mark.parametrize("damage", [
    lambda d: d[:40],  # truncated
    lambda d: b"!<arch>\nnot a header at all, no, not at all, nothing here....\n",
    lambda d: d[:200] + bytes(len(d) - 200),  # zeros instead of the compressed data
    lambda d: b"PK\x03\x04" + d[4:],
])
def test_what_is_not_a_package_is_refused(damage) -> None:  # type: ignore[no-untyped-def]
    data = make_deb("tool", "1.0", "amd64", [Member("./usr/bin/tool", b"x" * 5000)])
    with pytest.raises(deb.DebError):
        deb.read_deb(io.BytesIO(damage(data)), lambda m: lambda body: body.drain())


@pytest.fixture(params=["in-process", "program"])
def zstd_reader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """zstd members read by python-zstandard, and by the zstd program where a rescue or a
    system lacks the module."""
    if request.param == "in-process":
        if deb.zstandard is None:
            pytest.skip("python-zstandard is not installed")
    else:
        if shutil.which("zstd") is None:
            pytest.skip("needs zstd")
        monkeypatch.setattr(deb, "zstandard", None)
    return str(request.param)


def test_a_zstd_member_is_read_by_either_decoder_and_damage_is_refused(
    zstd_reader: str
) -> None:
    content = b"".join(b"line %d of the tool\n" % i for i in range(20000))
    data = make_deb("tool", "1.0", "amd64", [Member("./usr/bin/tool", content),
                                             Member("./usr/bin/other", b"o" * 3000)],
                    compression="zst")
    seen: dict[str, bytes] = {}

    def on_file(m: deb.Member):  # type: ignore[no-untyped-def]
        return lambda body: seen.setdefault(m.path, deb.read_exact(body, m.size))

    deb.read_deb(io.BytesIO(data), on_file)
    assert seen == {"usr/bin/tool": content, "usr/bin/other": b"o" * 3000}
    # The same decoder goes on to the next package (python-zstandard's is reused).
    deb.read_deb(io.BytesIO(data), on_file)
    at = data.index(b"data.tar.zst") + 60 + 200
    damaged = data[:at] + bytes(b ^ 0x5A for b in data[at:at + 64]) + data[at + 64:]
    with pytest.raises(deb.DebError):
        deb.read_deb(io.BytesIO(damaged), lambda m: lambda body: body.drain())


@pytest.mark.parametrize("compression", ["none", "xz"])
def test_what_follows_a_data_tar_is_read_to_its_end_within_a_bound(compression: str) -> None:
    """After the tar's end the member is read on (so that a decoder checks its stream's
    checksum), but no further than any package's padding: a crafted trailer is refused."""
    from tests.support.debs import ar, compress, tar

    control = tar([Member("./control", b"Package: tool\nVersion: 1.0\nArchitecture: amd64\n")])

    def package(trailer: bytes) -> bytes:
        suffix = "" if compression == "none" else f".{compression}"
        return ar([("debian-binary", b"2.0\n"),
                   (f"control.tar{suffix}", compress(control, compression)),
                   (f"data.tar{suffix}",
                    compress(tar([Member("./usr/bin/tool", b"x" * 5000)]) + trailer,
                             compression))])

    def take_all(m: deb.Member):  # type: ignore[no-untyped-def]
        return lambda body: body.drain()

    deb.read_deb(io.BytesIO(package(bytes(deb.MAX_TRAILER // 2))), take_all)
    with pytest.raises(deb.DebError, match="after its data's tar"):
        deb.read_deb(io.BytesIO(package(bytes(deb.MAX_TRAILER + 1))), take_all)


def test_a_huge_extended_header_is_refused_unread() -> None:
    header = bytearray(512)
    header[:8] = b"././@Lon"
    header[124:136] = b"%011o\0" % (1 << 30)
    header[156:157] = b"L"
    header[148:156] = b"        "
    header[148:156] = b"%06o\0 " % sum(header)
    with pytest.raises(deb.DebError, match="extended header"):
        list(deb.tar_members(io.BytesIO(bytes(header))))


# ---------------------------------------------------------------- the lists


def pooled_file(path: bytes, content: bytes, package: str = "a" * 64,
                xattrs: tuple[tuple[str, bytes], ...] = ()) -> lists.PooledFile:
    return lists.PooledFile(path, 0o100644, 0, 0, len(content), 1_700_000_000_000_000_000,
                            content_digest.of(content).hex(), sha(content), package,
                            path, xattrs)


def test_lists_round_trip_and_refuse_what_is_malformed() -> None:
    refs = [lists.PackageRef("b" * 64, 10, "zlib1g", "1:1.2.13.dfsg-1", "amd64"),
            lists.PackageRef("a" * 64, 20, "bash", "5.2.15-2+b2", "amd64", "d" * 64, 30)]
    data = lists.encode_packages(refs)
    assert data.startswith(b"#resurgo-packages 2\n")
    assert lists.decode_packages(data) == tuple(sorted(refs))
    assert sorted(refs)[0].stored_sha256 == "d" * 64 and sorted(refs)[0].stored_size == 30
    assert sorted(refs)[1].stored_sha256 == "b" * 64 and sorted(refs)[1].stored_size == 10
    # version 1 (no twins) is still read
    old = b"#resurgo-packages 1\n" + b"".join(
        b"\t".join(line.split(b"\t")[:5]) + b"\n" for line in data.splitlines()[1:-1]
    ) + b"#end 2\n"
    assert lists.decode_packages(old) == tuple(r.package() for r in sorted(refs))
    for bad in (data[:-1], data.replace(b"#end 2", b"#end 3"), b"#resurgo-packages 3\n#end 0\n",
                data.replace(b"zlib1g", b"../x"),
                data.replace(b"\t30\n", b"\t0\n"),  # a twin of no bytes
                data.replace(b"\t30\n", b"\t-\n"),  # half a twin
                data.replace(b"d" * 64, b"D" * 64),
                old.replace(b"#resurgo-packages 1", b"#resurgo-packages 2")):
        with pytest.raises(lists.ListError):
            lists.decode_packages(bad)

    files = [pooled_file(b"usr/bin/a", b"one", xattrs=(("user.x", b"\x00\xff"),)),
             pooled_file(b"usr/bin/b", b"two"), pooled_file(b"usr/lib/c\xff", b"three")]
    out: list[bytes] = []
    w = lists.PooledWriter(out.append)
    for f in files:
        w.add(f)
    w.finish()
    text = b"".join(out)
    assert list(lists.read_pooled(io.BytesIO(text))) == files
    lines = text.splitlines(keepends=True)
    for broken in (lines[:-1], [lines[0], lines[2], lines[1], lines[3], lines[4]],
                   [*lines[:2], lines[1].replace(b"usr/bin/a", b"../../etc/passwd"),
                    *lines[2:]],
                   [*lines, b"more\n"]):
        with pytest.raises(lists.ListError):
            list(lists.read_pooled(broken))


def test_pool_names_say_what_a_package_is() -> None:
    ref = lists.PackageRef("c" * 64, 5, "libc6", "2.36-9+deb12u4", "amd64")
    name = file_name(ref)
    assert parse_name(name, 5) == ref
    epoch = lists.PackageRef("c" * 64, 5, "zlib1g", "1:1.2.13", "amd64")
    assert "%3a" in file_name(epoch) and parse_name(file_name(epoch), 5) == epoch
    assert parse_name("../" + name, 5) is None
    assert parse_name(".incoming-abc", 5) is None
    twin = ref.with_twin("e" * 64, 7)
    assert file_name(twin) == twin_name(twin) == name.removesuffix(".deb") + (
        "." + "e" * 16 + ".zst.deb")
    assert package_name(twin) == name
    assert parse_name(twin_name(twin), 7) is None  # a twin is no package


# ---------------------------------------------------------------- a pool and extraction


def pool_with(tmp_path: Path, packages: list[tuple[str, bytes]]
              ) -> tuple[PackagePool, dict[str, lists.PackageRef]]:
    medium = open_medium(str(tmp_path / "medium"))
    pool = PackagePool(medium)
    refs = {}
    for name, data in packages:
        ref = lists.PackageRef(sha(data), len(data), name, "1.0", "amd64")
        pool.add(ref, [data])
        refs[ref.sha256] = ref
    return pool, refs


def test_a_pool_is_checked_whole_before_anything_is_written(tmp_path: Path) -> None:
    good = make_deb("good", "1.0", "amd64", [Member("./usr/bin/good", b"g" * 3000)])
    other = make_deb("other", "1.0", "amd64", [Member("./usr/bin/other", b"o" * 3000)])
    pool, refs = pool_with(tmp_path, [("good", good), ("other", other)])
    needs = PoolNeeds(pool, refs)
    check(needs, read=True)
    victim = next(r for r in refs.values() if r.name == "other")
    path = tmp_path / "medium/pool" / file_name(victim)
    damaged = bytearray(path.read_bytes())
    damaged[-100] ^= 1
    path.write_bytes(bytes(damaged))
    check(needs, read=False)  # the size is the same
    with pytest.raises(Damaged, match=r"other 1.0 .amd64. is damaged"):
        check(needs, read=True)
    path.unlink()
    with pytest.raises(Damaged, match=r"other 1.0 .amd64. is missing"):
        check(needs, read=False)


@pytest.mark.skipif(not ROOTED, reason="restoring owners needs root")
def test_extraction_writes_only_what_the_set_lists_with_its_metadata(tmp_path: Path) -> None:
    content = b"\x7fELF pretend" * 500
    hostile = make_deb("tool", "1.0", "amd64", [
        Member("../../escape", b"outside"),
        Member("/etc/passwd-planted", b"outside"),
        Member("./usr/bin/link", kind=tarfile.SYMTYPE, target="/etc/shadow"),
        Member("./usr/bin/hard", kind=tarfile.LNKTYPE, target="./usr/bin/tool"),
        Member("./dev/sda", kind=tarfile.CHRTYPE),
        Member("./usr/bin/tool", content, mode=0o4755),
    ])
    pool, refs = pool_with(tmp_path, [("tool", hostile)])
    (ref,) = refs.values()
    target = tmp_path / "target"
    (target / "usr").mkdir(parents=True)
    f = lists.PooledFile(b"usr/bin/tool", 0o104750, 1000, 1001, len(content), 1234567890123,
                         content_digest.of(content).hex(), sha(content), ref.sha256,
                         b"usr/bin/tool", (("user.origin", b"local"),))
    done = extract(target, [f], PoolNeeds(pool, refs))
    assert (done.files, done.data_bytes) == (1, len(content))
    st = os.lstat(target / "usr/bin/tool")
    assert (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns) == (0o104750, 1000, 1001,
                                                                  1234567890123)
    assert os.getxattr(target / "usr/bin/tool", "user.origin") == b"local"
    assert (target / "usr/bin/tool").read_bytes() == content
    found = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")
                   if "medium" not in p.parts)
    assert found == ["target", "target/usr", "target/usr/bin", "target/usr/bin/tool"]

    # What the package has at a path is never a reason to write there: a file the set
    # takes from a member that is a link (or missing) is refused, naming the package.
    link = lists.PooledFile(b"usr/bin/link", 0o100644, 0, 0, 0, 0, "0" * 64, sha(b""),
                            ref.sha256, b"usr/bin/link")
    with pytest.raises(ArchiveDamaged, match=r"tool 1.0 .amd64.*lacks 1 file"):
        extract(tmp_path / "target", [link], PoolNeeds(pool, refs))
    assert not os.path.lexists(target / "usr/bin/link")


@pytest.mark.skipif(not ROOTED, reason="restoring owners needs root")
def test_a_member_whose_digest_is_not_the_catalogs_is_removed_and_refused(
    tmp_path: Path
) -> None:
    package = make_deb("tool", "1.0", "amd64", [Member("./usr/bin/tool", b"trojan")])
    pool, refs = pool_with(tmp_path, [("tool", package)])
    (ref,) = refs.values()
    target = tmp_path / "target"
    target.mkdir()
    f = pooled_file(b"usr/bin/tool", b"honest", package=ref.sha256)
    f = lists.PooledFile(f.path, f.mode, 0, 0, 6, 0, f.digest, f.sha256, ref.sha256,
                         f.member)
    with pytest.raises(ArchiveDamaged, match="digest differs"):
        extract(target, [f], PoolNeeds(pool, refs))
    assert not (target / "usr/bin/tool").exists()


@pytest.mark.skipif(not ROOTED, reason="restoring owners needs root")
def test_a_symlink_in_the_target_is_never_followed(tmp_path: Path) -> None:
    content = b"data"
    package = make_deb("tool", "1.0", "amd64", [Member("./usr/bin/tool", content)])
    pool, refs = pool_with(tmp_path, [("tool", package)])
    (ref,) = refs.values()
    outside = tmp_path / "outside"
    outside.mkdir()
    target = tmp_path / "target"
    target.mkdir()
    (target / "usr").symlink_to(outside)
    f = lists.PooledFile(b"usr/bin/tool", 0o100644, 0, 0, 4, 0,
                         content_digest.of(content).hex(), sha(content), ref.sha256,
                         b"usr/bin/tool")
    with pytest.raises(UnsafePath):
        extract(target, [f], PoolNeeds(pool, refs))
    assert list(outside.iterdir()) == []


def test_a_package_is_checked_against_what_the_catalog_expects() -> None:
    content = b"content"
    data = make_deb("tool", "1.0", "amd64", [Member("./usr/bin/tool", content),
                                             Member("./usr/bin/other", b"other")])
    cand = Candidate("/usr/bin/tool", ("tool", "1.0", "amd64"), "usr/bin/tool",
                     hashlib.md5(content).hexdigest(), sha(content))
    checked = check_package(io.BytesIO(data), cand.key, {cand.member: cand}, data=True)
    assert checked.good == {"usr/bin/tool"} and checked.sha256 == sha(data)
    wrong = Candidate(cand.path, cand.key, cand.member, cand.md5, sha(b"not it"))
    assert not check_package(io.BytesIO(data), cand.key, {cand.member: wrong},
                             data=True).good
    with pytest.raises(deb.DebError, match="not the package expected"):
        check_package(io.BytesIO(data), ("tool", "1.1", "amd64"), {}, data=False)


# ---------------------------------------------------------------- the engine's side


class _Pooling:
    def __init__(self, wanted: dict[bytes, str]) -> None:
        self.wanted = wanted
        self.taken: list[tuple[bytes, str, str]] = []

    def wants(self, rel: bytes) -> str | None:
        return self.wanted.get(rel)

    def take(self, rel: bytes, st: os.stat_result, digest: str, sha256: str,
             xattrs: tuple[tuple[str, bytes], ...]) -> None:
        self.taken.append((rel, digest, sha256))


@needs_zstd
@pytest.mark.skipif(not ROOTED, reason="restoring owners needs root")
def test_a_save_leaves_pooled_files_out_and_verify_takes_them_back(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "usr/bin").mkdir(parents=True)
    (src / "usr/bin/packaged").write_bytes(b"from the package")
    (src / "usr/bin/changed").write_bytes(b"changed since")
    (src / "usr/bin/linked").write_bytes(b"two links")
    os.link(src / "usr/bin/linked", src / "usr/bin/linked2")
    (src / "etc").mkdir()
    (src / "etc/own").write_bytes(b"the machine's")
    pooling = _Pooling({b"usr/bin/packaged": sha(b"from the package"),
                        b"usr/bin/changed": sha(b"as packaged"),
                        b"usr/bin/linked": sha(b"two links")})
    archive, manifest = tmp_path / "a", tmp_path / "m"
    with open(archive, "wb") as a, open(manifest, "wb") as m:
        result = save_tree(src, a, m, set_id="s1", pooling=pooling)
    assert [t[0] for t in pooling.taken] == [b"usr/bin/packaged"]
    assert (result.pooled, result.pooled_bytes) == (1, len(b"from the package"))
    with ManifestStream(Source.file(manifest), None) as ms:
        assert ms.header.pooled
        paths = [e.path for e in ms.entries()]
    assert b"usr/bin/packaged" not in paths and b"usr/bin/changed" in paths
    assert b"usr/bin/linked2" in paths

    out = tmp_path / "out"
    out.mkdir()
    restore_tree(out, Source.file(manifest), {"s1": Source.file(archive)})
    assert not (out / "usr/bin/packaged").exists()
    st = os.stat(src / "usr/bin/packaged")
    entry = lists.PooledFile(b"usr/bin/packaged", st.st_mode, st.st_uid, st.st_gid,
                             st.st_size, st.st_mtime_ns, pooling.taken[0][1],
                             pooling.taken[0][2], "d" * 64, b"x").entry()
    missing = verify_tree(out, Source.file(manifest), extra=[entry])
    assert [(m.path, m.what) for m in missing] == [("usr/bin/packaged", "missing")]
    shutil.copy2(src / "usr/bin/packaged", out / "usr/bin/packaged")
    os.utime(out / "usr/bin", ns=(st.st_atime_ns, os.stat(src / "usr/bin").st_mtime_ns))
    assert verify_tree(out, Source.file(manifest), extra=[entry]) == []


def test_an_old_reader_refuses_a_pooled_manifest_and_a_new_one_needs_its_line() -> None:
    text = b"#resurgo-manifest 4\n#set 0 s\n#root /\n#pooled\n#end 0\n"
    assert ManifestReader(io.BytesIO(text)).header.pooled
    with pytest.raises(ValueError, match="without its #pooled line"):
        ManifestReader(io.BytesIO(text.replace(b"#pooled\n", b"")))
    with pytest.raises(ValueError, match="unknown header line"):
        ManifestReader(io.BytesIO(text.replace(b"manifest 4", b"manifest 3")))


def test_the_rescue_carries_what_extraction_needs() -> None:
    from resurgo.rescue.contents import keep_dynload

    # xz and gzip by the standard library's modules, zstd by the program the archives need.
    assert keep_dynload("_lzma.cpython-311-x86_64-linux-gnu.so")
    assert keep_dynload("zlib.cpython-311-x86_64-linux-gnu.so")
