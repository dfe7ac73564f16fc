"""status and check on a set saved from real loop disks, through the CLI.

A GPT loop disk with one ext4 partition (the system, a small tree) and room left, saved
to a directory without a rescue image. check --read-data passes the set and records it;
status then says current (exit 0), shows the check and flags the missing rescue image,
and writes its metrics. A copy of the set with one archive byte flipped is named damaged
by check --read-data (exit 5; without --read-data the sizes alone pass it), a copy
without its manifest is named incomplete (exit 5). A partition added to the described
disk makes status say stale, naming it (exit 1).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from resurgo import run
from resurgo.demo import umount_below
from tests.support import cli
from tests.support.consts import LINUX, MIB
from tests.support.loopdisks import Loop, Rig
from tests.support.trees import write

pytestmark = pytest.mark.storage

HOST = "statushost"


def gpt_one(size_mib: int) -> str:
    return ("label: gpt\nunit: sectors\n\n"
            f"1 : start=2048, size={size_mib * 2048}, type={LINUX}, name=\"root\"\n")


def add_partition(loop: Loop, size_mib: int) -> str:
    """A second partition after the first, made known to the kernel (no udevd here); its
    device path."""
    # The first partition is mounted: sfdisk would refuse to re-read the table.
    run.run(["sfdisk", "--quiet", "--no-reread", "--append", loop.path],
            input=f"size={size_mib * 2048}, type={LINUX}\n")
    run.run(["partx", "-a", "--nr", "2", loop.path])
    node = loop.part(2)
    deadline = time.monotonic() + 10
    while not os.path.exists(node):
        assert time.monotonic() < deadline, f"{node} did not appear"
        time.sleep(0.05)
    return node


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_status_and_check(rig: Rig, tmp_path: Path) -> None:
    disk = rig.disk("status", 64 * MIB, table=gpt_one(24))
    rig.sh("mkfs.ext4", "-q", "-L", "sysroot", disk.part(1))
    root = rig.mount(disk.part(1), tmp_path / "root")
    write(root / "etc/hostname", f"{HOST}\n".encode())
    write(root / "etc/fstab", b"LABEL=sysroot / ext4 defaults 0 1\n")
    for i in range(20):
        write(root / f"srv/data/file{i}", os.urandom(2000 + i))
    sets, state = tmp_path / "sets", tmp_path / "state"
    prom = tmp_path / "textfile" / "resurgo.prom"
    prom.parent.mkdir()
    try:
        saved = cli.spawn("save", "--to", sets, "--root", root, "--no-rescue", "--json",
                          state=state)
        assert saved.returncode == 0, saved.output
        set_id = saved.json()["set"]["id"]

        checked = cli.run("check", "--from", sets, "--read-data", "--state-dir", state)
        assert checked.returncode == 0, checked.output
        assert f"set {set_id} (full, host {HOST}" in checked.stdout
        assert "flagged: saved without its rescue image" in checked.stdout
        assert (state / f"check-{HOST}.json").stat().st_mode & 0o777 == 0o600

        status = cli.run("status", "--from", sets, "--root", root, "--json", "--state-dir",
                         state, "--max-age", "1h", "--prometheus", prom)
        assert status.returncode == 0, status.output
        doc = status.json()
        assert doc["host"] == HOST and doc["set"]["id"] == set_id
        assert doc["current"] is True and doc["differences"] == [] and doc["ok"] is True
        assert doc["set"]["rescue"] is False
        assert doc["last_check"]["ok"] is True
        assert doc["last_check"]["sets"] == [{"id": set_id, "ok": True, "problems": []}]
        metrics = prom.read_text()
        assert f'resurgo_set_current{{host="{HOST}",medium="{sets}"}} 1\n' in metrics
        assert "resurgo_last_check_success{" in metrics
        assert prom.stat().st_mode & 0o777 == 0o644

        # One archive byte flipped: the sizes still match, the digest does not.
        damaged = tmp_path / "damaged"
        shutil.copytree(sets / set_id, damaged / set_id)
        (archive,) = (damaged / set_id / "archives").glob("*.archive")
        flip_byte(archive)
        other_state = tmp_path / "other-state"
        r = cli.run("check", "--from", damaged, "--state-dir", other_state)
        assert r.returncode == 0, r.output
        r = cli.run("check", "--from", damaged, "--read-data", "--state-dir", other_state)
        assert r.returncode == 5, r.output
        assert f"  archives/{archive.name} is damaged: its digest differs" in r.stdout
        record = json.loads((other_state / f"check-{HOST}.json").read_text())
        assert record["ok"] is False

        # A manifest gone.
        missing = tmp_path / "missing"
        shutil.copytree(sets / set_id, missing / set_id)
        (manifest,) = (missing / set_id / "archives").glob("*.manifest")
        manifest.unlink()
        r = cli.run("check", "--from", missing, "--json", "--state-dir", other_state)
        assert r.returncode == 5, r.output
        (found,) = r.json()["sets"]
        assert found["status"] == "damaged"
        assert found["problems"] == [f"archives/{manifest.name} is missing"]

        # A partition added to the described disk: the set no longer describes it.
        added = add_partition(disk, 8)
        r = cli.run("status", "--from", sets, "--root", root, "--state-dir", state,
                    "--prometheus", prom)
        assert r.returncode == 1, r.output
        assert "layout:   STALE" in r.stdout
        assert f"  partition {added} added (8.0 MiB" in r.stdout
        assert f'resurgo_set_current{{host="{HOST}",medium="{sets}"}} 0\n' in prom.read_text()
    finally:
        umount_below(root)
