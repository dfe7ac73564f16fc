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

# The storage and vm tiers use what the whole machine shares (loop devices, swap, mounts,
# device-mapper names, ports, qemu guests, the list of loop devices a test compares):
# they must run one test at a time. The unit tier touches only its own temporary
# directories and process, and may be spread over workers (pytest-xdist: `-n 2`).
MACHINE_TIERS = ("storage", "vm")
TESTS = Path(__file__).resolve().parent


def pytest_configure(config: pytest.Config) -> None:
    if not getattr(config.option, "numprocesses", None) or "PYTEST_XDIST_WORKER" in os.environ:
        return
    asked = [Path(str(a).split("::")[0]).resolve() for a in config.args]
    shared = [t for t in MACHINE_TIERS
              if any(p == TESTS / t or TESTS / t in p.parents or p in (TESTS / t).parents
                     for p in asked)]
    if shared:
        raise pytest.UsageError(
            f"tests/{', tests/'.join(shared)} use the machine's loop devices, mounts and "
            "guests: run them without -n (only tests/unit runs in parallel)")


@pytest.fixture(autouse=True)
def _reports_kept_apart(tmp_path_factory: pytest.TempPathFactory,
                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The commands run in this process keep their reports in a directory of the test
    run, never in the machine's /var/log/resurgo."""
    import resurgo.reports

    monkeypatch.setattr(resurgo.reports, "DEFAULT_DIR",
                        tmp_path_factory.getbasetemp() / "resurgo-reports")
