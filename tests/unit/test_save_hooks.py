"""The save's hooks (recovery.hooks): the pre hook before the body, the post hook after
it whatever happened, a failing pre hook failing the save once the post hook has run,
their exit codes and output kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from resurgo.errors import BadInput, OperationFailed, PreconditionFailed
from resurgo.recovery import hooks

LOGGER = """#!/bin/sh
echo "$RESURGO_HOOK ${RESURGO_SAVE:-none} $*" >> "$(dirname "$0")/log"
echo "said on stdout"
echo "said on stderr" >&2
exit "${1:-0}"
"""


@pytest.fixture
def hook(tmp_path: Path) -> Path:
    script = tmp_path / "hook"
    script.write_text(LOGGER)
    script.chmod(0o755)
    return script


def _log(hook: Path) -> list[str]:
    log = hook.parent / "log"
    return log.read_text().splitlines() if log.exists() else []


def test_the_hooks_run_around_the_body_in_order(hook: Path) -> None:
    ran: list[hooks.HookRun] = []
    with hooks.around((str(hook), "0"), (str(hook), "0"), ran), \
            (hook.parent / "log").open("a") as f:
        f.write("body\n")
    assert _log(hook) == ["pre-save none 0", "body", "post-save ok 0"]
    assert [(h.hook, h.returncode, h.ok) for h in ran] == [
        ("pre-save", 0, True), ("post-save", 0, True)]
    assert "said on stdout" in ran[0].output and "said on stderr" in ran[0].output
    assert ran[1].data()["argv"] == [str(hook), "0"] and ran[1].data()["exit"] == 0


def test_a_failing_pre_hook_fails_after_the_post_hook(hook: Path) -> None:
    ran: list[hooks.HookRun] = []
    body = []
    with pytest.raises(OperationFailed, match=r"pre-save hook failed.*exit 3") as e, \
            hooks.around((str(hook), "3"), (str(hook), "0"), ran):
        body.append("ran")
    assert body == [] and "said on stderr" in e.value.message
    assert _log(hook) == ["pre-save none 3", "post-save failed 0"]
    assert [h.returncode for h in ran] == [3, 0]


@pytest.mark.parametrize("stop", [KeyboardInterrupt, OperationFailed])
def test_the_post_hook_runs_whatever_happened(hook: Path, stop: type[BaseException]) -> None:
    ran: list[hooks.HookRun] = []
    with pytest.raises(stop), hooks.around(None, (str(hook), "5"), ran):
        raise stop("stopped")
    status = "interrupted" if stop is KeyboardInterrupt else "failed"
    assert _log(hook) == [f"post-save {status} 5"]
    assert [(h.hook, h.returncode, h.ok) for h in ran] == [("post-save", 5, False)]
    assert "exit 5" in ran[0].line()


def test_no_hooks_run_nothing(hook: Path) -> None:
    ran: list[hooks.HookRun] = []
    with hooks.around(None, None, ran):
        pass
    assert ran == [] and _log(hook) == []


def test_hook_command_lines_are_checked_before_anything_runs(hook: Path) -> None:
    assert hooks.parse(f"{hook} 'two words' x", "--pre-save") == (str(hook), "two words", "x")
    with pytest.raises(BadInput, match="--pre-save"):
        hooks.parse("unterminated 'quote", "--pre-save")
    with pytest.raises(BadInput, match="empty"):
        hooks.parse("  ", "--post-save")
    hooks.check((str(hook),), "the pre-save hook")
    hooks.check(("true",), "the pre-save hook")  # found in resurgo's PATH
    with pytest.raises(PreconditionFailed, match="no program"):
        hooks.check((str(hook.parent / "missing"),), "the pre-save hook")
    with pytest.raises(PreconditionFailed, match="no program"):
        hooks.check(("resurgo-no-such-program",), "the post-save hook")
    hook.chmod(0o644)
    with pytest.raises(PreconditionFailed, match="no program"):
        hooks.check((str(hook),), "the pre-save hook")
