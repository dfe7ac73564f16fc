#!/usr/bin/env python3
"""Benchmark (not a test): what telling the progress costs a save of many tiny files.

Saves one tree of --files small files (in /dev/shm: the programs' own cost, not the
disk's) with save_tree, in turns without progress and with it as `resurgo save` tells
it (the engine's tally into Advanced events, the events into a meter writing to
/dev/null), --repeat times each, in one process; prints the best and median of each and
their ratio. Example::

    python3 bench/progress_bench.py --files 200000 --repeat 5
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _venv import reexec_in_venv  # bench/, the script's directory

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from resurgo.cli.progress import shown
from resurgo.engine import save_tree
from resurgo.recovery.events import Step, advancing


class Null:
    def write(self, data: bytes) -> int:
        return len(data)


def tree(where: Path, files: int) -> None:
    for n in range(files):
        d = where / f"d{n // 1000}"
        if n % 1000 == 0:
            d.mkdir()
        (d / f"f{n}").write_bytes(b"x" * (n % 200))


def once(src: Path, told: bool) -> float:
    start = time.perf_counter()
    if told:
        with open(os.devnull, "w") as null:
            saved, sys.stderr = sys.stderr, null
            try:
                with shown(False, lambda event: None) as on_event:
                    save_tree(src, Null(), Null(), set_id="bench",
                              progress=advancing(on_event, Step.SAVE, "bench", None))
            finally:
                sys.stderr = saved
    else:
        save_tree(src, Null(), Null(), set_id="bench")
    return time.perf_counter() - start


def main() -> int:
    reexec_in_venv(__file__)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="resurgo-progress-", dir="/dev/shm"))
    try:
        tree(work, args.files)
        times: dict[bool, list[float]] = {False: [], True: []}
        once(work, False)  # a warm cache for both
        for n in range(args.repeat):
            # In turns, and each first every other round: neither gains from going first.
            for told in ((False, True) if n % 2 == 0 else (True, False)):
                times[told].append(once(work, told))
        for told, label in ((False, "without progress"), (True, "with progress")):
            t = times[told]
            print(f"{label:17} best {min(t):.3f} s  median {statistics.median(t):.3f} s")
        print(f"with/without: best {min(times[True]) / min(times[False]):.3f}, median "
              f"{statistics.median(times[True]) / statistics.median(times[False]):.3f}")
    finally:
        shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
