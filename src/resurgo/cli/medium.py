"""The options of every command that reads or writes a medium, and opening it."""

from __future__ import annotations

import argparse

from resurgo.cli.trust import add_trust_argument, trust_from_args
from resurgo.media import Medium, SshOptions, open_medium
from resurgo.media.url import EXAMPLES

MEDIUM_HELP = (
    f"where the recovery sets live: {EXAMPLES}; S3 credentials come from AWS_ACCESS_KEY_ID "
    "and AWS_SECRET_ACCESS_KEY or ~/.aws"
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
    add_trust_argument(g)


def strict_host_keys(args: argparse.Namespace, writing: bool) -> bool:
    """Whether the SFTP server's key must already be known. Only a save may meet a server
    for the first time (accept-new, the key then recorded in the set); reading, which is
    what a recovery does, never takes the word of whoever answers; neither does anything
    given a known_hosts file, which is then the whole truth."""
    return bool(args.ssh_strict_host_keys or args.ssh_known_hosts or not writing)


def open_from_args(url: str, args: argparse.Namespace, *, writing: bool | None = None) -> Medium:
    """The medium of a command; ``writing`` (default: the command is save) allows a first
    contact with an SFTP server."""
    if writing is None:
        writing = getattr(args, "command", None) == "save"
    ssh = SshOptions(
        identity=args.ssh_key,
        known_hosts=args.ssh_known_hosts,
        strict_host_keys=strict_host_keys(args, writing),
    )
    trust = trust_from_args(args)  # read before the medium is opened: a bad file fails fast
    medium = open_medium(url, s3_endpoint=args.s3_endpoint, s3_region=args.s3_region,
                         s3_insecure_http=args.s3_insecure_http, ssh=ssh)
    medium.trust = trust
    return medium
