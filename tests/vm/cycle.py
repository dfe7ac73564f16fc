"""What the two whole-cycle tests share (test_whole_cycle.py on UEFI/GPT,
test_whole_cycle_bios.py on BIOS/MBR with md, LUKS and LVM): one guest script that saves
the running source, one check script the recovered system runs, the cached source
image, the rescue boot, the recovered boot, and the times they note.

Each test module runs the cycle as module-scoped fixtures, one per stage (source, saved,
recovered, booted): a stage that fails errors the tests of the stages after it with its
own message, and the tests name the property they check.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import blake3
import tomli_w

from resurgo.finalize import drivers
from resurgo.finalize.chroot import Chroot
from tests.vm import guest
from tests.vm.rescue_images import Keys, direct_boot, rescue_lines, unattended_args

REPO = Path(__file__).resolve().parents[2]
MiB = guest.MiB
HOST_ONLY_MODULES = "virtio_pci\nvirtio_blk\next4\n"
CHECK = "RESURGO-CHECK"
#: Marker files the source gets before its save, by where they go; their hashes are what
#: the recovered system must show. The BIOS cycle also has a /srv/data.
MARKERS = {
    "/resurgo-marker.bin": 1 * MiB,
    "/home/alice/marker.bin": 256 * 1024,
    "/srv/data/projects/marker.bin": 512 * 1024,
}
# What a guest starved of host CPU prints (TCG on a loaded 2-core host): not its fault.
EMULATION_STALL = ("rcu_preempt kthread starved", "watchdog: BUG: soft lockup")
RESCUE_TIMEOUT = 1500.0
BOOT_TIMEOUT = 400.0
SAVE_TIMEOUT = 1200.0
#: Bump when build_source changes what it does to the image (a part of its cache key).
SOURCE_VERSION = 1

# Saved with the system (/resurgo-test/run.sh): the runner runs it when the recovered
# disks boot without an exchange disk. What a system lacks (no /srv/data, no md on the
# UEFI one) prints nothing or an empty value, and the test of that system expects none.
CHECK_SCRIPT = f"""#!/bin/sh
udevadm settle
for f in {" ".join(MARKERS)}; do
    [ -e "$f" ] && echo "{CHECK} sha256 $(sha256sum "$f")"
done
for m in / /boot /home /boot/efi /srv/data; do
    echo "{CHECK} mount $m $(findmnt -n -o SOURCE,FSTYPE "$m" | tr -s ' ')"
done
echo "{CHECK} swap $(swapon --noheadings --show=NAME,TYPE | tr -s ' ')"
echo "{CHECK} cmdline $(cat /proc/cmdline)"
lsblk -l -n -o NAME,TYPE,FSTYPE,MOUNTPOINTS | sed 's/^/{CHECK} lsblk /'
[ -e /proc/mdstat ] && sed 's/^/{CHECK} mdstat /' /proc/mdstat
if [ -e /dev/md/data ]; then
    mdadm --detail --export /dev/md/data | sed 's/^/{CHECK} md /'
    echo "{CHECK} luks-uuid $(cryptsetup luksUUID /dev/md/data)"
    cryptsetup status cryptdata | sed 's/^ */{CHECK} crypt /'
    lvs --noheadings -o vg_name,lv_name,lv_size,lv_active --units m | sed 's/^ */{CHECK} lvs /'
fi
"""

# Runs in the source guest from the exchange disk. The set disk is vdb; $X/exclude names
# the disks the save leaves out (the set's, the exchange disk); $X/markers/<n> goes to
# the path on line n of $X/markers.list. What the storage stack looks like when the
# system came up is noted for the host to check (a system without it notes nothing).
SAVE_SCRIPT = """#!/bin/sh
set -u
X="$RESURGO_EXCHANGE"
udevadm settle
cat /proc/mdstat >"$X/mdstat.txt" 2>&1
cryptsetup status cryptdata >"$X/crypt-status.txt" 2>&1
findmnt -n -o SOURCE,FSTYPE /srv/data >"$X/srv-data.txt" 2>&1
n=0
while read -r dest; do
    n=$((n + 1))
    mkdir -p "$(dirname "$dest")"
    cp "$X/markers/$n" "$dest"
