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
from resurgo.cli.main import main
from tests.support.builders import standard
from tests.support.cli import clean_env
from tests.support.examples import EXAMPLE


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
    assert main(["show", str(EXAMPLE)]) == 0
    # Still the caller's to use (main used to close it).
    assert not sys.stderr.closed
    print("still here", file=sys.stderr)
    assert "still here" in capsys.readouterr().err


def test_a_reader_gone_before_the_output_is_flushed_is_no_error() -> None:
    # The summary fits the buffer: it goes out when flushed, after the reader left.
    proc = subprocess.Popen([sys.executable, "-m", "resurgo", "show", str(EXAMPLE)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, env=clean_env())
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read()
    proc.stderr.close()
    assert proc.wait(timeout=120) == 0, err
    assert err == b""
