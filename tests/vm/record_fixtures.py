"""Regenerate tests/data/guest/: md, LUKS and LVM tool output recorded inside a qemu guest.

The build host has no device-mapper and no md, so the storage stack is built inside a
guest (see guest.py) on three blank virtio disks by fixtures_guest.sh, which records
each tool's output into one file. This script boots that guest, checks the result
(no throw-away secret leaked into any file), replaces the fixture files and writes
tests/data/guest/README.md naming the command behind every file.

    python3 tests/vm/record_fixtures.py [-v] [--out DIR] [--cache-dir DIR] [--workdir DIR]

Needs root, qemu-system-x86_64, debootstrap (first run: ~2 min and ~1 GB under
/var/cache/resurgo-tests) and 2 GB of memory for the guest; one run takes a few minutes.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import fnmatch
import logging
import re
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
if str(REPO) not in sys.path:  # run as a script: python3 tests/vm/record_fixtures.py
    sys.path.insert(0, str(REPO))

from tests.vm import guest  # noqa: E402

DEFAULT_OUT = REPO / "tests/data/guest"
GUEST_SCRIPT = HERE / "fixtures_guest.sh"
SYSBLOCK = HERE / "sysblock.py"

#: The blank disks, in order: the guest sees them as vdb, vdc, vdd.
DISKS = (("vdb", "rsg-vdb"), ("vdc", "rsg-vdc"), ("vdd", "rsg-vdd"))
DISK_SIZE = 512 * guest.MiB

log = logging.getLogger("record_fixtures")


class FixtureError(RuntimeError):
    pass


def throwaway_passphrase(script: str) -> str:
    m = re.search(r"printf '%s' '([^']+)' >\"\$PASS\"", script)
    if not m:
        raise FixtureError(f"{GUEST_SCRIPT.name}: cannot find the throw-away passphrase")
    return m.group(1)


def check_no_secrets(fixtures: Path, passphrase: str) -> None:
    """Refuse fixtures that carry the passphrase or a dm-crypt volume key."""
    for path in sorted(fixtures.rglob("*")):
        if path.is_file() and passphrase.encode() in path.read_bytes():
            raise FixtureError(f"{path.name} contains the passphrase")
    table = fixtures / "dmsetup-table.txt"
    for line in table.read_text().splitlines():
        fields = line.split()
        if "crypt" in fields:
            key = fields[fields.index("crypt") + 2]
            if not re.fullmatch(r"0+|:\d+:logon:\S+", key):
                raise FixtureError(f"{table.name} shows a volume key: {line[:60]}...")


def read_commands(fixtures: Path) -> list[tuple[str, int, str]]:
    with (fixtures / "COMMANDS.tsv").open() as f:
        return [(row[0], int(row[1]), row[2]) for row in csv.reader(f, delimiter="\t")]


#: What each file holds, by file name pattern (first match wins), for the README.
WHAT: tuple[tuple[str, str], ...] = (
    ("proc-mdstat.txt", "the kernel's md status: RAID1 and RAID5, both synced"),
    ("proc-partitions.txt", "the kernel's block devices, sizes in KiB"),
    ("proc-swaps.txt", "active swap: the LUKS1 mapping"),
    ("proc-mountinfo.txt", "the guest's mounts (vg0-data on /mnt/data)"),
    ("mdadm-detail-*.env", "array properties, KEY=VALUE"),
    ("mdadm-detail-scan.txt", "mdadm.conf ARRAY lines with their devices"),
    ("mdadm-detail-*.txt", "mdadm's report for people (chunk, layout, state, members)"),
    ("mdadm-examine-*.env", "one member's superblock, KEY=VALUE"),
    ("luks2-*.json", "LUKS2 header metadata: keyslots, segments, digests, config"),
    ("luks*-dump.txt", "luksDump for people"),
    ("lvm-fullreport.json", "VG, PV, LV, PV segment and segment reports, default fields"),
    ("lvm-fullreport-bytes.json", "the same with sizes in bytes"),
    ("lvs.json", "every LV (hidden ones too), all LV and segment fields, a row per segment"),
    ("pvs.json", "every PV, all fields"),
    ("pvs-segments.json", "PV segments and the LVs on them"),
    ("vgs.json", "every VG, all fields"),
    ("vgcfgbackup-*.txt", "the VG's metadata text (what vgcfgrestore reads)"),
    ("dmsetup-table.txt", "device-mapper tables (crypt keys: in the keyring or zeroed)"),
    ("dmsetup-info.txt", "a line of KEY='value' fields per dm device"),
    ("dmsetup-deps.txt", "the devices under each dm device"),
    ("lsblk.json", "the whole machine, all columns (a device under 2 parents shows twice)"),
    ("lsblk-tree.txt", "the stack, for people"),
    ("sfdisk-*.json", "partition table"),
    ("blkid/*", "low-level probe; empty with exit 2 when nothing is found"),
    ("sys-block-holders-slaves.txt", "the stack's links in sysfs"),
    ("sys-block.json", "the sysfs view of every block device (see below)"),
)


def what(name: str) -> str:
    return next((text for pattern, text in WHAT if fnmatch.fnmatch(name, pattern)), "")


README_HEAD = """\
# Recorded md, LUKS and LVM tool output (vm guest)

