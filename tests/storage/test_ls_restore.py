"""ls and restore --path on a saved system of two filesystems (/ and /home, ext4 on a loop
disk): a full set, an incremental one after changes, and an encrypted one, on directory
media. `ls` shows the entries as the saved system had them (the filesystem mounted on
/home in place of the directory under it, the incremental set's state with what it kept
from its parent); `restore --path` brings back one file and directories identical in
content and metadata (compared byte for byte and metadata for metadata with the source
tree, by tests/support/trees.py's own walker), hard links among them kept.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from resurgo import run
from resurgo.demo import umount_below
from resurgo.engine import Source, restore_tree, save_tree
from tests.support import cli
from tests.support.consts import LINUX, MIB
from tests.support.loopdisks import Rig
from tests.support.trees import Snapshot, assert_same_trees, build_rich_tree, snapshot, write

pytestmark = pytest.mark.storage

ROOT_SIZE = 96 * MIB
HOME_SIZE = 48 * MIB


@dataclass(frozen=True)
class Saved:
    work: Path
    sets: Path
    encrypted: Path
    identity: Path
    full: str
    incremental: str
    # The source as the incremental set saved it: /srv/rich, /home/alice.
    rich: Snapshot
    alice: Snapshot
    motd1: bytes
    motd2: bytes
    etc: Snapshot  # /etc itself and /etc/motd, at the incremental set
    system: Snapshot  # the whole system, / and /home, at the incremental set


def table() -> str:
    first = (ROOT_SIZE - 2 * MIB) // 512
    return (f"label: gpt\nlabel-id: {str(uuid.uuid4()).upper()}\nunit: sectors\n\n"
            f"1 : start=2048, size={first}, type={LINUX}, name=\"root\"\n"
            f"2 : start={2048 + first}, size={HOME_SIZE // 512}, type={LINUX}, name=\"home\"\n")


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory,
          rig_factory: Callable[[], Rig]) -> Iterator[Saved]:
    for tool in ("zstd", "age", "age-keygen", "unshare", "setfacl", "setcap"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool}")
    work = tmp_path_factory.mktemp("paths")
    rig = rig_factory()
    disk = rig.disk("system", ROOT_SIZE + HOME_SIZE + 2 * MIB, table=table())
    rig.sh("mkfs.ext4", "-q", "-L", "root", disk.part(1))
    rig.sh("mkfs.ext4", "-q", "-L", "home", disk.part(2))
    root = rig.mount(disk.part(1), work / "system")
    rig.mount(disk.part(2), root / "home")
    try:
        write(root / "etc/hostname", b"pathbox\n")
        write(root / "etc/motd", b"hello\n", mtime_ns=1_600_000_000_123_456_789)
        write(root / "etc/fstab", b"LABEL=root / ext4 defaults 0 1\n")
        write(root / "home/alice/notes.txt", b"alice's notes\n", mode=0o600,
              owner=(1000, 1000))
        write(root / "home/alice/.config/app.conf", b"x=1\n", owner=(1000, 1000))
        os.chown(root / "home/alice", 1000, 1000)
        os.chmod(root / "home/alice", 0o700)
        build_rich_tree(root / "srv/rich", many=40)
        sets, encrypted = work / "sets", work / "encrypted"
        r = cli.spawn("save", "--to", sets, "--root", root, "--no-rescue", "--json",
                      state=work / "state")
        assert r.returncode == 0, r.output
        full = r.json()["set"]["id"]
        motd1 = (root / "etc/motd").read_bytes()
        # Changes for the incremental set: a file rewritten, one added, one removed.
        write(root / "etc/motd", b"hello again\n", mtime_ns=1_700_000_000_987_654_321)
        write(root / "home/alice/new.txt", b"new\n", owner=(1000, 1000))
        (root / "home/alice/.config/app.conf").unlink()
        r = cli.spawn("save", "--to", sets, "--root", root, "--no-rescue", "--incremental",
                      "--json", state=work / "state")
        assert r.returncode == 0, r.output
        incremental = r.json()["set"]["id"]
        identity = work / "age.key"
        run.run(["age-keygen", "-o", str(identity)])
        recipient = next(line.split(":", 1)[1].strip()
                         for line in identity.read_text().splitlines()
                         if line.startswith("# public key:"))
        r = cli.spawn("save", "--to", encrypted, "--root", root, "--no-rescue",
                      "--encrypt-to", recipient, state=work / "state-enc")
        assert r.returncode == 0, r.output
        etc = {p: d for p, d in snapshot(root / "etc").items() if p in (b".", b"motd")}
        # The root filesystem's snapshot shows /home as the mounted filesystem's root.
        system = snapshot(root)
        system.update({b"home/" + p: d for p, d in snapshot(root / "home").items()
                       if p != b"."})
        yield Saved(work, sets, encrypted, identity, full, incremental,
                    snapshot(root / "srv/rich"), snapshot(root / "home/alice"), motd1,
                    (root / "etc/motd").read_bytes(), etc, system)
    finally:
        umount_below(root)
        rig.cleanup()


def names(out: str) -> list[str]:
    return out.splitlines()


def test_ls_shows_the_saved_system(saved: Saved) -> None:
    r = cli.run("ls", "--from", saved.sets)
    assert r.returncode == 0, r.output
    assert {"etc", "home", "srv"} <= set(names(r.stdout))
    r = cli.run("ls", "--from", saved.sets, "/", "--json")
    assert r.returncode == 0, r.output
    by_path = {e["path"]: e for e in r.json()["entries"]}
    # /home is the root of the filesystem mounted there, not the directory under it.
    assert by_path["/home"]["mountpoint"] == "/home"
    assert by_path["/etc"]["mountpoint"] == "/"
    assert by_path["/home"]["filesystem"] != by_path["/etc"]["filesystem"]


def test_ls_of_the_incremental_set_shows_its_state(saved: Saved) -> None:
    r = cli.run("ls", "--from", saved.sets, "/home/alice", "--json")
    assert r.returncode == 0, r.output
    entries = {e["path"]: e for e in r.json()["entries"]}
    assert set(entries) == {"/home/alice/.config", "/home/alice/new.txt",
                            "/home/alice/notes.txt"}
    # Kept from the full set: its data is in the parent's archive.
    assert entries["/home/alice/notes.txt"]["set"] == saved.full
    assert entries["/home/alice/new.txt"]["set"] == saved.incremental
    assert entries["/home/alice/notes.txt"]["uid"] == 1000
    assert entries["/home/alice/notes.txt"]["permissions"] == "-rw-------"
    r = cli.run("ls", "--from", saved.sets, "--set", saved.full, "/home/alice/.config")
    assert r.returncode == 0, r.output
    assert names(r.stdout) == ["app.conf"]
    r = cli.run("ls", "--from", saved.sets, "--long", "/etc/motd")
    assert r.returncode == 0, r.output
    line = r.stdout.strip()
    assert line.startswith("-rw-r--r--  0:0") and line.endswith("/etc/motd"), line
    assert f" {len(saved.motd2)}  2023-11-14 22:13:20 " in line
    r = cli.run("ls", "--from", saved.sets, "--long", "/srv/rich/sym")
    assert "dangling -> nothere" in r.stdout
    r = cli.run("ls", "--from", saved.sets, "/etc/nothere")
    assert r.returncode == 2 and "not in recovery set" in r.stderr


def test_restore_brings_back_a_file_and_directories_identical(saved: Saved,
                                                                tmp_path: Path) -> None:
    to = tmp_path / "to"
    to.mkdir()
    r = cli.run("restore", "--from", saved.sets, "--path", "/etc/motd",
                "--path", "/srv/rich", "--path", "/home/alice", "--to", to, "--json")
    assert r.returncode == 0, r.output
    report = r.json()
    assert report["set"] == saved.incremental and report["mismatches"] == 0
    assert_same_trees(saved.rich, snapshot(to / "srv/rich"))
    assert_same_trees(saved.alice, snapshot(to / "home/alice"))
    etc = {p: d for p, d in snapshot(to / "etc").items()}
    assert sorted(etc) == [b".", b"motd"]  # the directory on the way, and the file
    assert_same_trees(saved.etc, etc)
    assert (to / "etc/motd").read_bytes() == saved.motd2


def test_restore_of_the_full_set_and_a_hard_link_alone(saved: Saved, tmp_path: Path) -> None:
    to = tmp_path / "to"
    to.mkdir()
    r = cli.run("restore", "--from", saved.sets, "--set", saved.full, "--path",
                "/etc/motd", "--path", "/srv/rich/links/b", "--path",
                "/srv/rich/links/c", "--to", to)
    assert r.returncode == 0, r.output
    assert (to / "etc/motd").read_bytes() == saved.motd1
    # links/a/h1 (the group's first file) was not chosen: b/h2 holds the content, and
    # c/d/h3 is its link; nothing of links/a is left.
    h2, h3 = to / "srv/rich/links/b/h2", to / "srv/rich/links/c/d/h3"
    assert h2.read_bytes() == b"linked three times"
    assert h2.stat().st_ino == h3.stat().st_ino and h2.stat().st_nlink == 2
    assert (h2.stat().st_uid, h2.stat().st_mode & 0o7777) == (1000, 0o600)
    assert sorted(p.name for p in (to / "srv/rich/links").iterdir()) == ["b", "c"]
    assert (to / "srv/rich/links").stat().st_mtime_ns == saved.rich[b"links"]["mtime_ns"]


def test_restore_refuses_what_is_in_the_way(saved: Saved, tmp_path: Path) -> None:
    to = tmp_path / "to"
    to.mkdir()
    r = cli.run("restore", "--from", saved.sets, "--path", "/etc/hostname", "--to", to)
    assert r.returncode == 0, r.output
    before = (to / "etc/hostname").stat()
    r = cli.run("restore", "--from", saved.sets, "--path", "/etc/hostname", "--to", to)
    assert r.returncode == 3 and "--overwrite" in r.stderr, r.output
    assert (to / "etc/hostname").stat().st_ino == before.st_ino
    r = cli.run("restore", "--from", saved.sets, "--path", "/etc/hostname", "--to", to,
                "--overwrite")
    assert r.returncode == 0, r.output
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, to / "srv")
    r = cli.run("restore", "--from", saved.sets, "--path", "/srv/rich/plain.txt", "--to", to)
    assert r.returncode == 3 and "symbolic link" in r.stderr, r.output
    r = cli.run("restore", "--from", saved.sets, "--path", "/srv/rich/plain.txt", "--to", to,
                "--overwrite")
    assert r.returncode == 3, r.output
    assert list(outside.iterdir()) == []
    r = cli.run("restore", "--from", saved.sets, "--path", "/srv/nothere", "--to", to)
    assert r.returncode == 2 and "not in recovery set" in r.stderr
    r = cli.run("restore", "--from", saved.sets, "--path", "/srv/../etc", "--to", to)
    assert r.returncode == 2 and "'..'" in r.stderr


def test_an_encrypted_set_needs_its_identity(saved: Saved, tmp_path: Path) -> None:
    r = cli.run("ls", "--from", saved.encrypted, "/etc")
    assert r.returncode == 3, r.output
    r = cli.run("ls", "--from", saved.encrypted, "/etc", "--identity", saved.identity)
    assert r.returncode == 0 and "hostname" in names(r.stdout), r.output
    to = tmp_path / "to"
    to.mkdir()
    r = cli.run("restore", "--from", saved.encrypted, "--path", "/home/alice", "--to", to,
                "--identity", saved.identity)
    assert r.returncode == 0, r.output
    assert_same_trees(saved.alice, snapshot(to / "home/alice"))
    other = tmp_path / "other.key"
    run.run(["age-keygen", "-o", str(other)])
    r = cli.run("restore", "--from", saved.encrypted, "--path", "/etc/hostname", "--to",
                tmp_path / "to", "--identity", other)
    assert r.returncode == 6, r.output


def test_a_damaged_archive_is_named(saved: Saved, tmp_path: Path) -> None:
    copy = tmp_path / "sets"
    shutil.copytree(saved.sets / saved.full, copy / saved.full)
    archive = next(p for p in (copy / saved.full / "archives").glob("*.archive")
                   if p.stat().st_size > 1 << 20)
    with open(archive, "r+b") as f:
        f.seek(archive.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))
    to = tmp_path / "to"
    to.mkdir()
    r = cli.run("restore", "--from", copy, "--path", "/srv/rich", "--to", to)
    assert r.returncode == 5, r.output


class _Counted:
    """An archive read as from a remote medium (no local file to hand to zstd), counted."""

    def __init__(self, path: Path, counter: list[int]) -> None:
        self._f = open(path, "rb")  # noqa: SIM115 - closed by close()
        self._counter = counter

    def read(self, n: int) -> bytes:
        data = self._f.read(n)
        self._counter[0] += len(data)
        return data

    def close(self) -> None:
        self._f.close()


@pytest.mark.usefixtures("engine_tools")
def test_a_selection_reads_an_archive_only_up_to_its_last_entry(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    write(tree / "a/first.txt", b"first\n", owner=(1000, 1000), mode=0o640)
    write(tree / "z/big.bin", os.urandom(24 * MIB))  # incompressible, after it
    with open(tmp_path / "t.archive", "wb") as archive, \
            open(tmp_path / "t.manifest", "wb") as manifest:
        save_tree(tree, archive, manifest, set_id="s1")
    read = [0]
    archive_source = Source("t.archive", lambda: _Counted(tmp_path / "t.archive", read))
    to = tmp_path / "to"
    to.mkdir()
    result = restore_tree(to, Source.file(tmp_path / "t.manifest"), {"s1": archive_source},
                          select=lambda p: p in (b"a", b"a/first.txt"))
    assert result.entries == 2
    assert (to / "a/first.txt").read_bytes() == b"first\n"
    assert not (to / "z").exists()
    size = (tmp_path / "t.archive").stat().st_size
    assert read[0] < size // 2, (read[0], size)
    assert_same_trees(snapshot(tree / "a"), snapshot(to / "a"))


def test_sets_not_signed_by_a_trusted_key_are_refused(saved: Saved, tmp_path: Path) -> None:
    key = tmp_path / "admin"
    run.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "admin", "-f", str(key)])
    trust = tmp_path / "allowed_signers"
    trust.write_text('admin@test namespaces="resurgo-set" '
                     + " ".join(Path(f"{key}.pub").read_text().split()[:2]) + "\n")
    r = cli.run("ls", "--from", saved.sets, "/etc", "--trust", trust)
    assert r.returncode == 4, r.output
    to = tmp_path / "to"
    to.mkdir()
    r = cli.run("restore", "--from", saved.sets, "--path", "/etc/motd", "--to", to,
                "--trust", trust)
    assert r.returncode == 4, r.output
    assert list(to.iterdir()) == []


def test_restore_of_the_whole_system(saved: Saved, tmp_path: Path) -> None:
    to = tmp_path / "to"
    to.mkdir()
    r = cli.run("restore", "--from", saved.sets, "--path", "/", "--to", to)
    assert r.returncode == 0, r.output
    assert_same_trees(saved.system, snapshot(to))
