"""The exit codes: each has its meaning, documented in the README and in `resurgo --help`,
and the errors that carry the codes of archive failures."""

from __future__ import annotations

import re
from pathlib import Path

from resurgo.cli.main import build_parser
from resurgo.engine import ArchiveDamaged, DecryptionFailed, RestoreFailed, UnsafePath
from resurgo.errors import (
    Damaged,
    ExitCode,
    NotConfirmed,
    OperationFailed,
    Undecryptable,
    failure_code,
)
from resurgo.rescue.agent import finished

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_code_is_documented_in_the_readme_and_the_help() -> None:
    section = README.read_text().split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    rows = {int(m) for m in re.findall(r"^\| (\d+) \|", section, re.M)}
    assert rows == {c.value for c in ExitCode}
    epilog = build_parser().epilog or ""
    for code in ExitCode:
        assert f"{code.value} {code.meaning}" in epilog


def test_the_codes_0_to_4_keep_their_values() -> None:
    assert [ExitCode.OK, ExitCode.FAILED, ExitCode.BAD_INPUT, ExitCode.PRECONDITION,
            ExitCode.NOT_AUTHENTIC] == [0, 1, 2, 3, 4]


def test_archive_errors_carry_their_cause() -> None:
    damaged = ArchiveDamaged("a.archive", "truncated")
    assert isinstance(damaged, Damaged) and damaged.exit_code == ExitCode.DAMAGED
    locked = DecryptionFailed("a.archive", "no identity matched")
    assert isinstance(locked, Undecryptable) and locked.exit_code == ExitCode.DECRYPT_FAILED
    # Still operation failures for whoever catches those.
    assert isinstance(damaged, OperationFailed) and isinstance(locked, OperationFailed)
    assert RestoreFailed("disk full").exit_code == ExitCode.FAILED
    assert UnsafePath("a.archive", "../x", "outside").exit_code == ExitCode.FAILED
    assert NotConfirmed("no").exit_code == ExitCode.NOT_CONFIRMED


def test_failure_code_takes_the_first_cause_it_names() -> None:
    assert failure_code([]) == ExitCode.FAILED
    assert failure_code([1, 6, 5]) == ExitCode.DECRYPT_FAILED
    assert failure_code([3, 5]) == ExitCode.DAMAGED
    assert failure_code([2, 3]) == ExitCode.FAILED


def test_the_rescue_says_what_the_code_means_and_what_to_do() -> None:
    assert finished(0) == ["recovery finished: ok"]
    # The first line as it always was; the meaning on its own line.
    assert finished(1) == ["recovery finished: FAILED (exit code 1)",
                           "exit code 1: the operation failed"]
    damaged = finished(5)
    assert damaged[0] == "recovery finished: FAILED (exit code 5)"
    assert "damaged" in damaged[1] and "another copy of the set" in damaged[1]
    assert "--identity" in finished(6)[1]
    assert "not confirmed" in finished(7)[1]
    assert finished(130) == ["recovery finished: FAILED (exit code 130)"]
