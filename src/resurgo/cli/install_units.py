"""resurgo install-units [--root DIR] [--enable] [--force]: the systemd units in place.

Exit 0 installed (or already there); 1 systemctl failed or the files could not be
written; 3 a unit was changed since resurgo installed it (not overwritten without --force).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from resurgo.cli.output import emit
from resurgo.errors import ExitCode
from resurgo.systemd.install import UNIT_DIR, UNITS, InstallOptions, install_units


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "install-units",
        parents=[common],
        help="install the systemd units that save a recovery set every night",
        description=f"Write {', '.join(UNITS)} to DIR/{UNIT_DIR} (mode 0644): the service "
        "runs `resurgo save` with no options, as /etc/resurgo/resurgo.toml says; the timer "
        "starts it every night (01:00 plus a fixed random delay of up to 2 h, made up at "
        "boot when missed); resurgo-rehearse.service runs `resurgo rehearse` likewise, "
        "and its timer (weekly, Sunday 05:00) is enabled by hand. Installing again "
        "changes nothing; a unit changed since it was installed is not overwritten "
        "without --force (local changes belong in a drop-in: systemctl edit UNIT). Exit 0 "
        "installed; 1 failed (files, systemctl); 3 a unit was "
        "changed here.",
    )
    p.add_argument("--root", type=Path, default=Path("/"), metavar="DIR",
                   help="install into the system at DIR (default: this one)")
    p.add_argument("--enable", action="store_true",
                   help="enable the timer: on this system systemctl daemon-reload and "
                   "enable --now (skipped with a message when systemd is not running); "
                   "under --root, its timers.target.wants link")
    p.add_argument("--force", action="store_true",
                   help="overwrite units changed since they were installed")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    report = install_units(InstallOptions(root=args.root, enable=args.enable,
                                          force=args.force))
    emit(report, args.json)
    return ExitCode.OK
