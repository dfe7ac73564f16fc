"""A save on a real filesystem tells its progress as JSON lines (on standard error, its
JSON report alone on standard output) and leaves its report, 0600, with its result.

The interval and the quiet time are set to nothing (resurgo.progress's defaults, which
the unit tests cover with a fake clock): every batch the engine tells is a line.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from resurgo import progress, reports
from tests.support import cli
from tests.support.loopdisks import Rig
from tests.support.trees import write

pytestmark = pytest.mark.storage

MiB = 1 << 20


def test_a_save_tells_json_progress_lines_and_keeps_its_report(
    rig: Rig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(progress, "QUIET", 0.0)
    monkeypatch.setattr(progress, "JSON_EVERY", 0.0)
    disk = rig.disk("progsys", 64 * MiB)
    rig.sh("mkfs.ext4", "-q", "-L", "progroot", disk.path)
    root = rig.mount(disk.path, tmp_path / "root")
    write(root / "etc/hostname", b"progsys\n")
    data = 0
    for n in range(300):
        data += len(write(root / f"srv/d{n % 7}/f{n}", b"x" * (n * 37)).read_bytes())
    write(root / "srv/large", os.urandom(3 * MiB))
    data += 3 * MiB + len(b"progsys\n")

    kept = tmp_path / "reports"
    r = cli.run("save", "--to", tmp_path / "sets", "--root", root, "--no-rescue",
                "--no-catalog", "--json", "--report-dir", kept, state=tmp_path / "state")
    assert r.returncode == 0, r.output
    saved = r.json()  # standard output: the report alone, as without progress

    lines = [json.loads(line) for line in r.stderr.splitlines() if line.startswith("{")]
    assert len(lines) >= 5, r.stderr  # 300 files in batches of 64, the large file's chunks
    assert all(o["type"] == "progress" and o["step"] == "save" and o["what"] == "saving /"
               for o in lines)
    done = [o for o in lines if o["done"]]
    assert done == [lines[-1]]
    last = lines[-1]
    [unit] = saved["units"]
    assert last["entries_done"] == unit["entries"]
    assert last["bytes_done"] == unit["data_bytes"] == data
    # The totals are the filesystem's use (statvfs): an estimate, of the same order.
    assert last["entries_total"] >= unit["entries"]
    assert last["bytes_total"] >= data
    assert [o["entries_done"] for o in lines] == sorted(o["entries_done"] for o in lines)

    [path] = reports.reports(kept, "save")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(kept.stat().st_mode) == 0o700
    report = json.loads(path.read_text())
    assert report["command"] == "save" and report["exit_code"] == 0 and report["ok"]
    assert report["result"] == saved