done <"$X/markers.list"
sync
findmnt --json >"$X/findmnt.json"
lsblk -o NAME,SIZE,TYPE,FSTYPE,MOUNTPOINTS >"$X/lsblk.txt"
mkdir -p /mnt/set
mount /dev/vdb /mnt/set || exit 10
host=$(hostname)
mkdir -p "/mnt/set/resurgo/$host"
excluded=""
for d in $(cat "$X/exclude"); do excluded="$excluded --exclude-disk $d"; done
install -m 0600 "$X/sign/key" /root/resurgo-sign.key
start=$(date +%s.%N)
PYTHONPATH="$X/py" python3 -m resurgo save --to "/mnt/set/resurgo/$host" --no-rescue \\
    --sign-key /root/resurgo-sign.key --no-catalog $excluded $(cat "$X/save-args") --json \\
    >"$X/save.json" 2>"$X/save.err"
rc=$?
end=$(date +%s.%N)
echo "$start $end" >"$X/save.time"
umount /mnt/set
sync
exit $rc
"""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Times:
    """The times of a cycle's stages, written to ``path`` as each is noted (a failing run
    still leaves those it measured) and printed."""

    def __init__(self, path: Path, label: str) -> None:
        self.path, self.label = path, label
        self.values: dict[str, int] = {}
        self.started = time.monotonic()
        self.prefix = ""

    def scoped(self, prefix: str) -> Times:
        """The same record, each key noted through it prefixed (a stage run twice)."""
        scoped = copy.copy(self)
        scoped.prefix = f"{self.prefix}{prefix}: "
        return scoped

    def note(self, key: str, value: float) -> None:
        key = self.prefix + key
        self.values[key] = round(value)
        self.path.write_text(json.dumps(self.values, indent=2))
        print(f"{self.label}: {key}: {self.values[key]}", flush=True)

    def total(self) -> None:
        self.note("total (host)", time.monotonic() - self.started)

    @contextlib.contextmanager
    def timed(self, key: str) -> Iterator[None]:
        started = time.monotonic()
        yield
        self.note(key, time.monotonic() - started)


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
    """The modules in a system's initramfs, listed on the host (lsinitrd)."""
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


