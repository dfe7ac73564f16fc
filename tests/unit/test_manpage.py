"""resurgo(8) and the bash and zsh completions: generated from the parser, committed in
share/, in step with the parser (every command and option in each), installed by setup.py,
and working: the man page renders, bash completes, zsh loads the completion."""

from __future__ import annotations

import argparse
import ast
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from resurgo.cli import manpage
from resurgo.cli.main import build_parser
from resurgo.cli.parserinfo import read
from resurgo.errors import MEANINGS, ExitCode

TREE = Path(__file__).resolve().parents[2]
REGENERATE = "run `.venv/bin/python -m resurgo.cli.manpage` and commit share/"


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _option_strings(p: argparse.ArgumentParser) -> set[str]:
    return {s for a in p._actions if a.help is not argparse.SUPPRESS for s in a.option_strings}


# The options every command takes (--json, --debug, --config ...): those before the command.
COMMON = _option_strings(build_parser()) - {"--version"}


@pytest.mark.parametrize("rel", list(manpage.outputs()))
def test_the_committed_files_are_in_step_with_the_parser(rel: Path) -> None:
    committed = TREE / rel
    assert committed.exists(), f"{rel} is missing: {REGENERATE}"
    assert committed.read_text() == manpage.outputs()[rel], f"{rel} is stale: {REGENERATE}"


def test_check_mode_says_what_is_stale(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        manpage.main(["--check", str(tmp_path)])  # not a source tree
    assert "not resurgo's source tree" in capsys.readouterr().err
    (tmp_path / "setup.py").write_text("")
    assert manpage.main(["--check", str(tmp_path)]) == 1
    assert "share/man/man8/resurgo.8" in capsys.readouterr().err
    assert manpage.main([str(tmp_path)]) == 0
    assert manpage.main(["--check", str(tmp_path)]) == 0
    assert (tmp_path / manpage.ZSH).read_text().startswith("#compdef resurgo\n")


def _section(page: str, command: str) -> str:
    start = page.index(f'.SS "{command}"\n')
    end = page.find("\n.SS ", start + 1)
    return page[start: end if end != -1 else page.index("\n.SH ", start)]


def test_every_command_and_option_is_in_the_man_page() -> None:
    page = manpage.outputs()[manpage.MAN_PAGE]
    commands = _commands()
    assert {"save", "prune", "list", "recover", "verify"} <= set(commands)
    for name, p in commands.items():
        section = _section(page, name)
        for option in _option_strings(p) - COMMON:
            roff = option.replace("-", "\\-")
            assert f"\\fB{roff}\\fR" in section, (name, option)
    for option in _option_strings(build_parser()):
        assert option.replace("-", "\\-") in page.split(".SH COMMANDS")[0], option
    # the exit codes, from errors.py
    table = page[page.index(".SH EXIT STATUS"):page.index(".TE")]
    for code in ExitCode:
        assert f"\n{code.value}\tT{{\n" in table
        assert manpage._roff(MEANINGS[code]) in table


def test_every_command_and_option_is_in_the_completions() -> None:
    outputs = manpage.outputs()
    bash, zsh = outputs[manpage.BASH], outputs[manpage.ZSH]
    for name, p in _commands().items():
        bash_case = bash[bash.index(f"        {name})\n"):]
        bash_case = bash_case[: bash_case.index(";;\n", bash_case.index("opts="))]
        zsh_case = zsh[zsh.index(f"                {name})\n"):]
        zsh_case = zsh_case[: zsh_case.index("&& ret=0 ;;")]
        for option in _option_strings(p) - COMMON:
            opts = bash_case.split("opts=")[1].splitlines()[0].replace('"', " ")
            assert f" {option} " in f" {opts} ", (name, option)
            assert f"{option}[" in zsh_case, (name, option)
        assert f"'{name}:" in zsh


def test_the_parser_model_reads_synopses_and_groups() -> None:
    cli = read(build_parser())
    prune = next(c for c in cli.commands if c.name == "prune")
    assert prune.synopsis.startswith(
        "prune [--from MEDIUM] [--host HOST... | --all-hosts] [--dry-run] [--keep-last N]")
    assert [g.title for g in prune.groups] == ["options", "retention", "medium options"]
    save = next(c for c in cli.commands if c.name == "save")
    keep = next(o for o in save.options if "--keep" in o.flags)
    assert keep.flags == ("--keep-last", "--keep") and keep.metavar == "N"
    assert "--to MEDIUM " in save.synopsis  # required: no brackets
    plan = next(c for c in cli.commands if c.name == "plan")
    grow = next(o for o in plan.options if o.flags == ("--grow",))
    assert grow.choices == ("default", "proportional")


def test_setup_installs_the_generated_files() -> None:
    tree = ast.parse((TREE / "setup.py").read_text())
    data = next(n.value for n in ast.walk(tree) if isinstance(n, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == "DATA_FILES" for t in n.targets))
    installed = {Path(d) / Path(f).name: Path(f) for d, files in ast.literal_eval(data)
                 for f in files}
    assert set(installed.values()) == set(manpage.outputs())
    for target, source in installed.items():
        assert target == source  # the tree's share/ is laid out as the prefix's


def test_the_man_page_renders(tmp_path: Path) -> None:
    if shutil.which("groff") is None:
        pytest.skip("groff is not installed (apt-get install groff-base)")
    page = TREE / manpage.MAN_PAGE
    # -ww: every warning; -z: no output, only the diagnostics
    checked = subprocess.run(["groff", "-t", "-man", "-Tutf8", "-ww", "-z", str(page)],
                             capture_output=True, text=True, check=False)
    assert checked.returncode == 0 and checked.stderr == "", checked.stderr
    # plain text, lines long enough that no synopsis wraps
    shown = subprocess.run(["groff", "-t", "-man", "-Tutf8", "-rLL=200n", "-P-cbou", str(page)],
                           capture_output=True, text=True, check=True).stdout
    if shutil.which("man"):  # as man(1) shows it: tbl run from the page's first line
        env = {**os.environ, "MANWIDTH": "100", "MANPAGER": "cat", "PAGER": "cat"}
        subprocess.run(["man", "-l", str(page)], capture_output=True, env=env, check=True)
    assert "RESURGO(8)" in shown and "resurgo - automated system recovery for Linux" in shown
    assert "resurgo prune [--from MEDIUM] [--host HOST... | --all-hosts]" in shown
    assert "--keep-last, --keep N" in shown
    # A table: the codes right-aligned (130 and 141 are the widest), each meaning beside.
    assert "\n         5    a recovery set is damaged or incomplete" in shown
    assert "\n       141    the reader of its standard output went away" in shown
    assert "\\f" not in shown and "\\-" not in shown


def _bash_complete(*words: str) -> list[str]:
    script = TREE / manpage.BASH
    quoted = " ".join(f"'{w}'" for w in words)
    out = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c",
         f'source "{script}"; COMP_WORDS=({quoted}); COMP_CWORD={len(words) - 1}; '
         '_resurgo; printf "%s\\n" "${COMPREPLY[@]}"'],
        capture_output=True, text=True, check=True)
    assert out.stderr == ""
    return [line for line in out.stdout.splitlines() if line]


