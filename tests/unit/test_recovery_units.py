"""The pure parts of saving and restoring sets: which trees a set archives (the restore
commands describe writes, per filesystem and per btrfs subvolume), the names of their
files, what a save leaves out of each tree, and what verify puts down to finalize."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from resurgo.errors import BadInput
from resurgo.model import (
    Bootloader,
    BootloaderKind,
    Command,
    Description,
    Filesystem,
    Firmware,
    FormatInfo,
    FsType,
    Mount,
    OnFailure,
    OsRelease,
    Subvolume,
    SystemInfo,
)
from resurgo.probe.describe import restore_commands
from resurgo.recovery import setfiles
from resurgo.recovery.check import Changes, finalize_changes
from resurgo.recovery.save import Leaveouts, leaveouts, relative_to, system_path
from resurgo.restoreunits import file_key, unit_of, units


def fs(fid: str, fstype: FsType, *mounts: tuple[str, str | None],
       supported: bool = True) -> Filesystem:
    return Filesystem(
        id=fid, device=fid.replace("fs.", "part."), type=fstype, supported=supported,
        mounts=tuple(Mount(mp, "defaults", sv) for mp, sv in mounts),
    )


def sv(number: int, path: str, *, readonly: bool = False, parent: int = 5) -> Subvolume:
    return Subvolume(id=f"subvol.sda3.{number}", filesystem="fs.sda3", path=path,
                     subvol_id=number, parent_id=parent, readonly=readonly)


BTRFS = fs("fs.sda3", FsType.BTRFS, ("/", "subvol.sda3.256"), ("/home", "subvol.sda3.257"))
SUBVOLUMES = [sv(256, "@"), sv(257, "@home"), sv(258, "@/srv/nested", parent=256),
              sv(259, "@snap", readonly=True)]
FILESYSTEMS = [
    fs("fs.sda4", FsType.XFS, ("/srv/data", None)),
    BTRFS,
    fs("fs.sda2", FsType.EXT4, ("/boot", None)),
    fs("fs.sda1", FsType.VFAT, ("/boot/efi", None)),
    fs("fs.sda5", FsType.EXT4),  # not mounted: nothing to restore
    fs("fs.sdb", FsType.OTHER, ("/weird", None), supported=False),
]


def description(commands: list[Command]) -> Description:
    return Description(
        format=FormatInfo("1.0", "0.1.0", "2026-01-01T00:00:00Z", "h"),
        system=SystemInfo("h", "", "x86_64", Firmware.BIOS, OsRelease("debian"), "6",
                          Bootloader(BootloaderKind.NONE)),
        filesystems=tuple(FILESYSTEMS),
        subvolumes=tuple(SUBVOLUMES),
        commands=tuple(commands),
    )


def test_restore_commands_one_per_tree_parents_first() -> None:
    commands = restore_commands(FILESYSTEMS, SUBVOLUMES)
    assert [(c.seq, c.args) for c in commands] == [
        (10, ("fs.sda3",)),  # the btrfs's top level: not mounted anywhere
        (20, ("subvol.sda3.256", "/")),
        (30, ("subvol.sda3.257", "/home")),
        (40, ("subvol.sda3.259",)),
        (50, ("subvol.sda3.258",)),  # nested in @: after it
        (60, ("fs.sda2", "/boot")),
        (70, ("fs.sda1", "/boot/efi")),
        (80, ("fs.sda4", "/srv/data")),
    ]
    assert {c.program for c in commands} == {"resurgo:restore"}
    # A FAT (the ESP) keeps no owners or modes a restore could set: it may fail.
    assert [c.on_failure for c in commands] == [OnFailure.ABORT] * 6 + [
        OnFailure.CONTINUE, OnFailure.ABORT]
    assert commands[2].description == "restore btrfs subvolume @home (/home) from its archive"


def test_a_mounted_top_level_is_restored_where_it_is_mounted() -> None:
    top = fs("fs.sda3", FsType.BTRFS, ("/data", None), ("/data/archive", "subvol.sda3.256"))
    commands = restore_commands([top], [sv(256, "archive")])
    assert [c.args for c in commands] == [("fs.sda3", "/data"),
                                          ("subvol.sda3.256", "/data/archive")]


def test_units_of_the_commands() -> None:
    desc = description(restore_commands(FILESYSTEMS, SUBVOLUMES))
    found = units(desc)
    assert [u.key for u in found] == ["fs.sda3", "subvol.sda3.256", "subvol.sda3.257",
                                      "subvol.sda3.259", "subvol.sda3.258", "fs.sda2",
                                      "fs.sda1", "fs.sda4"]
    top, root, _, snap, nested, boot = found[:6]
    assert top.btrfs and top.subvolume is None and top.path_in_top_level == ""
    assert top.mountpoint is None
    assert root.path_in_top_level == "@" and root.mountpoint == "/"
    assert nested.path_in_top_level == "@/srv/nested" and nested.mountpoint is None
    assert snap.readonly and not root.readonly
    assert not boot.btrfs and boot.mountpoint == "/boot"
    assert boot.archive_name == "archives/fs.sda2.archive"
    assert boot.manifest_name == "archives/fs.sda2.manifest"
    assert root.label == "btrfs subvolume @ at /"
    assert nested.label == "btrfs subvolume @/srv/nested"
    assert top.label == "btrfs top level of fs.sda3"


def test_other_commands_are_no_units() -> None:
    desc = description([Command(10, "resurgo:restore", ("fs.sda2", "/boot")),
                        Command(20, "/usr/bin/true", ("x",))])
    assert [u.key for u in units(desc)] == ["fs.sda2"]


@pytest.mark.parametrize(
    ("args", "why"),
    [
        ((), "takes an id and a mountpoint"),
        (("fs.sda2", "/boot", "extra"), "takes an id and a mountpoint"),
        (("fs.nope", "/"), "has no filesystem or subvolume 'fs.nope'"),
        (("fs.sda2",), "name its mountpoint"),
        (("fs.sda2", "/home"), "is not mounted at /home"),
        (("fs.sda2", "boot"), "not an absolute path"),
        # A btrfs's top level is not what is mounted at / (subvolume @ is).
        (("fs.sda3", "/"), "is subvolume subvol.sda3.256 of fs.sda3, not its top level"),
        (("subvol.sda3.257", "/"), "is subvolume subvol.sda3.256 of fs.sda3, not subvol"),
    ],
)
def test_a_restore_command_that_names_nothing_is_refused(args: tuple[str, ...],
                                                          why: str) -> None:
    desc = description([])
    with pytest.raises(BadInput, match=why):
        unit_of(desc, Command(10, "resurgo:restore", args))


def test_a_tree_restored_twice_is_refused() -> None:
    desc = description([Command(10, "resurgo:restore", ("fs.sda2", "/boot")),
                        Command(20, "resurgo:restore", ("fs.sda2", "/boot"))])
    with pytest.raises(BadInput, match="more than one command"):
        units(desc)


def test_ids_that_clash_as_file_names_are_refused() -> None:
    a = fs("fs.a:b", FsType.EXT4, ("/a", None))
    b = fs("fs.a/b", FsType.EXT4, ("/b", None))
    desc = replace(description([Command(10, "resurgo:restore", ("fs.a:b", "/a")),
                                Command(20, "resurgo:restore", ("fs.a/b", "/b"))]),
                   filesystems=(a, b))
    with pytest.raises(BadInput, match="would share the archive"):
        units(desc)


@pytest.mark.parametrize(
    ("key", "name"),
    [("fs.sda2", "fs.sda2"), ("lv.vg0.root", "lv.vg0.root"), ("fs.a b/c", "fs.a_b_c"),
     (".hidden", "_hidden"), ("", "_"), ("x" * 300, "x" * 100)],
)
def test_file_keys_are_names_a_set_may_hold(key: str, name: str) -> None:
    assert file_key(key) == name


def test_system_paths_and_relative_paths() -> None:
    assert system_path(Path("/mnt/sys"), "/mnt/sys") == "/"
    assert system_path(Path("/mnt/sys"), "/mnt/sys/srv/sets") == "/srv/sets"
    assert system_path(Path("/mnt/sys"), "/mnt/system") is None
    assert system_path(Path("/"), "/var/backups") == "/var/backups"
    assert relative_to("/", "/tmp") == "tmp"
    assert relative_to("/home", "/home") == ""
    assert relative_to("/home", "/home/alice/cache") == "alice/cache"
    assert relative_to("/home", "/homes") is None
    assert relative_to("/home", "/") is None


def test_leaveouts_per_tree(tmp_path: Path) -> None:
    desc = description(restore_commands(FILESYSTEMS, SUBVOLUMES))
    by_key = {u.key: u for u in units(desc)}
    lo = Leaveouts(("/srv/sets", "/home/alice/.cache", "/srv/data"),
                   ("/proc", "/tmp", "/boot/efi"))
    root = by_key["subvol.sda3.256"]
    assert lo.for_unit(root, tmp_path) == (["srv/sets", "home/alice/.cache", "srv/data"],
                                           ["proc", "tmp", "boot/efi"])
    assert lo.for_unit(by_key["subvol.sda3.257"], tmp_path) == (["alice/.cache"], [])
    assert lo.for_unit(by_key["subvol.sda3.258"], tmp_path) == ([], [])
    # A tree excluded as a whole is saved empty; an emptied one keeps its directories.
    (tmp_path / "dir").mkdir()
    (tmp_path / "file").write_text("x")
    assert lo.for_unit(by_key["fs.sda4"], tmp_path) == (["dir", "file"], [])
    assert lo.for_unit(by_key["fs.sda1"], tmp_path) == (["file"], ["dir"])


def test_the_set_itself_and_the_manifest_copies_are_left_out(tmp_path: Path) -> None:
    root = tmp_path / "sys"
    (root / "srv/sets").mkdir(parents=True)
    lo = leaveouts(root, str(root / "srv/sets"), ("/var/cache/",), root / "var/lib/resurgo")
    assert lo.excludes == ("/var/cache", "/srv/sets", "/var/lib/resurgo")
    assert lo.emptied == ("/proc", "/sys", "/dev", "/run", "/tmp")
    elsewhere = leaveouts(root, str(tmp_path / "sets"), (), tmp_path / "state")
    assert elsewhere.excludes == ()
    assert leaveouts(root, "sftp://h/srv/sets", (), tmp_path).excludes == ()
    with pytest.raises(BadInput, match="absolute path"):
        leaveouts(root, str(tmp_path / "sets"), ("var/cache",), tmp_path)
    with pytest.raises(BadInput, match="saved tree itself"):
        leaveouts(root, str(root), (), tmp_path)


def test_what_finalize_changed_is_told_apart() -> None:
    changes = finalize_changes(["/etc/fstab", "etc/default/grub"],
                               "/var/log/resurgo/recovery-1.log")
    assert changes.files == {"/etc/fstab", "/etc/default/grub",
                             "/var/log/resurgo/recovery-1.log"}
    assert changes.explains("/etc/fstab", "content")
    assert changes.explains("/etc", "mtime")
    assert not changes.explains("/etc", "mode")
    assert changes.explains("/var/log/resurgo", "unexpected")
    assert changes.explains("/var/log/resurgo/recovery-1.log", "unexpected")
    assert not changes.explains("/etc/passwd", "content")
    assert not changes.explains("/et", "mtime")
    assert not Changes().explains("/", "mtime")


def test_labels_say_whether_a_set_is_encrypted() -> None:
    plain = setfiles.labels(())
    assert not setfiles.encrypted(plain) and "recipients" not in plain
    sealed = setfiles.labels(("age1abc", "age1def"))
    assert setfiles.encrypted(sealed)
    assert setfiles.recipients(sealed) == ["age1abc", "age1def"]
    assert not setfiles.encrypted({})
