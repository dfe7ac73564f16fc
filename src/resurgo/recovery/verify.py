"""verify: the trees of a restored system against its set's manifests.

Every entry of every filesystem (and btrfs subvolume) the set holds is compared with the
tree mounted under the root: content (read and hashed again, unless metadata_only) and
metadata. What finalize changed on purpose (recover records it in its state directory)
is reported apart and does not count; without that record it counts as a difference.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from resurgo.errors import ExitCode
from resurgo.recovery import report
from resurgo.recovery.check import CheckOutcome, check_units
from resurgo.recovery.events import OnEvent, Progress, Step, StepEnded, StepStarted
from resurgo.recovery.load import LoadedSet


@dataclass(frozen=True)
class VerifyOptions:
    # Where the restored system is mounted (as recover mounted it).
    root: Path
    # Read and hash every file's content again (else the metadata alone).
    content: bool = True


@dataclass(frozen=True)
class VerifyReport:
    set: report.SetRef
    root: Path
    check: CheckOutcome

    @property
    def exit_code(self) -> ExitCode:
        return self.check.exit_code

    def data(self) -> dict[str, Any]:
        return {"set": {"id": self.set.id, "medium": self.set.medium}, "root": str(self.root),
                **report.check_data(self.check)}

    def text(self) -> str:
        return report.check_summary(self.check)


def verify_restored(loaded: LoadedSet, options: VerifyOptions,
                    on_event: OnEvent) -> VerifyReport:
    """Check the trees under options.root against the set (see the module docstring)."""
    started = time.monotonic()
    on_event(StepStarted(Step.VERIFY, f"verifying {options.root} against set {loaded.id} on "
                         f"{loaded.medium.url}", started))
    outcome = check_units(loaded, options.root, content=options.content,
                          report=lambda u: on_event(Progress(Step.VERIFY,
                                                             report.check_line(u))),
                          on_event=on_event)
    on_event(StepEnded(Step.VERIFY, outcome.ok, "", started, time.monotonic()))
    return VerifyReport(report.SetRef(loaded.id, loaded.medium.url), options.root, outcome)


__all__ = ["VerifyOptions", "VerifyReport", "verify_restored"]
