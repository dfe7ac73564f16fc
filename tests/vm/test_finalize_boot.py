"""finalize makes a virtio system with a host-only initramfs boot from NVMe (vm tier).

1. host: a target disk built from the cached Debian tree (BIOS, GPT: bios_grub + ext4
   root), its initramfs host-only (MODULES=list: virtio_pci, virtio_blk, ext4) and its
   fstab naming the root by kernel name (/dev/vda2), as old installs do; the host's
   lsinitrd shows no NVMe driver in it;
2. it boots from virtio to multi-user (the runner's marker): once, when the target is
   built and cached, on a copy; its console is kept with the cached image;
3. a RESCUE guest (the cached image, from virtio) gets the target as NVMe and runs
   finalize on it from the exchange disk: nvme found missing, the initramfs rebuilt
   in a chroot (timed), GRUB reinstalled on /dev/nvme0n1, grub.cfg kept as restored
   (it finds /boot by UUID, which the recovery keeps: grub-mkconfig is not run);
4. host: the new initramfs has nvme, fstab names the root by UUID, the recovery log is
   in the restored /var/log/resurgo;
5. the target, alone, boots from NVMe to multi-user.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from resurgo import fileformat
from resurgo.model import (
    Bootloader,
    BootloaderKind,
    Description,
    Disk,
    Filesystem,
    Firmware,
    FormatInfo,
    FsType,
    Mount,
    OsRelease,
    Partition,
    PartitionTable,
    SystemInfo,
    TableLabel,
    VolumeState,
)
from tests.vm import cycle, guest

REPO = Path(__file__).resolve().parents[2]
SIZE = 3 * guest.GiB
TARGET_MARK = "RESURGO-TARGET-UP"
TARGET_SCRIPT = f"""#!/bin/sh
echo "{TARGET_MARK} $(uname -r) $(findmnt -n -o SOURCE /)"
cat /proc/cmdline
"""
#: Bump when build_target changes what it does to the image (a part of its cache key).
TARGET_VERSION = 3

GUEST_SCRIPT = r"""#!/bin/sh
# Runs INSIDE the rescue guest (tests/vm/test_finalize_boot.py).
set -u
X="$RESURGO_EXCHANGE"
export PYTHONPATH="$X/py"
udevadm settle
lsblk -o NAME,SIZE,TYPE,FSTYPE,UUID >"$X/lsblk.txt" 2>&1
python3 "$X/finalize_in_guest.py" "$X" >"$X/finalize.out" 2>"$X/finalize.err"
echo $? >"$X/finalize.rc"
"""

GUEST_PY = r"""
import json, sys, time
from pathlib import Path

from resurgo import fileformat, finalize, run
from resurgo.plan import make_plan
from resurgo.probe.actual import read_actual_disks
from resurgo.plan.model import PlanOptions

x = Path(sys.argv[1])
desc = fileformat.read(x / "description.toml")
# The plan as recover made it (its disk mapping is what finalize uses); the layout and
# data are already on the disk, so nothing of it is executed here.
plan = make_plan(
    desc,
    read_actual_disks(),
    PlanOptions(targets=("/dev/nvme0n1",), maps=(("disk.vda", "/dev/nvme0n1"),),
                which=run.which),
)
assert [m.path for m in plan.matches] == ["/dev/nvme0n1"], plan.matches
root = Path("/mnt/resurgo")
root.mkdir(parents=True, exist_ok=True)
run.run(["mount", "/dev/nvme0n1p2", str(root)])
try:
    started = time.monotonic()
    report = finalize.finalize(desc, plan, root, finalize.FinalizeOptions())
    seconds = time.monotonic() - started
    (x / "report.txt").write_text(finalize.text(report))
    data = finalize.data(report)
    data["wall_seconds"] = seconds
    (x / "report.json").write_text(json.dumps(data, indent=2))
finally:
    run.run(["umount", str(root)])
"""


@contextlib.contextmanager
def target_root(image: Path, *, read_only: bool = False) -> Any:
    """The target's root filesystem (partition 2) mounted on the host."""
    with contextlib.ExitStack() as stack:
        loop = stack.enter_context(guest.loop_device(image, read_only=read_only))
        parts = guest.partition_nodes(loop, 2)
        mnt = stack.enter_context(guest.scratch_dir("resurgo-target-")) / "root"
        yield stack.enter_context(guest.mounted(parts[1], mnt, options=["ro"] if read_only else []))


