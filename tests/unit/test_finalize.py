"""finalize end to end on a restored tree in a directory: every step short of the chroot.

The tree is a virtio system (saved on /dev/vda) recovered onto NVMe (/dev/nvme0n1); the
machine is the vm tier guest's recorded sysfs (tests/data/sys/guest-mixed) with one NIC
added. The initramfs is a real (tiny) gzip'd newc cpio listed by the host's lsinitrd or
lsinitramfs. Rebuilding it and installing GRUB need a chroot into a real system: the vm
tier (tests/vm/test_finalize_boot.py) does those.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from resurgo import finalize, run
from resurgo.errors import BadInput
from resurgo.finalize import FinalizeOptions, StepStatus
from resurgo.model import Bootloader, BootloaderKind, ConfigFile, Description, Firmware
from resurgo.plan import make_plan
from resurgo.plan.model import Plan, PlanOptions
from resurgo.rescue import cpio
from tests.support.builders import actual, standard

DATA = Path(__file__).resolve().parent.parent / "data"
GUEST = DATA / "sys/guest-mixed"
KERNEL = "6.1.0-50-amd64"
ROOT_UUID = "11111111-2222-4333-8444-001575145378"
SWAP_UUID = "33333333-4444-4555-8666-777777777777"
OLD_MAC = "52:54:00:12:34:56"
NEW_MAC = "52:54:00:9a:bc:de"

FSTAB = (
    "# <file system> <mount point> <type> <options> <dump> <pass>\n"
    "/dev/vda3 / ext4 errors=remount-ro 0 1\n"
    "UUID=11111111-2222-4333-8444-000719716148 /boot ext4 defaults 0 2\n"
    "UUID=ABCD-1234 /boot/efi vfat umask=0077 0 1\n"
    "/dev/vda4 none swap sw 0 0\n"
)
GRUB_DEFAULT = 'GRUB_TIMEOUT=0\nGRUB_CMDLINE_LINUX="resume=/dev/vda4"\n'
GRUB_CFG = "menuentry 'Debian' {\n\tlinux\t/vmlinuz-6.1.0-50-amd64 root=/dev/vda3 ro quiet\n}\n"
NM = (
    "[connection]\nid=Wired connection 1\ntype=ethernet\ninterface-name=ens3\n\n"
    f"[ethernet]\nmac-address={OLD_MAC}\n\n[ipv4]\nmethod=auto\n"
)
NM_PATH = "etc/NetworkManager/system-connections/Wired connection 1.nmconnection"
RULES = (
    "# PCI device 0x1af4:0x1000 (virtio-pci)\n"
    f'SUBSYSTEM=="net", ACTION=="add", DRIVERS=="?*", ATTR{{address}}=="{OLD_MAC}", '
    'NAME="ens3"\n'
)
VIRTIO_ONLY = (
    "kernel/drivers/virtio/virtio.ko",
    "kernel/drivers/virtio/virtio_ring.ko",
    "kernel/drivers/virtio/virtio_pci.ko",
    "kernel/drivers/virtio/virtio_pci_modern_dev.ko",
    "kernel/drivers/virtio/virtio_pci_legacy_dev.ko",
    "kernel/drivers/block/virtio_blk.ko",
    "kernel/fs/ext4/ext4.ko",
)
WITH_NVME = (
    *VIRTIO_ONLY,
    "kernel/drivers/nvme/host/nvme.ko",
    "kernel/drivers/nvme/host/nvme-core.ko",
    "kernel/block/t10-pi.ko",
    "kernel/lib/crc64-rocksoft.ko",
    "kernel/lib/crc-t10dif.ko",
    "kernel/lib/crc64.ko",
    "kernel/crypto/crct10dif_common.ko",
)


def description() -> Description:
    desc = standard(name="vda", transport="virtio")
    system = dataclasses.replace(
        desc.system,
        firmware=Firmware.BIOS,
        kernel=KERNEL,
        bootloader=Bootloader(BootloaderKind.GRUB_PC, disks=("disk.vda",)),
    )
    return dataclasses.replace(desc, system=system)


def plan_for(desc: Description) -> Plan:
    plan = make_plan(desc, [actual("nvme0n1", transport="nvme")], PlanOptions(which=str))
    assert plan.ok, plan.failures
    return plan


def initramfs(
    path: Path, modules: tuple[str, ...], work: Path, files: dict[str, str] | None = None
) -> None:
    """A gzip'd newc cpio holding (empty) module files, as mkinitramfs lays them out, and
    ``files`` (name: text)."""
    stage = work / "initramfs"
    names = ["conf", "conf/initramfs.conf", *(files or {})]
    for m in modules:
        names.append(f"usr/lib/modules/{KERNEL}/{m}")
    for n in names:
        p = stage / n
        if n == "conf":
            p.mkdir(parents=True, exist_ok=True)
            continue
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text((files or {}).get(n, ""))
    dirs = sorted({str(Path(n).parent) for n in names if "/" in n})
    archive = subprocess.run(
        ["cpio", "-o", "-H", "newc", "--quiet"],
        input="\n".join([*dirs, *names]).encode(),
        cwd=stage,
        capture_output=True,
        check=True,
    ).stdout
    path.write_bytes(gzip.compress(archive))
    shutil.rmtree(stage)


def make_tree(root: Path, modules: tuple[str, ...] = VIRTIO_ONLY) -> None:
    files = {
        "etc/fstab": FSTAB,
        "etc/default/grub": GRUB_DEFAULT,
        "boot/grub/grub.cfg": GRUB_CFG,
        NM_PATH: NM,
        "etc/udev/rules.d/70-persistent-net.rules": RULES,
        "etc/initramfs-tools/initramfs.conf": "MODULES=list\nCOMPRESS=gzip\n",
        "etc/initramfs-tools/modules": "virtio_pci\nvirtio_blk\next4\n",
        f"boot/vmlinuz-{KERNEL}": "",
        "usr/sbin/update-initramfs": "#!/bin/sh\n",
        f"lib/modules/{KERNEL}/modules.dep": gzip.decompress(
            (GUEST / "modules.dep.gz").read_bytes()
        ).decode(),
        f"lib/modules/{KERNEL}/modules.builtin": (GUEST / "modules.builtin").read_text(),
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    (root / NM_PATH).chmod(0o600)
    initramfs(root / f"boot/initrd.img-{KERNEL}", modules, root.parent)


def machine(base: Path) -> Path:
    """The recorded guest's sysfs plus a virtio NIC ens3 -> here named enp0s9."""
    sysfs = base / "sys"
    shutil.copytree(GUEST / "sys", sysfs, symlinks=True)
    net = sysfs / "devices/pci0000:00/0000:00:09.0/net/enp0s9"
    net.mkdir(parents=True)
    (net / "address").write_text(NEW_MAC + "\n")
    os.symlink("../../../0000:00:09.0", net / "device")
    (sysfs / "class/net").mkdir()
    os.symlink("../../devices/pci0000:00/0000:00:09.0/net/enp0s9", sysfs / "class/net/enp0s9")
    return sysfs


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mode)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