The build host has no device-mapper and no md driver, so these files were recorded
inside a qemu guest (Debian 12, booted by `tests/vm/guest.py`) on three blank virtio
disks. Do not edit them by hand: regenerate them all with

    python3 tests/vm/record_fixtures.py

which boots the guest, runs `tests/vm/fixtures_guest.sh` in it (the script that builds
the stack and runs every command below) and rewrites this directory, README included.

## The stack

    vdb, vdc (GPT)  p1 320 MiB ─┬─ md0  RAID1, metadata 1.2, --name=data
                                └─ LUKS2 "cryptdata" (aes-xts-plain64, 512-bit key,
                                   argon2id, --label resurgo-data,
                                   --subsystem resurgo-test) ── PV ─┐
    vdb, vdc, vdd   p2 128 MiB ─── md1  RAID5, --chunk=128, --name=scratch ── ext4 "scratch"
    vdd (MBR)       p1 200 MiB ─── PV (type 8e) ────────────────────┴─ VG vg0, 8 MiB extents
                    p3 extended, p5 64 MiB logical ── LUKS1 "cryptswap" ── swap (active)

    vg0/data    linear 64 MiB (on cryptdata)     ext4 "data", mounted on /mnt/data
    vg0/stripe  striped, 2 stripes x 64 KiB, 32 MiB   vfat "STRIPE"
    vg0/pool    thin pool 48 MiB (on cryptdata)  + hidden pool_tmeta, pool_tdata, lvol0_pmspare
    vg0/thin1   thin LV, 128 MiB virtual          btrfs "thin"
    vg0/mirror  raid1 (--mirrors 1), 16 MiB      + hidden mirror_rimage_N, mirror_rmeta_N

The disks' serials are {serials}. vda (the guest's own disk)
and the exchange disk are left out of the per-device files (lsblk.json and sys-block.json
show the whole machine). The LUKS passphrase was a throw-away string fed with `--key-file`
from a tmpfs file; `record_fixtures.py` checks that it appears in no file and that
`dmsetup table` shows no volume key. Everything was recorded with the stack active
(md arrays synced, LUKS open, LVs active, /mnt/data mounted, swap on).

## Versions

```
{versions}
```

## Files

