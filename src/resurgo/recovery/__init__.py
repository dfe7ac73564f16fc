"""The orchestrators: one per verb that spans packages, from the set on a medium to the
system on its disks and back.

    save_set(medium, SaveOptions, on_event) -> SaveReport
        describe the system, archive each of its trees into a new set on the medium;
    recover_set(loaded, plan, RecoverOptions, on_event) -> RecoverReport
        execute the plan on the disks, restore the set's trees, check them, finalize;
    verify_restored(loaded, VerifyOptions, on_event) -> VerifyReport
        check a restored system's trees against the set's manifests;
    check_sets(medium, CheckOptions, say) -> CheckReport  (setcheck)
        check stored sets without restoring anything, the result recorded (results);
    set_status(medium, StatusOptions) -> StatusReport  (status)
        the newest set of this host: current or stale (resurgo.layoutdiff), its age, the
        last check and rehearsal; prometheus renders it for node_exporter.

Each takes frozen options, tells what it does through typed events (recovery.events:
steps started and ended with their times, progress lines, warnings) and returns a report
that renders to text and to JSON (recovery.report). The command line (resurgo.cli) only
parses, calls, and prints.

Browsing a set and restoring chosen files of it (``resurgo ls``, ``resurgo restore``) are
browse.list_path and restorepaths.restore_paths, with systempaths mapping the saved
system's paths to the trees of a set.

The other modules are the pieces they share: reading a set with every check before
anything is written (load), what plan, recover and verify read from, a set or a
description file (source), restoring and checking the trees (restore, check), the sealed
secret files (secrets), private views of the filesystems (views, trees). Which trees a
set holds is resurgo.restoreunits, below the planner, which lists them too.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from resurgo.recovery import events
    from resurgo.recovery.recover import RecoverOptions, recover_set
    from resurgo.recovery.report import RecoverReport
    from resurgo.recovery.save import SaveOptions, SaveReport, save_set
    from resurgo.recovery.verify import VerifyOptions, VerifyReport, verify_restored

# The public names, imported when first asked for: a program that needs one piece (the
# rescue agent reads set files through recovery.setfiles) must not import every
# orchestrator with probe, finalize and the engine; under emulation, as in a rehearsal,
# that cost the rescue's start about twenty seconds.
_WHERE = {
    "RecoverOptions": "resurgo.recovery.recover",
    "recover_set": "resurgo.recovery.recover",
    "RecoverReport": "resurgo.recovery.report",
    "SaveOptions": "resurgo.recovery.save",
    "SaveReport": "resurgo.recovery.save",
    "save_set": "resurgo.recovery.save",
    "VerifyOptions": "resurgo.recovery.verify",
    "VerifyReport": "resurgo.recovery.verify",
    "verify_restored": "resurgo.recovery.verify",
}

__all__ = [
    "RecoverOptions",
    "RecoverReport",
    "SaveOptions",
    "SaveReport",
    "VerifyOptions",
    "VerifyReport",
    "events",
    "recover_set",
    "save_set",
    "verify_restored",
]


def __getattr__(name: str) -> object:
    if name == "events":
        return importlib.import_module("resurgo.recovery.events")
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
