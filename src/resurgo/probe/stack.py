"""The seam between the storage walk and the probes of stacked devices (md, LUKS, LVM).

storage.py makes one Stack per walk and calls it for every md or device-mapper device
it meets above the described disks, lower devices first, and for signatures of
containers nothing is opened on; then finish() once, for what only the whole walk
tells (every PV of a volume group, the LVs no device of which was met). A device
that cannot be described is kept as an Unsupported record with a warning, so that
whatever sits on top still refers to a record of the description.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from resurgo.errors import OperationFailed
from resurgo.model import (
    LogicalVolume,
    LuksVolume,
    PhysicalVolume,
    RaidArray,
    Unsupported,
    VolumeGroup,
)
from resurgo.probe import filesystems, ids, luks, lvm, md, sysfs
from resurgo.probe.blockdev import SYS_CLASS_BLOCK, SYSFS_SECTOR

StackRecordType = RaidArray | LuksVolume | LogicalVolume | Unsupported


@dataclass
class StackRecord:
    """What one stacked device (or the end of the walk) adds to the description.

    record is the block device others build on (its id is what a filesystem, swap or
    higher device on it refers to); None when the device adds records but is no block
    device of the description (a PV of an inactive volume group). internal: the device
    is a layer of record's LV (a raid image, a thin pool's -tpool), not its public
    device; record then only names that LV and the caller does not keep it. The lists
    are further records; the caller keeps one of each id.
    """

    record: StackRecordType | None = None
    internal: bool = False
    logical_volumes: list[LogicalVolume] = field(default_factory=list)
    physical_volumes: list[PhysicalVolume] = field(default_factory=list)
    volume_groups: list[VolumeGroup] = field(default_factory=list)
    unsupported: list[Unsupported] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _unsupported(kname: str, kind: str, below: Mapping[str, str], why: str) -> StackRecord:
    details = tuple(f"on {k} ({rid})" for k, rid in below.items())
    rec = Unsupported(id=ids.unsupported(kname), kind=kind, path=f"/dev/{kname}", reason=why,
                      details=details)
    return StackRecord(record=rec, warnings=[f"/dev/{kname}: {why}; it is recorded but will not "
                                             f"be recreated"])


def dm_kind(kname: str, sys_block: Path = SYS_CLASS_BLOCK) -> str:
    """"luks", "lvm" or another device-mapper target family, from the dm uuid prefix."""
    uuid = sysfs.attribute(sys_block / kname / "dm/uuid")
    if uuid is None:
        return "dm"
    if uuid.startswith("CRYPT-LUKS"):
        return "luks"
    if uuid.startswith("LVM-"):
        return "lvm"
    return uuid.split("-", 1)[0].lower() or "dm"


class Stack:
    """The stacked devices of one storage walk.

    known: the walk's record id of every described block device by kernel name, read
    live (it grows as the walk goes). blkid: the walk's (cached) blkid of a kernel name.
    """

    def __init__(
        self,
        known: Mapping[str, str],
        *,
        sys_block: Path = SYS_CLASS_BLOCK,
        blkid: Callable[[str], Mapping[str, str]] | None = None,
    ) -> None:
        self.known = known
        self.sys_block = sys_block
        self._blkid = blkid or (lambda kname: filesystems.read_blkid(f"/dev/{kname}"))
        self._report: lvm.Report | None = None
        self._lvm_error: OperationFailed | None = None
        self._devnos: dict[tuple[int, int], str] | None = None
        self._vgs: list[str] = []
        self._lv_ids: set[str] = set()

    # ------------------------------------------------------------ md

    def describe_md(self, kname: str, members: Mapping[str, str]) -> StackRecord:
        """An md array; members maps the kernel names of its member devices to their record ids."""
        warnings: list[str] = []
        try:
            rec = md.describe_array(kname, md.read_detail(kname), members,
                                    sys_block=self.sys_block, warnings=warnings)
        except OperationFailed as e:
            return _unsupported(kname, "md", members, f"the md array could not be described: {e}")
        return StackRecord(record=rec, warnings=warnings)

    # ------------------------------------------------------------ device-mapper

    def describe_dm(self, kname: str, below: Mapping[str, str]) -> StackRecord:
        """A device-mapper device (LUKS mapping, LVM logical volume, ...); below: its slaves."""
        kind = dm_kind(kname, self.sys_block)
        if kind == "luks":
            return self._luks_mapping(kname, below)
        if kind == "lvm":
            return self._lvm_device(kname, below)
        return _unsupported(kname, kind, below, f"device-mapper devices of type {kind} are not "
                                                f"described")

    def _luks_mapping(self, kname: str, below: Mapping[str, str]) -> StackRecord:
        if len(below) != 1:
            return _unsupported(kname, "luks", below, "a LUKS mapping that is not on exactly one "
                                                      "described device")
        [(backing, device_id)] = below.items()
        dm_uuid = sysfs.attribute(self.sys_block / kname / "dm/uuid")
        try:
            vol = luks.describe(backing, device_id, self._blkid(backing), dm_uuid)
        except OperationFailed as e:
            return _unsupported(kname, "luks", below, f"the LUKS volume could not be described: "
                                                      f"{e}")
        size = sysfs.int_attribute(self.sys_block / kname / "size", 0) * SYSFS_SECTOR
        return StackRecord(record=replace(
            vol, name=sysfs.attribute(self.sys_block / kname / "dm/name") or None,
            size=size or None))

    def _lvm(self) -> lvm.Report:
        # Read once per walk; a failure too, rather than once per LV device.
        if self._lvm_error is not None:
            raise self._lvm_error
        if self._report is None:
            try:
                self._report = lvm.read_report()
            except OperationFailed as e:
                self._lvm_error = e
                raise
        return self._report

    def _lvm_device(self, kname: str, below: Mapping[str, str]) -> StackRecord:
        dm_uuid = sysfs.attribute(self.sys_block / kname / "dm/uuid") or ""
        dm_name = sysfs.attribute(self.sys_block / kname / "dm/name") or ""
        try:
            report = self._lvm()
            found = lvm.lv_of_dm(report, dm_uuid, dm_name)
            if found is None and not report.hidden_loaded:
                lvm.load_hidden(report)
                found = lvm.lv_of_dm(report, dm_uuid, dm_name)
        except OperationFailed as e:
            return _unsupported(kname, "lvm", below, f"LVM could not be read: {e}")
        if found is None or found.lv.vg not in report.vgs:
            return _unsupported(kname, "lvm", below, f"lvm reports no logical volume for the "
                                                     f"device {dm_name or kname}")
        if lvm.save_snapshot(found.lv):
            # A save's own snapshot (or one a killed save left): no part of the system;
            # kept as an internal layer so that nothing of it is described.
            return StackRecord(record=lvm.logical_volume(report, found.lv, {}), internal=True,
                               warnings=[f"{found.lv.vg}/{found.lv.name} is a snapshot of a "
                                         "resurgo save: left out"])
        out = StackRecord(internal=found.internal)
        out.volume_groups += self._see_vg(found.lv.vg)
        if found.internal:
            # A layer may be met before all the PVs of its LV are described: the LV's record
            # is made at its public device (above all its layers), or by finish().
            out.record = lvm.logical_volume(report, found.lv, {})
        else:
            out.record = self._logical_volume(found.lv, out.warnings)
        return out

    def _see_vg(self, name: str) -> list[VolumeGroup]:
        if name in self._vgs:
            return []
        self._vgs.append(name)
        vg = self._lvm().vgs[name]
        return [lvm.volume_group(vg)]

    def _pv_kname(self, pv: lvm.Pv) -> str | None:
        if self._devnos is None:
            self._devnos = {}
            for name in sysfs.entries(self.sys_block):
                devno = sysfs.attribute(self.sys_block / name / "dev") or ""
                major, _, minor = devno.partition(":")
                if major.isdigit() and minor.isdigit():
                    self._devnos[(int(major), int(minor))] = name
        if pv.devno is not None and pv.devno in self._devnos:
            return self._devnos[pv.devno]
        name = os.path.basename(os.path.realpath(pv.name)) if pv.name.startswith("/") else ""
        return name if name and (self.sys_block / name).exists() else None

    def _pv_ids(self, vg: str) -> dict[str, str]:
        """PV uuid -> PV record id, for the PVs of vg on described devices."""
        out: dict[str, str] = {}
        for pv in self._lvm().pvs:
            kname = self._pv_kname(pv) if pv.vg == vg else None
            if kname is not None and kname in self.known:
                out[pv.uuid] = ids.physical_volume(kname)
        return out

    def _logical_volume(self, lv: lvm.Lv, warnings: list[str]) -> LogicalVolume:
        rec = lvm.logical_volume(self._lvm(), lv, self._pv_ids(lv.vg), warnings)
        self._lv_ids.add(rec.id)
        return rec

    # ------------------------------------------------------------ containers

    def describe_container(
        self, kname: str, device_id: str, blkid: Mapping[str, str]
    ) -> StackRecord:
        """A container signature (LUKS, LVM PV, md member) with nothing active on top of it."""
        type_name = blkid.get("TYPE", "unknown")
        below = {kname: device_id}
        if type_name == "crypto_LUKS":
            try:
                vol = luks.describe(kname, device_id, blkid)
            except OperationFailed as e:
                return _unsupported(kname, type_name, below,
                                    f"the LUKS volume could not be described: {e}")
            return StackRecord(record=vol, warnings=[
                f"/dev/{kname}: the LUKS volume is not open, so what it holds is not described"])
        if type_name == "LVM2_member":
            return self._inactive_pv(kname, device_id, blkid)
        return _unsupported(kname, type_name, below,
                            f"holds a {type_name} signature but nothing on it is active, so its "
                            f"contents cannot be described")

    def _inactive_pv(self, kname: str, device_id: str, blkid: Mapping[str, str]) -> StackRecord:
        below = {kname: device_id}
        try:
            report = self._lvm()
        except OperationFailed as e:
            return _unsupported(kname, "LVM2_member", below, f"LVM could not be read: {e}")
        pv = next((p for p in report.pvs if p.uuid == blkid.get("UUID")), None)
        if pv is None:
            return _unsupported(kname, "LVM2_member", below,
                                "lvm does not report this physical volume")
        if not pv.vg or pv.vg not in report.vgs:
            return _unsupported(kname, "LVM2_member", below,
                                "an LVM physical volume in no volume group")
        # Its PV record comes with the others of its group in finish().
        return StackRecord(volume_groups=self._see_vg(pv.vg))

    # ------------------------------------------------------------ the end of the walk

    def finish(self) -> StackRecord:
        """The PVs of every volume group met, and its LVs no device of which was met."""
        out = StackRecord()
        if self._report is None:
            return out
        report = self._report
        for vg in self._vgs:
            for pv in report.pvs:
                if pv.vg != vg:
                    continue
                kname = self._pv_kname(pv)
                if kname is not None and kname in self.known:
                    out.physical_volumes.append(lvm.physical_volume(pv, kname, self.known[kname]))
                else:
                    out.warnings.append(
                        f"volume group {vg}: its physical volume {pv.name or pv.uuid} is not on "
                        f"the described disks, so it is left out")
            if report.vgs[vg].partial:
                out.warnings.append(f"volume group {vg} is missing physical volumes")
            for lv in lvm.visible_lvs(report, vg):
                if ids.logical_volume(vg, lv.name) in self._lv_ids:
                    continue
                out.logical_volumes.append(self._logical_volume(lv, out.warnings))
                state = "is not active" if not lv.active else "has no device on the described disks"
                out.warnings.append(f"logical volume {vg}/{lv.name} {state}: its layout is "
                                    f"described, its contents are not")
        return out
