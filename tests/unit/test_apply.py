"""The pure parts of apply: argv of each action, checks on recorded tool output, the journal,
which uses of a disk are recovery's own, and the planner's mkfs options they rely on; the
executor of each kind, and the executor's loop run with stand-ins that touch no disk."""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from resurgo.apply import commands, confine, execute, executors, inuse, journal, verify
from resurgo.cli.main import build_parser, main
from resurgo.cli.plan import plan_arguments
from resurgo.cli.recover import recover_options
from resurgo.errors import OperationFailed
from resurgo.machine import ActualDisk
from resurgo.model import (
    BtrfsOptions,
    Filesystem,
    FsType,
    LvType,
    PartitionKind,
    TableLabel,
    VfatOptions,
)
from resurgo.plan import filesystems as plan_fs
from resurgo.plan.model import (
    Action,
    ActionKind,
    GrowPolicy,
    LuksFormatParams,
    LuksOpenParams,
    LvParams,
    MdParams,
    MkfsParams,
    MkswapParams,
    MountParams,
    Params,
    Plan,
    PvParams,
    SubvolumeDefaultParams,
    SubvolumeParams,
    TableEntry,
    TableParams,
    VgParams,
    WipeParams,
)
from resurgo.probe import filesystems, mounts, partitions
from resurgo.recovery.recover import RecoverOptions
from tests.support.builders import description

DATA = Path(__file__).resolve().parent.parent / "data"
STORAGE = DATA / "storage"
GUEST = DATA / "guest"


def env_file(path: Path) -> dict[str, str]:
    return filesystems.parse_blkid_export(path.read_text())


# ---------------------------------------------------------------- commands


def md(level: str, **kw: object) -> MdParams:
    base = MdParams(
        array="md.md0",
        device="/dev/md0",
        level=level,
        metadata="1.2",
        uuid="f5d23ef5:62fe463a:3b9eb2d2:84fe31d1",
        members=("/dev/vdb1", "/dev/vdc1"),
        name="resurgo-guest:data",
    )
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


def test_md_raid1_is_created_clean_with_the_saved_identity() -> None:
    argv = commands.md_create(md("raid1"))
    assert argv[:4] == ["mdadm", "--create", "/dev/md0", "--run"]
    assert "--assume-clean" in argv
    assert "--uuid=f5d23ef5:62fe463a:3b9eb2d2:84fe31d1" in argv
    assert "--name=resurgo-guest:data" in argv
    assert {"--metadata=1.2", "--level=raid1", "--raid-devices=2"} <= set(argv)
    assert argv[-2:] == ["/dev/vdb1", "/dev/vdc1"]


def test_md_assembly_takes_the_planned_members_alone() -> None:
    # No configuration file: one naming the old disks' arrays would add their members.
    assert commands.md_assemble(md("raid1")) == [
        "mdadm", "--assemble", "/dev/md0", "--run", "--config=none",
        "--uuid=f5d23ef5:62fe463a:3b9eb2d2:84fe31d1", "/dev/vdb1", "/dev/vdc1"]


def test_lvm_commands_see_the_planned_physical_volumes_alone() -> None:
    argv = commands.lvm_scoped(["lvm", "vgcreate", "--yes", "vg0", "/dev/vdb2"],
                               ["/dev/vdb2", "/dev/mapper/luks-a.b"])
    assert argv[:3] == ["lvm", "vgcreate", "--config"]
    assert argv[4:] == ["--yes", "vg0", "/dev/vdb2"]
    rules = '[ "a|^/dev/vdb2$|", "a|^/dev/mapper/luks-a[.]b$|", "r|.*|" ]'
    assert argv[3] == (f"devices {{ filter = {rules} global_filter = {rules} "
                       "use_devicesfile = 0 }")
    # A name from the description that would end the pattern or the string: refused.
    for bad in ('/dev/mapper/x"y', "/dev/mapper/a|b", "vdb2", "/dev/a b"):
        with pytest.raises(OperationFailed):
            commands.lvm_scoped(["lvm", "pvs"], [bad])


