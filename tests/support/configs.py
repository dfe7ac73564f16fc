"""The command line as main parses it under a configuration file's text."""

from __future__ import annotations

import argparse

from resurgo.cli import configured
from resurgo.cli.main import build_parser
from resurgo.config import check_bytes


def parsed(text: str, *argv: str) -> argparse.Namespace:
    """argv as main parses it, under the configuration text."""
    checked = check_bytes(text.encode(), "f.toml")
    assert checked.config is not None, checked.messages()
    parser = build_parser()
    configured.apply(parser, checked.config)
    return parser.parse_args(list(argv))
