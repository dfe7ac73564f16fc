"""cli.main.main(argv) in-process: an exit code returned, never SystemExit, and nothing
left behind that a second call in the same process would meet."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from resurgo import fileformat
from resurgo.cli.main import main
from tests.support.builders import standard


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
