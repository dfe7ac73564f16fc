"""A package's twin: its tar streams recompressed with zstd, made and checked by the save,
read by the recovery instead of the package."""

from __future__ import annotations

import gzip
import hashlib
import io
import lzma
import os
import subprocess
from pathlib import Path

import pytest

from resurgo import digest as content_digest
from resurgo.engine.errors import ArchiveDamaged
from resurgo.errors import Damaged
from resurgo.pool import deb, lists, obtain, twins
from resurgo.pool.extract import extract
from resurgo.pool.needs import PoolNeeds, check
from resurgo.pool.store import PackagePool, package_name, twin_name
from tests.support.debs import Member, ar, compress, tar
from tests.support.debs import deb as make_deb
from tests.unit.test_pool_reach import KEY, README, TOOL, obtained_from_cache, pool_of

ROOTED = os.geteuid() == 0


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def ar_members(data: bytes) -> dict[str, bytes]:
    return {name: deb.read_exact(body, body.left)
            for name, body in deb.ar_members(io.BytesIO(data))}


def unpacked(name: str, data: bytes) -> bytes:
    if name.endswith(".xz"):
        return lzma.decompress(data)
    if name.endswith(".gz"):
        return gzip.decompress(data)
    if name.endswith(".zst"):
        return subprocess.run(["zstd", "-dc"], input=data, capture_output=True,
                              check=True).stdout
    return data


def twin_of(data: bytes, tmp_path: Path) -> bytes:
    out = tmp_path / "twin"
    with open(out, "wb") as f:
        twins.make(io.BytesIO(data), len(data), f)
    return out.read_bytes()


@pytest.mark.parametrize("compression", ["xz", "gz", "zst", "none"])
@pytest.mark.parametrize("big", [True, False])
def test_a_twin_holds_the_packages_tar_streams_byte_for_byte(
        tmp_path: Path, compression: str, big: bool) -> None:
    members = [Member("./usr/bin/tool", TOOL * 300, mode=0o755), Member("./etc/odd", b"x")]
    if big:  # beyond what stays uncompressed
        members.append(Member("./usr/lib/blob", os.urandom(twins.PLAIN_UP_TO)))
    original = make_deb(*KEY, members, compression=compression,
                        control_files=(Member("./postinst", b"#!/bin/sh\n", mode=0o755),))
    twin = twin_of(original, tmp_path)
    got, had = ar_members(twin), ar_members(original)
    data = "data.tar.zst" if big else "data.tar"
    assert list(got) == ["debian-binary", "control.tar", data]
    assert got["debian-binary"] == had["debian-binary"]
    for name in ("control.tar", data):
        old = next(n for n in had if n.startswith(name.removesuffix(".zst")))
        assert unpacked(name, got[name]) == unpacked(old, had[old])
    # dpkg itself reads it (1.21.18 and later read zstd members)
    tar_out = subprocess.run(["dpkg-deb", "--fsys-tarfile", tmp_path / "twin"],
                             capture_output=True, check=True).stdout
    assert tar_out == unpacked(data, got[data])
    info = subprocess.run(["dpkg-deb", "-f", tmp_path / "twin", "Package"],
                          capture_output=True, check=True, text=True).stdout
    assert info.strip() == KEY[0]


