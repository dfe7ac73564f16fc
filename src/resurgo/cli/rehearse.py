"""resurgo rehearse --from MEDIUM [--set ID | --host H | --all-hosts]: prove that a recovery
set restores and boots, in a virtual machine (recovery.rehearse).

Exit 0 every set rehearsed passed; 1 one failed (its report names the failing step); 2 bad
input; 3 a precondition does not hold (qemu, xorriso or mke2fs missing, no room in the
work directory, a network medium the rescue cannot be handed: no --ssh-key, a key with a
passphrase, no S3 credentials, an https endpoint on the loopback, no --cifs-credentials; an
encrypted set without --identity, or with one the rescue cannot use unattended, or whose
rescue image takes no identity from its key medium; OVMF missing for UEFI);
4 a set is not authentic; 5 a set is damaged or incomplete; 6 --identity does not open
an encrypted set.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from resurgo import private, signing
from resurgo.cli.medium import MEDIUM_HELP, add_medium_arguments, medium_options
from resurgo.cli.output import emit, progress, warn
from resurgo.cli.reports import reported
from resurgo.errors import BadInput
from resurgo.media import open_medium
from resurgo.recovery.rehearse import (
    DEFAULT_WORK_DIR,
    BuildOptions,
    RehearseOptions,
    check_medium_url,
    rehearse_sets,
)
from resurgo.rehearse.machine import Accel, Bus, FirmwareChoice

EXIT_CODES = ("Exit 0 passed; 1 failed (the report names the failing step); 2 bad input; "
              "3 a precondition does not hold (qemu, xorriso or mke2fs missing, no room in "
              "the work directory, a network medium the rescue cannot be handed: no "
              "--ssh-key, a key with a passphrase, no S3 credentials, an https endpoint on "
              "the loopback, no --cifs-credentials; an encrypted set without --identity, "
              "or with an identity that asks for a passphrase or an age plugin, or whose "
              "rescue image takes no identity from its key medium; no OVMF for UEFI); "
              "4 a set is not authentic; 5 a set is damaged or incomplete; 6 --identity "
              "does not open an encrypted set.")
MAX_MEMORY = 1 << 20
MAX_CPUS = 64


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "rehearse",
        parents=[common],
        help="prove a recovery set restores and boots, in a virtual machine",
        description="Rehearse the recovery of a set, the real path: its own rescue image "
        "(built as `resurgo rescue` would when it has none) boots in qemu (KVM when a probe "
        "boot under it works, else software emulation) with blank sparse disk images sized "
        "as the saved disks, and the set on a disk of its own (a directory medium) or, "
        "for an sftp://, s3://, nfs:// or cifs:// medium, a NIC on qemu's user network to "
        "the server the host uses (a server on the host's loopback reached as 10.0.2.2, "
        "an SFTP server's host key pinned for that name, the host's S3 endpoint and NFS "
        "version) and the host's credentials for it (--ssh-key's file, the S3 keys, "
        "--cifs-credentials) on a key disk of the run's own, 0600, removed once the rescue "
        "is done (an encrypted set's --identity too, opened on the host first); "
        "it recovers unattended and powers off; the recovered disks then boot alone, "
        "without a network, and check "
        "from inside: the default target reached, no unit failed that was not failed at "
        "the save, every fstab entry mounted, swap on, the canary file save wrote intact, "
        "hostname and machine-id as saved, the network configuration naming an interface "
        "that exists. The report gives pass or fail, the failing step with the console's "
        "last lines, the time of each phase (rescue boot, set checks, layout, restore, "
        "finalize, check, first boot, total) and the set's age; it is stored beside the "
        "set (rehearsal.json, signed with --sign-key) and recorded for `resurgo status`. "
        "No real disk is touched: only the run's own files in the work directory, removed "
        "at the end unless --keep; qemu is stopped on every path out, Ctrl-C and SIGTERM "
        "included. " + EXIT_CODES,
    )
    p.add_argument("--from", dest="source", required=True, metavar="MEDIUM",
                   help=MEDIUM_HELP + " (rehearse: a directory, sftp:// with --ssh-key, "
                   "s3://, nfs:// or cifs:// with --cifs-credentials; a share is mounted "
                   "read-write, for the report stored beside the set)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--set", metavar="ID",
                       help="the set to rehearse (default: the newest of this host, or the "
                       "newest when the medium holds one host's sets)")
    which.add_argument("--host", metavar="HOST", help="the newest set of HOST")
    which.add_argument("--all-hosts", action="store_true",
                       help="the newest set of each host on the medium, one after the "
                       "other (one report each; exit 1 when any failed)")
    vm = p.add_argument_group("virtual machine")
    vm.add_argument("--disk-bus", choices=[str(b) for b in Bus], default=str(Bus.VIRTIO),
                    help="the bus of the disks (default: virtio); another bus than the "
                    "saved machine's rehearses the recovery onto other hardware")
    vm.add_argument("--firmware", choices=[str(f) for f in FirmwareChoice],
                    default=str(FirmwareChoice.AUTO),
                    help="bios (SeaBIOS) or uefi (OVMF); auto (default): the one the set "
                    "was saved on")
    vm.add_argument("--grow", type=int, default=0, metavar="PCT",
                    help="make the disks PCT percent larger than the saved ones (default 0)")
    vm.add_argument("--memory", type=int, default=2048, metavar="MIB",
                    help="the virtual machine's memory (default 2048 MiB)")
    vm.add_argument("--cpus", type=int, default=None, metavar="N",
                    help="its virtual CPUs (default: 2, or 1 on a one-core machine)")
    vm.add_argument("--accel", choices=["auto", "kvm", "tcg"], default="auto",
                    help="kvm, tcg (software emulation) or auto (default): KVM when "
                    "/dev/kvm is usable and a short probe boot under it starts the kernel")
    vm.add_argument("--rescue-timeout", type=float, metavar="SECONDS",
                    help="how long the rescue may take to recover and power off (default: "
                    "20 min under emulation, 7 under KVM, plus 10 (2) per GiB of data)")
    vm.add_argument("--boot-timeout", type=float, metavar="SECONDS",
                    help="how long the recovered system may take to boot and report its "
                    "check (default: 900 under emulation, 300 under KVM)")
    p.add_argument("--work-dir", type=Path, default=None, metavar="DIR",
                   help=f"where the disk images and consoles go, in a directory of the "
                   f"run's own (default {DEFAULT_WORK_DIR}); it must have room for the "
                   "data the set restores, the set and the rescue (checked first: exit 3), "
                   "and be a directory of this user's that no one else can write (not a "
                   "symbolic link: exit 3)")
    p.add_argument("--identity", type=Path, metavar="FILE",
                   help="the age identity file (secret key) of encrypted sets: checked on "
                   "the host against the set first (its manifests and sealed files opened "
                   "with it: exit 6 when it cannot, exit 3 without it), then handed to the "
                   "rescue as its key medium's age-identity on the run's key disk (never "
                   "on a command line, in the rescue image or in a log); without a "
                   "passphrase (the rescue is unattended)")
    p.add_argument("--keep", action="store_true",
                   help="keep the run's files (disk images, consoles' logs) instead of "
                   "removing them at the end")
    p.add_argument("--report", type=Path, metavar="FILE",
                   help="also write the JSON report to FILE (0600)")
    p.add_argument("--sign-key", type=Path, metavar="FILE",
                   help="sign the report stored beside the set (rehearsal.json.sig, "
                   f"namespace {signing.REHEARSAL_NAMESPACE}) with this SSH key")
    p.add_argument("--state-dir", type=Path, metavar="DIR",
                   help="where the result is recorded for status (default "
                   "/var/lib/resurgo): rehearse-HOST.json")
    build = p.add_argument_group(
        "rescue image", "for a set that holds none, the image is built as `resurgo rescue` "
        "builds it, with these options")
    build.add_argument("--sysroot", type=Path, default=Path("/"), metavar="DIR",
                       help="take the programs, libraries and Python from DIR (default /)")
    build.add_argument("--kernel-root", type=Path, metavar="DIR",
                       help="take the kernel, its modules and firmware from DIR")
    build.add_argument("--kernel-version", metavar="VERSION", help="the kernel to use")
    build.add_argument("--add-module", action="append", default=[], metavar="NAME",
                       help="also carry this kernel module (repeatable)")
    build.add_argument("--add-program", action="append", default=[], metavar="NAME",
                       help="also carry this program (repeatable)")
    add_medium_arguments(p)
    reported(p, "rehearse")
    p.set_defaults(handler=run)


def options(args: argparse.Namespace) -> RehearseOptions:
    from resurgo.recovery.status import host_name

    if not 0 <= args.grow <= 1000:
        raise BadInput(f"--grow {args.grow}: a percentage from 0 to 1000")
    if not 256 <= args.memory <= MAX_MEMORY:
        raise BadInput(f"--memory {args.memory}: MiB from 256 to {MAX_MEMORY}")
    cpus = args.cpus if args.cpus is not None else min(2, os.cpu_count() or 1)
    if not 1 <= cpus <= MAX_CPUS:
        raise BadInput(f"--cpus {cpus}: from 1 to {MAX_CPUS}")
    for name in ("rescue_timeout", "boot_timeout"):
        value = getattr(args, name)
        if value is not None and not 1 <= value <= 7 * 86400:
            raise BadInput(f"--{name.replace('_', '-')} {value}: seconds, at least 1")
    for name in ("sysroot", "kernel_root"):
        value = getattr(args, name)
        if value is not None and not value.is_dir():
            raise BadInput(f"--{name.replace('_', '-')} {value}: not a directory")
    if args.work_dir is not None and args.work_dir.exists() and not args.work_dir.is_dir():
        raise BadInput(f"--work-dir {args.work_dir}: not a directory")
    sign_key = signing.SignKey.load(args.sign_key) if args.sign_key else None
    return RehearseOptions(
        set_id=args.set, host=args.host, all_hosts=args.all_hosts,
        this_host=host_name(Path("/")), bus=Bus(args.disk_bus),
        firmware=FirmwareChoice(args.firmware), grow=args.grow, memory_mib=args.memory,
        cpus=cpus, accel=None if args.accel == "auto" else Accel(args.accel),
        work_dir=args.work_dir or DEFAULT_WORK_DIR, keep=args.keep,
        rescue_timeout=args.rescue_timeout, boot_timeout=args.boot_timeout,
        build=BuildOptions(args.sysroot, args.kernel_root, args.kernel_version,
                           tuple(args.add_module), tuple(args.add_program)),
        sign_key=sign_key, state_dir=args.state_dir,
        medium=medium_options(args, writes=True), identity=args.identity,
    )


class Stopped(KeyboardInterrupt):
    """SIGTERM (systemctl stop): the rehearsal ends as for Ctrl-C, qemu stopped and its
    files removed on the way out."""


@contextlib.contextmanager
def terminated_as_interrupt() -> Iterator[None]:
    def stop(_signum: int, _frame: FrameType | None) -> None:
        raise Stopped

    try:
        before = signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread: leave it
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def run(args: argparse.Namespace) -> int:
    opts = options(args)
    check_medium_url(args.source)
    say = progress(args.json)
    # Read-write: the report is stored beside the set (a share is mounted as asked).
    with terminated_as_interrupt(), open_medium(args.source, opts.medium) as medium:
        report = rehearse_sets(medium, opts, say)
    for w in report.warnings:
        warn(w)
    if args.report is not None:
        try:
            private.replace_bytes(args.report, (json.dumps(report.data(), indent=2) + "\n")
                                  .encode())
        except OSError as e:
            warn(f"--report {args.report}: {e.strerror}")
    emit(report, args.json)
    return report.exit_code