def build_target(tmp_path: Path) -> tuple[guest.ImageInfo, dict[str, Any], str]:
    """The virtio target with a host-only initramfs (cached, a copy per run); also its
    partition table (sfdisk) and the console of its boot from virtio.

    That boot is the control: the target as built boots from virtio (and only the
    finalize makes it boot from NVMe). It runs once, when the target is built, on a
    copy (the cached image is never booted); its console is kept beside the image, as
    long as the image (same key, same bytes)."""
    tree = guest.debian_tree()

    def make(image: Path) -> guest.ImageInfo:
        info = guest.build_image(
            tree, image, size=SIZE, uefi=False, hostname="resurgo-target",
            run_script=TARGET_SCRIPT,
        )
        with cycle.partitions_mounted(image, {"root": 2}, read_only=False) as m:
            root = m["root"]
            # Old installs name the root by its kernel name: finalize must rename it.
            fstab = root / "etc/fstab"
            fstab.write_text(fstab.read_text().replace(f"UUID={info.root_uuid} /", "/dev/vda2 /"))
            cycle.purge(root, cycle.PLAIN_UNUSED)
            cycle.make_host_only(root, info.kernel)
        trial = guest.copy_image(info, tmp_path / "virtio-boot.raw")
        log = tmp_path / "target-virtio.log"
        virtio = boot_target(trial.path, "virtio", log)
        trial.path.unlink()
        assert boots_to_multi_user(virtio), virtio.text[-3000:]
        shutil.copyfile(log, virtio_log(image))
        return info

    key = ("finalize target", TARGET_VERSION, SIZE, TARGET_SCRIPT, cycle.HOST_ONLY_MODULES,
           cycle.PLAIN_UNUSED)
    cached = guest.cached_image("finalize-target", key, make, tree=tree)
    info = guest.copy_image(cached, tmp_path / "target.raw")
    return info, cycle.table(info.path), virtio_log(cached.path).read_text(errors="replace")


def virtio_log(image: Path) -> Path:
    """Where the console of the cached target's control boot is kept."""
    return image.with_suffix(".virtio-boot.log")


def description(info: guest.ImageInfo, table: dict[str, Any]) -> Description:
    sd = {p["node"][-1]: p for p in table["partitions"]}
    disk = Disk(
        id="disk.vda",
        path="/dev/vda",
        size=SIZE,
        logical_sector_size=512,
        physical_sector_size=512,
        transport="virtio",
        critical=True,
        serial="resurgo-d0",
        table=PartitionTable(TableLabel.GPT, table["id"].lower()),
    )
    parts = tuple(
        Partition(
            id=f"part.vda{n}",
            disk=disk.id,
            number=n,
            start=sd[str(n)]["start"],
            size=sd[str(n)]["size"],
            sector_size=512,
            type=sd[str(n)]["type"].lower(),
            path=f"/dev/vda{n}",
            uuid=sd[str(n)]["uuid"].lower(),
            name=sd[str(n)].get("name"),
        )
        for n in (1, 2)
    )
    root = Filesystem(
        id="fs.vda2",
        device="part.vda2",
        type=FsType.EXT4,
        uuid=info.root_uuid,
        label="root",
        mounts=(Mount("/", "errors=remount-ro"),),
        state=VolumeState(mounted=True, used_bytes=guest.GiB),
    )
    return Description(
        format=FormatInfo("1.0", "0.1.0", "2026-01-01T00:00:00Z", "resurgo-target"),
        system=SystemInfo(
            hostname="resurgo-target",
            machine_id="3" * 32,
            architecture="x86_64",
            firmware=Firmware.BIOS,
            os_release=OsRelease("debian", "12"),
            kernel=info.kernel,
            bootloader=Bootloader(
                BootloaderKind.GRUB_PC, disks=(disk.id,), bios_boot_partition="part.vda1"
            ),
            system_volume=root.id,
            boot_volume=root.id,
        ),
        disks=(disk,),
        partitions=parts,
        filesystems=(root,),
    )


def boots_to_multi_user(result: guest.BootResult) -> bool:
    return result.reached_runner and TARGET_MARK in result.text


def boot_target(image: Path, interface: guest.Interface, log: Path) -> guest.BootResult:
    """Boot the target alone to its runner. One vCPU: with two, a starved vCPU thread on a
    busy host has stalled the guest's NVMe queue in a soft lockup. A boot that stalls so is
    tried once more; any other failure stands."""
    drive = guest.Drive(image, interface=interface, serial="resurgo-target")
    result = guest.boot(drive, timeout=400, cpus=1, serial_log=log)
    if not boots_to_multi_user(result) and any(s in result.text for s in cycle.EMULATION_STALL):
        shutil.copyfile(log, log.with_suffix(".stalled.log"))
        result = guest.boot(drive, timeout=400, cpus=1, serial_log=log)
    return result


