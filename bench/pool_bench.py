#!/usr/bin/env python3
"""Benchmark (not a test): package-aware sets (save --packages pool) on a real Debian system.

A debootstrapped Debian tree (--tree; default: the vm tier's, debootstrapped once and
cached in /var/cache/resurgo-tests) is copied onto an ext4 loop disk. Then,
each measured with `python -m resurgo` as a user runs it (--no-rescue: the rescue image is
the same either way):

    full     save (every file archived) to medium A, then recover it onto a blank disk
    pool     save --packages pool to medium B (its pool empty: every package downloaded
             with apt-get download, or taken from the package cache), recover it
    second   the recovered copy under another host name, save --packages pool to medium B
             again: what a second machine of the same release adds

With --server the tree is a freshly installed Debian server instead of a minimal system:
minbase with the kernel, GRUB and every package of priority important and standard (what the
installer's "standard system utilities" task installs) and openssh-server, debootstrapped
once from the mirror apt already uses and cached beside the vm tier's tree.

It prints the set sizes (the set's own directory; the pool apart), what the pooled set's
archive still holds (by directory, each file compressed alone), the times and the ratios
the issue asks for: the pool set against the full set (aim: at most a tenth once the pool
holds the packages), recovery time with the pool against without (aim: no slower), and the
second host's set. The saves with the pool need the tree's mirror (network). Run as root.
Timings on a loaded machine vary: run it twice, or with --repeat, and compare the ratios.

    python3 bench/pool_bench.py
    python3 bench/pool_bench.py --tree /srv/debian-root --work /var/tmp/poolbench
    python3 bench/pool_bench.py --server --initramfs rebuild   # the initramfs left out too
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _venv import reexec_in_venv  # bench/, the script's directory

SRC = Path(__file__).resolve().parent.parent / "src"
MIB = 1 << 20


def sh(*argv: str | Path, input: str | None = None) -> str:
    return subprocess.run([str(a) for a in argv], input=input, capture_output=True, text=True,
                          check=True).stdout


def cpu_of_children() -> float:
    """The CPU time (user and system) of the finished child processes and theirs."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


CPU: dict[str, float] = {}  # the CPU seconds of the last resurgo run, by "cpu"


