"""resurgo rescue --to PATH | --netboot DIR: build the bootable rescue image (a hybrid
BIOS/UEFI ISO), its network boot tree, or both from one build."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resurgo import signing
from resurgo.cli.medium import add_share_arguments, share_options
from resurgo.cli.output import emit
from resurgo.cli.progress import shown
from resurgo.errors import BadInput, ExitCode
from resurgo.progress import Amount
from resurgo.recovery.events import Advanced, Step

if TYPE_CHECKING:
    from resurgo.rescue import RescueOptions
    from resurgo.rescue.access import ImageAccess


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "rescue",
        parents=[common],
        help="build the bootable rescue image",
        description="Build a bootable ISO (BIOS and UEFI; a CD or, written with dd, a USB "
        "stick) from this machine's own kernel, drivers and tools, with Python and resurgo. "
        "It boots to a shell with resurgo ready; with resurgo.recover=auto on the kernel "
        "command line (the default boot entry with --unattended) it finds the recovery set "
        "and recovers the machine unattended. Needs dracut, grub-mkrescue with GRUB for "
        "i386-pc and x86_64-efi, xorriso, mtools and xz (resurgo doctor --job rescue names "
        "their packages). With --netboot, the same system as a network boot tree "
        "(PXE and UEFI HTTP boot). Exit codes: 0 built, 1 the build failed, 2 bad input "
        "(neither --to nor --netboot, a --netboot directory holding other files, a kernel "
        "argument a boot loader would read as its own), 3 a program or package missing.",
    )
    p.add_argument(
        "--to", dest="output", type=Path, metavar="PATH", help="the ISO to write"
    )
    p.add_argument(
        "--netboot",
        type=Path,
        metavar="DIR",
        help="write the network boot tree into DIR (made when missing; empty, or a tree "
        "resurgo wrote): the kernel and the initramfs, which is the whole rescue (no ISO, "
        "no root filesystem fetched later), boot.ipxe, PXELINUX's pxelinux.0 and "
        "pxelinux.cfg/default (when this machine has Debian's pxelinux and syslinux-common), "
        "GRUB netboot (grub-mknetdir: grub/i386-pc/core.0, grub/x86_64-efi/core.efi for "
        "UEFI PXE), with --to a copy of the ISO, rescue.iso, for UEFI HTTP boot (the "
        "firmware boots it as a RAM disk; --to inside DIR: exit 2), SHA256SUMS; every entry "
        "of the ISO's menu with the same kernel command line. Serve DIR as the TFTP (and "
        "HTTP) root; see the README's network boot section",
    )
    p.add_argument(
        "--description",
        type=Path,
        metavar="FILE",
        help="the description of the recovery set this image belongs to (copied in; "
        "the unattended recovery prefers the set that holds this very description)",
    )
    p.add_argument(
        "--from-url",
        metavar="URL",
        help="where the recovery set lives (a directory, sftp://, s3://): the unattended "
        "recovery looks there first",
    )
    p.add_argument(
        "--unattended",
        action="store_true",
        help="make the unattended recovery the default boot entry (it ERASES the target "
        "disks once the menu times out)",
    )
    p.add_argument(
        "--after",
        choices=["poweroff", "reboot", "shell"],
        default="poweroff",
        help="what the unattended entry does when it is done (default: poweroff)",
    )
    p.add_argument(
        "--kernel-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="add ARG to every boot entry's kernel command line, e.g. "
        "'resurgo.args=--map disk.sda=/dev/nvme0n1' or ip=dhcp (repeatable)",
    )
    p.add_argument(
        "--menu-timeout",
        type=int,
        default=5,
        metavar="SECONDS",
        help="how long the boot menu waits (default: 5; -1: until a key is pressed)",
    )
    p.add_argument(
        "--sysroot",
        type=Path,
        default=Path("/"),
        metavar="DIR",
        help="take the programs, libraries and Python from the system tree DIR "
        "(default: this machine)",
    )
    p.add_argument(
        "--kernel-root",
        type=Path,
        metavar="DIR",
        help="take the kernel, its modules and firmware from the tree DIR (default: "
        "--sysroot): for a build machine whose own kernel has no modules on disk",
    )
    p.add_argument(
        "--kernel-version",
        metavar="VERSION",
        help="the kernel to use (default: the running one, else the newest)",
    )
    p.add_argument(
        "--add-module",
        action="append",
        default=[],
        metavar="NAME",
        help="also carry this kernel module (repeatable)",
    )
    p.add_argument(
        "--add-program",
        action="append",
        default=[],
        metavar="NAME",
        help="also carry this program, with its libraries (repeatable)",
    )
    p.add_argument(
        "--compression-level",
        type=int,
        metavar="N",
        help="zstd level of the initramfs (default 9; 19: about 15%% smaller, ten times slower)",
    )
    p.add_argument(
        "--trust",
        type=Path,
        metavar="FILE",
        help="an OpenSSH allowed-signers file carried by the image: it then refuses every "
        "recovery set not signed by one of these keys, unattended or by hand (default: "
        f"{signing.DEFAULT_TRUST} when it exists)",
    )
    p.add_argument(
        "--ssh-known-hosts",
        type=Path,
        metavar="FILE",
        help="known_hosts lines of the SFTP server the image recovers from: the rescue "
        "accepts that server only with these keys (save records the server's key itself)",
    )
    add_image_access_arguments(p)
    g = p.add_argument_group("how the rescue reaches a network medium (--from-url)")
    g.add_argument("--s3-endpoint", metavar="URL",
                   help="the S3 server (default: AWS, or AWS_ENDPOINT_URL): carried by the image")
    g.add_argument("--s3-region", metavar="REGION",
                   help="the S3 region (default: us-east-1): carried by the image")
    g.add_argument("--s3-insecure-http", action="store_true",
                   help="allow a plain http:// S3 endpoint (only on a network you trust)")
    g.add_argument("--ssh-key", metavar="FILE",
                   help="the private key for an sftp:// medium (carried only with "
                   "--embed-credentials; else the rescue takes it from the key medium)")
    add_share_arguments(g)
    p.add_argument(
        "--secure-boot",
        choices=["auto", "required", "off"],
        default="auto",
        help="boot UEFI through the distribution's signed shim and GRUB to its signed kernel "
        "(shim-signed and grub-efi-amd64-signed on Debian and Ubuntu, shim-x64 and "
        "grub2-efi-x64 on Fedora and RHEL, looked for in --kernel-root, then --sysroot), so "
        "that the image boots with Secure Boot on: auto (default) when they are there, the "
        "report saying why not otherwise; required: exit 3 without them or with an "
        "unsigned kernel; off: grub-mkrescue's unsigned GRUB",
    )
    p.set_defaults(handler=run)


def add_image_access_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--embed-credentials",
        action="store_true",
        help="carry the network medium's credentials in the image (the S3 keys as this "
        "machine finds them, the --ssh-key file, the --cifs-credentials file; 0600 in the "
        "initramfs): whoever has a copy of the image then has them. Without it the rescue "
        "reads them from the key medium (resurgo.keys=DEV[:/dir], files s3-credentials, "
        "ssh-key and cifs-credentials); exit code 2 "
        "when there is nothing to carry",
    )


def image_access(args: argparse.Namespace, url: str | None) -> ImageAccess:
    """What the image carries to reach the medium at ``url``, from this machine's options
    for that medium (and environment, for S3: as every command finds them)."""
    import os

    from resurgo.media import MediumOptions, SshOptions
    from resurgo.rescue.access import image_access as access_of

    options = MediumOptions(s3_endpoint=args.s3_endpoint, s3_region=args.s3_region,
                            s3_insecure_http=args.s3_insecure_http,
                            ssh=SshOptions(identity=args.ssh_key), share=share_options(args))
    return access_of(url, options, embed=args.embed_credentials,
                     environ=os.environ, home=Path.home())


def options(args: argparse.Namespace) -> RescueOptions:
    # Imported here, as the builder is: only this command needs them.
    from resurgo.rescue import After, RescueOptions
    from resurgo.rescue.build import read_known_hosts
    from resurgo.rescue.cmdline import grub_quote
    from resurgo.rescue.secureboot import SecureBootMode

    for arg in args.kernel_arg:
        try:
            grub_quote(arg)
        except ValueError as e:
            raise BadInput(f"--kernel-arg: {e}") from None
    if args.menu_timeout < -1:
        raise BadInput("--menu-timeout: seconds, or -1 to wait for a key")
    from resurgo.rescue.netboot import check_arg, check_directory, check_iso_place

    out: Path | None = args.output
    if out is None and args.netboot is None:
        raise BadInput("rescue: give --to ISO, --netboot DIR, or both")
    if out is not None and out.is_dir():
        raise BadInput(f"--to {out} is a directory", f"name a file, e.g. {out / 'rescue.iso'}")
    if args.netboot is not None:
        check_directory(args.netboot)
        if out is not None:
            check_iso_place(out, args.netboot)
        for arg in args.kernel_arg:
            try:
                check_arg(arg)
            except BadInput as e:
                raise BadInput(f"--kernel-arg: {e}") from None
    trust = signing.trusted_signers(args.trust)
    return RescueOptions(
        description=args.description,
        from_url=args.from_url,
        unattended=args.unattended,
        after=After(args.after),
        kernel_args=tuple(args.kernel_arg),
        menu_timeout=args.menu_timeout,
        sysroot=args.sysroot,
        kernel_root=args.kernel_root,
        kernel_version=args.kernel_version,
        extra_modules=tuple(args.add_module),
        extra_programs=tuple(args.add_program),
        compression_level=args.compression_level,
        trusted_signers=trust.text if trust else None,
        known_hosts=read_known_hosts(args.ssh_known_hosts) if args.ssh_known_hosts else None,
        access=image_access(args, args.from_url),
        secure_boot=SecureBootMode(args.secure_boot),
        netboot=args.netboot,
    )


def run(args: argparse.Namespace) -> int:
    from resurgo.rescue import build_rescue_image

    with shown(args.json, lambda event: None) as on_event:
        built = build_rescue_image(args.output, options(args), lambda what: on_event(
            Advanced(Step.RESCUE, f"building the rescue image: {what}", Amount())))
    emit(built, args.json)
    return ExitCode.OK
