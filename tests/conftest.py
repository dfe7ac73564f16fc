"""Shared test setup: tests run against the source tree."""

from __future__ import annotations

import os
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))
# Subprocesses (the CLI under test) see the same source tree.
os.environ["PYTHONPATH"] = str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", "")
# Neither does this machine's configuration file (/etc/resurgo/resurgo.toml) change what
# the commands under test do: a test that wants one names it (--config, RESURGO_CONFIG).
os.environ["RESURGO_CONFIG"] = ""

# CI runs on 2 shared cores beside qemu guests: data generation can be slow there, and a
# health check about speed would fail a test that found nothing wrong.
import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile("resurgo", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("resurgo")

# Two workers (./dev test: pytest-xdist, `-n 2`) share the machine's two cores. What a
# worker gets is a scope, run whole and in order:
# - the storage tier is ONE scope: its tests use what the whole machine shares (loop
#   devices and the list of them, swap, mounts, ports) and must run one at a time;
# - a vm module is one scope: its stages are module fixtures (a whole cycle's source, save,
#   rescue and recovered boot), which a second worker would build again;
# - a unit module is one scope.
# The scopes go out longest first, so that the two workers finish together. Measured on
# 2 cores with one vCPU per guest (seconds): whole cycle BIOS 364, GPT 345, the storage
# tier 266, recover_guest 202, finalize_boot 191, test_rescue 144, the unit tier 65 (its
# modules fill the ends), test_guest 20. test_rehearse (a save and five rehearsals: the set
# on SFTP and on S3, both booting the recovered system; (a) to its first boot's panic; (b)
# failing in the rescue; (c) booting): about 600 with three rehearsals alone with two vCPUs
# on a quiet machine, an estimated 1000 with five (measured on a machine loaded 15 to 25 deep: save
# 341, SFTP 904, S3 1019, (a) 699, (b) 183).
LONGEST_FIRST = (
    "tests/vm/test_rehearse.py",
    "tests/vm/test_whole_cycle_bios.py",
    "tests/vm/test_whole_cycle.py",
    "tests/storage",
    "tests/vm/test_recover_guest.py",
    "tests/vm/test_finalize_boot.py",
    "tests/vm/test_rescue.py",
    "tests/vm/test_guest.py",
)


def scope_of(nodeid: str) -> str:
    """The scope a test belongs to (its module, or the whole storage tier)."""
    module = nodeid.split("::", 1)[0]
    return "tests/storage" if module.startswith("tests/storage/") else module


def _rank(nodeid: str) -> int:
    scope = scope_of(nodeid)
    return LONGEST_FIRST.index(scope) if scope in LONGEST_FIRST else len(LONGEST_FIRST)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Only a worker's order matters (the scopes are handed out in it); one process runs
    # the tiers as collected: storage, unit, then the slow vm tier.
    if "PYTEST_XDIST_WORKER" in os.environ:
        items.sort(key=lambda item: _rank(item.nodeid))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    from xdist.scheduler import LoadScopeScheduling  # type: ignore[import-untyped]

    class Scopes(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return scope_of(nodeid)

        def _assign_work_unit(self, node: object) -> None:
            # A worker runs a test only once it holds the next one, so a worker whose
            # last held test is a vm test (minutes) is sent more work early: there the
            # last scope of the queue (a unit module: seconds) goes, not the next long
            # one, which the other worker may be free to take first.
            pending = [nodeid for work in self.assigned_work.get(node, {}).values()
                       for nodeid, done in work.items() if not done]
            if any(n.startswith("tests/vm/") for n in pending) and self.workqueue:
                last = next(reversed(self.workqueue))
                if _rank(last) == len(LONGEST_FIRST):
                    self.workqueue.move_to_end(last, last=False)
            super()._assign_work_unit(node)

        def remove_node(self, node: object) -> str | None:
            # xdist's scope scheduler puts a crashed worker's whole unit back, the test
            # that crashed it included: that test crashes each replacement in turn (a
            # test that kills its process, a segfault) until the restarts run out, and
            # a vm scope is begun again each time. The test is reported once; the rest
            # of its unit goes to the next worker.
            workload: dict[str, dict[str, bool]] = self.assigned_work.pop(node)
            pending = [(scope, nodeid) for scope, unit in workload.items()
                       for nodeid, done in unit.items() if not done]
            if not pending:
                return None
            scope, crashed = pending[0]
            workload[scope][crashed] = True
            self.workqueue.update({scope: unit for scope, unit in workload.items()
                                   if not all(unit.values())})
            for other in self.assigned_work:
                self._reschedule(other)
            return crashed

    # Keep the longest-first order of the collection (not xdist's: most tests first).
    config.option.loadscopereorder = False
    return Scopes(config, log)


@pytest.fixture(autouse=True)
def _reports_kept_apart(tmp_path_factory: pytest.TempPathFactory,
                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The commands run in this process keep their reports in a directory of the test
    run, never in the machine's /var/log/resurgo."""
    import resurgo.reports

    monkeypatch.setattr(resurgo.reports, "DEFAULT_DIR",
                        tmp_path_factory.getbasetemp() / "resurgo-reports")