needs_lister = pytest.mark.skipif(
    not (run.which("lsinitrd") or run.which("lsinitramfs")), reason="no lsinitrd/lsinitramfs"
)
no_nvme_here = pytest.mark.skipif(
    Path("/dev/nvme0n1").exists(), reason="this machine has an nvme0n1: blkid would read it"
)


@needs_lister
@no_nvme_here
def test_dry_run_finds_every_rewrite_and_the_missing_driver_and_writes_nothing(
    tmp_path: Path,
) -> None:
    root = tmp_path / "root"
    make_tree(root)
    before = snapshot(root)
    desc = description()
    opts = FinalizeOptions(dry_run=True, sysfs=machine(tmp_path))
    r = finalize.finalize(desc, plan_for(desc), root, opts)
    assert snapshot(root) == before
    assert r.dry_run and r.ok and r.log is None, r.errors
    assert not (root / "var/log").exists()
    changed = {f.path: f for f in r.files}
    assert sorted(changed) == [
        "/boot/grub/grub.cfg",
        "/etc/NetworkManager/system-connections/Wired connection 1.nmconnection",
        "/etc/default/grub",
        "/etc/fstab",
        "/etc/initramfs-tools/modules",
        "/etc/udev/rules.d/70-persistent-net.rules",
    ]
    assert not any(f.written for f in r.files)
    assert [c.line for c in changed["/etc/fstab"].changes] == [2, 5]
    assert changed["/etc/initramfs-tools/modules"].changes[-1].after == "nvme"
    [check] = r.initramfs
    assert check.kernel == KERNEL and check.image == f"/boot/initrd.img-{KERNEL}"
    assert check.missing[:2] == ("nvme", "nvme_core") and not check.rebuilt
    assert [(c.argv, c.status, c.chroot) for c in r.commands] == [
        (("update-initramfs", "-u", "-k", KERNEL), StepStatus.PLANNED, True),
        (("grub-install", "--target=i386-pc", "/dev/nvme0n1"), StepStatus.PLANNED, True),
        (("grub-mkconfig", "-o", "/boot/grub/grub.cfg"), StepStatus.PLANNED, True),
    ]
    assert [(n.old_name, n.new_name, n.by) for n in r.nics] == [("ens3", "enp0s9", "order")]
    text = finalize.text(r)
    assert "dry run" in text and "missing: nvme, nvme_core" in text
    assert finalize.data(r)["commands"][0]["status"] == "planned"


