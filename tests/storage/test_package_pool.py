"""Package-aware sets on real loop disks: a debootstrapped Debian saved with --packages pool.

The tree (the vm tier's cached debootstrap: tests/vm/guest.debian_tree) is copied onto an
ext4 loop disk and made a machine's own: a few package files changed (content), others
given another owner, mode or mtime, local xattrs and an ACL on one, and files no package
owns. Its package cache is empty (as after any debootstrap), so the save obtains the
packages as a real one does: apt-get download, with the tree's sources, from its mirror.

Then: recovered onto another disk and compared with the independent walker (content and
metadata of every entry); that recovered copy, under another host name and with a copy of a
package in apt's cache, saved to the same medium adds no package to the pool, and its set
recovered onto a third disk is that copy, entry for entry; a package damaged in the pool is
named and refused before any disk is touched. Both sets take dpkg's copies of the packages'
control files (var/lib/dpkg/info) from the pool too, the second the cached package.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from resurgo.demo import umount_below
from resurgo.errors import ExitCode
from resurgo.pool import lists
from resurgo.pool.obtain import CACHE, deb_name
from resurgo.pool.store import POOL_DIR, TWIN_SUFFIX, package_name, parse_name, twin_name
from tests.support import cli
from tests.support.consts import MIB, ROOT_X86_64
from tests.support.loopdisks import Loop, Rig, require_loop_support
from tests.support.trees import assert_same_trees, snapshot, system_snapshot, write

pytestmark = pytest.mark.storage

SIZE = 1600 * MIB
Snapshot = dict[bytes, dict[str, Any]]


def _table() -> str:
    return ("label: gpt\n"
            f"label-id: {str(uuid.uuid4()).upper()}\n"
            f"1 : start=2048, size={(SIZE // MIB - 2) * 2048}, type={ROOT_X86_64}, "
            'name="root"\n')


def _make_it_its_own(root: Path) -> list[str]:
    """What an administrator did to the installed system; the paths changed by content."""
    write(root / "etc/hostname", b"pool-one\n")
    changed = ["usr/share/doc/hostname/copyright", "usr/lib/os-release"]
    for rel in changed:
        with open(root / rel, "ab") as f:
            f.write(b"# changed here\n")
    os.chown(root / "usr/share/doc/bash/RBASH", 1000, 1000)
    os.chmod(root / "usr/share/doc/bash/RBASH", 0o600)
    os.utime(root / "usr/share/doc/bash/copyright", ns=(1, 1_000_000_007))
    tagged = root / "usr/share/doc/dpkg/copyright"
    os.setxattr(tagged, "user.origin", b"local")
    subprocess.run(["setfacl", "-m", "u:1000:r", str(tagged)], check=True)
    write(root / "srv/data/report.txt", os.urandom(20000), mode=0o640, owner=(1000, 1000))
    write(root / "etc/local.conf", b"setting = 1\n")
    write(root / "usr/local/bin/tool", b"#!/bin/sh\necho local\n", mode=0o755)
    return changed


@dataclass
class Saved:
    work: Path
    medium: Path
    state: Path
    set_id: str
    expected: Snapshot
    report: dict[str, Any]
    changed: list[str]


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Saved]:
    require_loop_support()
    for tool in ("zstd", "setfacl", "apt-get"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool}")
    from tests.vm import guest

    tree = guest.debian_tree()
    work = tmp_path_factory.mktemp("pool")
    rig = Rig(work)
    try:
        disk = rig.disk("source", SIZE, table=_table())
        rig.sh("mkfs.ext4", "-q", "-L", "root", disk.part(1))
        root = rig.mount(disk.part(1), work / "system")
        subprocess.run(["cp", "-a", f"{tree}/.", str(root)], check=True)
        assert not list((root / "var/cache/apt/archives").glob("*.deb"))
        changed = _make_it_its_own(root)
        expected = system_snapshot(root, work / "view")
        medium = work / "medium"
        state = work / "state"
        r = cli.spawn("save", "--to", medium, "--root", root, "--no-rescue", "--packages",
                      "pool", "--json", state=state, timeout=1200)
        assert r.returncode == 0, r.output
        report = r.json()
        umount_below(root)
    finally:
        rig.cleanup()
    yield Saved(work, medium, state, report["set"]["id"], expected, report, changed)


def _untouched(disk: Loop) -> bool:
    """Nothing was ever written to the (sparse, blank) disk image: it has no data at all."""
    fd = os.open(disk.image, os.O_RDONLY)
    try:
        os.lseek(fd, 0, os.SEEK_DATA)
    except OSError:
        return True  # ENXIO: holes only
    finally:
        os.close(fd)
    return False


def _pool(medium: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in (medium / POOL_DIR).iterdir()}


def _packages(medium: Path, set_id: str) -> dict[str, lists.PackageRef]:
    refs = lists.decode_packages((medium / set_id / lists.PACKAGES_NAME).read_bytes())
    return {r.name: r for r in refs}


def _taken_from(medium: Path, set_id: str) -> dict[str, set[bytes]]:
    """The paths a set's pooled list takes from the packages, by where in them."""
    (pooled,) = (medium / set_id / "archives").glob("*.pooled")
    text = subprocess.run(["zstd", "-dc", str(pooled)], capture_output=True,
                          check=True).stdout
    out: dict[str, set[bytes]] = {}
    for f in lists.read_pooled(io.BytesIO(text)):
        out.setdefault(f.source, set()).add(f.path)
    return out


