"""resurgo doctor [--job save|rescue|recover|all]: can this machine run each job?

Exit 0 every chosen job can run; 2 bad input; 3 a job cannot (what is missing is listed,
with the Debian and Fedora packages to install).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from resurgo.cli.medium import MEDIUM_HELP, add_medium_arguments, medium_options
from resurgo.cli.output import emit
from resurgo.doctor import JOBS, DoctorOptions, examine
from resurgo.needs import Job

CHOICES = (*(str(j) for j in JOBS), "all")


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "doctor",
        parents=[common],
        help="check that this machine can save, build the rescue image and recover",
        description="Check this machine for each job, changing nothing: the programs it "
        "runs (and their versions where a minimum matters), the kernel's filesystems and "
        "device-mapper/md support, the medium reachable and the keys readable when given, "
        "the compiled restore path. Lists what is there and what is missing, with the "
        "package to install on Debian/Ubuntu and on Fedora/RHEL. Exit 0 every chosen job "
        "can run; 2 bad input; 3 a job cannot.",
    )
    p.add_argument("--job", choices=CHOICES, default="all",
                   help="the job to check (default: all): save, rescue (building the rescue "
                   "image, which save does too), recover")
    p.add_argument("--to", metavar="MEDIUM",
                   help=f"the medium save writes to: reachable, writable. {MEDIUM_HELP}")
    p.add_argument("--from", dest="source", metavar="MEDIUM",
                   help="the medium recover reads from (default: --to's)")
    p.add_argument("--root", type=Path, default=Path("/"), metavar="PATH",
                   help="the system save would save (default: the running system)")
    p.add_argument("--sign-key", type=Path, metavar="FILE", help="save's signing key: readable")
    p.add_argument("--identity", type=Path, action="append", default=[], metavar="FILE",
                   help="recover's age identity file: readable (repeat)")
    p.add_argument("--encrypt-to", action="append", default=[], metavar="RECIPIENT",
                   help="save encrypts the archives (age is then needed)")
    add_medium_arguments(p)
    p.set_defaults(handler=run)


def options(args: argparse.Namespace) -> DoctorOptions:
    jobs = JOBS if args.job == "all" else (Job(args.job),)
    mopts = medium_options(args)  # its trust file: --trust, else the default one if any
    save_medium = args.to or args.source
    recover_medium = args.source or args.to
    return DoctorOptions(
        jobs=jobs,
        medium=save_medium,
        recover_medium=recover_medium,
        medium_options=mopts,
        sign_key=args.sign_key,
        trust=mopts.trust_file,
        identities=tuple(args.identity),
        encrypt=bool(args.encrypt_to),
        root=args.root,
    )


def run(args: argparse.Namespace) -> int:
    report = examine(options(args))
    emit(report, args.json)
    return report.exit_code
