#!/usr/bin/env python3
"""Benchmark (not a test): resurgo's archive engine against tar+zstd, restic and borg.

Generates a tree (at --scale 1: 200,000 small files and 12 files of 100 MB, about 2 GB;
half of the data compresses about 2:1, the rest not at all, and no two files share
content, so deduplicating tools gain nothing they would not on real data), then measures
with a warm cache (before each run the page cache is emptied of what earlier runs left,
as root, and the run's input, the tree or the archive, is read once), best of --repeat
runs each (the tools take turns: run 1 of each, then run 2...):

    save     resurgo save_tree            tar -c | zstd -T0 > file
             restic backup (new repo)     borg create (new repo, repokey, default lz4)
    restore  resurgo restore_tree         zstd -dc file | tar -x
             restic restore               borg extract

resurgo's streams pass through the medium's FileWriter and FileReader, which hash what is
stored and check it when read, as in `resurgo save` and `recover`. The script prints the
throughput of each (apparent bytes of the tree per second), the ratio to
tar, the size of what was written and the peak RSS of the largest process of the run.
restic and borg are used when installed (apt-get install restic borgbackup). Run as root
(owners are restored). ``--tiny`` is the tree of 1,000,000 tiny files (0 to 200 bytes, 100 a
directory, no large file); ``--tree DIR`` measures an existing tree instead of a generated
one (a debootstrapped system, say: real systems mix sizes differently), read where it is,
never written. The last lines give each tool's save and restore time as a ratio to tar's
(tar's time over the tool's: above 1 is faster than tar), the best of each and the median
of the rounds, named for the tree (``tiny-files``, ``real-tree`` or ``generated``).
Examples::

    python3 bench/archive_bench.py --scale 0.1 --repeat 3
    python3 bench/archive_bench.py --tiny --tools resurgo,tar --levels 2
    python3 bench/archive_bench.py --tree /srv/debian-root --repeat 3
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import stat
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from _venv import reexec_in_venv  # bench/, the script's directory

SRC = Path(__file__).resolve().parent.parent / "src"
TEXT = bytes.maketrans(bytes(range(256)), b"etaoinshrdlucmfw" * 16)
SECRET = "bench-throwaway-passphrase"

# Run a command and report its wall time and the peak RSS of its largest process: the
# wrapper's RUSAGE_CHILDREN covers every descendant that was waited for.
WRAPPER = r"""
import json, resource, subprocess, sys, time
argv = json.loads(sys.argv[1])
env = json.loads(sys.argv[2])
cwd = sys.argv[3] or None
t = time.perf_counter()
rc = subprocess.run(argv, env=env, cwd=cwd).returncode
elapsed = time.perf_counter() - t
print(json.dumps({"rc": rc, "seconds": elapsed,
                  "rss_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""

# Both with their progress told as `resurgo save` and `recover` tell it: the engine's
# tally into events, the events into a meter (its lines to /dev/null).
PROGRESS = r"""
import os
from resurgo.progress import Form, Meter
from resurgo.recovery.events import Step, advancing
meter = Meter(open(os.devnull, "w"), Form.PLAIN)
def on_event(event):
    meter.update(str(event.step), event.what, event.done, event.total)
tally = advancing(on_event, Step.SAVE, "bench", None)
"""

RESURGO_SAVE = PROGRESS + r"""
import json, sys
from resurgo.engine import save_tree
from resurgo.media.streams import FileWriter
src, archive, manifest, level, recipients = sys.argv[1:6]

class Plain:
    # The directory medium's sink, less its fsync (tar syncs nothing either).
    def __init__(self, path): self.f = open(path, "wb")
    def write(self, data): self.f.write(data)
    def finish(self): self.f.close()
    def discard(self): self.f.close()

# Through the medium's FileWriter, as `resurgo save` writes: it hashes what it stores.
index = {}
def done(entry): index[entry.name] = [entry.size, entry.digest]
with FileWriter(archive, Plain(archive), done) as a, \
        FileWriter(manifest, Plain(manifest), done) as m:
    save_tree(src, a, m, set_id="bench", level=int(level),
              recipients=[recipients] if recipients else [], progress=tally)
with open(archive + ".index", "w") as f:
    json.dump(index, f)
"""

RESURGO_RESTORE = PROGRESS + r"""
import json, os, sys
from pathlib import Path
from resurgo.engine import Source, restore_tree
from resurgo.media.directory import LocalSource
from resurgo.media.setindex import FileEntry
from resurgo.media.streams import FileReader
dst, archive, manifest, identity, writers = sys.argv[1:6]
with open(archive + ".index") as f:
    index = json.load(f)

# Through the medium's FileReader, as `resurgo recover` reads: it checks size and digest.
def source(path):
    size, digest = index[path]
    opened = lambda: LocalSource(path, Path(path), os.open(path, os.O_RDONLY))
    return Source(path, lambda: FileReader(FileEntry(path, size, digest), opened(), "bench"))

restore_tree(dst, source(manifest), {"bench": source(archive)},
             identity=identity or None, writers=int(writers) if writers else None,
             progress=tally)
"""


@dataclass
class Run:
    seconds: float
    rss_kib: int


def measure(argv: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None,
            shell: bool = False) -> Run:
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = str(SRC)
    full_env.update(env or {})
    if shell:
        argv = ["sh", "-c", argv[0]]
    out = subprocess.run(
        [sys.executable, "-c", WRAPPER, json.dumps(argv), json.dumps(full_env), str(cwd or "")],
        check=True, capture_output=True, text=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if result["rc"] != 0:
        raise SystemExit(f"failed ({result['rc']}): {argv}\n{out.stderr[-2000:]}")
    return Run(result["seconds"], result["rss_kib"])


def generate(root: Path, files: int, small_max: int, large: int, large_size: int,
             seed: int) -> int:
    rng = random.Random(seed)
    total = 0
    per_dir = 100
    for i in range(files):
        d = root / f"d{i // (per_dir * 50):03d}" / f"s{(i // per_dir) % 50:02d}"
        if i % per_dir == 0:
            d.mkdir(parents=True, exist_ok=True)
        size = rng.randint(0, small_max)
        data = os.urandom(size)
        if i % 2 == 0:
            data = data.translate(TEXT)
        (d / f"f{i:07d}.dat").write_bytes(data)
        total += size
    big = root / "large"
    big.mkdir(exist_ok=True)
    for j in range(large):
        with open(big / f"large{j:02d}.bin", "wb") as f:
            left = large_size
            while left:
                n = min(left, 8 << 20)
                data = os.urandom(n)
                f.write(data.translate(TEXT) if j % 2 == 0 else data)
                left -= n
        total += large_size
    return total


def ram_ext4(mountpoint: Path, size: int, inodes: int) -> tuple[Path, str]:
    image = Path("/dev/shm") / f"{mountpoint.name}.img"
    with open(image, "wb") as f:
        f.truncate(size)
    loop = subprocess.run(["losetup", "--find", "--show", str(image)], check=True,
                          capture_output=True, text=True).stdout.strip()
    subprocess.run(["mkfs.ext4", "-q", "-E", "nodiscard", "-N", str(inodes), loop], check=True)
    subprocess.run(["mount", loop, str(mountpoint)], check=True)
    return image, loop


def fresh(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    subprocess.run(["sync"], check=True)


def warm(*inputs: Path) -> None:
    """Every run starts alike: what earlier runs left in the page cache is dropped (when
    run as root), so no run pays for reclaiming another's memory, and the run's input is
    read once, so none reads it from the disk."""
    subprocess.run(["sync"], check=True)
    with contextlib.suppress(OSError):
        Path("/proc/sys/vm/drop_caches").write_text("1\n")
    for path in inputs:
        if path.is_dir():
            subprocess.run(["sh", "-c", f"tar -C {path} -cf - . | cat > /dev/null"],
                           check=True)
        else:
            subprocess.run(["cat", str(path)], check=True, stdout=subprocess.DEVNULL)


def size_of(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def tree_size(root: Path) -> tuple[int, int]:
    """The apparent bytes of a tree's regular files and its number of entries, as a save
    sees them: symbolic links not followed, other file systems not entered."""
    device = root.stat().st_dev
    total = entries = 0
    for top, dirs, files in os.walk(root):
        kept = []
        for name in dirs:
            st = os.lstat(os.path.join(top, name))
            entries += 1
            if st.st_dev == device:
                kept.append(name)
        dirs[:] = kept
        for name in files:
            st = os.lstat(os.path.join(top, name))
            entries += 1
            if stat.S_ISREG(st.st_mode):
                total += st.st_size
    return total, entries


def best(runs: list[Run]) -> Run:
    fastest = min(runs, key=lambda r: r.seconds)
    return Run(fastest.seconds, max(r.rss_kib for r in runs))


def _ratios(tool: str, runs: dict[str, list[Run]]) -> tuple[str, str]:
    """tar's time over the tool's: the best of each, and min, median and max of the
    rounds (each round runs every tool side by side, so the machine's drift within a run
    weighs on both alike)."""
    if "tar" not in runs or not runs[tool]:
        return "-", ""
    best_ratio = best(runs["tar"]).seconds / best(runs[tool]).seconds
    rounds = sorted(t.seconds / r.seconds for r, t in zip(runs[tool], runs["tar"],
                                                            strict=True))
    return (f"{best_ratio:.2f}",
            f"{rounds[0]:.2f} {statistics.median(rounds):.2f} {rounds[-1]:.2f}")


def report(kind: str, total: int, tools: list[str], saves: dict[str, list[Run]],
           restores: dict[str, list[Run]], sizes: dict[str, int]) -> None:
    print()
    print(f"{'tool':<12} {'save MB/s':>10} {'x tar':>6} {'restore MB/s':>13} {'x tar':>6}"
          f" {'stored MB':>10} {'RSS save MB':>12} {'RSS restore MB':>15}")
    for tool in tools:
        save = best(saves[tool])
        restored = restores[tool]
        restore = best(restored) if restored else None
        r_rate = f"{total / restore.seconds / 1e6:.0f}" if restore else "-"
        r_rss = f"{restore.rss_kib / 1024:.0f}" if restore else "-"
        print(f"{tool:<12} {total / save.seconds / 1e6:>10.0f} {_ratios(tool, saves)[0]:>6}"
              f" {r_rate:>13} {_ratios(tool, restores)[0]:>6} {sizes[tool] / 1e6:>10.0f}"
              f" {save.rss_kib / 1024:>12.0f} {r_rss:>15}")
    if "tar" not in saves:
        return
    # The figures the issue asks for, one line each: grep "^ratio".
    print()
    for tool in tools:
        if tool == "tar":
            continue
        s_best, s_rounds = _ratios(tool, saves)
        line = f"ratio {kind} {tool}: save {s_best} x tar (rounds min median max {s_rounds})"
        r_best, r_rounds = _ratios(tool, restores)
        if r_rounds:
            line += f", restore {r_best} x tar ({r_rounds})"
        print(line + f", peak RSS of the save {best(saves[tool]).rss_kib / 1024:.0f} MB")


def main() -> int:
    reexec_in_venv(__file__)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scale", type=float, default=0.1, help="1.0 is about 2 GB (default 0.1)")
    ap.add_argument("--files", type=int, help="small files (default 200000 x scale)")
    ap.add_argument("--small-max", type=int,
                    help="largest small file (default 8192; 200 with --tiny)")
    ap.add_argument("--large", type=int, help="large files (default 12 x scale, at least 1)")
    ap.add_argument("--large-size", type=int, default=100 << 20)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--tools", default="resurgo,resurgo-age,tar,restic,borg",
                    help="resurgo (at each --levels), resurgo-age (encrypted, first level), "
                         "tar, restic, borg")
    ap.add_argument("--levels", default="2,3",
                    help="zstd levels of resurgo's rows: its default (2), and tar's (3) for the "
                         "same-level comparison")
    ap.add_argument("--workdir", type=Path,
                    help="default: a RAM-backed ext4 (an image in /dev/shm on a loop device),"
                         " so the shared disk's noise does not swamp the programs' own cost")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--writers", type=int, help="resurgo's writer processes (default: cpus)")
    ap.add_argument("--tiny", action="store_true",
                    help="the tiny-files tree: --files 1000000 --small-max 200 --large 0")
    ap.add_argument("--tree", type=Path,
                    help="measure this existing tree (read only) instead of a generated one")
    ap.add_argument("--no-restore", action="store_true", help="measure the saves only")
    args = ap.parse_args()
    if args.tiny and args.tree is not None:
        ap.error("--tiny and --tree each choose the tree: give one")
    if args.tiny:
        files = args.files if args.files is not None else 1_000_000
        large = args.large if args.large is not None else 0
        small_max = args.small_max if args.small_max is not None else 200
    else:
        files = args.files if args.files is not None else int(200_000 * args.scale)
        large = args.large if args.large is not None else max(1, round(12 * args.scale))
        small_max = args.small_max if args.small_max is not None else 8192
    given: tuple[int, int] | None = None
    tree: Path | None = args.tree
    if tree is not None:
        if not tree.is_dir():
            ap.error(f"--tree {tree}: not a directory")
        tree = tree.resolve()
        given = tree_size(tree)
    kind = "real-tree" if given else "tiny-files" if args.tiny else "generated"
    ram: tuple[Path, str] | None = None
    if args.workdir is None:
        work = Path(tempfile.mkdtemp(prefix="resurgo-bench-"))
        if given is not None:
            data, entries = given
            # One restored copy at a time and the archives, each entry an inode (and
            # a block: most files of a system are small).
            ram = ram_ext4(work, 3 * data + entries * 4096 + (2 << 30), 2 * entries + 100_000)
        else:
            data = files * small_max // 2 + large * args.large_size
            # The tree and one restored copy at a time, each file an inode.
            ram = ram_ext4(work, 4 * data + files * 8192 + (2 << 30),
                           3 * (files + large) + 100_000)
    else:
        work = args.workdir
        if tree is not None and tree.is_relative_to(work.resolve()):
            ap.error("--tree must not be inside --workdir (the work directory is emptied)")
    levels = [int(x) for x in args.levels.split(",")]
    tools = []
    for t in args.tools.split(","):
        if t == "resurgo":
            tools += [f"resurgo-z{level}" for level in levels]
        elif t:
            tools.append(t)
    for tool, program in (("restic", "restic"), ("borg", "borg"), ("resurgo-age", "age")):
        if tool in tools and shutil.which(program) is None:
            print(f"# {tool}: {program} is not installed, skipped")
            tools.remove(tool)
    src, dst, out = tree or work / "src", work / "dst", work / "out"
    try:
        if given is not None:
            total, entries = given
        elif not src.exists():
            print(f"# generating {files} small files and {large} large ones in {src}")
            src.mkdir(parents=True)
            total = generate(src, files, small_max, large, args.large_size, seed=1)
            entries = files + large
        else:
            total, entries = tree_size(src)
        print(f"# {kind} tree {src}: {total / 1e6:.0f} MB in {entries} entries; "
              f"cpus: {os.cpu_count()}")
        warm(src)
        out.mkdir(exist_ok=True)
        key = work / "age.key"
        recipient = ""
        if "resurgo-age" in tools:
            if not key.exists():
                subprocess.run(["age-keygen", "-o", str(key)], check=True, capture_output=True)
            recipient = subprocess.run(["age-keygen", "-y", str(key)], check=True,
                                       capture_output=True, text=True).stdout.strip()
        env = {"RESTIC_PASSWORD": SECRET, "BORG_PASSPHRASE": SECRET,
               "RESTIC_CACHE_DIR": str(work / "restic-cache"),
               "BORG_BASE_DIR": str(work / "borg-base")}
        all_saves: dict[str, list[Run]] = {tool: [] for tool in tools}
        all_restores: dict[str, list[Run]] = {tool: [] for tool in tools}
        sizes: dict[str, int] = {}
        restoring = not args.no_restore

        def restore(runs: list[Run], inputs: list[Path], argv: list[str], *,
                    cwd: Path | None = None, shell: bool = False) -> None:
            if restoring:
                fresh(dst)
                warm(*inputs)
                runs.append(measure(argv, env=env, cwd=cwd, shell=shell))

        # Round robin: each repetition runs every tool once, so that a change of load on
        # a shared machine weighs on all of them alike.
        for _ in range(args.repeat):
            for tool in tools:
                warm(src)
                saves = all_saves[tool]
                restores = all_restores[tool]
                stored = 0
                if tool.startswith("resurgo"):
                    archive, manifest = out / "bench.arc", out / "bench.manifest"
                    level = tool.removeprefix("resurgo-z") if "-z" in tool else str(levels[0])
                    fresh(out)
                    saves.append(measure([sys.executable, "-c", RESURGO_SAVE, str(src),
                                          str(archive), str(manifest), level,
                                          recipient if tool == "resurgo-age" else ""]))
                    stored = size_of(archive) + size_of(manifest)
                    restore(restores, [archive, manifest],
                            [sys.executable, "-c", RESURGO_RESTORE, str(dst), str(archive),
                             str(manifest), str(key) if tool == "resurgo-age" else "",
                             str(args.writers or "")])
                elif tool == "tar":
                    archive = out / "bench.tar.zst"
                    fresh(out)
                    saves.append(measure([f"tar -C {src} --one-file-system -cf - . "
                                          f"| zstd -T0 -q -c > {archive}"], shell=True))
                    stored = size_of(archive)
                    restore(restores, [archive], [f"zstd -dc {archive} | tar -C {dst} -xf -"],
                            shell=True)
                elif tool == "restic":
                    repo = out / "restic"
                    fresh(out)
                    subprocess.run(["restic", "init", "-q", "--repo", str(repo)], check=True,
                                   env={**os.environ, **env}, capture_output=True)
                    saves.append(measure(["restic", "backup", "-q", "--one-file-system",
                                          "--repo", str(repo), "."], env=env, cwd=src))
                    stored = size_of(repo)
                    restore(restores, [repo], ["restic", "restore", "-q", "latest", "--repo",
                                               str(repo), "--target", str(dst)])
                elif tool == "borg":
                    repo = out / "borg"
                    fresh(out)
                    subprocess.run(["borg", "init", "-e", "repokey-blake2", str(repo)],
                                   check=True, env={**os.environ, **env}, capture_output=True)
                    saves.append(measure(["borg", "create", "--one-file-system",
                                          f"{repo}::bench", "."], env=env, cwd=src))
                    stored = size_of(repo)
                    restore(restores, [repo], ["borg", "extract", f"{repo}::bench"], cwd=dst)
                restored = f", restore {restores[-1].seconds:.2f} s" if restores else ""
                print(f"#   {tool}: save {saves[-1].seconds:.2f} s{restored}", flush=True)
                sizes[tool] = stored
        report(kind, total, tools, all_saves, all_restores, sizes)
    finally:
        if ram is not None:
            subprocess.run(["umount", str(work)], check=False)
            subprocess.run(["losetup", "-d", ram[1]], check=False)
            ram[0].unlink()
            work.rmdir()
        elif not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"# kept {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
