"""A package-aware set recovered by the rescue (vm tier): the packages' twins read from the
pool beside the set and written into the new disk by the rescue's own extraction.

1. host: the vm tier's Debian tree on a loop disk (GPT, one ext4 root), made its own a
   little (a package file changed, local xattrs and an ACL on another, an owner and mode
   changed on a third, files of no package), walked; then `resurgo save --packages pool
   --sign-key KEY` of it to a set disk (ext4, resurgo/<host>/ with the pool in
   resurgo/<host>/pool: its packages downloaded with apt-get, their twins made);
2. qemu: the run's kernel-root rescue (trusting KEY; its kernel and initramfs booted
   directly), unattended, `resurgo.args="--no-finalize --json"` (the description is of a
   loop disk on this host: no boot loader to make; JSON progress, every 5 s and once at
   the end of each piece shown, where a plain line comes every 30 s: the restore takes
   about 25 s), with the set disk and a blank virtio disk 25 % larger; it checks the
   pool's twins before touching the disk, recovers, powers off;
3. host: the recovered filesystem, walked, is the system as saved, entry for entry
   (content and metadata); the rescue's progress counted the packages' files with the
   archive's entries.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.support import cli
from tests.support.consts import ROOT_X86_64
from tests.support.loopdisks import Rig, require_loop_support
from tests.support.trees import assert_same_trees, system_snapshot, write
from tests.vm import guest
from tests.vm.cycle import RESCUE_TIMEOUT
from tests.vm.rescue_images import Keys, direct_boot, rescue_lines, unattended_args

pytestmark = pytest.mark.vm

MiB = guest.MiB
SIZE = 1600 * MiB
SET_DISK_SIZE = 1024 * MiB
HOST = "pool-rescue"


def _its_own(root: Path) -> None:
    write(root / "etc/hostname", f"{HOST}\n".encode())
    with open(root / "usr/share/doc/hostname/copyright", "ab") as f:
        f.write(b"# changed here\n")
    tagged = root / "usr/share/doc/dpkg/copyright"
    os.setxattr(tagged, "user.origin", b"local")
    subprocess.run(["setfacl", "-m", "u:1000:r", str(tagged)], check=True)
    os.chown(root / "usr/share/doc/bash/RBASH", 1000, 1000)
    os.chmod(root / "usr/share/doc/bash/RBASH", 0o600)
    write(root / "srv/data/report.txt", os.urandom(20000), mode=0o640, owner=(1000, 1000))


def test_the_rescue_recovers_a_package_aware_set_from_its_pool(
        tmp_path: Path, tree: Path, keys: Keys, kernel_root_files: Path) -> None:
    require_loop_support()
    for tool in ("setfacl", "apt-get"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool}")
    set_disk = guest.blank_disk(tmp_path / "set.img", SET_DISK_SIZE)
    guest.run_cmd(["mkfs.ext4", "-q", "-F", "-L", "backup", set_disk])
    rig = Rig(tmp_path)
    try:
        table = (f"label: gpt\nlabel-id: {str(uuid.uuid4()).upper()}\n"
                 f"1 : start=2048, size={(SIZE // MiB - 2) * 2048}, type={ROOT_X86_64}, "
                 'name="root"\n')
        disk = rig.disk("source", SIZE, table=table)
        rig.sh("mkfs.ext4", "-q", "-L", "root", disk.part(1))
        root = rig.mount(disk.part(1), tmp_path / "system")
        subprocess.run(["cp", "-a", f"{tree}/.", str(root)], check=True)
        _its_own(root)
        expected = system_snapshot(root, tmp_path / "view")
        setdev = rig.sh("losetup", "--find", "--show", str(set_disk)).strip()
        try:
            medium = rig.mount(setdev, tmp_path / "setdisk") / "resurgo" / HOST
            medium.mkdir(parents=True)
            r = cli.spawn("save", "--to", medium, "--root", root, "--no-rescue",
                          "--packages", "pool", "--sign-key", keys.trusted_path, "--json",
                          state=tmp_path / "state", timeout=1200)
            assert r.returncode == 0, r.output
            report = r.json()
            assert report["packages"]["files"] > 5000, report["packages"]
            assert report["packages"]["twins_added"] > 100, report["packages"]
            set_id = report["set"]["id"]
        finally:
            rig.cleanup()
            subprocess.run(["losetup", "-d", setdev], check=False)
    finally:
        rig.cleanup()

    target = guest.blank_disk(tmp_path / "target.img", SIZE * 5 // 4)
    args = unattended_args(set_id, "resurgo.wait=5", 'resurgo.args="--no-finalize --json"')
    result = guest.boot(
        guest.Drive(target, serial="pool-target"),
        [guest.Drive(set_disk, serial="pool-set")],
        timeout=RESCUE_TIMEOUT,
        serial_log=tmp_path / "rescue.log",
        extra_args=direct_boot(kernel_root_files, args),
    )
    lines = rescue_lines(result.text)
    detail = "\n".join(lines[-60:]) or guest._tail(result.text, 60)
    assert not result.timed_out, f"the rescue did not power off:\n{detail}"
    assert "recovery finished: ok" in lines, guest._tail(result.text, 120)
    # the restore's progress counts the files the packages' twins give with the archive's
    # entries: its total is every entry, and it counted past what the archive holds
    progress = [p for p in _json_lines(result.text)
                if p.get("type") == "progress" and p.get("what") == "restoring /"]
    assert progress and progress[-1]["done"], detail
    (unit,) = report["units"]
    archived, pooled = unit["entries"], report["packages"]["files"]
    assert pooled > 5000 and unit["pooled"] == pooled, unit
    assert {p["entries_total"] for p in progress} == {archived + pooled}, progress
    assert progress[-1]["entries_done"] == archived + pooled, progress[-1]
    assert any(archived < p["entries_done"] for p in progress), progress

    with guest.loop_device(target, read_only=True) as dev:
        guest.run_cmd(["partx", "-a", dev])
        part = Path(f"{dev}p1")
        guest._wait_for_nodes([part])
        with guest.mounted(part, tmp_path / "got", options=["ro"]) as got:
            assert_same_trees(expected, system_snapshot(got, tmp_path / "view-got"))


def _json_lines(text: str) -> list[dict[str, object]]:
    """The JSON objects the console shows one to a line (resurgo's progress under --json)."""
    out = []
    for line in text.replace("\r", "\n").splitlines():
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                out.append(value)
    return out
