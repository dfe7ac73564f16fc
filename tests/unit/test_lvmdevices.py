"""The LVM devices file made anew for the recovered PVs (finalize/lvmdevices.py)."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from resurgo.errors import ToolMissing
from resurgo.finalize import identity, lvmdevices
from resurgo.finalize.model import FinalizeOptions
from resurgo.finalize.steps import Finalizer
from resurgo.finalize.tree import RootTree, SavedTree
from resurgo.model import ConfigFile
from resurgo.plan import make_plan
from resurgo.plan.model import PlanOptions
from tests.support.builders import actual, luks_fixture
from tests.support.consts import GIB

OLD = ("IDTYPE=sys_wwid IDNAME=naa.600508b1001c4d5f DEVNAME=/dev/sda2 "
       "PVID=pvUUID00000000000000000000000001 PART=2")
OTHER = ("IDTYPE=sys_serial IDNAME=WD-WX11A23 DEVNAME=/dev/sdb1 "
         "PVID=OtherPV000000000000000000000000xx PART=1")
SAVED = ("# LVM uses devices listed in this file.\n"
         "# Created by LVM command vgimportdevices pid 812 at Tue Mar  4 10:00:00 2025\n"
         f"VERSION=1.1.7\n{OLD}\n{OTHER}\n")
NEW = ("IDTYPE=sys_serial IDNAME=rsg-vdb DEVNAME=/dev/mapper/sda2_crypt "
       "PVID=pvUUID00000000000000000000000001")
PV = "pvUUID00000000000000000000000001"


def test_pvid_is_the_uuid_without_dashes() -> None:
    assert lvmdevices.pvid("pvUUID-0000-0000-0000-0000-0000-000001") == PV


def test_entries_are_told_from_comments_and_the_version() -> None:
    assert lvmdevices.entry_of(OLD) == (PV, OLD)
    assert lvmdevices.entry_of("# IDTYPE=x PVID=y") is None
    assert lvmdevices.entry_of("VERSION=1.1.7") is None
    assert lvmdevices.entry_of("IDTYPE=devname IDNAME=/dev/vdb") is None


def test_the_planned_pv_line_is_replaced_and_the_others_kept_byte_for_byte() -> None:
    rw = lvmdevices.rewrite(SAVED, {PV: "/dev/mapper/sda2_crypt"}, {PV: NEW})
    assert rw.text == SAVED.replace(OLD, NEW)
    assert [(c.line, c.before, c.after) for c in rw.changes] == [(4, OLD, NEW)]
    assert rw.warnings == ()


def test_a_planned_pv_the_file_did_not_list_is_added_and_a_missing_end_of_line_kept() -> None:
    rw = lvmdevices.rewrite(SAVED.rstrip("\n"), {"Another": "/dev/vdc1"},
                            {"Another": "IDTYPE=devname IDNAME=/dev/vdc1 PVID=Another"})
    assert rw.text == SAVED + "IDTYPE=devname IDNAME=/dev/vdc1 PVID=Another\n"
    assert [(c.line, c.before) for c in rw.changes] == [(6, None)]


def test_a_pv_lvm_made_no_entry_for_keeps_its_line_with_a_warning() -> None:
    rw = lvmdevices.rewrite(SAVED, {PV: "/dev/vdb2"}, {})
    assert rw.text == SAVED and not rw.changed
    assert len(rw.warnings) == 1 and "/dev/vdb2" in rw.warnings[0]


def test_the_plan_names_each_pv_by_pvid_and_new_device() -> None:
    desc = luks_fixture()
    plan = make_plan(desc, [actual("vdb", 20 * GIB)],
                     PlanOptions(which=str, keys=frozenset({"luks.sda2"})))
    assert plan.ok, plan.failures
    assert lvmdevices.planned_pvs(plan) == {PV: "/dev/mapper/sda2_crypt"}


def test_a_preview_says_the_file_is_made_anew_and_runs_nothing(tmp_path: Path) -> None:
    desc = luks_fixture()
    desc = replace(desc, config_files=(ConfigFile("cfg.lvm", lvmdevices.DEVICES_FILE, SAVED),))
    plan = make_plan(desc, [actual("vdb", 20 * GIB)],
                     PlanOptions(which=str, keys=frozenset({"luks.sda2"})))
    f = Finalizer(desc, plan, SavedTree(desc.config_files), None,
                  FinalizeOptions(dry_run=True), identity.planned(desc, plan))
    f.lvm_devices()
    assert f.commands == [] and f.files == []
    assert any(lvmdevices.DEVICES_FILE in n for n in f.notes), f.notes


@pytest.mark.parametrize("failure", [
    ToolMissing("lvm", "lvm2"),
    subprocess.TimeoutExpired(["lvm", "lvmdevices"], 60),
])
def test_no_lvm_or_a_hung_one_is_one_error_naming_the_fix_and_the_file_is_kept(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: Exception) -> None:
    desc = luks_fixture()
    plan = make_plan(desc, [actual("vdb", 20 * GIB)],
                     PlanOptions(which=str, keys=frozenset({"luks.sda2"})))
    root = tmp_path / "root"
    saved = root / lvmdevices.DEVICES_FILE.lstrip("/")
    saved.parent.mkdir(parents=True)
    saved.write_text(SAVED)

    def fail(_devices: object) -> dict[str, str]:
        raise failure

    monkeypatch.setattr(lvmdevices, "generate", fail)
    f = Finalizer(desc, plan, RootTree(root), root, FinalizeOptions(),
                  identity.planned(desc, plan))
    f.lvm_devices()
    assert len(f.errors) == 1 and "vgimportdevices" in f.errors[0], f.errors
    assert saved.read_text() == SAVED and f.files == []


def test_the_saved_line_of_a_pv_made_with_a_new_uuid_is_replaced_not_left_beside_it() -> None:
    # --new-identities: the PV is made anew with another UUID; its saved line names the
    # old PVID, a PV that is gone.
    fresh = NEW.replace(PV, "FreshPV00000000000000000000000001")
    planned = {"FreshPV00000000000000000000000001": "/dev/mapper/sda2_crypt"}
    made = {"FreshPV00000000000000000000000001": fresh}
    rw = lvmdevices.rewrite(SAVED, planned, made, {PV: "FreshPV00000000000000000000000001"})
    assert rw.text == SAVED.replace(OLD, fresh)
    assert [(c.line, c.before, c.after) for c in rw.changes] == [(4, OLD, fresh)]
    # Without the mapping, as before: the old line stays and the new one is added.
    assert lvmdevices.rewrite(SAVED, planned, made).text == SAVED + fresh + "\n"


def test_the_plan_tells_which_saved_pvs_it_makes_with_new_uuids() -> None:
    desc = luks_fixture()
    saved = {pv.id: pv.uuid for pv in desc.physical_volumes}
    kept = make_plan(desc, [actual("vdb", 20 * GIB)],
                     PlanOptions(which=str, keys=frozenset({"luks.sda2"})))
    assert lvmdevices.renamed_pvs(kept, saved) == {}
    anew = make_plan(desc, [actual("vdb", 20 * GIB)],
                     PlanOptions(which=str, keys=frozenset({"luks.sda2"}), new_identities=True))
    assert anew.ok, anew.failures
    [(old, new)] = lvmdevices.renamed_pvs(anew, saved).items()
    assert old == PV and new != PV and new in lvmdevices.planned_pvs(anew)