def test_md_raid5_resyncs_and_keeps_its_geometry() -> None:
    argv = commands.md_create(
        md("raid5", members=("/dev/a", "/dev/b", "/dev/c"), spares=("/dev/d",),
           chunk=128 * 1024, layout="left-symmetric", metadata="0.90", name="x"))
    assert "--assume-clean" not in argv
    assert {"--chunk=128K", "--layout=left-symmetric", "--raid-devices=3",
            "--spare-devices=1"} <= set(argv)
    assert not any(a.startswith("--name") for a in argv)  # 0.90 has no name
    assert argv[-4:] == ["/dev/a", "/dev/b", "/dev/c", "/dev/d"]


def test_luks_key_goes_to_stdin_never_argv() -> None:
    p = LuksFormatParams(
        volume="luks.md0", device="/dev/md0", version=2, uuid="57447840-b229-4356-ac3a-"
        "021eafdb8ea2", cipher="aes-xts-plain64", key_size=512, pbkdf="argon2id",
        hash="sha256", label="resurgo-data", subsystem="resurgo-test", sector_size=4096)
    argv = commands.luks_format(p)
    assert argv[:3] == ["cryptsetup", "luksFormat", "--batch-mode"]
    assert {"--type=luks2", "--key-file=-", "--key-size=512", "--cipher=aes-xts-plain64",
            "--pbkdf=argon2id", "--label=resurgo-data", "--sector-size=4096",
            "--uuid=57447840-b229-4356-ac3a-021eafdb8ea2"} <= set(argv)
    assert argv[-1] == "/dev/md0"
    luks1 = commands.luks_format(dataclasses.replace(p, version=1))
    assert "--type=luks1" in luks1
    assert not any(a.startswith(("--pbkdf", "--label", "--subsystem", "--sector-size"))
                   for a in luks1)
    opened = commands.luks_open(LuksOpenParams("luks.md0", "/dev/md0", "cryptdata",
                                               "/dev/mapper/cryptdata"))
    assert opened == ["cryptsetup", "open", "--type=luks", "--key-file=-", "/dev/md0",
                      "cryptdata"]


def lv(type_: LvType, **kw: object) -> LvParams:
    base = LvParams(lv="lv.x", vg_name="vg0", name="x", uuid="u", type=type_, extents=8,
                    device="/dev/mapper/vg0-x")
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


def test_lvcreate_for_each_type() -> None:
    assert commands.lv_create(lv(LvType.LINEAR)) == [
        "lvm", "lvcreate", "--yes", "--name", "x", "--extents", "8", "vg0"]
    striped = commands.lv_create(lv(LvType.STRIPED, stripes=2, stripe_size=65536,
                                    devices=("/dev/a", "/dev/b")))
    assert striped[-5:] == ["--stripesize", "64k", "vg0", "/dev/a", "/dev/b"]
    assert "--stripes" in striped
    pool = commands.lv_create(lv(LvType.THIN_POOL, name="pool"))
    assert pool[pool.index("--type") + 1] == "thin-pool"
    thin = commands.lv_create(lv(LvType.THIN, pool="pool", virtual_size=128 << 20))
    assert thin == ["lvm", "lvcreate", "--yes", "--name", "x", "--type", "thin",
                    "--virtualsize", f"{128 << 20}b", "--thinpool", "pool", "vg0"]
    mirror = commands.lv_create(lv(LvType.RAID1, stripes=2))
    assert mirror[mirror.index("--type") + 1:][:3] == ["raid1", "--mirrors", "1"]


def test_mount_argv() -> None:
    p = MountParams("fs.x", "/dev/vdb2", "/home", "/mnt/resurgo/home", "btrfs",
                    ("subvol=@home",))
    assert commands.mount(p) == ["mount", "-t", "btrfs", "-o", "subvol=@home", "/dev/vdb2",
                                 "/mnt/resurgo/home"]


# ---------------------------------------------------------------- one executor per kind


