"""Durations as people write them on a command line or in a configuration: 26h, 2d,
1d12h, 90m, 1w, 3600s (a bare number is seconds)."""

from __future__ import annotations

import re

from resurgo.errors import BadInput

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_PART = re.compile(r"([0-9]+)([smhdw])")
_WHOLE = re.compile(r"(?:[0-9]+[smhdw])+")


def parse_duration(text: str, what: str = "duration") -> int:
    """The duration in seconds; BadInput (naming ``what``) for anything else, or zero."""
    value = text.strip().lower()
    if value.isdigit():
        seconds = int(value)
    elif _WHOLE.fullmatch(value):
        seconds = sum(int(n) * _UNITS[u] for n, u in _PART.findall(value))
    else:
        raise BadInput(f"{what} {text!r} is not a duration",
                       "write it as a number and a unit: 90m, 26h, 2d, 1w, 1d12h")
    if seconds <= 0:
        raise BadInput(f"{what} {text!r}: give a duration longer than zero")
    return seconds


def format_duration(seconds: float) -> str:
    """A duration as a person reads it: the two largest units (2d 3h, 5h 12m, 40s)."""
    left = max(0, int(seconds))
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if left >= size or (unit == "s" and not parts):
            parts.append(f"{left // size}{unit}")
            left %= size
        if len(parts) == 2:
            break
    return " ".join(parts)
