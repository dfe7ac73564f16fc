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
   mounted); marker files go to /, /home and /srv/data and `resurgo save --no-rescue
   --sign-key KEY --initramfs rebuild` writes the set to another virtual disk (the guest
   script of tests/vm/cycle.py, which the UEFI cycle runs too, without the last option):
   the set leaves the initramfs out;
4. host: the LUKS key on a key disk, named after the volume's id, never on the kernel
   command line;
5. the run's kernel-root rescue (trusting KEY) boots its kernel and initramfs (SeaBIOS)
   with the unattended entry's command line, `resurgo.set=` naming the set and
   `resurgo.keys=LABEL=RESURGO-KEYS`, the set disk, the key disk and three blank NVMe
   disks (the system disk 25 % larger, the mirror's disks one as large as before, one
   larger); it recovers and finalizes unattended (finalize makes the initramfs the set
   left out, update-initramfs -c in the chroot), powers off;
6. the recovered disks boot alone (SeaBIOS, NVMe); the check script saved with the
   system prints the markers' hashes, the mounts, /proc/mdstat, the crypt layer, the LV,
   the identities of the md array and the LUKS volume, the kernel command line.
   host: the MBR has the source's partition numbers and types, the root grown; the
   recovered initramfs carries nvme.

Each numbered step is a module-scoped fixture (source, stack, saved, recovered, booted),
the checks tests of their own. The times go to whole-cycle-bios.json in the module's
tmp dir, and stdout.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from resurgo import fileformat
from resurgo.rescue import RescueReport
from tests.vm import guest
from tests.vm.cycle import (
    MARKERS,
    Saved,
    Times,
    boot_recovered,
    cached_source,
    hashes,
    initramfs_modules,
    mounts,
    numbered,
    partitions_mounted,
    rescue_boot,
    save_in_guest,
    table,
)
from tests.vm.rescue_images import Keys, rescue_lines

pytestmark = pytest.mark.vm

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
SOURCE_TIMEOUT = 600.0

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
# The emulated CPU unlocks LUKS slowly, the more on a loaded host: longer than systemd's
# 90 s wait for the LV inside (then the boot stops in emergency mode).
echo "UUID=$fs /srv/data ext4 defaults,x-systemd.device-timeout=600 0 2" >>/etc/fstab
mdadm --detail --scan >>/etc/mdadm/mdadm.conf
mkdir -p /srv/data
mdadm --detail --export /dev/md/data >"$X/md.env"
echo "$luks" >"$X/luks.uuid"
echo "$fs" >"$X/data.uuid"
cp /etc/crypttab /etc/fstab /etc/mdadm/mdadm.conf "$X/"
sync
"""



def luks_volume_id(description: Path) -> str:
    """The id `resurgo show` gives the one LUKS volume: the key file's name."""
    vols = fileformat.read(description).luks_volumes
    assert len(vols) == 1, vols
    return vols[0].id


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("whole-cycle-bios")


@pytest.fixture(scope="module")
def times(work: Path) -> Times:
    return Times(work / "whole-cycle-bios.json", "whole cycle (BIOS)")


@dataclass(frozen=True)
class Source:
    info: guest.ImageInfo
    table: dict[str, Any]
    parts: dict[int, dict[str, Any]]
    modules: frozenset[str]


@dataclass(frozen=True)
class Stack:
    md_env: dict[str, str]
    luks_uuid: str
    data_uuid: str
    crypttab: str
    key: bytes


#: Bump when built_stack changes what it does (a part of its cache key).
STACK_VERSION = 1
STACK_FILES = ("md.env", "luks.uuid", "data.uuid", "crypttab")