@needs_lister
@no_nvme_here
def test_files_are_written_with_their_modes_and_the_recovery_is_logged(tmp_path: Path) -> None:
    root = tmp_path / "root"
    make_tree(root, WITH_NVME)
    desc = description()
    opts = FinalizeOptions(sysfs=machine(tmp_path), bootloader=False)
    r = finalize.finalize(desc, plan_for(desc), root, opts)
    assert r.ok, r.errors
    assert (root / "etc/fstab").read_text() == FSTAB.replace(
        "/dev/vda3 /", f"UUID={ROOT_UUID} /"
    ).replace("/dev/vda4 none", f"UUID={SWAP_UUID} none")
    assert (root / "etc/default/grub").read_text() == GRUB_DEFAULT.replace(
        "resume=/dev/vda4", f"resume=UUID={SWAP_UUID}"
    )
    assert f"root=UUID={ROOT_UUID} ro quiet" in (root / "boot/grub/grub.cfg").read_text()
    nm = root / NM_PATH
    assert nm.read_text() == NM.replace("interface-name=ens3", "interface-name=enp0s9").replace(
        OLD_MAC, NEW_MAC
    )
    assert nm.stat().st_mode & 0o777 == 0o600
    assert (root / "etc/udev/rules.d/70-persistent-net.rules").read_text() == ""
    assert (root / "etc/initramfs-tools/modules").read_text() == "virtio_pci\nvirtio_blk\next4\n"
    [check] = r.initramfs
    assert check.missing == () and not check.rebuilt and r.commands == ()
    assert any(n.startswith("initramfs already has: nvme, nvme_core") for n in r.notes)
    assert all(f.written for f in r.files)
    assert r.log is not None and r.log.startswith("/var/log/resurgo/recovery-")
    log = root / r.log.lstrip("/")
    assert log.stat().st_mode & 0o777 == 0o600
    recorded = log.read_text()
    assert "/etc/fstab (written)" in recorded
    assert f"+ UUID={ROOT_UUID} / ext4 errors=remount-ro 0 1" in recorded
    assert "because fs.vda3 was /dev/vda3 and is now /dev/nvme0n1p3" in recorded
    assert f"record of this recovery: {r.log}" in recorded
    # Run again: nothing left to change.
    again = finalize.finalize(desc, plan_for(desc), root, opts)
    assert again.ok and again.files == ()


def test_preview_uses_the_description_copy_of_the_configuration(tmp_path: Path) -> None:
    desc = dataclasses.replace(
        description(),
        config_files=(
            ConfigFile("cfg.fstab", "/etc/fstab", FSTAB),
            ConfigFile("cfg.grub", "/boot/grub/grub.cfg", GRUB_CFG),
        ),
    )
    r = finalize.preview(desc, plan_for(desc), FinalizeOptions(sysfs=machine(tmp_path)))
    assert r.dry_run and r.log is None
    assert [f.path for f in r.files] == ["/etc/fstab", "/boot/grub/grub.cfg"]
    assert r.files[1].changes[0].after == (
        f"\tlinux\t/vmlinuz-6.1.0-50-amd64 root=UUID={ROOT_UUID} ro quiet"
    )
    assert all(c.status == StepStatus.PLANNED for c in r.commands)
    assert "checked after the restore" in " ".join(r.notes)


