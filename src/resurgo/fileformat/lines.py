"""Find the line of a record or field in TOML text, for error messages.

tomllib does not report positions, and the files are ones our writer made (or
a person edited), so a scan of table headers and keys finds them well enough.
A position that cannot be found is simply left out of the message.
"""

from __future__ import annotations

import re

_HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\-\"' ]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_\-]+)\s*=")


def locate(text: str, where: tuple[str | int, ...]) -> int | None:
    """1-based line of where (e.g. ("partitions", 2, "start")), or None."""
    lines = _outside_strings(text.splitlines())
    # Table path as TOML headers spell it: keys joined by dots, array indexes counted.
    header: list[str] = []
    index: int | None = None
    rest: list[str | int] = []
    parts = list(where)
    while parts and isinstance(parts[0], str):
        header.append(parts[0])
        parts.pop(0)
        if parts and isinstance(parts[0], int):
            index = parts[0]
            rest = parts[1:]
            break
    else:
        rest = []
    if not header:
        return None
    if index is None:
        # A top-level key, or a field inside a plain table like [system.bootloader].
        for depth in range(len(header) - 1, 0, -1):
            table = ".".join(header[:depth])
            start = _find_table(lines, table, array=False, nth=0)
            if start is not None:
                key = header[depth]
                found = _find_key(lines, start, key)
                if found is not None:
                    return found
                sub = _find_table(lines, ".".join(header[: depth + 1]), array=False, nth=0)
                return sub if sub is not None else start
        return _find_key(lines, -1, header[0])
    table = ".".join(header)
    start = _find_table(lines, table, array=True, nth=index)
    if start is None:
        return None
    names = [p for p in rest if isinstance(p, str)]
    if not names:
        return start + 1
    found = _find_key(lines, start, names[0])
    if found is not None:
        return found
    sub = _find_sub_table(lines, start, f"{table}.{names[0]}")
    return sub if sub is not None else start + 1


def _find_table(lines: list[str], name: str, *, array: bool, nth: int) -> int | None:
    seen = 0
    for i, line in enumerate(lines):
        m = _HEADER.match(line)
        if m and (m.group(1) == "[[") == array and _norm(m.group(2)) == name:
            if seen == nth:
                return i
            seen += 1
    return None


def _find_sub_table(lines: list[str], start: int, name: str) -> int | None:
    for i in range(start + 1, len(lines)):
        m = _HEADER.match(lines[i])
        if m is None:
            continue
        if _norm(m.group(2)) == name:
            return i + 1
        if not _norm(m.group(2)).startswith(name.split(".")[0] + "."):
            return None
    return None


def _find_key(lines: list[str], start: int, key: str) -> int | None:
    for i in range(start + 1, len(lines)):
        if _HEADER.match(lines[i]):
            return None
        m = _KEY.match(lines[i])
        if m and m.group(1) == key:
            return i + 1
    return None


def _norm(name: str) -> str:
    return ".".join(p.strip().strip("\"'") for p in name.split("."))


def _outside_strings(lines: list[str]) -> list[str]:
    """The lines, with the insides of multi-line strings blanked (content is no key)."""
    out: list[str] = []
    inside: str | None = None
    for line in lines:
        if inside is None:
            out.append(line)
            for quote in ('"""', "'''"):
                if line.count(quote) % 2 == 1:
                    inside = quote
                    break
        else:
            out.append("")
            if line.count(inside) % 2 == 1:
                inside = None
    return out
