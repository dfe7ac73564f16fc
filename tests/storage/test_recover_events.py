"""recover_set in-process on real loop disks: the events it gives as it goes and the
report it returns tell the same recovery, and the steps are timed.

The saved system is one ext4 on a whole loop disk, saved by save_set (in-process too).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from resurgo import run
from resurgo.demo import umount_below
from resurgo.errors import ExitCode
from resurgo.media.open import open_medium
from resurgo.plan.model import PlanOptions
from resurgo.probe.actual import read_actual_disks
from resurgo.recovery import RecoverOptions, SaveOptions, recover_set, save_set
from resurgo.recovery.events import (
    Event,
    PlanReady,
    Progress,
    Step,
    StepEnded,
    StepStarted,
    Warned,
)
from resurgo.recovery.load import load_set
from resurgo.recovery.recover import plan_recovery
from resurgo.recovery.report import event_text
from tests.support.loopdisks import Rig
from tests.support.trees import write

pytestmark = pytest.mark.storage

MiB = 1 << 20


def test_the_events_and_the_report_tell_the_same_recovery(
    rig: Rig, tmp_path: Path, mnt: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RESURGO_ACTUAL_DISKS", raising=False)
    monkeypatch.setenv("RESURGO_STATE_DIR", str(tmp_path / "state"))
    source = rig.disk("evsys", 200 * MiB)
    rig.sh("mkfs.ext4", "-q", "-L", "evroot", source.path)
    root = rig.mount(source.path, tmp_path / "root")
    write(root / "etc/hostname", b"evsys\n")
    write(root / "srv/data.txt", b"kept\n")
    sets = tmp_path / "sets"
    told: list[Event] = []
    with open_medium(str(sets)) as medium:
        saved = save_set(medium, SaveOptions(root=root, rescue=False, catalog=False),
                         told.append)
    # save tells its steps the same way: the system described, then each tree saved.
    assert [(e.step, e.title) for e in told if isinstance(e, StepStarted)] == [
        (Step.DESCRIBE, f"describing the system at {root}"), (Step.SAVE, "saving /")]
    assert all(e.ok for e in told if isinstance(e, StepEnded))
    umount_below(root)
    target = rig.disk("ev-target", 300 * MiB)

    events: list[Event] = []
    with open_medium(str(sets)) as medium:
        loaded = load_set(medium, None, read_manifests=True)
        assert loaded.id == saved.set.id
        after: list[tuple[int, str]] = []
        options = RecoverOptions(plan=PlanOptions(targets=(target.path,), root=str(mnt),
                                                     which=run.which),
                                 skip_finalize=True,
                                 after_action=lambda n, a: after.append((n, a.id)))
        plan = plan_recovery(loaded.description, read_actual_disks((sets,)), options)
        assert plan.ok, plan.failures
        report = recover_set(loaded, plan, options, events.append)

    assert report.exit_code == ExitCode.OK and report.ok
    # The hook saw every action done, in order, each before it was journaled.
    assert report.outcome is not None
    assert after == [(n, r.id) for n, r in enumerate(report.outcome.results, 1)]
    assert all(r.status == "done" for r in report.outcome.results)
    assert (mnt / "srv/data.txt").read_bytes() == b"kept\n"
    assert not [e for e in events if isinstance(e, Warned)]
    # The plan comes first (shown before anything is written), then the steps in order.
    assert isinstance(events[0], PlanReady) and events[0].plan == plan
    started = [e.step for e in events if isinstance(e, StepStarted)]
    ended = [e for e in events if isinstance(e, StepEnded)]
    assert started == [Step.LAYOUT, Step.RESTORE, Step.CHECK, Step.FINALIZE]
    assert [e.step for e in ended] == started
    assert all(e.ok and e.seconds >= 0 for e in ended)
    assert sum(1 for e in events if isinstance(e, Progress) and e.step is Step.LAYOUT) \
        == len(plan.actions)
    # What a person saw as it happened is what the report says once it is over.
    seen = "".join(line + "\n" for e in events[1:] if (line := event_text(e)) is not None)
    assert seen == report.text()
    assert "\nrecreating the layout" in seen and "finalize: skipped (--no-finalize)" in seen
    data = report.data()
    assert list(data)[:3] == ["plan", "outcome", "set"]
    assert data["set"] == {"id": saved.set.id, "medium": loaded.medium.url}
    assert data["finalize"] is None and "finalize_record" not in data
    assert [s["step"] for s in data["steps"]] == ["layout", "restore", "check", "finalize"]