def test_what_is_not_a_package_or_unpacks_too_far_makes_no_twin(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    control = compress(tar([Member("./control", b"Package: x\n")]), "xz")
    for bad in (ar([("control.tar.xz", control)]),  # no debian-binary first
                ar([("debian-binary", b"2.0\n"), ("data.tar.xz", control),
                    ("control.tar.xz", control)]),  # data before control
                ar([("debian-binary", b"2.0\n"), ("control.tar.xz", control)]),  # no data
                ar([("debian-binary", b"2.0\n"), ("control.tar.xz", control),
                    ("data.tar.xz", control), ("extra", b"")]),
                b"not a package"):
        with pytest.raises(twins.TwinError):
            twin_of(bad, tmp_path)
    # a member that unpacks to more than any package's does is not unpacked further
    bomb = make_deb(*KEY, [Member("./usr/share/zeros", bytes(8 << 20))])
    monkeypatch.setattr(twins, "MAX_RATIO", 2)
    monkeypatch.setattr(twins, "MAX_EXTRA", 1 << 20)
    with pytest.raises(twins.TwinError, match="unpacks to more"):
        twin_of(bomb, tmp_path)


def _obtained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
              ) -> tuple[dict[str, obtain.Candidate], obtain.Obtained, bytes]:
    cands, got, data = obtained_from_cache(tmp_path, monkeypatch)
    assert got.added and not got.missing, got.notes
    return cands, got, data


def _twinned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
             ) -> tuple[dict[str, obtain.Candidate], obtain.Obtained, bytes, PackagePool,
                        twins.Twins, lists.PackageRef]:
    """The tool's package obtained and its twin made."""
    cands, got, data = _obtained(tmp_path, monkeypatch)
    pool = pool_of(tmp_path)
    made = twins.ensure(pool, got, obtain.by_key(cands))
    return cands, got, data, pool, made, got.packages[KEY][0]


def test_the_save_makes_a_twin_once_checks_it_and_remakes_a_planted_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cands, got, data, pool, made, ref = _twinned(tmp_path, monkeypatch)
    twin_sha, twin_size = made.of[ref.sha256]
    assert made.added == [(twin_sha, twin_size)] and not made.notes
    path = tmp_path / "medium/pool" / twin_name(ref.with_twin(twin_sha, twin_size))
    assert sha(path.read_bytes()) == twin_sha and path.stat().st_size == twin_size
    assert (tmp_path / "medium/pool" / package_name(ref)).read_bytes() == data

    # the next save (another host's) finds it, reads it whole, and adds nothing
    again = twins.ensure(pool, got, obtain.by_key(cands))
    assert again.of == made.of and again.added == []

    # a twin planted under that name (a readme the system does not have) is not what the
    # name says: the save makes the package's own again, in its place
    def planted(postinst: bytes) -> bytes:
        return twin_of(make_deb(
            *KEY, [Member("./usr/bin/tool", TOOL, mode=0o755),
                   Member("./usr/share/doc/tool/README", b"planted\n")],
            md5sums={"usr/bin/tool": hashlib.md5(TOOL).hexdigest(),
                     "usr/share/doc/tool/README": hashlib.md5(README).hexdigest()},
            control_files=(Member("./postinst", postinst, mode=0o755),)), tmp_path)

    path.write_bytes(planted(b"#!/bin/sh\nexit 0\n"))
    remade = twins.ensure(pool, got, obtain.by_key(cands))
    assert remade.of == made.of and remade.added == [(twin_sha, twin_size)]
    assert sha(path.read_bytes()) == twin_sha

    # one under its own name, with the package's control (the other host's twin, from
    # another zstd, or a planted one): kept, never replaced, and the set takes from it
    # only what it gives as the system has it
    path.unlink()
    other = planted(b"#!/bin/sh\nexit 0\n")
    other_ref = ref.with_twin(sha(other), len(other))
    (tmp_path / "medium/pool" / twin_name(other_ref)).write_bytes(other)
    kept = twins.ensure(pool, got, obtain.by_key(cands))
    assert kept.added == [] and kept.of[ref.sha256] == (sha(other), len(other))
    assert kept.gives[ref.sha256] == {"usr/bin/tool"}
    assert made.gives[ref.sha256] == {"usr/bin/tool", "usr/share/doc/tool/README"}

    # one whose control is not the package's is no twin of it: left (a prune removes
    # it), and the save makes its own beside it
    bad = planted(b"#!/bin/sh\nrm -rf /\n")
    (tmp_path / "medium/pool" / twin_name(other_ref)).write_bytes(bad)
    os.rename(tmp_path / "medium/pool" / twin_name(other_ref),
              tmp_path / "medium/pool" / twin_name(ref.with_twin(sha(bad), len(bad))))
    again = twins.ensure(pool, got, obtain.by_key(cands))
    assert again.of == made.of and again.added == [(twin_sha, twin_size)]
    assert sha(path.read_bytes()) == twin_sha
    assert (tmp_path / "medium/pool" / twin_name(ref.with_twin(sha(bad), len(bad)))).exists()


