"""`resurgo recover --layout-only` of md, LUKS and LVM, inside a qemu guest (vm tier).

The build host has no md and no device-mapper, so the stack is recreated in a guest (see
guest.py) on three blank virtio disks, from a description written here:

    vdb (GPT)  p1 300 MiB ─┬─ md0 RAID1 "guest:data" ── LUKS2 "cryptdata" ── PV ─┐
    vdc (GPT)  p1 300 MiB ─┘                                                     ├─ vg0
               p2 160 MiB ───────────────────────────────────────────────── PV ─┘
    vdb        p2 128 MiB ── ext4 /boot
    vdd (MBR)  p1 128 MiB ── LUKS1 "cryptvar" ── ext4 /var
               p2  64 MiB ── swap
    vg0 (4 MiB extents): root linear 120 MiB ext4 /, swap linear 32 MiB,
                         pool thin-pool 64 MiB ── thin1 thin 128 MiB virtual, ext4 /srv

In the guest: plan; recover; recover again (a no-op); everything taken down as by a
reboot (unmounted, LVs deactivated, LUKS closed, md stopped) and recover again (it brings
the stack up and changes nothing); then the disks are wiped and recover is killed -9
twice (right after creating the md array, and right after the first LV) and run again.

Then those disks become the old disks still attached, and the same description is
recovered onto three more blank disks (vde, vdf, vdg): while the old stack is active
(its md0, its LUKS mappings, its vg0) the plan refuses, naming each, and nothing is
written; once it is taken down the recovery succeeds beside it with a new md UUID and new
PV UUIDs where the old disks show the saved ones (vg0 keeps its name: LVM sees the new
PVs alone), and the old disks are byte-for-byte as they were.
The tool output after each stage comes back on the exchange disk and is checked here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from resurgo import fileformat
from resurgo.apply import verify
from resurgo.model import (
    Bootloader,
    BootloaderKind,
    Description,
    Disk,
    ExtOptions,
    Filesystem,
    Firmware,
    FormatInfo,
    FsType,
    LogicalVolume,
    LuksVolume,
    LvType,
    Mount,
    OsRelease,
    Partition,
    PartitionTable,
    PhysicalVolume,
    RaidArray,
    Swap,
    SystemInfo,
    TableLabel,
    VolumeGroup,
    VolumeState,
)
from resurgo.plan.model import TableEntry, TableParams
from resurgo.probe import filesystems, mounts, partitions
from tests.support import cli
from tests.support.disks import disk as fake_disk
from tests.support.disks import fake_disks
from tests.vm import guest

MiB = 1 << 20
REPO = Path(__file__).resolve().parents[2]
RAID = "a19d880f-05fc-4d3b-a006-743f0f84911e"
LINUX = "0fc63daf-8483-4772-8e79-3d69d8477de4"
LVM = "e6d6d379-f507-44c2-a23c-238f2a3df928"
# A throw-away key for throw-away volumes; the test checks it is never written anywhere.
KEY = "resurgo-guest-throwaway-key-7f3a"
DISK_SIZES = {"vdb": 512 * MiB, "vdc": 512 * MiB, "vdd": 256 * MiB}
# The disks the description is recovered onto again, beside the first ones.
AGAIN = {"vdb": "vde", "vdc": "vdf", "vdd": "vdg"}

MD_UUID = "3a1b2c3d:4e5f6071:8293a4b5:c6d7e8f9"
LUKS2_UUID = "5d0c7e1a-2b3c-4d5e-8f90-a1b2c3d4e5f6"
LUKS1_UUID = "6e1d8f2b-3c4d-4e5f-9a01-b2c3d4e5f6a7"
PV1_UUID = "Guest1-PV01-aaaa-bbbb-cccc-dddd-eeeeee"
PV2_UUID = "Guest2-PV02-ffff-gggg-hhhh-iiii-jjjjjj"
FS_UUID = {
    "boot": "11111111-0000-4000-8000-000000000001",
    "root": "11111111-0000-4000-8000-000000000002",
    "srv": "11111111-0000-4000-8000-000000000003",
    "var": "11111111-0000-4000-8000-000000000004",
}
SWAP_UUID = {
    "lv": "22222222-0000-4000-8000-000000000001",
    "part": "22222222-0000-4000-8000-000000000002",
}


def part(disk: Disk, number: int, start_mib: int, size_mib: int, type_: str,
         name: str | None = None) -> Partition:
    kname = disk.path.removeprefix("/dev/")
    return Partition(
        id=f"part.{kname}{number}", disk=disk.id, number=number, start=start_mib * 2048,
        size=size_mib * 2048, sector_size=512, type=type_, path=f"{disk.path}{number}",
        uuid=f"33333333-0000-4000-8000-{ord(kname[-1]):06x}{number:06x}"
        if disk.table and disk.table.label == TableLabel.GPT else None,
        name=name,
    )


def ext4(fid: str, device: str, mountpoint: str, label: str, size: int) -> Filesystem:
    return Filesystem(
        id=fid, device=device, type=FsType.EXT4, uuid=FS_UUID[label], label=label, size=size,
        ext=ExtOptions(block_size=4096, inode_size=256,
                       features=("has_journal", "ext_attr", "resize_inode", "dir_index",
                                 "filetype", "extent", "64bit", "flex_bg", "sparse_super",
                                 "large_file", "huge_file", "dir_nlink", "extra_isize",
                                 "metadata_csum")),
        mounts=(Mount(mountpoint),),
        state=VolumeState(mounted=True, used_bytes=4 * MiB),
    )


def description() -> Description:
    def disk(name: str, label: TableLabel, table_id: str) -> Disk:
        return Disk(id=f"disk.{name}", path=f"/dev/{name}", size=DISK_SIZES[name],
                    logical_sector_size=512, physical_sector_size=512, transport="virtio",
                    critical=name == "vdb", table=PartitionTable(label, table_id))

    vdb = disk("vdb", TableLabel.GPT, "44444444-0000-4000-8000-00000000000b")
    vdc = disk("vdc", TableLabel.GPT, "44444444-0000-4000-8000-00000000000c")
    vdd = disk("vdd", TableLabel.DOS, "0x5ca1ab1e")
    vdb1 = part(vdb, 1, 1, 300, RAID, "raid-a")
    vdb2 = part(vdb, 2, 301, 128, LINUX, "boot")
    vdc1 = part(vdc, 1, 1, 300, RAID, "raid-b")
    vdc2 = part(vdc, 2, 301, 160, LVM, "pv")
    vdd1 = part(vdd, 1, 1, 128, "83")
    vdd2 = part(vdd, 2, 129, 64, "82")
    md0 = RaidArray(id="md.md0", path="/dev/md0", level="raid1", metadata="1.2", uuid=MD_UUID,
                    members=(vdb1.id, vdc1.id), size=298 * MiB, name="guest:data")
    luks2 = LuksVolume(id="luks.md0", device=md0.id, version=2, uuid=LUKS2_UUID,
                       cipher="aes-xts-plain64", key_size=512, name="cryptdata",
                       pbkdf="pbkdf2", hash="sha256", label="data", sector_size=512,
                       size=282 * MiB)
    luks1 = LuksVolume(id="luks.vdd1", device=vdd1.id, version=1, uuid=LUKS1_UUID,
                       cipher="aes-xts-plain64", key_size=512, name="cryptvar",
                       hash="sha256", size=126 * MiB)
    vg = VolumeGroup(id="vg.vg0", name="vg0", uuid="Guest0-VG00-kkkk-llll-mmmm-nnnn-oooooo",
                     extent_size=4 * MiB, size=436 * MiB)
    pvs = (
        PhysicalVolume(id="pv.dm-0", device=luks2.id, uuid=PV1_UUID, volume_group=vg.id,
                       size=282 * MiB),
        PhysicalVolume(id="pv.vdc2", device=vdc2.id, uuid=PV2_UUID, volume_group=vg.id,
                       size=160 * MiB),
    )

    def lv(name: str, size_mib: int, type_: LvType, pool: str | None = None) -> LogicalVolume:
        return LogicalVolume(id=f"lv.vg0.{name}", volume_group=vg.id, name=name,
                             uuid=f"{name:0>6}-LV00-aaaa-bbbb-cccc-dddd-eeeeee",
                             size=size_mib * MiB, type=type_, path=f"/dev/vg0/{name}",
                             pool=pool)

    root = lv("root", 120, LvType.LINEAR)
    swap = lv("swap", 32, LvType.LINEAR)
    pool = lv("pool", 64, LvType.THIN_POOL)
    thin1 = lv("thin1", 128, LvType.THIN, pool=pool.id)
    fss = (
        ext4("fs.vdb2", vdb2.id, "/boot", "boot", 128 * MiB),
        ext4("fs.dm-root", root.id, "/", "root", 120 * MiB),
        ext4("fs.dm-thin1", thin1.id, "/srv", "srv", 128 * MiB),
        ext4("fs.dm-var", luks1.id, "/var", "var", 126 * MiB),
    )
    return Description(
        format=FormatInfo("1.0", "0.1.0", "2026-01-01T00:00:00Z", "guest"),
        system=SystemInfo(
            hostname="guest", machine_id="2" * 32, architecture="x86_64",
            firmware=Firmware.BIOS, os_release=OsRelease("debian", "12"), kernel="6.1.0",
            bootloader=Bootloader(BootloaderKind.NONE), system_volume="fs.dm-root",
            boot_volume="fs.vdb2"),
        disks=(vdb, vdc, vdd),
        partitions=(vdb1, vdb2, vdc1, vdc2, vdd1, vdd2),
        raid_arrays=(md0,),
        luks_volumes=(luks2, luks1),
        physical_volumes=pvs,
        volume_groups=(vg,),
        logical_volumes=(root, swap, pool, thin1),
        filesystems=fss,
        swaps=(
            Swap(id="swap.dm-swap", size=32 * MiB, device=swap.id, uuid=SWAP_UUID["lv"],
                 label="lvswap"),
            Swap(id="swap.vdd2", size=64 * MiB, device=vdd2.id, uuid=SWAP_UUID["part"],
                 label="partswap"),
        ),
    )


PLAN_ARGS = (
    '--from "$X/description.toml" --root /mnt/resurgo '
    + " ".join(f"--target /dev/{d} --map disk.{d}=/dev/{d}" for d in DISK_SIZES)
    + ' --key-file luks.md0="$X/key" --key-file luks.vdd1="$X/key"'
)

AGAIN_ARGS = (
    '--from "$X/description.toml" --root /mnt/again '
    + " ".join(f"--target /dev/{n} --map disk.{d}=/dev/{n}" for d, n in AGAIN.items())
    + ' --key-file luks.md0="$X/key" --key-file luks.vdd1="$X/key"'
)

GUEST_SCRIPT = r"""#!/bin/sh
# Runs INSIDE the guest (tests/vm/test_recover_guest.py).
set -u
export X="$RESURGO_EXCHANGE"
export PYTHONPATH="$X/py"
export RESURGO_STATE_DIR=/run/resurgo-state
ARGS='@ARGS@'
AGAIN='@AGAIN@'
step() { echo "== $(cut -d' ' -f1 /proc/uptime) $*"; }
recover() {  # name [env...]
    name=$1; shift
    eval env "$@" python3 -m resurgo recover --json --layout-only --yes $ARGS \
        >"$X/$name.json" 2>"$X/$name.err"
    echo $? >"$X/$name.rc"
}
collect() {
    d="$X/$1"; mkdir -p "$d/blkid"
    for disk in vdb vdc vdd; do sfdisk --json /dev/$disk >"$d/sfdisk-$disk.json"; done
    mdadm --detail --export /dev/md0 >"$d/md0.env" 2>&1
    for dev in /dev/vdb2 /dev/md0 /dev/vdd1 /dev/vdd2 /dev/vdc2 /dev/mapper/cryptdata \
            /dev/mapper/cryptvar /dev/mapper/vg0-root /dev/mapper/vg0-swap \
            /dev/mapper/vg0-thin1; do
        blkid -p -o export "$dev" >"$d/blkid/$(basename "$dev").env" 2>&1
    done
    lvm fullreport --reportformat json --units b --nosuffix >"$d/lvm.json" 2>"$d/lvm.err"
    cat /proc/self/mountinfo >"$d/mountinfo.txt"
}
teardown() {
    umount -R /mnt/resurgo 2>/dev/null
    lvm vgchange --activate n vg0 >/dev/null 2>&1
    cryptsetup close cryptdata 2>/dev/null
    cryptsetup close cryptvar 2>/dev/null
    mdadm --stop /dev/md0 >/dev/null 2>&1
    udevadm settle
}
stall_kill() {  # name N
    name=$1
    sh -c "exec python3 -m resurgo recover --json --layout-only --debug-stop-after $2 \
        --yes $ARGS" >"$X/$name.json" 2>"$X/$name.err" &
    pid=$!
    n=0
    until grep -q "test stall after" "$X/$name.err"; do
        n=$((n + 1)); [ $n -gt 3000 ] && break
        kill -0 $pid 2>/dev/null || break
        sleep 0.1
    done
    kill -9 $pid; wait $pid 2>/dev/null
    echo killed >"$X/$name.rc"
}

