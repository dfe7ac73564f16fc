"""The full storage stack through the rescue (vm tier): a UEFI system whose root is LVM on
LUKS on md RAID1 over two disks, unlocked at boot with a key file on a keys stick, saved
from inside, recovered unattended onto two blank NVMe disks of another size, booted;
once keeping its identities, once with ``--new-identities``.

1. ``stack``: the source (tests/vm/fullstack.py: two virtio disks, the keys stick; built
   in a guest once, cached, a copy per run);
2. ``saved``: the source boots (OVMF, virtio) with the stick and a set disk: the
   initramfs assembles the mirror and unlocks the root with the stick's key by itself
   (noted for the checks); marker files are written, a listing of digests of the
   system's files (fstab, crypttab, ... included) is made in the system itself, then
   `resurgo save --no-rescue --sign-key KEY` writes the set to the set disk;
3. ``recovered``, ``renewed``: the run's kernel-root rescue (trusting KEY) boots with the
   unattended entry's command line, ``resurgo.set=`` naming the set and
   ``resurgo.keys=LABEL=RESURGO-KEYS``, the set disk, the stick and two blank NVMe disks
   25 % larger (``renewed``: also ``resurgo.args=--new-identities``); it recovers and
   finalizes unattended and powers off. Both share the one save;
4. ``booted``, ``booted_renewed``: the recovered disks boot alone with the stick (OVMF,
   NVMe); the check script saved with the system prints what it runs on, every file
   that names its storage (also those inside its initramfs), the kernel command line,
   grub.cfg's lines, and the listing checked.

The times go to full-stack.json in the module's tmp dir, and stdout.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from resurgo import fileformat
from resurgo.rescue import RescueReport
from tests.vm import guest
from tests.vm.cycle import (
    MARKERS,
    Saved,
    Times,
    boot_recovered,
    rescue_boot,
    save_in_guest,
    sha256,
    table,
)
from tests.vm.fullstack import (
    CHECK_SCRIPT,
    DISK_SIZE,
    HOST,
    KEY_LABEL,
    LISTED,
    LISTING,
    Stack,
    stack_source,
)
from tests.vm.rescue_images import Keys, rescue_lines

pytestmark = pytest.mark.vm

MiB = guest.MiB
TARGET_SIZE = DISK_SIZE * 5 // 4
SET_DISK_SIZE = 2 * guest.GiB
# The root is unlocked at boot with the PBKDF the rescue chose for its (emulated) CPU.
BOOT_TIMEOUT = 900.0
DEVICES_FILE = "/etc/lvm/devices/system.devices"
#: What finalize may rewrite among the listed files when identities change.
REWRITTEN = frozenset({"/etc/fstab", "/etc/crypttab", "/etc/mdadm/mdadm.conf",
                       "/etc/default/grub", "/etc/initramfs-tools/conf.d/resume",
                       DEVICES_FILE})

# The source's boot: vda disk A, vdb the set disk, vdc disk B, vdd the stick, vde the
# exchange disk. What the boot brought up is noted first.
SAVE_SCRIPT = f"""#!/bin/sh
set -u
X="$RESURGO_EXCHANGE"
udevadm settle
cat /proc/mdstat >"$X/mdstat.txt" 2>&1
cryptsetup status cryptroot >"$X/crypt-status.txt" 2>&1
findmnt -n -o SOURCE,FSTYPE / >"$X/root.txt" 2>&1
n=0
while read -r dest; do
    n=$((n + 1))
    mkdir -p "$(dirname "$dest")"
    cp "$X/markers/$n" "$dest"
