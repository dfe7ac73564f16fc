"""ls and restore --path without a device: paths of the saved system mapped to the units of
a set (which tree, which path in it, what a nested mount hides), what a selection takes
from each tree, and the refusals: a relative path, '..', a path outside the set's trees,
and a target directory with a symlink (pointing out) or a file in the way."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from resurgo.engine.manifest import Entry
from resurgo.errors import BadInput, PreconditionFailed
from resurgo.model import Command
from resurgo.recovery.restorepaths import UnitPick, check_target, checked_entries
from resurgo.recovery.systempaths import (
    Mounted,
    Selection,
    SystemTree,
    Wanted,
    ancestors,
    parse,
)
from resurgo.restoreunits import Unit
from tests.support import builders, cli


def unit(device: str, mountpoint: str | None, seq: int) -> Unit:
    fs = builders.ext4(device, mountpoint, None)
    return Unit(fs.id, fs, None, mountpoint,
                Command(seq, "resurgo:restore", (fs.id, mountpoint or "")))


ROOT = unit("part.vda2", "/", 1)
HOME = unit("part.vda3", "/home", 2)
SPOOL = unit("part.vda4", "/var/spool/mail", 3)
LOOSE = unit("part.vda5", None, 4)  # a tree that was not mounted: no system path
TREE = SystemTree([HOME, SPOOL, ROOT, LOOSE])


def mounted(mountpoint: str) -> Mounted:
    found = next((m for m in TREE.mounted if m.mountpoint == mountpoint), None)
    assert found is not None
    return found


def entry(path: bytes, kind: str = "f", target: bytes = b"") -> Entry:
    return Entry(kind, path, 0o100644, 0, 0, 1, 0, 0, 0, 0, "", "", 0, target)


@pytest.mark.parametrize(("given", "normal"), [
    ("/etc/hostname", "/etc/hostname"), ("/", "/"), ("//etc//", "/etc"),
    ("/etc/./passwd", "/etc/passwd"),
])
def test_paths_are_normalised(given: str, normal: str) -> None:
    assert parse(given) == normal


@pytest.mark.parametrize("bad", ["etc/hostname", "", "/etc/../shadow", "/..", "/a\x00b",
                                 "../../etc"])
def test_relative_paths_dotdot_and_nul_are_refused(bad: str) -> None:
    with pytest.raises(BadInput):
        parse(bad)


def test_a_path_belongs_to_the_deepest_mount_above_it() -> None:
    assert [m.mountpoint for m in TREE.mounted] == ["/", "/home", "/var/spool/mail"]
    for path, mountpoint, rel in [
        ("/etc/hostname", "/", b"etc/hostname"), ("/", "/", b"."),
        ("/home", "/home", b"."), ("/home/alice/x", "/home", b"alice/x"),
        ("/homework", "/", b"homework"), ("/var/spool/mail/bob", "/var/spool/mail", b"bob"),
        ("/var/spool", "/", b"var/spool"),
    ]:
        owner = TREE.owner(path)
        assert owner is not None and owner.mountpoint == mountpoint, path
        assert owner.rel(path) == rel
        assert owner.system_path(rel) == path
    assert ancestors("/home/alice/x") == ["/", "/home", "/home/alice"]
    assert ancestors("/") == []


def test_what_a_nested_mount_hid_is_no_path_of_the_system() -> None:
    root = mounted("/")
    assert root.hidden == (b"home", b"var/spool/mail")
    assert not root.owns(b"home") and not root.owns(b"home/alice")
    assert not root.owns(b"var/spool/mail/old")
    assert root.owns(b"homework") and root.owns(b"var/spool") and root.owns(b".")


def test_a_selection_takes_the_trees_chosen_and_the_directories_on_the_way() -> None:
    sel = Selection(TREE, ["/home/alice", "/var"])
    # Deepest first: a tree's directories get their metadata after what is below them.
    assert [m.mountpoint for m in sel.units()] == ["/var/spool/mail", "/home", "/"]
    root, home, mail = mounted("/"), mounted("/home"), mounted("/var/spool/mail")
    assert sel.wants(home, b"alice") == Wanted.CHOSEN
    assert sel.wants(home, b"alice/.profile") == Wanted.CHOSEN
    assert sel.wants(home, b"alicia") is None
    assert sel.wants(home, b".") == Wanted.PARENT
    assert sel.wants(home, b"bob") is None
    assert sel.wants(root, b"var") == Wanted.CHOSEN
    assert sel.wants(root, b"var/spool/mail") is None  # the directory under the mount
    assert sel.wants(mail, b".") == Wanted.CHOSEN and sel.wants(mail, b"x") == Wanted.CHOSEN
    # The target directory stands for /: it keeps its own metadata.
    assert sel.wants(root, b".") is None
    assert sel.wants(root, b"home") is None
    everything = Selection(TREE, ["/"])
    assert everything.wants(root, b".") == Wanted.CHOSEN
    assert everything.wants(root, b"home/hidden") is None


def test_one_file_takes_its_unit_alone() -> None:
    sel = Selection(TREE, ["/etc/hostname"])
    assert [m.mountpoint for m in sel.units()] == ["/"]
    root = mounted("/")
    assert sel.wants(root, b"etc") == Wanted.PARENT
    assert sel.wants(root, b"etc/hostname") == Wanted.CHOSEN
    assert sel.wants(root, b"etc/passwd") is None


def test_a_hard_link_whose_first_file_is_not_chosen_becomes_the_file() -> None:
    p = UnitPick(mounted("/"))
    p.entries = [entry(b"b", "d"), entry(b"b/h2", "h", b"a/h1"), entry(b"b/h3", "h", b"a/h1"),
                 entry(b"b/p2", "h", b"b/p1")]
    p.carriers = {b"a/h1"}
    kinds = [(e.path, e.kind, e.target) for e in checked_entries(p)]
    assert kinds == [(b"b", "d", b""), (b"b/h2", "f", b""), (b"b/h3", "h", b"b/h2"),
                     (b"b/p2", "h", b"b/p1")]


def pick_of(*entries: Entry, mountpoint: str = "/") -> list[UnitPick]:
    p = UnitPick(mounted(mountpoint))
    p.entries = list(entries)
    return [p]


def test_a_symlink_in_the_target_pointing_out_is_refused(tmp_path: Path) -> None:
    to, outside = tmp_path / "to", tmp_path / "outside"
    to.mkdir()
    outside.mkdir()
    os.symlink(outside, to / "etc")
    for overwrite in (False, True):
        with pytest.raises(PreconditionFailed, match="symbolic link"):
            check_target(to, pick_of(entry(b"etc", "d"), entry(b"etc/hostname")), overwrite)
    # The place of a filesystem mounted below (its root, a directory on the way).
    os.symlink(outside, to / "home")
    with pytest.raises(PreconditionFailed, match="symbolic link"):
        check_target(to, pick_of(entry(b"."), entry(b"alice", "d"), mountpoint="/home"), True)
    assert list(outside.iterdir()) == []


def test_a_file_where_a_directory_goes_is_refused(tmp_path: Path) -> None:
    (tmp_path / "etc").write_bytes(b"a file")
    with pytest.raises(PreconditionFailed):
        check_target(tmp_path, pick_of(entry(b"etc", "d"), entry(b"etc/hostname")), True)


def test_a_file_in_the_way_needs_overwrite(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/hostname").write_bytes(b"old")
    picks = pick_of(entry(b"etc", "d"), entry(b"etc/hostname"))
    with pytest.raises(PreconditionFailed, match="--overwrite"):
        check_target(tmp_path, picks, False)
    check_target(tmp_path, picks, True)
    # An existing directory where one is restored is merged: no refusal.
    check_target(tmp_path, pick_of(entry(b"etc", "d")), False)
    # A symlink where a file goes is replaced with --overwrite, never followed.
    os.symlink("/etc/shadow", tmp_path / "etc/motd")
    with pytest.raises(PreconditionFailed):
        check_target(tmp_path, pick_of(entry(b"etc", "d"), entry(b"etc/motd")), False)
    check_target(tmp_path, pick_of(entry(b"etc", "d"), entry(b"etc/motd")), True)


def test_the_command_line_refuses_bad_paths_before_reading_anything(tmp_path: Path) -> None:
    for bad in ("etc/hostname", "/etc/../../shadow"):
        r = cli.run("restore", "--from", tmp_path / "nothing", "--path", bad, "--to", tmp_path)
        assert r.returncode == 2, r.output
        assert "Traceback" not in r.stderr
        r = cli.run("ls", "--from", tmp_path / "nothing", bad)
        assert r.returncode == 2, r.output


@pytest.mark.parametrize("command", ["ls", "restore"])
def test_the_help_gives_the_exit_codes(command: str) -> None:
    r = cli.run(command, "--help")
    assert r.returncode == 0
    text = " ".join(r.stdout.split())
    for code in ("Exit 0", "2 bad input", "3 ", "4 not authentic", "5 the set is damaged",
                 "6 the identity cannot decrypt"):
        assert code in text, (command, code)
