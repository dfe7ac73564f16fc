"""`resurgo plan` on real loop disks: the actual disks read from /sys, nothing written.

Each target disk is checksummed before and after: plan must not change a byte.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from resurgo import digest, fileformat
from resurgo.model import (
    Bootloader,
    BootloaderKind,
    Command,
    Description,
    Disk,
    ExtOptions,
    Filesystem,
    Firmware,
    FormatInfo,
    FsType,
    Mount,
    OsRelease,
    Partition,
    PartitionTable,
    Swap,
    SystemInfo,
    TableLabel,
    VolumeState,
)
from tests.support import cli
from tests.support.consts import LINUX, MIB, SWAP
from tests.support.loopdisks import Loop, Rig

pytestmark = pytest.mark.storage

SIZE = 256 * MIB


def saved_description() -> Description:
    """A 256 MiB GPT disk: / ext4 of 200 MiB with 40 MiB used, then 32 MiB of swap."""
    disk = Disk(
        id="disk.sda",
        path="/dev/sda",
        size=SIZE,
        logical_sector_size=512,
        physical_sector_size=512,
        critical=True,
        table=PartitionTable(TableLabel.GPT, "5b0e1c2d-3f4a-4b5c-8d6e-7f8091a2b3c4"),
    )
    root = Partition(
        id="part.sda1",
        disk=disk.id,
        number=1,
        start=2048,
        size=200 * 2048,
        sector_size=512,
        type=LINUX,
        uuid="6c1f2d3e-4a5b-4c6d-9e7f-8091a2b3c4d5",
    )
    sw = Partition(
        id="part.sda2",
        disk=disk.id,
        number=2,
        start=202 * 2048,
        size=32 * 2048,
        sector_size=512,
        type=SWAP,
        uuid="7d2a3e4f-5b6c-4d7e-8f90-a1b2c3d4e5f6",
    )
    fs = Filesystem(
        id="fs.sda1",
        device=root.id,
        type=FsType.EXT4,
        uuid="8e3b4f5a-6c7d-4e8f-9a0b-c1d2e3f4a5b6",
        label="root",
        size=200 * MIB,
        ext=ExtOptions(block_size=4096, inode_size=256, features=("has_journal", "extent")),
        mounts=(Mount("/"),),
        state=VolumeState(mounted=True, used_bytes=40 * MIB),
    )
    return Description(
        format=FormatInfo("1.0", "0.1.0", "2026-01-01T00:00:00Z", "storagehost"),
        system=SystemInfo(
            hostname="storagehost",
            machine_id="1" * 32,
            architecture="x86_64",
            firmware=Firmware.BIOS,
            os_release=OsRelease("debian", "12"),
            kernel="6.1.0",
            bootloader=Bootloader(BootloaderKind.NONE),
            system_volume=fs.id,
            boot_volume=fs.id,
        ),
        disks=(disk,),
        partitions=(root, sw),
        filesystems=(fs,),
        swaps=(
            Swap(
                id="swap.sda2",
                size=32 * MIB,
                device=sw.id,
                uuid="9f4c5a6b-7d8e-4f90-a1b2-c3d4e5f6a7b8",
            ),
        ),
    )


def checksum(loop: Loop) -> str:
    h = hashlib.sha256()
    with open(loop.path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def plan(src: Path, *targets: str) -> tuple[int, dict[str, Any]]:
    """plan reads and writes nothing: it runs in this process, on this machine's disks."""
    argv: list[str | Path] = ["plan", "--json", "--from", src]
    for t in targets:
        argv += ["--target", t]
    r = cli.run(*argv)
    return r.returncode, json.loads(r.stdout)


@pytest.fixture
def src(tmp_path: Path) -> Path:
    path = tmp_path / "description.toml"
    fileformat.write(saved_description(), path)
    return path


def occupied(rig: Rig, name: str, size: int, sector_size: int = 512) -> Loop:
    """A loop disk with an old table and an ext4 on it: something plan must not touch."""
    loop = rig.disk(name, size, sector_size=sector_size, table="label: dos\n,,83\n")
    rig.sh("mkfs.ext4", "-q", "-F", loop.part(1))
    return loop


def test_same_size_exits_0_and_touches_nothing(rig: Rig, src: Path) -> None:
    loop = occupied(rig, "same", SIZE)
    before = checksum(loop)
    code, data = plan(src, loop.path)
    assert code == 0, data["failures"]
    assert checksum(loop) == before
    assert data["matches"][0]["path"] == loop.path
    assert data["matches"][0]["size"] == SIZE
    parts = data["layouts"][0]["partitions"]
    assert [(p["start"], p["size"]) for p in parts] == [(2048, 200 * 2048), (202 * 2048, 32 * 2048)]
    assert {w for a in data["actions"] for w in a["writes"]} == {loop.path}


def test_4kn_target_is_read_from_sys_and_planned_in_its_sectors(rig: Rig, src: Path) -> None:
    loop = occupied(rig, "fourk", SIZE, sector_size=4096)
    before = checksum(loop)
    code, data = plan(src, loop.path)
    assert code == 0, data["failures"]
    assert checksum(loop) == before
    assert data["matches"][0]["logical_sector_size"] == 4096
    parts = data["layouts"][0]["partitions"]
    assert [(p["start"], p["size"]) for p in parts] == [(256, 200 * 256), (202 * 256, 32 * 256)]


