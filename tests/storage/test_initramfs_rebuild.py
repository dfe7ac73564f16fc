"""save --initramfs rebuild on a real filesystem: each installed kernel's initramfs is left
out of the set and recorded in its description; the plan shows finalize making it, and a
recovery without finalize restores everything else, says the system has no initramfs, and
verifies clean.

The tree is a small system that has what the save looks for (a vmlinuz with its
/lib/modules, initramfs-tools, an image for each kernel, one of them a symbolic link that
is archived as it is); making an image for real needs a bootable system in a chroot, which
the BIOS whole cycle of the vm tier does.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from resurgo import fileformat
from resurgo.demo import umount_below
from resurgo.errors import ExitCode
from resurgo.model import InitramfsImage
from tests.support import cli
from tests.support.consts import MIB
from tests.support.loopdisks import Rig
from tests.support.trees import write

pytestmark = pytest.mark.storage

OLD = "6.1.0-27-amd64"
NEW = "6.1.0-28-amd64"
LINKED = "6.1.0-26-amd64"


def _system(root: Path) -> dict[str, bytes]:
    write(root / "etc/hostname", b"smallboot\n")
    write(root / "usr/sbin/update-initramfs", b"#!/bin/sh\n", mode=0o755)
    write(root / "etc/initramfs-tools/initramfs.conf", b"MODULES=most\n")
    images = {}
    for kernel in (OLD, NEW, LINKED):
        write(root / f"boot/vmlinuz-{kernel}", os.urandom(4096))
        write(root / f"lib/modules/{kernel}/modules.dep", b"")
    for kernel in (OLD, NEW):
        images[kernel] = os.urandom(3 * MIB)
        write(root / f"boot/initrd.img-{kernel}", images[kernel])
    os.symlink(f"initrd.img-{NEW}", root / f"boot/initrd.img-{LINKED}")
    # An image of no installed kernel (its modules gone) is the machine's file: archived.
    write(root / "boot/initrd.img-5.10.0-9-amd64", b"stale")
    write(root / "srv/data", os.urandom(100_000))
    return images


def test_initramfs_left_out_made_at_recovery(rig: Rig, tmp_path: Path, mnt: Path) -> None:
    disk = rig.disk("smallboot", 96 * MIB)
    rig.sh("mkfs.ext4", "-q", "-L", "smallroot", disk.path)
    root = rig.mount(disk.path, tmp_path / "root")
    images = _system(root)
    sets = tmp_path / "sets"
    r = cli.spawn("save", "--to", sets, "--root", root, "--no-rescue", "--no-catalog",
                  "--initramfs", "rebuild", "--json", state=tmp_path / "state")
    assert r.returncode == 0, r.output
    saved = r.json()
    left = [f"/boot/initrd.img-{OLD}", f"/boot/initrd.img-{NEW}"]
    assert saved["initramfs"] == {"left_out": left, "bytes": 6 * MIB}, saved["initramfs"]
    assert f"/boot/initrd.img-{LINKED} is not a regular file: archived" in saved["warnings"]
    assert saved["excluded"] == []
    set_id = saved["set"]["id"]
    desc = fileformat.read(sets / set_id / "description.toml")
    assert desc.format.version == "1.3"
    assert desc.initramfs_made_at_recovery() == (
        InitramfsImage(OLD, left[0]), InitramfsImage(NEW, left[1]))
    [unit] = saved["units"]
    assert unit["data_bytes"] < 1 * MIB, unit  # the images' 6 MiB are not in the archive

    r = cli.spawn("save", "--to", sets, "--root", root, "--no-rescue",
                  "--initramfs", "rebuild", "--no-catalog", state=tmp_path / "state")
    assert r.returncode == 0 and "left out, made at recovery" in r.stdout, r.output
    umount_below(root)

    target = rig.disk("smallboot-target", 96 * MIB)
    r = cli.spawn("plan", "--from", sets, "--set", set_id, "--target", target.path, "--json",
                  state=tmp_path / "state")
    assert r.returncode == 0, r.output
    argvs = [c["argv"] for c in r.json()["finalize"]["commands"]]
    assert ["update-initramfs", "-c", "-k", OLD] in argvs, argvs
    assert ["update-initramfs", "-c", "-k", NEW] in argvs, argvs

    r = cli.spawn("recover", "--from", sets, "--set", set_id, "--target", target.path,
                  "--yes", "--root", mnt, "--no-finalize", "--json", state=tmp_path / "state")
    assert r.returncode == 0, r.output
    out = r.json()
    assert out["verify"]["ok"] is True, out["verify"]
    assert any("will not boot until `resurgo finalize`" in w
               for w in out["plan"]["warnings"]), out["plan"]["warnings"]
    for kernel in images:
        assert not (mnt / f"boot/initrd.img-{kernel}").exists()
    assert os.readlink(mnt / f"boot/initrd.img-{LINKED}") == f"initrd.img-{NEW}"
    assert (mnt / "boot/initrd.img-5.10.0-9-amd64").read_bytes() == b"stale"
    assert (mnt / f"boot/vmlinuz-{NEW}").is_file()


def test_initramfs_rebuild_of_a_system_without_a_generator_is_refused_first(
    rig: Rig, tmp_path: Path
) -> None:
    disk = rig.disk("nogen", 32 * MIB)
    rig.sh("mkfs.ext4", "-q", disk.path)
    root = rig.mount(disk.path, tmp_path / "root")
    write(root / "etc/hostname", b"nogen\n")
    sets = tmp_path / "sets"
    r = cli.spawn("save", "--to", sets, "--root", root, "--no-rescue", "--no-catalog",
                  "--initramfs", "rebuild", state=tmp_path / "state")
    assert r.returncode == ExitCode.PRECONDITION, r.output
    assert "neither initramfs-tools nor dracut" in r.stderr, r.output
    assert not sets.exists() or not any(sets.iterdir())
