"""resurgo save --to MEDIUM: describe this system and write a recovery set.

Exit 0 the set is committed; 1 the save failed (the medium keeps the sets it had);
2 bad input; 3 a precondition fails (a program the save runs is missing, or with
--require-rescue what the rescue image's build needs; an incremental set without a full
one to build on);
4 the parent of an incremental set is not signed by the trusted signers; 5 it is
damaged or incomplete. A pre-save hook that fails fails the save (exit 1) after the
post-save hook has run; a hook's program that is not there is exit 3. One save at a
time per machine (recovery.savelock): a second one exits with 3 at once, or waits with
--wait.
"""

from __future__ import annotations

import argparse
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from resurgo import signing
from resurgo.cli.medium import MEDIUM_HELP, add_medium_arguments, medium_options
from resurgo.cli.output import emit, progress, warn
from resurgo.cli.progress import shown
from resurgo.cli.reports import reported
from resurgo.cli.rescue import add_image_access_arguments
from resurgo.cli.retention import add_retention_arguments, retention
from resurgo.config import Config
from resurgo.engine.pipes import DEFAULT_LEVEL
from resurgo.errors import BadInput, ExitCode, PreconditionFailed
from resurgo.media import open_medium
from resurgo.pool.saving import PackagesMode
from resurgo.recovery import hooks
from resurgo.recovery.events import Event
from resurgo.recovery.initramfsout import InitramfsMode
from resurgo.recovery.lvmsnapshots import DEFAULT_SIZE_PERCENT
from resurgo.recovery.report import event_text
from resurgo.recovery.save import RescueChoices, SaveOptions, save_set
from resurgo.recovery.savelock import save_lock
from resurgo.recovery.snapshots import SnapshotMode
from resurgo.rescue.access import ImageAccess


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "save",
        parents=[common],
        help="write a recovery set: description, catalog, archives (and rescue image)",
        description="Describe the system (the running one, or one mounted at --root) and "
        "write a recovery set to the medium: the description and its digest, the catalog, "
        "one archive and manifest per filesystem and btrfs subvolume, the rescue image. "
        "The set appears only when complete. Left out: the contents of /proc, /sys, /dev, "
        "/run and /tmp, --exclude paths, and the set itself. Every program the save runs, "
        "and what the rescue image's build needs, is checked before anything is written "
        "(see resurgo doctor). Exit 0 saved; 1 failed (with --require-rescue: the rescue "
        "image's build failed); 2 bad input; 3 a program missing (with --require-rescue: "
        "anything the rescue build needs), --incremental with no set to build on, "
        "--snapshot required and a filesystem that cannot be snapshotted (or a volume group "
        "without room for its snapshot), or another save "
        "of the system running on this machine (without --wait); 4 or 5 its parent set is "
        "not authentic, or damaged. --pre-save and --post-save run commands just "
        "before and just after the archives are read (to quiesce applications): the post "
        "hook runs whatever happened (a failure, Ctrl-C); a failing pre hook fails the save "
        "(exit 1) once the post hook has run; a hook's program missing is exit 3. After a "
        "set is saved, the --keep-* rules (as for prune) delete the older sets of this host "
        "they do not keep. --packages pool leaves the unchanged package files out of the "
        "archives: the medium's package pool holds their packages (a recovery then needs "
        "that pool, on the same medium: a directory, SFTP, NFS, CIFS or S3 medium); a "
        "floppy image, which holds no archives, is exit 2.",
    )
    p.add_argument("--to", dest="medium", required=True, metavar="MEDIUM", help=MEDIUM_HELP)
    p.add_argument("--root", type=Path, default=Path("/"), metavar="PATH",
                   help="save the system mounted at PATH (default: the running system)")
    p.add_argument("--incremental", action="store_true",
                   help="store only what changed since the newest set of this host on the "
                   "medium")
    p.add_argument("--encrypt-to", action="append", default=[], metavar="RECIPIENT",
                   help="encrypt the archives with age for this recipient (age1... public key "
                   "or ssh public key; repeat for several)")
    p.add_argument("--exclude", action="append", default=[], metavar="PATH",
                   help="leave out this path of the saved system and all below it (repeat)")
    p.add_argument("--exclude-disk", action="append", default=[], metavar="DEV",
                   help="leave this disk out of the description and the set, e.g. the disk "
                   "the set is written to (repeat)")
    p.add_argument("--no-rescue", action="store_true", help="do not build the rescue image")
    p.add_argument("--wait", action="store_true",
                   help="when another save of this system runs on this machine, wait for it "
                   "to end (default: exit 3 at once)")
    p.add_argument("--require-rescue", action="store_true",
                   help="a rescue image that cannot be built is an error: refused before "
                   "anything is written (exit 3) when this machine lacks what its build "
                   "needs, no set saved (exit 1) when the build fails; without it the set "
                   "is saved without the image, with a warning")
    p.add_argument("--sign-key", type=Path, metavar="FILE",
                   help="sign the set with this SSH key (ed25519; a passphrase-protected key "
                   "through ssh-agent: give its .pub file); the rescue image then trusts "
                   "--trust's signers, or this key alone")
    p.add_argument("--no-catalog", action="store_true",
                   help="skip the catalog of unchanged package files")
    p.add_argument("--compression-level", type=int, default=DEFAULT_LEVEL, metavar="N",
                   help=f"zstd level, 1 (fastest) to 19 (smallest); default {DEFAULT_LEVEL}")
    p.add_argument("--snapshot", choices=[m.value for m in SnapshotMode], default="auto",
                   help="read each btrfs tree from a read-only snapshot, and each "
                   "filesystem on an LVM volume from an LVM snapshot (thin for a thin "
                   "volume), deleted when done (auto, the default: where one can be taken, "
                   "the others read live, the report says which way each was read; "
                   "required: exit 3 when a filesystem cannot be snapshotted; off: every "
                   "tree read live)")
    p.add_argument("--snapshot-size", type=int, default=DEFAULT_SIZE_PERCENT,
                   metavar="PERCENT",
                   help="a classic (not thin) LVM snapshot's room for the changes made "
                   "while it is read, in percent of its volume (1 to 100, rounded up to "
                   f"whole extents; default {DEFAULT_SIZE_PERCENT}): refused when the volume "
                   "group has less free (auto: read live; required: exit 3); one that "
                   "overflows fails the save (exit 1)")
    p.add_argument("--packages", choices=[m.value for m in PackagesMode], default="off",
                   help="pool: leave the files the catalog lists as unchanged out of the "
                   "archives and keep their packages (.deb) in the medium's package pool, "
                   "shared by every host and set on it, taken from the package cache or "
                   "downloaded with apt-get download; a package that cannot be had leaves "
                   "its files in the archive; off (the default): every file archived")
    p.add_argument("--initramfs", choices=[m.value for m in InitramfsMode], default="keep",
                   help="rebuild: leave each installed kernel's initramfs image out of the "
                   "set (tens of MiB each, made on this machine from its packages and "
                   "configuration); the recovery's finalize makes them anew in the restored "
                   "system with its own update-initramfs or dracut, in a chroot (seconds on "
                   "hardware, minutes under emulation), and recover --no-finalize then "
                   "leaves a system without them; keep (the default): archive them")
    p.add_argument("--pre-save", metavar="COMMAND",
                   help="run COMMAND (split into words as a shell would, run without one) "
                   "just before the archives are read, e.g. to pause a database; its "
                   "failure fails the save (exit 1) after --post-save has run")
    p.add_argument("--post-save", metavar="COMMAND",
                   help="run COMMAND just after the archives are read, whatever happened "
                   "(failure, Ctrl-C: RESURGO_SAVE=ok|failed|interrupted in its "
                   "environment); its failure is a warning")
    add_retention_arguments(p, keep_alias=True)
    add_medium_arguments(p)
    add_image_access_arguments(p)
    reported(p, "save")
    p.set_defaults(handler=run)


