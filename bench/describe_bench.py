#!/usr/bin/env python3
"""How long ``resurgo describe`` takes, without and with the catalog, and where the time goes.

    python3 bench/describe_bench.py [--root /] [--repeat 3] [--workers 2,8,16] [--drop-caches]

Three parts, each timed ``--repeat`` times (the minimum and the median are shown):

1. the probes of system.py, hardware.py and catalog.py called directly;
2. the catalog's file check with the package manager's digest only and with
   SHA-256 added, for each worker count of ``--workers``;
3. the command itself, ``python -m resurgo describe --root R --output F`` with
   ``--no-catalog`` and without it.

Timings are with a warm page cache unless ``--drop-caches`` (root only) empties it
before each catalog run, which shows the cold, I/O-bound case. Nothing else on the
machine is changed; outputs go to a temporary directory that is removed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _venv import reexec_in_venv  # bench/, the script's directory

SRC = Path(__file__).resolve().parent.parent / "src"
sys.path.insert(0, str(SRC))

from resurgo import run  # noqa: E402
from resurgo.errors import ResurgoError  # noqa: E402
from resurgo.probe import catalog, dpkg, hardware, system  # noqa: E402


def timed(
    label: str, fn: Callable[[], object], repeat: int, before: Callable[[], None] | None = None
) -> object:
    times = []
    result: object = None
    for _ in range(repeat):
        if before is not None:
            before()
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    print(
        f"  {label:<52} min {min(times):8.2f} s   median {statistics.median(times):8.2f} s",
        flush=True,
    )
    return result


def drop_caches() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def probes(root: Path, repeat: int) -> None:
    print("probes, called directly:")
    facts = timed("system.probe_system", lambda: system.probe_system(root), repeat)
    assert isinstance(facts, system.SystemFacts)
    timed(
        "system.probe_bootloader (no disks)",
        lambda: system.probe_bootloader(root, facts.firmware, [], [], None),
        repeat,
    )
    cfg = timed("system.capture_config", lambda: system.capture_config(root, []), repeat)
    mods = timed("hardware.KernelModules.load", lambda: hardware.KernelModules.load(root), repeat)
    assert isinstance(mods, hardware.KernelModules)
    drivers = timed(
        "hardware.probe_drivers", lambda: hardware.probe_drivers(modules=mods, warnings=[]), repeat
    )
    timed(
        "hardware.required_modules",
        lambda: hardware.required_modules(
            ["ext4", "vfat", "xfs", "btrfs"], ["raid1", "luks", "lvm"], mods
        ),
        repeat,
    )
    print(
        f"  ({len(cfg) if isinstance(cfg, list) else '?'} configuration files, "
        f"{len(drivers) if isinstance(drivers, list) else '?'} drivers)"
    )


def catalog_parts(root: Path, repeat: int, workers: list[int], cold: bool) -> None:
    manager = catalog.package_manager(root)
    print(
        f"catalog ({manager or 'no package database'}"
        f"{', page cache dropped before each run' if cold else ', warm page cache'}):"
    )
    if manager != "dpkg":
        if manager == "rpm":
            timed(
                "catalog.collect",
                lambda: catalog.collect(root),
                repeat,
                drop_caches if cold else None,
            )
        return
    packages = dpkg.read_status(root) or []
    owned = timed(
        "read status, md5sums, diversions", lambda: catalog.dpkg_owned(root, packages), repeat
    )
    assert isinstance(owned, list)
    total = size = 0
    for n in workers:
        for sha in (False, True):

            def check(n: int = n, sha: bool = sha) -> list[catalog.CatalogEntry]:
                return catalog.verify(root, owned, workers=n, sha256=sha)

            label = f"check {len(owned)} files, {n} threads, md5{' + sha256' if sha else ''}"
            found = timed(label, check, repeat, drop_caches if cold else None)
            assert isinstance(found, list)
            total = len(found)
            size = sum(e.size for e in found)
    print(f"  ({total} unchanged files, {size / 2**20:.0f} MiB hashed)")
    entries = catalog.verify(root, owned)
    with tempfile.TemporaryDirectory(prefix="resurgo-bench-") as tmp:
        path = Path(tmp) / "catalog.zst"
        timed("write catalog.zst (zstd)", lambda: catalog.write_file(path, "dpkg", entries), repeat)
        print(f"  (catalog.zst: {path.stat().st_size / 2**20:.1f} MiB)")
        timed("read_catalog", lambda: sum(1 for _ in catalog.read_catalog(path)), repeat)


def command(root: Path, repeat: int, cold: bool) -> None:
    print("the command, python -m resurgo describe:")
    env = {"PYTHONPATH": str(SRC)}
    with tempfile.TemporaryDirectory(prefix="resurgo-bench-") as tmp:
        out = Path(tmp) / "description.toml"
        base = [
            sys.executable,
            "-m",
            "resurgo",
            "describe",
            "--root",
            str(root),
            "--output",
            str(out),
        ]
        for label, argv in (("--no-catalog", [*base, "--no-catalog"]), ("with catalog", base)):

            def once(argv: list[str] = argv) -> None:
                run.run(argv, env=env)

            try:
                timed(f"describe {label}", once, repeat, drop_caches if cold else None)
            except ResurgoError as e:
                print(f"  describe {label}: failed: {e}")


def main() -> int:
    reexec_in_venv(__file__)
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", type=Path, default=Path("/"))
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument(
        "--workers",
        default=f"2,{min(32, 4 * (os.cpu_count() or 1))}",
        help="comma-separated thread counts for the catalog check",
    )
    p.add_argument(
        "--drop-caches",
        action="store_true",
        help="empty the page cache before each catalog run (root only)",
    )
    p.add_argument("--skip-command", action="store_true", help="leave out part 3")
    args = p.parse_args()
    workers = [int(w) for w in args.workers.split(",") if w]
    print(f"root {args.root}, {os.cpu_count()} CPUs, repeat {args.repeat}")
    probes(args.root, args.repeat)
    catalog_parts(args.root, args.repeat, workers, args.drop_caches)
    if not args.skip_command:
        command(args.root, args.repeat, args.drop_caches)
    return 0


if __name__ == "__main__":
    sys.exit(main())