def test_too_small_exits_3_and_touches_nothing(rig: Rig, src: Path) -> None:
    loop = occupied(rig, "small", 64 * MIB)
    before = checksum(loop)
    code, data = plan(src, loop.path)
    assert code == 3
    assert [f["check"] for f in data["failures"]] == ["target-too-small"]
    assert data["actions"] == []
    assert checksum(loop) == before


def test_mounted_target_is_in_use(rig: Rig, src: Path, tmp_path: Path) -> None:
    loop = occupied(rig, "busy", SIZE)
    rig.mount(loop.part(1), tmp_path / "mnt")
    code, data = plan(src, loop.path)
    assert code == 3
    failure = next(f for f in data["failures"] if f["check"] == "target-in-use")
    assert f"{loop.kname}p1 on {tmp_path / 'mnt'}" in failure["message"]


def test_active_swap_on_target_is_in_use(rig: Rig, src: Path) -> None:
    loop = rig.disk("swapping", SIZE, table="label: dos\n,,82\n")
    rig.sh("mkswap", loop.part(1))
    rig.swapon(loop.part(1), 1)
    code, data = plan(src, loop.path)
    assert code == 3
    failure = next(f for f in data["failures"] if f["check"] == "target-in-use")
    assert f"active swap: {loop.part(1)}" in failure["message"]


# ------------------------------------------------- recover runs only the commands it showed


def set_hook(set_dir: Path, words: str, marker: Path) -> None:
    """Give the set's description a command writing WORDS to MARKER (outside the restored
    trees, which are checked against their manifests), as anyone who can write to the
    medium can: the description, its digest and the index agree again afterwards."""
    path = set_dir / "description.toml"
    desc = fileformat.read(path)
    hook = Command(90, "/bin/sh", ("-c", f"echo {words} > {marker}"),
                   description="a harmless-looking hook")
    commands = tuple(c for c in desc.commands if c.seq != hook.seq)
    fileformat.write(dataclasses.replace(desc, commands=(*commands, hook)), path)
    raw = path.read_bytes()
    (set_dir / "description.toml.sha256").write_text(
        f"{hashlib.sha256(raw).hexdigest()}  description.toml\n")
    index = json.loads((set_dir / "set.json").read_text())
    for f in index["files"]:
        if f["name"] in ("description.toml", "description.toml.sha256"):
            data = (set_dir / f["name"]).read_bytes()
            f["size"], f["blake3"] = len(data), digest.hex_of(data)
    (set_dir / "set.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


def test_recover_refuses_a_command_changed_since_the_plan_before_writing(
    rig: Rig, tmp_path: Path, mnt: Path
) -> None:
    source = rig.disk("source", SIZE, table="label: gpt\n,200M,L\n")
    rig.sh("mkfs.ext4", "-q", "-F", source.part(1))
    root = rig.mount(source.part(1), tmp_path / "root")
    (root / "etc").mkdir()
    (root / "etc" / "hostname").write_text("cmdhost\n")
    sets, state = tmp_path / "sets", tmp_path / "state"
    saved = cli.spawn("save", "--to", sets, "--root", root, "--no-rescue", state=state)
    assert saved.returncode == 0, saved.stdout + saved.stderr
    [set_dir] = sets.iterdir()
    target = rig.disk("target", SIZE)
    where = ["--from", sets, "--target", target.path, "--root", mnt, "--no-finalize"]

    marker = tmp_path / "marker"
    set_hook(set_dir, "approved", marker)
    approved = cli.spawn("plan", "--json", *where, state=state)
    assert approved.returncode == 0, approved.stdout + approved.stderr
    shown = json.loads(approved.stdout)
    assert shown["commands"][-1]["command"] == f"/bin/sh -c 'echo approved > {marker}'"

    # One byte of the command changes on the medium after the plan was approved.
    set_hook(set_dir, "approvee", marker)
    before = checksum(target)
    refused = cli.spawn("recover", *where, "--plan-hash", shown["hash"], state=state)
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert "nothing was written" in refused.stderr
    # The plan it refused shows the command as it is now, before anything is done.
    assert f"/bin/sh -c 'echo approvee > {marker}'" in refused.stdout
    assert "recreating the layout" not in refused.stdout
    assert checksum(target) == before
    assert not marker.exists() and (not mnt.exists() or not any(mnt.iterdir()))

    # The plan of the set as it is now runs, that command included, as shown.
    again = json.loads(cli.spawn("plan", "--json", *where, state=state).stdout)
    assert again["hash"] != shown["hash"] and again["actions"] == shown["actions"]
    done = cli.spawn("recover", *where, "--plan-hash", again["hash"], state=state)
    assert done.returncode == 0, done.stdout + done.stderr
    assert marker.read_text() == "approvee\n"
    assert (mnt / "etc" / "hostname").read_text() == "cmdhost\n"
