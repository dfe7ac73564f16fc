"""The whole cycle, end to end (vm tier): save a running system, lose it, recover it
onto a larger NVMe disk from the rescue image, and boot the result.

1. host: a UEFI Debian 12 source disk (GPT: bios_grub, ESP, /boot, swap, /home, /) on
   virtio, its initramfs host-only (MODULES=list: virtio_pci, virtio_blk, ext4); the
   host's lsinitrd shows no NVMe driver in it;
2. the source boots (OVMF, virtio), writes two marker files (/ and /home) and runs
   `resurgo save --no-rescue --sign-key KEY` to a second virtual disk mounted in the
   guest (that disk and the exchange disk left out with --exclude-disk);
3. host: the rescue image, with the set's description embedded, trusting KEY, the tree's kernel
   (--kernel-root), the unattended entry the default, power off when done;
4. the rescue boots (OVMF, the image as a USB stick) with the set disk and a blank
   NVMe disk 25 % larger, finds the set, recovers and finalizes unattended, powers off;
5. the recovered disk boots alone from NVMe (OVMF) and its check script (saved with the
   system) prints the markers' hashes, the mounts, the swap and the kernel command line
   on the serial console; host: its initramfs now carries nvme.

The times and the image size go to whole-cycle.json in the test's tmp dir, and stdout.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from resurgo import signing
from resurgo.finalize import drivers
from resurgo.finalize.chroot import Chroot
from resurgo.rescue import After, RescueOptions, build_rescue_image
from tests.vm import guest
from tests.vm.test_rescue import read_only_view, rescue_lines

pytestmark = pytest.mark.vm

REPO = Path(__file__).resolve().parents[2]
MiB = guest.MiB
SOURCE_SIZE = 2 * guest.GiB
TARGET_SIZE = SOURCE_SIZE * 5 // 4
SET_DISK_SIZE = 2 * guest.GiB
HOST = "resurgo-src"
HOST_ONLY_MODULES = "virtio_pci\nvirtio_blk\next4\n"
MARKERS = {"/resurgo-marker.bin": 1 * MiB, "/home/alice/marker.bin": 256 * 1024}
CHECK = "RESURGO-CHECK"

# Saved with the system (/resurgo-test/run.sh): the runner runs it when the recovered
# disk boots without an exchange disk.
CHECK_SCRIPT = f"""#!/bin/sh
udevadm settle
for f in {" ".join(MARKERS)}; do
    echo "{CHECK} sha256 $(sha256sum "$f")"
done
for m in / /boot /home /boot/efi; do
    echo "{CHECK} mount $m $(findmnt -n -o SOURCE,FSTYPE "$m" | tr -s ' ')"
done
echo "{CHECK} swap $(swapon --noheadings --show=NAME,TYPE | tr -s ' ')"
echo "{CHECK} cmdline $(cat /proc/cmdline)"
lsblk -n -o NAME,SIZE,TYPE,FSTYPE,MOUNTPOINTS | sed 's/^/{CHECK} lsblk /'
"""

# Runs in the source guest from the exchange disk (vdc); the set disk is vdb.
SAVE_SCRIPT = f"""#!/bin/sh
set -u
X="$RESURGO_EXCHANGE"
udevadm settle
mkdir -p /home/alice
cp "$X/markers/root.bin" /resurgo-marker.bin
cp "$X/markers/home.bin" /home/alice/marker.bin
sync
findmnt --json >"$X/findmnt.json"
lsblk -o NAME,SIZE,TYPE,FSTYPE,MOUNTPOINTS >"$X/lsblk.txt"
mkdir -p /mnt/set
mount /dev/vdb /mnt/set || exit 10
mkdir -p /mnt/set/resurgo/{HOST}
start=$(date +%s.%N)
install -m 0600 "$X/sign/key" /root/resurgo-sign.key
PYTHONPATH="$X/py" python3 -m resurgo save --to /mnt/set/resurgo/{HOST} --no-rescue \\
    --sign-key /root/resurgo-sign.key \\
    --no-catalog --exclude-disk /dev/vdb --exclude-disk /dev/vdc --json \\
    >"$X/save.json" 2>"$X/save.err"
