"""What a package gives back beside the files it installs: dpkg's copies of its control
files (var/lib/dpkg/info) and the package file itself (a copy in apt's cache), from the
reader through the set's list to extraction, hostile and damaged cases included."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest

from resurgo import digest as content_digest
from resurgo.engine.errors import ArchiveDamaged
from resurgo.pool import deb, lists
from resurgo.pool.extract import extract
from resurgo.pool.needs import PoolNeeds
from resurgo.pool.obtain import Obtained, cache_candidates, check_package, control_candidates
from tests.support.debs import Member
from tests.support.debs import deb as make_deb
from tests.unit.test_catalog import fake_tree
from tests.unit.test_pool import pool_with

ROOTED = os.geteuid() == 0
POSTINST = b"#!/bin/sh\nset -e\nldconfig\n"
TEMPLATES = b"Template: tool/question\nType: boolean\n"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tool_deb(version: str = "1.0") -> bytes:
    return make_deb("tool", version, "amd64", [Member("./usr/bin/tool", b"tool" * 300)],
                    control_files=(Member("./postinst", POSTINST, mode=0o755),
                                   Member("./templates", TEMPLATES)))


def test_the_control_archives_files_are_read_and_handed_on_after_the_control() -> None:
    order: list[str] = []
    seen: dict[str, bytes] = {}

    def on_control(c: deb.Control) -> None:
        order.append("control")
        assert c.files["postinst"] == sha(POSTINST) and c.files["templates"] == sha(TEMPLATES)
        assert set(c.files) == {"control", "md5sums", "postinst", "templates"}

    def on_control_file(m: deb.Member):  # type: ignore[no-untyped-def]
        order.append(m.path)
        return lambda body: seen.setdefault(m.path, deb.read_exact(body, m.size))

    deb.read_deb(io.BytesIO(tool_deb()), None, on_control, on_control_file)
    assert order[0] == "control" and seen["postinst"] == POSTINST
    assert seen["templates"] == TEMPLATES
    checked = check_package(io.BytesIO(tool_deb()), ("tool", "1.0", "amd64"), {}, data=False)
    assert checked.control["postinst"] == sha(POSTINST)


def test_lists_of_version_2_say_where_a_file_is_and_version_1_is_still_read() -> None:
    package = "e" * 64
    files = [
        lists.PooledFile(b"usr/bin/tool", 0o100755, 0, 0, 4, 1, "1" * 64, "2" * 64, package,
                         b"usr/bin/tool"),
        lists.PooledFile(b"var/cache/apt/archives/tool_1.0_amd64.deb", 0o100644, 0, 0, 9, 1,
                         "1" * 64, package, package, lists.WHOLE_MEMBER, (), lists.WHOLE),
        lists.PooledFile(b"var/lib/dpkg/info/tool.postinst", 0o100755, 0, 0, 5, 1, "1" * 64,
                         "3" * 64, package, b"postinst", (), lists.CONTROL),
    ]
    out: list[bytes] = []
    w = lists.PooledWriter(out.append)
    for f in files:
        w.add(f)
    w.finish()
    text = b"".join(out)
    assert text.startswith(b"#resurgo-pooled 2\n")
    assert list(lists.read_pooled(io.BytesIO(text))) == files
    old = (b"#resurgo-pooled 1\n" + lists.encode_pooled(files[0]).rsplit("\t", 1)[0].encode()
           + b"\n#end 1\n")
    assert list(lists.read_pooled(io.BytesIO(old))) == files[:1]
    line = lists.encode_pooled(files[2])
    for bad in (line.replace("\tcontrol\n", "\telsewhere\n"),  # no such place
                line.replace("\tpostinst\t", "\tDEBIAN/postinst\t"),  # not at the top
                lists.encode_pooled(files[1]).replace("\t-\t", "\tusr/bin/tool\t"),
                # the package whole has the package's sha256, nothing else
                lists.encode_pooled(files[1]).replace(f"\t{package}\t{package}",
                                                      f"\t{'2' * 64}\t{package}"),
                line.rstrip("\n").rsplit("\t", 1)[0] + "\n"):  # 11 fields in version 2
        with pytest.raises(lists.ListError):
            list(lists.read_pooled([b"#resurgo-pooled 2\n", bad.encode(), b"#end 1\n"]))


def test_dpkgs_copies_of_control_files_and_cached_packages_are_candidates(
    tmp_path: Path
) -> None:
    fake_tree(tmp_path)
    info = tmp_path / "var/lib/dpkg/info"
    (info / "alpha:amd64.postinst").write_bytes(POSTINST)  # Multi-Arch: same, qualified
    (info / "beta.prerm").write_bytes(b"#!/bin/sh\n")
    (info / "gamma.postrm").write_bytes(b"#!/bin/sh\n")  # not installed any more
    ref_a = lists.PackageRef("a" * 64, 10, "alpha", "1.0-1", "amd64")
    ref_b = lists.PackageRef("b" * 64, 10, "beta", "2:3.4-5", "all")
    got = Obtained()
    got.packages = {("alpha", "1.0-1", "amd64"): (ref_a, frozenset()),
                    ("beta", "2:3.4-5", "all"): (ref_b, frozenset())}
    got.controls = {("alpha", "1.0-1", "amd64"): {"postinst": sha(POSTINST), "control": "c"},
                    ("beta", "2:3.4-5", "all"): {"prerm": "f" * 64, "postinst": "0" * 64}}
    found = control_candidates(tmp_path, got)
    assert sorted(found) == ["/var/lib/dpkg/info/alpha:amd64.postinst",
                             "/var/lib/dpkg/info/beta.prerm"]
    alpha = found["/var/lib/dpkg/info/alpha:amd64.postinst"]
    assert (alpha.member, alpha.sha256, alpha.source) == ("postinst", sha(POSTINST),
                                                          lists.CONTROL)
    cached = cache_candidates(got)
    beta = cached["/var/cache/apt/archives/beta_2%3a3.4-5_all.deb"]
    assert (beta.sha256, beta.source, beta.member) == ("b" * 64, lists.WHOLE, "-")


def _pooled(path: bytes, content: bytes, ref: lists.PackageRef, member: bytes,
            source: str, mode: int = 0o100644) -> lists.PooledFile:
    return lists.PooledFile(path, mode, 0, 0, len(content), 1_234_567_890_123,
                            content_digest.of(content).hex(), sha(content), ref.sha256,
                            member, (), source)


@pytest.mark.skipif(not ROOTED, reason="restoring owners needs root")
def test_control_files_and_a_whole_package_are_extracted_with_their_metadata(
    tmp_path: Path
) -> None:
    data = tool_deb()
    pool, refs = pool_with(tmp_path, [("tool", data)])
    (ref,) = refs.values()
    target = tmp_path / "target"
    target.mkdir()
    files = [
        _pooled(b"var/cache/apt/archives/tool_1.0_amd64.deb", data, ref, lists.WHOLE_MEMBER,
                lists.WHOLE),
        _pooled(b"var/lib/dpkg/info/tool.postinst", POSTINST, ref, b"postinst",
                lists.CONTROL, 0o100755),
        _pooled(b"var/lib/dpkg/info/tool.templates", TEMPLATES, ref, b"templates",
                lists.CONTROL),
    ]
    done = extract(target, files, PoolNeeds(pool, refs))
    assert done.files == 3
    assert (target / "var/cache/apt/archives/tool_1.0_amd64.deb").read_bytes() == data
    assert (target / "var/lib/dpkg/info/tool.postinst").read_bytes() == POSTINST
    assert (target / "var/lib/dpkg/info/tool.templates").read_bytes() == TEMPLATES
    st = os.stat(target / "var/lib/dpkg/info/tool.postinst")
    assert (st.st_mode, st.st_mtime_ns) == (0o100755, 1_234_567_890_123)

    # A control file the package lacks (a data member of that name does not count), and a
    # control file whose content is not the one saved: refused, nothing of it left.
    again = tmp_path / "again"
    again.mkdir()
    lacking = _pooled(b"info/tool.prerm", b"", ref, b"prerm", lists.CONTROL)
    with pytest.raises(ArchiveDamaged, match="lacks 1 file"):
        extract(again, [lacking], PoolNeeds(pool, refs))
    wrong = _pooled(b"info/tool.postinst", POSTINST.replace(b"ldconfig", b"rm -rf /"),
                    ref, b"postinst", lists.CONTROL)
    with pytest.raises(ArchiveDamaged, match="digest differs"):
        extract(again, [wrong], PoolNeeds(pool, refs))
    assert not (again / "info/tool.postinst").exists()


@pytest.mark.skipif(not ROOTED, reason="restoring owners needs root")
def test_a_whole_package_copy_of_a_damaged_package_is_removed_and_refused(
    tmp_path: Path
) -> None:
    data = tool_deb()
    pool, refs = pool_with(tmp_path, [("tool", data)])
    (ref,) = refs.values()
    stored = next((tmp_path / "medium/pool").iterdir())
    damaged = bytearray(data)
    damaged[-10] ^= 1  # past every member the reader checks: only the sha256 tells
    stored.write_bytes(bytes(damaged))
    target = tmp_path / "target"
    target.mkdir()
    copy = _pooled(b"cache/tool.deb", data, ref, lists.WHOLE_MEMBER, lists.WHOLE)
    with pytest.raises(ArchiveDamaged, match=r"tool 1\.0"):
        extract(target, [copy], PoolNeeds(pool, refs))
    assert not (target / "cache/tool.deb").exists()


@pytest.mark.skipif(not ROOTED, reason="restoring owners needs root")
@pytest.mark.parametrize("at", [-10, -200])
def test_a_copy_of_a_damaged_package_is_removed_from_its_own_directory_after_other_files(
    tmp_path: Path, at: int
) -> None:
    """The copy stays open while the package's files are made in other directories: the
    damage found afterwards (at the end, or in the data member) removes it where it is."""
    data = tool_deb()
    pool, refs = pool_with(tmp_path, [("tool", data)])
    (ref,) = refs.values()
    stored = next((tmp_path / "medium/pool").iterdir())
    damaged = bytearray(data)
    damaged[at] ^= 1
    stored.write_bytes(bytes(damaged))
    target = tmp_path / "target"
    target.mkdir()
    files = [_pooled(b"var/cache/apt/archives/tool.deb", data, ref, lists.WHOLE_MEMBER,
                     lists.WHOLE),
             _pooled(b"usr/bin/tool", b"tool" * 300, ref, b"usr/bin/tool", lists.DATA)]
    with pytest.raises(ArchiveDamaged, match=r"tool 1\.0"):
        extract(target, files, PoolNeeds(pool, refs), processes=False)
    assert not (target / "var/cache/apt/archives/tool.deb").exists()
    assert sorted(p.name for p in (target / "var/cache/apt/archives").iterdir()) == []