done <"$X/markers.list"
# LVM's devices file, as RHEL 9 and Fedora have it on: LVM then uses only the devices it
# lists, by their IDs (here the PV's dm-crypt UUID).
sed -i 's/^[[:space:]]*# use_devicesfile = 0$/\tuse_devicesfile = 1/' /etc/lvm/lvm.conf
lvm lvmdevices --yes --adddev /dev/mapper/cryptroot >"$X/lvmdevices.txt" 2>&1
cp /etc/lvm/devices/system.devices "$X/system.devices"
lvmconfig devices/use_devicesfile >"$X/use_devicesfile.txt" 2>&1
mkdir -p "$(dirname {LISTING})"
find {" ".join(LISTED)} $(cat "$X/markers.list") -xdev -type f -print0 | sort -z \\
    | xargs -0 sha256sum >{LISTING}
cp {LISTING} "$X/listing.sha256"
cat >/resurgo-test/run.sh <<'CHECK_EOF'
{CHECK_SCRIPT}CHECK_EOF
chmod 0755 /resurgo-test/run.sh
sync
mkdir -p /mnt/set
mount /dev/vdb /mnt/set || exit 10
mkdir -p "/mnt/set/resurgo/{HOST}"
install -m 0600 "$X/sign/key" /root/resurgo-sign.key
start=$(date +%s.%N)
PYTHONPATH="$X/py" python3 -m resurgo save --to "/mnt/set/resurgo/{HOST}" --no-rescue \\
    --sign-key /root/resurgo-sign.key --no-catalog --exclude-disk /dev/vdb \\
    --exclude-disk /dev/vdd --exclude-disk /dev/vde --json >"$X/save.json" 2>"$X/save.err"
