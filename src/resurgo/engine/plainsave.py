"""The save's compiled path (_plainsave.c), when it is built.

pip builds it beside the restore's (_plainfiles.c) when a C compiler and Python's headers
are there; without them a save takes the general path for every file: the same set,
made more slowly. A module built from an older source (another API) counts as absent.
"""

from __future__ import annotations

from collections.abc import Callable

SaveRun = Callable[[int, list[bytes], int, int, bytes, int, int, int, int,
                    Callable[[memoryview], bytes]], tuple[int, int, bytes, bytes, int, int]]

save_run: SaveRun | None = None
sorted_names: Callable[[int], list[bytes]] | None = None
try:
    from resurgo.engine import _plainsave
except ImportError:
    pass
else:
    if getattr(_plainsave, "API", None) == 1:
        save_run = _plainsave.save_run
        sorted_names = _plainsave.sorted_names

# What save_run says when it stops: it reached the end of what it was given, the block
# being gathered is full, or the name it stopped at is for the general path.
REACHED, FULL, GENERAL = 0, 1, 2


def compiled() -> bool:
    return save_run is not None
