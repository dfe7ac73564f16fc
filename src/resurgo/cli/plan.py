"""resurgo plan --from SOURCE: what a recovery would do to the actual disks, without writing.

SOURCE is the medium of a recovery set (its description is read from the set) or a
description file.

The plan lists the description's commands (each restore program with its arguments
exactly, and where it writes) and ends with what finalize will change once the data is
restored (the identity rewrites known in advance, the pairing of the network
interfaces, the commands), from the configuration the description carries. The plan
hash covers all of it: `recover --plan-hash` runs exactly what was shown.

Saved identities (UUIDs, PARTUUIDs, VG names) that a disk outside the targets shows (the
old disks still attached) are listed with what the recovery does about each: kept, made
anew (finalize rewrites what names them), or a failing precondition.

Exit 0 when the plan can be executed, 3 when a precondition fails (all are listed),
2 for bad input (a --map, --key-file or --net-map that does not parse or names nothing);
reading a set, 4 when it is not authentic, 5 when it is damaged or incomplete, 6 when the
--identity cannot decrypt its sealed files.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from resurgo.cli import finalizing
from resurgo.cli.output import emit
from resurgo.cli.source import add_source_arguments, source_options
from resurgo.errors import BadInput, ExitCode
from resurgo.finalize import FinalizeOptions
from resurgo.finalize.planned import finalized, plan_data, section
from resurgo.model import Description
from resurgo.plan import make_plan, render
from resurgo.plan.model import GrowPolicy, Plan, PlanOptions
from resurgo.probe import actual  # through the module: where tests give other disks
from resurgo.recovery.source import SourceOptions, open_source
from resurgo.run import which


def assignment(what: str) -> Any:
    def parse(value: str) -> tuple[str, str]:
        left, eq, right = value.partition("=")
        if not eq or not left.strip() or not right.strip():
            raise argparse.ArgumentTypeError(f"{value!r} is not {what}")
        return left.strip(), right.strip()

    return parse


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "plan",
        parents=[common],
        help="show what a recovery would do to the actual disks, without writing",
        description="Match the saved disks to this machine's disks, fit the saved layout "
        "to them, list every action in order and check every precondition. Nothing is "
        "written; saved identities that disks left alone show are listed with what the "
        "recovery does about each. Exit 0: the plan can be executed; 3: a precondition "
        "fails (a name the old disks use now among them); 2: bad input; "
        "4, 5, 6: the set is not authentic, damaged, or not decrypted by --identity.",
    )
    add_plan_arguments(p)
    # recover has its own --identity (it also opens the archives).
    p.add_argument(
        "--identity",
        type=Path,
        metavar="FILE",
        help="the age identity file (secret key) of an encrypted set: its sealed secret "
        "configuration files are read, so that the plan and its hash show what finalize "
        "changes in them, as recover --identity will",
    )
    p.set_defaults(handler=run)


def add_plan_arguments(p: argparse.ArgumentParser) -> None:
    """The options that decide a plan: shared by `plan` and `recover`, which must agree."""
    add_source_arguments(p, description_file=True)
    p.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="DEV",
        help="a disk recovery may use (repeat for several); default: every non-removable "
        "disk that holds neither the running system nor the recovery set",
    )
    p.add_argument(
        "--map",
        action="append",
        default=[],
        type=assignment("SAVED=ACTUAL, e.g. disk.sda=/dev/vdb"),
        metavar="SAVED=ACTUAL",
        help="put the saved disk SAVED (its id or path) on the actual disk ACTUAL",
    )
    p.add_argument(
        "--grow",
        choices=[g.value for g in GrowPolicy],
        default=GrowPolicy.DEFAULT.value,
        help="on a larger disk, give the extra to the system volume's partition "
        "(default) or spread it over every resizable partition (proportional)",
    )
    p.add_argument(
        "--key-file",
        action="append",
        default=[],
        type=assignment("ID=FILE, e.g. luks.sda3=/root/key"),
        metavar="ID=FILE",
        help="the key of the LUKS volume ID (repeat for several)",
    )
    p.add_argument(
        "--root",
        default="/mnt/resurgo",
        metavar="DIR",
        help="where the recreated filesystems are mounted during recovery (default: %(default)s)",
    )
    p.add_argument(
        "--net-map",
        action="append",
        default=[],
        type=assignment("SAVED=ACTUAL, e.g. eth0=enp3s0"),
        metavar="SAVED=ACTUAL",
        help="give the configuration of the saved network interface SAVED to this machine's "
        "interface ACTUAL (each an interface name or a MAC; repeat for several); the others "
        "pair by MAC, then in PCI order",
    )
    p.add_argument(
        "--new-identities",
        action="store_true",
        help="give every recreated filesystem, swap, LUKS volume, physical volume, md "
        "array, partition and partition table a new UUID, and have finalize rewrite what "
        "names them (fstab, crypttab, mdadm.conf, the kernel command line, GRUB); without "
        "it the saved ones are kept, except those a disk left alone shows where the tools "
        "would refuse them (btrfs, LVM, md: the plan lists each)",
    )
    p.add_argument(
        "--no-finalize",
        action="store_true",
        help="do not finalize: restore the files but leave the configuration, the "
        "initramfs and the bootloader as saved (plan: show no finalize preview)",
    )


@dataclass(frozen=True)
class PlanArguments:
    """The options of add_plan_arguments (and --identity), typed: what `plan` and
    `recover` read alike."""

    source: SourceOptions
    targets: tuple[str, ...]
    maps: tuple[tuple[str, str], ...]
    grow: GrowPolicy
    # (LUKS volume id, key file) pairs, as given.
    key_files: tuple[tuple[str, str], ...]
    root: str
    finalize: FinalizeOptions
    skip_finalize: bool
    identity: Path | None
    new_identities: bool = False


def plan_arguments(args: argparse.Namespace) -> PlanArguments:
    return PlanArguments(
        source=source_options(args),
        targets=tuple(args.target),
        maps=tuple(args.map),
        grow=GrowPolicy(args.grow),
        key_files=tuple(args.key_file),
        root=args.root,
        finalize=finalizing.options(args),
        skip_finalize=args.no_finalize,
        identity=args.identity,
        new_identities=args.new_identities,
    )


def _keys(desc_luks: set[str], pairs: Sequence[tuple[str, str]]) -> frozenset[str]:
    out = set()
    for vol, path in pairs:
        if vol not in desc_luks:
            known = ", ".join(sorted(desc_luks)) or "none"
            raise BadInput(
                f"--key-file {vol}={path}: the description has no LUKS volume {vol!r}",
                f"its LUKS volumes are: {known}",
            )
        if not os.access(path, os.R_OK) or not Path(path).is_file():
            raise BadInput(f"--key-file {vol}={path}: {path} is not a readable file")
        out.add(vol)
    return frozenset(out)


def read_paths(source_paths: Sequence[Path], arguments: PlanArguments) -> tuple[Path, ...]:
    """The local files plan and recover read: the set, the key files, the identity. The
    disks holding them are never targets (the rescue mounts a key stick, and a key read
    from a disk about to be wiped would be gone)."""
    paths = [*source_paths, *(Path(p) for _vol, p in arguments.key_files)]
    if arguments.identity is not None:
        paths.append(arguments.identity)
    return tuple(dict.fromkeys(paths))


def _disk_name(name: str) -> str:
    """A --target or --map disk as given, or the device a /dev/disk/by-* link points to."""
    if name.startswith("/dev/") and os.path.islink(name):
        return os.path.realpath(name)
    return name


PRODUCT_UUID = Path("/sys/class/dmi/id/product_uuid")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def machine_identity(path: Path = PRODUCT_UUID) -> str:
    """This machine's DMI product UUID, lower case; "" where there is none to read (no
    DMI, not root) or it is no UUID, or one firmware gives every machine (all 0 or all F)."""
    try:
        with open(path, "rb") as f:
            text = f.read(64).decode("ascii", "replace").strip().lower()
    except OSError:
        return ""
    if not _UUID.fullmatch(text) or set(text) <= {"0", "-"} or set(text) <= {"f", "-"}:
        return ""
    return text


def plan_options(arguments: PlanArguments, desc: Description, interactive: bool) -> PlanOptions:
    """The PlanOptions of these arguments for this description (BadInput for a --key-file
    naming no LUKS volume of it, or a file that cannot be read)."""
    return PlanOptions(
        targets=tuple(_disk_name(t) for t in arguments.targets),
        maps=tuple((s, _disk_name(a)) for s, a in arguments.maps),
        grow=arguments.grow,
        keys=_keys({v.id for v in desc.luks_volumes}, arguments.key_files),
        interactive=interactive,
        root=arguments.root,
        new_identities=arguments.new_identities,
        machine=machine_identity() if arguments.new_identities else "",
        which=which,
    )


@dataclass(frozen=True)
class ShownPlan:
    """A plan as `plan` prints it: the text ending with its hash, or its JSON (the
    finalize preview in it, the hash last)."""

    plan: Plan
    # How the plan names its source (a set on a medium, a description file).
    source: str
    skip_finalize: bool

    def text(self) -> str:
        return render.text(self.plan, self.source, section(self.plan, skip=self.skip_finalize))

    def data(self) -> dict[str, Any]:
        return plan_data(self.plan)


def run(args: argparse.Namespace) -> int:
    arguments = plan_arguments(args)
    with open_source(arguments.source, identity=arguments.identity) as source:
        desc = source.description
        options = plan_options(arguments, desc, sys.stdin.isatty())
        disks = actual.read_actual_disks(read_paths(source.recovery_paths, arguments))
        plan = finalized(desc, make_plan(desc, disks, options), arguments.finalize,
                         skip=arguments.skip_finalize)
    emit(ShownPlan(plan, source.name, arguments.skip_finalize), args.json)
    if not plan.ok:
        print(
            f"resurgo: the plan cannot be executed: {len(plan.failures)} precondition(s) fail",
            file=sys.stderr,
        )
        return ExitCode.PRECONDITION
    return ExitCode.OK
