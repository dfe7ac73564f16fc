"""The finalize options of `plan` and `recover` (--net-map, --no-finalize), as typed
options: what finalize will do with them is resurgo.finalize.planned.

SYSFS is where finalize reads this machine's network interfaces and controllers; a test
run in-process gives it a recorded one, so that the pairing can be tested without the
NICs it would need.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from resurgo.finalize import FinalizeOptions

SYSFS = Path("/sys")


def options(args: argparse.Namespace) -> FinalizeOptions:
    return FinalizeOptions(net_map=tuple(args.net_map), sysfs=SYSFS)

