"""--trust FILE: the trusted signers of recovery sets, for every command that reads sets."""

from __future__ import annotations

import argparse
from pathlib import Path

from resurgo.signing import DEFAULT_TRUST, Trust


def add_trust_argument(g: argparse._ArgumentGroup) -> None:
    g.add_argument(
        "--trust", metavar="FILE",
        help="an OpenSSH allowed-signers file: sets not signed by one of its keys "
        f"(namespace resurgo-set) are refused, exit code 4 (default: {DEFAULT_TRUST} "
        "when it exists, else signatures are not checked)",
    )


def trust_from_args(args: argparse.Namespace) -> Trust | None:
    given: str | None = getattr(args, "trust", None)
    if given:
        return Trust.load(Path(given))
    if DEFAULT_TRUST.exists() or DEFAULT_TRUST.is_symlink():
        return Trust.load(DEFAULT_TRUST)
    return None
