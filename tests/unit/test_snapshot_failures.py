"""A snapshot that cannot be taken ends the same way whatever its kind (btrfs, LVM):
``auto`` reads the tree live and says why, ``required`` refuses the save (exit 3). The
snapshots themselves are made in the storage tier (btrfs) and the vm tier (LVM)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from resurgo.errors import OperationFailed, PreconditionFailed
from resurgo.model import Command, Filesystem, FsType, Mount
from resurgo.recovery import lvmsnapshots as ls
from resurgo.recovery import snapshots, trees
from resurgo.restoreunits import Unit
from tests.unit.test_lvm_snapshots import SET, MiB, lv, report

AUTO, REQUIRED = snapshots.SnapshotMode.AUTO, snapshots.SnapshotMode.REQUIRED


def unit(kind: str) -> Unit:
    fstype = FsType.BTRFS if kind == "btrfs" else FsType.EXT4
    fs = Filesystem(id="fs.x", device="dev.x", type=fstype, mounts=(Mount("/srv"),))
    return Unit("fs.x", fs, None, "/srv", Command(1, "resurgo:restore", ("fs.x", "/srv")))


def cannot_snapshot(monkeypatch: pytest.MonkeyPatch, kind: str) -> str:
    """Makes the snapshot of ``kind`` fail; returns why."""
    if kind == "btrfs":
        def no_device(u: Unit, root: Path) -> str:
            raise OperationFailed("no btrfs device for /srv")

        monkeypatch.setattr(trees, "btrfs_device", no_device)
        return "no btrfs device for /srv"
    r = report(free=8 * MiB)
    monkeypatch.setattr(ls, "targets",
                        lambda units, root: ({"fs.x": ls.Target(lv(r, "root"), "ext4")}, r))
    monkeypatch.setattr(ls, "hold", lambda stack: None)
    return ("the volume group vg0 has 8.0 MiB free, and a snapshot of vg0/root takes "
            "32.0 MiB (10 % of it, snapshot_size)")


def take(kind: str, mode: snapshots.SnapshotMode,
         warnings: list[str]) -> dict[str, tuple[Path | None, str]]:
    with contextlib.ExitStack() as stack:
        return snapshots.take([unit(kind)], Path("/"), SET, mode, stack, warnings)


@pytest.mark.parametrize(("kind", "named"), [("btrfs", ""), ("lvm", "LVM ")])
def test_auto_reads_live_and_says_why(monkeypatch: pytest.MonkeyPatch, kind: str,
                                      named: str) -> None:
    why = cannot_snapshot(monkeypatch, kind)
    warnings: list[str] = []
    assert take(kind, AUTO, warnings) == {"fs.x": (None, f"live (the {named}snapshot failed)")}
    assert warnings == [f"{unit(kind).label}: read live, no {named}snapshot could be taken: "
                        f"{why}"]


@pytest.mark.parametrize("kind", ["btrfs", "lvm"])
def test_required_refuses(monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    why = cannot_snapshot(monkeypatch, kind)
    warnings: list[str] = []
    with pytest.raises(PreconditionFailed) as e:
        take(kind, REQUIRED, warnings)
    assert e.value.message == f"--snapshot required: no snapshot of {unit(kind).label}: {why}"
    assert e.value.exit_code == 3
    assert warnings == []


def test_lvm_that_cannot_be_read(monkeypatch: pytest.MonkeyPatch) -> None:
    def unreadable(units: list[Unit], root: Path) -> None:
        raise OperationFailed("lvm: not found")

    monkeypatch.setattr(ls, "targets", unreadable)
    warnings: list[str] = []
    assert take("lvm", AUTO, warnings) == {
        "fs.x": (None, "live (no snapshot of this filesystem)")}
    assert warnings == ["LVM could not be read, its volumes are read live: lvm: not found"]
    for refuse in (lambda: take("lvm", REQUIRED, []),
                   lambda: snapshots.refuse_unsnapshottable([unit("lvm")], Path("/"),
                                                            REQUIRED)):
        with pytest.raises(PreconditionFailed,
                           match=r"^--snapshot required: LVM could not be read: lvm: not found"):
            refuse()