def options(args: argparse.Namespace) -> SaveOptions:
    if args.require_rescue and args.no_rescue:
        raise BadInput("--require-rescue and --no-rescue contradict each other")
    policy = retention(args)
    if not 1 <= args.snapshot_size <= 100:
        raise BadInput(f"--snapshot-size {args.snapshot_size}: give a percent from 1 to 100")
    if not 1 <= args.compression_level <= 19:
        raise BadInput(f"--compression-level {args.compression_level}: give a level from 1 to 19")
    from resurgo import run as runner

    if not runner.is_root():
        raise PreconditionFailed("saving a system needs root (it reads every file and the "
                                 "devices)", "run resurgo as root")
    return SaveOptions(
        root=args.root,
        incremental=args.incremental,
        recipients=tuple(args.encrypt_to),
        excludes=tuple(args.exclude),
        exclude_disks=tuple(args.exclude_disk),
        retention=None if policy.empty else policy,
        rescue=not args.no_rescue,
        require_rescue=args.require_rescue,
        catalog=not args.no_catalog,
        level=args.compression_level,
        sign_key=signing.SignKey.load(args.sign_key) if args.sign_key else None,
        image=replace(rescue_choices(getattr(args, "configuration", None) or Config()),
                      access=_image_access(args)),
        snapshot=SnapshotMode(args.snapshot),
        snapshot_size=args.snapshot_size,
        packages=PackagesMode(args.packages),
        initramfs=InitramfsMode(args.initramfs),
        pre_save=hooks.parse(args.pre_save, "--pre-save") if args.pre_save else None,
        post_save=hooks.parse(args.post_save, "--post-save") if args.post_save else None,
    )