def built_stack(work: Path, times: Times) -> tuple[guest.ImageInfo, list[Path], Stack]:
    """The source after its first boot built the data stack on the mirror's two disks, as
    an administrator would: cached like the source itself (the source, the two disks, the
    stack's identities and its key, keyed on the source and the script), copied to
    ``work``. The first boot's checks are the next test's, on what it left."""
    base = cached_source(hostname=HOST, size=SOURCE_SIZE, uefi=False, label="dos")
    digest = guest.cache_key(base.path.name, STACK_VERSION, STACK_SCRIPT, RAID_DISK_SIZE)
    final = guest.DEFAULT_CACHE_DIR / f"bios-stack-{digest}"
    with guest.locked(final.with_suffix(".lock")):
        if not (final / "COMPLETE").exists():
            partial = final.with_suffix(".partial")
            guest.remove_tree(partial)
            partial.mkdir(parents=True)
            source = guest.copy_image(base, partial / "source.raw")
            raid = [guest.blank_disk(partial / f"raid-{n}.raw", RAID_DISK_SIZE) for n in "ab"]
            key = os.urandom(64)
            (partial / "data.key").write_bytes(key)
            with times.timed("stack build (host)"):
                run = guest.run_in_guest(
                    STACK_SCRIPT,
                    image=guest.Drive(source.path, serial="resurgo-source"),
                    workdir=work / "stack-boot",
                    files={"data.key": key},
                    extra_disks=[
                        guest.Drive(guest.blank_disk(work / "stack-set.img", SET_DISK_SIZE),
                                    serial="resurgo-set"),
                        guest.Drive(raid[0], serial="resurgo-raid-a"),
                        guest.Drive(raid[1], serial="resurgo-raid-b"),
                    ],
                    timeout=SOURCE_TIMEOUT,
                )
            assert run.exit_status == 0, run.output[-3000:] or guest._tail(run.boot.text, 60)
            for name in STACK_FILES:
                shutil.copyfile(run.exchange / name, partial / name)
            (partial / "COMPLETE").write_text("")
            partial.rename(final)
    info = guest.copy_image(dataclasses.replace(base, path=final / "source.raw"),
                            work / "source.raw")
    raid = [guest.copy_image(dataclasses.replace(base, path=final / f"raid-{n}.raw"),
                             work / f"raid-{n}.raw").path for n in "ab"]
    md_env = dict(
        line.split("=", 1) for line in (final / "md.env").read_text().splitlines() if "=" in line
    )
    stack = Stack(md_env, (final / "luks.uuid").read_text().strip(),
                  (final / "data.uuid").read_text().strip(), (final / "crypttab").read_text(),
                  (final / "data.key").read_bytes())
    return info, raid, stack


@dataclass(frozen=True)
class Built:
    source: Source
    raid: list[Path]
    stack: Stack


@pytest.fixture(scope="module")
def built(work: Path, times: Times) -> Built:
    with times.timed("build source"):
        info, raid, stack = built_stack(work, times)
    tab = table(info.path)
    with partitions_mounted(info.path, {"boot": PARTS["boot"]}, read_only=True) as m:
        modules = initramfs_modules(m["boot"], info.kernel)
    return Built(Source(info, tab, numbered(tab), modules), raid, stack)


@pytest.fixture(scope="module")
def source(built: Built) -> Source:
    return built.source


@pytest.fixture(scope="module")
def stack(built: Built) -> Stack:
    return built.stack


def test_the_source_is_mbr_with_a_host_only_initramfs(source: Source) -> None:
    assert source.table["label"] == "dos"
    assert sorted(source.parts) == sorted(PARTS.values())
    assert {"virtio_blk", "ext4"} <= source.modules
    assert "nvme" not in source.modules and "nvme_core" not in source.modules


@dataclass(frozen=True)
class Disks:
    source: guest.Drive
    set_disk: Path
    raid: list[Path]
    key: bytes

    @property
    def extra(self) -> list[guest.Drive]:
        """vdb the set disk, vdc and vdd the mirror's (the exchange disk comes after)."""
        return [
            guest.Drive(self.set_disk, serial="resurgo-set"),
            guest.Drive(self.raid[0], serial="resurgo-raid-a"),
            guest.Drive(self.raid[1], serial="resurgo-raid-b"),
        ]


@pytest.fixture(scope="module")
def disks(built: Built, work: Path) -> Disks:
    set_disk = guest.blank_disk(work / "set.img", SET_DISK_SIZE)
    guest.run_cmd(["mkfs.ext4", "-q", "-F", "-L", "backup", set_disk])
    return Disks(guest.Drive(built.source.info.path, serial="resurgo-source"), set_disk,
                 built.raid, built.stack.key)


def test_the_source_has_raid1_luks_lvm(stack: Stack) -> None:
    assert stack.md_env["MD_LEVEL"] == "raid1" and stack.md_env["MD_METADATA"] == "1.2"
    assert f"UUID={stack.luks_uuid} /etc/keys/data.key" in stack.crypttab


