"""resurgo config show|check: the configuration in effect, and a check of a file.

`config show` prints every key with its value and where it came from: the file (and its
line) or the default; `config show COMMAND [OPTIONS...]` what COMMAND would run with,
its command line included. The text is TOML (a configuration file itself), the origins
in comments. `config check [FILE]` lists every problem of a file with its line.

Exit 0 shown, or valid (or no file to check); 2 the file is not valid, cannot be read or
must not be trusted, or the command line shown does not parse.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

import tomli_w

from resurgo import config as configuration
from resurgo.cli import configured
from resurgo.cli.output import emit
from resurgo.config import KEYS, Checked, Config, Value
from resurgo.errors import ExitCode


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "config",
        parents=[common],
        help="show the configuration in effect, or check a configuration file",
        description="The configuration file (/etc/resurgo/resurgo.toml, or --config FILE) "
        "sets once what the commands' options would say each time; see docs/config.md. "
        "Exit 0 shown or valid; 2 the file is not valid (every problem listed with its "
        "line) or cannot be read.",
    )
    actions = p.add_subparsers(dest="config_action", metavar="ACTION", parser_class=type(p))
    actions.required = True
    show = actions.add_parser(
        "show",
        parents=[common],
        help="every key with its value and where it came from (file, command line, default)",
        description="Print the configuration in effect as TOML, each value with where it "
        "came from in a comment: the file and its line, or the default. With COMMAND and "
        "its options (config show save --to /srv/sets), what that command would run with: "
        "the file merged with its command line. Exit 0; 2 the file is not valid or the "
        "command line does not parse.",
    )
    show.add_argument("command_line", nargs=argparse.REMAINDER, metavar="COMMAND ...",
                      help="a command and its options, not run: shown merged with the file")
    show.set_defaults(handler=run_show)
    check = actions.add_parser(
        "check",
        parents=[common],
        help="check a configuration file and list every problem with its line",
        description="Check FILE (default: the configuration file of this run) as every "
        "command does before it runs: TOML, every key known, every value of its type and "
        "range, medium URLs, and its owner and mode. Exit 0 valid, or no configuration "
        "file; 2 not valid, or it cannot be read or must not be trusted.",
    )
    check.add_argument("file", nargs="?", metavar="FILE", help="the file to check")
    check.set_defaults(handler=run_check)


# ----------------------------------------------------------------- config show


@dataclass(frozen=True)
class Setting:
    key: str
    # None: not set (the command decides).
    value: Value | None
    # "default", "command line", "FILE:LINE", or "FILE:LINE + command line" (an array).
    origin: str


@dataclass(frozen=True)
class Shown:
    file: str | None
    # The command shown, as given; None: the configuration alone.
    command: tuple[str, ...] | None
    settings: tuple[Setting, ...]

    def text(self) -> str:
        out = [f"# configuration file: {self.file or 'none'}"]
        if self.command is not None:
            out.append(f"# the settings of: resurgo {' '.join(self.command)}")
        table = ""
        for s in self.settings:
            head, _, name = s.key.rpartition(".")
            if head != table:
                table = head
                out += ["", f"[{head}]"]
            if s.value is None:
                out.append(f"# {name}: not set  # {s.origin}")
            else:
                out.append(f"{name} = {_toml(s.value)}  # {s.origin}")
        return "\n".join(out) + "\n"

    def data(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for s in self.settings:
            head, _, name = s.key.rpartition(".")
            # A table whose keys are all unset is still there, as in the text (TOML).
            where = values.setdefault(head, {}) if head else values
            if s.value is None:
                continue
            where[name] = list(s.value) if isinstance(s.value, tuple) else s.value
        return {
            "file": self.file,
            "command": None if self.command is None else list(self.command),
            "values": values,
            "origins": {s.key: s.origin for s in self.settings},
        }


def _toml(value: Value) -> str:
    """A value as TOML writes it, an array on one line."""
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return tomli_w.dumps({"v": value}).partition(" = ")[2].rstrip("\n")


def _ordered(settings: list[Setting]) -> tuple[Setting, ...]:
    """In the order of KEYS: the top-level keys, then each table's (as TOML needs)."""
    rank = {k.name: n for n, k in enumerate(KEYS)}
    return tuple(sorted(settings, key=lambda s: rank[s.key]))


