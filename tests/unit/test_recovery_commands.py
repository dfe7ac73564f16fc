"""The description's commands run in order: a failure stops the recovery or is passed, as
each record says, and every command's result is reported (those never reached too)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from resurgo.errors import ExitCode
from resurgo.model import Command, Description, OnFailure
from resurgo.recovery.load import LoadedSet
from resurgo.recovery.report import restore_summary
from resurgo.recovery.restore import CommandResult, RestoreOutcome, Status, run_commands
from tests.support.builders import description


def loaded(commands: list[Command]) -> LoadedSet:
    desc: Description = description(commands=commands)
    return LoadedSet(cast(Any, None), cast(Any, None), {}, desc, "0" * 64, (), False, None)


def test_a_failure_that_may_be_passed_is_reported_and_the_rest_runs(tmp_path: Path) -> None:
    seen: list[CommandResult] = []
    out = run_commands(loaded([
        Command(10, "/bin/false", (), OnFailure.CONTINUE),
        Command(20, "/bin/sh", ("-c", 'test "$RESURGO_ROOT" = "$0"', str(tmp_path))),
    ]), tmp_path, seen.append)
    assert [(r.seq, r.status) for r in out.results] == [(10, Status.FAILED),
                                                        (20, Status.DONE)]
    assert seen == out.results
    assert out.ok and out.aborted_at is None
    assert "exit code 1" in out.results[0].message
    assert "1 command(s) failed and were passed" in restore_summary(out)


def test_a_failure_that_aborts_stops_the_recovery_there(tmp_path: Path) -> None:
    out = run_commands(loaded([
        Command(10, "/bin/true"),
        Command(20, "resurgo:unknown", ("x",)),
        Command(30, "/bin/true"),
        Command(40, "/bin/true"),
    ]), tmp_path)
    assert [r.status for r in out.results] == [Status.DONE, Status.FAILED, Status.NOT_RUN,
                                               Status.NOT_RUN]
    assert not out.ok and out.aborted_at == 20
    assert "no step built into this resurgo" in out.results[1].message
    assert out.results[1].exit_code == ExitCode.FAILED and out.exit_code == ExitCode.FAILED
    assert "the recovery stopped at command 20" in restore_summary(out)
    assert out.restored() == {10}


def result(seq: int, code: int, on_failure: OnFailure = OnFailure.ABORT) -> CommandResult:
    return CommandResult(seq, "resurgo:restore", (), str(on_failure), Status.FAILED,
                         exit_code=code)


def test_the_exit_code_names_the_archive_failure_that_stopped_the_restore() -> None:
    damaged = RestoreOutcome([result(10, ExitCode.DAMAGED)], aborted_at=10)
    assert damaged.exit_code == ExitCode.DAMAGED
    locked = RestoreOutcome([result(10, ExitCode.DECRYPT_FAILED)], aborted_at=10)
    assert locked.exit_code == ExitCode.DECRYPT_FAILED
    # The first failure the recovery needed decides; a passed one does not count.
    mixed = RestoreOutcome([result(10, ExitCode.DAMAGED, OnFailure.CONTINUE),
                            result(20, ExitCode.FAILED)], aborted_at=20)
    assert mixed.exit_code == ExitCode.FAILED
    passed = RestoreOutcome([result(10, ExitCode.DAMAGED, OnFailure.CONTINUE)])
    assert passed.ok and passed.exit_code == ExitCode.OK
    # Other codes a failing command's error carries are failures all the same.
    odd = RestoreOutcome([result(10, ExitCode.PRECONDITION)], aborted_at=10)
    assert odd.exit_code == ExitCode.FAILED