@pytest.mark.vm
def test_finalize_rebuilds_a_host_only_initramfs_and_the_system_boots_from_nvme(
    tmp_path: Path,
) -> None:
    import blake3
    import tomli_w

    timings: dict[str, float] = {}
    started = time.monotonic()
    info, table, virtio = build_target(tmp_path)
    timings["build target (and its boot from virtio, once)"] = time.monotonic() - started
    with target_root(info.path, read_only=True) as mnt:
        saved_modules = cycle.initramfs_modules(mnt / "boot", info.kernel)
    assert "virtio_blk" in saved_modules and "ext4" in saved_modules
    assert "nvme" not in saved_modules and "nvme_core" not in saved_modules

    assert TARGET_MARK in virtio, virtio[-3000:]
    assert "/dev/vda2" in virtio  # findmnt: the root came from virtio

    desc = description(info, table)
    desc_path = tmp_path / "description.toml"
    fileformat.write(desc, desc_path)
    files: dict[str, guest.ExchangeFile] = {
        "description.toml": desc_path,
        "finalize_in_guest.py": GUEST_PY,
        "py/resurgo": REPO / "src" / "resurgo",
        "py/tomli_w": Path(tomli_w.__file__).parent,
        "py/blake3": Path(blake3.__file__).parent,
    }
    started = time.monotonic()
    rescue = guest.run_in_guest(
        GUEST_SCRIPT,
        image=guest.guest_disk(tmp_path / "rescue"),
        workdir=tmp_path / "rescue",
        files=files,
        extra_disks=[guest.Drive(info.path, interface="nvme", serial="resurgo-target")],
        timeout=1500,
    ).check()
    timings["rescue run"] = time.monotonic() - started
    x = rescue.exchange
    rc = (x / "finalize.rc").read_text().strip()
    assert rc == "0", (x / "finalize.err").read_text()[-3000:]
    report = json.loads((x / "report.json").read_text())
    text = (x / "report.txt").read_text()
    assert report["ok"], text

    [check] = report["initramfs"]
    assert check["kernel"] == info.kernel
    assert check["missing"][:2] == ["nvme", "nvme_core"], text
    assert check["rebuilt"] and check["still_missing"] == []
    timings["initramfs rebuild in the rescue guest"] = check["seconds"]
    argvs = [c["argv"] for c in report["commands"]]
    assert argvs == [
        ["update-initramfs", "-u", "-k", info.kernel],
        ["grub-install", "--target=i386-pc", "/dev/nvme0n1"],
    ], text
    assert any(n.startswith("/boot/grub/grub.cfg kept as restored")
               for n in report["notes"]), text
    assert all(c["status"] == "done" for c in report["commands"])
    changed = {f["path"] for f in report["files"] if not f["regenerated"]}
    assert changed == {"/etc/fstab", "/etc/initramfs-tools/modules"}, text
    # What the commands made anew under /boot is listed, for verify to expect it.
    regenerated = {f["path"] for f in report["files"] if f["regenerated"]}
    assert {
        f"/boot/initrd.img-{info.kernel}",
        "/boot/grub/i386-pc/core.img",
    } <= regenerated and "/boot/grub/grub.cfg" not in regenerated, text

    with target_root(info.path, read_only=True) as mnt:
        recovered_modules = cycle.initramfs_modules(mnt / "boot", info.kernel)
        fstab = (mnt / "etc/fstab").read_text()
        modules_file = (mnt / "etc/initramfs-tools/modules").read_text()
        grub_cfg = (mnt / "boot/grub/grub.cfg").read_text()
        logs = sorted((mnt / "var/log/resurgo").glob("recovery-*.log"))
        log_text = logs[-1].read_text() if logs else ""
    assert {"nvme", "nvme_core"} <= recovered_modules
    assert saved_modules <= recovered_modules
    assert f"UUID={info.root_uuid} / ext4" in fstab and "/dev/vda2" not in fstab
    assert modules_file.startswith(cycle.HOST_ONLY_MODULES) and modules_file.endswith("\nnvme\n")
    assert f"root=UUID={info.root_uuid}" in grub_cfg
    assert len(logs) == 1 and "update-initramfs -u -k" in log_text
    assert report["log"] == f"/var/log/resurgo/{logs[0].name}"

    started = time.monotonic()
    nvme = boot_target(info.path, "nvme", tmp_path / "target-nvme.log")
    timings["boot from nvme"] = time.monotonic() - started
    assert boots_to_multi_user(nvme), nvme.text[-3000:]
    assert "/dev/nvme0n1p2" in nvme.text
    (tmp_path / "timings.json").write_text(json.dumps(timings, indent=2))
    print("timings:", json.dumps(timings))