def _from_file(cfg: Config, key: str) -> str:
    line = cfg.lines.get(key)
    return f"{cfg.path}:{line}" if line else str(cfg.path)


def file_settings(cfg: Config) -> Shown:
    settings = [Setting(k.name, cfg.values[k.name], _from_file(cfg, k.name))
                if k.name in cfg.values else Setting(k.name, k.default, "default")
                for k in KEYS]
    return Shown(str(cfg.path) if cfg.path else None, None, _ordered(settings))


class _Unset(list[Any]):
    """The default of every bound option when finding what the command line gave: a list,
    so that an appending option can copy it; not it after parsing means given."""


def command_settings(cfg: Config, argv: list[str]) -> Shown:
    """What the command of argv would run with (ParserExit when it does not parse)."""
    from resurgo.cli.main import build_parser

    parser = build_parser()
    configured.apply(parser, cfg)
    args = parser.parse_args(argv)
    unset = _Unset()
    bare = build_parser()
    configured.apply(bare, cfg, unset=unset)
    given = bare.parse_args(argv)
    command: str = args.command
    settings = []
    for b, _action in configured.bound(command, dict(configured.commands(parser))[command]):
        value = configured.from_namespace(b, getattr(args, b.dest, None))
        on_line = getattr(given, b.dest, unset) is not unset
        in_file = b.key in cfg.values
        if on_line and in_file and isinstance(value, tuple) and cfg.values[b.key]:
            origin = f"{_from_file(cfg, b.key)} + command line"
        elif on_line:
            origin = "command line"
        elif in_file:
            origin = _from_file(cfg, b.key)
        else:
            origin = "default"
        settings.append(Setting(b.key, value, origin))
    return Shown(str(cfg.path) if cfg.path else None, tuple(argv), _ordered(settings))


def run_show(args: argparse.Namespace) -> int:
    from resurgo.cli.main import ParserExit

    cfg: Config = args.configuration
    argv: list[str] = args.command_line
    if not argv:
        emit(file_settings(cfg), args.json)
        return ExitCode.OK
    try:
        shown = command_settings(cfg, argv)
    except ParserExit as e:
        return e.code
    # --json after COMMAND belongs to the line shown; it still asks for JSON.
    emit(shown, args.json or "--json" in argv)
    return ExitCode.OK


# ----------------------------------------------------------------- config check


@dataclass(frozen=True)
class Checking:
    file: str | None
    # None: there is no file to check.
    checked: Checked | None

    @property
    def valid(self) -> bool:
        return self.checked is None or self.checked.config is not None

    def text(self) -> str:
        if self.checked is None:
            where = f"{self.file} does not exist" if self.file else \
                f"${configuration.ENV_CONFIG} is empty"
            return f"no configuration file ({where}): the commands run on their options alone\n"
        if self.checked.config is not None:
            n = len(self.checked.config.values)
            return f"{self.file}: valid configuration ({n} key(s) set)\n"
        msgs = self.checked.messages()
        return (f"{self.file} is not a valid configuration ({len(msgs)} problem(s))\n"
                + "".join(f"  {m}\n" for m in msgs))

    def data(self) -> dict[str, Any]:
        problems = [] if self.checked is None else [
            {"line": p.line, "key": p.location(), "message": p.message}
            for p in self.checked.problems]
        return {"file": self.file, "exists": self.checked is not None, "valid": self.valid,
                "problems": problems}


def run_check(args: argparse.Namespace) -> int:
    path, required = configuration.chosen_path(args.file or getattr(args, "config", None))
    if path is None:
        report = Checking(None, None)
    else:
        raw = configuration.read_bytes(path, required=required)
        report = Checking(str(path), None if raw is None
                          else configuration.check_bytes(raw, str(path), path))
    emit(report, args.json)
    return ExitCode.OK if report.valid else ExitCode.BAD_INPUT