def test_a_wrong_net_map_stops_before_any_change(tmp_path: Path) -> None:
    root = tmp_path / "root"
    make_tree(root)
    before = snapshot(root)
    desc = description()
    opts = FinalizeOptions(sysfs=machine(tmp_path), net_map=(("ens3", "eth7"),))
    with pytest.raises(BadInput, match="eth7"):
        finalize.finalize(desc, plan_for(desc), root, opts)
    assert snapshot(root) == before


@needs_lister
@no_nvme_here
def test_a_dracut_system_gets_a_drivers_snippet_and_a_dracut_rebuild(tmp_path: Path) -> None:
    root = tmp_path / "root"
    make_tree(root)
    shutil.rmtree(root / "etc/initramfs-tools")
    (root / "usr/sbin/update-initramfs").unlink()
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/dracut").write_text("#!/bin/sh\n")
    (root / f"boot/initrd.img-{KERNEL}").rename(root / f"boot/initramfs-{KERNEL}.img")
    desc = description()
    opts = FinalizeOptions(dry_run=True, sysfs=machine(tmp_path), network=False)
    r = finalize.finalize(desc, plan_for(desc), root, opts)
    assert r.ok, r.errors
    snippet = next(f for f in r.files if f.path == "/etc/dracut.conf.d/resurgo-drivers.conf")
    assert snippet.created and not snippet.written
    assert snippet.changes[-1].after == 'add_drivers+=" nvme "'
    assert r.commands[0].argv == ("dracut", "--force", "--kver", KERNEL)
    assert r.initramfs[0].image == f"/boot/initramfs-{KERNEL}.img"
    assert r.initramfs[0].generator == "dracut"
    assert not (root / "etc/dracut.conf.d").exists()


@no_nvme_here
def test_net_ifnames_0_keeps_eth0_and_moves_its_mac(tmp_path: Path) -> None:
    root = tmp_path / "root"
    make_tree(root)
    (root / "etc/default/grub").write_text('GRUB_CMDLINE_LINUX="net.ifnames=0"\n')
    (root / NM_PATH).write_text(NM.replace("ens3", "eth0"))
    desc = description()
    opts = FinalizeOptions(
        sysfs=machine(tmp_path), drivers=False, bootloader=False, net_map=(("eth0", "eth0"),)
    )
    r = finalize.finalize(desc, plan_for(desc), root, opts)
    assert r.ok, r.errors
    assert (root / NM_PATH).read_text() == NM.replace("ens3", "eth0").replace(OLD_MAC, NEW_MAC)
    assert [(n.old_name, n.new_name, n.by) for n in r.nics] == [("eth0", "eth0", "map")]
    assert any("net.ifnames=0" in n for n in r.notes)


def test_files_the_commands_made_or_changed_under_boot_are_listed(tmp_path: Path) -> None:
    from resurgo.finalize import identity
    from resurgo.finalize.model import CommandRecord
    from resurgo.finalize.steps import Finalizer
    from resurgo.finalize.tree import RootTree

    root = tmp_path / "root"
    make_tree(root)
    desc = description()
    plan = plan_for(desc)
    f = Finalizer(desc, plan, RootTree(root), root, FinalizeOptions(), identity.planned(desc, plan))
    before = f.boot_state()
    assert f"/boot/initrd.img-{KERNEL}" in before and "/boot/grub/grub.cfg" in before
    image = root / f"boot/initrd.img-{KERNEL}"
    image.write_bytes(image.read_bytes() + b"\0")  # as a rebuild would
    (root / "boot/grub/i386-pc").mkdir()
    (root / "boot/grub/i386-pc/core.img").write_bytes(b"core")
    f.note_regenerated(before)
    assert f.files == []  # no command ran: nothing to ascribe to one
    f.commands.append(CommandRecord(("update-initramfs",), "why", StepStatus.DONE))
    f.note_regenerated(before)
    assert [(x.path, x.written, x.created, x.regenerated, x.changes) for x in f.files] == [
        ("/boot/grub/i386-pc/core.img", True, True, True, ()),
        (f"/boot/initrd.img-{KERNEL}", True, False, True, ()),
    ]
    text = finalize.text(f.report())
    assert "made or changed by the commands below:\n  /boot/grub/i386-pc/core.img (new)" in text
    for n in range(4):
        (root / f"boot/grub/i386-pc/m{n}.mod").write_bytes(b"m")
    f.files.clear()
    f.note_regenerated(before)
    text = finalize.text(f.report())
    assert "  /boot/grub/i386-pc/ (5 files, 5 new)\n" in text
    assert f"  /boot/initrd.img-{KERNEL}\n" in text