def test_a_package_whose_twin_cannot_be_made_is_read_as_it_is(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cands, got, _ = _obtained(tmp_path, monkeypatch)
    monkeypatch.setattr(twins, "MAX_RATIO", 0)
    monkeypatch.setattr(twins, "MAX_EXTRA", 10)
    made = twins.ensure(pool_of(tmp_path), got, obtain.by_key(cands))
    assert made.of == {} and made.added == []
    assert len(made.notes) == 1 and "recovery reads the package" in made.notes[0]
    assert not list((tmp_path / "medium/pool").glob("*.zst.deb"))


def test_a_full_spool_makes_no_twin_and_the_save_goes_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cands, got, _ = _obtained(tmp_path, monkeypatch)

    def full(*_: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(twins, "make", full)
    made = twins.ensure(pool_of(tmp_path), got, obtain.by_key(cands))
    assert made.of == {} and "No space left on device" in made.notes[0]


def test_a_package_changed_in_the_pool_after_its_check_makes_no_twin(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cands, got, _ = _obtained(tmp_path, monkeypatch)
    ref = got.packages[KEY][0]
    swapped = make_deb(*KEY, [Member("./usr/bin/tool", TOOL, mode=0o755)])
    (tmp_path / "medium/pool" / package_name(ref)).write_bytes(swapped)
    made = twins.ensure(pool_of(tmp_path), got, obtain.by_key(cands))
    assert made.of == {} and "changed in the pool" in made.notes[0]


@pytest.mark.skipif(not ROOTED, reason="restoring owners needs root")
def test_the_recovery_checks_and_reads_the_twin_not_the_package(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, _, data, pool, made, ref = _twinned(tmp_path, monkeypatch)
    with_twin = ref.with_twin(*made.of[ref.sha256])
    needs = PoolNeeds(pool, {ref.sha256: with_twin})
    check(needs, read=True)
    # the package itself is not what the recovery reads: gone, nothing is missed
    (tmp_path / "medium/pool" / package_name(ref)).unlink()
    check(needs, read=True)
    target = tmp_path / "target"
    target.mkdir()
    f = lists.PooledFile(b"usr/bin/tool", 0o100755, 0, 0, len(TOOL), 1_700_000_000 * 10**9,
                         content_digest.of(TOOL).hex(), sha(TOOL), ref.sha256, b"usr/bin/tool")
    done = extract(target, [f], needs)
    assert done.files == 1 and (target / "usr/bin/tool").read_bytes() == TOOL
    # a copy of the package (apt's cache) is never made from a twin
    whole = lists.PooledFile(b"var/cache/apt/archives/tool_1.0_amd64.deb", 0o100644, 0, 0,
                             len(data), 1, content_digest.of(data).hex(), sha(data),
                             ref.sha256, lists.WHOLE_MEMBER, (), lists.WHOLE)
    with pytest.raises(ArchiveDamaged, match="by its twin"):
        extract(target, [whole], needs)
    # a damaged twin is named before anything is written
    path = tmp_path / "medium/pool" / twin_name(with_twin)
    damaged = bytearray(path.read_bytes())
    damaged[-20] ^= 1
    path.write_bytes(bytes(damaged))
    with pytest.raises(Damaged, match=r"tool 1.0 .amd64. is damaged.*zst\.deb"):
        check(needs, read=True)
