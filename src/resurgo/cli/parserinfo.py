"""The command line as data, read from the argparse parser itself: the commands, their
options and arguments, for the man page and the shell completions (manpage.py,
completion.py), which so cannot drift from what the parser accepts.

argparse keeps what is needed here in attributes that are not part of its documented API
(_actions, _action_groups, _mutually_exclusive_groups, the subparsers' choices); they
have been stable since Python 3.2, and the unit tests check every option comes through.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace

# The metavars whose values are paths (completed as files) or devices (completed from /dev).
PATH_METAVARS = frozenset({"FILE", "PATH", "DIR", "MNT", "ISO", "MEDIUM", "SOURCE",
                           "MEDIUM|FILE"})
DEVICE_METAVARS = frozenset({"DEV"})


@dataclass(frozen=True)
class Option:
    flags: tuple[str, ...]
    metavar: str | None  # None: a flag that takes no value
    help: str
    choices: tuple[str, ...] = ()
    repeat: bool = False
    required: bool = False
    # The flags of the options it cannot be given with (a mutually exclusive group's others).
    excludes: tuple[str, ...] = ()

    @property
    def value_kind(self) -> str:
        """What a value is, for completion: "choice", "path", "device" or "other"."""
        if self.choices:
            return "choice"
        if self.metavar in PATH_METAVARS:
            return "path"
        if self.metavar in DEVICE_METAVARS:
            return "device"
        return "other"


@dataclass(frozen=True)
class Positional:
    metavar: str
    help: str
    optional: bool = False
    many: bool = False
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class Group:
    title: str
    description: str
    options: tuple[Option, ...]


@dataclass(frozen=True)
class Command:
    name: str
    summary: str
    description: str
    synopsis: str  # "save --to MEDIUM [--root PATH] ..."
    positionals: tuple[Positional, ...]
    groups: tuple[Group, ...]  # the command's own options, by group (not the common ones)

    @property
    def options(self) -> tuple[Option, ...]:
        return tuple(o for g in self.groups for o in g.options)


@dataclass(frozen=True)
class CommandLine:
    prog: str
    description: str
    common: tuple[Option, ...]  # the options every command takes (--json, --debug, --help)
    top: tuple[Option, ...]  # those before a command alone (--version)
    commands: tuple[Command, ...]


def _help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    if not action.help:
        return ""
    formatter = parser._get_formatter()
    return " ".join(formatter._expand_help(action).split())


def _option(parser: argparse.ArgumentParser, action: argparse.Action) -> Option:
    takes_value = action.nargs != 0
    metavar: str | None = None
    if takes_value:
        if isinstance(action.metavar, str):
            metavar = action.metavar
        elif action.choices is not None:
            metavar = "{" + ",".join(str(c) for c in action.choices) + "}"
        else:
            metavar = action.dest.upper()
    return Option(
        flags=tuple(action.option_strings),
        metavar=metavar,
        help=_help(parser, action),
        choices=tuple(str(c) for c in action.choices or ()),
        repeat=isinstance(action, argparse._AppendAction | argparse._CountAction),
        required=bool(action.required),
    )


def _positional(parser: argparse.ArgumentParser, action: argparse.Action) -> Positional:
    metavar = action.metavar if isinstance(action.metavar, str) else action.dest.upper()
    return Positional(metavar, _help(parser, action), optional=action.nargs in ("?", "*"),
                      many=action.nargs in ("*", "+"),
                      choices=tuple(str(c) for c in action.choices or ()))


def _shown(action: argparse.Action) -> bool:
    return action.help is not argparse.SUPPRESS and not isinstance(
        action, argparse._SubParsersAction)


def _synopsis(name: str, parser: argparse.ArgumentParser, common: frozenset[str]) -> str:
    exclusive = {id(a): g for g in parser._mutually_exclusive_groups for a in g._group_actions}
    done: set[int] = set()
    parts = [name]
    for action in parser._actions:
        if not _shown(action) or isinstance(action, argparse._HelpAction) or id(action) in done:
            continue
        if action.dest in common:
            continue  # said once for every command
        group = exclusive.get(id(action))
        if group is not None:
            members = [a for a in group._group_actions if _shown(a)]
            done.update(id(a) for a in members)
            alts = " | ".join(_part(parser, a, bare=True) for a in members)
            parts.append(f"({alts})" if group.required else f"[{alts}]")
            continue
        parts.append(_part(parser, action))
    return " ".join(parts)


def _part(parser: argparse.ArgumentParser, action: argparse.Action, bare: bool = False) -> str:
    if not action.option_strings:
        p = _positional(parser, action)
        text = p.metavar + ("..." if p.many else "")
        return f"[{text}]" if p.optional and not bare else text
    o = _option(parser, action)
    text = o.flags[0] + (f" {o.metavar}" if o.metavar else "")
    if bare:
        return text + ("..." if o.repeat else "")
    return (text if o.required else f"[{text}]") + ("..." if o.repeat else "")


def _excluding(parser: argparse.ArgumentParser, action: argparse.Action) -> Option:
    option = _option(parser, action)
    others = tuple(f for g in parser._mutually_exclusive_groups if action in g._group_actions
                   for a in g._group_actions if a is not action for f in a.option_strings)
    return replace(option, excludes=others) if others else option


def _groups(parser: argparse.ArgumentParser, common: frozenset[str]) -> tuple[Group, ...]:
    out: list[Group] = []
    for group in parser._action_groups:
        options = tuple(
            _excluding(parser, a) for a in group._group_actions
            if _shown(a) and a.option_strings and not isinstance(a, argparse._HelpAction)
            and a.dest not in common
        )
        if options:
            title = "options" if group.title in ("options", "optional arguments") \
                else group.title or "options"
            out.append(Group(title, " ".join((group.description or "").split()), options))
    return tuple(out)


def read(parser: argparse.ArgumentParser) -> CommandLine:
    """The command line that PARSER (resurgo's, from build_parser) accepts."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    summaries = {a.dest: a.help or "" for a in sub._choices_actions}
    commands: list[Command] = []
    common: list[Option] = []
    top: list[Option] = []
    dests: set[str] = set()
    for action in parser._actions:
        if not _shown(action) or not action.option_strings:
            continue
        if isinstance(action, argparse._VersionAction):
            top.append(_option(parser, action))
        else:
            # The options before the command are those every command takes (main.py's
            # common_options), --version and --help aside.
            common.append(_option(parser, action))
            if not isinstance(action, argparse._HelpAction):
                dests.add(action.dest)
    shared = frozenset(dests)
    for name, p in sub.choices.items():
        commands.append(Command(
            name=name,
            summary=" ".join(summaries.get(name, "").split()),
            description=" ".join((p.description or "").split()),
            synopsis=_synopsis(name, p, shared),
            positionals=tuple(_positional(p, a) for a in p._actions
                              if _shown(a) and not a.option_strings),
            groups=_groups(p, shared),
        ))
    return CommandLine(parser.prog, parser.description or "", tuple(common), tuple(top),
                       tuple(commands))