rc=$?
end=$(date +%s.%N)
echo "$start $end" >"$X/save.time"
umount /mnt/set
sync
exit $rc
"""

RESCUE_TIMEOUT = 1500.0
BOOT_TIMEOUT = 400.0
EMULATION_STALL = ("rcu_preempt kthread starved", "watchdog: BUG: soft lockup")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@contextlib.contextmanager
def partitions_mounted(
    image: Path, parts: dict[str, int], *, read_only: bool
) -> Iterator[dict[str, Path]]:
    """Partitions of ``image`` (name -> number) mounted on the host."""
    with contextlib.ExitStack() as stack:
        loop = stack.enter_context(guest.loop_device(image, read_only=read_only))
        numbers = sorted(set(parts.values()))
        nodes = dict(zip(numbers, guest.partition_nodes(loop, numbers), strict=True))
        tmp = stack.enter_context(guest.scratch_dir("resurgo-cycle-"))
        opts = ["ro"] if read_only else []
        yield {
            name: stack.enter_context(guest.mounted(nodes[n], tmp / name, options=opts))
            for name, n in parts.items()
        }


def initramfs_modules(boot: Path, kernel: str) -> frozenset[str]:
    out = subprocess.run(
        ["lsinitrd", str(boot / f"initrd.img-{kernel}")],
        capture_output=True,
        text=True,
        check=True,
    )
    return drivers.parse_image_listing(out.stdout)


def table(image: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(guest.run_cmd(["sfdisk", "--json", image]).stdout)
    return data["partitiontable"]  # type: ignore[no-any-return]


def part_numbers(tab: dict[str, Any]) -> dict[str, int]:
    return {p["name"]: int(re.sub(r".*?(\d+)$", r"\1", p["node"])) for p in tab["partitions"]}


def build_source(tmp_path: Path) -> guest.ImageInfo:
    info = guest.build_image(
        guest.debian_tree(),
        tmp_path / "source.raw",
        size=SOURCE_SIZE,
        uefi=True,
        hostname=HOST,
        run_script=CHECK_SCRIPT,
        boot_size=192 * MiB,
        swap_size=64 * MiB,
        home_size=64 * MiB,
    )
    nums = part_numbers(table(info.path))
    with partitions_mounted(
        info.path, {"root": nums["root"], "boot": nums["boot"]}, read_only=False
    ) as m:
        root = m["root"]
        with guest.mounted(m["boot"], root / "boot", options=["bind"]):
            conf = root / "etc/initramfs-tools/initramfs.conf"
            conf.write_text(re.sub(r"(?m)^MODULES=.*$", "MODULES=list", conf.read_text()))
            (root / "etc/initramfs-tools/modules").write_text(HOST_ONLY_MODULES)
            # The engine compresses with zstd, which the minimal tree lacks (this host's
            # build needs only libc, zlib, lzma and lz4, all in the tree).
            shutil.copy2("/usr/bin/zstd", root / "usr/local/bin/zstd")
            with Chroot(root) as ch:
                ch.execute(["update-initramfs", "-u", "-k", info.kernel])
            guest.run_cmd(["sync", "-f", root / "boot"])
    return info


def boot_recovered(image: Path, log: Path) -> guest.BootResult:
    """One vCPU (a starved second vCPU has stalled NVMe queues under TCG); a boot that
    stalls so is tried once more, any other failure stands."""
    drive = guest.Drive(image, interface="nvme", serial="resurgo-target")
    result = guest.boot(drive, timeout=BOOT_TIMEOUT, cpus=1, serial_log=log, firmware="uefi")
    if not result.reached_runner and any(s in result.text for s in EMULATION_STALL):
        shutil.copyfile(log, log.with_suffix(".stalled.log"))
        result = guest.boot(drive, timeout=BOOT_TIMEOUT, cpus=1, serial_log=log, firmware="uefi")
    return result


def test_save_rescue_recover_boot_from_nvme(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the vm tier needs root (loop devices, chroot)")
    if shutil.which("qemu-system-x86_64") is None or shutil.which("lsinitrd") is None:
        pytest.skip("needs qemu-system-x86_64 and lsinitrd (dracut-core) on the host")
    if not guest.OVMF_FD.exists() or shutil.which("zstd") is None:
        pytest.skip("needs OVMF (ovmf) and zstd on the host")
    import blake3
    import tomli_w

    times: dict[str, Any] = {}
    total = time.monotonic()
    out = tmp_path / "whole-cycle.json"

    def note(key: str, value: float) -> None:
        # Written at each step: a failing run still leaves the times it measured.
        times[key] = round(value)
        out.write_text(json.dumps(times, indent=2))
        print(f"whole cycle: {key}: {times[key]}", flush=True)

    # 1. the source, host-only initramfs
    started = time.monotonic()
    info = build_source(tmp_path)
    note("build source", time.monotonic() - started)
    src_table = table(info.path)
    nums = part_numbers(src_table)
    assert set(nums) == {"bios_grub", "esp", "boot", "swap", "home", "root"}
    with partitions_mounted(info.path, {"boot": nums["boot"]}, read_only=True) as m:
        saved_modules = initramfs_modules(m["boot"], info.kernel)
    assert {"virtio_blk", "ext4"} <= saved_modules
    assert "nvme" not in saved_modules and "nvme_core" not in saved_modules

    # 2. boot it and save it from inside
    markers = {
        "root.bin": os.urandom(MARKERS["/resurgo-marker.bin"]),
        "home.bin": os.urandom(MARKERS["/home/alice/marker.bin"]),
    }
    want = {
        "/resurgo-marker.bin": sha256(markers["root.bin"]),
        "/home/alice/marker.bin": sha256(markers["home.bin"]),
    }
    set_disk = guest.blank_disk(tmp_path / "set.img", SET_DISK_SIZE)
    guest.run_cmd(["mkfs.ext4", "-q", "-F", "-L", "backup", set_disk])
    sign_key = tmp_path / "sign.key"
    guest.run_cmd(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "admin", "-f",
                   sign_key])
    started = time.monotonic()
    run = guest.run_in_guest(
        SAVE_SCRIPT,
        image=guest.Drive(info.path, serial="resurgo-source"),
        workdir=tmp_path / "source-boot",
        files={
            "markers/root.bin": markers["root.bin"],
            "markers/home.bin": markers["home.bin"],
            "py/resurgo": REPO / "src" / "resurgo",
            "py/tomli_w": Path(tomli_w.__file__).parent,
            "py/blake3": Path(blake3.__file__).parent,
            "sign/key": sign_key,
        },
        extra_disks=[guest.Drive(set_disk, serial="resurgo-set")],
        firmware="uefi",
        timeout=1200,
    )
    note("source boot + save (host)", time.monotonic() - started)
    x = run.exchange
    err = (x / "save.err").read_text() if (x / "save.err").exists() else ""
    assert run.exit_status == 0, f"{run.output[-2000:]}\n{err[-3000:]}"
    begin, end = map(float, (x / "save.time").read_text().split())
    note("save (in the guest)", end - begin)
    report = json.loads((x / "save.json").read_text())
    saved_points = {u["mountpoint"] for u in report["units"]}
    assert {"/", "/boot", "/home"} <= saved_points, report["units"]
    assert not any(p and p.startswith(("/mnt/set", "/resurgo-test")) for p in saved_points)
    note("set MiB", report["set"]["bytes"] / MiB)
    set_id = report["set"]["id"]

    # 3. the rescue image, with the set's description
    with guest.mounted_image(set_disk) as mnt:
        set_dir = mnt / "resurgo" / HOST / set_id
        for name in ("description.toml", "description.toml.sha256"):
            shutil.copy2(set_dir / name, tmp_path / name)
        assert (set_dir / "set.json.sig").is_file()
    desc_text = (tmp_path / "description.toml").read_text()
    assert "/dev/vdb" not in desc_text and "/dev/vdc" not in desc_text
    with read_only_view(guest.debian_tree(), tmp_path / "kroot") as kroot:
        rescue = build_rescue_image(
            tmp_path / "rescue.iso",
            RescueOptions(
                description=tmp_path / "description.toml",
                trusted_signers=signing.SignKey.load(sign_key).signers_line("admin@test")
                .encode(),
                kernel_root=kroot,
                unattended=True,
                after=After.POWEROFF,
                menu_timeout=0,
                kernel_args=("resurgo.wait=5",),
            ),
        )
    note("rescue build", rescue.seconds)
    note("rescue image MiB", rescue.size / MiB)

    # 4. the rescue, unattended: set disk (virtio) and a blank, larger NVMe target
    target = guest.blank_disk(tmp_path / "target.raw", TARGET_SIZE)
    started = time.monotonic()
    result = guest.boot(
        guest.Drive(rescue.path, format="raw", read_only=True, serial="stick"),
        [
            guest.Drive(set_disk, serial="resurgo-set"),
            guest.Drive(target, interface="nvme", serial="resurgo-target"),
        ],
        timeout=RESCUE_TIMEOUT,
        serial_log=tmp_path / "rescue.log",
        firmware="uefi",
    )
    note("rescue boot to recovered (host)", time.monotonic() - started)
    lines = rescue_lines(result.text)
    detail = "\n".join(lines[-60:]) or guest._tail(result.text, 60)
    assert not result.timed_out, f"the rescue did not power off:\n{detail}"
    assert any(x.startswith("recovery set:") and set_id in x and "signed by a trusted key "
               "(admin@test)" in x for x in lines), detail
    assert "recovery finished: ok" in lines, guest._tail(result.text, 80)
    assert lines[-1] == "poweroff now", detail
    # recover's own report, on the console: the restore and finalize times.
    restored = re.findall(r"done +resurgo:restore .*\(([0-9.]+) s\)", result.text)
    note("restore data (in the rescue)", sum(map(float, restored)))
    fin = re.search(r"drivers ([0-9.]+) s, bootloader ([0-9.]+) s; total ([0-9.]+) s", result.text)
    assert fin, detail
    note("finalize (in the rescue)", float(fin.group(3)))
    note("finalize: drivers, initramfs rebuilt", float(fin.group(1)))
    note("finalize: bootloader", float(fin.group(2)))

    # The layout on the target: the saved table, root grown.
    tgt_table = table(target)
    assert tgt_table["id"].lower() == src_table["id"].lower()
    assert part_numbers(tgt_table) == nums
    size = {p["name"]: p["size"] for p in tgt_table["partitions"]}
    src_size = {p["name"]: p["size"] for p in src_table["partitions"]}
    assert size["root"] > src_size["root"]
    for name in ("esp", "boot", "swap", "home"):
        assert size[name] == src_size[name], name
    with partitions_mounted(target, {"boot": nums["boot"]}, read_only=True) as m:
        recovered_modules = initramfs_modules(m["boot"], info.kernel)
    assert {"nvme", "nvme_core"} <= recovered_modules
    assert saved_modules <= recovered_modules

    # 5. the recovered disk alone, from NVMe
    started = time.monotonic()
    booted = boot_recovered(target, tmp_path / "recovered.log")
    note("recovered boot (host)", time.monotonic() - started)
    checks = [s.split(CHECK, 1)[1].strip() for s in booted.text.splitlines() if f"{CHECK} " in s]
    assert booted.reached_runner and checks, guest._tail(booted.text, 60)
    got = {
        c.split()[2]: c.split()[1]
        for c in checks
        if c.startswith("sha256 ") and len(c.split()) == 3
    }
    assert got == want, checks
    mounts = {c.split()[1]: c.split()[2:] for c in checks if c.startswith("mount ")}
    assert mounts["/"] == [f"/dev/nvme0n1p{nums['root']}", "ext4"], checks
    assert mounts["/boot"] == [f"/dev/nvme0n1p{nums['boot']}", "ext4"], checks
    assert mounts["/home"] == [f"/dev/nvme0n1p{nums['home']}", "ext4"], checks
    assert mounts["/boot/efi"] == [f"/dev/nvme0n1p{nums['esp']}", "vfat"], checks
    swap = next(c for c in checks if c.startswith("swap "))
    assert swap.split()[1:] == [f"/dev/nvme0n1p{nums['swap']}", "partition"], checks
    cmdline = next(c for c in checks if c.startswith("cmdline "))
    assert f"root=UUID={info.root_uuid}" in cmdline, cmdline

    note("total (host)", time.monotonic() - total)
    print("whole cycle:", json.dumps(times))
