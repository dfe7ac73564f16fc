"""The plan covers everything recover will run: the description's commands (program,
arguments, order, on_failure, target) and finalize's planned actions are in the plan hash,
and the commands are shown, each argument exactly as it is."""

from __future__ import annotations

import dataclasses
import subprocess
from dataclasses import replace

import pytest

from resurgo import finalize
from resurgo.errors import BadInput
from resurgo.model import Command, ConfigFile, Description, OnFailure
from resurgo.plan import make_plan
from resurgo.plan.model import Plan, PlanOptions
from resurgo.plan.render import plan_hash, text, to_data, with_finalize, words
from tests.support.builders import actual, standard
from tests.support.consts import GIB

OPTS = PlanOptions(which=lambda p: f"/usr/sbin/{p}")
RESTORES = (
    Command(10, "resurgo:restore", ("fs.sda3", "/"), description="restore /"),
    Command(20, "resurgo:restore", ("fs.sda2", "/boot"), description="restore /boot"),
)
HOOK = Command(30, "/usr/local/sbin/after-restore", ("--mode", "relabel"), OnFailure.CONTINUE)


def with_commands(*commands: Command) -> Description:
    return replace(standard(), commands=commands)


def plan_of(desc: Description) -> Plan:
    return make_plan(desc, [actual("vdb", 30 * GIB)], OPTS)


def test_one_byte_of_a_command_argument_gives_another_hash() -> None:
    a = plan_of(with_commands(*RESTORES, HOOK))
    b = plan_of(with_commands(*RESTORES, replace(HOOK, args=("--mode", "relabeL"))))
    # The layout is the same: only the command differs.
    assert a.actions == b.actions and a.matches == b.matches
    assert a.hash != b.hash


@pytest.mark.parametrize(
    "changed",
    [
        replace(HOOK, program="/usr/local/sbin/after-restorf"),
        replace(HOOK, args=("--mode", "relabel", "--all")),
        replace(HOOK, args=("relabel", "--mode")),
        replace(HOOK, on_failure=OnFailure.ABORT),
    ],
    ids=["program", "an argument added", "arguments reordered", "on_failure"],
)
def test_every_part_of_a_command_is_in_the_hash(changed: Command) -> None:
    assert plan_of(with_commands(*RESTORES, changed)).hash != plan_of(
        with_commands(*RESTORES, HOOK)
    ).hash


def test_the_order_of_the_commands_and_a_command_more_are_in_the_hash() -> None:
    base = plan_of(with_commands(*RESTORES)).hash
    swapped = (replace(RESTORES[1], seq=10), replace(RESTORES[0], seq=20))
    assert plan_of(with_commands(*swapped)).hash != base
    assert plan_of(with_commands(*RESTORES, HOOK)).hash != base
    assert plan_of(with_commands()).hash != base


def test_what_is_only_said_is_not_in_the_hash() -> None:
    a = plan_of(with_commands(*RESTORES))
    said = tuple(replace(c, description="something else") for c in RESTORES)
    assert plan_of(with_commands(*said)).hash == a.hash


def test_the_hash_is_of_the_plan_itself() -> None:
    plan = plan_of(with_commands(*RESTORES, HOOK))
    assert plan.hash == plan_hash(plan)
    assert plan_hash(replace(plan, root="/elsewhere")) != plan.hash


def test_each_command_is_planned_with_where_it_writes() -> None:
    plan = make_plan(with_commands(*RESTORES, HOOK), [actual("vdb", 30 * GIB)],
                     replace(OPTS, root="/mnt/r"))
    assert [(c.seq, c.argv, c.target, c.on_failure) for c in plan.commands] == [
        (10, ("resurgo:restore", "fs.sda3", "/"), "/mnt/r", "abort"),
        (20, ("resurgo:restore", "fs.sda2", "/boot"), "/mnt/r/boot", "abort"),
        (30, ("/usr/local/sbin/after-restore", "--mode", "relabel"), "", "continue"),
    ]
    data = to_data(plan)["commands"]
    assert data[2] == {
        "seq": 30,
        "program": "/usr/local/sbin/after-restore",
        "args": ["--mode", "relabel"],
        "on_failure": "continue",
        "target": "",
        "command": "/usr/local/sbin/after-restore --mode relabel",
        "description": None,
    }


