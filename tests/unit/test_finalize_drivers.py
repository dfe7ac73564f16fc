"""finalize: the drivers this machine's disks need, and the initramfs gap decision."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from resurgo.finalize import drivers
from resurgo.finalize.drivers import Generator
from resurgo.probe.hardware import KernelModules, parse_modules_builtin, parse_modules_dep

DATA = Path(__file__).resolve().parent.parent / "data"
GUEST = DATA / "sys/guest-mixed"
SYS = GUEST / "sys"


def guest_kernel() -> KernelModules:
    """The vm tier guest's kernel (6.1.0-50-amd64), from its recorded index."""
    return KernelModules(
        kernel=(GUEST / "kernel").read_text().strip(),
        deps=parse_modules_dep(gzip.decompress((GUEST / "modules.dep.gz").read_bytes()).decode()),
        builtin=parse_modules_builtin((GUEST / "modules.builtin").read_text()),
        found=True,
    )


@pytest.mark.parametrize(
    ("kname", "chain"),
    [
        ("nvme0n1", [("nvme", "0000:00:04.0")]),
        ("vda", [("virtio_blk", "virtio0"), ("virtio_pci", "0000:00:03.0")]),
        ("vda2", [("virtio_blk", "virtio0"), ("virtio_pci", "0000:00:03.0")]),
        ("sdb", [("sd_mod", "2:0:0:0"), ("ahci", "0000:00:07.0")]),
        (
            "sdc",
            [("sd_mod", "8:0:0:0"), ("virtio_scsi", "virtio1"), ("virtio_pci", "0000:00:05.0")],
        ),
        ("nosuch", []),
    ],
)
def test_the_driver_chain_of_a_disk_in_the_recorded_guest(
    kname: str, chain: list[tuple[str, str]]
) -> None:
    assert drivers.device_chain_modules(kname, SYS) == chain


def test_usb_disk_needs_storage_and_host_controller_drivers_once_each() -> None:
    needed = drivers.needed_modules(["sdd"], SYS)
    assert list(needed) == ["sd_mod", "usb_storage", "usbcore", "xhci_pci"]
    assert needed["xhci_pci"] == "sdd: driver of 0000:00:08.0"


def test_listings_of_lsinitramfs_and_lsinitrd_give_the_same_modules() -> None:
    a = drivers.parse_image_listing((DATA / "finalize/lsinitramfs-bookworm-most.txt").read_text())
    b = drivers.parse_image_listing((DATA / "finalize/lsinitrd-bookworm-most.txt").read_text())
    assert a == b
    assert {"nvme", "nvme_core", "ahci", "libahci", "virtio_blk", "ext4", "sd_mod"} <= a
    assert "conf" not in a and "nvme_host" not in a


def test_a_most_initramfs_already_has_nvme_nothing_to_rebuild() -> None:
    listing = drivers.parse_image_listing(
        (DATA / "finalize/lsinitramfs-bookworm-most.txt").read_text()
    )
    gap = drivers.decide_gap(drivers.needed_modules(["nvme0n1"], SYS), listing, guest_kernel())
    assert gap.missing == () and gap.add == ()
    assert gap.present[:2] == ("nvme", "nvme_core")


def listing(name: str) -> frozenset[str]:
    return drivers.parse_image_listing((DATA / "finalize" / name).read_text())


