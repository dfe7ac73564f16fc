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
--net-map is checked with it. --step-lines FILE also writes each step's start and end to
FILE as lines of the rehearsal console protocol (rehearse.protocol), as they happen.

With --layout-only (SOURCE may then be a description file) only the layout is recreated:
the plan shown and hashed is still the whole plan, as `resurgo plan` shows it.

--debug-stop-after N, not shown by --help, is a debugging aid for the kill-and-resume
tests: recover kills itself right after the N-th action of the layout, before journaling
it, as a crash would (apply.crash).

Exit 0 done; 1 an action or command failed; 2 bad input (a --net-map naming no
interface, among others) or no way to confirm; 3 a precondition fails or the plan hash
differs, or an encrypted set without --identity; 4 a set not signed by the trusted
signers; 5 the set is damaged or incomplete (the archive and the files concerned are
named; before any write when the set's checks or --verify-set find it); 6 the identity
cannot decrypt the set; 7 not confirmed. Nothing was written for 2, 3, 4 and 7, nor for
5 and 6 found before the plan was executed.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import sys
from pathlib import Path
from typing import Any, TextIO

from resurgo.apply import crash
from resurgo.apply.journal import ENV_STATE_DIR, STATE_DIR
from resurgo.cli import reports
from resurgo.cli.plan import (
    PlanArguments,
    add_plan_arguments,
    plan_arguments,
    plan_options,
    read_paths,
)
from resurgo.cli.progress import shown
from resurgo.errors import BadInput, NotConfirmed
from resurgo.finalize.planned import section
from resurgo.model import Description
from resurgo.plan.model import Plan
from resurgo.plan.render import text
from resurgo.probe import actual  # through the module: where tests give other disks
from resurgo.recovery.events import Event, OnEvent, PlanReady, Warned
from resurgo.recovery.recover import RecoverOptions, plan_recovery, recover_set
from resurgo.recovery.report import event_text
from resurgo.recovery.source import open_source
from resurgo.rehearse.steplines import StepLines
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
        "Resumable: run it again after an interruption. Exit 0 done; 1 failed; 2 bad "
        "input; 3 a precondition fails, the plan hash differs, or an encrypted set without "
        "--identity (nothing written); 4 not authentic; 5 the set is damaged or "
        "incomplete; 6 the identity cannot decrypt it; 7 not confirmed.",
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
    p.add_argument(
        "--step-lines",
        type=Path,
        metavar="FILE",
        help="also append each step's start and end (verify-set, layout, restore, check, "
        "finalize) to FILE as it happens, one line of the rehearsal console protocol each "
        "('RESURGO-REHEARSE {\"kind\": \"step\", ...}'); FILE may be /dev/fd/N or a console. "
        "The rescue uses it in rehearsal mode (resurgo.rehearse=1)",
    )
    # A debugging aid, hidden: see the module's docstring.
    p.add_argument("--debug-stop-after", type=int, metavar="N", help=argparse.SUPPRESS)
    reports.reported(p, "recover")
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
            raise NotConfirmed("no answer (end of input): nothing was written")
        return answer.strip()

    def confirm(self, plan: Plan) -> bool:
        return self.ask(_confirm_prompt(plan)).lower() == "yes"


def _confirm_prompt(plan: Plan) -> str:
    disks = "\n".join(
        f"  {m.path} ({human(m.size)}{', ' + m.model if m.model else ''}) <- {m.saved}"
        for m in plan.matches
    )
    return (
        f"\nEverything on these disks will be erased:\n{disks}\n"
        f"Type 'yes' to recreate the layout (plan {plan.hash[:19]}...): "
    )


def recover_options(args: argparse.Namespace, arguments: PlanArguments, desc: Description,
                    interactive: bool) -> RecoverOptions:
    return RecoverOptions(
        plan=plan_options(arguments, desc, interactive),
        layout_only=args.layout_only,
        verify_set=args.verify_set,
        key_files=arguments.key_files,
        plan_hash=args.plan_hash,
        journal=args.journal,
        finalize=arguments.finalize,
        skip_finalize=arguments.skip_finalize,
        after_action=None if args.debug_stop_after is None
        else crash.killed_after(args.debug_stop_after),
    )


def run_recover(args: argparse.Namespace) -> int:
    confirmed = bool(args.yes or args.plan_hash)
    terminal = Terminal.open()
    if not confirmed and terminal is None:
        raise BadInput(
            "recover erases the target disks and there is no terminal to confirm on",
            "pass --yes, or --plan-hash HASH with the hash `resurgo plan` printed",
        )
    full = not args.layout_only
    arguments = plan_arguments(args)
    with contextlib.ExitStack() as stack:
        steps = stack.enter_context(StepLines(args.step_lines)) if args.step_lines else None
        return _recover(args, arguments, full, terminal, confirmed, steps)


def _recover(args: argparse.Namespace, arguments: PlanArguments, full: bool,
             terminal: Terminal | None, confirmed: bool, steps: StepLines | None) -> int:
    with open_source(arguments.source, identity=arguments.identity,
                     read_manifests=full) as source:
        if full and source.loaded is None:
            raise BadInput(
                f"{args.source} is a description file: it holds no data to restore",
                "give the medium of the recovery set with --from, or add --layout-only",
            )
        options = recover_options(args, arguments, source.description,
                                  interactive=terminal is not None)
        disks = actual.read_actual_disks(read_paths(source.recovery_paths, arguments))
        plan = plan_recovery(source.description, disks, options)
        with shown(args.json, _shown(args, source.name)) as on_event:
            report = recover_set(
                source.loaded, plan, options, steps.wrap(on_event) if steps else on_event,
                confirm=None if confirmed or terminal is None else terminal.confirm,
                ask_secret=getpass.getpass if terminal is not None else None,
            )
    reports.keep(report.data())
    if report.restore is not None and not options.skip_finalize:
        # Data was restored (and may be changed): the recovered system keeps the report of
        # its recovery, whose copy in the rescue's RAM is lost at power-off.
        reports.copy_into(Path(plan.root))
    if args.json:
        sys.stdout.write(json.dumps(report.data(), indent=2) + "\n")
    if report.refused is not None:
        raise report.refused
    return report.exit_code


def _shown(args: argparse.Namespace, source: str) -> OnEvent:
    """Prints the events as recover always did: the plan exactly as `resurgo plan` shows
    it (its hash covers all of it) before anything is asked or done, then each step; with
    --json only the warnings (on stderr)."""

    def show(event: Event) -> None:
        if isinstance(event, Warned):
            print(f"resurgo: {event.message}", file=sys.stderr, flush=True)
        elif args.json:
            return
        elif isinstance(event, PlanReady):
            extra = section(event.plan, skip=args.no_finalize)
            if args.layout_only:
                extra = [*extra, "--layout-only: only the actions above are executed; no "
                         "command runs and the system is not finalized"]
            sys.stdout.write(text(event.plan, source, extra))
            sys.stdout.flush()
        else:
            line = event_text(event)
            if line is not None:
                print(line, flush=True)

    return show
