"""The demo the README promises: `python -m resurgo.demo`, end to end, leaving nothing behind."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import cli
from tests.support.loopdisks import require_loop_support

pytestmark = pytest.mark.storage



def loops() -> set[str]:
    """The loop devices on the demo's images (its work directory, /tmp/resurgo-demo.*):
    a vm test on the other worker may make and drop its own meanwhile."""
    return {line.split(":")[0] for line in subprocess.run(
        ["losetup", "-a"], capture_output=True, text=True, check=True).stdout.splitlines()
        if "resurgo-demo." in line}


def demo_mounts() -> list[str]:
    return [line for line in Path("/proc/self/mounts").read_text().splitlines()
            if "resurgo-demo." in line]


def test_the_demo_saves_recovers_and_verifies_and_cleans_up() -> None:
    require_loop_support()
    before = loops()
    proc = subprocess.run([sys.executable, "-m", "resurgo.demo"], capture_output=True,
                          text=True, timeout=600, env=cli.clean_env(), stdin=subprocess.DEVNULL,
                          check=False)
    out = proc.stdout
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in out + proc.stderr
    assert "saved recovery set" in out
    assert "plan hash: sha256:" in out
    assert "layout recreated: 10 done" in out
    assert "data restored: 3 command(s)" in out
    assert "verified: every entry of 3 tree(s) matches its manifest (content and metadata)" \
        in out
    assert "demo complete" in out
    # Everything it made is gone.
    assert loops() <= before
    assert demo_mounts() == []
    assert not [p for p in Path("/tmp").glob("resurgo-demo.*")]


def test_the_demo_needs_root_and_says_so() -> None:
    # In a user namespace of its own without a mapping, the demo runs as "nobody".
    proc = subprocess.run(
        ["unshare", "--user", sys.executable, "-m", "resurgo.demo"], capture_output=True,
        text=True, timeout=60, env=cli.clean_env(), stdin=subprocess.DEVNULL, check=False,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "needs root" in proc.stderr
    assert "Traceback" not in proc.stderr
