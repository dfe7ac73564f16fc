"""A debugging aid: recover killed right after its N-th action, as a crash would leave it.

`resurgo recover --debug-stop-after N` (not shown by --help: it is for the kill-and-resume
tests, and for reproducing a crash by hand) runs the plan's actions in order. Once the
N-th (1-based, in plan order) ran and the disks show it, but before it is journaled (an
action a rerun skips as verified does not count), it writes

    resurgo: killed as by a crash (--debug-stop-after N): test stall after ACTION_ID

to stderr and kills itself with SIGKILL. Nothing is cleaned up: the journal lacks that
action, and what it and the earlier ones made (partitions, arrays, mappings, mounts) stays,
as after kill -9 or a power cut at that moment. Running recover again must finish the
layout.
"""

from __future__ import annotations

import os
import signal
import sys

from resurgo.apply.execute import AfterAction
from resurgo.plan.model import Action


def killed_after(n: int) -> AfterAction:
    """The executor's after-action callback that kills the process after the n-th action."""

    def after(position: int, action: Action) -> None:
        if position != n:
            return
        print(f"resurgo: killed as by a crash (--debug-stop-after {n}): test stall after "
              f"{action.id}", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

    return after
