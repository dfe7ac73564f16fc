"""The rescue in rehearsal mode (resurgo.rehearse=1): the kernel command line, the
protocol lines the agent writes, and the check it installs into the recovered system."""

from __future__ import annotations

import pytest

from resurgo.rescue import cmdline
from resurgo.rescue.cmdline import Mode

# ----------------------------------------------------------------- the kernel command line


def test_rehearse_is_off_unless_asked() -> None:
    assert cmdline.parse("resurgo.recover=auto").rehearse is False
    a = cmdline.parse("resurgo.recover=auto resurgo.rehearse=1 resurgo.after=poweroff")
    assert a.rehearse is True and a.recover is Mode.AUTO and a.problems == ()
    assert cmdline.parse("resurgo.recover=auto resurgo.rehearse=0").rehearse is False


@pytest.mark.parametrize("value", ["yes", "2", "", "1 ", "true"])
def test_a_bad_rehearse_value_is_a_problem(value: str) -> None:
    a = cmdline.parse(f'resurgo.recover=auto "resurgo.rehearse={value}"')
    assert a.problems == (f"resurgo.rehearse={value}: expected 0 or 1",)
    assert a.rehearse is False


@pytest.mark.parametrize("mode", ["off", "plan", "ask"])
def test_a_rehearsal_is_unattended(mode: str) -> None:
    a = cmdline.parse(f"resurgo.recover={mode} resurgo.rehearse=1")
    assert a.problems == (f"resurgo.rehearse=1 needs resurgo.recover=auto, not {mode}",)
    assert cmdline.parse("resurgo.rehearse=1").problems == (
        "resurgo.rehearse=1 needs resurgo.recover=auto, not off",)