step plan
eval python3 -m resurgo plan --json $ARGS >"$X/plan.json" 2>"$X/plan.err"
echo $? >"$X/plan.rc"
step first run
recover run1
collect after-run1
step rerun
recover run2
step as after a reboot
teardown
recover run3
collect after-run3
step wiped, killed twice
teardown
for p in /dev/vdb1 /dev/vdb2 /dev/vdc1 /dev/vdc2 /dev/vdd1 /dev/vdd2; do
    wipefs -a -q "$p"
done
wipefs -a -q /dev/vdb /dev/vdc /dev/vdd
rm -rf /run/resurgo-state
udevadm settle
stall_kill run4 "$(cat "$X/stall-md")"
stall_kill run5 "$(cat "$X/stall-lv")"
recover run6
collect after-run6
cp -r /run/resurgo-state "$X/state"

step old disks attached and active
eval python3 -m resurgo plan --json $AGAIN >"$X/plan-busy.json" 2>"$X/plan-busy.err"
echo $? >"$X/plan-busy.rc"
md5sum /dev/vde /dev/vdf /dev/vdg >"$X/new-before.md5"
eval python3 -m resurgo recover --json --layout-only --yes $AGAIN \
    >"$X/run-busy.json" 2>"$X/run-busy.err"
echo $? >"$X/run-busy.rc"
md5sum /dev/vde /dev/vdf /dev/vdg >"$X/new-after.md5"
step old disks attached, taken down
teardown
md5sum /dev/vdb /dev/vdc /dev/vdd >"$X/old-before.md5"
eval python3 -m resurgo recover --json --layout-only --yes $AGAIN \
    >"$X/run7.json" 2>"$X/run7.err"
