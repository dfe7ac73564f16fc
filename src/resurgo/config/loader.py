"""Read the configuration file and check it whole: every problem with its line, at once.

The file names what root runs and where the secrets go (the medium, the signing key,
the recipients), so it is checked as a description is: its size and nesting bounded
before TOML parses it, every key known, every value of its type and range; and, run as
root, a file that another user could have written is refused unread.
"""

from __future__ import annotations

import os
import re
import stat
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from resurgo.config.keys import BY_NAME, DURATION, MAX_ITEMS, MAX_STRING, TABLES, Key, Kind, Value
from resurgo.errors import BadInput
from resurgo.fileformat import bounds
from resurgo.fileformat.codec import Problem, shown
from resurgo.fileformat.lines import locate_in, positions

DEFAULT_PATH = Path("/etc/resurgo/resurgo.toml")
# Names the file when --config does not; empty: no configuration file at all.
ENV_CONFIG = "RESURGO_CONFIG"

# A configuration is a few dozen lines; this leaves room for long lists of excludes.
MAX_BYTES = 1024 * 1024
# Tables hold arrays of strings: two deep.
MAX_DEPTH = 4
MAX_VALUES = 100_000

_TOML_LINE = re.compile(r"\(at line (\d+), column \d+\)")


@dataclass(frozen=True)
class Config:
    """What a configuration file sets: values by dotted key name, with their lines."""

    # None: no file was read (the default one is missing, or none is wanted).
    path: Path | None = None
    values: Mapping[str, Value] = field(default_factory=dict)
    lines: Mapping[str, int] = field(default_factory=dict)

    def get(self, name: str) -> Value | None:
        """The file's value of the key, else its default (None: not set)."""
        if name in self.values:
            return self.values[name]
        return BY_NAME[name].default

    # Typed reads of a key the caller knows the kind of (the file was checked against it).

    def flag(self, name: str) -> bool:
        return self.get(name) is True

    def number(self, name: str) -> int | None:
        value = self.get(name)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    def text(self, name: str) -> str | None:
        value = self.get(name)
        return value if isinstance(value, str) else None

    def strings(self, name: str) -> tuple[str, ...]:
        value = self.get(name)
        return value if isinstance(value, tuple) else ()


@dataclass(frozen=True)
class Checked:
    """A configuration text checked: the config when it is valid, else its problems."""

    name: str
    problems: tuple[Problem, ...]
    config: Config | None

    def messages(self) -> list[str]:
        out = []
        for p in self.problems:
            line = f" (line {p.line})" if p.line else ""
            out.append(f"{self.name}{line}: {p.location()}: {p.message}")
        return out


class InvalidConfig(BadInput):
    def __init__(self, checked: Checked) -> None:
        msgs = checked.messages()
        head = f"{checked.name} is not a valid configuration ({len(msgs)} problem(s))"
        super().__init__(head + "\n" + "\n".join("  " + m for m in msgs),
                         "see docs/config.md; `resurgo config check FILE` lists the problems")
        self.checked = checked


def chosen_path(given: str | None) -> tuple[Path | None, bool]:
    """The file to read and whether it must exist: --config (must), else $RESURGO_CONFIG
    (must; empty: none), else DEFAULT_PATH (when it is there)."""
    if given is not None:
        return Path(given), True
    env = os.environ.get(ENV_CONFIG)
    if env is not None:
        return (Path(env), True) if env else (None, False)
    return DEFAULT_PATH, False


def load(given: str | None = None) -> Config:
    """The configuration of this run (chosen_path), checked; InvalidConfig listing every
    problem, BadInput for a file that cannot be read or must not be trusted."""
    path, required = chosen_path(given)
    if path is None:
        return Config()
    raw = read_bytes(path, required=required)
    if raw is None:
        return Config()
    checked = check_bytes(raw, str(path), path)
    if checked.config is None:
        raise InvalidConfig(checked)
    return checked.config