def test_saved_with_the_pool_recovered_onto_another_disk_is_the_same_system(
    saved: Saved, rig: Rig, mnt: Path, tmp_path: Path
) -> None:
    p = saved.report["packages"]
    (unit,) = saved.report["units"]
    # Most files come from packages; the changed ones and the machine's own are archived.
    assert p["files"] == unit["pooled"] > 5000, p
    assert p["packages"] > 100 and p["added"] == p["packages"], p
    assert p["missing"] == 0, p
    # beside each package its twin, which the set reads instead (zstd, not xz)
    assert p["twins_added"] == p["packages"], p
    assert len(_pool(saved.medium)) == 2 * p["packages"]
    refs = _packages(saved.medium, saved.set_id)
    assert len(refs) == p["packages"] and all(r.twin_sha256 for r in refs.values())
    assert (saved.medium / POOL_DIR / twin_name(refs["bash"])).stat().st_size == refs[
        "bash"].twin_size
    # The check against the package database: the files changed since installed.
    changes = {(c["path"], c["why"]) for c in saved.report["package_changes"]["listed"]}
    assert {("/" + rel, "changed") for rel in saved.changed} <= changes, changes
    assert unit["data_bytes"] < p["file_bytes"] // 4, (unit, p)
    manifest = (saved.medium / saved.set_id / "archives").glob("*.manifest")
    assert next(manifest).stat().st_size > 0

    target = rig.disk("target", SIZE * 5 // 4)
    r = cli.spawn("recover", "--from", saved.medium, "--target", target.path, "--yes",
                  "--root", mnt, "--no-finalize", "--json", state=saved.state, timeout=1200)
    assert r.returncode == 0, r.output
    out = r.json()
    assert out["verify"]["ok"] is True, out["verify"]
    assert_same_trees(saved.expected, system_snapshot(mnt, tmp_path / "view"))

    r = cli.spawn("verify", "--from", saved.medium, "--packages", mnt, state=saved.state)
    assert r.returncode == 0, r.output

    # verify compares the package files too: one changed after the recovery is found.
    victim = mnt / "usr/share/doc/bash/copyright"
    with open(victim, "ab") as f:
        f.write(b"x")
    r = cli.spawn("verify", "--from", saved.medium, "--root", mnt, "--json",
                  state=saved.state)
    assert r.returncode == 1, r.output
    found = {(m["path"], m["what"]) for t in r.json()["trees"] for m in t["mismatches"]}
    assert ("usr/share/doc/bash/copyright", "content") in found, found
    r = cli.spawn("verify", "--from", saved.medium, "--packages", mnt, "--json",
                  state=saved.state)
    assert r.returncode == 1, r.output
    assert [(m["path"], m["what"]) for m in r.json()["mismatches"]] == [
        ("/usr/share/doc/bash/copyright", "content")]

    # The recovered copy, under another host name, with a package in apt's cache: its save
    # adds nothing to the pool, and takes the cached package from it too.
    with open(victim, "rb+") as f:
        f.truncate(victim.stat().st_size - 1)
    os.utime(victim, ns=(1, 1_000_000_007))
    write(mnt / "etc/hostname", b"pool-two\n")
    bash = saved.medium / POOL_DIR / package_name(_packages(saved.medium, saved.set_id)["bash"])
    cached = mnt / "var/cache/apt/archives" / bash.name.split("_", 1)[1]
    write(cached, bash.read_bytes(), mode=0o644)
    os.utime(cached, ns=(1_700_000_000_123_456_789, 1_700_000_000_123_456_789))
    expected = system_snapshot(mnt, tmp_path / "view2")
    before = _pool(saved.medium)
    r = cli.spawn("save", "--to", saved.medium, "--root", mnt, "--no-rescue", "--packages",
                  "pool", "--json", state=tmp_path / "state2", timeout=1200)
    assert r.returncode == 0, r.output
    second = r.json()
    assert second["set"]["host"] == "pool-two"
    assert second["packages"]["added"] == second["packages"]["twins_added"] == 0, second[
        "packages"]
    assert second["packages"]["files"] == p["files"] + 1, (second["packages"], p)
    assert _pool(saved.medium) == before, second["packages"]["notes"]
    taken = _taken_from(saved.medium, second["set"]["id"])
    assert taken[lists.WHOLE] == {os.fsencode(cached.relative_to(mnt))}
    assert b"var/lib/dpkg/info/bash.postinst" in taken[lists.CONTROL]
    assert taken[lists.CONTROL] == _taken_from(saved.medium, saved.set_id)[lists.CONTROL]
    # the package whose copy the set takes is read as it is; the others by their twins
    refs = _packages(saved.medium, second["set"]["id"])
    assert not refs["bash"].twin_sha256
    assert all(r.twin_sha256 for n, r in refs.items() if n != "bash")

    # That set recovered onto a third disk is the copy it was saved from, entry for entry.
    umount_below(mnt)
    again = tmp_path / "again"
    third = rig.disk("third", SIZE * 5 // 4)
    try:
        r = cli.spawn("recover", "--from", saved.medium, "--set", second["set"]["id"],
                      "--target", third.path, "--yes", "--root", again, "--no-finalize",
                      "--json", state=tmp_path / "state2", timeout=1200)
        assert r.returncode == 0, r.output
        assert r.json()["verify"]["ok"] is True, r.json()["verify"]
        assert_same_trees(expected, system_snapshot(again, tmp_path / "view3"))
    finally:
        umount_below(again)


def test_a_damaged_package_in_the_pool_is_named_and_refused_before_any_disk_is_touched(
    saved: Saved, rig: Rig, mnt: Path, tmp_path: Path
) -> None:
    medium = tmp_path / "medium"
    subprocess.run(["cp", "-al", str(saved.medium), str(medium)], check=True)
    # what the recovery reads of bash: its twin
    victim = medium / POOL_DIR / twin_name(_packages(medium, saved.set_id)["bash"])
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.unlink()  # a new file: the original medium's link keeps its bytes
    victim.write_bytes(bytes(data))
    target: Loop = rig.disk("untouched", SIZE * 5 // 4)
    r = cli.spawn("recover", "--from", medium, "--set", saved.set_id, "--target",
                  target.path, "--yes", "--root", mnt, "--no-finalize", state=saved.state)
    assert r.returncode == ExitCode.DAMAGED, r.output
    assert "bash" in r.stderr and "damaged" in r.stderr, r.stderr
    assert not os.path.ismount(mnt)
    assert _untouched(target)

    victim.unlink()
    r = cli.spawn("recover", "--from", medium, "--set", saved.set_id, "--target",
                  target.path, "--yes", "--root", mnt, "--no-finalize", state=saved.state)
    assert r.returncode == ExitCode.DAMAGED, r.output
    assert "missing" in r.stderr and "bash" in r.stderr, r.stderr

    # ls reads no package; restore --path needs those of the files it restores alone.
    r = cli.spawn("ls", "--from", medium, "--set", saved.set_id, "--json", "/usr/bin/bash",
                  state=saved.state)
    assert r.returncode == 0, r.output
    assert r.json()["entries"][0]["package"]["name"] == "bash"
    to = tmp_path / "to"
    to.mkdir()
    r = cli.spawn("restore", "--from", medium, "--set", saved.set_id, "--path",
                  "/usr/bin/bash", "--to", to, state=saved.state)
    assert r.returncode == ExitCode.DAMAGED, r.output
    assert "missing" in r.stderr and "bash" in r.stderr, r.stderr
    assert list(to.iterdir()) == []
    r = cli.spawn("restore", "--from", medium, "--set", saved.set_id, "--path",
                  "/etc/hostname", "--path", "/usr/bin/dpkg", "--to", to, state=saved.state)
    assert r.returncode == 0, r.output
    assert (to / "etc/hostname").read_bytes() == b"pool-one\n"


# Packages the S3 test's system has no cached copy of: downloaded, and read by their twins.
UNCACHED = ("libc6", "coreutils", "perl-base")


def _under(snap: Snapshot, prefix: bytes) -> Snapshot:
    return {(p[len(prefix) + 1:] or b"."): d for p, d in snap.items()
            if p == prefix or p.startswith(prefix + b"/")}


def test_the_pool_on_s3_takes_cached_packages_the_lists_vouch_for_and_serves_a_recovery(
    saved: Saved, rig: Rig, mnt: Path, tmp_path: Path
) -> None:
    """The same system saved to S3 with its package cache full (the directory pool's
    packages under apt's names), one of them changed (a member added: a package that
    still reads well and gives every file): that one is refused against the package
    lists' SHA256 and downloaded instead, the others go to the pool from the cache. The
    set checks whole with its pool; ls shows pooled files with their package, and
    restore --path writes them from the pool, identical to the system's."""
    from tests.support.media_servers import Seaweed

    (tmp_path / "seaweed").mkdir()
    seaweed = Seaweed(tmp_path / "seaweed")
    try:
        seaweed.create_bucket("pool")
        disk = rig.disk("s3-source", SIZE, table=_table())
        rig.sh("mkfs.ext4", "-q", "-L", "root", disk.part(1))
        root = rig.mount(disk.part(1), tmp_path / "system")
        from tests.vm import guest
        subprocess.run(["cp", "-a", f"{guest.debian_tree()}/.", str(root)], check=True)
        _make_it_its_own(root)
        archives = root / CACHE
        for f in (saved.medium / POOL_DIR).iterdir():
            ref = parse_name(f.name, f.stat().st_size)
            if f.name.endswith(TWIN_SUFFIX) or ref is None or ref.name in UNCACHED:
                continue
            shutil.copyfile(f, archives / deb_name((ref.name, ref.version, ref.architecture)))
        (victim,) = archives.glob("bash_*.deb")
        with open(victim, "ab") as out:  # one more ar member: readers skip it
            out.write(f"{'zz-extra/':<16}{0:<12}{0:<6}{0:<6}{100644:<8}{4:<10}`\n".encode()
                      + b"evil")
        expected = system_snapshot(root, tmp_path / "view")
        url = "s3://pool/fleet"
        s3 = ("--s3-endpoint", seaweed.endpoint, "--s3-insecure-http")
        env = {**seaweed.environ(), "HOME": str(tmp_path)}
        state = tmp_path / "state"
        r = cli.spawn("save", "--to", url, *s3, "--root", root, "--no-rescue", "--packages",
                      "pool", "--json", state=state, env=env, timeout=1200)
        assert r.returncode == 0, r.output
        p = r.json()["packages"]
        assert p["missing"] == 0 and p["added"] == p["packages"] == saved.report[
            "packages"]["packages"], p
        # The cached packages too (whole), all but the changed bash's; those not in the
        # cache were downloaded, and have twins (made on S3, read back)
        assert p["files"] == saved.report["packages"]["files"] + p["packages"] - 1 - len(
            UNCACHED), p
        assert p["twins_added"] == len(UNCACHED), p
        assert any("bash" in n and "differs from the SHA256" in n for n in p["notes"]), p
        umount_below(root)

        r = cli.spawn("check", "--from", url, *s3, state=state, env=env)
        assert r.returncode == 0, r.output
        r = cli.spawn("ls", "--from", url, *s3, "--json", "/usr/share/doc/bash", state=state,
                      env=env)
        assert r.returncode == 0, r.output
        listed = {e["path"]: e for e in r.json()["entries"]}
        assert listed["/usr/share/doc/bash/copyright"]["package"]["name"] == "bash"
        assert listed["/usr/share/doc/bash/copyright"]["mtime_ns"] == 1_000_000_007
        # Its owner and mode changed, its content is the package's: pooled, with its own.
        rbash = listed["/usr/share/doc/bash/RBASH"]
        assert (rbash["package"]["name"], rbash["uid"], rbash["mode"]) == ("bash", 1000,
                                                                          0o100600)
        r = cli.spawn("ls", "--from", url, *s3, "--json", "/usr/share/doc/hostname/copyright",
                      state=state, env=env)
        assert r.returncode == 0, r.output
        assert r.json()["entries"][0]["package"] is None  # changed: archived
        to = tmp_path / "to"
        to.mkdir()
        r = cli.spawn("restore", "--from", url, *s3, "--path", "/usr/share/doc/bash",
                      "--path", "/usr/bin/bash", "--to", to, "--json", state=state, env=env)
        assert r.returncode == 0, r.output
        assert r.json()["mismatches"] == 0
        for rel in (b"usr/share/doc/bash", b"usr/bin/bash"):
            assert_same_trees(_under(expected, rel), _under(snapshot(to), rel))

        # the whole system recovered from S3: packages, twins and cached copies from its pool
        target = rig.disk("from-s3", SIZE * 5 // 4)
        r = cli.spawn("recover", "--from", url, *s3, "--target", target.path, "--yes",
                      "--root", mnt, "--no-finalize", "--json", state=state, env=env,
                      timeout=1200)
        assert r.returncode == 0, r.output
        assert r.json()["verify"]["ok"] is True, r.json()["verify"]
        assert_same_trees(expected, system_snapshot(mnt, tmp_path / "view-s3"))
    finally:
        umount_below(mnt)
        seaweed.close()