echo $? >"$X/run7.rc"
mdadm --detail --export /dev/md0 >"$X/md0-again.env" 2>&1
blkid -p -o export /dev/vdf2 >"$X/vdf2-again.env" 2>&1
umount -R /mnt/again 2>/dev/null
udevadm settle
md5sum /dev/vdb /dev/vdc /dev/vdd >"$X/old-after.md5"
step done
"""


def script() -> str:
    return GUEST_SCRIPT.replace("@ARGS@", PLAN_ARGS).replace("@AGAIN@", AGAIN_ARGS)


def host_plan(desc_path: Path, tmp_path: Path) -> dict[str, Any]:
    """The plan as the guest will compute it, from the same disks made up on the host."""
    disks = [fake_disk(d, s, transport="virtio", serial=f"rsg-{d}")
             for d, s in DISK_SIZES.items()]
    argv = ["plan", "--json", "--from", str(desc_path), "--root", "/mnt/resurgo"]
    for d in DISK_SIZES:
        argv += ["--target", f"/dev/{d}", "--map", f"disk.{d}=/dev/{d}"]
    key = tmp_path / "key"
    key.write_text(KEY)
    argv += ["--key-file", f"luks.md0={key}", "--key-file", f"luks.vdd1={key}"]
    with pytest.MonkeyPatch.context() as mp:
        fake_disks(mp, disks)
        proc = cli.run(*argv)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    plan: dict[str, Any] = json.loads(proc.stdout)
    return plan


def test_the_guest_description_plans_on_the_host(tmp_path: Path) -> None:
    """Cheap and everywhere: the description is valid and plans; the vm test relies on it."""
    path = tmp_path / "description.toml"
    fileformat.write(description(), path)
    plan = host_plan(path, tmp_path)
    kinds = [a["kind"] for a in plan["actions"]]
    for kind in ("md-create", "luks-format", "luks-open", "pv-create", "vg-create",
                 "lv-create", "mkfs", "mkswap", "mount"):
        assert kind in kinds
    assert kinds.index("md-create") < kinds.index("luks-format") < kinds.index("pv-create")


# ---------------------------------------------------------------- checking what came back


def statuses(run: dict[str, Any]) -> dict[str, str]:
    return {r["id"]: r["status"] for r in run["outcome"]["results"]}


def table_params(plan: dict[str, Any]) -> dict[str, TableParams]:
    out = {}
    for a in plan["actions"]:
        if a["kind"] != "partition-table":
            continue
        p = dict(a["params"])
        p["partitions"] = tuple(TableEntry(**e) for e in p["partitions"])
        p["label"] = TableLabel(p["label"])
        out[p["device"]] = TableParams(**p)
    return out


def check_state(d: Path, plan: dict[str, Any], desc: Description) -> None:
    for device, t in table_params(plan).items():
        name = device.removeprefix("/dev/")
        parsed = partitions.parse_sfdisk_json((d / f"sfdisk-{name}.json").read_text())
        assert verify.table_differences(parsed, t) == [], name
    md = verify.parse_export((d / "md0.env").read_text())
    assert md.get("MD_LEVEL") == "raid1", md
    assert md.get("MD_UUID") == MD_UUID
    assert md.get("MD_NAME") == "guest:data"
    assert md.get("MD_METADATA") == "1.2"

    def blkid(name: str) -> dict[str, str]:
        return filesystems.parse_blkid_export((d / "blkid" / f"{name}.env").read_text())

    assert verify.signature_differences(blkid("md0"), "md0", "crypto_LUKS", LUKS2_UUID,
                                        "data", "2") == []
    assert verify.signature_differences(blkid("vdd1"), "vdd1", "crypto_LUKS", LUKS1_UUID,
                                        version="1") == []
    assert verify.signature_differences(blkid("cryptdata"), "cryptdata", "LVM2_member",
                                        PV1_UUID) == []
    assert verify.signature_differences(blkid("vdc2"), "vdc2", "LVM2_member", PV2_UUID) == []
    for name, label in (("vdb2", "boot"), ("vg0-root", "root"), ("vg0-thin1", "srv"),
                        ("cryptvar", "var")):
        assert verify.signature_differences(blkid(name), name, "ext4", FS_UUID[label],
                                            label) == []
    assert verify.signature_differences(blkid("vg0-swap"), "swap", "swap", SWAP_UUID["lv"],
                                        "lvswap") == []
    assert verify.signature_differences(blkid("vdd2"), "vdd2", "swap", SWAP_UUID["part"],
                                        "partswap") == []

    report = json.loads((d / "lvm.json").read_text())["report"]
    vgs = [row for r in report for row in r.get("vg", [])]
    assert [(v["vg_name"], v["vg_extent_size"], v["pv_count"]) for v in vgs] == [
        ("vg0", str(4 * MiB), "2")]
    pvs = {row["pv_uuid"] for r in report for row in r.get("pv", [])}
    assert pvs == {PV1_UUID, PV2_UUID}
    lvs = {row["lv_name"]: row for r in report for row in r.get("lv", [])}
    planned = {a["params"]["name"]: a["params"] for a in plan["actions"]
               if a["kind"] == "lv-create"}
    assert set(planned) <= set(lvs)
    assert lvs["root"]["lv_layout"] == "linear" and lvs["swap"]["lv_layout"] == "linear"
    assert "thin" in lvs["thin1"]["lv_layout"] and "pool" in lvs["pool"]["lv_layout"]
    assert int(lvs["thin1"]["lv_size"]) == 128 * MiB
    for name, params in planned.items():
        if params["type"] != "thin":
            assert int(lvs[name]["lv_size"]) == params["extents"] * 4 * MiB, name

    entries = mounts.parse_mountinfo((d / "mountinfo.txt").read_text())
    under = {rel: e.source for rel, e in mounts.under_root(entries, "/mnt/resurgo")}
    assert under == {"/": "/dev/mapper/vg0-root", "/boot": "/dev/vdb2",
                     "/srv": "/dev/mapper/vg0-thin1", "/var": "/dev/mapper/cryptvar"}


@pytest.mark.vm
def test_md_luks_lvm_are_recreated_resumably_in_a_guest(tmp_path: Path) -> None:
    import blake3
    import tomli_w

    desc = description()
    desc_path = tmp_path / "description.toml"
    fileformat.write(desc, desc_path)
    plan = host_plan(desc_path, tmp_path)
    ids = [a["id"] for a in plan["actions"]]
    stall_md = ids.index("md-create:md.md0") + 1
    stall_lv = next(n for n, i in enumerate(ids, 1) if i.startswith("lv-create:"))
    files: dict[str, guest.ExchangeFile] = {
        "description.toml": desc_path,
        "key": KEY,
        "stall-md": str(stall_md),
        "stall-lv": str(stall_lv),
        "py/resurgo": REPO / "src" / "resurgo",
        "py/tomli_w": Path(tomli_w.__file__).parent,
        "py/blake3": Path(blake3.__file__).parent,
    }
    sizes = {**DISK_SIZES, **{n: DISK_SIZES[d] for d, n in AGAIN.items()}}
    disks = [guest.Drive(guest.blank_disk(tmp_path / f"{d}.img", s), serial=f"rsg-{d}")
             for d, s in sizes.items()]
    run = guest.run_in_guest(script(), image=guest.guest_disk(tmp_path), workdir=tmp_path,
                             files=files, extra_disks=disks, timeout=2100).check()
    x = run.exchange

    def result(name: str) -> dict[str, Any]:
        rc = (x / f"{name}.rc").read_text().strip()
        assert rc == "0", f"{name}: exit {rc}\n{(x / f'{name}.err').read_text()}"
        data: dict[str, Any] = json.loads((x / f"{name}.json").read_text())
        return data

    assert (x / "plan.rc").read_text().strip() == "0", (x / "plan.err").read_text()
    guest_plan = json.loads((x / "plan.json").read_text())
    assert guest_plan["hash"] == plan["hash"]

    run1 = result("run1")
    assert set(statuses(run1).values()) == {"done"}, statuses(run1)
    check_state(x / "after-run1", plan, desc)

    run2 = result("run2")
    assert set(statuses(run2).values()) == {"verified"}, statuses(run2)

    # After a "reboot": the arrays, mappings and LVs are brought up, nothing is rewritten.
    run3 = statuses(result("run3"))
    rewritten = {i for i, s in run3.items() if s == "done" and i.split(":")[0] in (
        "wipe", "partition-table", "md-create", "luks-format", "pv-create", "vg-create",
        "lv-create", "mkfs", "mkswap")}
    assert rewritten == set(), run3
    assert {run3["luks-open:luks.md0"], run3["luks-open:luks.vdd1"]} == {"done"}
    assert run3["md-create:md.md0"] == "verified"
    check_state(x / "after-run3", plan, desc)

    # Killed twice after a fresh start, then run to the end.
    assert (x / "run4.rc").read_text().strip() == "killed"
    assert f"test stall after {ids[stall_md - 1]}" in (x / "run4.err").read_text()
    assert f"test stall after {ids[stall_lv - 1]}" in (x / "run5.err").read_text()
    run6 = statuses(result("run6"))
    assert all(run6[i] == "verified" for i in ids[: stall_md - 1]), run6
    assert run6[ids[stall_md - 1]] == "verified"
    assert run6[ids[stall_lv - 1]] == "done"
    check_state(x / "after-run6", plan, desc)

    # The old disks still attached, their stack active: every name the recovery must
    # create again is in use there; refused before anything is written.
    assert (x / "plan-busy.rc").read_text().strip() == "3", (x / "plan-busy.err").read_text()
    busy = json.loads((x / "plan-busy.json").read_text())["failures"]
    assert {f["check"] for f in busy} == {"identity-in-use"}, busy
    assert {f["subject"] for f in busy} == {"vg.vg0", "luks.md0", "luks.vdd1", "md.md0"}
    assert (x / "run-busy.rc").read_text().strip() == "3", (x / "run-busy.err").read_text()
    assert (x / "new-after.md5").read_text() == (x / "new-before.md5").read_text()

    # Taken down, still attached: the recovery succeeds beside them.
    run7 = result("run7")
    assert set(statuses(run7).values()) == {"done"}, statuses(run7)
    decided = {d["record"]: d for d in run7["plan"]["identities"]}
    md_new, pv_new = decided["md.md0"], decided["pv.vdc2"]
    assert not md_new["kept"] and set(md_new["seen_on"]) == {"/dev/vdb1", "/dev/vdc1"}
    assert not pv_new["kept"] and pv_new["seen_on"] == ["/dev/vdc2"]
    assert decided["vg.vg0"]["kept"] and decided["luks.vdd1"]["kept"]
    md_env = verify.parse_export((x / "md0-again.env").read_text())
    assert md_env["MD_UUID"] == md_new["new"] != MD_UUID
    assert filesystems.parse_blkid_export((x / "vdf2-again.env").read_text())["UUID"] == \
        pv_new["new"]
    old_before = (x / "old-before.md5").read_text()
    assert len(old_before.splitlines()) == 3
    assert (x / "old-after.md5").read_text() == old_before

    # The key never left memory and stdin.
    for path in x.rglob("*"):
        if path.is_file() and path.name != "key":
            assert KEY.encode() not in path.read_bytes(), path