def one_of_each_kind() -> list[Params]:
    return [
        WipeParams("disk.vdb", "/dev/vdb"),
        TableParams("disk.vdb", "/dev/vdb", TableLabel.GPT, "x", 512, 34, 2000, ()),
        md("raid1", spares=("/dev/vdd1",)),
        LuksFormatParams("luks.md0", "/dev/md0", 2, "u", "aes-xts-plain64", 512),
        LuksOpenParams("luks.md0", "/dev/md0", "cryptdata", "/dev/mapper/cryptdata"),
        PvParams("pv.dm-0", "/dev/mapper/cryptdata", "u", "vg0"),
        VgParams("vg.vg0", "vg0", "u", 4 << 20, ("/dev/mapper/cryptdata", "/dev/vdc2")),
        lv(LvType.LINEAR),
        MkfsParams("fs.x", "/dev/vdb1", FsType.EXT4, "mkfs.ext4", (), 512),
        MkswapParams("swap.x", "/dev/vdb2", ()),
        SubvolumeParams("subvol.x", "fs.x", "/dev/vdb1", "@"),
        SubvolumeDefaultParams("fs.x", "/dev/vdb1", "@"),
        MountParams("fs.x", "/dev/vdb1", "/", "/mnt/resurgo", "ext4"),
    ]


def test_each_kind_of_action_has_its_executor_and_its_kind_from_its_parameters() -> None:
    # No second field that could name another kind than the parameters do.
    assert "kind" not in {f.name for f in dataclasses.fields(Action)}
    seen: dict[ActionKind, executors.ActionExecutor[Params]] = {}
    for p in one_of_each_kind():
        a = Action(id=f"{p.kind}:x", writes=("/dev/vdb",), params=p)
        x = executors.executor(a)
        assert a.kind is p.kind and x.action is a and x.p is p
        seen[a.kind] = x
    assert set(seen) == set(ActionKind)
    assert len({type(x) for x in seen.values()}) == len(ActionKind)
    # What runs its command again on a rerun, and the devices it releases first.
    assert {k for k, x in seen.items() if x.destructive} == {
        ActionKind.WIPE, ActionKind.PARTITION_TABLE, ActionKind.MD_CREATE,
        ActionKind.LUKS_FORMAT, ActionKind.PV_CREATE, ActionKind.VG_CREATE,
        ActionKind.LV_CREATE, ActionKind.MKFS, ActionKind.MKSWAP}
    assert {k: x.releases() for k, x in seen.items() if x.destructive} == {
        ActionKind.WIPE: ("/dev/vdb",),
        ActionKind.PARTITION_TABLE: ("/dev/vdb",),
        ActionKind.MD_CREATE: ("/dev/vdb1", "/dev/vdc1", "/dev/vdd1"),
        ActionKind.LUKS_FORMAT: ("/dev/md0",),
        ActionKind.PV_CREATE: ("/dev/mapper/cryptdata",),
        ActionKind.VG_CREATE: ("/dev/mapper/cryptdata", "/dev/vdc2"),
        ActionKind.LV_CREATE: (),
        ActionKind.MKFS: ("/dev/vdb1",),
        ActionKind.MKSWAP: ("/dev/vdb2",),
    }


# ---------------------------------------------------------------- the loop, the after-action hook


class StandIn(executors.ActionExecutor[Params]):
    """A bring-up action made in a set instead of on a disk."""

    def __init__(self, action: Action, made: set[str]) -> None:
        super().__init__(action, action.params)
        self.made = made

    def run(self, x: executors.Context) -> None:
        self.made.add(self.action.id)

    def check(self, x: executors.Context) -> list[str]:
        return [] if self.action.id in self.made else [f"no {self.action.id}"]


def stand_in_plan(n: int) -> Plan:
    actions = tuple(
        Action(f"mount:fs.{i}:/m{i}", (),
               MountParams(f"fs.{i}", f"/dev/vdb{i}", f"/m{i}", f"/mnt/resurgo/m{i}", "ext4"))
        for i in range(1, n + 1))
    return Plan("h", "2026-12-07T00:00:00Z", GrowPolicy.DEFAULT, "/mnt/resurgo", (), (), (),
                actions, (), (), (), "sha256:" + "0" * 64)


