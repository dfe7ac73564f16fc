"""resurgo recover --from MEDIUM: recreate the saved system on this machine.

Everything that can be checked without writing is checked first: the set and every set
of its chain complete on the medium, its description valid, an archive and a manifest
for each restore command, the identity of an encrypted set given and able to open the
manifests. Then the plan is computed afresh (as `resurgo plan` does, with the same
options), shown, and executed only when confirmed: on the terminal, by --yes, or by
--plan-hash naming exactly the plan computed now (its hash covers the layout, each
command with its arguments and target, and what finalize will do). After the layout, the
description's commands run in order (the built-in restore of each filesystem and btrfs
subvolume from its archives), each restored tree is walked against its manifest
(metadata; the content was hashed while it was written), and finalize makes the system
boot here (--net-map gives saved network interfaces to this machine's; --no-finalize
skips it). The commands and what finalize will change are shown with the plan, and a
--net-map is checked with it.

With --layout-only (SOURCE may then be a description file) only the layout is recreated:
the plan shown and hashed is still the whole plan, as `resurgo plan` shows it.

Exit 0 done; 1 an action or command failed (damage in an archive is named), or not
confirmed; 2 bad input (a --net-map naming no interface, among others) or no way to
confirm; 3 a precondition fails or the plan hash differs, or an encrypted set without
--identity (nothing was written in these cases).
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from pathlib import Path
from typing import Any, TextIO

from resurgo import finalize, run
from resurgo.apply import inuse, keys, report
from resurgo.apply.execute import Executor
from resurgo.apply.journal import ENV_STATE_DIR, STATE_DIR, Journal, default_path
from resurgo.cli import finalizing
from resurgo.cli.plan import add_plan_arguments, plan_options, read_paths
from resurgo.cli.source import SetSource, open_source
from resurgo.errors import BadInput, ExitCode, OperationFailed, PreconditionFailed
from resurgo.plan import make_plan
from resurgo.plan.model import Plan
from resurgo.plan.render import text
from resurgo.probe.actual import read_actual_disks
from resurgo.recovery import report as rreport
from resurgo.recovery.check import Changes, check_units, save_record
from resurgo.recovery.check import finalize_changes as check_changes
from resurgo.recovery.load import LoadedSet
from resurgo.recovery.restore import run_commands
from resurgo.units import human


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "recover",
        parents=[common],
        help="recreate the disks and restore the system from a recovery set",
        description="Check the recovery set, compute the plan as `resurgo plan` does, show "
        "it, and after confirmation execute it: wipe the target disks, write the partition "
        "tables, create md arrays, LUKS and LVM volumes, filesystems, swap and btrfs "
        "subvolumes with the saved identities, mount the result under --root, restore "
        "every filesystem's files from the set, check them and make the system boot. "
        "Resumable: run it again after an interruption. Exit 0 done; 1 failed or not "
        "confirmed; 2 bad input; 3 a precondition fails, the plan hash differs, or an "
        "encrypted set without --identity (nothing written).",
    )
    add_plan_arguments(p)
    p.add_argument(
        "--layout-only",
        action="store_true",
        help="recreate the disk layout only (partitions, volumes, filesystems), restore no "
        "data; --from may then be a description file",
    )
    p.add_argument(
        "--identity",
        type=Path,
        metavar="FILE",
        help="the age identity file (secret key) of an encrypted set",
    )
    p.add_argument(
        "--verify-set",
        action="store_true",
        help="before touching any disk, read every file of the set (and of the sets it "
        "builds on) and check its sha256: the set is read twice, but damage is found "
        "before the disks are wiped",
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


def _plan(args: argparse.Namespace, source: SetSource, interactive: bool) -> tuple[Plan, Journal]:
    """The plan as `resurgo plan` computes it with the same options: its commands and what
    finalize will do included, and hashed. A --net-map typo is bad input found here,
    before any disk is touched."""
    desc = source.description
    options = plan_options(args, desc, interactive)
    actual = read_actual_disks(read_paths(source.recovery_paths, args))

    def planned(owned: set[str] | None = None) -> tuple[Plan, Journal]:
        disks = inuse.without_own_uses(actual, options.root, owned or ())
        plan = finalizing.finalized(args, desc, make_plan(desc, disks, options))
        return plan, Journal(args.journal or default_path(plan.hash), plan.hash)

    plan, journal = planned()
    # An earlier run of this very plan holds the disks (its md arrays, its mappings):
    # those uses are ours. Its journal is named by the plan as that run could execute it,
    # finalize included, which a plan failing on those uses does not show: so the plan
    # without them is the one to look the journal up by.
    owned = inuse.own_holders(plan)
    again, earlier = planned(owned)
    if earlier.exists():
        return again, earlier
    return plan, journal


def run_recover(args: argparse.Namespace) -> int:
    confirmed = bool(args.yes or args.plan_hash)
    terminal = Terminal.open()
    if not confirmed and terminal is None:
        raise BadInput(
            "recover erases the target disks and there is no terminal to confirm on",
            "pass --yes, or --plan-hash HASH with the hash `resurgo plan` printed",
        )
    full = not args.layout_only
    with open_source(args, identity=args.identity, read_manifests=full) as source:
        if full and source.loaded is None:
            raise BadInput(
                f"{args.source} is a description file: it holds no data to restore",
                "give the medium of the recovery set with --from, or add --layout-only",
            )
        if args.verify_set and source.loaded is not None:
            if not args.json:
                print(f"reading every file of set {source.loaded.id} and the sets it builds "
                      "on", flush=True)
            for reader in source.loaded.chain.values():
                reader.verify()
        return _recover(args, source, terminal, confirmed)


def _recover(
    args: argparse.Namespace, source: SetSource, terminal: Terminal | None, confirmed: bool
) -> int:
    plan, journal = _plan(args, source, interactive=terminal is not None)
    out = sys.stdout
    result: dict[str, Any] = {"plan": finalizing.plan_data(plan), "outcome": None}
    if source.loaded is not None:
        result["set"] = {"id": source.loaded.id, "medium": source.loaded.medium.url}
    if not args.json:
        # The plan exactly as `resurgo plan` shows it (its hash covers all of it), before
        # anything is asked or done.
        extra = finalizing.section(args, plan)
        if args.layout_only:
            extra = [*extra, "--layout-only: only the actions above are executed; no "
                     "command runs and the system is not finalized"]
        out.write(text(plan, source.name, extra))
        out.flush()
    if not plan.ok:
        if args.json:
            out.write(json.dumps(result, indent=2) + "\n")
        print(
            f"resurgo: the plan cannot be executed: {len(plan.failures)} precondition(s) "
            "fail; nothing was written",
            file=sys.stderr,
        )
        return ExitCode.PRECONDITION
    if args.plan_hash and _hash(args.plan_hash) != plan.hash:
        if args.json:
            out.write(json.dumps(result, indent=2) + "\n")
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
    result["outcome"] = report.data(outcome)
    if not args.json:
        out.write(report.summary(outcome))
    if not outcome.ok or source.loaded is None:
        if args.json:
            out.write(json.dumps(result, indent=2) + "\n")
        return ExitCode.OK if outcome.ok else ExitCode.FAILED
    ok = _restore(args, source.loaded, plan, result)
    if args.json:
        out.write(json.dumps(result, indent=2) + "\n")
    return ExitCode.OK if ok else ExitCode.FAILED


def _restore(args: argparse.Namespace, loaded: LoadedSet, plan: Plan,
             result: dict[str, Any]) -> bool:
    """The commands, the check of what they restored, finalize; False when any failed."""
    root = Path(plan.root)

    def said(line: str) -> None:
        if not args.json:
            print(line, flush=True)

    said(f"\nrestoring the data from set {loaded.id} "
         f"({len(loaded.description.commands)} commands)")
    restored = run_commands(loaded, root, lambda r: said(rreport.command_line(r)))
    result["commands"] = rreport.restore_data(restored)
    said(rreport.restore_summary(restored).rstrip())
    if not restored.ok and restored.aborted_at is not None:
        return False
    # The content of every file was hashed as it was written: a walk of the metadata
    # (no second read of the data) finds what the target could not keep.
    done = restored.restored()
    said("\nchecking the restored trees against their manifests")
    checked = check_units(loaded, root, content=False, only=lambda u: u.command.seq in done,
                          changes=Changes(), report=lambda u: said(rreport.check_line(u)))
    result["verify"] = rreport.check_data(checked)
    said(rreport.check_summary(checked).rstrip())
    ok = restored.ok and checked.ok
    if args.no_finalize:
        result["finalize"] = None
        said("\nfinalize: skipped (--no-finalize)")
        return ok
    return _finalize(args, loaded, plan, root, result) and ok


def _finalize(args: argparse.Namespace, loaded: LoadedSet, plan: Plan, root: Path,
              result: dict[str, Any]) -> bool:
    if not args.json:
        print("\nfinalizing the restored system", flush=True)
    try:
        fin = finalize.finalize(loaded.description, plan, root, finalizing.options(args))
    except BadInput as e:
        # Checked while planning against the description's copy of the configuration: the
        # restored one names other interfaces. The data is restored all the same.
        result["finalize"] = {"ok": False, "errors": [str(e)]}
        print(f"resurgo: finalize not run: {e}", file=sys.stderr, flush=True)
        return False
    result["finalize"] = finalize.data(fin)
    written = [f.path for f in fin.files if f.written]
    changes = check_changes(written, fin.log)
    record = save_record(loaded.id, root, changes)
    if record is not None:
        result["finalize_record"] = str(record)
    if not args.json:
        print(finalize.text(fin).rstrip(), flush=True)
    return fin.ok
