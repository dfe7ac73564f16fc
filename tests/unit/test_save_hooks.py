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


# ---------------------------------------------------------------- output as it comes


def script(tmp_path: Path, text: str) -> tuple[str, ...]:
    path = tmp_path / "streaming-hook"
    path.write_text("#!/bin/sh\n" + text)
    path.chmod(0o755)
    return (str(path),)


def test_a_hooks_output_is_told_line_by_line_while_it_runs(tmp_path: Path) -> None:
    # The hook waits for a sign that its first line was told before it ends: with its
    # output held back until the end, it gives up after 10 s and says so.
    go = tmp_path / "go"
    argv = script(tmp_path, f"""
echo "quiescing the database"
i=0
while [ ! -e {go} ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
[ -e {go} ] && echo "flushed" || echo "not told in time"
echo "a warning" >&2
""")
    told: list[str] = []

    def say(line: str) -> None:
        told.append(line)
        go.touch()

    ran: list[hooks.HookRun] = []
    with hooks.around(argv, None, ran, say):
        pass
    assert told == ["pre-save: quiescing the database", "pre-save: flushed",
                    "pre-save: a warning"]
    # Kept in the report as well, as it came.
    assert ran[0].output == "quiescing the database\nflushed\na warning\n"
    assert ran[0].ok and ran[0].seconds < 5


def test_what_is_told_of_a_hooks_output_is_bounded(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hooks, "SHOWN_LINES", 3)
    argv = script(tmp_path, r"""
printf 'colour \033[31mred\033[0m\n'
head -c 5000 /dev/zero | tr '\0' x; echo
echo third
for i in $(seq 1 2000); do echo "line $i"; done
printf 'no newline at the end'
""")
    told: list[str] = []
    run = hooks.run_hook(hooks.PRE, argv, {}, told.append)
    assert told == ["pre-save: colour ?[31mred?[0m",
                    "pre-save: " + "x" * hooks.LINE_CHARS + "...",
                    "pre-save: third",
                    "pre-save: ... (more output; its end is in the report)"]
    assert run.ok
    assert run.output.startswith("...") and run.output.endswith("line 2000\nno newline at the end")
    assert len(run.output) == hooks.KEPT_OUTPUT + 3


def test_a_hook_out_of_time_is_stopped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hooks, "TIMEOUT", 1.0)
    told: list[str] = []
    run = hooks.run_hook(hooks.POST, script(tmp_path, "echo waiting\nexec sleep 30\n"), {},
                         told.append)
    assert run.returncode is None and not run.ok and "ran out of time" in run.line()
    assert told == ["post-save: waiting"] and run.output == "waiting\n"
    assert run.seconds < 5


def test_a_hook_that_leaves_a_child_holding_its_output_is_not_waited_for(
        tmp_path: Path) -> None:
    # A daemon started by the hook keeps its output open: the save goes on once the hook
    # itself has ended (and GRACE seconds for what is still coming).
    run = hooks.run_hook(hooks.PRE, script(tmp_path, "sleep 4 &\necho started\n"), {})
    assert run.ok and run.output == "started\n"
    assert run.seconds < hooks.GRACE + 1.5
