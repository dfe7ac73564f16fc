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
# The scopes go out longest first (longest processing time first: the two workers then
# finish within about the shortest scope of each other), by what each took in a CI run
# (seconds of its tests on one worker; 2 workers, one vCPU per guest, on a machine shared
# with other work; `./dev test` prints the workers' times at its end to keep these true).
# A vm module not listed is taken for a long one: handed out last, it would keep one
# worker busy for minutes after the other ran out of work.
SCOPE_SECONDS = {
    "tests/vm/test_rehearse.py": 830,  # a save and five rehearsals
    "tests/vm/test_full_stack.py": 700,
    "tests/vm/test_recover_guest.py": 430,  # one test
    "tests/vm/test_whole_cycle_bios.py": 410,
    "tests/vm/test_save_lvm_snapshots.py": 290,  # one test
    "tests/vm/test_whole_cycle.py": 290,
    "tests/storage": 270,
    "tests/vm/test_rescue.py": 180,
    "tests/vm/test_finalize_boot.py": 160,  # one test
    "tests/vm/test_pool_rescue.py": 240,  # one test: a host save, one rescue boot (estimate)
    "tests/vm/test_netboot.py": 120,
    "tests/vm/test_rescue_shares.py": 70,
    "tests/vm/test_rescue_network.py": 60,
    "tests/vm/test_secureboot.py": 60,
    "tests/vm/test_guest.py": 45,
}
UNLISTED_VM_SECONDS = 300
# The unit modules (seconds each) come last, in the order collected: the ends are filled
# with them.


def scope_of(nodeid: str) -> str:
    """The scope a test belongs to (its module, or the whole storage tier)."""
    module = nodeid.split("::", 1)[0]
    return "tests/storage" if module.startswith("tests/storage/") else module


def scope_seconds(scope: str) -> int:
    """What the scope is expected to take on one worker (0: a unit module, seconds)."""
    if scope in SCOPE_SECONDS:
        return SCOPE_SECONDS[scope]
    return UNLISTED_VM_SECONDS if scope.startswith("tests/vm/") else 0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Only a worker's order matters (the scopes are handed out in it); one process runs
    # the tiers as collected: storage, unit, then the slow vm tier.
    if "PYTEST_XDIST_WORKER" in os.environ:
        items.sort(key=lambda item: -scope_seconds(scope_of(item.nodeid)))


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
                if scope_seconds(last) == 0:
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


#: (start, stop, scope) of each phase (setup, call, teardown) the workers ran, by worker:
#: what the run's end says of each worker's time.
_spans: dict[str, list[tuple[float, float, str]]] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    node = getattr(report, "node", None)  # the worker that ran it (xdist's controller)
    if node is not None:
        _spans.setdefault(node.gateway.id, []).append(
            (report.start, report.stop, scope_of(report.nodeid)))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Each worker's time: its tests, and how long it waited (for work, or at the end for
    the other), with the scopes it ran in order: what SCOPE_SECONDS is kept true by."""
    if not _spans:
        return
    begin = min(start for spans in _spans.values() for start, _, _ in spans)
    end = max(stop for spans in _spans.values() for _, stop, _ in spans)
    terminalreporter.write_sep(
        "=", f"workers ({end - begin:.0f} s from the first test to the last)")
    for worker, spans in sorted(_spans.items()):
        busy = sum(stop - start for start, stop, _ in spans)
        last = max(stop for _, stop, _ in spans)
        scopes: dict[str, float] = {}
        for start, stop, scope in sorted(spans):
            scopes[scope] = scopes.get(scope, 0.0) + stop - start
        long = "".join(f", {scope.removeprefix('tests/')} {seconds:.0f}"
                       for scope, seconds in scopes.items() if seconds >= 20)
        terminalreporter.write_line(
            f"{worker}: tests {busy:.0f} s, idle {end - begin - busy:.0f} s "
            f"({end - last:.0f} s of it after its last test){long}")


@pytest.fixture(autouse=True)
def _reports_kept_apart(tmp_path_factory: pytest.TempPathFactory,
                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The commands run in this process keep their reports in a directory of the test
    run, never in the machine's /var/log/resurgo."""
    import resurgo.reports

    monkeypatch.setattr(resurgo.reports, "DEFAULT_DIR",
                        tmp_path_factory.getbasetemp() / "resurgo-reports")
