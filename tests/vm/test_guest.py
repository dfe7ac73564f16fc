"""The vm harness booting real guests (its pure parts: tests/unit/test_vm_harness.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.vm import guest

pytestmark = pytest.mark.vm


def test_a_script_runs_in_a_guest_and_its_files_and_status_come_back(tmp_path: Path) -> None:
    disk = guest.guest_disk(tmp_path)
    run = guest.run_in_guest(
        'cat "$RESURGO_EXCHANGE/in.txt" > out.txt; uname -r; echo oops >&2; exit 3\n',
        image=disk,
        workdir=tmp_path,
        files={"in.txt": "from the host\n"},
        timeout=600,
    )
    assert run.boot.reached_runner and not run.boot.timed_out
    assert run.exit_status == 3 and run.boot.exit_status == 3
    assert (run.exchange / "out.txt").read_text() == "from the host\n"
    assert "oops" in run.output
    assert guest.base_image().kernel in run.output
    with pytest.raises(guest.GuestError, match="exited 3"):
        run.check()


def test_qemu_is_killed_when_the_guest_overruns_its_timeout(tmp_path: Path) -> None:
    blank = guest.blank_disk(tmp_path / "blank.img", 16 * guest.MiB)  # nothing to boot
    result = guest.boot(blank, timeout=3)
    assert result.timed_out and result.returncode is None and not result.reached_runner
    assert result.serial_log.exists()
    with pytest.raises(guest.GuestError, match="timed out"):
        result.check()
