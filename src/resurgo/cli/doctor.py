"""resurgo doctor [--job save|rescue|recover|all]: can this machine run each job?

What is not given on the command line comes from the configuration file (the medium, its
options, the keys, whether save builds the rescue image): doctor checks the jobs as they
are configured. Exit 0 every chosen job can run; 2 bad input (a configuration file that
is not valid among others); 3 a job cannot (what is missing is listed, with the Debian
and Fedora packages to install).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from resurgo import config as configuration
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
        "the compiled save and restore paths. Lists what is there and what is missing, with the "
        "package to install on Debian/Ubuntu and on Fedora/RHEL. Exit 0 every chosen job "
        "can run; 2 bad input; 3 a job cannot.",
    )
    p.add_argument("--job", choices=CHOICES, default="all",
                   help="the job to check (default: all configured: save, rescue (building "
                   "the rescue image, which save does unless rescue.build = false), recover)")
    p.add_argument("--to", metavar="MEDIUM",
                   help=f"the medium save writes to: reachable, writable. {MEDIUM_HELP}")
    p.add_argument("--from", dest="source", metavar="MEDIUM",
                   help="the medium recover reads from (default: --to's)")
    p.add_argument("--root", type=Path, default=Path("/"), metavar="PATH",
                   help="the system save would save (default: the running system)")
    p.add_argument("--sign-key", type=Path, metavar="FILE", help="save's signing key: readable")
    p.add_argument("--identity", type=Path, metavar="FILE",
                   help="recover's age identity file: readable")
    p.add_argument("--encrypt-to", action="append", default=[], metavar="RECIPIENT",
                   help="save encrypts the archives (age is then needed)")
    add_medium_arguments(p)
    p.set_defaults(handler=run)


# Medium options of the command line and the configuration keys they default to.
_MEDIUM_KEYS = {"s3_endpoint": "s3.endpoint", "s3_region": "s3.region",
                "ssh_key": "ssh.key", "ssh_known_hosts": "ssh.known_hosts", "trust": "trust",
                "cifs_credentials": "cifs.credentials"}
_MEDIUM_FLAGS = {"s3_insecure_http": "s3.insecure_http",
                 "ssh_strict_host_keys": "ssh.strict_host_keys"}


def _configured(args: argparse.Namespace, conf: configuration.Config) -> None:
    """The configuration's values where the command line gives none."""
    for attr, key in _MEDIUM_KEYS.items():
        if getattr(args, attr) is None and conf.get(key) is not None:
            setattr(args, attr, str(conf.get(key)))
    for attr, key in _MEDIUM_FLAGS.items():
        if not getattr(args, attr) and conf.get(key) is True:
            setattr(args, attr, True)


def _path(given: Path | None, value: object) -> Path | None:
    return given if given is not None else (Path(value) if isinstance(value, str) else None)


def options(args: argparse.Namespace) -> DoctorOptions:
    # main reads the file of this run (--config) and makes its keys the defaults of the
    # options they stand for; what only save's options take (the signing key, the
    # recipients, the rescue build) and --to are read here.
    conf = getattr(args, "configuration", None)
    if not isinstance(conf, configuration.Config):
        conf = configuration.load(getattr(args, "config", None))
    _configured(args, conf)
    if args.job != "all":
        jobs: tuple[Job, ...] = (Job(args.job),)
    else:
        # The jobs this machine is configured for: no rescue build when save makes none.
        jobs = tuple(j for j in JOBS if j is not Job.RESCUE or conf.get("rescue.build")
                     is not False)
    mopts = medium_options(args)  # its trust file: --trust, else the default one if any
    medium = conf.get("medium")
    configured = medium if isinstance(medium, str) else None
    identity = _path(args.identity, conf.get("identity"))
    return DoctorOptions(
        jobs=jobs,
        medium=args.to or args.source or configured,
        recover_medium=args.source or args.to or configured,
        medium_options=mopts,
        sign_key=_path(args.sign_key, conf.get("sign_key")),
        trust=mopts.trust_file,
        identities=(identity,) if identity is not None else (),
        encrypt=bool(args.encrypt_to or conf.get("encrypt_to")),
        root=args.root,
    )


def run(args: argparse.Namespace) -> int:
    report = examine(options(args))
    emit(report, args.json)
    return report.exit_code