@needs_lister
@no_nvme_here
def test_an_initramfs_carrying_a_rewritten_file_is_rebuilt_though_no_driver_lacks(
    tmp_path: Path,
) -> None:
    # Hibernation's swap renamed in conf.d/resume: the initramfs resumes by its own copy
    # (as a root on LUKS or md is unlocked and assembled by its crypttab and mdadm.conf).
    root = tmp_path / "root"
    make_tree(root, WITH_NVME)
    (root / "etc/initramfs-tools/conf.d").mkdir()
    (root / "etc/initramfs-tools/conf.d/resume").write_text("RESUME=/dev/vda4\n")
    desc = description()
    opts = FinalizeOptions(dry_run=True, sysfs=machine(tmp_path), bootloader=False)
    r = finalize.finalize(desc, plan_for(desc), root, opts)
    assert r.ok, r.errors
    resume = next(f for f in r.files if f.path == "/etc/initramfs-tools/conf.d/resume")
    assert resume.changes[0].after == f"RESUME=UUID={SWAP_UUID}"
    [check] = r.initramfs
    assert check.missing == ()
    [cmd] = r.commands
    assert cmd.argv == ("update-initramfs", "-u", "-k", KERNEL)
    assert cmd.status == StepStatus.PLANNED
    assert "carries a copy of /etc/initramfs-tools/conf.d/resume" in cmd.why
    assert "lacks" not in cmd.why
    # The same tree whose resume names the swap by its UUID already: nothing to rebuild.
    (root / "etc/initramfs-tools/conf.d/resume").write_text(f"RESUME=UUID={SWAP_UUID}\n")
    again = finalize.finalize(desc, plan_for(desc), root, opts)
    assert again.ok and again.commands == (), again.commands


def _resume_by_device(tmp_path: Path) -> tuple[Path, Path]:
    """A restored tree whose conf.d/resume names a kernel device, its initramfs carrying a
    copy of it (no driver lacking): the root and the image."""
    root = tmp_path / "root"
    make_tree(root, WITH_NVME)
    (root / "etc/initramfs-tools/conf.d").mkdir()
    (root / "etc/initramfs-tools/conf.d/resume").write_text("RESUME=/dev/vda4\n")
    image = root / f"boot/initrd.img-{KERNEL}"
    initramfs(image, WITH_NVME, tmp_path, {"conf/conf.d/resume": "RESUME=/dev/vda4\n"})
    return root, image


@needs_lister
@no_nvme_here
def test_a_rewritten_file_the_initramfs_carries_is_renamed_in_the_image_without_a_rebuild(
    tmp_path: Path,
) -> None:
    # No driver lacks: the image's own copy of conf.d/resume is renamed as the file is,
    # and update-initramfs (minutes under emulation) is not run.
    root, image = _resume_by_device(tmp_path)
    desc = description()
    opts = FinalizeOptions(sysfs=machine(tmp_path), bootloader=False, log_dir="/var/log/r")
    told: list[str] = []
    r = finalize.finalize(desc, plan_for(desc), root, opts, told.append)
    assert r.ok, r.errors
    assert r.commands == ()
    [check] = r.initramfs
    assert check.missing == () and not check.rebuilt
    assert any("its copies of /etc/initramfs-tools/conf.d/resume renamed in the image "
               "(conf/conf.d/resume;" in n for n in r.notes), r.notes
    assert told == [f"  renaming in /boot/initrd.img-{KERNEL} its copies of "
                    "/etc/initramfs-tools/conf.d/resume"]
    members = {e.name: e.data for e in cpio.read(gzip.decompress(image.read_bytes()))}
    assert members["conf/conf.d/resume"] == f"RESUME=UUID={SWAP_UUID}\n".encode()
    assert members["conf/initramfs.conf"] == b""



