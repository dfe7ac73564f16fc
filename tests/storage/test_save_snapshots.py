"""save --snapshot on btrfs: each tree read from a read-only snapshot (a file appended
during the save is then not changed while read: the snapshot does not move), every
snapshot deleted afterwards, leftovers of a killed save deleted by the next only when
provably its own, `required` refused (exit 3) for a filesystem without snapshots, and
the report saying per tree which way it was read."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from resurgo import run
from resurgo.errors import PreconditionFailed
from resurgo.media import open_medium
from resurgo.recovery import SaveOptions, save_set
from resurgo.recovery.snapshots import DIRECTORY, SnapshotMode
from tests.support.loopdisks import Rig
from tests.support.trees import write

pytestmark = pytest.mark.storage

MiB = 1 << 20

APPENDER = """
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND)
while True:
    os.write(fd, b"x" * 100 + b"\\n")
"""


def _subvolumes(top: Path) -> list[str]:
    out = run.output(["btrfs", "subvolume", "list", "-o", str(top)])
    return [line.rsplit(" path ", 1)[1] for line in out.splitlines() if " path " in line]


def test_btrfs_trees_are_read_from_snapshots_that_are_then_deleted(
        rig: Rig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if run.which("mkfs.btrfs") is None:
        pytest.skip("needs btrfs-progs")
    monkeypatch.setenv("RESURGO_STATE_DIR", str(tmp_path / "state"))
    disk = rig.disk("snapsys", 300 * MiB)
    rig.sh("mkfs.btrfs", "-q", "-L", "snapsys", disk.path)
    top = rig.mount(disk.path, tmp_path / "top", "subvolid=5")
    rig.sh("btrfs", "subvolume", "create", str(top / "@"))
    write(top / "@/etc/hostname", b"snapsys\n")
    log = write(top / "@/var/log/busy.log", b"start\n" * 1000)
    # A leftover of a killed save (its tag names the subvolume it copies), and one that
    # is not provably ours (no tag): the first goes, the second stays.
    (top / DIRECTORY).mkdir(mode=0o700)
    dead = top / DIRECTORY / "20261201T000000Z-dead-_"
    rig.sh("btrfs", "subvolume", "snapshot", "-r", str(top / "@"), str(dead))
    rootid = run.output(["btrfs", "inspect-internal", "rootid", str(dead)]).strip()
    (top / DIRECTORY / "20261201T000000Z-dead-_.tag").write_text(
        f"resurgo-snapshot 1\n20261201T000000Z-dead\n{rootid}\n")
    rig.sh("btrfs", "subvolume", "snapshot", "-r", str(top / "@"),
           str(top / DIRECTORY / "someone-elses"))
    root = rig.mount(disk.path, tmp_path / "root", "subvol=@")
    sets = tmp_path / "sets"

    writer = subprocess.Popen([sys.executable, "-I", "-c", APPENDER,
                               str(root / "var/log/busy.log")])
    try:
        with open_medium(str(sets)) as medium:
            report = save_set(medium, SaveOptions(root=root, rescue=False, catalog=False))
    finally:
        writer.kill()
        writer.wait()
    assert log.stat().st_size > 6000
    by_label = {u.label: u for u in report.units}
    assert by_label, report.units
    for u in report.units:
        assert u.read_from == "a read-only snapshot", (u.label, u.read_from, report.warnings)
        assert u.changed_count == 0, u.changed  # a snapshot does not move
    text = report.text()
    assert "read from: a read-only snapshot" in text
    assert all(u["read_from"] for u in report.data()["units"])
    # Only the snapshot that is not provably ours is left, with a warning.
    assert sorted(_subvolumes(top)) == sorted(["@", f"{DIRECTORY}/someone-elses"])
    assert sorted(p.name for p in (top / DIRECTORY).iterdir()) == ["someone-elses"]
    assert any("someone-elses" in w and "left alone" in w for w in report.warnings)

    # off: read live, and the appended file is listed as changed; required on ext4: 3.
    writer = subprocess.Popen([sys.executable, "-I", "-c", APPENDER,
                               str(root / "var/log/busy.log")])
    try:
        write(root / "var/log/big.log", b"y" * (8 * MiB))
        with open_medium(str(sets)) as medium:
            live = save_set(medium, SaveOptions(root=root, rescue=False, catalog=False,
                                                snapshot=SnapshotMode.OFF))
    finally:
        writer.kill()
        writer.wait()
    assert all(u.read_from == "live (--snapshot off)" for u in live.units)
    assert sorted(_subvolumes(top)) == sorted(["@", f"{DIRECTORY}/someone-elses"])

    other = rig.disk("snapext4", 64 * MiB)
    rig.sh("mkfs.ext4", "-q", other.path)
    ext4 = rig.mount(other.path, tmp_path / "ext4root")
    write(ext4 / "etc/hostname", b"plain\n")
    with open_medium(str(sets)) as medium, pytest.raises(PreconditionFailed,
                                                          match="--snapshot required"):
        save_set(medium, SaveOptions(root=ext4, rescue=False, catalog=False,
                                     snapshot=SnapshotMode.REQUIRED))


HOOK = """#!/bin/sh
echo "$RESURGO_HOOK ${RESURGO_SAVE:-none} $(ls -A "$1" 2>/dev/null | tr '\\n' ' ')" >> "$2"
"""


def test_a_stopped_save_deletes_its_snapshots_and_runs_the_post_hook(
        rig: Rig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if run.which("mkfs.btrfs") is None:
        pytest.skip("needs btrfs-progs")
    monkeypatch.setenv("RESURGO_STATE_DIR", str(tmp_path / "state"))
    disk = rig.disk("snapstop", 300 * MiB)
    rig.sh("mkfs.btrfs", "-q", disk.path)
    top = rig.mount(disk.path, tmp_path / "top", "subvolid=5")
    rig.sh("btrfs", "subvolume", "create", str(top / "@"))
    write(top / "@/etc/hostname", b"snapstop\n")
    root = rig.mount(disk.path, tmp_path / "root", "subvol=@")
    hook = write(tmp_path / "hook", HOOK.encode(), mode=0o755)
    log = tmp_path / "hooks.log"
    # The hooks see the snapshots' directory: empty before, a snapshot after.
    seen = str(top / DIRECTORY)
    from resurgo.recovery import save as recovery_save

    def stopped(*args: object, **kw: object) -> object:
        raise KeyboardInterrupt

    monkeypatch.setattr(recovery_save, "_save_unit", stopped)
    with open_medium(str(tmp_path / "sets")) as medium, pytest.raises(KeyboardInterrupt):
        save_set(medium, SaveOptions(root=root, rescue=False, catalog=False,
                                     pre_save=(str(hook), seen, str(log)),
                                     post_save=(str(hook), seen, str(log))))
    pre, post = log.read_text().splitlines()
    assert pre == "pre-save none "  # no snapshot yet
    assert post.startswith("post-save ok ") and ".tag" in post  # taken, then the post hook
    assert _subvolumes(top) == ["@"]
    assert not (top / DIRECTORY).exists()
