"""The configuration file applied to the command line.

Each key stands for the options (argparse dests) of the commands that take it; its value
becomes their default before the command line is parsed, so that what the command line
gives wins and a command added later picks the keys up by its dests alone: `--from`
(dest ``source``), `save --to` and `list MEDIUM` (dest ``medium``), `--keep-daily`
(``keep_daily``), `--max-age` (``max_age``). An option that appends (--exclude) starts
from the file's list: the command line adds to it. A medium the file gives makes --to,
--from and MEDIUM optional; when neither gives one, the command says so (exit 2).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from resurgo.config import BY_NAME, Config, Value

# Where the medium comes from, when neither the command line nor the file gives it.
MEDIUM_DESTS = frozenset({"medium", "source"})


@dataclass(frozen=True)
class Binding:
    key: str
    dest: str
    # The commands it applies to; None: every command with an option of this dest.
    only: frozenset[str] | None = None
    # A --no-X option (dest no_x): the key says X.
    invert: bool = False

    def applies(self, command: str) -> bool:
        return self.only is None or command in self.only


def _only(*commands: str) -> frozenset[str]:
    return frozenset(commands)


# The keys whose meaning belongs to one command name it; the others (the medium and its
# options, the signers, the identity, retention, status) go to every command that has
# their option.
BINDINGS: tuple[Binding, ...] = (
    Binding("medium", "medium"),
    Binding("medium", "source"),
    Binding("medium", "from_url", _only("rescue")),
    # plan, recover and verify have a --root of their own: where the recreated system is.
    Binding("root", "root", _only("save", "describe", "status")),
    Binding("exclude", "exclude", _only("save")),
    # status describes the system anew and compares: it must leave out what save did.
    Binding("exclude_disks", "exclude_disk", _only("save", "describe", "status")),
    Binding("encrypt_to", "encrypt_to", _only("save")),
    Binding("sign_key", "sign_key", _only("save", "rehearse")),
    Binding("trust", "trust"),
    Binding("identity", "identity"),
    Binding("compression_level", "compression_level", _only("save")),
    Binding("catalog", "no_catalog", _only("save", "describe"), invert=True),
    Binding("keep_last", "keep_last"),
    Binding("keep_daily", "keep_daily"),
    Binding("keep_weekly", "keep_weekly"),
    Binding("keep_monthly", "keep_monthly"),
    Binding("max_age", "max_age"),
    Binding("report_dir", "report_dir"),
    Binding("s3.endpoint", "s3_endpoint"),
    Binding("s3.region", "s3_region"),
    Binding("s3.insecure_http", "s3_insecure_http"),
    Binding("ssh.key", "ssh_key"),
    Binding("ssh.known_hosts", "ssh_known_hosts"),
    Binding("ssh.strict_host_keys", "ssh_strict_host_keys"),
    Binding("nfs.version", "nfs_version"),
    Binding("nfs.mount_port", "nfs_mount_port"),
    Binding("cifs.credentials", "cifs_credentials"),
    Binding("snapshot", "snapshot", _only("save")),
    Binding("snapshot_size", "snapshot_size", _only("save")),
    Binding("packages", "packages", _only("save")),
    Binding("initramfs", "initramfs", _only("save")),
    Binding("hooks.pre-save", "pre_save", _only("save")),
    Binding("hooks.post-save", "post_save", _only("save")),
    Binding("rescue.build", "no_rescue", _only("save"), invert=True),
    Binding("rescue.require", "require_rescue", _only("save")),
    Binding("rescue.unattended", "unattended", _only("rescue")),
    Binding("rescue.after", "after", _only("rescue")),
    Binding("rescue.kernel_args", "kernel_arg", _only("rescue")),
    Binding("rescue.menu_timeout", "menu_timeout", _only("rescue")),
    Binding("rescue.modules", "add_module", _only("rescue", "rehearse")),
    Binding("rescue.programs", "add_program", _only("rescue", "rehearse")),
    Binding("rescue.compression_level", "compression_level", _only("rescue")),
    Binding("rescue.secure_boot", "secure_boot", _only("rescue")),
    Binding("rehearse.work_dir", "work_dir", _only("rehearse")),
    Binding("rehearse.disk_bus", "disk_bus", _only("rehearse")),
    Binding("rehearse.firmware", "firmware", _only("rehearse")),
    Binding("rehearse.memory", "memory", _only("rehearse")),
    Binding("rehearse.cpus", "cpus", _only("rehearse")),
)

assert {b.key for b in BINDINGS} == set(BY_NAME), "every key stands for an option"


def commands(parser: argparse.ArgumentParser, prefix: str = "") -> Iterator[
        tuple[str, argparse.ArgumentParser]]:
    """Every command's parser, by name ("save", "config show"), below parser."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                full = f"{prefix} {name}".strip()
                yield full, sub
                yield from commands(sub, full)


def bound(command: str, parser: argparse.ArgumentParser) -> Iterator[
        tuple[Binding, argparse.Action]]:
    """The options of this command that keys stand for, with their keys."""
    for action in parser._actions:
        for b in BINDINGS:
            if b.dest == action.dest and b.applies(command):
                yield b, action


def as_default(b: Binding, value: Value) -> Any:
    """A key's value as its option's default. Strings go through the option's type
    (argparse converts a string default as it converts the command line); an integer of
    a duration does too, as its text."""
    if b.invert:
        return not value
    if isinstance(value, tuple):
        return list(value)
    if BY_NAME[b.key].kind.name == "DURATION":
        return str(value)
    return value


def from_namespace(b: Binding, value: Any) -> Value | None:
    """An option's parsed value as the key's (config show)."""
    if value is None:
        return None
    if b.invert:
        return not value
    if isinstance(value, list | tuple):
        return tuple(str(v) for v in value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, bool | int | str):
        return value
    return str(value)


@dataclass
class Applied:
    """What apply() changed: the medium options it made optional, by command, for the
    message when neither the command line nor the file gives a medium."""

    relaxed: dict[str, list[argparse.Action]]

    def missing_medium(self, command: str, args: argparse.Namespace) -> str | None:
        for action in self.relaxed.get(command, []):
            if getattr(args, action.dest, None) is None:
                metavar = str(action.metavar or action.dest.upper())
                given = f"{action.option_strings[0]} {metavar}" if action.option_strings \
                    else metavar
                return (f"{command} needs a medium: give {given}, or set medium in the "
                        "configuration file (see docs/config.md)")
        return None


def apply(parser: argparse.ArgumentParser, config: Config, *, unset: object = None) -> Applied:
    """Make the file's values the defaults of the options they stand for. With ``unset``,
    every bound option's default is that object instead (whether the file sets it or
    not): what is not ``unset`` after parsing came from the command line."""
    applied = Applied({})
    for command, sub in commands(parser):
        for b, action in bound(command, sub):
            if b.dest in MEDIUM_DESTS and (action.required or not action.option_strings):
                # Given by the file, or said missing by missing_medium, once parsed.
                action.required = False
                if not action.option_strings and action.nargs is None:
                    action.nargs = "?"
                applied.relaxed.setdefault(command, []).append(action)
            if unset is not None:
                action.default = unset
            elif b.key in config.values:
                action.default = as_default(b, config.values[b.key])
    return applied