def test_a_host_only_virtio_initramfs_lacks_nvme_and_its_dependencies() -> None:
    # MODULES=list with virtio_pci, virtio_blk, ext4: the vm tier's target as saved.
    saved = listing("lsinitrd-bookworm-list-virtio.txt")
    kernel = guest_kernel()
    gap = drivers.decide_gap(drivers.needed_modules(["nvme0n1"], SYS), saved, kernel)
    assert gap.missing[:2] == ("nvme", "nvme_core")
    assert set(gap.missing) == {"nvme", *kernel.dependencies("nvme")}
    assert gap.add == ("nvme",)
    assert gap.needed["nvme"] == "nvme0n1: driver of 0000:00:04.0"
    assert gap.needed["nvme_core"] == "needed by nvme"
    # The same image for the virtio disk it was made for: complete.
    same = drivers.decide_gap(drivers.needed_modules(["vda"], SYS), saved, kernel)
    assert same.missing == () and same.present == (
        "virtio_blk",
        "virtio_ring",
        "virtio",
        "virtio_pci",
        "virtio_pci_legacy_dev",
        "virtio_pci_modern_dev",
    )
    # After finalize rebuilt it in the rescue guest: nothing missing any more.
    recovered = listing("lsinitrd-bookworm-list-virtio-nvme.txt")
    after = drivers.decide_gap(drivers.needed_modules(["nvme0n1"], SYS), recovered, kernel)
    assert after.missing == () and after.add == ()
    assert saved < recovered


def test_builtin_and_unknown_modules_are_not_missing() -> None:
    kernel = KernelModules(
        kernel="x",
        deps={"nvme": ("nvme_core",), "nvme_core": ()},
        builtin=frozenset({"ahci"}),
        found=True,
    )
    gap = drivers.decide_gap(
        {"ahci": "sda", "nvme": "nvme0n1", "mpt3sas": "sdb"}, frozenset({"nvme"}), kernel
    )
    assert gap.builtin == ("ahci",) and gap.unknown == ("mpt3sas",)
    assert gap.missing == ("nvme_core",) and gap.add == ("nvme",)


def test_modules_file_gets_only_what_it_lacks_after_a_comment() -> None:
    text = "# List of modules to include in your initramfs.\n#\nvirtio_pci\nvirtio_blk\next4"
    rw = drivers.add_modules(text, ["virtio_blk", "nvme"], "added by resurgo")
    assert rw.text == text + "\n# added by resurgo\nnvme\n"
    assert [(c.line, c.before, c.after) for c in rw.changes] == [
        (6, None, "# added by resurgo"),
        (7, None, "nvme"),
    ]
    assert not drivers.add_modules(rw.text, ["nvme"], "again").changed
    assert drivers.add_modules("", ["nvme"], "c").text == "# c\nnvme\n"


def test_modules_mode_last_assignment_wins_and_dracut_snippet() -> None:
    assert drivers.initramfs_modules_mode(["MODULES=most\n", "# MODULES=dep\n"]) == "most"
    assert drivers.initramfs_modules_mode(["MODULES=most\n", 'MODULES="dep"\n']) == "dep"
    snippet = drivers.dracut_conf(["nvme", "ahci"], "why")
    assert snippet == '# why\nadd_drivers+=" nvme ahci "\n'
    assert drivers.dracut_conf(["ahci"], "again", snippet) is None
    assert drivers.dracut_conf(["virtio_blk"], "more", snippet) == (
        '# more\nadd_drivers+=" nvme ahci virtio_blk "\n'
    )


def test_rebuild_and_lister_commands() -> None:
    assert drivers.rebuild_argv(Generator.INITRAMFS_TOOLS, "6.1.0-50-amd64", True) == [
        "update-initramfs",
        "-u",
        "-k",
        "6.1.0-50-amd64",
    ]
    assert drivers.rebuild_argv(Generator.INITRAMFS_TOOLS, "6.1.0", False)[1] == "-c"
    assert drivers.rebuild_argv(Generator.DRACUT, "6.8.5-301.fc40.x86_64", True) == [
        "dracut",
        "--force",
        "--kver",
        "6.8.5-301.fc40.x86_64",
    ]
    assert drivers.lister_argv(Generator.DRACUT, "/boot/x")[0] == "lsinitrd"


