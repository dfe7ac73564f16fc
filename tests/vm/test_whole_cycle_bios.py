"""The whole cycle on BIOS (vm tier): an MBR source with a data volume on LVM on LUKS on
md RAID1, saved inside the running guest, recovered from the rescue image onto NVMe
disks, booted.

1. host: a BIOS Debian 12 source disk (MBR: /boot primary 1, an extended partition 2
   holding swap 5 and /home 6, / primary 3) on virtio, GRUB for BIOS, its initramfs
   host-only (MODULES=list: virtio_pci, virtio_blk, ext4): no NVMe driver in it;
2. the source boots (SeaBIOS) with two more virtio disks and builds the data stack on
   them, as an administrator would (the host has no md and no device-mapper):

       vdc1 ─┬─ md RAID1 "data" (1.2) ── LUKS2 "cryptdata" ── PV ── vgdata/data ext4 /srv/data
       vdd1 ─┘           key file /etc/keys/data.key (0600) on the root filesystem

   with /etc/crypttab (the key file, by UUID), /etc/fstab (by UUID), mdadm.conf;
3. it boots again: the stack comes up by itself (assembled, unlocked, activated,
   mounted); marker files go to /, /home and /srv/data and `resurgo save --no-rescue`
   writes the set to another virtual disk;
4. host: the rescue image with the set's description, the tree's kernel, the unattended
   entry the default and `resurgo.keys=LABEL=RESURGO-KEYS`: the LUKS key on a key disk,
   named after the volume's id, never on the kernel command line;
5. the rescue boots (SeaBIOS, the image as a USB stick) with the set disk, the key disk
   and three blank NVMe disks (the system disk 25 % larger, the mirror's disks one as
   large as before, one larger), recovers and finalizes unattended, powers off;
6. the recovered disks boot alone (SeaBIOS, NVMe); the check script saved with the
   system prints the markers' hashes, the mounts, /proc/mdstat, the crypt layer, the LV,
   the identities of the md array and the LUKS volume, the kernel command line.
   host: the MBR has the source's partition numbers and types, the root grown; the
   recovered initramfs carries nvme.

The times and the image size go to whole-cycle-bios.json in the test's tmp dir, and stdout.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from resurgo import fileformat
from resurgo.finalize.chroot import Chroot
from resurgo.rescue import After, RescueOptions, build_rescue_image
from tests.vm import guest
from tests.vm.test_rescue import read_only_view, rescue_lines
from tests.vm.test_whole_cycle import (
    EMULATION_STALL,
    HOST_ONLY_MODULES,
    initramfs_modules,
    partitions_mounted,
    sha256,
    table,
)

pytestmark = pytest.mark.vm

REPO = Path(__file__).resolve().parents[2]
MiB = guest.MiB
SOURCE_SIZE = 2 * guest.GiB
TARGET_SIZE = SOURCE_SIZE * 5 // 4
RAID_DISK_SIZE = 256 * MiB
# The mirror's new disks: one as large as before, one larger.
TARGET_RAID_SIZES = (RAID_DISK_SIZE, 320 * MiB)
SET_DISK_SIZE = 2 * guest.GiB
# Larger than the mirror's saved disks and on their bus: a candidate for them, were it
# not holding the key being read.
KEY_DISK_SIZE = 512 * MiB
KEY_LABEL = "RESURGO-KEYS"
HOST = "resurgo-bios"
PARTS = {"boot": 1, "extended": 2, "root": 3, "swap": 5, "home": 6}
MARKERS = {
    "/resurgo-marker.bin": 1 * MiB,
    "/home/alice/marker.bin": 256 * 1024,
    "/srv/data/projects/marker.bin": 512 * 1024,
}
CHECK = "RESURGO-CHECK"

# Saved with the system (/resurgo-test/run.sh): the runner runs it when the recovered
# disks boot without an exchange disk.
CHECK_SCRIPT = f"""#!/bin/sh
udevadm settle
for f in {" ".join(MARKERS)}; do
    echo "{CHECK} sha256 $(sha256sum "$f")"
done
for m in / /boot /home /srv/data; do
    echo "{CHECK} mount $m $(findmnt -n -o SOURCE,FSTYPE "$m" | tr -s ' ')"
