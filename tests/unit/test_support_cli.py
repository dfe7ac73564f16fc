"""The in-process CLI runner gives each run its own streams, environment and logging,
and leaves the test's as they were."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from resurgo import __version__
from tests.support import cli
from tests.support.examples import EXAMPLE


def test_exit_codes_and_streams_of_argparse_and_of_a_command(tmp_path: Path) -> None:
    assert cli.run("--version") == cli.Result(0, f"resurgo {__version__}\n", "")
    usage = cli.run("no-such-verb")
    assert usage.returncode == 2 and usage.stdout == ""
    assert "resurgo: error: argument COMMAND: invalid choice" in usage.stderr
    missing = cli.run("validate", tmp_path / "none.toml")
    assert missing.returncode == 2 and "none.toml" in missing.stderr
    failed = cli.run("rehearse", "--from", tmp_path / "no-medium")
    assert failed.returncode == 1 and "does not exist" in failed.stderr


def test_environment_cwd_and_logging_are_put_back(tmp_path: Path) -> None:
    os.environ["RESURGO_SUPPORT_PROBE"] = "kept"
    root = logging.getLogger()
    handlers, level, cwd = root.handlers[:], root.level, os.getcwd()
    try:
        cli.run("--debug", "rehearse", env={"RESURGO_SUPPORT_PROBE": None, "EXTRA": "1"},
                cwd=tmp_path)
        assert os.environ["RESURGO_SUPPORT_PROBE"] == "kept" and "EXTRA" not in os.environ
        assert (root.handlers, root.level, os.getcwd()) == (handlers, level, cwd)
    finally:
        del os.environ["RESURGO_SUPPORT_PROBE"]


def test_each_run_logs_to_its_own_stderr(tmp_path: Path) -> None:
    """A second run must not write to the first run's stream."""
    path = tmp_path / "description.toml"
    path.write_text(EXAMPLE.read_text().replace('version = "1.3"', 'version = "1.9"', 1))
    for _ in range(2):
        result = cli.run("show", path)
        assert result.returncode == 0
        assert result.stderr == (f"resurgo: WARNING: {path}: format 1.9 is newer than 1.3; "
                                 "fields this resurgo does not know are skipped\n")
