"""One save at a time per machine (recovery.savelock)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from resurgo.errors import ExitCode, PreconditionFailed
from resurgo.recovery.savelock import lock_path, save_lock
from tests.support.cli import run


def test_the_running_system_has_one_lock_and_each_root_its_own(tmp_path: Path) -> None:
    dirs = (tmp_path,)
    assert lock_path(Path("/"), dirs) == tmp_path / "resurgo-save.lock"
    a, b = lock_path(tmp_path / "a", dirs), lock_path(tmp_path / "b", dirs)
    assert a != b and a.parent == tmp_path
    assert lock_path(tmp_path / "a" / ".." / "a", dirs) == a


def test_a_second_save_is_refused_at_once(tmp_path: Path) -> None:
    dirs = (tmp_path,)
    with save_lock(Path("/"), "/mnt/sets", dirs=dirs) as path:
        assert f"pid {os.getpid()}" in path.read_text()
        with pytest.raises(PreconditionFailed, match=r"another save of / is running .*"
                           r"pid \d+, since .*, saving to /mnt/sets") as e, \
                save_lock(Path("/"), "/elsewhere", dirs=dirs):
            pass
        assert e.value.hint is not None and "--wait" in e.value.hint
    with save_lock(Path("/"), "/elsewhere", dirs=dirs):  # free again
        pass


def test_wait_takes_the_lock_once_the_first_save_ends(tmp_path: Path) -> None:
    dirs = (tmp_path,)
    order: list[str] = []
    with save_lock(Path("/"), "one", dirs=dirs):
        def second() -> None:
            with save_lock(Path("/"), "two", dirs=dirs, wait=True):
                order.append("second")
        t = threading.Thread(target=second)
        t.start()
        time.sleep(0.3)
        order.append("first ends")
    t.join(10)
    assert order == ["first ends", "second"]


@pytest.mark.skipif(os.geteuid() != 0, reason="save refuses to run without root first")
def test_the_save_command_exits_3_while_another_save_runs(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    with save_lock(root, "a medium"):
        result = run("save", "--to", tmp_path / "sets", "--root", root, "--no-rescue")
    assert result.returncode == ExitCode.PRECONDITION, result.stderr
    assert "another save of" in result.stderr and "is running on this machine" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "sets").exists()  # nothing touched


def test_sigterm_ends_a_save_as_ctrl_c_does() -> None:
    """systemctl stop sends SIGTERM: the save unwinds (its set dropped, its lease and lock
    released) instead of dying on the spot; the handler is the old one afterwards."""
    import signal

    from resurgo.cli.save import _stopped_like_ctrl_c

    before = signal.getsignal(signal.SIGTERM)
    unwound = []
    with pytest.raises(KeyboardInterrupt), _stopped_like_ctrl_c():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        finally:
            unwound.append(True)
    assert unwound == [True]
    assert signal.getsignal(signal.SIGTERM) == before