def _image_access(args: argparse.Namespace) -> ImageAccess | None:
    """How the set's rescue image reaches this medium when it is a network one: its
    endpoint and CA, and with --embed-credentials the credentials save itself uses."""
    if "://" not in args.medium and not args.embed_credentials:
        return None
    import os

    from resurgo.rescue.access import image_access

    return image_access(args.medium, medium_options(args, writing=True),
                        embed=args.embed_credentials, environ=os.environ, home=Path.home())


def rescue_choices(config: Config) -> RescueChoices:
    """How the set's rescue image boots: the configuration's [rescue] table, which save
    has no options for (`resurgo rescue` has them, and takes the same keys)."""
    timeout = config.number("rescue.menu_timeout")
    return RescueChoices(
        unattended=config.flag("rescue.unattended"),
        after=config.text("rescue.after") or "poweroff",
        kernel_args=config.strings("rescue.kernel_args"),
        menu_timeout=RescueChoices.menu_timeout if timeout is None else timeout,
        modules=config.strings("rescue.modules"),
        programs=config.strings("rescue.programs"),
        compression_level=config.number("rescue.compression_level"),
        secure_boot=config.text("rescue.secure_boot") or "auto",
    )


def run(args: argparse.Namespace) -> int:
    opts = options(args)
    # Only a save may meet an SFTP server for the first time.
    say = progress(args.json)
    with save_lock(opts.root, args.medium, wait=args.wait), _stopped_like_ctrl_c(), \
            open_medium(args.medium, medium_options(args, writing=True)) as medium, \
            shown(args.json, lambda event: _said(say, event)) as on_event:
        report = save_set(medium, replace(opts, trust=medium.trust), on_event)
    for w in report.warnings:
        warn(w)
    emit(report, args.json)
    return ExitCode.OK


@contextmanager
def _stopped_like_ctrl_c() -> Iterator[None]:
    """SIGTERM (systemctl stop, a timeout) ends the save as Ctrl-C does: what was staged is
    removed and the medium's lease released, rather than left for the lease to expire."""
    def stop(_sig: int, _frame: object) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        yield  # signals reach the main thread only
        return
    old = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _said(say: Callable[[str], None], event: Event) -> None:
    line = event_text(event)
    if line is not None:
        say(line)
