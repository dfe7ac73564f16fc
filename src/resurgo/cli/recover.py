"""resurgo recover --from SOURCE --layout-only: recreate the saved disk layout on this machine.

The plan is computed afresh (as `resurgo plan` does, with the same options), shown, and
executed only when confirmed: on the terminal, by --yes, or by --plan-hash naming exactly
the plan computed now. Restoring the data is not implemented yet.

Exit 0 done; 1 an action failed, or not confirmed; 2 bad input or no way to confirm;
3 a precondition fails or the plan hash differs (nothing was written in either case).
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from pathlib import Path
from typing import Any, TextIO

from resurgo import fileformat, run
from resurgo.apply import inuse, keys, report
from resurgo.apply.execute import Executor
from resurgo.apply.journal import ENV_STATE_DIR, STATE_DIR, Journal, default_path
from resurgo.cli.plan import add_plan_arguments, plan_options
from resurgo.errors import BadInput, ExitCode, OperationFailed, PreconditionFailed
from resurgo.plan import make_plan
from resurgo.plan.actual import read_actual_disks
from resurgo.plan.model import Plan
from resurgo.plan.render import text, to_data
from resurgo.summary import human


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "recover",
        parents=[common],
        help="recreate the disks (and, later, restore the data) from a recovery set",
        description="Compute the plan as `resurgo plan` does, show it, and after "
        "confirmation execute it: wipe the target disks, write the partition tables, "
        "create md arrays, LUKS and LVM volumes, filesystems, swap and btrfs subvolumes "
        "with the saved identities, and mount the result under --root. Resumable: run it "
        "again after an interruption. Exit 0 done; 1 failed or not confirmed; 2 bad "
        "input; 3 a precondition fails or the plan hash differs (nothing written).",
    )
    add_plan_arguments(p)
    p.add_argument(
        "--layout-only",
        action="store_true",
        help="recreate the disk layout only (required for now: restoring data is not "
        "implemented yet)",
    )
    confirm = p.add_mutually_exclusive_group()
    confirm.add_argument(
        "--yes",
        action="store_true",
        help="do not ask: execute the plan computed now",
    )
    confirm.add_argument(
        "--plan-hash",
        metavar="HASH",
        help="execute only if the plan computed now has this hash (as `resurgo plan` "
        "printed it): the disks may have changed since",
    )
    p.add_argument(
        "--journal",
        type=Path,
        metavar="FILE",
        help=f"the journal of completed actions (default: {STATE_DIR}/journal-<plan "
        f"hash>.jsonl, or under ${ENV_STATE_DIR})",
    )
    p.set_defaults(handler=run_recover)


class Terminal:
    """Where a person confirms: stdin when it is a terminal, else /dev/tty."""

    def __init__(self, reader: TextIO, writer: TextIO) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    def open(cls) -> Terminal | None:
        if sys.stdin.isatty():
            return cls(sys.stdin, sys.stderr)
        try:
            tty = open("/dev/tty", "r+")  # noqa: SIM115 - kept open for the whole run
        except OSError:
            return None
        return cls(tty, tty)

    def ask(self, prompt: str) -> str:
        self.writer.write(prompt)
        self.writer.flush()
        answer = self.reader.readline()
        if not answer:
            raise OperationFailed("no answer (end of input): nothing was written")
        return answer.strip()


def _hash(value: str) -> str:
    value = value.strip()
    return value if value.startswith("sha256:") else "sha256:" + value


def _confirm_prompt(plan: Plan) -> str:
    disks = "\n".join(
        f"  {m.path} ({human(m.size)}{', ' + m.model if m.model else ''}) <- {m.saved}"
        for m in plan.matches
    )
    return (
        f"\nEverything on these disks will be erased:\n{disks}\n"
        f"Type 'yes' to recreate the layout (plan {plan.hash[:19]}...): "
    )


def _plan(args: argparse.Namespace, interactive: bool) -> tuple[Plan, Journal]:
    source: Path = args.source
    desc = fileformat.read(source)
    options = plan_options(args, desc, interactive)
    actual = read_actual_disks([source])
    plan = make_plan(desc, inuse.without_own_uses(actual, options.root), options)
    journal = Journal(args.journal or default_path(plan.hash), plan.hash)
    if journal.exists():
        # An earlier run of this very plan: its md arrays and mappings are ours too.
        owned = inuse.own_holders(plan)
        plan = make_plan(desc, inuse.without_own_uses(actual, options.root, owned), options)
    return plan, journal


def run_recover(args: argparse.Namespace) -> int:
    if not args.layout_only:
        raise OperationFailed(
            "restoring data is not implemented yet: nothing was done",
            "`resurgo recover --layout-only` recreates the disk layout (partitions, "
            "volumes, filesystems) without the data",
        )
    confirmed = bool(args.yes or args.plan_hash)
    terminal = Terminal.open()
    if not confirmed and terminal is None:
        raise BadInput(
            "recover erases the target disks and there is no terminal to confirm on",
            "pass --yes, or --plan-hash HASH with the hash `resurgo plan` printed",
        )
    plan, journal = _plan(args, interactive=terminal is not None)
    out = sys.stdout
    if not args.json:
        out.write(text(plan, str(args.source)))
        out.flush()
    if not plan.ok:
        if args.json:
            out.write(json.dumps({"plan": to_data(plan), "outcome": None}, indent=2) + "\n")
        print(
            f"resurgo: the plan cannot be executed: {len(plan.failures)} precondition(s) "
            "fail; nothing was written",
            file=sys.stderr,
        )
        return ExitCode.PRECONDITION
    if args.plan_hash and _hash(args.plan_hash) != plan.hash:
        if args.json:
            out.write(json.dumps({"plan": to_data(plan), "outcome": None}, indent=2) + "\n")
        raise PreconditionFailed(
            f"the plan computed now has the hash {plan.hash}, not {_hash(args.plan_hash)}: "
            "the disks or the description changed since; nothing was written",
            "review `resurgo plan` again and pass its hash",
        )
    if not run.is_root():
        raise PreconditionFailed("recreating the layout needs root", "run resurgo as root")
    if not confirmed:
        assert terminal is not None
        if terminal.ask(_confirm_prompt(plan)).lower() != "yes":
            print("resurgo: not confirmed: nothing was written", file=sys.stderr)
            return ExitCode.FAILED
    ask = getpass.getpass if terminal is not None else None
    luks_keys = keys.gather(plan, dict(args.key_file), ask)

    def progress(n: int, total: int, result: Any) -> None:
        if not args.json:
            print(report.line(n, total, result), flush=True)

    if not args.json:
        print(f"\nrecreating the layout ({len(plan.actions)} actions)", flush=True)
    outcome = Executor(plan, journal, luks_keys, progress).run()
    if args.json:
        out.write(
            json.dumps({"plan": to_data(plan), "outcome": report.data(outcome)}, indent=2) + "\n"
        )
    else:
        out.write(report.summary(outcome))
    return ExitCode.OK if outcome.ok else ExitCode.FAILED