def test_the_text_lists_the_commands_before_the_verdict() -> None:
    hook = replace(HOOK, args=("--note", "it's a test", "; rm -rf /"))
    out = text(plan_of(with_commands(*RESTORES, hook)))
    section = out[out.index("restore commands (3)"):]
    assert section.index("restore commands") < section.index("all preconditions hold")
    assert "   10. resurgo:restore fs.sda3 /\n       into /mnt/resurgo\n" in section
    assert "   20. resurgo:restore fs.sda2 /boot\n       into /mnt/resurgo/boot\n" in section
    assert (
        "   30. /usr/local/sbin/after-restore --note 'it'\"'\"'s a test' '; rm -rf /'\n"
        "       a program, run with RESURGO_ROOT=/mnt/resurgo\n"
        "       on failure: continue\n"
    ) in section
    assert "restore commands: none" in text(plan_of(with_commands()))


def test_a_restore_command_that_names_nothing_is_bad_input() -> None:
    bad = Command(10, "resurgo:restore", ("fs.nothing", "/"))
    with pytest.raises(BadInput, match=r"no filesystem or subvolume 'fs\.nothing'"):
        plan_of(with_commands(bad))


FSTAB = "/dev/sda3 / ext4 errors=remount-ro 0 1\n"


def test_finalize_is_in_the_hash_and_its_absence_too() -> None:
    desc = replace(with_commands(*RESTORES),
                   config_files=(ConfigFile("cfg.fstab", "/etc/fstab", FSTAB),))
    plan = plan_of(desc)
    report = finalize.preview(desc, plan)
    assert report.files and report.files[0].changes, "fstab names the root by kernel name"
    finalized = with_finalize(plan, report)
    assert finalized.finalize is report and finalized.hash == plan_hash(finalized)
    # Finalize that runs, and one that does not (--no-finalize): two plans.
    assert finalized.hash != plan.hash
    assert with_finalize(finalized, None).hash == plan.hash
    # Every line finalize will write is covered, its reasons are not.
    [fstab] = report.files
    other = dataclasses.replace(fstab, changes=tuple(
        dataclasses.replace(c, after=(c.after or "") + " ") for c in fstab.changes))
    assert with_finalize(plan, replace(report, files=(other,))).hash != finalized.hash
    why = dataclasses.replace(fstab, changes=tuple(
        dataclasses.replace(c, why="another reason") for c in fstab.changes))
    assert with_finalize(plan, replace(report, files=(why,))).hash == finalized.hash


def test_finalize_commands_and_pairing_are_in_the_hash() -> None:
    desc = with_commands(*RESTORES)
    plan = plan_of(desc)
    report = finalize.preview(desc, plan)
    assert report.commands, "GRUB for UEFI: its commands are planned"
    base = with_finalize(plan, report).hash
    cmd = report.commands[0]
    changed = replace(cmd, argv=(*cmd.argv[:-1], cmd.argv[-1] + "x"))
    assert with_finalize(plan, replace(report, commands=(changed, *report.commands[1:]))
                         ).hash != base
    pair = finalize.NicPair("ens3", None, "enp1s0", None, "order")
    assert with_finalize(plan, replace(report, nics=(pair,))).hash != base
    assert with_finalize(plan, replace(report, nics=(replace(pair, new_name="enp2s0"),))
                         ).hash != with_finalize(plan, replace(report, nics=(pair,))).hash


ODD = ["plain", "two words", "it's", "", "back\\slash", "new\nline", "tab\there",
       "\x1b[2K\rhidden", "\u202eevil", "caf\u00e9", "\x7f", "\U000e0041tag", "nb\u00a0sp",
       "\x85", "raw\udcff"]


def test_words_quote_every_argument_and_hide_nothing() -> None:
    shown = words(ODD)
    assert shown.isprintable(), "no control character reaches the terminal"
    assert "$'\\x1b[2K\\x0dhidden'" in shown and "$'\\xe2\\x80\\xaeevil'" in shown
    assert "café" in shown
    assert words(["a b", "c"]) == "'a b' c"
    # What is shown is what a shell takes: the same arguments, byte for byte.
    proc = subprocess.run(["bash", "-c", f"printf '%s\\0' {shown}"], capture_output=True,
                          check=True)
    assert proc.stdout.split(b"\0")[:-1] == [a.encode("utf-8", "surrogateescape") for a in ODD]
