"""resurgo verify --from MEDIUM --root MNT: the restored trees against their set's manifests.

Every entry of every filesystem (and btrfs subvolume) the set holds is compared with the
tree mounted under MNT: content (read and hashed again) and metadata. What finalize
changed on purpose (recover records it in its state directory) is reported apart and does
not count; without that record it counts as a difference.

Exit 0 no difference; 1 a difference (listed by path) or a tree that could not be read;
2 bad input; 3 an encrypted set without --identity; 4 a set not signed by the trusted
signers; 5 the set is damaged or incomplete (a manifest among others); 6 the identity
cannot decrypt it.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from resurgo.cli.output import emit
from resurgo.cli.progress import shown
from resurgo.cli.reports import reported
from resurgo.cli.source import add_source_arguments, source_options
from resurgo.errors import BadInput, PreconditionFailed
from resurgo.pool.check import check_packages
from resurgo.recovery.events import Event
from resurgo.recovery.report import event_text
from resurgo.recovery.source import open_source
from resurgo.recovery.verify import VerifyOptions, verify_restored


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "verify",
        parents=[common],
        help="check a restored system against its recovery set's manifests",
        description="Compare every file, directory, link and device of the trees mounted "
        "under --root with the manifests of the recovery set: content and metadata (mode, "
        "owner, times, xattrs, ACLs, capabilities, hard links, device numbers), the files "
        "a package-aware set takes from its packages included; or, with --packages ROOT, "
        "the package files of the system at ROOT against the set's catalog. Exit 0 no "
        "difference; 1 differences (listed by path); 2 bad input; 3 an encrypted set "
        "without --identity; 4 not authentic; 5 the set is damaged or incomplete; 6 the "
        "identity cannot decrypt it.",
    )
    add_source_arguments(p, description_file=False)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--root", type=Path, metavar="MNT",
                       help="where the restored system is mounted (as recover mounted it)")
    which.add_argument("--packages", type=Path, metavar="ROOT",
                       help="check the package files of the system at ROOT (a restored "
                       "one, or / for this one) against the set's catalog: each file's "
                       "sha256 and mode, as debsums does, without trusting that system's "
                       "package database")
    p.add_argument("--identity", type=Path, metavar="FILE",
                   help="the age identity file (secret key) of an encrypted set")
    p.add_argument("--metadata-only", action="store_true",
                   help="do not read the files' content again")
    reported(p, "verify")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.packages is not None:
        return _packages(args)
    options = VerifyOptions(root=args.root, content=not args.metadata_only)
    if not options.root.is_dir():
        raise BadInput(f"--root {options.root}: not a directory")
    from resurgo import run as runner

    if not runner.is_root():
        raise PreconditionFailed("verify needs root (it reads every file and mounts private "
                                 "views of the filesystems)", "run resurgo as root")

    def said(event: Event) -> None:
        line = None if args.json else event_text(event)
        if line is not None:
            print(line, flush=True)

    with open_source(source_options(args), identity=args.identity,
                     read_manifests=True) as source, shown(args.json, said) as on_event:
        assert source.loaded is not None
        verified = verify_restored(source.loaded, options, on_event)
    emit(verified, args.json)
    return verified.exit_code


def _packages(args: argparse.Namespace) -> int:
    root: Path = args.packages
    if not root.is_dir():
        raise BadInput(f"--packages {root}: not a directory")
    with open_source(source_options(args), identity=args.identity,
                     read_manifests=False) as source:
        assert source.loaded is not None
        checked = check_packages(source.loaded, root)
    emit(checked, args.json)
    return checked.exit_code
