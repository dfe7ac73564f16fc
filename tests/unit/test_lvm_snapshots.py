"""save's LVM snapshots without LVM (recovery.lvmsnapshots): the size rule, the lvcreate
command lines, the refusals, which leftovers are provably a save's own (never an LV that
is not), the LV behind a mount, and the describe leaving save's snapshots out. The
snapshots themselves are made in the vm tier (tests/vm/test_save_lvm_snapshots.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from resurgo import run
from resurgo.errors import OperationFailed, PreconditionFailed
from resurgo.probe import lvm
from resurgo.recovery import lvmsnapshots as ls
from resurgo.recovery import snapshots
from resurgo.restoreunits import Unit
from tests.support import cli
from tests.support.configs import parsed

DATA = Path(__file__).resolve().parents[1] / "data" / "guest"
MiB = 1 << 20
EXTENT = 4 * MiB
SET = "20261207T103000Z-ab12cd"
VG_UUID = "A" * 32
LV_UUID = "B" * 32


def report(free: int = 512 * MiB, pool_used: float | None = 12.5,
           partial: bool = False) -> lvm.Report:
    r = lvm.Report()
    r.vgs["vg0"] = lvm.Vg("vg0", "vg-uuid", EXTENT, 1024 * MiB, partial=partial, free=free)
    r.lvs = [
        lvm.Lv("vg0", "root", "root-uuid", 300 * MiB, False, attr="-wi-ao----",
               segments=(lvm.Segment(0, 75, "linear", 1, 0),)),
        lvm.Lv("vg0", "pool", "pool-uuid", 200 * MiB, False, attr="twi-aotz--",
               layout="thin,pool", data_percent=pool_used,
               segments=(lvm.Segment(0, 50, "thin-pool", 1, 0),)),
        lvm.Lv("vg0", "srv", "srv-uuid", 320 * MiB, False, attr="Vwi-aotz--", pool="pool",
               segments=(lvm.Segment(0, 80, "thin", 0, 0),)),
    ]
    return r


def lv(r: lvm.Report, name: str) -> lvm.Lv:
    found = r.lv("vg0", name)
    assert found is not None
    return found


# ---------------------------------------------------------------- the size rule


@pytest.mark.parametrize(("origin", "percent", "size"), [
    (300 * MiB, 10, 32 * MiB),  # 30 MiB, rounded up to whole extents
    (400 * MiB, 10, 40 * MiB),  # exactly 10 extents
    (1 * MiB, 10, EXTENT),  # at least one extent
    (300 * MiB, 1, EXTENT),
    (300 * MiB, 100, 300 * MiB),
])
def test_a_classic_snapshot_takes_a_percent_of_its_origin_in_whole_extents(
        origin: int, percent: int, size: int) -> None:
    assert ls.classic_size(origin, EXTENT, percent) == size


# ---------------------------------------------------------------- the commands


def test_a_linear_volume_gets_a_classic_snapshot_of_the_planned_size_tagged_ours() -> None:
    r = report()
    planned = ls.plan(r, lv(r, "root"), "ext4", SET, 0, 10)
    assert isinstance(planned, ls.Planned)
    assert planned.argv == (
        "lvm", "lvcreate", "--snapshot", "--name", f"resurgo-snap-{SET}-0",
        "--addtag", "resurgo-snapshot", "--addtag", f"resurgo-set-{SET}",
        "--size", f"{32 * MiB}b", "vg0/root")
    assert (planned.thin, planned.size) == (False, 32 * MiB)
    assert planned.how == "an LVM snapshot of vg0/root (32.0 MiB for changes)"


def test_a_thin_volume_gets_a_thin_snapshot_activated_at_once() -> None:
    r = report()
    planned = ls.plan(r, lv(r, "srv"), "xfs", SET, 3, 10)
    assert isinstance(planned, ls.Planned)
    assert planned.argv == (
        "lvm", "lvcreate", "--snapshot", "--name", f"resurgo-snap-{SET}-3",
        "--addtag", "resurgo-snapshot", "--addtag", f"resurgo-set-{SET}",
        "--setactivationskip", "n", "--activate", "y", "vg0/srv")
    assert (planned.thin, planned.size) == (True, None)
    assert planned.how == "an LVM thin snapshot of vg0/srv"
    # The name a leftover of it would have is one save recognises as its own.
    made = dataclasses.replace(lv(r, "srv"), name=planned.name, origin="srv",
                               tags=("resurgo-snapshot", f"resurgo-set-{SET}"))
    assert ls.ours(made)


def test_the_mount_options_read_a_snapshot_read_only_and_xfs_without_its_uuid() -> None:
    assert ls.MOUNT_OPTIONS["ext4"] == "ro"
    assert ls.MOUNT_OPTIONS["xfs"] == "ro,nouuid"


@pytest.mark.parametrize(("free", "refused"), [
    (32 * MiB, False),
    (28 * MiB, True),
    (0, True),
])
def test_a_classic_snapshot_is_refused_when_the_group_lacks_room(free: int, refused: bool) -> None:
    r = report(free=free)
    planned = ls.plan(r, lv(r, "root"), "ext4", SET, 0, 10)
    assert isinstance(planned, ls.Refused) is refused
    if isinstance(planned, ls.Refused):
        assert "vg0 has" in planned.why and "32.0 MiB" in planned.why


@pytest.mark.parametrize(("used", "why"), [
    (95.0, "is 95 % full"),
    (None, "reports no data use"),
])
def test_a_thin_snapshot_is_refused_when_its_pool_is_nearly_full(
        used: float | None, why: str) -> None:
    r = report(pool_used=used)
    planned = ls.plan(r, lv(r, "srv"), "xfs", SET, 0, 10)
    assert isinstance(planned, ls.Refused)
    assert why in planned.why


def test_what_cannot_be_snapshotted_is_refused_with_the_reason() -> None:
    r = report()
    refused = ls.plan(r, lv(r, "root"), "btrfs", SET, 0, 10)
    assert isinstance(refused, ls.Refused) and "btrfs" in refused.why
    refused = ls.plan(r, lv(r, "pool"), "ext4", SET, 0, 10)
    assert isinstance(refused, ls.Refused) and "thin-pool volume" in refused.why
    snap = dataclasses.replace(lv(r, "root"), name="mine", attr="swi-a-s---")
    refused = ls.plan(r, snap, "ext4", SET, 0, 10)
    assert isinstance(refused, ls.Refused) and "snapshot volume" in refused.why
    r = report(partial=True)
    refused = ls.plan(r, lv(r, "root"), "ext4", SET, 0, 10)
    assert isinstance(refused, ls.Refused) and "missing physical volumes" in refused.why


# ---------------------------------------------------------------- leftovers


def snap(name: str, tags: tuple[str, ...], origin: str = "root", open_: bool = False,
         hidden: bool = False) -> lvm.Lv:
    return lvm.Lv("vg0", name, f"{name}-uuid", 32 * MiB, hidden, attr="swi-a-s---",
                  tags=tags, origin=origin, device_open=open_)


OURS = ("resurgo-snapshot", f"resurgo-set-{SET}")


def test_only_snapshots_proven_ours_by_name_and_tags_are_removed() -> None:
    r = report()
    r.lvs += [
        snap(f"resurgo-snap-{SET}-0", OURS),
        snap(f"resurgo-snap-{SET}-1", (*OURS, "someone-elses"), origin="srv"),
        # Not provably ours: each lacks one part of the proof.
        snap(f"resurgo-snap-{SET}-2", ("resurgo-snapshot",)),  # no set tag
        snap(f"resurgo-snap-{SET}-3", ("resurgo-snapshot", "resurgo-set-20261207T103000Z-other1")),
        snap("resurgo-snap-mine", OURS),  # not our name form
        snap(f"resurgo-snap-{SET}-4", OURS, origin=""),  # not a snapshot
        snap(f"keep-{SET}-0", OURS),  # tagged, named otherwise
        snap(f"resurgo-snap-{SET}-5", ()),  # our name form, no tags
        # Ours, but in use (a save reading it now).
        snap(f"resurgo-snap-{SET}-6", OURS, open_=True),
        # Nothing like ours: not even mentioned.
        snap("nightly", ("backup",)),
        snap(f"resurgo-snap-{SET}-7", OURS, hidden=True),
    ]
    remove, warnings = ls.leftovers(r)
    assert [v.name for v in remove] == [f"resurgo-snap-{SET}-0", f"resurgo-snap-{SET}-1"]
    left_alone = [f"resurgo-snap-{SET}-2", f"resurgo-snap-{SET}-3", "resurgo-snap-mine",
                  f"resurgo-snap-{SET}-4", f"keep-{SET}-0", f"resurgo-snap-{SET}-5"]
    assert warnings == [
        *(f"vg0/{n} is not a snapshot this resurgo can prove its own (name, tags, origin): "
          "left alone" for n in left_alone),
        f"vg0/resurgo-snap-{SET}-6, a save's snapshot, is in use: left alone",
    ]


def test_leftovers_are_removed_by_lvremove_of_each_one_alone(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    r = report()
    r.lvs += [snap(f"resurgo-snap-{SET}-0", OURS), snap("resurgo-snap-mine", OURS)]
    ran: list[list[str]] = []

    def fake_run(argv: list[str], check: bool = True) -> run.Result:
        ran.append(list(argv))
        return run.Result(tuple(argv), 0, "", "")

    monkeypatch.setattr(ls, "available", lambda: True)
    monkeypatch.setattr(ls, "LOCK", tmp_path / "lock")
    monkeypatch.setattr(lvm, "read_report", lambda: r)
    monkeypatch.setattr(run, "run", fake_run)
    warnings: list[str] = []
    assert ls.remove_leftovers(warnings) == [f"vg0/resurgo-snap-{SET}-0"]
    assert ran == [["lvm", "lvremove", "--yes", f"vg0/resurgo-snap-{SET}-0"]]
    assert len(warnings) == 1 and "resurgo-snap-mine" in warnings[0]


def test_no_leftovers_are_looked_for_while_another_save_holds_snapshots(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import contextlib

    monkeypatch.setattr(ls, "available", lambda: True)
    monkeypatch.setattr(ls, "LOCK", tmp_path / "lock")

    def no_report() -> lvm.Report:
        raise AssertionError("LVM read while another save holds its snapshots")

    monkeypatch.setattr(lvm, "read_report", no_report)
    with contextlib.ExitStack() as other:
        ls.hold(other)
        assert ls.remove_leftovers([]) == []


def test_without_device_mapper_nothing_is_looked_for(monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    monkeypatch.setattr(ls, "CONTROL", tmp_path / "control")
    assert not ls.available()
    assert ls.remove_leftovers([]) == []


# ---------------------------------------------------------------- the LV of a mount


def test_the_lv_behind_a_mount_is_found_by_its_dm_uuid(tmp_path: Path) -> None:
    r = report()
    r.lvs[0] = dataclasses.replace(r.lvs[0], uuid="BBBBBB-" + "B" * 26)
    dm = tmp_path / "254:3" / "dm"
    dm.mkdir(parents=True)
    (dm / "uuid").write_text(f"LVM-{VG_UUID}{LV_UUID}\n")
    (dm / "name").write_text("vg0-root\n")
    found = ls.lv_of_mount(r, 254, 3, tmp_path)
    assert found is not None and found.name == "root"
    # A layer of an LV (its -real under a snapshot) is not the LV's own device.
    (dm / "uuid").write_text(f"LVM-{VG_UUID}{LV_UUID}-real\n")
    assert ls.lv_of_mount(r, 254, 3, tmp_path) is None
    # A LUKS mapping, or no device-mapper device at all.
    (dm / "uuid").write_text("CRYPT-LUKS2-abc-cryptroot\n")
    assert ls.lv_of_mount(r, 254, 3, tmp_path) is None
    assert ls.lv_of_mount(r, 8, 1, tmp_path) is None


# ---------------------------------------------------------------- lvm's report


def test_the_report_gives_what_the_snapshots_need() -> None:
    r = lvm.parse_fullreport((DATA / "lvm-fullreport-bytes.json").read_text())
    assert r.vgs["vg0"].free == 293601280
    pool = r.lv("vg0", "pool")
    data = r.lv("vg0", "data")
    thin = r.lv("vg0", "thin1")
    assert pool is not None and data is not None and thin is not None
    assert pool.data_percent == 9.77 and data.data_percent is None
    assert data.device_open and not thin.device_open
    assert (thin.tags, thin.origin, thin.snapshot_invalid) == ((), "", False)


def test_describe_leaves_save_snapshots_out_and_keeps_others() -> None:
    r = report()
    r.lvs += [snap(f"resurgo-snap-{SET}-0", OURS), snap("nightly", ("backup",)),
              snap("resurgo-snap-mine", OURS)]
    assert [v.name for v in lvm.visible_lvs(r, "vg0")] == [
        "root", "pool", "srv", "nightly", "resurgo-snap-mine"]


def test_the_device_of_a_save_snapshot_is_left_out_of_the_storage_walk(tmp_path: Path) -> None:
    from resurgo.probe import stack

    r = report()
    ours_lv = dataclasses.replace(snap(f"resurgo-snap-{SET}-0", OURS), uuid="C" * 32)
    r.lvs.append(ours_lv)
    dm = tmp_path / "dm-9" / "dm"
    dm.mkdir(parents=True)
    (dm / "uuid").write_text(f"LVM-{VG_UUID}{'C' * 32}\n")
    (dm / "name").write_text(f"vg0-resurgo--snap--{SET.replace('-', '--')}--0\n")
    walk = stack.Stack({}, sys_block=tmp_path)
    walk._report = r
    found = walk.describe_dm("dm-9", {})
    # An internal layer: neither it nor the filesystem on it (the origin's, with the
    # origin's UUID) becomes a record of the description.
    assert found.internal and found.volume_groups == []
    assert found.warnings == [f"vg0/resurgo-snap-{SET}-0 is a snapshot of a resurgo save: "
                              "left out"]


# ---------------------------------------------------------------- the command line


def test_snapshot_size_is_an_option_and_a_key(tmp_path: Path) -> None:
    assert parsed("", "save", "--to", "/s").snapshot_size == ls.DEFAULT_SIZE_PERCENT
    assert parsed("snapshot_size = 25\n", "save", "--to", "/s").snapshot_size == 25
    assert parsed("snapshot_size = 25\n", "save", "--to", "/s",
                  "--snapshot-size", "5").snapshot_size == 5
    for bad in ("0", "101"):
        proc = cli.run("save", "--to", tmp_path, "--snapshot-size", bad)
        assert proc.returncode == 2
        assert f"--snapshot-size {bad}: give a percent from 1 to 100" in proc.stderr


# ---------------------------------------------------------------- in the save


def root_unit() -> Unit:
    from resurgo.model import Command, Filesystem, FsType, Mount

    fs = Filesystem(id="fs.dm-0", device="lv.vg0.root", type=FsType.EXT4, mounts=(Mount("/"),))
    return Unit("fs.dm-0", fs, None, "/", Command(1, "resurgo:restore", ("fs.dm-0", "/")))


def on_lvm(monkeypatch: pytest.MonkeyPatch, free: int) -> None:
    r = report(free=free)
    found = {"fs.dm-0": ls.Target(lv(r, "root"), "ext4")}
    monkeypatch.setattr(ls, "targets", lambda units, root: (found, r))

    def no_lvm(argv: list[str], check: bool = True) -> run.Result:
        raise AssertionError(f"ran {argv}")

    monkeypatch.setattr(run, "run", no_lvm)


def test_required_refuses_a_volume_group_without_room_before_anything_is_written(
        monkeypatch: pytest.MonkeyPatch) -> None:
    on_lvm(monkeypatch, free=8 * MiB)
    with pytest.raises(PreconditionFailed) as e:
        snapshots.refuse_unsnapshottable([root_unit()], Path("/"), snapshots.SnapshotMode.REQUIRED)
    assert "no snapshot can be taken of / (the volume group vg0 has 8.0 MiB free" in str(e.value)
    # With room, or in auto, nothing is refused.
    snapshots.refuse_unsnapshottable([root_unit()], Path("/"), snapshots.SnapshotMode.AUTO)
    on_lvm(monkeypatch, free=64 * MiB)
    snapshots.refuse_unsnapshottable([root_unit()], Path("/"), snapshots.SnapshotMode.REQUIRED)


def test_auto_reads_a_volume_without_room_live_and_says_why(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import contextlib

    on_lvm(monkeypatch, free=8 * MiB)
    warnings: list[str] = []
    with contextlib.ExitStack() as stack:
        monkeypatch.setattr(ls, "hold", lambda stack: None)
        found = snapshots.take([root_unit()], Path("/"), SET, snapshots.SnapshotMode.AUTO,
                               stack, warnings)
    assert found == {"fs.dm-0": (None, "live (the LVM snapshot failed)")}
    assert warnings == ["/: read live, no LVM snapshot could be taken: the volume group vg0 "
                        "has 8.0 MiB free, and a snapshot of vg0/root takes 32.0 MiB (10 % of "
                        "it, snapshot_size)"]


@pytest.mark.parametrize("made", [True, False])
def test_a_failed_lvcreate_removes_what_it_made(monkeypatch: pytest.MonkeyPatch,
                                                made: bool) -> None:
    from resurgo.errors import CommandFailed

    r = report()
    planned = ls.plan(r, lv(r, "root"), "ext4", SET, 0, 10)
    assert isinstance(planned, ls.Planned)
    ran: list[list[str]] = []

    def fake_run(argv: list[str], check: bool = True) -> run.Result:
        ran.append(list(argv))
        if argv[1] == "lvcreate":
            raise CommandFailed(list(argv), 5, "  Failed to activate new LV.")
        return run.Result(tuple(argv), 0, "", "")

    def read_lv(vg: str, name: str) -> lvm.Lv:
        if not made:
            raise OperationFailed(f"lvs: Failed to find logical volume {vg}/{name}")
        return snap(name, OURS)

    monkeypatch.setattr(run, "run", fake_run)
    monkeypatch.setattr(lvm, "read_lv", read_lv)
    warnings: list[str] = []
    with pytest.raises(CommandFailed), ls.snapshot_of(planned, "ext4", "/", warnings):
        raise AssertionError("the body ran without a snapshot")
    removes = [a for a in ran if a[1] == "lvremove"]
    assert removes == ([["lvm", "lvremove", "--yes", f"vg0/resurgo-snap-{SET}-0"]] if made
                       else [])
    assert warnings == []
