"""Reports that last (resurgo.reports, cli/reports.py): private, whole, kept per command,
written however a command ends, and copied into a recovered system without leaving it."""

from __future__ import annotations

import argparse
import io
import json
import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from resurgo import reports
from resurgo.cli import reports as cli_reports
from resurgo.errors import OperationFailed
from resurgo.recovery.check import Changes
from resurgo.rescue import cmdline
from resurgo.rescue.agent import Agent, Config, Console
from tests.support import cli

WHEN = datetime(2026, 12, 7, 4, 15, 0, tzinfo=UTC)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_a_report_is_private_whole_and_named_by_command_and_time(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        directory = tmp_path / "log" / "resurgo"
        first = reports.write_report(directory, "save", {"ok": True}, when=WHEN)
        again = reports.write_report(directory, "save", {"ok": False}, when=WHEN)
    finally:
        os.umask(old)
    assert first == directory / "save-20261207T041500Z.json"
    assert again == directory / "save-20261207T041500Z-1.json", "never replaced"
    assert json.loads(first.read_text()) == {"ok": True}
    assert mode(directory) == 0o700 and mode(first) == 0o600 and mode(again) == 0o600
    assert sorted(p.name for p in directory.iterdir()) == [again.name, first.name]
    assert reports.reports(directory, "save") == [first, again]
    assert reports.reports(directory, "verify") == []


def test_a_wider_report_directory_is_made_private_again(tmp_path: Path) -> None:
    directory = tmp_path / "resurgo"
    directory.mkdir(mode=0o755)
    os.chmod(directory, 0o755)
    reports.write_report(directory, "verify", {}, when=WHEN)
    assert mode(directory) == 0o700


def test_the_newest_reports_of_each_command_are_kept(tmp_path: Path) -> None:
    for n in range(5):
        path = reports.write_report(tmp_path, "save", {"n": n}, when=WHEN, keep=3)
        os.utime(path, ns=(n * 10**9, n * 10**9))
    reports.write_report(tmp_path, "verify", {}, when=WHEN, keep=3)
    kept = reports.reports(tmp_path, "save")
    # The fifth report prunes before its own time is set: the newest three remain.
    assert [json.loads(p.read_text())["n"] for p in kept] == [2, 3, 4]
    assert len(reports.reports(tmp_path, "verify")) == 1


def test_a_report_kept_in_a_recovered_system_stays_in_it(tmp_path: Path) -> None:
    root = tmp_path / "mnt"
    (root / "var/log").mkdir(parents=True)
    written = reports.keep_in_target(root, "recover-20261207T041500Z.json", b"{}\n")
    assert written == root / "var/log/resurgo/recover-20261207T041500Z.json"
    assert mode(root / "var/log/resurgo") == 0o700 and mode(written) == 0o600
    assert mode(root / "var/log") == 0o755

    # A restored /var/log that is a link out of the target is not followed.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    other = tmp_path / "other"
    (other / "var").mkdir(parents=True)
    (other / "var/log").symlink_to(elsewhere)
    with pytest.raises(OperationFailed, match="symbolic link"):
        reports.keep_in_target(other, "recover-x.json", b"{}")
    assert list(elsewhere.iterdir()) == []
    # Nor is a link planted at the log's own directory.
    third = tmp_path / "third"
    (third / "var/log").mkdir(parents=True)
    (third / "var/log/resurgo").symlink_to(elsewhere)
    with pytest.raises(OSError):
        reports.keep_in_target(third, "rescue-x.log", b"log")
    assert list(elsewhere.iterdir()) == []


def test_a_failed_command_leaves_its_report(tmp_path: Path) -> None:
    where = tmp_path / "reports"
    r = cli.run("verify", "--from", tmp_path / "sets", "--root", tmp_path / "absent",
                "--report-dir", where)
    assert r.returncode == 2
    [path] = reports.reports(where, "verify")
    assert mode(path) == 0o600
    data = json.loads(path.read_text())
    assert data["command"] == "verify" and data["exit_code"] == 2 and data["ok"] is False
    assert "not a directory" in data["error"] and data["result"] is None
    assert data["argv"][:2] == ["resurgo", "verify"]
    assert {"started", "ended", "seconds", "host", "resurgo", "target"} <= set(data)


def test_the_default_directory_is_the_one_reports_go_to(tmp_path: Path) -> None:
    # (tests/conftest.py points it into the test run.)
    before = len(reports.reports(reports.DEFAULT_DIR, "verify"))
    cli.run("verify", "--from", tmp_path, "--root", tmp_path / "absent")
    assert len(reports.reports(reports.DEFAULT_DIR, "verify")) == before + 1
    assert not str(reports.DEFAULT_DIR).startswith("/var/log")


def test_the_result_emitted_is_the_result_kept(tmp_path: Path) -> None:
    args = argparse.Namespace(reported="check", report_dir=tmp_path)
    run = cli_reports.begin(args, ["check", "--from", "x"])
    assert run is not None
    cli_reports.keep({"damaged": []})
    target = tmp_path / "target"
    cli_reports.copy_into(target)
    cli_reports.finish(run, 0, None)
    [path] = reports.reports(tmp_path, "check")
    data = json.loads(path.read_text())
    assert data["result"] == {"damaged": []} and data["ok"] is True and data["error"] is None
    [copy] = (target / "var/log/resurgo").iterdir()
    assert json.loads(copy.read_text()) == data
    # A command that does not declare it leaves none.
    assert cli_reports.begin(argparse.Namespace(), ["show", "x"]) is None


def test_verify_expects_what_a_recovery_leaves_in_var_log_resurgo() -> None:
    changes = Changes()
    for path in ("/var/log/resurgo/recover-20261207T041500Z.json",
                 "/var/log/resurgo/rescue-20261207T041700Z.log",
                 "/var/log/resurgo/recovery-20261207T041600Z.log"):
        assert changes.explains(path, "unexpected")
        assert not changes.explains(path, "content")
    assert not changes.explains("/var/log/resurgo/save-20261207T041500Z.json", "unexpected")
    assert not changes.explains("/var/log/resurgo/sub/recover-x.json", "unexpected")


def test_the_rescue_keeps_its_log_where_recover_kept_its_report(tmp_path: Path) -> None:
    root, logs = tmp_path / "mnt", tmp_path / "rescue-reports"
    (root / "var/log").mkdir(parents=True)
    log = tmp_path / "rescue.log"
    log.write_text("resurgo-rescue: [   1.0] everything said\n")
    agent = Agent(Console([io.StringIO()]), Config(), cmdline.parse(""))
    assert agent.keep_log(0.0, log, logs) is None  # no report: recover never got there
    reports.write_report(logs, "recover", {"command": "recover", "target": None}, when=WHEN)
    assert agent.keep_log(0.0, log, logs) is None  # it restored nothing
    reports.write_report(logs, "recover", {"target": str(root)}, when=WHEN)
    kept = agent.keep_log(0.0, log, logs)
    assert kept is not None and kept.parent == root / "var/log/resurgo"
    assert kept.name.startswith("rescue-") and kept.name.endswith(".log")
    assert kept.read_text() == log.read_text() and mode(kept) == 0o600
    # A report older than this run is another run's.
    assert agent.keep_log(4e9, log, logs) is None


def test_the_configuration_file_says_where_reports_go(tmp_path: Path) -> None:
    where = tmp_path / "from-config"
    config = tmp_path / "resurgo.toml"
    config.write_text(f'report_dir = "{where}"\n')
    os.chmod(config, 0o600)
    r = cli.run("--config", config, "verify", "--from", tmp_path / "sets", "--root",
                tmp_path / "absent")
    assert r.returncode == 2, r.output
    assert len(reports.reports(where, "verify")) == 1
    # The command line wins.
    other = tmp_path / "given"
    cli.run("--config", config, "verify", "--from", tmp_path / "sets", "--root",
            tmp_path / "absent", "--report-dir", other)
    assert len(reports.reports(other, "verify")) == 1
    assert len(reports.reports(where, "verify")) == 1