def test_tree_generator_kernels_and_image(tmp_path: Path) -> None:
    assert drivers.detect_generator(tmp_path) is None
    (tmp_path / "usr/sbin").mkdir(parents=True)
    (tmp_path / "usr/bin").mkdir(parents=True)
    (tmp_path / "usr/bin/dracut").touch()
    assert drivers.detect_generator(tmp_path) == Generator.DRACUT
    (tmp_path / "usr/sbin/update-initramfs").touch()
    (tmp_path / "etc/initramfs-tools").mkdir(parents=True)
    assert drivers.detect_generator(tmp_path) == Generator.INITRAMFS_TOOLS
    (tmp_path / "boot").mkdir()
    for v in ("6.1.0-9-amd64", "6.1.0-18-amd64", "5.10.0-28-amd64", "6.1.0-old"):
        (tmp_path / f"boot/vmlinuz-{v}").touch()
        if v != "6.1.0-old":
            (tmp_path / f"lib/modules/{v}").mkdir(parents=True)
    installed = drivers.installed_kernels(tmp_path)
    assert installed == ["5.10.0-28-amd64", "6.1.0-9-amd64", "6.1.0-18-amd64"]
    assert drivers.kernels_to_check(installed, "6.1.0-9-amd64") == [
        "6.1.0-18-amd64",
        "6.1.0-9-amd64",
    ]
    assert drivers.kernels_to_check(installed, "4.19.0") == ["6.1.0-18-amd64"]
    assert drivers.image_path(tmp_path, Generator.INITRAMFS_TOOLS, "6.1.0-18-amd64") == (
        "/boot/initrd.img-6.1.0-18-amd64"
    )
    (tmp_path / "boot/initramfs-6.1.0-18-amd64.img").touch()
    assert drivers.image_path(tmp_path, Generator.DRACUT, "6.1.0-18-amd64") == (
        "/boot/initramfs-6.1.0-18-amd64.img"
    )


def test_the_files_an_initramfs_carries_copies_of() -> None:
    tools, dracut = drivers.Generator.INITRAMFS_TOOLS, drivers.Generator.DRACUT
    for gen in (tools, dracut):
        for path in ("/etc/crypttab", "/etc/mdadm/mdadm.conf", "/etc/mdadm.conf",
                     "/etc/lvm/devices/system.devices"):
            assert drivers.carried_in_image(gen, path), (gen, path)
        assert not drivers.carried_in_image(gen, "/etc/default/grub")
    assert drivers.carried_in_image(tools, "/etc/initramfs-tools/conf.d/resume")
    assert drivers.carried_in_image(tools, "/etc/initramfs-tools/initramfs.conf")
    # initramfs-tools reads fstab from the root it mounted; dracut's host-only image
    # carries it (fstab.sys, the /usr mount).
    assert not drivers.carried_in_image(tools, "/etc/fstab")
    assert drivers.carried_in_image(dracut, "/etc/fstab")
    assert not drivers.carried_in_image(dracut, "/etc/initramfs-tools/conf.d/resume")


def test_the_generator_and_the_disk_drivers_of_a_saved_system() -> None:
    from resurgo.model import Driver, DriverClass

    gen = drivers.generator_of_config
    assert gen(["/etc/fstab", "/etc/initramfs-tools/modules"]) == drivers.Generator.INITRAMFS_TOOLS
    assert gen(["/etc/dracut.conf.d/x.conf"]) == drivers.Generator.DRACUT
    assert gen(["/etc/dracut.conf", "/etc/initramfs-tools/initramfs.conf"]) == (
        drivers.Generator.INITRAMFS_TOOLS)
    assert gen(["/etc/fstab", "/etc/dracut.confx"]) is None
    saved = [Driver("d.0", DriverClass.STORAGE, "pci", "0000:00:07.0", module="ahci",
                    dependencies=("libahci", "libata")),
             Driver("d.1", DriverClass.NETWORK, "pci", "0000:00:03.0", module="e1000")]
    assert drivers.saved_disk_modules(saved, ["/dev/sda"]) == {
        "ahci", "libahci", "libata", "sd_mod"}
    assert drivers.saved_disk_modules(saved, ["/dev/nvme0n1"]) == {"ahci", "libahci", "libata"}


