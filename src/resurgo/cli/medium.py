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
    g.add_argument("--ssh-key", metavar="FILE", help="the private key for an sftp:// medium")
    g.add_argument("--ssh-known-hosts", metavar="FILE",
                   help="the known_hosts file for an sftp:// medium")
    g.add_argument("--ssh-strict-host-keys", action="store_true",
                   help="accept only host keys already in known_hosts (default: accept a "
                   "new host's key, refuse a changed one)")
    add_trust_argument(g)


def open_from_args(url: str, args: argparse.Namespace) -> Medium:
    ssh = SshOptions(
        identity=args.ssh_key,
        known_hosts=args.ssh_known_hosts,
        strict_host_keys=args.ssh_strict_host_keys,
    )
    trust = trust_from_args(args)  # read before the medium is opened: a bad file fails fast
    medium = open_medium(url, s3_endpoint=args.s3_endpoint, s3_region=args.s3_region, ssh=ssh)
    medium.trust = trust
    return medium
