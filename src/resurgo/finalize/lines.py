"""Line-preserving edits: change one field of a line and leave every other byte alone."""

from __future__ import annotations

import re
from collections.abc import Callable

from resurgo.finalize.model import LineChange, Rewrite

_FIELD = re.compile(r"\S+")


def split_lines(text: str) -> list[str]:
    """Lines with their line ends, so that joining them gives the text back exactly.

    Only \n ends a line (a \r before it stays with the line end): the form feeds and
    other separators str.splitlines honours are content in configuration files.
    """
    out = text.split("\n")
    last = out.pop()
    out = [line + "\n" for line in out]
    if last:
        out.append(last)
    return out


def body(line: str) -> tuple[str, str]:
    """(content, line end) of one line from split_lines."""
    if line.endswith("\r\n"):
        return line[:-2], "\r\n"
    if line.endswith("\n"):
        return line[:-1], "\n"
    return line, ""


def fields(content: str) -> list[re.Match[str]]:
    return list(_FIELD.finditer(content))


def replace_span(content: str, span: tuple[int, int], new: str) -> str:
    return content[: span[0]] + new + content[span[1] :]


def is_comment(content: str, chars: str = "#") -> bool:
    stripped = content.lstrip()
    return not stripped or stripped[0] in chars


LineEdit = Callable[[int, str], tuple[str | None, str, list[str]]]


def edit_lines(text: str, edit: LineEdit) -> Rewrite:
    """Apply ``edit(number, content) -> (new content or None to drop, why, warnings)``
    to every line; unchanged lines (and all line ends) stay byte-identical."""
    out: list[str] = []
    changes: list[LineChange] = []
    warnings: list[str] = []
    for n, line in enumerate(split_lines(text), start=1):
        content, end = body(line)
        new, why, warned = edit(n, content)
        warnings.extend(warned)
        if new is None:
            changes.append(LineChange(n, content, None, why))
            continue
        if new != content:
            changes.append(LineChange(n, content, new, why))
        out.append(new + end)
    return Rewrite("".join(out), tuple(changes), tuple(dict.fromkeys(warnings)))