done
echo "{CHECK} swap $(swapon --noheadings --show=NAME,TYPE | tr -s ' ')"
echo "{CHECK} cmdline $(cat /proc/cmdline)"
sed 's/^/{CHECK} mdstat /' /proc/mdstat
mdadm --detail --export /dev/md/data | sed 's/^/{CHECK} md /'
echo "{CHECK} luks-uuid $(cryptsetup luksUUID /dev/md/data)"
cryptsetup status cryptdata | sed 's/^ */{CHECK} crypt /'
lvs --noheadings -o vg_name,lv_name,lv_size,lv_active --units m | sed 's/^ */{CHECK} lvs /'
lsblk -l -n -o NAME,TYPE,FSTYPE,MOUNTPOINTS | sed 's/^/{CHECK} lsblk /'
"""

# First boot of the source (vdb: the set disk, not used here; vdc, vdd: the mirror's
# disks; vde: the exchange disk): the data stack, as an administrator makes it.
STACK_SCRIPT = """#!/bin/sh
set -eux
X="$RESURGO_EXCHANGE"
udevadm settle
for d in /dev/vdc /dev/vdd; do
    printf 'label: dos\\ntype=fd\\n' | sfdisk --quiet "$d"
done
udevadm settle
mdadm --create /dev/md/data --run --metadata=1.2 --level=1 --raid-devices=2 \\
    /dev/vdc1 /dev/vdd1
install -d -m 0700 /etc/keys
install -m 0600 "$X/data.key" /etc/keys/data.key
# A light PBKDF: the guest's CPU is emulated (recover formats it with its defaults).
cryptsetup luksFormat --batch-mode --type luks2 --pbkdf argon2id --pbkdf-memory 65536 \\
    --iter-time 500 --key-file /etc/keys/data.key /dev/md/data
cryptsetup open --key-file /etc/keys/data.key /dev/md/data cryptdata
pvcreate /dev/mapper/cryptdata
vgcreate vgdata /dev/mapper/cryptdata
lvcreate --yes -n data -L 128M vgdata
mkfs.ext4 -q -L data /dev/vgdata/data
luks=$(cryptsetup luksUUID /dev/md/data)
fs=$(blkid -p -s UUID -o value /dev/vgdata/data)
echo "cryptdata UUID=$luks /etc/keys/data.key luks" >>/etc/crypttab
echo "UUID=$fs /srv/data ext4 defaults 0 2" >>/etc/fstab
mdadm --detail --scan >>/etc/mdadm/mdadm.conf
mkdir -p /srv/data
mdadm --detail --export /dev/md/data >"$X/md.env"
echo "$luks" >"$X/luks.uuid"
echo "$fs" >"$X/data.uuid"
cp /etc/crypttab /etc/fstab /etc/mdadm/mdadm.conf "$X/"
sync
"""

# Second boot of the source: the stack came up by itself; markers, then the save.
SAVE_SCRIPT = f"""#!/bin/sh
set -u
X="$RESURGO_EXCHANGE"
udevadm settle
cat /proc/mdstat >"$X/mdstat.txt"
cryptsetup status cryptdata >"$X/crypt-status.txt" || exit 11
findmnt -n -o SOURCE,FSTYPE /srv/data >"$X/srv-data.txt" || exit 12
mkdir -p /home/alice /srv/data/projects
cp "$X/markers/root.bin" /resurgo-marker.bin
cp "$X/markers/home.bin" /home/alice/marker.bin
cp "$X/markers/data.bin" /srv/data/projects/marker.bin
sync
findmnt --json >"$X/findmnt.json"
lsblk -o NAME,SIZE,TYPE,FSTYPE,MOUNTPOINTS >"$X/lsblk.txt"
mkdir -p /mnt/set
mount /dev/vdb /mnt/set || exit 10
mkdir -p /mnt/set/resurgo/{HOST}
start=$(date +%s.%N)
PYTHONPATH="$X/py" python3 -m resurgo save --to /mnt/set/resurgo/{HOST} --no-rescue \\
    --no-catalog --exclude-disk /dev/vdb --exclude-disk /dev/vde --json \\
    >"$X/save.json" 2>"$X/save.err"
