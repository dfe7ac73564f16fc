"""The save's compiled path (_plainsave.c), when it is built.

pip builds it beside the restore's (_plainfiles.c) when a C compiler and Python's headers
are there; without them a save takes the general path for every file: the same set,
made more slowly. A module that is stale (built from another version of the source, see
resurgo.engine.extensions) or cannot be imported counts as absent: the save says why in
one debug line, and `resurgo doctor` says it plainly.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from resurgo.engine import extensions

log = logging.getLogger("resurgo.engine")

SaveRun = Callable[[int, list[bytes], int, int, bytes, int, int, int, int,
                    Callable[[memoryview], bytes]], tuple[int, int, bytes, bytes, int, int]]

# save_run's arguments and what it returns (_plainsave.c's API).
API = 1
LOADED = extensions.load("_plainsave", API)
save_run: SaveRun | None = None
sorted_names: Callable[[int], list[bytes]] | None = None
if LOADED.module is not None:
    save_run = LOADED.module.save_run
    sorted_names = LOADED.module.sorted_names
_said = False


def say_once() -> None:
    """One debug line per process when a save takes the general path for want of the
    compiled one, saying why."""
    global _said
    if not _said and save_run is None:
        _said = True
        log.debug("the compiled save path is not used, every file takes the general path "
                  "(the same set, more slowly): %s; %s", LOADED.why, LOADED.fix)


# What save_run says when it stops: it reached the end of what it was given, the block
# being gathered is full, or the name it stopped at is for the general path.
REACHED, FULL, GENERAL = 0, 1, 2


def compiled() -> bool:
    return save_run is not None