@pytest.fixture(scope="module")
def saved(stack: Stack, disks: Disks, work: Path, times: Times, keys: Keys) -> Saved:
    return save_in_guest(
        work,
        times,
        source=disks.source,
        disks=disks.extra,
        set_disk=disks.set_disk,
        markers=MARKERS,
        exclude=["/dev/vdb", "/dev/vde"],
        keys=keys,
        host=HOST,
        firmware="bios",
        save_args=("--initramfs", "rebuild"),
    )


def test_the_stack_came_up_by_itself_and_was_saved(
    saved: Saved, stack: Stack, source: Source
) -> None:
    x = saved.exchange
    # The boot itself assembled, unlocked, activated and mounted the stack.
    assert "raid1" in (x / "mdstat.txt").read_text()
    assert "LUKS2" in (x / "crypt-status.txt").read_text()
    assert (x / "srv-data.txt").read_text().split() == ["/dev/mapper/vgdata-data", "ext4"]
    saved_points = {u["mountpoint"] for u in saved.report["units"]}
    assert {"/", "/boot", "/home", "/srv/data"} <= saved_points, saved.report["units"]
    desc_text = saved.description.read_text()
    assert "/dev/vdb" not in desc_text and "/dev/vde" not in desc_text
    assert stack.luks_uuid in desc_text and stack.data_uuid in desc_text
    # The initramfs is not in the set: the description says the recovery makes it.
    image = f"/boot/initrd.img-{source.info.kernel}"
    assert saved.report["initramfs"]["left_out"] == [image], saved.report["initramfs"]
    made = fileformat.read(saved.description).initramfs_made_at_recovery()
    assert [(i.kernel, i.path) for i in made] == [(source.info.kernel, image)]


@dataclass(frozen=True)
class Targets:
    system: Path
    mirror: list[Path]

    @property
    def drives(self) -> list[guest.Drive]:
        return [
            guest.Drive(self.system, interface="nvme", serial="resurgo-target"),
            guest.Drive(self.mirror[0], interface="nvme", serial="resurgo-target-a"),
            guest.Drive(self.mirror[1], interface="nvme", serial="resurgo-target-b"),
        ]


@pytest.fixture(scope="module")
def targets(work: Path) -> Targets:
    return Targets(
        guest.blank_disk(work / "target.raw", TARGET_SIZE),
        [guest.blank_disk(work / f"target-raid-{n}.raw", size)
         for n, size in zip("ab", TARGET_RAID_SIZES, strict=True)],
    )


@pytest.fixture(scope="module")
def volume(saved: Saved) -> str:
    return luks_volume_id(saved.description)


@pytest.fixture(scope="module")
def recovered(
    saved: Saved, disks: Disks, targets: Targets, volume: str, work: Path, times: Times,
    kernel_root_image: RescueReport, kernel_root_files: Path,
) -> guest.BootResult:
    times.note("rescue build", kernel_root_image.seconds)
    times.note("rescue image MiB", kernel_root_image.size / MiB)
    key_disk = guest.make_exchange_disk(
        work / "keys.img", {f"{volume}.key": disks.key}, size=KEY_DISK_SIZE
    )
    guest.run_cmd(["e2label", key_disk, KEY_LABEL])
    return rescue_boot(
        work,
        times,
        files=kernel_root_files,
        set_id=saved.set_id,
        disks=[
            guest.Drive(disks.set_disk, serial="resurgo-set"),
            guest.Drive(key_disk, serial="resurgo-keys"),
            *targets.drives,
        ],
        firmware="bios",
        more_args=(f"resurgo.keys=LABEL={KEY_LABEL}",),
    )


def test_the_rescue_takes_the_set_and_the_key_disk_and_recovers(
    recovered: guest.BootResult, saved: Saved, volume: str
) -> None:
    lines = rescue_lines(recovered.text)
    detail = "\n".join(lines[-60:])
    assert any(x.startswith("recovery set:") and saved.set_id in x for x in lines), detail
    assert f"{volume}: key file /run/resurgo/keys/{volume}.key" in lines, detail
    # Neither the set's disk nor the key disk is ever a target.
    never = re.findall(r"(/dev/\w+) is not a candidate: it holds the recovery set",
                       recovered.text)
    assert len(set(never)) == 2, never
    assert lines[-1] == "poweroff now", detail
    assert re.search(r"running +\[chroot\] update-initramfs -c -k ", recovered.text), detail