@pytest.fixture
def made(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    made: set[str] = set()
    monkeypatch.setattr(execute, "executor", lambda a: StandIn(a, made))
    # Not this machine's mounts: the loop drops stale ones of the plan's disks.
    monkeypatch.setattr(execute.mounts, "read_mountinfo", lambda: [])
    return made


def journaled(path: Path) -> list[str]:
    return [e["action"] for e in map(json.loads, path.read_text().splitlines()) if "action" in e]


def test_after_action_sees_the_action_made_and_not_yet_journaled(
        tmp_path: Path, made: set[str]) -> None:
    plan = stand_in_plan(3)
    path = tmp_path / "journal.jsonl"
    seen: list[tuple[int, str, bool, list[str]]] = []

    def after(n: int, a: Action) -> None:
        seen.append((n, a.id, a.id in made, journaled(path)))

    outcome = execute.Executor(plan, journal.Journal(path, plan.hash), {},
                               after_action=after).run()
    ids = [a.id for a in plan.actions]
    assert outcome.ok and [r.status for r in outcome.results] == [execute.Status.DONE] * 3
    assert seen == [(1, ids[0], True, []), (2, ids[1], True, ids[:1]),
                    (3, ids[2], True, ids[:2])]
    # Skipped as verified on a rerun: nothing is done, so nothing is reported after.
    seen.clear()
    again = execute.Executor(plan, journal.Journal(path, plan.hash), {}, after_action=after)
    assert {r.status for r in again.run().results} == {execute.Status.VERIFIED}
    assert seen == []


def test_a_run_stopped_after_an_action_resumes_from_the_journal(
        tmp_path: Path, made: set[str]) -> None:
    class Stopped(BaseException):
        pass

    def stop_after_two(n: int, a: Action) -> None:
        if n == 2:
            raise Stopped

    plan = stand_in_plan(3)
    ids = [a.id for a in plan.actions]
    path = tmp_path / "journal.jsonl"
    with pytest.raises(Stopped):
        execute.Executor(plan, journal.Journal(path, plan.hash), {},
                         after_action=stop_after_two).run()
    # The second action was made but not journaled; the third not reached.
    assert made == set(ids[:2]) and journaled(path) == ids[:1]
    outcome = execute.Executor(plan, journal.Journal(path, plan.hash), {}).run()
    assert [r.status for r in outcome.results] == [
        execute.Status.VERIFIED, execute.Status.DONE, execute.Status.DONE]
    assert journaled(path) == ids


def test_the_debug_stop_kills_the_process_after_the_nth_action_only() -> None:
    """What `recover --debug-stop-after N` does, as kill -9 would: no cleanup, no return."""
    code = (
        "from resurgo.apply.crash import killed_after\n"
        "from resurgo.plan.model import Action, WipeParams\n"
        "a = Action('wipe:disk.vdb', ('/dev/vdb',), WipeParams('disk.vdb', '/dev/vdb'))\n"
        "after = killed_after(2)\n"
        "after(1, a)\n"
        "print('after the first', flush=True)\n"
        "try:\n"
        "    after(2, a)\n"
        "finally:\n"
        "    print('cleaned up', flush=True)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert proc.stdout == "after the first\n"
    assert proc.stderr == ("resurgo: killed as by a crash (--debug-stop-after 2): "
                           "test stall after wipe:disk.vdb\n")


def test_the_debug_stop_is_an_option_of_recover_hidden_from_its_help(
        capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    argv = ["recover", "--from", "description.toml", "--layout-only", "--yes"]

    def options(*more: str) -> RecoverOptions:
        args = parser.parse_args([*argv, *more])
        return recover_options(args, plan_arguments(args), description(), interactive=False)

    assert options().after_action is None
    assert options("--debug-stop-after", "3").after_action is not None
    assert main(["recover", "--help"]) == 0
    shown = capsys.readouterr().out
    assert "--journal" in shown and "stop-after" not in shown


# ---------------------------------------------------------------- partition tables


def table_from(parsed: partitions.ParsedTable, device: str) -> TableParams:
    """The plan that the recorded table is the result of."""
    return TableParams(
        disk="disk.x", device=device, label=parsed.table.label, id=parsed.table.id,
        sector_size=parsed.sector_size or 512, first_lba=parsed.table.first_lba or 0,
        last_lba=parsed.table.last_lba or 0,
        partitions=tuple(
            TableEntry(partition=f"part.{e.number}", number=e.number, kind=e.kind,
                       start=e.start, size=e.size, type=e.type, device=e.node, uuid=e.uuid,
                       name=e.name, attrs=e.attrs, bootable=e.bootable)
            for e in parsed.entries),
    )


@pytest.mark.parametrize("name", ["storage/sfdisk-gpt.json", "storage/sfdisk-dos.json",
                                  "storage/sfdisk-gpt-4kn.json", "guest/sfdisk-vdd.json"])
def test_a_table_equal_to_the_plan_has_no_differences(name: str) -> None:
    parsed = partitions.parse_sfdisk_json((DATA / name).read_text())
    assert verify.table_differences(parsed, table_from(parsed, "/dev/x")) == []


def test_table_differences_name_what_differs() -> None:
    parsed = partitions.parse_sfdisk_json((STORAGE / "sfdisk-gpt.json").read_text())
    t = table_from(parsed, "/dev/loop0")
    # Case does not matter in GUIDs.
    lower = dataclasses.replace(t, id=t.id.lower(), partitions=tuple(
        dataclasses.replace(e, type=e.type.lower(), uuid=(e.uuid or "").lower())
        for e in t.partitions))
    assert verify.table_differences(parsed, lower) == []
    first, *rest = t.partitions
    moved = dataclasses.replace(t, id="00000000-0000-0000-0000-000000000000", partitions=(
        dataclasses.replace(first, start=first.start + 8, name="other", attrs="GUID:63"),
        *rest[:-1]))
    found = verify.table_differences(parsed, moved)
    assert found[0] == "table id 11111111-2222-3333-4444-555555555555, not " \
                       "00000000-0000-0000-0000-000000000000"
    assert f"partition {rest[-1].number} is not in the plan" in found
    [p1] = [f for f in found if f.startswith("partition 1:")]
    assert "sectors 2048+65536, not 2056+65536" in p1 and "name 'EFI system', not 'other'" in p1
    assert verify.table_differences(None, t) == ["/dev/loop0 has no partition table"]
    dos = dataclasses.replace(t, label=TableLabel.DOS)
    assert verify.table_differences(parsed, dos) == ["/dev/loop0 has a gpt table, not dos"]


def test_dos_types_and_ids_compare_as_numbers() -> None:
    parsed = partitions.parse_sfdisk_json((GUEST / "sfdisk-vdd.json").read_text())
    t = table_from(parsed, "/dev/vdd")
    t = dataclasses.replace(t, id="0x145F2AE", partitions=tuple(
        dataclasses.replace(e, type="0x" + e.type.upper()) for e in t.partitions))
    assert verify.table_differences(parsed, t) == []
    boot = dataclasses.replace(t, partitions=(
        dataclasses.replace(t.partitions[0], bootable=True), *t.partitions[1:]))
    assert verify.table_differences(parsed, boot) == ["partition 1: not bootable"]


def test_kernel_differences_skip_the_extended_partition() -> None:
    parsed = partitions.parse_sfdisk_json((GUEST / "sfdisk-vdd.json").read_text())
    t = table_from(parsed, "/dev/vdd")
    kernel = {e.number: (e.start * 512, e.size * 512) for e in t.partitions
              if e.kind != PartitionKind.EXTENDED}
    assert verify.kernel_differences(kernel, t) == []
    del kernel[5]
    assert verify.kernel_differences(kernel, t) == [
        f"the kernel's partition 5 is None, not ({675840 * 512}, {131072 * 512})"]


# ---------------------------------------------------------------- signatures, md, LVM


def test_signatures_from_recorded_blkid() -> None:
    luks = env_file(GUEST / "blkid" / "md0.env")
    uuid = "57447840-B229-4356-AC3A-021EAFDB8EA2"
    assert verify.signature_differences(luks, "/dev/md0", "crypto_LUKS", uuid,
                                        version="2") == []
    assert verify.signature_differences(luks, "/dev/md0", "crypto_LUKS", uuid,
                                        version="1") == ["/dev/md0 is version 2, not 1"]
    pv = env_file(GUEST / "blkid" / "vdd1.env")
    assert verify.signature_differences(
        pv, "/dev/vdd1", "LVM2_member", "JI281E-eYa6-MZ6o-m70R-LFlF-Vyct-5mCvvn") == []
    fat = env_file(STORAGE / "blkid-gpt-p1.txt")
    assert verify.signature_differences(fat, "/dev/p1", "vfat", "1234-abcd", "ESP") == []
    assert verify.signature_differences(fat, "/dev/p1", "ext4") == [
        "/dev/p1 holds vfat, not ext4"]
    assert verify.signature_differences({}, "/dev/p1", "swap") == [
        "/dev/p1 holds no signature, not swap"]
    assert verify.signature_differences(fat, "/dev/p1", "vfat", label="EFI") == [
        "/dev/p1 has label 'ESP', not 'EFI'"]


def test_md_from_recorded_mdadm_export() -> None:
    found = verify.parse_export((GUEST / "mdadm-detail-md0.env").read_text())
    assert verify.md_differences(found, md("raid1")) == []
    # blkid's form of the same UUID is the same array.
    same = md("raid1", uuid="f5d23ef5-62fe-463a-3b9e-b2d284fe31d1")
    assert verify.md_differences(found, same) == []
    assert verify.md_differences(found, md("raid5")) == ["/dev/md0 is raid1, not raid5"]
    assert verify.md_differences({}, md("raid1")) == ["/dev/md0 is not a running md array"]


def test_lvm_from_recorded_reports() -> None:
    vgs = verify.lvm_report((GUEST / "vgs.json").read_text(), "vg")
    assert verify.vg_differences(vgs, "vg0", 8 << 20, 2) == []
    assert verify.vg_differences(vgs, "vg0", 4 << 20, 1) == [
        f"vg0 has extents of {8 << 20} bytes, not {4 << 20}",
        "vg0 has 2 physical volume(s), not 1"]
    assert verify.vg_differences([], "vg1", 4 << 20, 1) == ["there is no volume group vg1"]
    lvs = verify.lvm_report((GUEST / "lvs.json").read_text(), "lv")
    by_name = {r["lv_name"]: [r] for r in lvs}
    assert verify.lv_differences(by_name["data"], lv(LvType.LINEAR, name="data")) == []
    assert verify.lv_differences(by_name["thin1"], lv(LvType.THIN, name="thin1")) == []
    assert verify.lv_differences(by_name["pool"], lv(LvType.THIN_POOL, name="pool")) == []
    assert verify.lv_differences(by_name["mirror"], lv(LvType.RAID1, name="mirror")) == []
    assert verify.lv_differences(by_name["data"], lv(LvType.THIN, name="data")) == [
        "vg0/data is linear, not thin"]
    assert verify.lv_active(by_name["data"])
    with pytest.raises(Exception, match="lvm's JSON"):
        verify.lvm_report("{", "lv")


def test_mounted_as_planned_on_recorded_mountinfo() -> None:
    entries = mounts.parse_mountinfo((GUEST / "proc-mountinfo.txt").read_text())
    p = MountParams("fs.dm-1", "/dev/mapper/vg0-data", "/data", "/mnt/data", "ext4")
    assert verify.mounted_as_planned(entries, p, (252, 2)) == []
    assert verify.mounted_as_planned(entries, p, (252, 3)) == [
        "/mnt/data holds /dev/mapper/vg0-data, not /dev/mapper/vg0-data"]
    elsewhere = dataclasses.replace(p, target="/mnt/other")
    assert verify.mounted_as_planned(entries, elsewhere, (252, 2)) == [
        "nothing is mounted on /mnt/other"]


# ---------------------------------------------------------------- journal


def test_journal_round_trip_and_a_line_cut_short(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    j = journal.Journal(path, "sha256:aa")
    assert not j.exists()
    j.open()
    assert (j.resumed, j.replaced, j.done) == (False, False, [])
    j.record("wipe:disk.a", "wipe")
    j.record("partition-table:disk.a", "partition-table")
    with open(path, "a") as f:
        f.write('{"action": "mkfs:fs.a", "ki')  # killed mid-write
    again = journal.Journal(path, "sha256:aa")
    assert again.exists()
    again.open()
    assert again.resumed and again.done == ["wipe:disk.a", "partition-table:disk.a"]
    head = json.loads(path.read_text().splitlines()[0])
    assert head["plan"] == "sha256:aa" and head["journal"] == 1


def test_another_plans_journal_is_not_read(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    old = journal.Journal(path, "sha256:aa")
    old.open()
    old.record("wipe:disk.a", "wipe")
    new = journal.Journal(path, "sha256:bb")
    assert not new.exists()
    new.open()
    assert (new.resumed, new.replaced, new.done) == (False, True, [])
    assert journal.parse(path.read_text(), "sha256:bb") == []
    assert journal.parse("", "sha256:bb") is None
    assert journal.parse("not json\n", "sha256:bb") is None


def test_journal_path_is_named_by_the_plan_hash(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(journal.ENV_STATE_DIR, str(tmp_path))
    assert journal.default_path("sha256:abc") == tmp_path / "journal-abc.jsonl"
    monkeypatch.delenv(journal.ENV_STATE_DIR)
    assert journal.default_path("sha256:abc") == Path("/var/lib/resurgo/journal-abc.jsonl")


# ---------------------------------------------------------------- recovery's own uses


def test_own_mounts_and_holders_do_not_count() -> None:
    d = ActualDisk(
        path="/dev/vdb", kname="vdb", size=1 << 30,
        mounted=("vdb1 on /mnt/resurgo", "vdb2 on /mnt/resurgo/home", "vdb3 on /srv",
                 "vdb4 on /run/resurgo/btrfs-x1", "vdb5 on /mnt/resurgo-other"),
        holders=("md0 (on vdb1)", "dm-3", "md1 (on vdb2)"),
    )
    [kept] = inuse.without_own_uses([d], "/mnt/resurgo/", {"md0", "dm-3"})
    assert kept.mounted == ("vdb3 on /srv", "vdb5 on /mnt/resurgo-other")
    assert kept.holders == ("md1 (on vdb2)",)
    [all_holders] = inuse.without_own_uses([d], "/mnt/resurgo")
    assert all_holders.holders == d.holders
    assert inuse.mountpoint_of("vdb1 on /mnt/with on in it") == "/mnt/with on in it"


def test_lvs_of_a_group_by_their_device_mapper_names() -> None:
    assert inuse.is_lv_of("vg0-root", "vg0-")
    assert inuse.is_lv_of("vg0-pool_tmeta", "vg0-")
    assert not inuse.is_lv_of("vg0--x-root", "vg0-")  # an LV of the group "vg0-x"
    assert inuse.is_lv_of("vg0--x-root", "vg0--x-")
    assert not inuse.is_lv_of("vg1-root", "vg0-")
    assert not inuse.is_lv_of("vg0-", "vg0-")


# ---------------------------------------------------------------- planner options used here


def test_btrfs_features_become_mkfs_names() -> None:
    saved = ("mixed_backref", "big_metadata", "extended_iref", "skinny_metadata",
             "no_holes", "free_space_tree", "free_space_tree_valid")
    assert plan_fs.btrfs_feature_options(saved) == [
        "-O", "extref,skinny-metadata,no-holes", "-R", "free-space-tree"]
    old = ("mixed_backref", "big_metadata", "extended_iref", "skinny_metadata")
    assert plan_fs.btrfs_feature_options(old) == [
        "-O", "extref,skinny-metadata,^no-holes", "-R", "^free-space-tree"]


def test_btrfs_options_carry_the_feature_names() -> None:
    fs = Filesystem(
        id="fs.a", device="part.a", type=FsType.BTRFS, uuid="u",
        btrfs=BtrfsOptions(features=("skinny_metadata", "no_holes")))
    opts = plan_fs.recreate(fs, 1 << 30, 512, 1 << 30, file_by_file=True).options
    assert opts[opts.index("-O") + 1] == "skinny-metadata,no-holes,^extref"
    assert opts[opts.index("-R") + 1] == "^free-space-tree"


def test_fat_with_clusters_smaller_than_the_new_sectors_gets_one_sector_clusters() -> None:
    fs = Filesystem(
        id="fs.a", device="part.a", type=FsType.VFAT, uuid="ABCD-1234",
        vfat=VfatOptions(fat_size=16, volume_id="ABCD-1234", sector_size=512,
                         cluster_size=2048))
    for sector, per_cluster in ((4096, "1"), (512, "4")):
        opts = plan_fs.recreate(fs, 32 << 20, sector, 32 << 20, file_by_file=True).options
        assert opts[opts.index("-s") + 1] == per_cluster


# ------------------------------------------------------------ paths kept under the root


@pytest.mark.parametrize(
    ("root", "path", "joined"),
    [
        ("/mnt/resurgo", "/", "/mnt/resurgo"),
        ("/mnt/resurgo/", "/boot/efi", "/mnt/resurgo/boot/efi"),
        ("/mnt/resurgo", "/srv/../var", "/mnt/resurgo/var"),
        ("/run/resurgo/btrfs-x", "@/.snapshots/1/snapshot",
         "/run/resurgo/btrfs-x/@/.snapshots/1/snapshot"),
        ("/", "/tmp/escaped", "/tmp/escaped"),
    ],
)
def test_a_path_joined_to_the_root_is_normalised(root: str, path: str, joined: str) -> None:
    assert confine.under_root(root, path) == joined


@pytest.mark.parametrize(
    ("root", "path"),
    [
        ("/mnt/resurgo", "/../../../tmp/escaped"),
        ("/mnt/resurgo", "/boot/../../etc"),
        ("/mnt/resurgo", "../resurgo2"),
        ("/run/resurgo/btrfs-x", "@/../../../etc"),
        ("/mnt/resurgo", "/boot\x00/x"),
    ],
)
def test_a_path_that_would_leave_the_root_is_refused(root: str, path: str) -> None:
    with pytest.raises(OperationFailed, match="refusing"):
        confine.under_root(root, path)


def test_mountpoint_directories_are_made_without_following_symlinks(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "etc"
    root.mkdir()
    outside.mkdir()
    (root / "boot").symlink_to(outside)
    with pytest.raises(OperationFailed, match=r"boot: it is a symbolic link \(to "):
        confine.make_dirs(str(root), str(root / "boot" / "efi"))
    assert list(outside.iterdir()) == []
    (root / "file").write_text("x")
    with pytest.raises(OperationFailed, match="file: it is not a directory"):
        confine.make_dirs(str(root), str(root / "file" / "x"))
    with pytest.raises(OperationFailed, match="is not under the root"):
        confine.make_dirs(str(root), str(outside / "x"))
    confine.make_dirs(str(root), str(root / "var" / "backups"))
    confine.make_dirs(str(root), str(root / "var" / "backups"))  # already there: fine
    assert (root / "var" / "backups").is_dir()
    confine.make_dirs(str(tmp_path / "new-root"), str(tmp_path / "new-root"))
    assert (tmp_path / "new-root").is_dir()
