"""Records <-> plain data (dicts, lists, str, int, float, bool), driven by the type hints.

Encoding drops None (TOML has no null), empty tuples that have a default, and the
default of a field marked OMIT_DEFAULT (one added later, so that older readers read
files without it the same);
decoding checks every field's type and collects every problem with the place it
was found, instead of stopping at the first.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from enum import Enum
from functools import cache
from typing import Any, TypeVar

from resurgo.model import OMIT_DEFAULT

T = TypeVar("T")


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a description: where (a path of keys and indexes) and what."""

    where: tuple[str | int, ...]
    message: str
    line: int | None = None
    # The id of the record the problem is in, when it has one.
    record: str | None = None

    def location(self) -> str:
        out = ""
        for n, part in enumerate(self.where):
            if isinstance(part, int):
                out += f"[{part}]"
            else:
                out += f".{shown(part)}" if out else shown(part)
            if n == 1 and self.record is not None:
                out += f" (id {self.record!r})"
        return out or "(file)"


def shown(text: str) -> str:
    """Text from a description as a message may show it: a key or a version string can
    hold escape sequences that would rewrite the administrator's terminal."""
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


class DecodeErrors(Exception):
    def __init__(self, problems: list[Problem]) -> None:
        super().__init__(f"{len(problems)} problem(s)")
        self.problems = problems


def encode(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if value is None:
                continue
            if value == () and f.default == ():
                continue
            if f.metadata.get(OMIT_DEFAULT) and value == f.default:
                continue
            out[f.name] = encode(value)
        return out
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, tuple | list):
        return [encode(v) for v in obj]
    return obj


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def decode(cls: type[T], data: Any, *, unknown: list[Problem] | None = None) -> T:
    """Build a record of type cls from data, or raise DecodeErrors listing every problem.

    Unknown fields are problems, unless ``unknown`` is given: then they are
    collected there and skipped (how a newer minor version is read).
    """
    problems: list[Problem] = []
    value = _decode(cls, data, (), problems, unknown)
    if problems:
        raise DecodeErrors(problems)
    return typing.cast(T, value)


_MISSING = object()


def _decode(
    tp: Any,
    data: Any,
    where: tuple[str | int, ...],
    problems: list[Problem],
    unknown: list[Problem] | None,
) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if data is None:
            return None
        return _decode(args[0], data, where, problems, unknown)
    if origin is tuple:
        (item_tp, _) = typing.get_args(tp)
        if not isinstance(data, list):
            problems.append(Problem(where, f"must be an array, not {_describe(data)}"))
            return ()
        return tuple(
            _decode(item_tp, v, (*where, i), problems, unknown) for i, v in enumerate(data)
        )
    if dataclasses.is_dataclass(tp):
        return _decode_record(typing.cast(type, tp), data, where, problems, unknown)
    if isinstance(tp, type) and issubclass(tp, Enum):
        try:
            return tp(data)
        except ValueError:
            allowed = ", ".join(repr(m.value) for m in tp)
            problems.append(Problem(where, f"unknown value {data!r}; allowed: {allowed}"))
            return next(iter(tp))
    if tp is bool:
        if not isinstance(data, bool):
            problems.append(Problem(where, f"must be a boolean, not {_describe(data)}"))
        return data
    if tp is int:
        if isinstance(data, bool) or not isinstance(data, int):
            problems.append(Problem(where, f"must be an integer, not {_describe(data)}"))
        return data
    if tp is float:
        if isinstance(data, bool) or not isinstance(data, int | float):
            problems.append(Problem(where, f"must be a number, not {_describe(data)}"))
            return data
        return float(data)
    if tp is str:
        if not isinstance(data, str):
            problems.append(Problem(where, f"must be a string, not {_describe(data)}"))
        return data
    raise TypeError(f"no decoder for {tp!r}")  # our bug, not the user's


def _decode_record(
    cls: type,
    data: Any,
    where: tuple[str | int, ...],
    problems: list[Problem],
    unknown: list[Problem] | None,
) -> Any:
    if not isinstance(data, dict):
        problems.append(Problem(where, f"must be a table, not {_describe(data)}"))
        return None
    hints = _hints(cls)
    kwargs: dict[str, Any] = {}
    before = len(problems)
    for f in dataclasses.fields(cls):
        raw = data.get(f.name, _MISSING)
        if raw is _MISSING:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                problems.append(Problem((*where, f.name), "required field is missing"))
            continue
        kwargs[f.name] = _decode(hints[f.name], raw, (*where, f.name), problems, unknown)
    known = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in known:
            (problems if unknown is None else unknown).append(
                Problem((*where, key), "unknown field")
            )
    if len(problems) > before:
        return None
    return cls(**kwargs)


def _describe(data: Any) -> str:
    if isinstance(data, bool):
        return "a boolean"
    if isinstance(data, int):
        return "an integer"
    if isinstance(data, float):
        return "a number"
    if isinstance(data, str):
        return "a string"
    if isinstance(data, list):
        return "an array"
    if isinstance(data, dict):
        return "a table"
    return type(data).__name__
