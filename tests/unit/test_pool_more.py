"""The pool's other pieces: which files a package may give back, the package files that
differ from their packages, pruning the pool, and a root's package files checked."""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from resurgo.media import open_medium
from resurgo.media.setindex import SetMeta
from resurgo.pool import changes, lists
from resurgo.pool.check import check_tree
from resurgo.pool.obtain import candidates
from resurgo.pool.prune import prune_pool
from resurgo.pool.store import PackagePool, file_name, twin_name
from resurgo.probe import catalog
from tests.unit.test_catalog import fake_tree

needs_zstd = pytest.mark.skipif(__import__("shutil").which("zstd") is None,
                                reason="needs zstd")


def test_candidates_know_each_files_path_in_its_package(tmp_path: Path) -> None:
    fake_tree(tmp_path)
    _, entries = catalog.collect(tmp_path)  # type: ignore[misc]
    found = candidates(tmp_path, entries)
    # Moved by the merged /usr symlink, and by a diversion: the package has the old path.
    assert found["/usr/bin/beta"].member == "bin/beta"
    assert found["/usr/bin/tool.distrib"].member == "usr/bin/tool"
    assert found["/usr/bin/tool.distrib"].key[0] == "beta"
    assert found["/usr/bin/tool"].member == "usr/bin/tool"
    assert found["/usr/bin/tool"].key[0] == "alpha"
    assert "/usr/share/alpha/data" not in found  # changed since installed
    assert all(c.sha256 == hashlib.sha256((tmp_path / c.path[1:]).read_bytes()).hexdigest()
               for c in found.values())


def test_the_package_files_that_differ_are_listed_and_round_trip(tmp_path: Path) -> None:
    fake_tree(tmp_path)
    _, entries = catalog.collect(tmp_path)  # type: ignore[misc]
    found = changes.find(tmp_path, entries)
    rows = {(c.path, c.package, c.why) for c in found.listed}
    assert ("/usr/share/alpha/data", "alpha", "changed") in rows
    assert ("/usr/bin/alpha-link", "alpha", "changed") in rows  # a symlink now
    assert ("/usr/share/beta/gone", "beta", "missing") in rows
    assert not any(c.path == "/etc/alpha.conf" for c in found.listed)  # a conffile
    assert found.total == len(found.listed) == 3
    assert changes.decode(changes.encode(found)) == found
    for bad in (b"", b"#resurgo-package-changes 2\n#end 0\n",
                changes.encode(found).replace(b"#end 3", b"#end 1")):
        with pytest.raises(ValueError):
            changes.decode(bad)


def test_a_roots_package_files_are_checked_against_the_catalog(tmp_path: Path) -> None:
    fake_tree(tmp_path)
    _, entries = catalog.collect(tmp_path)  # type: ignore[misc]
    files, mismatches = check_tree(tmp_path, entries)
    assert files == len(entries) and mismatches == []
    with open(tmp_path / "usr/bin/beta", "ab") as f:
        f.write(b"trojan")
    os.chmod(tmp_path / "usr/bin/alpha", 0o777)
    os.unlink(tmp_path / "usr/share/doc/beta/copyright")
    os.unlink(tmp_path / "usr/bin/tool")
    os.symlink("/etc/passwd", tmp_path / "usr/bin/tool")
    _, mismatches = check_tree(tmp_path, entries)
    assert sorted((m.path, m.what) for m in mismatches) == [
        ("/usr/bin/alpha", "mode"), ("/usr/bin/beta", "content"), ("/usr/bin/tool", "kind"),
        ("/usr/share/doc/beta/copyright", "missing")]


def _set_needing(medium_path: Path, refs: list[lists.PackageRef]) -> str:
    medium = open_medium(str(medium_path))
    with medium.begin_set(SetMeta(), created=datetime.now(UTC)) as w:
        w.write_bytes(lists.PACKAGES_NAME, lists.encode_packages(refs))
        return w.commit().id


def test_prune_keeps_every_package_a_set_needs_and_removes_the_rest(tmp_path: Path) -> None:
    where = tmp_path / "medium"
    medium = open_medium(str(where))
    pool = PackagePool(medium)
    refs = [lists.PackageRef(hashlib.sha256(bytes([n])).hexdigest(), 1, f"p{n}", "1.0",
                             "amd64") for n in range(3)]
    for n, ref in enumerate(refs):
        pool.add(ref, [bytes([n])])
    # twins: of a package a set reads by it, of one a set reads as it is, of one no set needs
    twinned = [r.with_twin(hashlib.sha256(b"t" + bytes([n])).hexdigest(), 2)
               for n, r in enumerate(refs)]
    for t in twinned:
        pool.add(t, [b"tt"])
    (where / "pool/.incoming-deadbeef").write_bytes(b"half")
    _set_needing(where, twinned[:1])
    _set_needing(where, refs[1:2])
    dry = prune_pool(medium, dry_run=True)
    # what no set reads goes: the package no set needs, and the twins of packages read as
    # they are; a package read by its twin stays with it
    gone = tuple(sorted((file_name(refs[2]), twin_name(twinned[1]), twin_name(twinned[2]))))
    assert dry is not None and dry.removed == gone and dry.kept == 3
    assert len(list((where / "pool").iterdir())) == 7
    done = prune_pool(medium)
    assert done is not None and done.removed == gone
    assert sorted(p.name for p in (where / "pool").iterdir()) == sorted(
        (file_name(refs[0]), twin_name(twinned[0]), file_name(refs[1])))
    # While a save holds a lease, the pool is left alone (it may need what is there).
    w = medium.begin_set(SetMeta())
    try:
        _set_needing(where, [])
        skipped = prune_pool(medium)
        assert skipped is not None and skipped.skipped and not skipped.removed
    finally:
        w.abort()
    assert len(list((where / "pool").iterdir())) == 3
