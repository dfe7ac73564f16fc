"""`resurgo plan` as a user runs it: the command line in this process, a real description file.

The actual disks are made up (tests.support.disks replaces the one function the command
reads them with), so these tests need neither root nor disks;
tests/storage/test_plan_cli.py runs the same command on real loop devices.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from resurgo import fileformat
from resurgo.machine import ActualDisk
from resurgo.model import Command, Description, OnFailure
from tests.support.builders import luks_fixture, standard
from tests.support.cli import Result, run
from tests.support.consts import GIB
from tests.support.disks import disk as vd
from tests.support.disks import fake_disks, spawn_with_disks
from tests.support.examples import EXAMPLE


def resurgo(*args: str | Path, disks: Sequence[ActualDisk]) -> Result:
    with pytest.MonkeyPatch.context() as mp:
        fake_disks(mp, disks)
        return run(*args)


def write(desc: Description, tmp: Path) -> Path:
    path = tmp / "description.toml"
    fileformat.write(desc, path)
    return path


def test_plan_that_can_be_executed_exits_0(tmp_path: Path) -> None:
    src = write(standard(), tmp_path)
    proc = resurgo(
        "plan",
        "--from",
        src,
        "--target",
        "/dev/vdb",
        disks=[vd("vda", 40 * GIB), vd("vdb", 30 * GIB)],
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[-1].startswith("plan hash: sha256:")
    assert "disk.sda" in proc.stdout and "/dev/vdb" in proc.stdout
    assert "all preconditions hold" in proc.stdout
    assert "/dev/vda" not in proc.stdout.split("actions (")[1]


def test_json_and_the_same_hash_across_processes(tmp_path: Path) -> None:
    src = write(standard(), tmp_path)
    disks = [vd("vdb", 30 * GIB, 4096)]
    one = spawn_with_disks(disks, "plan", "--json", "--from", src, env={"PYTHONHASHSEED": "1"})
    two = spawn_with_disks(disks, "plan", "--from", src, "--json", env={"PYTHONHASHSEED": "2"})
    assert one.returncode == two.returncode == 0
    a, b = json.loads(one.stdout), json.loads(two.stdout)
    assert a["hash"] == b["hash"]
    assert list(a)[-1] == "hash"
    assert a["ok"] is True
    assert a["matches"][0]["path"] == "/dev/vdb"
    assert a["layouts"][0]["sector_size"] == 4096
    text = spawn_with_disks(disks, "plan", "--from", src, env={"PYTHONHASHSEED": "3"})
    assert text.stdout.splitlines()[-1] == f"plan hash: {a['hash']}"


def test_too_small_exits_3_listing_every_failure(tmp_path: Path) -> None:
    src = write(standard(used_root=6 * GIB), tmp_path)
    disks = [vd("vdb", 8 * GIB, mounted=["vdb1 on /mnt"])]
    proc = resurgo(
        "plan", "--from", src, "--target", "vdb", "--target", "/dev/vdq", disks=disks
    )
    assert proc.returncode == 3
    assert "cannot recover: 3 precondition(s) fail" in proc.stdout
    for check in ("target-too-small", "target-in-use", "target-missing"):
        assert f"[{check}]" in proc.stdout
    assert "precondition(s) fail" in proc.stderr
    js = resurgo("plan", "--json", "--from", src, "--target", "vdb", disks=disks)
    assert js.returncode == 3
    assert {f["check"] for f in json.loads(js.stdout)["failures"]} == {
        "target-too-small",
        "target-in-use",
    }


def test_ambiguous_exits_3_naming_the_candidates(tmp_path: Path) -> None:
    src = write(standard(), tmp_path)
    proc = resurgo(
        "plan", "--from", src, disks=[vd("vdb", 30 * GIB), vd("vdc", 30 * GIB)]
    )
    assert proc.returncode == 3
    assert "[ambiguous-match]" in proc.stdout
    assert "/dev/vdb" in proc.stdout and "/dev/vdc" in proc.stdout
    mapped = resurgo(
        "plan",
        "--from",
        src,
        "--map",
        "disk.sda=/dev/vdc",
        disks=[vd("vdb", 30 * GIB), vd("vdc", 30 * GIB)],
    )
    assert mapped.returncode == 0, mapped.stdout
    assert "matched by map" in mapped.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--map", "disk.sda"], "is not SAVED=ACTUAL"),
        (["--map", "=/dev/vdb"], "is not SAVED=ACTUAL"),
        (["--map", "disk.nope=/dev/vdb"], "the description has no disk 'disk.nope'"),
        (["--key-file", "luks.nope=/etc/hostname"], "no LUKS volume 'luks.nope'"),
        (["--key-file", "luks.sda3"], "is not ID=FILE"),
        (["--grow", "sideways"], "invalid choice"),
    ],
)
def test_bad_input_exits_2(tmp_path: Path, args: list[str], message: str) -> None:
    src = write(standard(), tmp_path)
    proc = resurgo("plan", "--from", src, *args, disks=[vd("vdb", 30 * GIB)])
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr


def test_missing_description_exits_2(tmp_path: Path) -> None:
    proc = resurgo("plan", "--from", tmp_path / "nope.toml", disks=[])
    assert proc.returncode == 2
    assert "does not exist" in proc.stderr


def test_key_files(tmp_path: Path) -> None:
    src = write(luks_fixture(), tmp_path)
    disks = [vd("vdb", 20 * GIB)]
    no_key = resurgo("plan", "--from", src, disks=disks)
    assert no_key.returncode == 3 and "[key-missing]" in no_key.stdout
    unreadable = resurgo(
        "plan",
        "--from",
        src,
        "--key-file",
        f"luks.sda2={tmp_path / 'none'}",
        disks=disks,
    )
    assert unreadable.returncode == 2 and "not a readable file" in unreadable.stderr
    key = tmp_path / "key"
    key.write_bytes(b"secret")
    ok = resurgo("plan", "--from", src, "--key-file", f"luks.sda2={key}", disks=disks)
    assert ok.returncode == 0, ok.stdout
    assert "secret" not in ok.stdout and str(key) not in ok.stdout


@pytest.mark.skipif(not EXAMPLE.exists(), reason="the format example is not there yet")
def test_the_format_example_plans(tmp_path: Path) -> None:
    disks = [
        vd("vda", 100 * GIB, transport="virtio"),
        vd("vdb", 20 * GIB, 4096, transport="virtio"),
        vd("vdc", 20 * GIB, 4096, transport="virtio"),
        vd("sdd", 31029460992, serial="4C530001230101112345", removable=True),
    ]
    proc = resurgo("plan", "--json", "--from", EXAMPLE, disks=disks)
    assert proc.returncode in (0, 3), proc.stderr
    data = json.loads(proc.stdout)
    assert all(m["path"] != "/dev/sdd" for m in data["matches"])
    writes = {w for a in data["actions"] for w in a["writes"]}
    assert writes <= {"/dev/vda", "/dev/vdb", "/dev/vdc"}


# ----------------------------------------------------------------- the commands in the plan


def with_hook(arg: str) -> Description:
    restores = (
        Command(10, "resurgo:restore", ("fs.sda3", "/")),
        Command(20, "resurgo:restore", ("fs.sda2", "/boot")),
    )
    hook = Command(30, "/usr/local/sbin/after-restore", ("--label", arg), OnFailure.CONTINUE)
    return replace(standard(), commands=(*restores, hook))


def test_plan_shows_the_commands_in_text_and_json(tmp_path: Path) -> None:
    src = write(with_hook("a b"), tmp_path)
    disks = [vd("vdb", 30 * GIB)]
    proc = resurgo("plan", "--from", src, disks=disks)
    assert proc.returncode == 0, proc.stderr
    section = proc.stdout[proc.stdout.index("restore commands (3), run in this order"):]
    assert "   10. resurgo:restore fs.sda3 /\n       into /mnt/resurgo\n" in section
    assert "   20. resurgo:restore fs.sda2 /boot\n       into /mnt/resurgo/boot\n" in section
    assert "   30. /usr/local/sbin/after-restore --label 'a b'\n" in section
    data = json.loads(resurgo("plan", "--json", "--from", src, disks=disks).stdout)
    assert [(c["seq"], c["program"], c["args"], c["target"], c["command"])
            for c in data["commands"]] == [
        (10, "resurgo:restore", ["fs.sda3", "/"], "/mnt/resurgo", "resurgo:restore fs.sda3 /"),
        (20, "resurgo:restore", ["fs.sda2", "/boot"], "/mnt/resurgo/boot",
         "resurgo:restore fs.sda2 /boot"),
        (30, "/usr/local/sbin/after-restore", ["--label", "a b"], "",
         "/usr/local/sbin/after-restore --label 'a b'"),
    ]
    assert list(data)[-1] == "hash"


def test_one_byte_of_a_command_argument_changes_the_plan_hash(tmp_path: Path) -> None:
    disks = [vd("vdb", 30 * GIB)]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = resurgo("plan", "--json", "--from", write(with_hook("root"), tmp_path / "a"),
                disks=disks)
    b = resurgo("plan", "--json", "--from", write(with_hook("roou"), tmp_path / "b"),
                disks=disks)
    one, two = json.loads(a.stdout), json.loads(b.stdout)
    assert one["actions"] == two["actions"]
    assert one["hash"] != two["hash"]


def test_no_finalize_is_another_plan(tmp_path: Path) -> None:
    src = write(with_hook("root"), tmp_path)
    disks = [vd("vdb", 30 * GIB)]
    full = json.loads(resurgo("plan", "--json", "--from", src, disks=disks).stdout)
    bare = json.loads(
        resurgo("plan", "--json", "--no-finalize", "--from", src, disks=disks).stdout
    )
    assert full["finalize"] is not None and bare["finalize"] is None
    assert full["actions"] == bare["actions"] and full["commands"] == bare["commands"]
    assert full["hash"] != bare["hash"]


@pytest.mark.skipif(not EXAMPLE.exists(), reason="the format example is not there yet")
def test_the_format_example_shows_where_each_btrfs_tree_is_restored(tmp_path: Path) -> None:
    disks = [
        vd("vda", 100 * GIB, transport="virtio"),
        vd("vdb", 20 * GIB, 4096, transport="virtio"),
        vd("vdc", 20 * GIB, 4096, transport="virtio"),
    ]
    data = json.loads(resurgo("plan", "--json", "--from", EXAMPLE, disks=disks).stdout)
    targets = {c["command"]: c["target"] for c in data["commands"]}
    assert targets["resurgo:restore fs.sda3"] == "/dev/vda3:/"
    assert targets["resurgo:restore subvol.sda3.257 /home"] == "/dev/vda3:/@home"
    assert targets["resurgo:restore fs.sda2 /boot"] == "/mnt/resurgo/boot"