def numbered(tab: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """An sfdisk --json table's partitions by number (an MBR's have no names)."""
    return {int(re.sub(r".*?(\d+)$", r"\1", p["node"])): p for p in tab["partitions"]}


def make_host_only(root: Path, kernel: str) -> None:
    """The system's initramfs host-only (MODULES=list: virtio and ext4, no NVMe driver),
    rebuilt in a chroot; ``root`` has its /boot mounted."""
    conf = root / "etc/initramfs-tools/initramfs.conf"
    conf.write_text(re.sub(r"(?m)^MODULES=.*$", "MODULES=list", conf.read_text()))
    (root / "etc/initramfs-tools/modules").write_text(HOST_ONLY_MODULES)
    with Chroot(root) as ch:
        ch.execute(["update-initramfs", "-u", "-k", kernel])
    guest.run_cmd(["sync", "-f", root / "boot"])


#: What a source system never uses on the guests' virtual hardware (they have no network,
#: no USB, no sound): about 45 % of the tree (817 MB), which every save and restore would
#: otherwise compress, hash and write under TCG. What the recovered system needs stays
#: (block, NVMe, SCSI, md, dm, crypto, filesystems).
TRIMMED = (
    "usr/lib/modules/{kernel}/kernel/drivers/gpu",
    "usr/lib/modules/{kernel}/kernel/drivers/media",
    "usr/lib/modules/{kernel}/kernel/drivers/net",
    "usr/lib/modules/{kernel}/kernel/drivers/infiniband",
    "usr/lib/modules/{kernel}/kernel/drivers/iio",
    "usr/lib/modules/{kernel}/kernel/drivers/staging",
    "usr/lib/modules/{kernel}/kernel/sound",
    "usr/lib/modules/{kernel}/kernel/net",
    "usr/lib/modules/{kernel}/kernel/drivers/usb",
    "usr/share/locale",
    "usr/share/doc",
    "usr/share/man",
    # apt's package lists: a plain server has them, apt makes them anew (apt update)
    "var/lib/apt/lists",
)


def trim(root: Path, kernel: str) -> None:
    """Remove ``TRIMMED`` from a source system; its module index made anew."""
    for rel in TRIMMED:
        guest.remove_tree(root / rel.format(kernel=kernel))
    with Chroot(root) as ch:
        ch.execute(["depmod", "-a", kernel])


#: The storage tools a system on plain partitions does without. The tree carries them for
#: the guests that build md, LUKS and LVM; installed, their initramfs hooks copy lvm, mdadm
#: and the thin tools into every initramfs: about 30 of the 76 s an initramfs rebuild takes
#: under TCG, paid by each recovery that adds a driver. A plain server has none of them.
PLAIN_UNUSED = ("lvm2", "mdadm", "thin-provisioning-tools")


def purge(root: Path, packages: Sequence[str]) -> None:
    """Remove ``packages`` from the system at ``root`` with dpkg, as an administrator would
    (their initramfs hooks go with them); ``root`` has its /boot mounted."""
    if packages:
        with Chroot(root) as ch:
            ch.execute(["dpkg", "--purge", *packages])


def zstd_digest() -> str:
    return hashlib.sha256(Path("/usr/bin/zstd").read_bytes()).hexdigest()


def cached_source(
    *,
    hostname: str,
    size: int,
    uefi: bool,
    label: Literal["gpt", "dos"],
    unused: Sequence[str] = (),
) -> guest.ImageInfo:
    """A source system, built once per everything it depends on (never boot it:
    ``guest.copy_image`` it): /boot, swap, /home and / on the tree (less ``TRIMMED``), a
    host-only initramfs (without the ``unused`` packages),
    the check script at /resurgo-test/run.sh, and zstd, which the engine compresses with
    and the minimal tree lacks (this host's build needs only libc, zlib, lzma and lz4,
    all in the tree)."""
    tree = guest.debian_tree()
    sizes = {"boot": 192 * MiB, "swap": 64 * MiB, "home": 64 * MiB}
    _, numbers = guest.disk_layout(label, uefi=uefi, sizes=sizes)

    def make(image: Path) -> guest.ImageInfo:
        info = guest.build_image(
            tree,
            image,
            size=size,
            uefi=uefi,
            label=label,
            hostname=hostname,
            run_script=CHECK_SCRIPT,
            boot_size=sizes["boot"],
            swap_size=sizes["swap"],
            home_size=sizes["home"],
        )
        parts = {"root": numbers["root"], "boot": numbers["boot"]}
        with partitions_mounted(image, parts, read_only=False) as m:
            root = m["root"]
            with guest.mounted(m["boot"], root / "boot", options=["bind"]):
                shutil.copy2("/usr/bin/zstd", root / "usr/local/bin/zstd")
                trim(root, info.kernel)
                purge(root, unused)
                make_host_only(root, info.kernel)
        return info

    key = ("whole-cycle source", SOURCE_VERSION, hostname, size, uefi, label, sizes,
           CHECK_SCRIPT, HOST_ONLY_MODULES, TRIMMED, tuple(unused), zstd_digest())
    return guest.cached_image(f"source-{hostname}", key, make, tree=tree)


@dataclass(frozen=True)
class Saved:
    """What the save in the running source left: its exchange directory, its report, the
    set's id, and the hashes the markers had."""

    exchange: Path
    report: dict[str, Any]
    set_id: str
    want: dict[str, str]
    description: Path


def save_in_guest(
    work: Path,
    times: Times,
    *,
    source: guest.Drive,
    disks: Sequence[guest.Drive],
    set_disk: Path,
    markers: Mapping[str, int],
    exclude: Sequence[str],
    keys: Keys,
    host: str,
    firmware: guest.Firmware,
    script: str = SAVE_SCRIPT,
    save_args: Sequence[str] = (),
) -> Saved:
    """Boot the source, write the markers, and run `resurgo save --sign-key` to the set
    disk (vdb) from inside it (``script``, SAVE_SCRIPT or one that does more first); then
    the set's description comes out to ``work``."""
    content = {dest: _random(size) for dest, size in markers.items()}
    files: dict[str, guest.ExchangeFile] = {
        "markers.list": "".join(f"{dest}\n" for dest in content),
        "exclude": " ".join(exclude) + "\n",
        # More options of the save (words without spaces).
        "save-args": " ".join(save_args) + "\n",
        "py/resurgo": REPO / "src" / "resurgo",
        "py/tomli_w": Path(tomli_w.__file__).parent,
        "py/blake3": Path(blake3.__file__).parent,
        "sign/key": keys.trusted_path,
    }
    for n, data in enumerate(content.values(), 1):
        files[f"markers/{n}"] = data
    with times.timed("source boot + save (host)"):
        run = guest.run_in_guest(
            script,
            image=source,
            workdir=work / "source-boot",
            files=files,
            extra_disks=disks,
            firmware=firmware,
            timeout=SAVE_TIMEOUT,
        )
    x = run.exchange
    err = (x / "save.err").read_text() if (x / "save.err").exists() else ""
    assert run.exit_status == 0, f"{run.output[-2000:]}\n{err[-3000:]}"
    begin, end = map(float, (x / "save.time").read_text().split())
    times.note("save (in the guest)", end - begin)
    report = json.loads((x / "save.json").read_text())
    times.note("set MiB", report["set"]["bytes"] / MiB)
    set_id = report["set"]["id"]
    with guest.mounted_image(set_disk) as mnt:
        set_dir = mnt / "resurgo" / host / set_id
        for name in ("description.toml", "description.toml.sha256"):
            shutil.copy2(set_dir / name, work / name)
        assert (set_dir / "set.json.sig").is_file()
    return Saved(x, report, set_id, {d: sha256(b) for d, b in content.items()},
                 work / "description.toml")


def _random(size: int) -> bytes:
    with open("/dev/urandom", "rb") as f:
        return f.read(size)


def rescue_boot(
    work: Path,
    times: Times,
    *,
    files: Path,
    set_id: str,
    disks: Sequence[guest.Drive],
    firmware: guest.Firmware,
    more_args: Sequence[str] = (),
) -> guest.BootResult:
    """The shared kernel-root rescue (its kernel and initramfs: the image itself is
    test_rescue's business), unattended, the set named, until it powers off; the times
    its recover reported are noted."""
    args = unattended_args(set_id, "resurgo.wait=5", *more_args)
    with times.timed("rescue boot to recovered (host)"):
        result = guest.boot(
            disks[0],
            disks[1:],
            timeout=RESCUE_TIMEOUT,
            serial_log=work / "rescue.log",
            firmware=firmware,
            extra_args=direct_boot(files, args, firmware),
        )
    lines = rescue_lines(result.text)
    detail = "\n".join(lines[-60:]) or guest._tail(result.text, 60)
    assert not result.timed_out, f"the rescue did not power off:\n{detail}"
    assert "recovery finished: ok" in lines, guest._tail(result.text, 120)
    restored = re.findall(r"done +resurgo:restore .*\(([0-9.]+) s\)", result.text)
    times.note("restore data (in the rescue)", sum(map(float, restored)))
    fin = re.search(r"drivers ([0-9.]+) s, bootloader ([0-9.]+) s; total ([0-9.]+) s", result.text)
    assert fin, detail
    times.note("finalize (in the rescue)", float(fin.group(3)))
    times.note("finalize: drivers, initramfs rebuilt", float(fin.group(1)))
    times.note("finalize: bootloader", float(fin.group(2)))
    # Each finalize command's time (a program run twice summed).
    ran: dict[str, float] = {}
    for program, seconds in re.findall(
            r"(?m)^ +done +(?:\[chroot\] )?(\S+) [^\n]*\(([0-9.]+) s\)\r?$", result.text):
        if program != "resurgo:restore":
            ran[program] = ran.get(program, 0.0) + float(seconds)
    for program, seconds in ran.items():
        times.note(f"finalize: {program}", seconds)
    return result


def boot_recovered(
    disks: Sequence[guest.Drive], log: Path, times: Times, *, firmware: guest.Firmware,
    timeout: float = BOOT_TIMEOUT,
) -> list[str]:
    """The recovered disks alone until the check script ran; its lines. One vCPU (a
    starved second vCPU has stalled NVMe queues under TCG); a boot that stalls so is
    tried once more, any other failure stands."""
    with times.timed("recovered boot (host)"):
        result = guest.boot(disks[0], disks[1:], timeout=timeout, cpus=1,
                            serial_log=log, firmware=firmware)
        if not result.reached_runner and any(s in result.text for s in EMULATION_STALL):
            shutil.copyfile(log, log.with_suffix(".stalled.log"))
            result = guest.boot(disks[0], disks[1:], timeout=timeout, cpus=1,
                                serial_log=log, firmware=firmware)
    checks = [s.split(CHECK, 1)[1].strip() for s in result.text.splitlines()
              if f"{CHECK} " in s]
    assert result.reached_runner and checks, guest._tail(result.text, 60)
    return checks


def hashes(checks: Sequence[str]) -> dict[str, str]:
    return {
        c.split()[2]: c.split()[1]
        for c in checks
        if c.startswith("sha256 ") and len(c.split()) == 3
    }


def mounts(checks: Sequence[str]) -> dict[str, list[str]]:
    return {c.split()[1]: c.split()[2:] for c in checks if c.startswith("mount ")}
