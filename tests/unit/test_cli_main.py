"""cli.main.main(argv) in-process: an exit code returned, never SystemExit, and nothing
left behind that a second call in the same process would meet."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from resurgo import fileformat
from resurgo.cli.main import build_parser, main
from resurgo.errors import OUTPUT_CLOSED, ExitCode
from tests.support.builders import standard
from tests.support.cli import clean_env
from tests.support.examples import EXAMPLE
from tests.support.fakesets import save


def newer(tmp_path: Path) -> Path:
    """A description of a newer minor format with a field this resurgo does not know:
    read with a warning."""
    path = tmp_path / "description.toml"
    fileformat.write(standard(), path)
    text = path.read_text().replace('version = "1.0"', 'version = "1.9"', 1)
    path.write_text(text.replace("[system]\n", '[system]\ncolour = "red"\n', 1))
    path.with_name(path.name + ".sha256").unlink()
    return path


@pytest.mark.parametrize(("argv", "code"), [(["--help"], 0), (["--version"], 0),
                                             (["show", "--help"], 0), ([], 2),
                                             (["plan", "--bogus"], 2), (["nothing"], 2)])
def test_the_parser_returns_its_exit_code(argv: list[str], code: int) -> None:
    assert main(argv) == code


def test_two_calls_in_one_process_leave_logging_as_it_was(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = logging.getLogger()
    before = (list(root.handlers), root.level)
    desc = newer(tmp_path)
    assert main(["--debug", "show", str(desc)]) == 0
    assert (list(root.handlers), root.level) == before
    first = capsys.readouterr()
    # With --debug a message is shown bare; without, prefixed, and debug ones not at all.
    assert "skipped unknown field system.colour" in first.err
    assert "resurgo: WARNING:" not in first.err
    assert main(["show", "--json", str(desc)]) == 0
    assert (list(root.handlers), root.level) == before
    second = capsys.readouterr()
    assert second.err.count("skipped unknown field system.colour") == 1
    assert "resurgo: WARNING:" in second.err
    assert second.out.startswith("{")


class _GoneReader(io.StringIO):
    """Standard output whose reader went away."""

    def write(self, s: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


def test_a_reader_gone_leaves_the_callers_stderr_open(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdout", _GoneReader())
    assert main(["show", str(EXAMPLE)]) == OUTPUT_CLOSED == 141
    # Still the caller's to use (main used to close it).
    assert not sys.stderr.closed
    print("still here", file=sys.stderr)
    assert "still here" in capsys.readouterr().err


def test_a_reader_gone_before_the_output_is_flushed_stops_quietly() -> None:
    # The summary fits the buffer: it goes out when flushed, after the reader left.
    proc = subprocess.Popen([sys.executable, "-m", "resurgo", "show", str(EXAMPLE)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, env=clean_env())
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read()
    proc.stderr.close()
    assert proc.wait(timeout=120) == OUTPUT_CLOSED, err
    assert err == b""


@pytest.mark.parametrize("command", [["check", "--from", "{m}", "--all", "--read-data"],
                                     ["check", "--json", "--from", "{m}", "--all"]])
def test_a_reader_gone_is_no_success_even_when_the_command_finds_nothing_wrong(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        command: list[str]) -> None:
    # What it found (here good, elsewhere stale or damaged) was not all read: a script
    # with pipefail must not take the truncated report for a success.
    medium = tmp_path / "m"
    save(medium)
    monkeypatch.setenv("RESURGO_STATE_DIR", str(tmp_path / "state"))
    argv = [a.format(m=medium) for a in command]
    assert main(argv) == 0
    capsys.readouterr()
    monkeypatch.setattr(sys, "stdout", _GoneReader())
    assert main(argv) == OUTPUT_CLOSED
    assert capsys.readouterr().err == ""


def test_an_error_whose_reader_went_away_too_keeps_its_code(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # `resurgo ... 2>&1 | head`: the message cannot be written, the exit code still tells.
    monkeypatch.setattr(sys, "stdout", _GoneReader())
    monkeypatch.setattr(sys, "stderr", _GoneReader())
    assert main(["show", str(tmp_path / "missing.toml")]) == ExitCode.BAD_INPUT
    assert main(["--config", str(tmp_path / "missing.conf"), "show", str(EXAMPLE)]) == (
        ExitCode.BAD_INPUT)


def test_the_codes_of_a_command_stopped_from_outside_are_documented() -> None:
    epilog = build_parser().epilog or ""
    assert "141 the reader of its standard output went away" in epilog
    assert "130 interrupted" in epilog


def test_a_report_that_cannot_be_kept_when_every_reader_went_away(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Its warning, after the command, cannot be written either: no exception escapes main.
    medium = tmp_path / "m"
    save(medium)
    monkeypatch.setenv("RESURGO_STATE_DIR", str(tmp_path / "state"))
    (tmp_path / "file").write_text("")
    monkeypatch.setattr(sys, "stdout", _GoneReader())
    monkeypatch.setattr(sys, "stderr", _GoneReader())
    assert main(["check", "--from", str(medium), "--report-dir",
                 str(tmp_path / "file" / "reports")]) == OUTPUT_CLOSED