@needs_lister
@no_nvme_here
def test_an_image_behind_a_boot_symlink_leading_out_of_the_tree_is_not_rewritten(
    tmp_path: Path,
) -> None:
    # The restored /boot is the set author's: a symlink to a host path must not lead the
    # in-place rename to the rescue's own files.
    root, image = _resume_by_device(tmp_path)
    outside = tmp_path / "host-boot"
    (root / "boot").rename(outside)
    (root / "boot").symlink_to(outside)
    before = (outside / image.name).read_bytes()
    desc = description()
    opts = FinalizeOptions(sysfs=machine(tmp_path), bootloader=False, log_dir="/var/log/r")
    r = finalize.finalize(desc, plan_for(desc), root, opts)
    assert (outside / image.name).read_bytes() == before
    assert not any("renamed in the image" in n for n in r.notes), r.notes


def test_each_command_is_told_as_it_starts(tmp_path: Path) -> None:
    # The report comes when all is done; a rebuild or grub-mkconfig takes minutes.
    from resurgo.finalize import identity
    from resurgo.finalize.steps import Finalizer
    from resurgo.finalize.tree import RootTree

    root = tmp_path / "root"
    make_tree(root)
    desc = description()
    plan = plan_for(desc)
    told: list[str] = []
    f = Finalizer(desc, plan, RootTree(root), root, FinalizeOptions(),
                  identity.planned(desc, plan), told.append)
    assert f.command(["true"], "why", in_chroot=False)
    assert not f.command(["false"], "why not", in_chroot=False)
    assert told == ["  running  true", "  running  false"]
    assert [c.status for c in f.commands] == [StepStatus.DONE, StepStatus.FAILED]


# ---------------------------------------------------------------- grub.cfg kept as restored

KEPT_CFG = (
    "menuentry 'Debian' {\n"
    f"\tsearch --no-floppy --fs-uuid --set=root {ROOT_UUID}\n"
    f"\tlinux\t/vmlinuz-{KERNEL} root=UUID={ROOT_UUID} ro quiet\n"
    f"\tinitrd\t/initrd.img-{KERNEL}\n"
    "}\n"
)


def _kept_tree(root: Path, cfg: str = KEPT_CFG) -> None:
    """The usual tree, but nothing in it names a disk by its kernel name: only identities
    the recovery keeps."""
    make_tree(root, WITH_NVME)
    (root / "etc/default/grub").write_text('GRUB_TIMEOUT=0\nGRUB_CMDLINE_LINUX=""\n')
    (root / "boot/grub/grub.cfg").write_text(cfg)


def _argv0(r: finalize.FinalizeReport) -> list[str]:
    return [c.argv[0] for c in r.commands]


@needs_lister
@no_nvme_here
def test_grub_cfg_that_boots_every_kernel_with_kept_identities_is_not_regenerated(
    tmp_path: Path,
) -> None:
    root = tmp_path / "root"
    _kept_tree(root)
    desc = description()
    opts = FinalizeOptions(dry_run=True, sysfs=machine(tmp_path))
    r = finalize.finalize(desc, plan_for(desc), root, opts)
    assert r.ok, r.errors
    assert _argv0(r) == ["grub-install"]
    assert any(n.startswith("/boot/grub/grub.cfg kept as restored") and KERNEL in n
               for n in r.notes), r.notes
    # The preview, from the description's copy of grub.cfg, says the same.
    saved = dataclasses.replace(desc, config_files=(
        *desc.config_files,
        *(ConfigFile(f"config.kept{i}", p, (root / p.lstrip("/")).read_text())
          for i, p in enumerate(("/etc/default/grub", "/boot/grub/grub.cfg"))),
    ))
    p = finalize.preview(saved, plan_for(saved), FinalizeOptions(sysfs=machine(tmp_path / "p")))
    assert "grub-mkconfig" not in _argv0(p) and "grub-install" in _argv0(p), p.commands
    # An image the recovery makes where the set has none, with the name grub.cfg loads,
    # keeps it too.
    (root / f"boot/initrd.img-{KERNEL}").unlink()
    r = finalize.finalize(desc, plan_for(desc), root, opts)
    assert _argv0(r) == ["update-initramfs", "grub-install"], r.commands
    assert r.commands[0].argv == ("update-initramfs", "-c", "-k", KERNEL)


@needs_lister
@no_nvme_here
@pytest.mark.parametrize("case", ["no initrd line", "other kernel", "new identities",
                                  "grub default rewritten", "image made, not loaded",
                                  "no grub.cfg"])
