"""probe.hardware on recorded sysfs trees and a recorded Debian kernel's module index."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import pytest

from resurgo.model import Disk, DriverClass, Filesystem, FsType, LogicalVolume, LvType, RaidArray
from resurgo.probe import hardware
from resurgo.probe.state import StorageState

DATA = Path(__file__).parent.parent / "data" / "sys"
HOST = DATA / "host-virtio"
GUEST = DATA / "guest-mixed"
GUEST_SYS = GUEST / "sys"


@pytest.fixture(scope="module")
def guest_modules() -> hardware.KernelModules:
    return hardware.KernelModules(
        kernel=(GUEST / "kernel").read_text().strip(),
        deps=hardware.parse_modules_dep(
            gzip.decompress((GUEST / "modules.dep.gz").read_bytes()).decode()
        ),
        builtin=hardware.parse_modules_builtin((GUEST / "modules.builtin").read_text()),
        config=hardware.parse_kernel_config((GUEST / "config").read_text()),
        found=True,
    )


NO_MODULES = hardware.KernelModules(kernel="6.18.44-fc-v669")


# --- module index -------------------------------------------------------------------------


def test_module_names() -> None:
    assert hardware.module_name("kernel/drivers/md/md-mod.ko") == "md_mod"
    assert hardware.module_name("kernel/fs/fat/vfat.ko.xz") == "vfat"
    assert hardware.module_name("kernel/drivers/nvme/host/nvme-core.ko.zst") == "nvme_core"
    assert hardware.module_name("virtio-pci") == "virtio_pci"


def test_recorded_modules_dep(guest_modules: hardware.KernelModules) -> None:
    deps = guest_modules.deps
    assert len(deps) > 3000
    assert deps["virtio_blk"] == ("virtio_ring", "virtio")
    assert deps["raid1"] == ("md_mod",)
    assert deps["md_mod"] == ()
    assert deps["dm_crypt"][-1] == "dm_mod" or "dm_mod" in deps["dm_crypt"]
    assert "libcrc32c" in deps["xfs"]
    assert {"unix", "crc32c_generic"} & guest_modules.builtin
    assert guest_modules.config["CONFIG_FAT_DEFAULT_IOCHARSET"] == "ascii"
    assert guest_modules.config["CONFIG_FAT_DEFAULT_CODEPAGE"] == "437"
    assert "CONFIG_EXT2_FS" not in guest_modules.config


def test_kernel_modules_load_from_a_tree(tmp_path: Path) -> None:
    version = (GUEST / "kernel").read_text().strip()
    mods = tmp_path / "usr/lib/modules" / version
    mods.mkdir(parents=True)
    (tmp_path / "lib").symlink_to("usr/lib")
    (mods / "modules.dep").write_bytes(gzip.decompress((GUEST / "modules.dep.gz").read_bytes()))
    (mods / "modules.builtin").write_text((GUEST / "modules.builtin").read_text())
    (tmp_path / "boot").mkdir()
    (tmp_path / "boot" / f"config-{version}").write_text((GUEST / "config").read_text())
    km = hardware.KernelModules.load(tmp_path, version)
    assert km.found and km.kernel == version
    assert km.deps["vfat"] == ("fat",)
    assert km.config["CONFIG_NLS_ASCII"] == "m"
    missing = hardware.KernelModules.load(tmp_path, "0.0.0-none")
    assert not missing.found and missing.deps == {}


def test_kernel_config_parser() -> None:
    cfg = hardware.parse_kernel_config(
        '# comment\nCONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C="ascii"\nCONFIG_D=437\n'
    )
    assert cfg == {"CONFIG_A": "y", "CONFIG_C": "ascii", "CONFIG_D": "437"}


# --- required modules ---------------------------------------------------------------------


def test_required_modules(guest_modules: hardware.KernelModules) -> None:
    got = hardware.required_modules(
        ["ext4", "vfat", "xfs", "btrfs", "ext2", "swap", "nosuchfs"],
        ["raid1", "raid5", "luks", "lvm", "lvm-thin"],
        guest_modules,
    )
    by_name = {m.name: m for m in got}
    assert list(by_name) == [
        "btrfs",
        "ext4",
        "vfat",
        "nls_cp437",
        "nls_ascii",
        "xfs",
        "dm_crypt",
        "dm_mod",
        "dm_thin_pool",
        "md_mod",
        "raid1",
        "raid456",
    ]
    assert by_name["ext4"].reason == "filesystem ext2, filesystem ext4"
    assert by_name["vfat"].dependencies == ("fat",)
    assert by_name["nls_cp437"].reason == "filesystem vfat"
    assert by_name["raid456"].reason == "volume raid5"
    assert "md_mod" in by_name["raid456"].dependencies
    assert by_name["md_mod"].reason == "volume raid1, volume raid5"
    assert "dm_mod" in by_name["dm_crypt"].dependencies
    assert "dm_persistent_data" in by_name["dm_thin_pool"].dependencies
    assert not any(m.builtin for m in got)  # Debian builds all of these as modules


def test_required_modules_builtin_and_unknown_kernel() -> None:
    km = hardware.KernelModules(
        deps={"xfs": ("libcrc32c",), "libcrc32c": ()}, builtin=frozenset({"ext4"}), found=True
    )
    got = {m.name: m for m in hardware.required_modules(["ext4", "xfs"], [], km)}
    assert got["ext4"].builtin and got["ext4"].dependencies == ()
    assert not got["xfs"].builtin and got["xfs"].dependencies == ("libcrc32c",)
    # Without a modules.dep nothing can be checked: the names are kept, bare.
    bare = hardware.required_modules(["vfat"], ["raid10"], NO_MODULES)
    assert [m.name for m in bare] == ["vfat", "nls_cp437", "nls_iso8859_1", "md_mod", "raid10"]
    assert all(m.dependencies == () and not m.builtin for m in bare)


def test_volume_kinds_of_storage() -> None:
    state = StorageState(
        filesystems=[
            Filesystem(id="fs.a", device="x", type=FsType.EXT4),
            Filesystem(id="fs.b", device="y", type=FsType.OTHER, type_name="f2fs"),
        ],
        raid_arrays=[
            RaidArray(
                id="md.md0",
                path="/dev/md0",
                level="raid1",
                metadata="1.2",
                uuid="u",
                members=(),
                size=1,
            )
        ],
        logical_volumes=[
            LogicalVolume(
                id="lv.vg.a", volume_group="vg.vg", name="a", uuid="u", size=1, type=LvType.THIN
            ),
            LogicalVolume(
                id="lv.vg.b", volume_group="vg.vg", name="b", uuid="u", size=1, type=LvType.RAID5
            ),
        ],
    )
    fs_types, kinds = hardware.volume_kinds_of(state)
    assert fs_types == {"ext4", "f2fs"}
    assert kinds == {"raid1", "lvm", "lvm-thin", "lvm-raid"}


# --- drivers ------------------------------------------------------------------------------


def test_drivers_recorded_guest(guest_modules: hardware.KernelModules) -> None:
    drivers = hardware.probe_drivers(sysfs=GUEST_SYS, modules=guest_modules, warnings=[])
    got = [(d.id, d.device_class, d.module) for d in drivers]
    STO, NET, OTH = DriverClass.STORAGE, DriverClass.NETWORK, DriverClass.OTHER
    assert got == [
        ("drv.pci.0000:00:01.1", STO, "ata_piix"),
        ("drv.pci.0000:00:03.0", STO, "virtio_pci"),
        ("drv.pci.0000:00:04.0", STO, "nvme"),
        ("drv.pci.0000:00:05.0", STO, "virtio_pci"),
        ("drv.pci.0000:00:06.0", STO, "virtio_pci"),
        ("drv.pci.0000:00:07.0", STO, "ahci"),
        ("drv.virtio.virtio0", STO, "virtio_blk"),
        ("drv.virtio.virtio1", STO, "virtio_scsi"),
        ("drv.virtio.virtio2", STO, "virtio_blk"),
        ("drv.usb.2-1:1.0", STO, "usb_storage"),
        ("drv.pci.0000:00:09.0", NET, "e1000"),
        # Bound "other" devices are kept; the host bridge and ISA bridge (no driver) are not.
        ("drv.pci.0000:00:01.3", OTH, "i2c_piix4"),
        ("drv.pci.0000:00:02.0", OTH, "bochs"),
        ("drv.pci.0000:00:08.0", OTH, "xhci_pci"),
    ]
    by_id = {d.id: d for d in drivers}
    nvme = by_id["drv.pci.0000:00:04.0"]
    assert (nvme.vendor, nvme.device, nvme.bus, nvme.address) == (
        "0x1b36",
        "0x0010",
        "pci",
        "0000:00:04.0",
    )
    assert nvme.modalias == "pci:v00001B36d00000010sv00001AF4sd00001100bc01sc08i02"
    assert nvme.description == "Non-Volatile memory controller"
    assert nvme.dependencies[0] == "nvme_core"
    ahci = by_id["drv.pci.0000:00:07.0"]
    assert ahci.dependencies == ("libahci", "libata", "scsi_mod", "scsi_common")
    usb = by_id["drv.usb.2-1:1.0"]
    assert (usb.vendor, usb.device) == ("46f4", "0001")
    assert "usbcore" in usb.dependencies
    assert by_id["drv.virtio.virtio1"].description == "virtio SCSI host"
    assert by_id["drv.virtio.virtio0"].dependencies == ("virtio_ring", "virtio")
    # The SCSI hosts all hang off a PCI, virtio or USB device already listed.
    assert not any(d.bus == "scsi_host" for d in drivers)


def test_drivers_recorded_host_builtin() -> None:
    warnings: list[str] = []
    drivers = hardware.probe_drivers(sysfs=HOST, modules=NO_MODULES, warnings=warnings)
    got = [(d.id, d.device_class, d.module) for d in drivers]
    STO, NET, OTH = DriverClass.STORAGE, DriverClass.NETWORK, DriverClass.OTHER
    assert got == [
        ("drv.pci.0000:00:02.0", STO, "virtio_pci"),
        ("drv.virtio.virtio1", STO, "virtio_blk"),
        ("drv.pci.0000:00:03.0", NET, "virtio_pci"),
        ("drv.virtio.virtio2", NET, "virtio_net"),
        ("drv.pci.0000:00:01.0", OTH, "virtio_pci"),
        ("drv.pci.0000:00:04.0", OTH, "virtio_pci"),
        ("drv.pci.0000:00:05.0", OTH, "virtio_pci"),
        ("drv.virtio.virtio0", OTH, "virtio_balloon"),
        ("drv.virtio.virtio3", OTH, "vmw_vsock_virtio_transport"),
        ("drv.virtio.virtio4", OTH, "virtio_rng"),
    ]
    assert all(d.dependencies == () for d in drivers)
    assert len(warnings) == 1 and "modules.dep" in warnings[0]


def test_disk_controller_recorded() -> None:
    expect = {
        "nvme0n1": "drv.pci.0000:00:04.0",
        "sda": "drv.pci.0000:00:01.1",  # PIIX IDE
        "sdb": "drv.pci.0000:00:07.0",  # AHCI
        "sdc": "drv.virtio.virtio1",  # virtio-scsi
        "sdd": "drv.usb.2-1:1.0",  # USB mass storage
        "vda": "drv.virtio.virtio0",
        "vda3": "drv.virtio.virtio0",  # a partition answers for its disk
        "vdb": "drv.virtio.virtio2",
    }
    assert {k: hardware.disk_controller(k, GUEST_SYS) for k in expect} == expect
    assert hardware.disk_controller("vda", HOST) == "drv.virtio.virtio1"
    assert hardware.disk_controller("zram0", HOST) is None
    assert hardware.disk_controller("sdz", HOST) is None


def test_every_disk_controller_is_a_listed_driver(
    guest_modules: hardware.KernelModules,
) -> None:
    listed = {
        d.id for d in hardware.probe_drivers(sysfs=GUEST_SYS, modules=guest_modules, warnings=[])
    }
    for kname in os.listdir(GUEST_SYS / "class/block"):
        assert hardware.disk_controller(kname, GUEST_SYS) in listed


def test_fabric_nvme_and_software_scsi_host(tmp_path: Path) -> None:
    """Controllers with no PCI/virtio/USB device: built by hand, the way sysfs lays them out."""
    sysfs = tmp_path
    nvme = sysfs / "devices/virtual/nvme-fabrics/ctl/nvme1"
    nvme.mkdir(parents=True)
    (nvme / "transport").write_text("tcp\n")
    (sysfs / "class/nvme").mkdir(parents=True)
    (sysfs / "class/nvme/nvme1").symlink_to("../../devices/virtual/nvme-fabrics/ctl/nvme1")
    (nvme / "subsystem").symlink_to("../../../../../class/nvme")
    host = sysfs / "devices/platform/host3"
    (host / "scsi_host/host3").mkdir(parents=True)
    (host / "scsi_host/host3/proc_name").write_text("iscsi_tcp\n")
    (sysfs / "bus/scsi").mkdir(parents=True)
    (host / "subsystem").symlink_to("../../../bus/scsi")
    (sysfs / "class/scsi_host").mkdir(parents=True)
    (sysfs / "class/scsi_host/host3").symlink_to("../../devices/platform/host3/scsi_host/host3")
    km = hardware.KernelModules(deps={"nvme_tcp": ("nvme_fabrics", "nvme_core")}, found=True)
    got = {d.id: d for d in hardware.probe_drivers(sysfs=sysfs, modules=km, warnings=[])}
    assert set(got) == {"drv.nvme.nvme1", "drv.scsi_host.host3"}
    assert got["drv.nvme.nvme1"].module == "nvme_tcp"
    assert got["drv.nvme.nvme1"].dependencies == ("nvme_fabrics", "nvme_core")
    assert got["drv.scsi_host.host3"].module == "iscsi_tcp"
    assert all(d.device_class == DriverClass.STORAGE for d in got.values())


def test_recorder_is_faithful_to_the_live_sysfs(tmp_path: Path) -> None:
    """Record this machine's /sys now: the probe must see the same in both."""
    dest = tmp_path / "sys"
    subprocess.run([sys.executable, str(DATA / "record_sysfs.py"), str(dest)], check=True)
    live = hardware.probe_drivers(sysfs=Path("/sys"), modules=NO_MODULES, warnings=[])
    assert hardware.probe_drivers(sysfs=dest, modules=NO_MODULES, warnings=[]) == live
    for kname in os.listdir("/sys/class/block"):
        if not kname.startswith(("loop", "ram", "nbd")):
            assert hardware.disk_controller(kname, dest) == hardware.disk_controller(kname)