Each file holds the standard output of one command run as root in the guest
(`exit` is the command's exit status: `blkid -p` exits 2 when it finds nothing).
`COMMANDS.tsv` lists the same (file, exit status, command) for tests to use, and
`versions.txt` holds the versions above.

| file | what | exit | command |
|---|---|---|---|
"""

README_TAIL = """
`sys-block.json` is made by `tests/vm/sysblock.py` (copied to the guest): for every block
device but loop/ram/floppy/CD devices, the sysfs `dev`, `size` (512-byte sectors),
`partition`, `start`, `ro`, `removable`, the disk's `queue/logical_block_size`,
`queue/physical_block_size`, `queue/rotational`, `serial`, `wwid`, `model`, `dm/name`,
`dm/uuid`, `dm/suspended`, `md/level`, `md/metadata_version`, `md/chunk_size`,
`md/layout`, `md/raid_disks`, `md/array_state`, `md/array_size`, `md/component_size`,
`md/uuid`, `md/sync_action`, the md members' slots, and the `slaves` and `holders`.

Recorded {date}: the guest reached its test runner {begin:.0f} s after qemu started,
and the whole run (boot, stack, recording, power-off) took {total:.0f} s under TCG.
"""


def write_readme(out: Path, result: guest.GuestRun, started: str) -> None:
    commands = read_commands(out)
    versions = (out / "versions.txt").read_text().rstrip()
    lines = [
        README_HEAD.format(
            serials=", ".join(f"`{serial}` ({name})" for name, serial in DISKS),
            versions=versions,
        )
    ]
    for name, rc, command in commands:
        escaped = command.replace("|", "\\|")
        lines.append(f"| `{name}` | {what(name)} | {rc} | `{escaped}` |\n")
    lines.append(
        README_TAIL.format(
            date=started,
            begin=result.boot.begin_at or 0.0,
            total=result.boot.seconds,
        )
    )
    (out / "README.md").write_text("".join(lines))


def record(out: Path, cache_dir: Path, workdir: Path, timeout: float) -> guest.GuestRun:
    script = GUEST_SCRIPT.read_text()
    passphrase = throwaway_passphrase(script)
    started = time.strftime("%Y-%m-%d")
    info = guest.base_image(cache_dir)
    log.info("base image %s (kernel %s)", info.path, info.kernel)
    disks = [
        guest.Drive(guest.blank_disk(workdir / f"{name}.img", DISK_SIZE), serial=serial)
        for name, serial in DISKS
    ]
    result = guest.run_in_guest(
        script,
        image=guest.guest_disk(workdir, cache_dir),
        workdir=workdir,
        files={"sysblock.py": SYSBLOCK},
        extra_disks=disks,
        timeout=timeout,
    )
    stderr = result.exchange / "fixtures/stderr.log"
    if stderr.exists():
        log.info("what the recorded commands printed on stderr:\n%s", stderr.read_text())
    result.check()
    fixtures = result.exchange / "fixtures"
    check_no_secrets(fixtures, passphrase)
    if any(rc not in (0, 2) for _, rc, _ in read_commands(fixtures)):
        raise FixtureError(f"a recording command failed: see {stderr}")

    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(fixtures, out, ignore=shutil.ignore_patterns("stderr.log"))
    write_readme(out, result, started)
    log.info(
        "wrote %d files to %s; runner reached at %.1f s, run took %.1f s",
        sum(1 for p in out.rglob("*") if p.is_file()),
        out,
        result.boot.begin_at or 0.0,
        result.boot.seconds,
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="fixture directory")
    parser.add_argument("--cache-dir", type=Path, default=guest.DEFAULT_CACHE_DIR)
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds for the guest")
    parser.add_argument(
        "--workdir", type=Path, help="keep the disks, serial log and exchange files here"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log every command")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(message)s",
    )
    with contextlib.ExitStack() as stack:
        if args.workdir:
            workdir = args.workdir.resolve()
            workdir.mkdir(parents=True, exist_ok=True)
        else:
            workdir = stack.enter_context(guest.scratch_dir("resurgo-fixtures-"))
        try:
            record(args.out.resolve(), args.cache_dir, workdir, args.timeout)
        except (guest.HarnessError, guest.GuestError, FixtureError) as exc:
            log.error("%s", exc)
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
