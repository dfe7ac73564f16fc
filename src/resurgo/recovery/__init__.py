"""The orchestrators: one per verb that spans packages, from the set on a medium to the
system on its disks and back.

    save_set(medium, SaveOptions, progress) -> SaveReport
        describe the system, archive each of its trees into a new set on the medium;
    recover_set(loaded, plan, RecoverOptions, on_event) -> RecoverReport
        execute the plan on the disks, restore the set's trees, check them, finalize.

Each takes frozen options, tells what it does through typed events (recovery.events:
steps started and ended with their times, progress lines, warnings) and returns a report
that renders to text and to JSON (recovery.report). The command line (resurgo.cli) only
parses, calls, and prints.

The other modules are the pieces they share: which trees a set holds (units), reading a
set with every check before anything is written (load), what plan, recover and verify
read from, a set or a description file (source), restoring and checking the trees
(restore, check), the sealed secret files (secrets), private views of the filesystems
(views, trees).

The orchestrators are loaded on first use: the planner reads units and trees, and the
orchestrators use the planner, so importing them with the package would make a cycle.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from resurgo.recovery import events
    from resurgo.recovery.recover import RecoverOptions, recover_set
    from resurgo.recovery.report import RecoverReport
    from resurgo.recovery.save import SaveOptions, SaveReport, save_set

_WHERE = {
    "events": "resurgo.recovery.events",
    "RecoverOptions": "resurgo.recovery.recover",
    "recover_set": "resurgo.recovery.recover",
    "RecoverReport": "resurgo.recovery.report",
    "SaveOptions": "resurgo.recovery.save",
    "SaveReport": "resurgo.recovery.save",
    "save_set": "resurgo.recovery.save",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    loaded = importlib.import_module(module)
    return loaded if name == "events" else getattr(loaded, name)


__all__ = [
    "RecoverOptions",
    "RecoverReport",
    "SaveOptions",
    "SaveReport",
    "events",
    "recover_set",
    "save_set",
]