def test_required_modules_from_storage(guest_modules: hardware.KernelModules) -> None:
    state = StorageState(
        filesystems=[Filesystem(id="fs.a", device="x", type=FsType.XFS)],
        raid_arrays=[
            RaidArray(
                id="md.md0",
                path="/dev/md0",
                level="raid1",
                metadata="1.2",
                uuid="u",
                members=(),
                size=1,
            )
        ],
    )
    got = hardware.required_modules(state, modules=guest_modules)
    assert [(m.name, m.reason) for m in got] == [
        ("xfs", "filesystem xfs"),
        ("md_mod", "volume raid1"),
        ("raid1", "volume raid1"),
    ]


def test_drivers_check_the_disks_of_the_description(
    guest_modules: hardware.KernelModules,
) -> None:
    def disk(kname: str) -> Disk:
        return Disk(
            id=f"disk.{kname}",
            path=f"/dev/{kname}",
            size=1,
            logical_sector_size=512,
            physical_sector_size=512,
        )

    state = StorageState(
        disks=[disk("vda"), disk("nvme0n1"), disk("sdd"), disk("sdz")], knames={"disk.vda": "vda"}
    )
    warnings: list[str] = []
    drivers = hardware.probe_drivers(
        state, sysfs=GUEST_SYS, modules=guest_modules, warnings=warnings
    )
    assert len(drivers) == 14
    assert warnings == [
        f"/dev/sdz: no controller found for it in {GUEST_SYS}; the description "
        "names no driver for this disk"
    ]
