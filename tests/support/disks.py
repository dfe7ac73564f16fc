"""Made-up actual disks for `resurgo plan` and `recover`, with neither root nor disks.

The commands read this machine's disks through `resurgo.probe.actual.read_actual_disks`
and nowhere else: `fake_disks` replaces that one function for a test run in process,
`spawn_with_disks` for a process of its own (a hash seed of its own). Only the disks
given are seen: never this machine's.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest

from resurgo.machine import ActualDisk
from resurgo.probe import actual
from tests.support.cli import Result, clean_env


def disk(name: str, size: int, lss: int = 512, **fields: Any) -> ActualDisk:
    """/dev/NAME of SIZE bytes; FIELDS as ActualDisk takes them (lists become tuples)."""
    more: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
    return ActualDisk(path=f"/dev/{name}", kname=name, size=size, logical_sector_size=lss,
                      **more)


class FakeDisks:
    """What read_actual_disks returns while it is replaced; `reads` lists the paths each
    call was asked to keep out (the set, key files), so a test sees it was called."""

    def __init__(self, disks: Iterable[ActualDisk]) -> None:
        self.disks = list(disks)
        self.reads: list[tuple[Path, ...]] = []

    def read(self, recovery_paths: Sequence[Path] = (), **_: object) -> list[ActualDisk]:
        self.reads.append(tuple(recovery_paths))
        return list(self.disks)


def fake_disks(monkeypatch: pytest.MonkeyPatch, disks: Iterable[ActualDisk]) -> FakeDisks:
    """Until the test ends, plan and recover in this process see DISKS (and may be
    given others through the result's `disks`)."""
    fake = FakeDisks(disks)
    monkeypatch.setattr(actual, "read_actual_disks", fake.read)
    return fake


# Run in the spawned interpreter: the disks from argv[1], then resurgo with the rest.
_BOOT = """\
import json, sys
from resurgo.cli.main import main
from resurgo.machine import ActualDisk
from resurgo.probe import actual
disks = [ActualDisk(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})
         for d in json.loads(sys.argv[1])]
actual.read_actual_disks = lambda *args, **kwargs: list(disks)
sys.exit(main(sys.argv[2:]))
"""


def spawn_with_disks(
    disks: Iterable[ActualDisk], *argv: str | Path, env: dict[str, str] | None = None,
    timeout: float = 120,
) -> Result:
    """`resurgo ARGV` in a process of its own (the environment of cli.spawn plus ENV)
    that sees DISKS alone."""
    data = json.dumps([dataclasses.asdict(d) for d in disks])
    proc = subprocess.run(
        [sys.executable, "-c", _BOOT, data, *map(str, argv)],
        capture_output=True, text=True, env=clean_env(**(env or {})), timeout=timeout,
        check=False, stdin=subprocess.DEVNULL, start_new_session=True,
    )
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    return Result(proc.returncode, proc.stdout, proc.stderr)
