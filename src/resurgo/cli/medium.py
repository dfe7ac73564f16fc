"""The options of every command that reads or writes a medium, as MediumOptions."""

from __future__ import annotations

import argparse
from pathlib import Path

from resurgo import signing
from resurgo.errors import BadInput
from resurgo.media import MediumOptions, SshOptions
from resurgo.media.share import DEFAULT_NFS_VERSION, NFS_VERSIONS, ShareOptions
from resurgo.media.url import EXAMPLES

MEDIUM_HELP = (
    f"where the recovery sets live: {EXAMPLES}; S3 credentials come from AWS_ACCESS_KEY_ID "
    "and AWS_SECRET_ACCESS_KEY or ~/.aws; an nfs:// or cifs:// share is mounted by resurgo "
    "itself (as root), read-only unless the command writes sets"
)


def add_medium_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("medium options")
    g.add_argument("--s3-endpoint", metavar="URL",
                   help="the S3 server (default: AWS, or AWS_ENDPOINT_URL)")
    g.add_argument("--s3-region", metavar="REGION", help="the S3 region (default: us-east-1)")
    g.add_argument("--s3-insecure-http", action="store_true",
                   help="allow a plain http:// S3 endpoint (the sets then cross the network "
                   "unencrypted, and whoever is in between can read or change them): only on "
                   "a network you trust")
    g.add_argument("--ssh-key", metavar="FILE", help="the private key for an sftp:// medium")
    g.add_argument("--ssh-known-hosts", metavar="FILE",
                   help="the known_hosts file for an sftp:// medium: the server's key must be "
                   "in it (and no other file is used)")
    g.add_argument("--ssh-strict-host-keys", action="store_true",
                   help="accept only host keys already known, also for a save (default: "
                   "strict, but a save without --ssh-known-hosts takes a new server's key "
                   "on first contact, with a warning, and refuses a changed one)")
    add_share_arguments(g)
    g.add_argument(
        "--trust", metavar="FILE",
        help="an OpenSSH allowed-signers file: sets not signed by one of its keys "
        f"(namespace resurgo-set) are refused, exit code 4 (default: {signing.DEFAULT_TRUST} "
        "when it exists, else signatures are not checked)",
    )


def add_share_arguments(g: argparse._ActionsContainer) -> None:
    """The options of an nfs:// or cifs:// medium (also `rescue`'s, for its image)."""
    g.add_argument("--nfs-version", choices=NFS_VERSIONS, default=DEFAULT_NFS_VERSION,
                   help=f"the NFS version of an nfs:// medium (default: {DEFAULT_NFS_VERSION}; "
                   "3 for a server without NFSv4)")
    g.add_argument("--nfs-mount-port", type=int, metavar="PORT",
                   help="NFSv3: the port of the server's MOUNT service (default: asked from "
                   "its rpcbind)")
    g.add_argument("--cifs-credentials", metavar="FILE",
                   help="the credentials of a cifs:// medium: a file of username=, password= "
                   "(and domain=) lines, as mount.cifs reads them, that no one but its owner "
                   "(root) may read; exit code 2 otherwise")


def share_options(args: argparse.Namespace) -> ShareOptions:
    port = args.nfs_mount_port
    if port is not None and not 0 < port < 65536:
        raise BadInput(f"--nfs-mount-port {port}: a port is 1 to 65535")
    return ShareOptions(
        nfs_version=args.nfs_version,
        nfs_mount_port=port,
        cifs_credentials=Path(args.cifs_credentials) if args.cifs_credentials else None,
    )


def medium_options(args: argparse.Namespace, *, writing: bool = False,
                   writes: bool = False) -> MediumOptions:
    """The medium options of add_medium_arguments; ``writing`` (save alone) allows a first
    contact with an SFTP server; ``writes`` (and ``writing``) mounts a share read-write."""
    ssh = SshOptions.for_command(args.ssh_key, args.ssh_known_hosts,
                                 strict=args.ssh_strict_host_keys, writing=writing)
    return MediumOptions(
        s3_endpoint=args.s3_endpoint,
        s3_region=args.s3_region,
        s3_insecure_http=args.s3_insecure_http,
        ssh=ssh,
        trust_file=signing.trust_file(Path(args.trust) if args.trust else None),
        share=share_options(args),
        writable=writing or writes,
    )