def test_grub_cfg_is_regenerated_when_it_may_not_boot_this_machine(
    tmp_path: Path, case: str
) -> None:
    root = tmp_path / "root"
    no_initrd = KEPT_CFG.replace(f"\tinitrd\t/initrd.img-{KERNEL}\n", "")
    cfg = {"no initrd line": no_initrd, "image made, not loaded": no_initrd,
           "other kernel": KEPT_CFG.replace(KERNEL, "6.1.0-49-amd64")}.get(case, KEPT_CFG)
    _kept_tree(root, cfg)
    desc = description()
    plan = plan_for(desc)
    if case == "new identities":
        plan = make_plan(desc, [actual("nvme0n1", transport="nvme")],
                         PlanOptions(which=str, new_identities=True))
    elif case == "grub default rewritten":
        (root / "etc/default/grub").write_text(GRUB_DEFAULT)
    elif case == "image made, not loaded":
        # The saved system had none: grub.cfg, made then, has no initrd line.
        (root / f"boot/initrd.img-{KERNEL}").unlink()
    elif case == "no grub.cfg":
        (root / "boot/grub/grub.cfg").unlink()
    opts = FinalizeOptions(dry_run=True, sysfs=machine(tmp_path))
    r = finalize.finalize(desc, plan, root, opts)
    assert _argv0(r)[-1] == "grub-mkconfig", r.commands
    assert not any("kept as restored" in n for n in r.notes), r.notes
    if case == "image made, not loaded":
        assert ("update-initramfs", "-c", "-k", KERNEL) in [c.argv for c in r.commands]


def test_grub_cfg_boots_wants_the_kernel_and_its_image_on_their_own_lines() -> None:
    from resurgo.finalize.cmdline import grub_cfg_boots

    image = f"initrd.img-{KERNEL}"
    assert grub_cfg_boots(KEPT_CFG, KERNEL, image)
    assert grub_cfg_boots(KEPT_CFG, KERNEL, None)
    assert not grub_cfg_boots(KEPT_CFG, "6.1.0-5", None)  # a prefix of the version
    assert not grub_cfg_boots(KEPT_CFG, KERNEL, f"initramfs-{KERNEL}.img")
    commented = KEPT_CFG.replace("\tlinux\t", "#\tlinux\t")
    assert not grub_cfg_boots(commented, KERNEL, image)
    efi = KEPT_CFG.replace("\tlinux\t", "\tlinuxefi ").replace("\tinitrd\t", "\tinitrdefi ")
    assert grub_cfg_boots(efi, KERNEL, image)


# ---------------------------------------------------------------- an initramfs made at recovery


def _made(desc: Description) -> Description:
    from resurgo.model import InitramfsImage, MadeAtRecovery

    image = InitramfsImage(KERNEL, f"/boot/initrd.img-{KERNEL}")
    return dataclasses.replace(desc, made_at_recovery=MadeAtRecovery((image,)))


