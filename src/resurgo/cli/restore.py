"""resurgo restore --from MEDIUM [--set ID] --path P... --to DIR: chosen files of a set.

Exit 0 restored and identical to the set; 1 failed (or a restored entry differs from the
set); 2 bad input (a path not in the set, a relative path or one with '..', --to not a
directory); 3 a precondition (not root, an encrypted set without --identity, something in
DIR where a file is to be restored without --overwrite, a symlink or file in DIR where a
directory is to be restored); 4 not authentic; 5 the set is damaged or incomplete; 6 the
identity cannot decrypt it.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from resurgo import run as runner
from resurgo.cli.output import emit, progress
from resurgo.cli.progress import shown
from resurgo.cli.reports import reported
from resurgo.cli.source import add_source_arguments, source_options
from resurgo.errors import PreconditionFailed
from resurgo.recovery.events import Progress, Step
from resurgo.recovery.restorepaths import RestorePathsOptions, restore_paths
from resurgo.recovery.source import open_source
from resurgo.recovery.systempaths import parse


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "restore",
        parents=[common],
        help="restore chosen files or directories of a recovery set into a directory",
        description="Restore each --path (an absolute path of the saved system: a file, or "
        "a directory with everything below it) at that path below --to DIR (/etc/hostname "
        "into DIR/etc/hostname), with all its metadata: owner, mode, times, xattrs, ACLs, "
        "capabilities, hard links among what is restored, sparse files, symlinks, devices "
        "(a package-aware set's files that the package pool holds are written from their "
        "packages, each package read whole and its sha256 checked first). The directories "
        "on the way get their saved metadata; DIR itself is left as it is. "
        "Nothing is written until everything is checked: a symlink or a file in DIR where a "
        "directory is to be restored is refused (never followed), and so is anything in DIR "
        "where a file, link or device is to be restored, unless --overwrite (then a file or "
        "symlink there is replaced; directories are merged, their other contents stay). "
        "Every entry restored is compared again with the set (content digest and "
        "metadata). Exit 0 restored and "
        "identical; 1 failed or differs; 2 bad input (a path not in the set, '..', --to not "
        "a directory); 3 a precondition (not root, no --identity for an encrypted set, DIR "
        "in the way); 4 not authentic; 5 the set is damaged or incomplete; 6 the identity "
        "cannot decrypt it.",
    )
    add_source_arguments(p, description_file=False)
    p.add_argument("--path", action="append", required=True, metavar="PATH",
                   help="a path of the saved system to restore (repeatable)")
    p.add_argument("--to", type=Path, required=True, metavar="DIR",
                   help="the directory to restore into (it must exist)")
    p.add_argument("--identity", type=Path, metavar="FILE",
                   help="the age identity file (secret key) of an encrypted set")
    p.add_argument("--overwrite", action="store_true",
                   help="replace files and symlinks (never followed) that stand where a "
                   "file, link or device is to be restored (default: refuse, exit 3; a "
                   "directory there is always refused)")
    reported(p, "restore")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    options = RestorePathsOptions(
        paths=tuple(parse(p) for p in args.path), target=args.to, overwrite=args.overwrite)
    if not runner.is_root():
        raise PreconditionFailed("restore needs root (it restores owners, devices and "
                                 "attributes)", "run resurgo as root")
    source = source_options(args)
    with open_source(source, identity=args.identity, read_manifests=True,
                     read_packages=False) as opened:
        assert opened.loaded is not None
        say = progress(args.json)
        # The lines go through the events: a terminal's progress line is erased first.
        with shown(args.json, lambda e: say(e.line) if isinstance(e, Progress) else None) \
                as on_event:
            report = restore_paths(opened.loaded, source.location, options,
                                   lambda line: on_event(Progress(Step.RESTORE, line)),
                                   on_event)
    emit(report, args.json)
    return report.exit_code