def test_the_tree_is_read_as_its_system_will_see_it_never_beyond(tmp_path: Path) -> None:
    """A restored /boot, /lib/modules or generator that is an absolute symbolic link (a
    crafted set's) is followed inside the tree: the host's own files, which the same
    links name from here, are never taken for the restored system's."""
    host = tmp_path / "host"
    (host / "boot").mkdir(parents=True)
    (host / "boot/vmlinuz-6.1.0-9-amd64").touch()
    (host / "boot/initrd.img-6.1.0-9-amd64").touch()
    (host / "modules/6.1.0-9-amd64").mkdir(parents=True)
    (host / "sbin").mkdir()
    (host / "sbin/update-initramfs").touch()
    (host / "etc-initramfs").mkdir()
    root = tmp_path / "root"
    (root / "lib").mkdir(parents=True)
    (root / "usr/sbin").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "boot").symlink_to(host / "boot")
    (root / "lib/modules").symlink_to(host / "modules")
    (root / "usr/sbin/update-initramfs").symlink_to(host / "sbin/update-initramfs")
    (root / "etc/initramfs-tools").symlink_to(host / "etc-initramfs")
    # From the host every one of them is there...
    assert (root / "boot/vmlinuz-6.1.0-9-amd64").exists()
    assert (root / "usr/sbin/update-initramfs").exists()
    # ...but not in the system the tree is.
    assert drivers.installed_kernels(root) == []
    assert drivers.detect_generator(root) is None
    assert drivers.image_path(root, Generator.DRACUT, "6.1.0-9-amd64") == (
        "/boot/initramfs-6.1.0-9-amd64.img"
    )
    # The same links made relative to the tree's own directories are followed there.
    for name, inside in (("boot", "/srv/boot"), ("lib/modules", "/srv/modules")):
        (root / name).unlink()
        (root / name).symlink_to(inside)
    (root / "srv/boot").mkdir(parents=True)
    (root / "srv/boot/vmlinuz-6.1.0-9-amd64").touch()
    (root / "srv/boot/initrd.img-6.1.0-9-amd64").touch()
    (root / "srv/modules/6.1.0-9-amd64").mkdir(parents=True)
    assert drivers.installed_kernels(root) == ["6.1.0-9-amd64"]
    assert drivers.image_path(root, Generator.DRACUT, "6.1.0-9-amd64") == (
        "/boot/initrd.img-6.1.0-9-amd64"
    )


def test_only_a_regular_image_is_handed_to_a_lister(tmp_path: Path) -> None:
    """A crafted set's "initramfs" that is a FIFO (a lister would wait on it for ever) or
    a link to a device node is never listed; a regular one, through a link, is."""
    import os
    import stat

    (tmp_path / "boot").mkdir()
    (tmp_path / "dev").mkdir()
    os.mkfifo(tmp_path / "boot/initrd.img-fifo")
    if os.geteuid() == 0:  # a device node as a restore makes one
        os.mknod(tmp_path / "dev/null", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    else:
        os.mkfifo(tmp_path / "dev/null")
    (tmp_path / "boot/initrd.img-dev").symlink_to("/dev/null")
    (tmp_path / "boot/initrd.img-real").write_bytes(b"070701")
    (tmp_path / "boot/initrd.img-link").symlink_to("initrd.img-real")
    assert drivers.regular_in_tree(tmp_path, "/boot/initrd.img-fifo") is None
    assert drivers.regular_in_tree(tmp_path, "/boot/initrd.img-dev") is None
    assert drivers.regular_in_tree(tmp_path, "/boot/initrd.img-none") is None
    assert drivers.regular_in_tree(tmp_path, "/boot/initrd.img-link") == (
        tmp_path / "boot/initrd.img-real")