def test_the_mbr_keeps_numbers_and_types_root_grown(
    recovered: guest.BootResult, source: Source, targets: Targets
) -> None:
    tgt_table = table(targets.system)
    assert tgt_table["label"] == "dos"
    assert tgt_table["id"].lower() == source.table["id"].lower()
    tgt_parts = numbered(tgt_table)
    src_parts = source.parts
    assert {n: p["type"] for n, p in tgt_parts.items()} == {
        n: p["type"] for n, p in src_parts.items()
    }
    assert tgt_parts[PARTS["boot"]].get("bootable") == src_parts[PARTS["boot"]].get("bootable")
    assert tgt_parts[PARTS["root"]]["size"] > src_parts[PARTS["root"]]["size"]
    for name in ("boot", "swap", "home"):
        assert tgt_parts[PARTS[name]]["size"] == src_parts[PARTS[name]]["size"], name


def test_the_mirrors_disks_keep_the_saved_type_the_larger_grown(
    recovered: guest.BootResult, disks: Disks, targets: Targets
) -> None:
    # Each of the mirror's disks: one partition of the saved type, as large as before on
    # the disk alike, grown on the larger one (the grow policy's last resizable partition).
    src_raid = numbered(table(disks.raid[0]))
    members = [numbered(table(image)) for image in targets.mirror]
    for member in members:
        assert {n: p["type"] for n, p in member.items()} == {
            n: p["type"] for n, p in src_raid.items()
        }
    assert members[0][1]["size"] == src_raid[1]["size"]
    assert members[1][1]["size"] > src_raid[1]["size"]


def test_the_recovered_initramfs_has_nvme(
    recovered: guest.BootResult, source: Source, targets: Targets
) -> None:
    with partitions_mounted(targets.system, {"boot": PARTS["boot"]}, read_only=True) as mnts:
        recovered_modules = initramfs_modules(mnts["boot"], source.info.kernel)
    assert {"nvme", "nvme_core"} <= recovered_modules
    assert source.modules <= recovered_modules


@pytest.fixture(scope="module")
def booted(recovered: guest.BootResult, targets: Targets, work: Path, times: Times) -> list[str]:
    return boot_recovered(targets.drives, work / "recovered.log", times, firmware="bios")


def test_the_recovered_disks_boot_alone_from_nvme(
    booted: list[str], saved: Saved, source: Source, times: Times
) -> None:
    checks = booted
    assert hashes(checks) == saved.want, checks
    mounted = mounts(checks)
    # NVMe controllers probe asynchronously: the system disk is whichever nvmeN it got.
    root_dev = re.fullmatch(r"/dev/(nvme\d+n1)p3", mounted["/"][0])
    assert root_dev and mounted["/"][1] == "ext4", checks
    disk = root_dev.group(1)
    assert mounted["/boot"] == [f"/dev/{disk}p{PARTS['boot']}", "ext4"], checks
    assert mounted["/home"] == [f"/dev/{disk}p{PARTS['home']}", "ext4"], checks
    assert mounted["/srv/data"] == ["/dev/mapper/vgdata-data", "ext4"], checks
    swap = next(c for c in checks if c.startswith("swap "))
    assert swap.split()[1:] == [f"/dev/{disk}p{PARTS['swap']}", "partition"], checks
    cmdline = next(c for c in checks if c.startswith("cmdline "))
    assert f"root=UUID={source.info.root_uuid}" in cmdline, cmdline
    times.total()


def test_the_recovered_stack_keeps_its_identities(
    booted: list[str], stack: Stack
) -> None:
    checks = booted
    disk = re.fullmatch(r"/dev/(nvme\d+n1)p3", mounts(checks)["/"][0])
    assert disk, checks
    # The mirror, both members on the other two NVMe disks, and its identity kept.
    mdstat = " ".join(c.removeprefix("mdstat ") for c in checks if c.startswith("mdstat "))
    assert re.search(r"md\d+ : active raid1 nvme\d+n1p1\[\d\] nvme\d+n1p1\[\d\]", mdstat), mdstat
    assert "[2/2] [UU]" in mdstat, mdstat
    assert disk.group(1) not in mdstat, mdstat
    md = dict(c.removeprefix("md ").split("=", 1) for c in checks if c.startswith("md "))
    assert md["MD_UUID"] == stack.md_env["MD_UUID"] and md["MD_LEVEL"] == "raid1", md
    assert md["MD_DEVICES"] == "2", md
    # The LUKS volume kept its UUID: the restored crypttab and key file unlocked it.
    assert f"luks-uuid {stack.luks_uuid}" in checks, checks
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