rc=$?
end=$(date +%s.%N)
echo "$start $end" >"$X/save.time"
umount /mnt/set
sync
exit $rc
"""

SOURCE_TIMEOUT = 600.0
RESCUE_TIMEOUT = 1500.0
BOOT_TIMEOUT = 400.0


def numbered(tab: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """An sfdisk --json table's partitions by number (an MBR's have no names)."""
    return {int(re.sub(r".*?(\d+)$", r"\1", p["node"])): p for p in tab["partitions"]}


def build_source(tmp_path: Path) -> guest.ImageInfo:
    info = guest.build_image(
        guest.debian_tree(),
        tmp_path / "source.raw",
        size=SOURCE_SIZE,
        uefi=False,
        label="dos",
        hostname=HOST,
        run_script=CHECK_SCRIPT,
        boot_size=192 * MiB,
        swap_size=64 * MiB,
        home_size=64 * MiB,
    )
    parts = {"root": PARTS["root"], "boot": PARTS["boot"]}
    with partitions_mounted(info.path, parts, read_only=False) as m:
        root = m["root"]
        with guest.mounted(m["boot"], root / "boot", options=["bind"]):
            conf = root / "etc/initramfs-tools/initramfs.conf"
            conf.write_text(re.sub(r"(?m)^MODULES=.*$", "MODULES=list", conf.read_text()))
            (root / "etc/initramfs-tools/modules").write_text(HOST_ONLY_MODULES)
            # The engine compresses with zstd, which the minimal tree lacks.
            shutil.copy2("/usr/bin/zstd", root / "usr/local/bin/zstd")
            with Chroot(root) as ch:
                ch.execute(["update-initramfs", "-u", "-k", info.kernel])
            guest.run_cmd(["sync", "-f", root / "boot"])
    return info


def luks_volume_id(description: Path) -> str:
    """The id `resurgo show` gives the one LUKS volume: the key file's name."""
    vols = fileformat.read(description).luks_volumes
    assert len(vols) == 1, vols
    return vols[0].id


def boot_recovered(disks: list[guest.Drive], log: Path) -> guest.BootResult:
    """One vCPU (a starved second vCPU has stalled NVMe queues under TCG); a boot that
    stalls so is tried once more, any other failure stands."""
    result = guest.boot(disks[0], disks[1:], timeout=BOOT_TIMEOUT, cpus=1, serial_log=log)
    if not result.reached_runner and any(s in result.text for s in EMULATION_STALL):
        shutil.copyfile(log, log.with_suffix(".stalled.log"))
        result = guest.boot(disks[0], disks[1:], timeout=BOOT_TIMEOUT, cpus=1, serial_log=log)
    return result


def checks_of(text: str) -> list[str]:
    return [s.split(CHECK, 1)[1].strip() for s in text.splitlines() if f"{CHECK} " in s]


