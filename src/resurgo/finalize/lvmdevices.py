"""The LVM devices file of the restored system, its entries made for the recovered PVs.

LVM 2.03.12 and later (on by default on RHEL 9 and Fedora) use only the devices that
/etc/lvm/devices/system.devices lists, found by hardware IDs (a WWID, a serial, an md or
dm UUID). Restored as saved it names the old machine's disks: LVM then ignores every
recovered PV, in the initramfs too (both initramfs-tools and dracut carry /etc/lvm), and
the root VG is not found at boot. The entry of each recovered PV is made by LVM itself
(`lvmdevices --adddev` on the new device, in a devices directory of our own), which
chooses the ID type as it would on this machine; lines of PVs outside the plan (a disk
left out of the recovery and moved over) stay as they were.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from resurgo import run
from resurgo.finalize import lines
from resurgo.finalize.model import LineChange, Rewrite
from resurgo.plan.model import Plan, PvParams

DEVICES_FILE = "/etc/lvm/devices/system.devices"
_PVID = re.compile(r"(?:^|\s)PVID=(\S+)")
# What a line of the file may hold: KEY=VALUE fields of printable ASCII (lvm writes no
# other); a generated line outside it is not copied into the restored system.
_ENTRY = re.compile(r"IDTYPE=\S+( \w+=\S*)*")


def pvid(uuid: str) -> str:
    """A PV UUID as the devices file writes it (LVM's 32 characters, without dashes)."""
    return uuid.replace("-", "")


def planned_pvs(plan: Plan) -> dict[str, str]:
    """The PVs the plan creates: their PVID and the device each is made on."""
    return {pvid(a.params.uuid): a.params.device
            for a in plan.actions if isinstance(a.params, PvParams)}


def renamed_pvs(plan: Plan, saved_uuids: Mapping[str, str]) -> dict[str, str]:
    """The PVs the plan makes with another UUID than they were saved with
    (--new-identities, a collision): saved PVID -> new PVID. ``saved_uuids``: each saved
    PV's UUID by its record id."""
    out = {}
    for a in plan.actions:
        if isinstance(a.params, PvParams) and a.params.pv in saved_uuids:
            old, new = pvid(saved_uuids[a.params.pv]), pvid(a.params.uuid)
            if old != new:
                out[old] = new
    return out


def entry_of(text: str) -> tuple[str, str] | None:
    """(PVID, line) of a devices file line that names a device; None for the rest."""
    line = text.strip()
    if not line.startswith("IDTYPE="):
        return None
    m = _PVID.search(line)
    return (m[1], line) if m else None


def generate(devices: Sequence[str]) -> dict[str, str]:
    """The entries LVM makes for ``devices`` on this machine, by PVID. Raises CommandFailed
    when LVM finds no PV on one of them."""
    with tempfile.TemporaryDirectory(prefix="resurgo-lvm-") as d:
        # LVM_SYSTEM_DIR keeps this machine's own lvm.conf and devices file out of it.
        Path(d, "lvm.conf").write_text("devices {\n\tuse_devicesfile = 1\n}\n")
        Path(d, "devices").mkdir(mode=0o700)
        for device in devices:
            run.run(["lvm", "lvmdevices", "--yes", "--adddev", device],
                    env={"LVM_SYSTEM_DIR": d}, timeout=60)
        made = Path(d, "devices", "system.devices").read_text(encoding="ascii", errors="replace")
    found = (entry_of(line) for line in made.splitlines())
    return {pv: line for pv, line in (f for f in found if f) if _ENTRY.fullmatch(line)}


def rewrite(
    text: str,
    planned: Mapping[str, str],
    made: Mapping[str, str],
    renamed: Mapping[str, str] | None = None,
) -> Rewrite:
    """The file with each planned PV's line replaced by the one LVM made here (``made``,
    by PVID), and lines added for planned PVs it did not list; other lines unchanged.
    ``renamed`` (saved PVID -> new PVID): the saved line of a PV made with a new UUID is
    that PV's line (else it would stay, naming a PV that is gone)."""
    seen: set[str] = set()
    renamed = renamed or {}

    def edit(_n: int, content: str) -> tuple[str | None, str, list[str]]:
        found = entry_of(content)
        pv = renamed.get(found[0], found[0]) if found is not None else None
        if pv is None or pv not in planned:
            return content, "", []
        seen.add(pv)
        new = made.get(pv)
        if new is None:
            return content, "", [f"LVM made no entry for the PV on {planned[pv]} (PVID {pv}): "
                                 "its saved line is kept, and LVM may not find it at boot"]
        return new, "the recovered PV's device ID on this machine", []

    rw = lines.edit_lines(text, edit)
    body = rw.text if not rw.text or rw.text.endswith("\n") else rw.text + "\n"
    count = len(lines.split_lines(body))
    added: list[LineChange] = []
    warnings = list(rw.warnings)
    for pv, device in planned.items():
        if pv in seen:
            continue
        new = made.get(pv)
        if new is None:
            warnings.append(f"LVM made no entry for the PV on {device} (PVID {pv})")
            continue
        body += new + "\n"
        count += 1
        added.append(LineChange(count, None, new,
                                f"a recovered PV ({device}) that the saved file did not list"))
    return Rewrite(body, rw.changes + tuple(added), tuple(dict.fromkeys(warnings)))