def resurgo(*argv: str | Path, state: Path) -> tuple[float, dict[str, object]]:
    env = {**os.environ, "PYTHONPATH": str(SRC), "RESURGO_CONFIG": "",
           "RESURGO_STATE_DIR": str(state)}
    start = time.perf_counter()
    cpu = cpu_of_children()
    proc = subprocess.run([sys.executable, "-m", "resurgo", *map(str, argv), "--json",
                           "--report-dir", str(state / "reports")],
                          capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    CPU["cpu"] = cpu_of_children() - cpu
    if proc.returncode != 0:
        raise SystemExit(f"resurgo {' '.join(map(str, argv))} failed:\n{proc.stderr[-3000:]}")
    return seconds, json.loads(proc.stdout)


def size_of(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


class Disks:
    """Loop disks with one ext4 partition, undone at the end."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.loops: list[str] = []
        self.mounts: list[Path] = []

    def disk(self, name: str, size: int, filesystem: bool) -> str:
        image = self.work / f"{name}.img"
        with open(image, "wb") as f:
            f.truncate(size)
        loop = sh("losetup", "--find", "--show", "--partscan", image).strip()
        self.loops.append(loop)
        if filesystem:
            sh("sfdisk", "--quiet", loop, input="label: gpt\n,,L\n")
            sh("partx", "-u", loop)
            deadline = time.monotonic() + 10
            while not os.path.exists(f"{loop}p1") and time.monotonic() < deadline:
                time.sleep(0.05)
            sh("mkfs.ext4", "-q", f"{loop}p1")
        return loop

    def mount(self, device: str, where: Path) -> Path:
        where.mkdir(parents=True, exist_ok=True)
        sh("mount", device, where)
        self.mounts.append(where)
        return where

    def close(self) -> None:
        for where in reversed(self.mounts):
            subprocess.run(["umount", "-R", str(where)], check=False)
        for loop in reversed(self.loops):
            subprocess.run(["losetup", "-d", loop], check=False)


def umount_all(where: Path) -> None:
    subprocess.run(["umount", "-R", str(where)], check=False)


def left_in(set_dir: Path, tree: Path, depth: int = 3) -> list[tuple[int, int, str]]:
    """What a set's archives hold of the tree (read from the recovered copy): each file
    compressed alone at the archive's level, summed by its first ``depth`` components;
    (compressed bytes, files, path), largest first."""
    sys.path.insert(0, str(SRC))
    from resurgo.engine.manifest import decode_entry
    from resurgo.engine.pipes import DEFAULT_LEVEL

    sums: dict[str, list[int]] = {}
    for manifest in sorted((set_dir / "archives").glob("*.manifest")):
        text = subprocess.run(["zstd", "-dc", str(manifest)], capture_output=True,
                              check=True).stdout.decode("utf-8", "surrogateescape")
        for line in text.splitlines(keepends=True):
            if line.startswith("#"):
                continue
            e = decode_entry(line)
            if e.kind != "f":
                continue
            packed = subprocess.run(["zstd", f"-{DEFAULT_LEVEL}", "-c", str(tree / os.fsdecode(
                e.path))], capture_output=True, check=True).stdout
            key = "/".join(os.fsdecode(e.path).split("/")[:depth])
            got = sums.setdefault(key, [0, 0])
            got[0] += len(packed)
            got[1] += 1
    return sorted(((b, n, k) for k, (b, n) in sums.items()), reverse=True)


def steps_of(report: dict[str, object]) -> dict[str, float]:
    """The seconds of recover's steps (load, layout, restore, ...) from its --json."""
    steps = report.get("steps")
    out: dict[str, float] = {}
    if isinstance(steps, list):
        for s in steps:
            out[str(s["step"])] = out.get(str(s["step"]), 0.0) + float(s["seconds"])
    return out


def first_set(medium: Path) -> str:
    """The id of the medium's oldest set (ids begin with their time)."""
    return min(p.name for p in medium.iterdir() if p.is_dir() and p.name != "pool")


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.2f} (1 min), {five:.2f} (5 min)"


def priority_packages(*priorities: str) -> list[str]:
    """The packages of these priorities in the host's apt lists of the suite's main."""
    names: set[str] = set()
    for lists in sorted(glob.glob("/var/lib/apt/lists/*_dists_bookworm_main_binary-amd64_"
                                  "Packages*")):
        text = sh("/usr/lib/apt/apt-helper", "cat-file", lists)
        for para in text.split("\n\n"):
            fields = dict(line.split(": ", 1) for line in para.splitlines()
                          if ": " in line and not line.startswith(" "))
            if fields.get("Priority") in priorities and "Package" in fields:
                names.add(fields["Package"])
    if not names:
        raise SystemExit("no package lists of bookworm's main in /var/lib/apt/lists: "
                         "apt-get update first")
    return sorted(names)


def minimal_tree() -> Path:
    """The vm tier's tree (minbase, a kernel, GRUB, the storage tools), cached."""
    sys.path.insert(0, str(SRC.parent))
    from tests.vm import guest

    return guest.debian_tree()


def server_tree() -> Path:
    """A freshly installed Debian server's tree (see the module docstring), cached."""
    sys.path.insert(0, str(SRC.parent))
    from tests.vm import guest

    packages = {"linux-image-amd64", "grub-pc", "openssh-server",
                *priority_packages("important", "standard")}
    return guest.debian_tree(packages=sorted(packages))


def save_sets(tree: Path, work: Path, disks: Disks, size: int,
              lean: tuple[str, ...]) -> dict[str, object]:
    """Both saves of the tree (to work/full and work/pooled); what the pooled save said."""
    source = disks.mount(f"{disks.disk('source', size, True)}p1", work / "system")
    sh("cp", "-a", f"{tree}/.", source)
    (source / "etc/hostname").write_text("bench-one\n")
    for cached in (source / "var/cache/apt/archives").glob("*.deb"):
        cached.unlink()  # as after a debootstrap: the save obtains the packages
    out: dict[str, object] = {}
    out["save_full"], _ = resurgo("save", "--to", work / "full", "--root", source,
                                  "--no-rescue", state=work / "s1")
    if "rebuild" in lean:
        # A full set without its initramfs too: the pooled set's ratio to each is printed.
        resurgo("save", "--to", work / "full-lean", "--root", source, "--no-rescue", *lean,
                state=work / "s1-lean")
        out["set_full_lean"] = size_of(work / "full-lean" / first_set(work / "full-lean"))
    out["save_pool_cold"], out["report"] = resurgo(
        "save", "--to", work / "pooled", "--root", source, "--no-rescue", "--packages",
        "pool", *lean, state=work / "s2")
    umount_all(source)
    return out


def main() -> int:
    reexec_in_venv(__file__)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tree", type=Path, help="a debootstrapped Debian tree")
    parser.add_argument("--server", action="store_true",
                        help="a freshly installed server's tree (see above) instead of --tree")
    parser.add_argument("--work", type=Path, help="where the disks go (default: a temp dir)")
    parser.add_argument("--size", type=int, default=2048, help="disk size in MiB")
    parser.add_argument("--turns", type=int, default=1,
                        help="recover from each set this many times, in turns (the order "
                        "alternating), and give the ratio of each turn")
    parser.add_argument("--keep", action="store_true",
                        help="keep the saved media (WORK/full, WORK/pooled) for --sets")
    parser.add_argument("--initramfs", choices=("keep", "rebuild"), default="keep",
                        help="save the pooled sets with --initramfs rebuild: the initramfs "
                        "left out (the recovery, with --no-finalize here, does not make it)")
    parser.add_argument("--sets", type=Path,
                        help="recover only, from the media a --keep run left in this directory")
    args = parser.parse_args()
    tree = args.tree or (None if args.sets is not None else
                         server_tree() if args.server else minimal_tree())
    if args.sets is None and (tree is None or not (tree / "var/lib/dpkg/status").is_file()):
        raise SystemExit("no Debian tree: give --tree (a debootstrapped system)")
    lean = ("--initramfs", args.initramfs)
    work = Path(tempfile.mkdtemp(prefix="pool-bench-", dir=args.work))
    media = args.sets or work
    disks = Disks(work)
    size = args.size * MIB
    saved: dict[str, object] = {}
    recovered: dict[str, list[float]] = {"full": [], "pool": []}
    restored: dict[str, list[float]] = {"full": [], "pool": []}
    cpu_used: dict[str, list[float]] = {"full": [], "pool": []}
    second: dict[str, object] = {}
    left: list[tuple[int, int, str]] = []
    print(f"before: {load()}", flush=True)
    try:
        if args.sets is None:
            saved = save_sets(tree, work, disks, size, lean)  # type: ignore[arg-type]
        full, pooled = media / "full", media / "pooled"
        targets = {name: disks.disk(f"target-{name}", size, False) for name in recovered}
        mnt = work / "mnt"
        for turn in range(args.turns):
            order = ("full", "pool") if turn % 2 == 0 else ("pool", "full")
            for name in order:
                medium = full if name == "full" else pooled
                seconds, report = resurgo(
                    "recover", "--from", medium, "--set", first_set(medium), "--target",
                    targets[name], "--yes", "--root", mnt, "--no-finalize",
                    state=work / f"r-{name}-{turn}")
                recovered[name].append(seconds)
                cpu_used[name].append(CPU["cpu"])
                steps = steps_of(report)
                restored[name].append(steps.get("restore", 0.0))
                shown = ", ".join(f"{k} {v:.1f}" for k, v in steps.items())
                print(f"turn {turn + 1} {name}: recover {seconds:6.1f} s, CPU {CPU['cpu']:5.1f} s "
                      f"(steps: {shown}; "
                      f"the rest is reading the set and planning), {load()}", flush=True)
                if name == "pool" and not left and args.sets is None:
                    left = left_in(pooled / first_set(pooled), mnt)
                if name == "pool" and args.sets is None and not second:
                    (mnt / "etc/hostname").write_text("bench-two\n")
                    report_set = saved["report"]["set"]  # type: ignore[index]
                    second["seconds"], again = resurgo(
                        "save", "--to", pooled, "--root", mnt, "--no-rescue", "--packages",
                        "pool", *lean, state=work / "s3")
                    new = [p for p in pooled.iterdir() if p.name != "pool" and p.is_dir()
                           and p.name != report_set["id"]]
                    second["size"] = size_of(new[0]) if new else 0
                    second["added"] = again["packages"]["added"]  # type: ignore[index]
                umount_all(mnt)
        set_full = size_of(full / first_set(full))
        set_pool = size_of(pooled / first_set(pooled))
        pool_size = size_of(pooled / "pool")
    finally:
        disks.close()
        for name in ("source.img", "target-full.img", "target-pool.img"):
            (work / name).unlink(missing_ok=True)
        if not args.keep or args.sets is not None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"after: {load()}")
    if tree is not None:
        print(f"tree: {tree}")
    if saved:
        packages = saved["report"]["packages"]  # type: ignore[index]
        print(f"package files from the pool: {packages['files']} "
              f"({packages['file_bytes'] / MIB:.0f} MiB) of {packages['packages']} packages; "
              f"pool {pool_size / MIB:.0f} MiB")
        print(f"set, every file archived:   {set_full / MIB:8.1f} MiB   save "
              f"{saved['save_full']:6.1f} s")
        label = "pool + initramfs out:" if args.initramfs == "rebuild" else "--packages pool:"
        print(f"set, {label:22}{set_pool / MIB:8.1f} MiB   save "
              f"{saved['save_pool_cold']:6.1f} s (pool empty: packages downloaded)")
        print(f"second host, same pool:     {second['size'] / MIB:8.1f} MiB   save "  # type: ignore[operator]
              f"{second['seconds']:6.1f} s, {second['added']} package(s) added")
        print(f"ratios: pool set / full set {set_pool / set_full:.3f}; second host's set / "
              f"full set {second['size'] / set_full:.3f}")  # type: ignore[operator]
        if "set_full_lean" in saved:
            lean_full = saved["set_full_lean"]
            print(f"set, full, initramfs out:  {lean_full / MIB:8.1f} MiB; pool set / that "  # type: ignore[operator]
                  f"set {set_pool / lean_full:.3f}")  # type: ignore[operator]
    else:
        print(f"sets of {media}: full {set_full / MIB:.1f} MiB, pooled {set_pool / MIB:.1f} "
              f"MiB, pool {pool_size / MIB:.0f} MiB")
    if left:
        print("left in the pooled set's archive (each file compressed alone):")
        for packed, files, where in left[:12]:
            print(f"  {packed / MIB:8.2f} MiB {files:6} file(s)  {where}")
        print(f"  {sum(b for b, _, _ in left[12:]) / MIB:8.2f} MiB "
              f"{sum(n for _, n, _ in left[12:]):6} file(s)  elsewhere")
    turns = [p / f for p, f in zip(recovered["pool"], recovered["full"], strict=True)]
    for n, (f, p) in enumerate(zip(recovered["full"], recovered["pool"], strict=True), 1):
        print(f"turn {n}: recover {f:6.1f} s without the pool, {p:6.1f} s with it: "
              f"{p / f:.2f}")
    step_ratios = [p / f for p, f in zip(restored["pool"], restored["full"], strict=True)]
    cpu_ratios = [p / f for p, f in zip(cpu_used["pool"], cpu_used["full"], strict=True)]
    print(f"recovery with the pool / without: {statistics.median(turns):.2f} (median of "
          f"{len(turns)} turn(s)); the restore step alone: {statistics.median(step_ratios):.2f}"
          f"; CPU time: {statistics.median(cpu_ratios):.2f}")
    if args.keep and args.sets is None:
        print(f"media kept: {work} (--sets {work})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
