"""The md/LUKS/LVM probes with the real tools on loop disks, as far as this host allows.

No device-mapper and no md here: nothing can be opened or activated. What can run is
every probe of a container nothing is active on: LUKS headers (luksFormat needs no
dm) and a volume group whose metadata is written without activating anything — the
guest's own vg0 (tests/data/guest/vgcfgbackup-vg0.txt), put back with vgcfgrestore on
two loop disks, thin pool, raid1 and striped LVs included. The probe then runs the real
`lvm fullreport` and `lvs --all` on it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from resurgo import run
from resurgo.fileformat import rules
from resurgo.model import (
    Bootloader,
    BootloaderKind,
    Description,
    Firmware,
    FormatInfo,
    LvType,
    OsRelease,
    SystemInfo,
)
from resurgo.probe.state import StorageState
from resurgo.probe.storage import probe_storage
from tests.support.consts import MIB
from tests.support.loopdisks import Loop, Rig

GUEST = Path(__file__).resolve().parent.parent / "data" / "guest"
PV_CRYPT = "N4wswW-7WK9-Gcb2-Ogsw-x6MW-79cv-XgHyOZ"
PV_VDD1 = "JI281E-eYa6-MZ6o-m70R-LFlF-Vyct-5mCvvn"
VG_UUID = "Tlr1cf-ehgS-CoxY-IohG-ZaWL-GwzS-ezT0GB"


def description(state: StorageState) -> Description:
    return Description(
        format=FormatInfo(version="1.0", resurgo="0", created="2026-01-01T00:00:00Z", host="t"),
        system=SystemInfo(hostname="t", machine_id="", architecture="x86_64",
                          firmware=Firmware.BIOS, os_release=OsRelease("debian"), kernel="6",
                          bootloader=Bootloader(BootloaderKind.NONE)),
        disks=tuple(state.disks), partitions=tuple(state.partitions),
        luks_volumes=tuple(state.luks_volumes), physical_volumes=tuple(state.physical_volumes),
        volume_groups=tuple(state.volume_groups), logical_volumes=tuple(state.logical_volumes),
        filesystems=tuple(state.filesystems), swaps=tuple(state.swaps),
        unsupported=tuple(state.unsupported))


@pytest.fixture
def guest_vg(rig: Rig) -> Iterator[tuple[str, Loop, Loop]]:
    """The guest's vg0 restored on two loop disks of its PVs' sizes, under a name of its own."""
    for tool in ("lvm", "wipefs"):
        if run.which(tool) is None:
            pytest.skip(f"needs {tool}")
    name = f"rsgtest{os.getpid()}"
    config = rig.workdir / "vg.vgcfg"
    recorded = (GUEST / "vgcfgbackup-vg0.txt").read_text()
    config.write_text(recorded.replace("\nvg0 {", f"\n{name} {{"))
    a = rig.disk("pv-crypt", 620544 * 512)
    b = rig.disk("pv-vdd1", 409600 * 512)
    try:
        rig.sh("lvm", "pvcreate", "--yes", "--uuid", PV_CRYPT, "--restorefile", str(config),
               a.path)
        rig.sh("lvm", "pvcreate", "--yes", "--uuid", PV_VDD1, "--restorefile", str(config),
               b.path)
        # --force: LVM asks for it to restore thin volumes (their pool's metadata is not
        # restored with the VG's); nothing is activated.
        rig.sh("lvm", "vgcfgrestore", "--force", "--file", str(config), name)
        yield name, a, b
    finally:
        # The metadata lives on the images only; wiping it keeps LVM's view of the host clean.
        run.run(["wipefs", "--all", "--quiet", a.path, b.path], check=False)


def test_an_inactive_volume_group_is_described_from_lvm(
    rig: Rig, guest_vg: tuple[str, Loop, Loop]
) -> None:
    name, a, b = guest_vg
    root = rig.workdir / "empty-root"
    root.mkdir()
    state = probe_storage(root, [a.path, b.path], [])
    assert [d.path for d in state.disks] == [a.path, b.path]
    pv_a, pv_b = f"pv.{a.kname}", f"pv.{b.kname}"
    assert [(p.id, p.device, p.uuid, p.volume_group) for p in state.physical_volumes] == [
        (pv_a, f"disk.{a.kname}", PV_CRYPT, f"vg.{name}"),
        (pv_b, f"disk.{b.kname}", PV_VDD1, f"vg.{name}")]
    [vg] = state.volume_groups
    assert (vg.name, vg.uuid, vg.extent_size, vg.size) == (name, VG_UUID, 8 * MIB, 61 * 8 * MIB)
    lvs = {lv.name: lv for lv in state.logical_volumes}
    assert {n: lv.type for n, lv in lvs.items()} == {
        "data": LvType.LINEAR, "stripe": LvType.STRIPED, "pool": LvType.THIN_POOL,
        "thin1": LvType.THIN, "mirror": LvType.RAID1}
    assert lvs["thin1"].pool == f"lv.{name}.pool"
    assert lvs["mirror"].segments[0].devices == (pv_a, pv_b)
    assert lvs["stripe"].segments[0].devices == (pv_a, pv_b)
    assert (lvs["stripe"].segments[0].stripes, lvs["stripe"].segments[0].stripe_size) == (
        2, 64 * 1024)
    assert lvs["pool"].segments[0].devices == (pv_a,)
    for lv in ("data", "stripe", "pool", "thin1", "mirror"):
        assert (f"logical volume {name}/{lv} is not active: its layout is described, its "
                f"contents are not") in state.warnings
    assert state.unsupported == []
    assert rules.check(description(state)) == []


def test_closed_luks_headers_are_described_by_cryptsetup(rig: Rig) -> None:
    if run.which("cryptsetup") is None:
        pytest.skip("needs cryptsetup")
    one = rig.disk("luks1", 16 * MIB)
    two = rig.disk("luks2", 32 * MIB)
    fast = ("--batch-mode", "--pbkdf-force-iterations", "1000", "--key-file", "-")
    rig.sh("cryptsetup", "luksFormat", "--type", "luks1", "--cipher", "aes-cbc-essiv:sha256",
           "--key-size", "256", "--hash", "sha1", *fast, one.path, input="not a secret")
    rig.sh("cryptsetup", "luksFormat", "--type", "luks2", "--pbkdf", "pbkdf2", "--hash",
           "sha512", "--sector-size", "4096", "--label", "probe-me", "--subsystem", "tests",
           *fast, two.path, input="not a secret")
    root = rig.workdir / "empty-root"
    root.mkdir()
    state = probe_storage(root, [one.path, two.path], [])
    v1, v2 = sorted(state.luks_volumes, key=lambda v: v.version)

    def uuid(dev: str) -> str:
        return rig.sh("blkid", "-p", "-o", "value", "-s", "UUID", dev).strip()

    assert (v1.id, v1.device, v1.uuid, v1.cipher, v1.key_size, v1.hash, v1.pbkdf) == (
        f"luks.{one.kname}", f"disk.{one.kname}", uuid(one.path), "aes-cbc-essiv:sha256", 256,
        "sha1", "pbkdf2")
    assert (v2.id, v2.uuid, v2.cipher, v2.key_size, v2.pbkdf, v2.hash) == (
        f"luks.{two.kname}", uuid(two.path), "aes-xts-plain64", 512, "pbkdf2", "sha512")
    assert (v2.label, v2.subsystem, v2.sector_size, v2.name, v2.size) == (
        "probe-me", "tests", 4096, None, None)
    assert rules.check(description(state)) == []