@needs_lister
@no_nvme_here
def test_an_initramfs_the_set_left_out_is_made_first_and_grub_cfg_kept(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _kept_tree(root)
    (root / f"boot/initrd.img-{KERNEL}").unlink()
    desc = _made(description())
    opts = FinalizeOptions(dry_run=True, sysfs=machine(tmp_path))
    r = finalize.finalize(desc, plan_for(desc), root, opts)
    assert r.ok, r.errors
    assert [(c.argv, c.status) for c in r.commands] == [
        (("update-initramfs", "-c", "-k", KERNEL), StepStatus.PLANNED),
        (("grub-install", "--target=i386-pc", "/dev/nvme0n1"), StepStatus.PLANNED),
    ]
    assert "--initramfs rebuild" in r.commands[0].why
    # MODULES=list: this machine's disk drivers are named before the image is made, so
    # that the one build has them.
    [modules] = [f for f in r.files if f.path.startswith("/etc/initramfs-tools/")]
    assert modules.path == "/etc/initramfs-tools/modules"
    assert modules.changes[-1].after == "nvme", modules.changes
    assert "nvme named in the initramfs configuration before the images the set left out " \
        "are made" in r.notes
    assert f"/boot/initrd.img-{KERNEL}: made by the recovery, then looked inside" in r.notes
    # The preview, from the description alone, plans the same.
    p = finalize.preview(desc, plan_for(desc), FinalizeOptions(sysfs=machine(tmp_path / "p")))
    assert p.commands[0].argv == ("update-initramfs", "-c", "-k", KERNEL), p.commands


@needs_lister
@no_nvme_here
@needs_lister
@no_nvme_here
def test_an_initramfs_left_out_with_modules_most_names_no_driver(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _kept_tree(root)
    (root / "etc/initramfs-tools/initramfs.conf").write_text("MODULES=most\nCOMPRESS=gzip\n")
    (root / f"boot/initrd.img-{KERNEL}").unlink()
    desc = _made(description())
    opts = FinalizeOptions(dry_run=True, sysfs=machine(tmp_path))
    r = finalize.finalize(desc, plan_for(desc), root, opts)
    assert r.ok, r.errors
    assert not any(f.path.startswith("/etc/initramfs-tools/") for f in r.files), r.files
    assert r.commands[0].argv == ("update-initramfs", "-c", "-k", KERNEL)


def test_an_initramfs_the_set_left_out_that_is_there_is_not_made_again(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _kept_tree(root)
    desc = _made(description())
    opts = FinalizeOptions(dry_run=True, sysfs=machine(tmp_path))
    r = finalize.finalize(desc, plan_for(desc), root, opts)
    assert r.ok, r.errors
    assert _argv0(r) == ["grub-install"]
    assert f"/boot/initrd.img-{KERNEL}: there already, not made again" in r.notes


def test_an_initramfs_left_out_of_a_system_without_a_generator_is_an_error(
    tmp_path: Path,
) -> None:
    root = tmp_path / "root"
    _kept_tree(root)
    (root / f"boot/initrd.img-{KERNEL}").unlink()
    (root / "usr/sbin/update-initramfs").unlink()
    desc = _made(description())
    opts = FinalizeOptions(dry_run=True, sysfs=machine(tmp_path), drivers=False)
    r = finalize.finalize(desc, plan_for(desc), root, opts)
    assert not r.ok
    assert any("neither initramfs-tools nor dracut" in e for e in r.errors), r.errors
    assert "update-initramfs" not in _argv0(r)


@needs_lister
@no_nvme_here
def test_an_initramfs_that_could_not_be_made_is_not_tried_again_by_the_drivers_step(
    tmp_path: Path,
) -> None:
    # The chroot's update-initramfs failing (a full /boot, say) is reported once: the
    # drivers step, which would find the image missing, does not run it a second time.
    from resurgo.finalize import identity
    from resurgo.finalize.steps import Finalizer
    from resurgo.finalize.tree import RootTree

    root = tmp_path / "root"
    _kept_tree(root)
    (root / f"boot/initrd.img-{KERNEL}").unlink()
    desc = _made(description())
    plan = plan_for(desc)
    f = Finalizer(desc, plan, RootTree(root), root,
                  FinalizeOptions(sysfs=machine(tmp_path), bootloader=False),
                  identity.planned(desc, plan))
    ran: list[tuple[str, ...]] = []

    def failing(argv: list[str], why: str, *, in_chroot: bool = True) -> bool:
        ran.append(tuple(argv))
        f.errors.append(f"{' '.join(argv)} failed with exit code 1")
        return False

    f.command = failing  # type: ignore[method-assign]
    f.make_left_out_images()
    f.check_drivers()
    assert ran == [("update-initramfs", "-c", "-k", KERNEL)]
    assert f.images_unmade == {KERNEL} and not f.images_made
    assert f.errors == [f"update-initramfs -c -k {KERNEL} failed with exit code 1"]


@needs_lister
@no_nvme_here
def test_an_image_the_set_left_out_is_looked_for_inside_the_restored_tree_only(
    tmp_path: Path,
) -> None:
    # The restored /boot is the set author's: a symbolic link to a host directory holding
    # the image does not make the recovery skip making it.
    root = tmp_path / "root"
    _kept_tree(root)
    outside = tmp_path / "host-boot"
    (root / "boot").rename(outside)
    (root / "boot").symlink_to(outside)
    assert (root / f"boot/initrd.img-{KERNEL}").exists()  # through the host's eyes
    desc = _made(description())
    opts = FinalizeOptions(dry_run=True, sysfs=machine(tmp_path), bootloader=False)
    r = finalize.finalize(desc, plan_for(desc), root, opts)
    assert r.commands[0].argv == ("update-initramfs", "-c", "-k", KERNEL), r.commands
    assert not any("there already" in n for n in r.notes), r.notes