rc=$?
end=$(date +%s.%N)
echo "$start $end" >"$X/save.time"
umount /mnt/set
sync
exit $rc
"""


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("full-stack")


@pytest.fixture(scope="module")
def times(work: Path) -> Times:
    return Times(work / "full-stack.json", "full stack")


@pytest.fixture(scope="module")
def stack(work: Path, times: Times) -> Stack:
    with times.timed("stack source (cached or built)"):
        return stack_source(work)


@pytest.fixture(scope="module")
def set_disk(work: Path) -> Path:
    disk = guest.blank_disk(work / "set.img", SET_DISK_SIZE)
    guest.run_cmd(["mkfs.ext4", "-q", "-F", "-L", "backup", disk])
    return disk


def stick(stack: Stack) -> guest.Drive:
    return guest.Drive(stack.keys, serial="resurgo-keys", read_only=True)


@pytest.fixture(scope="module")
def saved(stack: Stack, set_disk: Path, work: Path, times: Times, keys: Keys) -> Saved:
    return save_in_guest(
        work,
        times,
        source=guest.Drive(stack.disk_a, serial="resurgo-stack-a"),
        disks=[
            guest.Drive(set_disk, serial="resurgo-set"),
            guest.Drive(stack.disk_b, serial="resurgo-stack-b"),
            stick(stack),
        ],
        set_disk=set_disk,
        markers=MARKERS,
        exclude=[],
        keys=keys,
        host=HOST,
        firmware="uefi",
        script=SAVE_SCRIPT,
    )


def test_the_source_came_up_on_its_stack_and_was_saved(saved: Saved, stack: Stack) -> None:
    x = saved.exchange
    # The initramfs assembled the mirror (both halves) and unlocked the root with the key
    # on the stick, by itself.
    mdstat = (x / "mdstat.txt").read_text()
    assert re.search(r"active raid1 vd[ac]\d+\[\d\] vd[ac]\d+\[\d\]", mdstat), mdstat
    assert "[2/2] [UU]" in mdstat, mdstat
    assert "LUKS2" in (x / "crypt-status.txt").read_text()
    assert (x / "root.txt").read_text().split() == ["/dev/mapper/vgstack-root", "ext4"]
    saved_points = {u["mountpoint"] for u in saved.report["units"]}
    assert {"/", "/boot"} <= saved_points, saved.report["units"]
    desc = saved.description.read_text()
    assert stack.ids["luks"] in desc and stack.md["MD_UUID"].replace(":", "") in (
        desc.replace(":", "").replace("-", "")
    )
    # LVM's devices file was on, and named the PV.
    assert (x / "use_devicesfile.txt").read_text().split() == ["use_devicesfile=1"]
    assert stack.ids["luks"].replace("-", "") in (x / "system.devices").read_text(), \
        (x / "lvmdevices.txt").read_text()
    # The stick is named in crypttab, and left out of the description as a disk.
    disks = fileformat.read(saved.description).disks
    assert all(d.serial != "resurgo-keys" for d in disks), disks
    assert len(disks) == 2, disks


@dataclass(frozen=True)
class Targets:
    a: Path
    b: Path

    def drives(self, stack: Stack) -> list[guest.Drive]:
        """The target holding the ESP first (the firmware boots it), the stick last."""
        first, second = (self.a, self.b) if _has_esp(self.a) else (self.b, self.a)
        return [guest.Drive(first, interface="nvme", serial="resurgo-target-1"),
                guest.Drive(second, interface="nvme", serial="resurgo-target-2"),
                stick(stack)]


def _has_esp(image: Path) -> bool:
    return any(p["type"].upper() == "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
               for p in table(image)["partitions"])


def _recover(
    saved: Saved, stack: Stack, set_disk: Path, work: Path, times: Times,
    files: Path, name: str, *more: str,
) -> tuple[guest.BootResult, Targets]:
    sub = work / name
    sub.mkdir(exist_ok=True)
    targets = Targets(guest.blank_disk(sub / "target-a.raw", TARGET_SIZE),
                      guest.blank_disk(sub / "target-b.raw", TARGET_SIZE))
    result = rescue_boot(
        sub,
        times.scoped(name),
        files=files,
        set_id=saved.set_id,
        disks=[
            guest.Drive(set_disk, serial="resurgo-set"),
            stick(stack),
            guest.Drive(targets.a, interface="nvme", serial="resurgo-target-a"),
            guest.Drive(targets.b, interface="nvme", serial="resurgo-target-b"),
        ],
        firmware="uefi",
        more_args=(f"resurgo.keys=LABEL={KEY_LABEL}", *more),
    )
    return result, targets


@pytest.fixture(scope="module")
def recovered(
    saved: Saved, stack: Stack, set_disk: Path, work: Path, times: Times,
    kernel_root_image: RescueReport, kernel_root_files: Path,
) -> tuple[guest.BootResult, Targets]:
    times.note("rescue build", kernel_root_image.seconds)
    return _recover(saved, stack, set_disk, work, times, kernel_root_files, "kept")


@pytest.fixture(scope="module")
def renewed(
    saved: Saved, stack: Stack, set_disk: Path, work: Path, times: Times,
    kernel_root_files: Path,
) -> tuple[guest.BootResult, Targets]:
    return _recover(saved, stack, set_disk, work, times, kernel_root_files, "renewed",
                    "resurgo.args=--new-identities")


def _rescued(result: guest.BootResult, saved: Saved) -> list[str]:
    lines = rescue_lines(result.text)
    detail = "\n".join(lines[-60:])
    assert any(x.startswith("recovery set:") and saved.set_id in x for x in lines), detail
    assert any(re.fullmatch(r"luks\.\S+: key file /run/resurgo/keys/\S+", x)
               for x in lines), detail
    never = re.findall(r"(/dev/\w+) is not a candidate: it holds the recovery set", result.text)
    assert len(set(never)) == 2, never
    assert lines[-1] == "poweroff now", detail
    return lines


def test_the_rescue_recovers_the_stack_with_the_sticks_key(
    recovered: tuple[guest.BootResult, Targets], saved: Saved
) -> None:
    _rescued(recovered[0], saved)


def test_the_rescue_recovers_the_stack_with_new_identities(
    renewed: tuple[guest.BootResult, Targets], saved: Saved
) -> None:
    _rescued(renewed[0], saved)
    # No driver lacks: the initramfs's copies of crypttab, mdadm.conf and resume are
    # renamed in the image, without a rebuild (minutes under emulation).
    text = renewed[0].text
    assert re.search(r"initrd\.img-\S+: its copies of .* renamed in the image", text), \
        guest._tail(text, 60)
    assert not re.search(r"running +\[chroot\] update-initramfs", text), guest._tail(text, 60)


@dataclass(frozen=True)
class Booted:
    checks: list[str]

    def values(self, kind: str) -> list[str]:
        return [c.removeprefix(kind + " ") for c in self.checks if c.startswith(kind + " ")]

    def one(self, kind: str) -> str:
        found = self.values(kind)
        assert len(found) == 1, (kind, self.checks)
        return found[0]

    def ids(self) -> dict[str, str]:
        return dict(v.split(" ", 1) for v in self.values("id") if " " in v)

    def file(self, path: str) -> list[str]:
        return [v.removeprefix(path + " ") for v in self.values("file")
                if v.startswith(path + " ")]

    def initramfs(self, suffix: str) -> list[str]:
        return [v.split(" ", 1)[1] for v in self.values("initramfs")
                if " " in v and v.split(" ", 1)[0].endswith(suffix)]


def _boot(result: tuple[guest.BootResult, Targets], stack: Stack, work: Path, times: Times,
          name: str) -> Booted:
    checks = boot_recovered(result[1].drives(stack), work / f"{name}.log",
                            times.scoped(name), firmware="uefi", timeout=BOOT_TIMEOUT)
    return Booted(checks)


@pytest.fixture(scope="module")
def booted(recovered: tuple[guest.BootResult, Targets], stack: Stack, work: Path,
           times: Times) -> Booted:
    return _boot(recovered, stack, work, times, "booted-kept")


@pytest.fixture(scope="module")
def booted_renewed(renewed: tuple[guest.BootResult, Targets], stack: Stack, work: Path,
                   times: Times) -> Booted:
    return _boot(renewed, stack, work, times, "booted-renewed")


def _check_stack(b: Booted, saved: Saved) -> dict[str, str]:
    """The recovered system runs on its stack: / on the LV, on LUKS, on the mirror of
    both NVMe disks; and its identities are those every file names."""
    mounted = {v.split()[0]: v.split()[1:] for v in b.values("mount")}
    assert mounted["/"] == ["/dev/mapper/vgstack-root", "ext4"], b.checks
    assert re.fullmatch(r"/dev/nvme\dn1p2", mounted["/boot"][0]), b.checks
    assert re.fullmatch(r"/dev/nvme\dn1p1", mounted["/boot/efi"][0]), b.checks
    swap = b.one("swap").split()
    assert swap[0].startswith("/dev/dm-") and swap[1] == "partition", b.checks
    mdstat = " ".join(b.values("mdstat"))
    assert re.search(r"md\d+ : active raid1 nvme\dn1p\d\[\d\] nvme\dn1p\d\[\d\]", mdstat), mdstat
    assert "[2/2] [UU]" in mdstat, mdstat
    crypt = {v.split()[0].rstrip(":"): " ".join(v.split()[1:]) for v in b.values("crypt")
             if len(v.split()) > 1}
    assert crypt.get("type") == "LUKS2", b.checks
    assert re.fullmatch(r"/dev/md\d+", crypt.get("device", "")), b.checks
    assert any(v.split()[:3] == ["vgstack", "root", "active"] for v in b.values("lvs")), b.checks
    md = dict(v.split("=", 1) for v in b.values("md") if "=" in v)
    assert md["MD_LEVEL"] == "raid1" and md["MD_DEVICES"] == "2", md
    ids = b.ids()
    ids["md"] = md["MD_UUID"]
    # Every file that names storage names what is there now, and so do the initramfs's
    # copies (the root is unlocked and the mirror assembled before / is mounted).
    crypttab = b.file("/etc/crypttab")
    assert crypttab == [f"cryptroot UUID={ids['luks']} /dev/disk/by-label/{KEY_LABEL}:/root.key "
                        "luks,discard,keyscript=passdev"], crypttab
    assert any(f"UUID={ids['luks']}" in line for line in b.initramfs("cryptroot/crypttab")), \
        b.values("initramfs")
    for conf in (b.file("/etc/mdadm/mdadm.conf"), b.initramfs("etc/mdadm/mdadm.conf")):
        arrays = [line for line in conf if line.startswith("ARRAY")]
        assert len(arrays) == 1 and f"UUID={ids['md']}" in arrays[0].split(), conf
    fstab = {line.split()[1]: line.split()[0] for line in b.file("/etc/fstab")}
    assert fstab == {"/": f"UUID={ids['root']}", "/boot": f"UUID={ids['boot']}",
                     "/boot/efi": f"UUID={ids['esp']}", "none": f"UUID={ids['swap']}"}, fstab
    assert b.file("/etc/initramfs-tools/conf.d/resume") == [f"RESUME=UUID={ids['swap']}"]
    assert any(line.endswith(f"UUID={ids['swap']}") for line in b.initramfs("conf.d/resume"))
    # LVM's devices file names the PV by what it is on now (the dm-crypt UUID, made of the
    # LUKS UUID), and LVM used it: the VG was found and activated at boot (lvs above).
    assert b.one("lvmconfig") == "use_devicesfile=1", b.checks
    # One PV line: a PV made anew replaces its saved line.
    devices = [line for line in b.file(DEVICES_FILE) if line.startswith("IDTYPE=")]
    assert len(devices) == 1 and ids["luks"].replace("-", "") in devices[0], devices
    carried = [line for line in b.initramfs("devices/system.devices")
               if line.startswith("IDTYPE=")]
    assert carried in ([], devices), carried
    grub_default = b.file("/etc/default/grub")
    assert f'GRUB_CMDLINE_LINUX="resume=UUID={ids["swap"]}"' in grub_default, grub_default
    cmdline = b.one("cmdline").split()
    assert f"resume=UUID={ids['swap']}" in cmdline and "root=/dev/mapper/vgstack-root" in \
        cmdline, cmdline
    grub = b.values("grub")
    searches = [g for g in grub if g.split()[0] == "search"]
    assert searches and all(ids["boot"] in g.split() for g in searches), grub
    assert all(f"resume=UUID={ids['swap']}" in g.split() for g in grub
               if g.split()[0] == "linux"), grub
    # The data: the listing made before the save, in the set, checked here.
    assert b.one("listing") == sha256((saved.exchange / "listing.sha256").read_bytes())
    assert int(b.one("listed")) > 1000, b.checks
    return ids


def _differing(b: Booted) -> set[str]:
    return {re.sub(r": FAILED.*$", "", v) for v in b.values("differs")}


def test_the_recovered_stack_boots_with_the_stick_identities_kept(
    booted: Booted, saved: Saved, stack: Stack, times: Times
) -> None:
    ids = _check_stack(booted, saved)
    assert ids["luks"] == stack.ids["luks"] and ids["md"] == stack.md["MD_UUID"], ids
    for name in ("root", "swap", "boot", "esp"):
        assert ids[name] == stack.ids[name], (name, ids)
    # LVM's devices file may have been written anew, with the same PV line.
    assert _differing(booted) <= {DEVICES_FILE}, booted.values("differs")
    times.total()


def test_the_recovered_stack_boots_with_new_identities_named_everywhere(
    booted_renewed: Booted, saved: Saved, stack: Stack, times: Times
) -> None:
    b = booted_renewed
    ids = _check_stack(b, saved)
    assert ids["luks"] != stack.ids["luks"] and ids["md"] != stack.md["MD_UUID"], ids
    for name in ("root", "swap", "boot"):
        assert ids[name] != stack.ids[name], (name, ids)
    # Only what names the storage differs from the listing made before the save.
    differing = _differing(b)
    assert {"/etc/fstab", "/etc/crypttab", "/etc/mdadm/mdadm.conf", DEVICES_FILE} <= \
        differing <= REWRITTEN, \
        b.values("differs")
    times.total()