def test_bash_completes_commands_options_and_values(tmp_path: Path) -> None:
    if shutil.which("bash") is None:
        pytest.skip("bash is not installed")
    assert _bash_complete("resurgo", "pr") == ["prune"]
    assert _bash_complete("resurgo", "--json", "sa") == ["save"]
    assert _bash_complete("resurgo", "prune", "--keep-") == [
        "--keep-last", "--keep-daily", "--keep-weekly", "--keep-monthly"]
    assert _bash_complete("resurgo", "save", "--ke") == [
        "--keep-last", "--keep", "--keep-daily", "--keep-weekly", "--keep-monthly"]
    assert _bash_complete("resurgo", "plan", "--grow", "") == ["default", "proportional"]
    (tmp_path / "sets-a").mkdir()
    assert _bash_complete("resurgo", "prune", "--from", f"{tmp_path}/se") == [
        f"{tmp_path}/sets-a"]
    assert _bash_complete("resurgo", "list", f"{tmp_path}/se") == [f"{tmp_path}/sets-a"]
    # a value that is not a file: nothing offered
    assert _bash_complete("resurgo", "prune", "--keep-daily", "") == []


def test_zsh_loads_the_completion(tmp_path: Path) -> None:
    if shutil.which("zsh") is None:
        pytest.skip("zsh is not installed (apt-get install zsh)")
    functions = TREE / manpage.ZSH.parent
    subprocess.run(["zsh", "-n", str(functions / "_resurgo")], check=True)
    out = subprocess.run(
        ["zsh", "-f", "-c", f"fpath=({functions} $fpath); autoload -U compinit; "
         f"compinit -u -d {tmp_path}/zcompdump; print -r -- $_comps[resurgo]"],
        capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "_resurgo"
