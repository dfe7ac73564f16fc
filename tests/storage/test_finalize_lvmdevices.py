"""The LVM devices file made anew by the real LVM for a recovered PV on a loop disk."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from resurgo import run
from resurgo.finalize import identity, lvmdevices
from resurgo.finalize.model import FinalizeOptions
from resurgo.finalize.steps import Finalizer
from resurgo.finalize.tree import RootTree
from resurgo.plan import make_plan
from resurgo.plan.model import PlanOptions, PvParams
from tests.support.builders import actual, luks_fixture
from tests.support.consts import GIB, MIB
from tests.support.loopdisks import Rig

UUID = "pvUUID-0000-0000-0000-0000-0000-000001"
SAVED = ("# LVM uses devices listed in this file.\nVERSION=1.1.7\n"
         "IDTYPE=sys_wwid IDNAME=naa.600508b1001c4d5f DEVNAME=/dev/sda2 "
         f"PVID={UUID.replace('-', '')} PART=2\n"
         "IDTYPE=sys_serial IDNAME=WD-WX11A23 DEVNAME=/dev/sdb1 "
         "PVID=OtherPV000000000000000000000000xx PART=1\n")


def host_devices() -> dict[str, bytes]:
    d = Path("/etc/lvm/devices")
    return {p.name: p.read_bytes() for p in d.iterdir()} if d.is_dir() else {}


def test_the_recovered_pv_gets_its_entry_from_lvm_on_this_machine(
        rig: Rig, tmp_path: Path) -> None:
    loop = rig.disk("pv", 64 * MIB)
    run.run(["lvm", "pvcreate", "-q", "--uuid", UUID, "--norestorefile", loop.path])
    desc = luks_fixture()
    plan = make_plan(desc, [actual("vdb", 20 * GIB)],
                     PlanOptions(which=str, keys=frozenset({"luks.sda2"})))
    # The plan's PV lies on the LUKS mapping of vdb; here it is this loop disk.
    plan = replace(plan, actions=tuple(
        replace(a, params=replace(a.params, device=loop.path))
        if isinstance(a.params, PvParams) else a for a in plan.actions))
    root = tmp_path / "root"
    (root / "etc/lvm/devices").mkdir(parents=True)
    (root / lvmdevices.DEVICES_FILE.lstrip("/")).write_text(SAVED)
    before = host_devices()

    f = Finalizer(desc, plan, RootTree(root), root, FinalizeOptions(),
                  identity.planned(desc, plan))
    f.lvm_devices()

    assert f.errors == [] and f.warnings == [], (f.errors, f.warnings)
    text = (root / lvmdevices.DEVICES_FILE.lstrip("/")).read_text()
    lines = text.splitlines()
    entry = (f"IDTYPE=loop_file IDNAME={loop.image} DEVNAME={loop.path} "
             f"PVID={UUID.replace('-', '')}")
    assert lines[2] == entry, text
    assert lines[:2] == SAVED.splitlines()[:2] and lines[3] == SAVED.splitlines()[3]
    assert [c.path for c in f.files] == [lvmdevices.DEVICES_FILE]
    # This machine's own LVM configuration is not touched.
    assert host_devices() == before
    run.run(["lvm", "pvremove", "-q", loop.path])


def test_a_device_that_is_no_pv_is_an_error_naming_the_fix(rig: Rig, tmp_path: Path) -> None:
    loop = rig.disk("blank", 16 * MIB)
    desc = luks_fixture()
    plan = make_plan(desc, [actual("vdb", 20 * GIB)],
                     PlanOptions(which=str, keys=frozenset({"luks.sda2"})))
    plan = replace(plan, actions=tuple(
        replace(a, params=replace(a.params, device=loop.path))
        if isinstance(a.params, PvParams) else a for a in plan.actions))
    root = tmp_path / "root"
    (root / "etc/lvm/devices").mkdir(parents=True)
    path = root / lvmdevices.DEVICES_FILE.lstrip("/")
    path.write_text(SAVED)
    f = Finalizer(desc, plan, RootTree(root), root, FinalizeOptions(),
                  identity.planned(desc, plan))
    f.lvm_devices()
    assert len(f.errors) == 1 and "vgimportdevices" in f.errors[0], f.errors
    assert path.read_text() == SAVED
    assert os.listdir(root / "etc/lvm/devices") == ["system.devices"]