def read_bytes(path: Path, *, required: bool) -> bytes | None:
    """The file's bytes (one past MAX_BYTES at most); None when it is missing and not
    required."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        if required:
            raise BadInput(f"the configuration file {path} does not exist") from None
        return None
    except IsADirectoryError:
        raise BadInput(f"the configuration file {path} is a directory") from None
    except OSError as e:
        raise BadInput(f"the configuration file {path} cannot be read: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise BadInput(f"the configuration file {path} is a directory")
        if not stat.S_ISREG(st.st_mode):
            # A fifo or a device would be read without end.
            raise BadInput(f"the configuration file {path} is not a regular file")
        _trusted(path, st)
        with open(fd, "rb", closefd=False) as f:
            return f.read(MAX_BYTES + 1)
    finally:
        os.close(fd)


def _trusted(path: Path, st: os.stat_result) -> None:
    """Refuse a file someone else could have written: it says what root runs and where
    the secrets go. World-writable never; run as root, it (and its directory) must be
    root's and writable by no one else, as sshd's StrictModes wants."""
    if st.st_mode & stat.S_IWOTH:
        raise BadInput(f"the configuration file {path} is writable by every user: refused",
                       f"chmod o-w {path}")
    if os.geteuid() != 0:
        return
    if st.st_uid != 0:
        raise BadInput(f"the configuration file {path} is not owned by root: refused (it "
                       "says what root runs)", f"chown root: {path}")
    if st.st_mode & stat.S_IWGRP and st.st_gid != 0:
        raise BadInput(f"the configuration file {path} is writable by its group: refused",
                       f"chmod g-w {path}")
    # The directory of the name given (where a link could be put in its place) and of
    # the file itself.
    for parent in dict.fromkeys((Path(os.path.abspath(path)).parent, path.resolve().parent)):
        try:
            pst = os.stat(parent)
        except OSError:
            continue
        if pst.st_uid != 0 or (pst.st_mode & stat.S_IWOTH and not pst.st_mode & stat.S_ISVTX) \
                or (pst.st_mode & stat.S_IWGRP and pst.st_gid != 0):
            raise BadInput(f"the configuration file {path} is in {parent}, which another "
                           "user than root can write to: refused", "keep it in a directory "
                           f"of root's, such as {DEFAULT_PATH.parent}")


def check_bytes(raw: bytes, name: str, path: Path | None = None) -> Checked:
    """Parse and check a configuration; never raises for bad content."""

    def failed(message: str, line: int | None = None) -> Checked:
        return Checked(name, (Problem((), message, line),), None)

    if len(raw) > MAX_BYTES:
        return failed(f"more than {MAX_BYTES} bytes: more than a configuration holds")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return failed(f"not a text file (invalid UTF-8 at byte {e.start})")
    if "\x00" in text:
        return failed("not a text file (it contains NUL bytes)")
    deep = bounds.too_deep(text, MAX_DEPTH)
    if deep is not None:
        return failed(f"arrays and tables nest more than {MAX_DEPTH} deep", deep)
    many = bounds.too_many_values(text, MAX_VALUES)
    if many is not None:
        return failed(f"more than {MAX_VALUES} keys and values", many)
    dotted = bounds.too_dotted(text, 2)
    if dotted is not None:
        return failed("a key of more than 3 dotted parts (the keys have one or two)", dotted)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = _TOML_LINE.search(str(e))
        return failed(f"not valid TOML: {e}", int(m.group(1)) if m else None)
    problems: list[Problem] = []
    values: dict[str, Value] = {}
    _walk(data, (), problems, values)
    index = positions(text)

    def line(where: tuple[str | int, ...]) -> int | None:
        return locate_in(index, where)

    placed = tuple(Problem(p.where, p.message, line(p.where)) for p in problems)
    if placed:
        return Checked(name, placed, None)
    lines = {k: n for k in values if (n := line(tuple(k.split(".")))) is not None}
    return Checked(name, (), Config(path, values, lines))


def _walk(data: dict[str, Any], table: tuple[str, ...], problems: list[Problem],
          values: dict[str, Value]) -> None:
    for key, value in data.items():
        where = (*table, key)
        name = ".".join(where)
        if not table and key in TABLES:
            if not isinstance(value, dict):
                problems.append(Problem(where, f"must be a table ([{key}]), not "
                                        f"{_kind_of(value)}"))
                continue
            _walk(value, where, problems, values)
            continue
        spec = BY_NAME.get(name)
        if spec is None:
            problems.append(Problem(where, _unknown(table, key)))
            continue
        checked = _value(spec, value, where, problems)
        if checked is not None:
            values[name] = checked


def _unknown(table: tuple[str, ...], key: str) -> str:
    prefix = ".".join(table) + "." if table else ""
    known = sorted(n.removeprefix(prefix) for n in BY_NAME
                   if n.startswith(prefix) and "." not in n.removeprefix(prefix))
    if not table:
        known += [f"[{t}]" for t in TABLES]
    where = f"in [{'.'.join(table)}]" if table else "at the top level"
    return f"unknown key {shown(key)!r}; the keys {where} are: {', '.join(known)}"


def _kind_of(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return "a date or time"


def _value(spec: Key, value: Any, where: tuple[str | int, ...],
           problems: list[Problem]) -> Value | None:
    """The value, checked for its key; None (and problems) when it is wrong."""
    before = len(problems)

    def bad(message: str, at: tuple[str | int, ...] = where) -> None:
        problems.append(Problem(at, message))

    if spec.kind is Kind.BOOL:
        if not isinstance(value, bool):
            bad(f"must be true or false, not {_kind_of(value)}")
            return None
        return value
    if spec.kind is Kind.INT or (spec.kind is Kind.DURATION and isinstance(value, int)
                                 and not isinstance(value, bool)):
        if not isinstance(value, int) or isinstance(value, bool):
            bad(f"must be an integer, not {_kind_of(value)}")
            return None
        low = spec.low if spec.low is not None else 1
        if value < low or (spec.high is not None and value > spec.high):
            high = f" to {spec.high}" if spec.high is not None else " or more"
            bad(f"{value} is out of range: {low}{high}")
            return None
        return value
    if spec.kind is Kind.STRINGS:
        if not isinstance(value, list):
            bad(f"must be an array of strings, not {_kind_of(value)}")
            return None
        if len(value) > MAX_ITEMS:
            bad(f"more than {MAX_ITEMS} items")
            return None
        for i, item in enumerate(value):
            if not isinstance(item, str):
                bad(f"must be a string, not {_kind_of(item)}", (*where, i))
            else:
                _string(spec, item, lambda m, i=i: bad(m, (*where, i)))  # type: ignore[misc]
        return None if len(problems) > before else tuple(value)
    if not isinstance(value, str):
        expected = ("a string, or an integer of seconds" if spec.kind is Kind.DURATION
                    else "a string")
        bad(f"must be {expected}, not {_kind_of(value)}")
        return None
    _string(spec, value, bad)
    return None if len(problems) > before else value


def _string(spec: Key, value: str, bad: Callable[[str], None]) -> None:
    if not value:
        bad("must not be empty")
    elif len(value) > MAX_STRING:
        bad(f"longer than {MAX_STRING} characters")
    elif not value.isprintable():
        bad(f"{shown(value)!r} holds control characters")
    elif spec.choices and value not in spec.choices:
        bad(f"{shown(value)!r} is not one of: {', '.join(spec.choices)}")
    elif spec.kind is Kind.PATH and not value.startswith("/"):
        bad(f"{shown(value)!r} is not an absolute path")
    elif spec.kind is Kind.DURATION and not DURATION.match(value):
        bad(f"{shown(value)!r} is not a duration such as 26h, 2d, 90m or 1w")
    elif spec.check is not None:
        why = spec.check(value)
        if why is not None:
            bad(f"{shown(value)!r}: {why}")
