"""resurgo ls --from MEDIUM [--set ID] [--long] [PATH]: a set's entries, from its manifests.

Exit 0 listed; 1 the medium or set cannot be read; 2 bad input (a PATH not in the set);
3 an encrypted set without --identity; 4 not authentic; 5 the set is damaged or
incomplete; 6 the identity cannot decrypt it.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from resurgo.cli.output import emit
from resurgo.cli.source import add_source_arguments, source_options
from resurgo.recovery.browse import list_path
from resurgo.recovery.source import open_source
from resurgo.recovery.systempaths import parse


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "ls",
        parents=[common],
        help="list the files of a recovery set",
        description="List the entries of a recovery set at PATH of the saved system (its "
        "absolute path, e.g. /etc; default /), as its manifests say, without reading any "
        "archive: a directory lists its children (the filesystems mounted on it among "
        "them), a file itself. An incremental set shows the system as it was at that set. "
        "--long adds the mode, owner, size, time and the filesystem holding each entry "
        "(and the package of a file taken from the package pool); --json gives every "
        "field (digest, set holding the data, link target, package). Exit 0 "
        "listed; 1 failed; 2 bad input (a PATH not in the set); 3 an encrypted set "
        "without --identity; 4 not authentic; 5 the set is damaged or incomplete; 6 the "
        "identity cannot decrypt it.",
    )
    p.add_argument("path", nargs="?", default="/", metavar="PATH",
                   help="a path of the saved system (default: /)")
    add_source_arguments(p, description_file=False)
    p.add_argument("--identity", type=Path, metavar="FILE",
                   help="the age identity file (secret key) of an encrypted set")
    p.add_argument("-l", "--long", action="store_true",
                   help="mode, owner, size, time and filesystem of each entry")
    p.add_argument("-R", "--recursive", action="store_true",
                   help="everything below a directory, not only its children")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    path = parse(args.path, "PATH")
    options = source_options(args)
    with open_source(options, identity=args.identity, read_manifests=True,
                     read_packages=False) as source:
        assert source.loaded is not None
        listing = list_path(source.loaded, options.location, path, long=args.long,
                            recursive=args.recursive)
    emit(listing, args.json)
    return listing.exit_code
