#!/usr/bin/env python3
"""Benchmark (not a test): resurgo against Relax-and-Recover (ReaR 2.7, Debian's package),
side by side, on one guest, onto the same targets.

One source system (Debian 12 under qemu, BIOS or UEFI; GPT with /boot, swap, /home and /;
the Debian system plus generated data with xattrs, ACLs, hard links, sparse files; a
host-only initramfs, so that a disk moved to another controller needs driver work) is
built once and cached, with both tools installed. For each run, each tool in turn:

1. save: the source boots and runs the tool (ReaR: ``rear mkbackup``, OUTPUT=ISO with the
   backup inside it, ``BACKUP_URL=iso:///backup``; resurgo: ``resurgo save`` to a second
   virtual disk, its rescue image built in the guest). Timed inside the guest.
2. for each target case: a blank disk ((a) same size, same bus; (b) 25 % larger, NVMe;
   (c) smaller, the data fits) and the tool's rescue image booted from a CD drive, its
   unattended recovery timed from the power-on to the tool's own "done" line, with no
   keystroke: a tool that waits for one has failed that case (the console's last lines
   are recorded).
3. the recovered disk boots alone; the boot counts when the system's own check script
   prints its marker.
4. fidelity: on the host, every filesystem of the source (as the save left it) and of the
   recovered disk is mounted read-only and walked by this script's own walker (content
   digest, type, owner, mode, mtime, xattrs, ACLs, hard links, sparse files, symlinks,
   devices), and the disks' identities compared (disk GUID, PARTUUIDs, partition names and
   types, filesystem UUIDs and labels).

The table shows the median of each measure over the runs and the ratio resurgo/ReaR;
``--json`` writes every run. The tools run in turns (ReaR first in odd runs, resurgo first
in even ones). Run as root from a clone of the repository; qemu (TCG or KVM is not used:
this is software emulation, so absolute times are far above hardware's, the ratios are
what compare), debootstrap, xorriso, sfdisk and mtools on the host (./dev installs them)::

    python3 bench/vs_rear.py                        # every case, BIOS, 2 runs
    python3 bench/vs_rear.py --cases a --runs 1 --firmware uefi --json out.json

The Debian tree, the tree with both tools' needs and the source image are cached in
``RESURGO_TEST_CACHE`` (default /var/cache/resurgo-tests) keyed as tests/vm keys its
images, so a second run only measures. The run's disks live in ``--work-dir`` and are
deleted as soon as they have been walked (about 4 GB at the peak); logs stay there.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fnmatch
import hashlib
import json
import os
import random
import re
import shutil
import stat
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Final, Literal

REPO: Final = Path(__file__).resolve().parents[1]
for _p in (REPO, REPO / "src", REPO / "bench"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from _venv import reexec_in_venv  # noqa: E402  (bench/, the script's directory)

from tests.vm import guest  # noqa: E402  (the repository's guest library, stdlib only)

MiB: Final = guest.MiB
GiB: Final = guest.GiB
Tool = Literal["rear", "resurgo"]
TOOLS: Final[tuple[Tool, ...]] = ("rear", "resurgo")
HOST: Final = "vs-rear-src"

#: What the source needs besides the test tree's packages: ReaR and what it runs at
#: mkbackup (ISO tools, isolinux for BIOS, procps and less that its scripts call), and
#: what resurgo's rescue build runs (dracut-core, grub-mkrescue's xorriso, mtools, xz).
BENCH_PACKAGES: Final[tuple[str, ...]] = (
    "rear",
    "xorriso",
    "isolinux",
    "syslinux",
    "syslinux-common",
    "mtools",
    "xz-utils",
    "procps",
    "less",
    "dracut-core",
    "zstd",
    "efibootmgr",
    "parted",
    "gdisk",
    # rear's REQUIRED_PROGS has `file`, which Debian's package does not depend on:
    # mkbackup stops at once without it
    "file",
)
#: Bump when bench_tree or build_source change what they make (part of the cache keys).
BENCH_VERSION: Final = 1

#: Partition sizes of the source disk; the root takes the rest. ReaR stages the backup
#: and then its ISO on the root (iso:// puts the backup inside the ISO): the root needs
#: room for both besides the system.
SOURCE_SIZE: Final = 4 * GiB
PART_SIZES: Final[Mapping[str, int]] = {"boot": 192 * MiB, "swap": 128 * MiB, "home": 384 * MiB}

BOOT_MARK: Final = "VSREAR-BOOTED"
#: The recovered system runs this at boot (/resurgo-test/run.sh, by the test runner unit).
BOOT_CHECK: Final = f"""#!/bin/sh
udevadm settle
echo "{BOOT_MARK} root=$(findmnt -n -o SOURCE /) boot=$(findmnt -n -o SOURCE /boot) \
home=$(findmnt -n -o SOURCE /home) swap=$(swapon --noheadings --show=NAME | tr '\\n' ' ')"
"""

#: ReaR's configuration (/etc/rear/local.conf), its documented options only
#: (/usr/share/rear/conf/default.conf): an ISO with the backup in it, the unattended
#: recovery the ISO's default boot entry, prompts answered by their default after
#: USER_INPUT_TIMEOUT, tar told to keep xattrs and ACLs (BACKUP_PROG_OPTIONS: without them
#: tar drops both, as a careful administrator of such a system would know), the harness's
#: exchange disk left out, and no resolv.conf in the rescue (the guest has no network and
#: no /etc/resolv.conf: without USE_RESOLV_CONF=no mkbackup stops in its build stage,
#: "No nameserver or only loopback addresses", after about 35 minutes under emulation).
REAR_CONF: Final = """\
OUTPUT=ISO
OUTPUT_URL=null
BACKUP=NETFS
BACKUP_URL=iso:///backup
ISO_DEFAULT=automatic
ISO_RECOVER_MODE=unattended
USER_INPUT_TIMEOUT=10
USE_RESOLV_CONF=no
BACKUP_PROG_OPTIONS+=( --xattrs --acls )
EXCLUDE_MOUNTPOINTS+=( /resurgo-test/exchange )
BACKUP_PROG_EXCLUDE+=( '/resurgo-test/exchange/*' )
"""

#: Added under UEFI: there the ISO boots by GRUB, whose default entry ReaR makes "Boot next
#: EFI" (GRUB2_DEFAULT_BOOT=chainloader; ISO_DEFAULT and ISO_RECOVER_MODE are isolinux's,
#: BIOS only): its "rear" entry instead, and `unattended` on the rescue kernel's command
#: line, which the rescue system reads to recover unattended (isolinux's entry adds it).
REAR_CONF_UEFI: Final = """GRUB2_DEFAULT_BOOT=rear
KERNEL_CMDLINE+=" unattended"
"""

#: resurgo's configuration (/etc/resurgo/resurgo.toml): the image `save` builds into the
#: set recovers unattended by default and powers off when done.
RESURGO_CONF: Final = """\
[rescue]
unattended = true
after = "poweroff"
menu_timeout = 0
"""

# The source boots with: vda the source, vdb the output disk (the set; ReaR's ISO is
# copied there after mkbackup), vdc the exchange disk.
REAR_SAVE: Final = """#!/bin/sh
set -u
X="$RESURGO_EXCHANGE"
udevadm settle
mkdir -p /etc/rear
cp "$X/local.conf" /etc/rear/local.conf
sync
start=$(date +%s.%N)
rear -v mkbackup >"$X/save.out" 2>&1
rc=$?
end=$(date +%s.%N)
echo "$start $end" >"$X/save.time"
cp /var/log/rear/rear-*.log "$X/" 2>/dev/null
mkdir -p /mnt/out
mount /dev/vdb /mnt/out || exit 10
for iso in /var/lib/rear/output/*.iso; do
    [ -f "$iso" ] && cp "$iso" /mnt/out/rescue.iso
done
umount /mnt/out
sync
exit $rc
"""

RESURGO_SAVE: Final = """#!/bin/sh
set -u
X="$RESURGO_EXCHANGE"
udevadm settle
mkdir -p /etc/resurgo /usr/local/lib/resurgo-py
install -m 0600 "$X/resurgo.toml" /etc/resurgo/resurgo.toml
cp -r "$X/py/." /usr/local/lib/resurgo-py/
mkdir -p /mnt/set
mount /dev/vdb /mnt/set || exit 10
sync
start=$(date +%s.%N)
PYTHONPATH=/usr/local/lib/resurgo-py python3 -m resurgo save --to /mnt/set/resurgo \\
    --exclude-disk /dev/vdb --exclude-disk /dev/vdc --require-rescue --json \\
    >"$X/save.json" 2>"$X/save.out"
rc=$?
end=$(date +%s.%N)
echo "$start $end" >"$X/save.time"
iso=$(find /mnt/set/resurgo -name rescue.iso -type f | head -n 1)
[ -n "$iso" ] && cp "$iso" /mnt/set/rescue.iso
umount /mnt/set
sync
exit $rc
"""

SAVE_TIMEOUT: Final = 3600.0
RECOVER_TIMEOUT: Final = 3600.0
#: A console silent this long is a tool waiting for someone (or hung).
SILENCE_TIMEOUT: Final = 900.0
BOOT_TIMEOUT: Final = 900.0

#: The unattended recovery's end, as each tool tells it on the console.
DONE: Final[Mapping[Tool, re.Pattern[str]]] = {
    "rear": re.compile(r"'rear recover' finished successfully"),
    "resurgo": re.compile(r"recovery finished: ok"),
}
FAILED: Final[Mapping[Tool, re.Pattern[str]]] = {
    "rear": re.compile(r"'rear recover' failed"),
    "resurgo": re.compile(r"recovery finished: (?!ok)|recovery failed"),
}


# --------------------------------------------------------------------------------------
# the tree and the source image


def bench_tree(cache_dir: Path = guest.DEFAULT_CACHE_DIR) -> Path:
    """The test tier's Debian tree with ``BENCH_PACKAGES`` installed by the tree's own apt
    (a copy; the shared tree stays as it is), cached like ``guest.debian_tree``."""
    base = guest.debian_tree(cache_dir)
    key = guest.cache_key(base.parent.name, BENCH_VERSION, sorted(BENCH_PACKAGES))
    final = cache_dir / f"vs-rear-tree-{key}"
    if (final / "COMPLETE.json").is_file():
        return final / "root"
    with guest.locked(cache_dir / f"{final.name}.lock"):
        if (final / "COMPLETE.json").is_file():
            return final / "root"
        work = cache_dir / f"{final.name}.partial"
        guest.remove_tree(final)
        guest.remove_tree(work)
        work.mkdir(parents=True)
        started = time.monotonic()
        try:
            root = work / "root"
            guest.run_cmd(["cp", "-a", base, root], timeout=1800)
            mirror = guest.find_mirror()
            (root / "etc/apt/sources.list").write_text(f"deb {mirror} {guest.SUITE} main\n")
            shutil.copyfile("/etc/resolv.conf", root / "etc/resolv.conf")
            log = work / "apt.log"
            env = {"DEBIAN_FRONTEND": "noninteractive"}
            with contextlib.ExitStack() as stack:
                stack.enter_context(guest.mounted("/dev", root / "dev", options=["bind"]))
                stack.enter_context(guest.mounted("proc", root / "proc", fstype="proc"))
                stack.enter_context(guest.mounted("sysfs", root / "sys", fstype="sysfs"))
                guest.run_cmd(["chroot", root, "apt-get", "update"], output=log, env=env,
                              timeout=1800)
                guest.run_cmd(["chroot", root, "apt-get", "install", "-y",
                               "--no-install-recommends", *BENCH_PACKAGES],
                              output=log, env=env, timeout=3600)
                guest.run_cmd(["chroot", root, "apt-get", "clean"], output=log, env=env)
            (root / "etc/resolv.conf").unlink()
            stamp = {"base": base.parent.name, "packages": sorted(BENCH_PACKAGES),
                     "seconds": round(time.monotonic() - started, 1)}
            (work / "COMPLETE.json").write_text(json.dumps(stamp, indent=2) + "\n")
            work.rename(final)
        except BaseException:
            guest.remove_tree(work)
            raise
    return final / "root"


# --------------------------------------------------------------------------------------
# generated data


_WORDS: Final = (b"alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi "
                 b"omicron pi rho sigma tau upsilon phi chi psi omega recover restore disk "
                 b"partition volume archive manifest kernel module initramfs boot").split()
#: (uid, gid) pairs the generated files get.
OWNERS: Final = ((0, 0), (1000, 1000), (1001, 100), (65534, 65534), (4242, 4343))
MODES: Final = (0o644, 0o600, 0o640, 0o755, 0o444, 0o4755, 0o2750)
# POSIX ACL xattr format (linux/posix_acl_xattr.h): version 2, then (tag, perm, id).
_ACL_USER_OBJ, _ACL_USER, _ACL_GROUP_OBJ, _ACL_GROUP, _ACL_MASK, _ACL_OTHER = (
    0x01, 0x02, 0x04, 0x08, 0x10, 0x20)
_ACL_UNDEFINED_ID: Final = 0xFFFFFFFF


def acl_xattr(user_id: int, group_id: int) -> bytes:
    """A POSIX access ACL (``user::rw-,user:UID:rw-,group::r--,group:GID:r--,mask::rw-,
    other::---``) as the kernel's xattr value."""
    entries = [
        (_ACL_USER_OBJ, 6, _ACL_UNDEFINED_ID),
        (_ACL_USER, 6, user_id),
        (_ACL_GROUP_OBJ, 4, _ACL_UNDEFINED_ID),
        (_ACL_GROUP, 4, group_id),
        (_ACL_MASK, 6, _ACL_UNDEFINED_ID),
        (_ACL_OTHER, 0, _ACL_UNDEFINED_ID),
    ]
    out = (2).to_bytes(4, "little")
    for tag, perm, ident in entries:
        out += tag.to_bytes(2, "little") + perm.to_bytes(2, "little") + ident.to_bytes(4, "little")
    return out


def _content(rng: random.Random, size: int) -> bytes:
    """Half the files compress about 3:1 (words), the other half not at all."""
    if rng.random() < 0.5:
        return rng.randbytes(size)
    words = [rng.choice(_WORDS) for _ in range(size // 5 + 1)]
    return b" ".join(words)[:size]


def _stamp(rng: random.Random) -> int:
    """An mtime in ns between 2001 and 2025, nanoseconds included."""
    return rng.randrange(978307200, 1735689600) * 10**9 + rng.randrange(10**9)


def generate_data(top: Path, budget: int, seed: int) -> dict[str, int]:
    """Fill ``top`` (created) with about ``budget`` bytes of files whose metadata a recovery
    must keep: owners, modes (setuid, setgid), ns mtimes, user xattrs, POSIX ACLs (access,
    and a default ACL on a directory), hard links across directories, sparse files,
    symlinks (one dangling), a FIFO, a device node, names with spaces and UTF-8. Returns
    counts of what it made. Deterministic for a seed."""
    rng = random.Random(seed)
    counts = dict.fromkeys(("files", "bytes", "xattrs", "acls", "hardlinks", "sparse",
                            "symlinks", "special"), 0)
    dirs = [top / f"d{i:02d}" / f"sub {j}" for i in range(12) for j in range(3)]
    dirs.append(top / "ünïcødé dir")
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    while counts["bytes"] < budget:
        size = rng.choice((0, rng.randrange(1, 4096), rng.randrange(4096, 65536),
                           rng.randrange(65536, 1 << 20), rng.randrange(1 << 20, 6 << 20)))
        size = min(size, max(budget - counts["bytes"], 0))
        path = rng.choice(dirs) / f"file {len(files):05d}.dat"
        path.write_bytes(_content(rng, size))
        files.append(path)
        counts["files"] += 1
        counts["bytes"] += size
    for n in range(4):
        sparse = top / f"sparse-{n}.img"
        with sparse.open("wb") as f:
            f.truncate(64 * MiB)
            for at in (0, 17 * MiB + 4096 * n, 40 * MiB, 64 * MiB - 8192):
                f.seek(at)
                f.write(rng.randbytes(8192))
        files.append(sparse)
        counts["sparse"] += 1
    for n in range(40):
        src = rng.choice(files)
        for k in range(rng.choice((1, 2))):
            link = rng.choice(dirs) / f"hardlink {n}-{k}"
            if not link.exists():
                os.link(src, link)
                counts["hardlinks"] += 1
    for n in range(30):
        d = rng.choice(dirs)
        target = os.path.relpath(rng.choice(files), d)
        (d / f"symlink-{n}").symlink_to(target)
        counts["symlinks"] += 1
    (top / "dangling").symlink_to("/nonexistent/target")
    (top / "absolute").symlink_to("/etc/hostname")
    os.mkfifo(top / "fifo")
    os.mknod(top / "null-device", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    counts["symlinks"] += 2
    counts["special"] += 2
    for path in files:
        uid, gid = rng.choice(OWNERS)
        os.chown(path, uid, gid)
        os.chmod(path, rng.choice(MODES))
        if rng.random() < 0.15:
            os.setxattr(path, "user.bench.comment", b"note " + rng.randbytes(8).hex().encode())
            os.setxattr(path, "user.bench.blob", rng.randbytes(rng.randrange(1, 200)))
            counts["xattrs"] += 1
        if rng.random() < 0.05:
            os.setxattr(path, "system.posix_acl_access", acl_xattr(4242, 4343))
            counts["acls"] += 1
    shared = top / "shared"
    shared.mkdir()
    os.setxattr(shared, "system.posix_acl_default", acl_xattr(4242, 4343))
    os.setxattr(shared, "system.posix_acl_access", acl_xattr(1000, 100))
    counts["acls"] += 1
    # mtimes last, deepest first: making entries changes their directories' mtimes
    everything = sorted((p for p in top.rglob("*")), key=lambda p: len(p.parts), reverse=True)
    for path in [*everything, top]:
        ns = _stamp(rng)
        os.utime(path, ns=(ns, ns), follow_symlinks=False)
    return counts


def source_numbers(firmware: guest.Firmware) -> dict[str, int]:
    """The source disk's partition numbers by name."""
    _, numbers = guest.disk_layout("gpt", uefi=firmware == "uefi", sizes=PART_SIZES)
    return numbers


def cached_source(firmware: guest.Firmware, data_mib: int, seed: int) -> guest.ImageInfo:
    """The source image, built once per everything it depends on (never boot it: copy it).
    /boot, swap, /home and / on the bench tree (less cycle.TRIMMED), the generated data in
    /srv/bench (two thirds) and /home/bench, a host-only initramfs (cycle.make_host_only),
    BOOT_CHECK at /resurgo-test/run.sh."""
    from tests.vm import cycle

    tree = bench_tree()
    numbers = source_numbers(firmware)

    def make(image: Path) -> guest.ImageInfo:
        info = guest.build_image(
            tree, image, size=SOURCE_SIZE, uefi=firmware == "uefi", label="gpt",
            hostname=HOST, run_script=BOOT_CHECK, boot_size=PART_SIZES["boot"],
            swap_size=PART_SIZES["swap"], home_size=PART_SIZES["home"],
        )
        parts = {"root": numbers["root"], "boot": numbers["boot"], "home": numbers["home"]}
        with cycle.partitions_mounted(image, parts, read_only=False) as m:
            root = m["root"]
            counts = {
                "srv": generate_data(root / "srv/bench", data_mib * MiB * 2 // 3, seed),
                "home": generate_data(m["home"] / "bench", data_mib * MiB // 3, seed + 1),
            }
            (root / "srv/bench-counts.json").write_text(json.dumps(counts) + "\n")
            with guest.mounted(m["boot"], root / "boot", options=["bind"]):
                cycle.trim(root, info.kernel)
                cycle.purge(root, cycle.PLAIN_UNUSED)
                cycle.make_host_only(root, info.kernel)
            guest.run_cmd(["sync", "-f", root])
        return info

    key = ("vs-rear source", BENCH_VERSION, firmware, SOURCE_SIZE, dict(PART_SIZES), data_mib,
           seed, BOOT_CHECK, cycle.HOST_ONLY_MODULES, cycle.TRIMMED, cycle.PLAIN_UNUSED)
    return guest.cached_image(f"vs-rear-source-{firmware}", key, make, tree=tree)


# --------------------------------------------------------------------------------------
# the walker: this benchmark's own, not resurgo's


@dataclasses.dataclass(frozen=True)
class Entry:
    """What a recovery must keep of one directory entry."""

    kind: str
    mode: int
    uid: int
    gid: int
    mtime_ns: int
    size: int | None = None
    digest: str | None = None
    target: str | None = None
    rdev: int | None = None
    xattrs: tuple[tuple[str, str], ...] = ()
    sparse: bool | None = None
    #: the other names of a hard-linked file, in the same filesystem
    links: tuple[str, ...] = ()


FIELDS: Final = tuple(f.name for f in dataclasses.fields(Entry))
_KINDS: Final = ((stat.S_ISREG, "file"), (stat.S_ISDIR, "dir"), (stat.S_ISLNK, "symlink"),
                 (stat.S_ISCHR, "char"), (stat.S_ISBLK, "block"), (stat.S_ISFIFO, "fifo"),
                 (stat.S_ISSOCK, "socket"))


def _kind(mode: int) -> str:
    return next(name for test, name in _KINDS if test(mode))


def _xattrs(path: str) -> tuple[tuple[str, str], ...]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return ()
    out = []
    for name in sorted(names):
        value = os.getxattr(path, name, follow_symlinks=False)
        out.append((name, hashlib.sha256(value).hexdigest()[:16]))
    return tuple(out)


def _digest(path: str) -> str:
    with open(path, "rb", buffering=0) as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def walk(top: Path, prefix: str = "") -> dict[str, Entry]:
    """Every entry of the filesystem mounted at ``top`` (not crossing into another one),
    keyed by ``prefix`` + its path below ``top`` (``/`` for ``top`` itself)."""
    dev = os.lstat(top).st_dev
    found: dict[str, Entry] = {}
    inodes: dict[int, list[str]] = {}
    stack = [""]
    while stack:
        rel = stack.pop()
        path = os.fspath(top) + rel
        st = os.lstat(path)
        key = (prefix + rel) or "/"
        kind = _kind(st.st_mode)
        entry = Entry(kind=kind, mode=stat.S_IMODE(st.st_mode), uid=st.st_uid, gid=st.st_gid,
                      mtime_ns=st.st_mtime_ns, xattrs=_xattrs(path))
        if kind == "file":
            entry = dataclasses.replace(entry, size=st.st_size, digest=_digest(path),
                                        sparse=st.st_blocks * 512 < st.st_size)
            if st.st_nlink > 1:
                inodes.setdefault(st.st_ino, []).append(key)
        elif kind == "symlink":
            entry = dataclasses.replace(entry, target=os.readlink(path))
        elif kind in ("char", "block"):
            entry = dataclasses.replace(entry, rdev=st.st_rdev)
        elif kind == "dir":
            if st.st_dev != dev:
                # another filesystem mounted here: its own walk covers it
                entry = dataclasses.replace(entry, kind="mountpoint")
            else:
                stack.extend(f"{rel}/{name}" for name in sorted(os.listdir(path), reverse=True))
        found[key] = entry
    for names in inodes.values():
        for name in names:
            found[name] = dataclasses.replace(
                found[name], links=tuple(sorted(n for n in names if n != name)))
    return found


@dataclasses.dataclass(frozen=True)
class Difference:
    path: str
    field: str
    source: object
    recovered: object

    def to_json(self) -> dict[str, object]:
        return {"path": self.path, "field": self.field, "source": _jsonable(self.source),
                "recovered": _jsonable(self.recovered)}


def _jsonable(value: object) -> object:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    return value


def diff(source: Mapping[str, Entry], recovered: Mapping[str, Entry]) -> list[Difference]:
    """Every way ``recovered`` differs from ``source``: entries missing or extra, and each
    field that differs (a directory's mtime too; the access time and ctime are not kept
    by anyone and not compared)."""
    out: list[Difference] = []
    for path in sorted(source.keys() | recovered.keys()):
        a, b = source.get(path), recovered.get(path)
        if a is None:
            out.append(Difference(path, "extra", None, b.kind if b else None))
            continue
        if b is None:
            out.append(Difference(path, "missing", a.kind, None))
            continue
        if a.kind != b.kind:
            out.append(Difference(path, "kind", a.kind, b.kind))
            continue
        for name in FIELDS[1:]:
            va, vb = getattr(a, name), getattr(b, name)
            if name == "mtime_ns" and a.kind in ("symlink", "mountpoint"):
                continue
            if va != vb:
                out.append(Difference(path, name, va, vb))
    return out


#: Paths a recovery rewrites by design (the boot loader's files, the initramfs with the
#: target's drivers, each tool's own record of the recovery).
EXPECTED: Final = ("/boot/grub", "/boot/initrd.img-*", "/etc/initramfs-tools",
                   "/var/lib/rear", "/var/log/rear", "/var/lib/resurgo", "/var/log/resurgo")
#: Paths the running source wrote during or after its save (logs, systemd's state, the
#: harness's own mount points), which no backup taken while it ran can have.
#: Below /dev and /run the running system mounts devtmpfs and tmpfs: what the root
#: filesystem itself holds there (a debootstrapped tree's static device nodes) is hidden
#: from every backup taken while it runs.
VOLATILE: Final = ("/var/log", "/var/lib/systemd", "/var/tmp", "/tmp", "/mnt",
                   "/resurgo-test", "/var/cache/ldconfig", "/dev/*", "/run/*")


def _under(path: str, patterns: Iterable[str]) -> bool:
    for pattern in patterns:
        if fnmatch.fnmatchcase(path, pattern) or fnmatch.fnmatchcase(path, pattern + "/*"):
            return True
    return False


def classify(diffs: Iterable[Difference]) -> dict[str, list[Difference]]:
    """Differences by what they mean: ``counted`` (fidelity lost), ``expected``, ``volatile``."""
    out: dict[str, list[Difference]] = {"counted": [], "expected": [], "volatile": []}
    for d in diffs:
        path = d.path.split(" ", 1)[0]
        if _under(path, EXPECTED):
            out["expected"].append(d)
        elif _under(path, VOLATILE):
            out["volatile"].append(d)
        else:
            out["counted"].append(d)
    return out


# --------------------------------------------------------------------------------------
# disks: identities and walks


def disk_ids(image: Path) -> dict[str, str]:
    """A GPT disk's identities, keyed by what they are (``part root partuuid`` ...): the
    disk GUID, each partition's PARTUUID, type and name (by its name), and the filesystem
    or swap UUID, label and type on it (blkid -p, on a read-only loop device)."""
    table = json.loads(guest.run_cmd(["sfdisk", "--json", image]).stdout)["partitiontable"]
    ids = {"disk label": table["label"], "disk guid": table.get("id", "").lower()}
    parts: dict[str, int] = {}
    for part in table.get("partitions", []):
        name = part.get("name") or part["node"]
        number = int(re.sub(r".*?(\d+)$", r"\1", part["node"]))
        parts[name] = number
        ids[f"part {name} partuuid"] = part.get("uuid", "").lower()
        ids[f"part {name} type"] = part.get("type", "").lower()
        ids[f"part {name} number"] = str(number)
    with guest.loop_device(image, read_only=True) as loop:
        nodes = guest.partition_nodes(loop, sorted(parts.values()))
        by_number = dict(zip(sorted(parts.values()), nodes, strict=True))
        for name, number in parts.items():
            proc = guest.run_cmd(["blkid", "-p", "-o", "export", by_number[number]], check=False)
            values = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
            for field in ("TYPE", "UUID", "LABEL"):
                if field in values:
                    ids[f"fs {name} {field.lower()}"] = values[field]
    return ids


def part_numbers(image: Path) -> dict[str, int]:
    table = json.loads(guest.run_cmd(["sfdisk", "--json", image]).stdout)["partitiontable"]
    return {p["name"]: int(re.sub(r".*?(\d+)$", r"\1", p["node"]))
            for p in table.get("partitions", []) if p.get("name")}


def walk_image(image: Path) -> dict[str, Entry]:
    """The ext4 filesystems of a disk (root, /boot, /home by partition name), mounted
    read-only without replaying a journal, walked."""
    numbers = part_numbers(image)
    mounts = {"root": "", "boot": "/boot", "home": "/home"}
    found: dict[str, Entry] = {}
    with contextlib.ExitStack() as stack:
        loop = stack.enter_context(guest.loop_device(image, read_only=True))
        wanted = {n: numbers[n] for n in mounts if n in numbers}
        nodes = guest.partition_nodes(loop, sorted(wanted.values()))
        by_number = dict(zip(sorted(wanted.values()), nodes, strict=True))
        tmp = stack.enter_context(guest.scratch_dir("vs-rear-walk-"))
        for name, number in wanted.items():
            mnt = stack.enter_context(guest.mounted(by_number[number], tmp / name,
                                                    options=["ro", "noload"]))
            for path, entry in walk(mnt, mounts[name]).items():
                # the root's own directories that /boot and /home are mounted on
                under = name == "root" and path in ("/boot", "/home")
                found[f"{path} (under the mount)" if under else path] = entry
    return found


def compare_ids(source: Mapping[str, str], recovered: Mapping[str, str]) -> list[Difference]:
    """Identities the recovered disk should keep (sizes are not identities: a target of
    another size is fitted), a partition's number among them."""
    out = []
    for key in sorted(source.keys() | recovered.keys()):
        if source.get(key) != recovered.get(key):
            out.append(Difference(key, "identity", source.get(key), recovered.get(key)))
    return out


# --------------------------------------------------------------------------------------
# booting, with the time of every console line


@dataclasses.dataclass(frozen=True)
class Watched:
    """A qemu run: its console lines with their times (seconds since qemu started), the
    time each mark was first seen, and how it ended."""

    log: Path
    seconds: float
    marks: dict[str, float]
    #: None: qemu exited by itself; else why it was stopped ("timeout", "silence")
    stopped: str | None
    tail: tuple[str, ...]

    def to_json(self) -> dict[str, object]:
        return {"log": os.fspath(self.log), "seconds": self.seconds, "marks": self.marks,
                "stopped": self.stopped, "tail": list(self.tail)}


class _Console(threading.Thread):
    def __init__(self, stream: IO[bytes], sink: IO[bytes], started: float,
                 marks: Mapping[str, re.Pattern[str]]) -> None:
        super().__init__(daemon=True)
        self.stream, self.sink, self.started, self.patterns = stream, sink, started, marks
        self.marks: dict[str, float] = {}
        self.last_output = started
        self.lines: list[str] = []

    def _line(self, raw: bytes) -> None:
        line = raw.decode(errors="replace").rstrip("\r")
        now = time.monotonic()
        self.sink.write(f"[{now - self.started:8.1f}] ".encode() + raw + b"\n")
        self.sink.flush()
        self.lines = [*self.lines[-199:], line]
        for name, pattern in self.patterns.items():
            if name not in self.marks and pattern.search(line):
                self.marks[name] = round(now - self.started, 1)

    def run(self) -> None:
        pending = b""
        fd = self.stream.fileno()
        while chunk := os.read(fd, 65536):
            self.last_output = time.monotonic()
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                self._line(raw)
        if pending:
            self._line(pending)


_ANSI: Final = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|[\x00-\x08\x0b-\x1f]")


def watch_qemu(argv: list[str], log: Path, *, timeout: float, silence: float,
               marks: Mapping[str, re.Pattern[str]], stop_after: Sequence[str] = (),
               grace: float = 90.0) -> Watched:
    """Run qemu until it exits, ``timeout`` passes, its console stays silent for
    ``silence`` seconds, or ``grace`` seconds after any mark in ``stop_after`` was seen."""
    started = time.monotonic()
    stopped: str | None = None
    with log.open("wb") as sink:
        proc = guest.spawn_qemu(argv, stdin=subprocess.DEVNULL)
        assert proc.stdout is not None
        console = _Console(proc.stdout, sink, started, marks)
        console.start()
        try:
            while proc.poll() is None:
                now = time.monotonic()
                seen = [console.marks[m] for m in stop_after if m in console.marks]
                if now - started > timeout:
                    stopped = "timeout"
                elif now - console.last_output > silence:
                    stopped = "silence"
                elif seen and now - started > min(seen) + grace:
                    stopped = "after done"
                if stopped:
                    break
                time.sleep(1)
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            console.join(timeout=10)
            proc.stdout.close()
    tail = tuple(_ANSI.sub("", line) for line in console.lines[-40:])
    return Watched(log, round(time.monotonic() - started, 1), dict(console.marks), stopped,
                   tuple(t for t in tail if t.strip()))


def qemu_argv(disks: Sequence[guest.Drive], *, firmware: guest.Firmware,
              cdrom: Path | None = None, ovmf_vars: Path | None = None) -> list[str]:
    """guest.qemu_command with one vCPU, and a CD drive that boots first when given."""
    argv = guest.qemu_command(disks, firmware=firmware, cpus=1, memory_mib=2048,
                              ovmf_vars=ovmf_vars)
    if cdrom is None:
        return argv
    argv = [a.replace(",bootindex=0", "") for a in argv]
    return [*argv, "-drive", f"file={cdrom},format=raw,if=none,id=cd0,media=cdrom,readonly=on",
            "-device", "ide-cd,drive=cd0,bootindex=0"]


def boot_guest_script(script: str, *, image: guest.Drive, workdir: Path,
                      files: Mapping[str, guest.ExchangeFile], extra: Sequence[guest.Drive],
                      firmware: guest.Firmware, ovmf_vars: Path | None,
                      timeout: float) -> tuple[Watched, Path]:
    """guest.run_in_guest's exchange-disk protocol, with one vCPU and timed lines."""
    workdir.mkdir(parents=True, exist_ok=True)
    xchg = guest.make_exchange_disk(workdir / "exchange.img", {**files, "run.sh": script})
    disks = [image, *extra, guest.Drive(xchg, serial="resurgo-xchg")]
    marks = {"begin": re.compile(guest.MARK_BEGIN), "exit": re.compile(guest.MARK_EXIT)}
    watched = watch_qemu(qemu_argv(disks, firmware=firmware, ovmf_vars=ovmf_vars),
                         workdir / "serial.log", timeout=timeout, silence=timeout,
                         marks=marks)
    exchange = workdir / "exchange"
    if exchange.exists():
        shutil.rmtree(exchange)
    exchange.mkdir()
    # A guest stopped mid-write leaves the journal dirty: read it without replaying that
    # (guest.read_exchange's plain read-only mount refuses such a disk).
    with contextlib.ExitStack() as stack:
        loop = stack.enter_context(guest.loop_device(xchg, read_only=True))
        tmp = stack.enter_context(guest.scratch_dir("vs-rear-xchg-"))
        mnt = stack.enter_context(guest.mounted(loop, tmp / "mnt", options=["ro", "noload"]))
        shutil.copytree(mnt, exchange, symlinks=True, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("lost+found"))
    xchg.unlink()
    return watched, exchange


# --------------------------------------------------------------------------------------
# one tool: save, recover onto a target, boot, compare

OUT_SIZE: Final = 3 * GiB


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    what: str
    size: int
    interface: guest.Interface


CASES: Final[Mapping[str, Case]] = {
    "a": Case("a", "blank disk, same size, same bus (virtio)", SOURCE_SIZE, "virtio"),
    "b": Case("b", "blank disk 25 % larger, NVMe", SOURCE_SIZE * 5 // 4, "nvme"),
    "c": Case("c", "blank disk smaller, the data fits (virtio)", SOURCE_SIZE * 5 // 8, "virtio"),
}


@dataclasses.dataclass
class Saved:
    """What one save of one tool left for its recoveries."""

    tool: Tool
    result: dict[str, Any]
    iso: Path | None = None
    set_disk: Path | None = None
    source_walk: dict[str, Entry] = dataclasses.field(default_factory=dict)
    source_ids: dict[str, str] = dataclasses.field(default_factory=dict)


def _save_files(tool: Tool, firmware: guest.Firmware) -> dict[str, guest.ExchangeFile]:
    if tool == "rear":
        return {"local.conf": REAR_CONF + (REAR_CONF_UEFI if firmware == "uefi" else "")}
    import blake3
    import tomli_w

    return {"resurgo.toml": RESURGO_CONF, "py/resurgo": REPO / "src" / "resurgo",
            "py/tomli_w": Path(tomli_w.__file__).parent,
            "py/blake3": Path(blake3.__file__).parent}


def iso_backup_bytes(iso: Path) -> int:
    """The bytes of ReaR's backup inside its ISO (``/backup``), from xorriso's listing."""
    proc = guest.run_cmd(["xorriso", "-indev", iso, "-find", "/backup", "-type", "f",
                          "-exec", "lsdl"], check=False)
    total = 0
    for line in proc.stdout.splitlines():
        words = line.split()
        if len(words) > 5 and words[0].startswith("-") and words[4].isdigit():
            total += int(words[4])
    return total


def save(tool: Tool, run_dir: Path, source: guest.ImageInfo, firmware: guest.Firmware,
         ovmf_vars: Path | None) -> Saved:
    """Boot a copy of the source and save it with ``tool``; walk the source as the save
    left it; keep the rescue image (and resurgo's set disk)."""
    work = run_dir / f"{tool}-save"
    src = guest.copy_image(source, run_dir / f"{tool}-source.raw").path
    out = guest.blank_disk(run_dir / f"{tool}-out.img", OUT_SIZE)
    guest.run_cmd(["mkfs.ext4", "-q", "-F", "-L", "vsrear-out", out])
    script = REAR_SAVE if tool == "rear" else RESURGO_SAVE
    result: dict[str, Any] = {"tool": tool}
    saved = Saved(tool, result)
    try:
        watched, x = boot_guest_script(
            script, image=guest.Drive(src, serial="vsrear-source"), workdir=work,
            files=_save_files(tool, firmware), extra=[guest.Drive(out, serial="vsrear-out")],
            firmware=firmware, ovmf_vars=ovmf_vars, timeout=SAVE_TIMEOUT)
        status = (x / "exit-status").read_text().strip() if (x / "exit-status").exists() else None
        result["exit_status"] = int(status) if status and status.isdigit() else None
        result["ok"] = result["exit_status"] == 0
        result["guest_seconds"] = watched.seconds
        if (x / "save.time").exists():
            begin, end = map(float, (x / "save.time").read_text().split())
            # a failed save's time is no save time: kept apart, out of the medians
            key = "save_s" if result["ok"] else "failed_after_s"
            result[key] = round(end - begin, 1)
        if not result["ok"]:
            log = x / "save.out"
            text = log.read_text(errors="replace") if log.exists() else ""
            result["tail"] = text.splitlines()[-30:] or list(watched.tail)
        with guest.mounted_image(out) as mnt:
            if (mnt / "rescue.iso").is_file():
                saved.iso = run_dir / f"{tool}-rescue.iso"
                shutil.copyfile(mnt / "rescue.iso", saved.iso)
        if saved.iso is None:
            result["error"] = "no rescue image on the output disk"
        else:
            result["iso_bytes"] = saved.iso.stat().st_size
            if tool == "rear":
                result["backup_bytes"] = iso_backup_bytes(saved.iso)
                result["image_bytes"] = result["iso_bytes"] - result["backup_bytes"]
            else:
                result["image_bytes"] = result["iso_bytes"]
        if tool == "resurgo" and (x / "save.json").exists():
            report = json.loads((x / "save.json").read_text() or "{}")
            set_bytes = report.get("set", {}).get("bytes")
            if set_bytes is not None and "image_bytes" in result:
                result["backup_bytes"] = set_bytes - result["image_bytes"]
            saved.set_disk = out
        saved.source_walk = walk_image(src)
        saved.source_ids = disk_ids(src)
    finally:
        src.unlink(missing_ok=True)
        if saved.set_disk is None:
            out.unlink(missing_ok=True)
    return saved


#: What a guest starved of host CPU prints (TCG on a loaded host): not the system's fault.
EMULATION_STALL: Final = ("rcu_preempt kthread starved", "watchdog: BUG: soft lockup")
# The firmware found nothing to boot on the recovered disk (SeaBIOS, OVMF): the boot has
# failed, no need to wait for the silence timeout.
NO_BOOT: Final = re.compile(r"No bootable device|No bootable option or device was found")
PROMPT: Final = re.compile(r"timeout \d+ sec|\(default '|Press ENTER|\[y/N\]|[Cc]onfirm ")


def recover(saved: Saved, case: Case, run_dir: Path, firmware: guest.Firmware) -> dict[str, Any]:
    """The rescue image booted from a CD onto a blank target, unattended; the target then
    booted alone; its filesystems and identities compared with the source's."""
    tool = saved.tool
    result: dict[str, Any] = {"tool": tool, "case": case.name}
    if saved.iso is None or not saved.result.get("ok"):
        result.update(recovered=False, booted=False, error="no rescue image: the save failed")
        return result
    target = guest.blank_disk(run_dir / f"{tool}-{case.name}-target.raw", case.size)
    vars_file = (guest.new_ovmf_vars(run_dir / f"{tool}-{case.name}.vars")
                 if firmware == "uefi" else None)
    disks = [guest.Drive(target, interface=case.interface, serial="vsrear-target")]
    if saved.set_disk is not None:
        disks.append(guest.Drive(saved.set_disk, interface="virtio", serial="vsrear-set"))
    try:
        rescue = watch_qemu(
            qemu_argv(disks, firmware=firmware, cdrom=saved.iso, ovmf_vars=vars_file),
            run_dir / f"{tool}-{case.name}-rescue.log", timeout=RECOVER_TIMEOUT,
            silence=SILENCE_TIMEOUT,
            marks={"done": DONE[tool], "failed": FAILED[tool]},
            stop_after=("done", "failed"))
        result["rescue"] = rescue.to_json()
        done = "done" in rescue.marks and "failed" not in rescue.marks
        result["recovered"] = done
        result["recover_s"] = rescue.marks.get("done")
        text = rescue.log.read_text(errors="replace")
        result["prompts"] = sorted({_ANSI.sub("", m.group(0)) for m in PROMPT.finditer(text)})
        if not done:
            result["error"] = (f"the rescue stopped ({rescue.stopped or 'qemu exited'}) "
                               "without its tool's done line")
        booted = _boot_recovered(target, case, run_dir, firmware, vars_file, tool)
        result["boot"] = booted.to_json()
        result["booted"] = "booted" in booted.marks
        result["boot_s"] = booted.marks.get("booted")
        result.update(fidelity(saved, target))
    finally:
        target.unlink(missing_ok=True)
        if vars_file is not None:
            vars_file.unlink(missing_ok=True)
    return result


def _boot_recovered(target: Path, case: Case, run_dir: Path, firmware: guest.Firmware,
                    vars_file: Path | None, tool: Tool) -> Watched:
    drive = guest.Drive(target, interface=case.interface, serial="vsrear-target")
    log = run_dir / f"{tool}-{case.name}-boot.log"
    watched = None
    for _attempt in range(2):
        watched = watch_qemu(
            qemu_argv([drive], firmware=firmware, ovmf_vars=vars_file), log,
            timeout=BOOT_TIMEOUT, silence=600,
            marks={"booted": re.compile(BOOT_MARK), "exit": re.compile(guest.MARK_EXIT),
                   "no-boot": NO_BOOT},
            stop_after=("exit", "no-boot"), grace=60)
        stalled = any(s in log.read_text(errors="replace") for s in EMULATION_STALL)
        if "booted" in watched.marks or not stalled:
            break
        shutil.copyfile(log, log.with_suffix(".stalled.log"))
    assert watched is not None
    return watched


def fidelity(saved: Saved, target: Path) -> dict[str, Any]:
    """The recovered disk against the source as its save left it: differences counted
    (outside EXPECTED and VOLATILE), by field, and the identities."""
    try:
        got = walk_image(target)
        ids = disk_ids(target)
    except (guest.HarnessError, OSError) as exc:
        return {"fidelity_error": str(exc)}
    classes = classify(diff(saved.source_walk, got))
    counted = classes["counted"]
    by_field: dict[str, int] = {}
    for d in counted:
        by_field[d.field] = by_field.get(d.field, 0) + 1
    id_diffs = compare_ids(saved.source_ids, ids)
    return {
        "entries": len(saved.source_walk),
        "fidelity_diffs": len(counted),
        "fidelity_by_field": by_field,
        "expected_diffs": len(classes["expected"]),
        "volatile_diffs": len(classes["volatile"]),
        "differences": [d.to_json() for d in counted[:200]],
        "identity_diffs": len(id_diffs),
        "identities": [d.to_json() for d in id_diffs],
    }


# --------------------------------------------------------------------------------------
# the table


@dataclasses.dataclass(frozen=True)
class Row:
    label: str
    rear: str
    resurgo: str
    ratio: str


def _median(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def _number(value: float | None, digits: int) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}"


def _ratio(rear: float | None, resurgo: float | None) -> str:
    if rear is None or resurgo is None or rear == 0:
        return "-"
    return f"{resurgo / rear:.2f}"


def _count(values: Sequence[bool | None]) -> str:
    return f"{sum(1 for v in values if v)}/{len(values)}" if values else "-"


def summarize(saves: Sequence[Mapping[str, Any]], cases: Sequence[Mapping[str, Any]]
              ) -> list[Row]:
    """The table's rows: the medians over the runs of each measure, per tool, and the ratio
    resurgo/ReaR; yes/no measures as a count of the runs."""
    rows: list[Row] = []

    def of(items: Sequence[Mapping[str, Any]], tool: str, key: str, scale: float = 1.0,
           **match: str) -> list[float | None]:
        out: list[float | None] = []
        for item in items:
            if item.get("tool") != tool or any(item.get(k) != v for k, v in match.items()):
                continue
            value = item.get(key)
            out.append(None if value is None else float(value) / scale)
        return out

    def numeric(label: str, items: Sequence[Mapping[str, Any]], key: str, digits: int,
                scale: float = 1.0, **match: str) -> None:
        a = _median(of(items, "rear", key, scale, **match))
        b = _median(of(items, "resurgo", key, scale, **match))
        rows.append(Row(label, _number(a, digits), _number(b, digits), _ratio(a, b)))

    def counted(label: str, items: Sequence[Mapping[str, Any]], key: str, **match: str) -> None:
        a = [bool(i.get(key)) for i in items if i.get("tool") == "rear"
             and all(i.get(k) == v for k, v in match.items())]
        b = [bool(i.get(key)) for i in items if i.get("tool") == "resurgo"
             and all(i.get(k) == v for k, v in match.items())]
        rows.append(Row(label, _count(a), _count(b), "-"))

    counted("save succeeded", saves, "ok")
    numeric("save: layout + backup + rescue (s)", saves, "save_s", 0)
    numeric("rescue image (MiB)", saves, "image_bytes", 1, MiB)
    numeric("backup (MiB)", saves, "backup_bytes", 1, MiB)
    for name in sorted({str(c["case"]) for c in cases}):
        p = f"({name}) "
        counted(p + "recovered unattended", cases, "recovered", case=name)
        numeric(p + "recovery: rescue boot to done (s)", cases, "recover_s", 0, case=name)
        counted(p + "recovered system boots", cases, "booted", case=name)
        numeric(p + "fidelity differences", cases, "fidelity_diffs", 0, case=name)
        numeric(p + "identity differences", cases, "identity_diffs", 0, case=name)
    return rows


def render(rows: Sequence[Row]) -> str:
    header = Row("measure (median over runs)", "ReaR", "resurgo", "resurgo/ReaR")
    width = max(len(r.label) for r in [header, *rows])
    lines = []
    for r in [header, *rows]:
        lines.append(f"{r.label:<{width}}  {r.rear:>9}  {r.resurgo:>9}  {r.ratio:>12}")
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# main


def _host_check(firmware: guest.Firmware) -> None:
    if os.geteuid() != 0:
        raise SystemExit("vs_rear.py: run as root (loop devices, mounts, chroot)")
    guest.require_tools("qemu-system-x86_64", "qemu-img", "debootstrap", "xorriso", "sfdisk",
                        "losetup", "mkfs.ext4", "blkid", "mmd", "mcopy", "mkfs.vfat")
    if firmware == "uefi" and not (guest.OVMF_CODE.exists() and guest.OVMF_VARS.exists()):
        raise SystemExit("vs_rear.py: --firmware uefi needs OVMF (apt-get install ovmf)")
    try:
        import blake3  # noqa: F401
        import tomli_w  # noqa: F401
    except ImportError as exc:
        raise SystemExit(f"vs_rear.py: resurgo's dependencies are missing ({exc}): run it "
                         "with the repository's .venv/bin/python (./dev setup), or "
                         "pip install the repository first") from exc


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", nargs="+", choices=sorted(CASES), default=sorted(CASES),
                   help="targets: a same size and bus, b 25%% larger on NVMe, c smaller")
    p.add_argument("--firmware", choices=("bios", "uefi"), default="bios")
    p.add_argument("--runs", type=int, default=2, help="each case this many times (2)")
    p.add_argument("--json", type=Path, help="write every measure here")
    p.add_argument("--data-mib", type=int, default=300,
                   help="generated data besides the Debian system (300)")
    p.add_argument("--seed", type=int, default=20)
    p.add_argument("--tools", nargs="+", choices=TOOLS, default=list(TOOLS))
    p.add_argument("--work-dir", type=Path, default=Path("/var/tmp/vs-rear"),
                   help="the run's disks (deleted once walked) and logs")
    p.add_argument("--render", type=Path, nargs="+", metavar="JSON",
                   help="run nothing: print the table of these results (--json files of "
                   "earlier runs, merged)")
    args = p.parse_args(argv)
    if args.runs < 1:
        p.error("--runs must be 1 or more")
    return args


def render_files(paths: Sequence[Path]) -> str:
    """The table of earlier runs' results (their --json files), merged."""
    saves: list[dict[str, Any]] = []
    cases: list[dict[str, Any]] = []
    described = []
    for path in paths:
        try:
            doc = json.loads(path.read_text())
            saves += doc["saves"]
            cases += doc["recoveries"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SystemExit(f"vs_rear.py: {path}: not a results file ({exc})") from None
        described.append(f"{path.name}: {doc.get('firmware')}, {len(doc['saves'])} save(s), "
                         f"{len(doc['recoveries'])} recoveries, load average "
                         f"{doc.get('load_average_at_end')} at its end")
    return render(summarize(saves, cases)) + "\n\n" + "\n".join(described)


def main(argv: Sequence[str] | None = None) -> int:
    reexec_in_venv(__file__)
    args = parse(argv)
    if args.render:
        print(render_files(args.render))
        return 0
    _host_check(args.firmware)
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    started = time.monotonic()
    source = cached_source(args.firmware, args.data_mib, args.seed)
    print(f"source image {source.path} ({args.firmware}, {args.data_mib} MiB generated)",
          flush=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    work = args.work_dir / stamp
    work.mkdir(parents=True, exist_ok=True)
    saves: list[dict[str, Any]] = []
    cases: list[dict[str, Any]] = []

    def write() -> None:
        doc = {"firmware": args.firmware, "runs": args.runs, "cases": args.cases,
               "data_mib": args.data_mib, "load_average_at_end": os.getloadavg(),
               "cpus": os.cpu_count(), "saves": saves, "recoveries": cases,
               "table": [dataclasses.asdict(r) for r in summarize(saves, cases)],
               "seconds": round(time.monotonic() - started)}
        for path in [work / "results.json", *([args.json] if args.json else [])]:
            path.write_text(json.dumps(doc, indent=2, default=str) + "\n")

    for run in range(1, args.runs + 1):
        order = list(args.tools) if run % 2 else list(reversed(args.tools))
        for tool in order:
            run_dir = work / f"run{run}"
            run_dir.mkdir(exist_ok=True)
            vars_file = (guest.new_ovmf_vars(run_dir / f"{tool}-save.vars")
                         if args.firmware == "uefi" else None)
            print(f"run {run}: {tool} save ...", flush=True)
            try:
                saved = save(tool, run_dir, source, args.firmware, vars_file)
            except (guest.HarnessError, guest.GuestError, OSError) as exc:
                # recorded, and the run goes on with the other tool
                saved = Saved(tool, {"tool": tool, "ok": False, "error": f"harness: {exc}"})
            saved.result["run"] = run
            saves.append(saved.result)
            print(f"run {run}: {tool} save: ok={saved.result.get('ok')} "
                  f"{saved.result.get('save_s')} s", flush=True)
            write()
            try:
                for name in args.cases:
                    print(f"run {run}: {tool} recover ({name}) ...", flush=True)
                    try:
                        result = recover(saved, CASES[name], run_dir, args.firmware)
                    except (guest.HarnessError, guest.GuestError, OSError) as exc:
                        result = {"tool": tool, "case": name, "recovered": False,
                                  "booted": False, "error": f"harness: {exc}"}
                    result["run"] = run
                    cases.append(result)
                    print(f"run {run}: {tool} ({name}): recovered={result.get('recovered')} "
                          f"{result.get('recover_s')} s, booted={result.get('booted')}, "
                          f"fidelity {result.get('fidelity_diffs')}, "
                          f"identities {result.get('identity_diffs')}", flush=True)
                    write()
            finally:
                for path in (saved.iso, saved.set_disk):
                    if path is not None:
                        path.unlink(missing_ok=True)
    print()
    print(render(summarize(saves, cases)))
    print(f"\n{args.firmware}, {args.runs} run(s), {os.cpu_count()} host CPUs, load average "
          f"{os.getloadavg()[0]:.1f} at the end; logs and results.json in {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
