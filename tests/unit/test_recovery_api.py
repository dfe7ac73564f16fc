"""The recovery package's public API: every name it lists resolves, whichever module is
imported first, and the planner does not import the orchestrators (they use it)."""

from __future__ import annotations

import subprocess
import sys

import pytest

import resurgo.recovery


def test_every_public_name_resolves() -> None:
    for name in resurgo.recovery.__all__:
        assert getattr(resurgo.recovery, name) is not None


@pytest.mark.parametrize("first", ["resurgo.plan", "resurgo.apply.execute", "resurgo.finalize",
                                   "resurgo.restoreunits", "resurgo.recovery.load",
                                   "resurgo.cli.main"])
def test_any_module_can_be_imported_first(first: str) -> None:
    code = (f"import {first}\n"
            "from resurgo.recovery import recover_set, save_set, verify_restored, events\n")
    subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)


def test_the_planner_does_not_load_the_recovery() -> None:
    code = ("import sys, resurgo.plan\n"
            "print(sorted(m for m in sys.modules if m.startswith('resurgo.recovery')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_the_rescue_agent_starts_without_the_orchestrators() -> None:
    """The agent is the rescue's first program: under emulation each module it imports
    costs its start seconds. It reads set files (recovery.setfiles): that must not pull
    in the orchestrators and everything below them."""
    code = ("import sys, resurgo.rescue.agent\n"
            "print(sorted(m for m in sys.modules if m.startswith(('resurgo.recovery.recover', "
            "'resurgo.recovery.save', 'resurgo.recovery.verify', 'resurgo.finalize', "
            "'resurgo.probe.describe', 'resurgo.engine.save'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