def test_bios_mbr_raid_luks_lvm_save_rescue_recover_boot(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the vm tier needs root (loop devices, chroot)")
    if shutil.which("qemu-system-x86_64") is None or shutil.which("lsinitrd") is None:
        pytest.skip("needs qemu-system-x86_64 and lsinitrd (dracut-core) on the host")
    if shutil.which("zstd") is None:
        pytest.skip("needs zstd on the host")
    import blake3
    import tomli_w

    times: dict[str, Any] = {}
    total = time.monotonic()
    out = tmp_path / "whole-cycle-bios.json"

    def note(key: str, value: float) -> None:
        # Written at each step: a failing run still leaves the times it measured.
        times[key] = round(value)
        out.write_text(json.dumps(times, indent=2))
        print(f"whole cycle (BIOS): {key}: {times[key]}", flush=True)

    # 1. the source, MBR, host-only initramfs
    started = time.monotonic()
    info = build_source(tmp_path)
    note("build source", time.monotonic() - started)
    src_table = table(info.path)
    assert src_table["label"] == "dos"
    src_parts = numbered(src_table)
    assert sorted(src_parts) == sorted(PARTS.values())
    with partitions_mounted(info.path, {"boot": PARTS["boot"]}, read_only=True) as m:
        saved_modules = initramfs_modules(m["boot"], info.kernel)
    assert {"virtio_blk", "ext4"} <= saved_modules
    assert "nvme" not in saved_modules and "nvme_core" not in saved_modules

    source = guest.Drive(info.path, serial="resurgo-source")
    set_disk = guest.blank_disk(tmp_path / "set.img", SET_DISK_SIZE)
    guest.run_cmd(["mkfs.ext4", "-q", "-F", "-L", "backup", set_disk])
    raid = [
        guest.blank_disk(tmp_path / f"raid-{n}.raw", RAID_DISK_SIZE) for n in ("a", "b")
    ]
    source_disks = [
        guest.Drive(set_disk, serial="resurgo-set"),
        guest.Drive(raid[0], serial="resurgo-raid-a"),
        guest.Drive(raid[1], serial="resurgo-raid-b"),
    ]
    key = os.urandom(64)

    # 2. the data stack, built inside the source
    started = time.monotonic()
    stack = guest.run_in_guest(
        STACK_SCRIPT,
        image=source,
        workdir=tmp_path / "stack-boot",
        files={"data.key": key},
        extra_disks=source_disks,
        timeout=SOURCE_TIMEOUT,
    )
    note("stack build (host)", time.monotonic() - started)
    assert stack.exit_status == 0, stack.output[-3000:] or guest._tail(stack.boot.text, 60)
    sx = stack.exchange
    md_env = dict(
        line.split("=", 1) for line in (sx / "md.env").read_text().splitlines() if "=" in line
    )
    assert md_env["MD_LEVEL"] == "raid1" and md_env["MD_METADATA"] == "1.2", md_env
    luks_uuid = (sx / "luks.uuid").read_text().strip()
    data_uuid = (sx / "data.uuid").read_text().strip()
    assert f"UUID={luks_uuid} /etc/keys/data.key" in (sx / "crypttab").read_text()

    # 3. it boots with the stack up; markers, save
    markers = {
        "root.bin": os.urandom(MARKERS["/resurgo-marker.bin"]),
        "home.bin": os.urandom(MARKERS["/home/alice/marker.bin"]),
        "data.bin": os.urandom(MARKERS["/srv/data/projects/marker.bin"]),
    }
    want = {
        "/resurgo-marker.bin": sha256(markers["root.bin"]),
        "/home/alice/marker.bin": sha256(markers["home.bin"]),
        "/srv/data/projects/marker.bin": sha256(markers["data.bin"]),
    }
    started = time.monotonic()
    run = guest.run_in_guest(
        SAVE_SCRIPT,
        image=source,
        workdir=tmp_path / "source-boot",
        files={
            "markers/root.bin": markers["root.bin"],
            "markers/home.bin": markers["home.bin"],
            "markers/data.bin": markers["data.bin"],
            "py/resurgo": REPO / "src" / "resurgo",
            "py/tomli_w": Path(tomli_w.__file__).parent,
            "py/blake3": Path(blake3.__file__).parent,
        },
        extra_disks=source_disks,
        timeout=1200,
    )
    note("source boot + save (host)", time.monotonic() - started)
    x = run.exchange
    err = (x / "save.err").read_text() if (x / "save.err").exists() else ""
    assert run.exit_status == 0, f"{run.output[-2000:]}\n{err[-3000:]}"
    # The boot itself assembled, unlocked, activated and mounted the stack.
    assert "raid1" in (x / "mdstat.txt").read_text()
    assert "LUKS2" in (x / "crypt-status.txt").read_text()
    assert (x / "srv-data.txt").read_text().split() == ["/dev/mapper/vgdata-data", "ext4"]
    begin, end = map(float, (x / "save.time").read_text().split())
    note("save (in the guest)", end - begin)
    report = json.loads((x / "save.json").read_text())
    saved_points = {u["mountpoint"] for u in report["units"]}
    assert {"/", "/boot", "/home", "/srv/data"} <= saved_points, report["units"]
    note("set MiB", report["set"]["bytes"] / MiB)
    set_id = report["set"]["id"]

    # 4. the rescue image, with the set's description; the key on its own disk
    with guest.mounted_image(set_disk) as mnt:
        set_dir = mnt / "resurgo" / HOST / set_id
        for name in ("description.toml", "description.toml.sha256"):
            shutil.copy2(set_dir / name, tmp_path / name)
    desc_text = (tmp_path / "description.toml").read_text()
    assert "/dev/vdb" not in desc_text and "/dev/vde" not in desc_text
    assert luks_uuid in desc_text and data_uuid in desc_text
    volume = luks_volume_id(tmp_path / "description.toml")
    key_disk = guest.make_exchange_disk(
        tmp_path / "keys.img", {f"{volume}.key": key}, size=KEY_DISK_SIZE
    )
    guest.run_cmd(["e2label", key_disk, KEY_LABEL])
    with read_only_view(guest.debian_tree(), tmp_path / "kroot") as kroot:
        rescue = build_rescue_image(
            tmp_path / "rescue.iso",
            RescueOptions(
                description=tmp_path / "description.toml",
                kernel_root=kroot,
                unattended=True,
                after=After.POWEROFF,
                menu_timeout=0,
                kernel_args=("resurgo.wait=5", f"resurgo.keys=LABEL={KEY_LABEL}"),
            ),
        )
    note("rescue build", rescue.seconds)
    note("rescue image MiB", rescue.size / MiB)

    # 5. the rescue, unattended, SeaBIOS: set and key disks, three blank NVMe disks
    target = guest.blank_disk(tmp_path / "target.raw", TARGET_SIZE)
    mirror = [
        guest.blank_disk(tmp_path / f"target-raid-{n}.raw", size)
        for n, size in zip("ab", TARGET_RAID_SIZES, strict=True)
    ]
    targets = [
        guest.Drive(target, interface="nvme", serial="resurgo-target"),
        guest.Drive(mirror[0], interface="nvme", serial="resurgo-target-a"),
        guest.Drive(mirror[1], interface="nvme", serial="resurgo-target-b"),
    ]
    started = time.monotonic()
    result = guest.boot(
        guest.Drive(rescue.path, format="raw", read_only=True, serial="stick"),
        [
            guest.Drive(set_disk, serial="resurgo-set"),
            guest.Drive(key_disk, serial="resurgo-keys"),
            *targets,
        ],
        timeout=RESCUE_TIMEOUT,
        serial_log=tmp_path / "rescue.log",
        firmware="bios",
    )
    note("rescue boot to recovered (host)", time.monotonic() - started)
    lines = rescue_lines(result.text)
    detail = "\n".join(lines[-60:]) or guest._tail(result.text, 60)
    assert not result.timed_out, f"the rescue did not power off:\n{detail}"
    assert any(x.startswith("recovery set:") and set_id in x for x in lines), detail
    assert f"{volume}: key file /run/resurgo/keys/{volume}.key" in lines, detail
    # Neither the set's disk nor the key disk is ever a target.
    never = re.findall(r"(/dev/\w+) is not a candidate: it holds the recovery set", result.text)
    assert len(set(never)) == 2, never
    assert "recovery finished: ok" in lines, guest._tail(result.text, 120)
    assert lines[-1] == "poweroff now", detail
    restored = re.findall(r"done +resurgo:restore .*\(([0-9.]+) s\)", result.text)
    note("restore data (in the rescue)", sum(map(float, restored)))
    fin = re.search(r"drivers ([0-9.]+) s, bootloader ([0-9.]+) s; total ([0-9.]+) s", result.text)
    assert fin, detail
    note("finalize (in the rescue)", float(fin.group(3)))
    note("finalize: drivers, initramfs rebuilt", float(fin.group(1)))
    note("finalize: bootloader", float(fin.group(2)))

    # The layout on the system disk: the saved MBR, numbers and types, root grown.
    tgt_table = table(target)
    assert tgt_table["label"] == "dos"
    assert tgt_table["id"].lower() == src_table["id"].lower()
    tgt_parts = numbered(tgt_table)
    assert {n: p["type"] for n, p in tgt_parts.items()} == {
        n: p["type"] for n, p in src_parts.items()
    }
    assert tgt_parts[PARTS["boot"]].get("bootable") == src_parts[PARTS["boot"]].get("bootable")
    assert tgt_parts[PARTS["root"]]["size"] > src_parts[PARTS["root"]]["size"]
    for name in ("boot", "swap", "home"):
        assert tgt_parts[PARTS[name]]["size"] == src_parts[PARTS[name]]["size"], name
    # Each of the mirror's disks: one partition of the saved type, as large as before on
    # the disk alike, grown on the larger one (the grow policy's last resizable partition).
    src_raid = numbered(table(raid[0]))
    members = [numbered(table(image)) for image in mirror]
    for member in members:
        assert {n: p["type"] for n, p in member.items()} == {
            n: p["type"] for n, p in src_raid.items()
        }
    assert members[0][1]["size"] == src_raid[1]["size"]
    assert members[1][1]["size"] > src_raid[1]["size"]
    with partitions_mounted(target, {"boot": PARTS["boot"]}, read_only=True) as mnts:
        recovered_modules = initramfs_modules(mnts["boot"], info.kernel)
    assert {"nvme", "nvme_core"} <= recovered_modules
    assert saved_modules <= recovered_modules

    # 6. the recovered disks alone, SeaBIOS, from NVMe
    started = time.monotonic()
    booted = boot_recovered(targets, tmp_path / "recovered.log")
    note("recovered boot (host)", time.monotonic() - started)
    checks = checks_of(booted.text)
    assert booted.reached_runner and checks, guest._tail(booted.text, 60)
    got = {
        c.split()[2]: c.split()[1]
        for c in checks
        if c.startswith("sha256 ") and len(c.split()) == 3
    }
    assert got == want, checks
    mounts = {c.split()[1]: c.split()[2:] for c in checks if c.startswith("mount ")}
    # NVMe controllers probe asynchronously: the system disk is whichever nvmeN it got.
    root_dev = re.fullmatch(r"/dev/(nvme\d+n1)p3", mounts["/"][0])
    assert root_dev and mounts["/"][1] == "ext4", checks
    disk = root_dev.group(1)
    assert mounts["/boot"] == [f"/dev/{disk}p{PARTS['boot']}", "ext4"], checks
    assert mounts["/home"] == [f"/dev/{disk}p{PARTS['home']}", "ext4"], checks
    assert mounts["/srv/data"] == ["/dev/mapper/vgdata-data", "ext4"], checks
    swap = next(c for c in checks if c.startswith("swap "))
    assert swap.split()[1:] == [f"/dev/{disk}p{PARTS['swap']}", "partition"], checks
    cmdline = next(c for c in checks if c.startswith("cmdline "))
    assert f"root=UUID={info.root_uuid}" in cmdline, cmdline
    # The mirror, both members on the other two NVMe disks, and its identity kept.
    mdstat = " ".join(c.removeprefix("mdstat ") for c in checks if c.startswith("mdstat "))
    assert re.search(r"md\d+ : active raid1 nvme\d+n1p1\[\d\] nvme\d+n1p1\[\d\]", mdstat), mdstat
    assert "[2/2] [UU]" in mdstat, mdstat
    assert disk not in mdstat, mdstat
    md = dict(c.removeprefix("md ").split("=", 1) for c in checks if c.startswith("md "))
    assert md["MD_UUID"] == md_env["MD_UUID"] and md["MD_LEVEL"] == "raid1", md
    assert md["MD_DEVICES"] == "2", md
    # The LUKS volume kept its UUID: the restored crypttab and key file unlocked it.
    assert f"luks-uuid {luks_uuid}" in checks, checks
    crypt = {
        c.split()[1].rstrip(":"): " ".join(c.split()[2:])
        for c in checks
        if c.startswith("crypt ") and len(c.split()) > 2
    }
    assert crypt.get("type") == "LUKS2", checks
    assert re.fullmatch(r"/dev/md\d+", crypt.get("device", "")), checks
    lvs = [c.split()[1:] for c in checks if c.startswith("lvs ")]
    assert any(v[:2] == ["vgdata", "data"] and v[-1] == "active" for v in lvs), checks
    lsblk = [c.split()[1:] for c in checks if c.startswith("lsblk ")]
    assert any(v[:3] == ["cryptdata", "crypt", "LVM2_member"] for v in lsblk), checks
    assert any(v[:3] == ["vgdata-data", "lvm", "ext4"] for v in lsblk), checks

    note("total (host)", time.monotonic() - total)
    print("whole cycle (BIOS):", json.dumps(times))
