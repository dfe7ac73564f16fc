"""What a description's text may be before it is parsed: its size, how deep it nests,
and how many values it holds.

A description comes from a medium anyone may have written. tomllib parses nested arrays
and inline tables by recursion, so text nested a few thousand deep ends in a
RecursionError; a huge file, or millions of tiny values (`[{},{},...]`: a dict of some
200 bytes for every 3 bytes of text), hold the rescue's memory. All are refused here,
from a scan of the text, before the parser sees it.
"""

from __future__ import annotations

import re

# A description holds the layout (a few KB per disk) and configuration files of at most
# 1 MiB each (probe.system.MAX_CONFIG_SIZE), a few dozen of them: a few MB at most. The
# parsed form takes about ten times the text; 64 MiB keeps that well within a rescue's RAM.
MAX_BYTES = 64 * 1024 * 1024

# The format nests three deep at most (a record's array of inline tables holding an
# array); 32 leaves room for hand-written files and stays far below Python's recursion
# limit (tomllib takes two frames a level).
MAX_DEPTH = 32

# A large machine's description holds some 100,000 keys and values; a million parsed
# objects take a few hundred MB at most.
MAX_VALUES = 1_000_000

# The parts of one dotted key (a.b.c): the format's keys have one or two, a number or a
# time one dot. tomllib takes memory that grows with the square of a key's parts (30,000
# of them in 74 KB took 2 GB), so more than this many dots between two separators are
# refused.
MAX_DOTS = 32

# Strings and comments are skipped whole: a bracket inside them opens nothing. An
# unterminated string is skipped to the end of its line; tomllib reports it.
_TOKEN = re.compile(
    r'"""[^"\\]*(?:(?:\\.|"(?!""))[^"\\]*)*"""'
    r"|'''.*?'''"
    r'|"[^"\\\n]*(?:\\.[^"\\\n]*)*"?'
    r"|'[^'\n]*'?"
    r"|#[^\n]*"
    r"|[\[\]{}=,.]",
    re.DOTALL,
)


def too_deep(text: str, limit: int = MAX_DEPTH) -> int | None:
    """The 1-based line where arrays and inline tables first nest deeper than limit, or None."""
    depth = 0
    for m in _TOKEN.finditer(text):
        ch = m.group()
        if ch in "[{":
            depth += 1
            if depth > limit:
                return text.count("\n", 0, m.start()) + 1
        elif ch in "]}":
            depth = max(depth - 1, 0)
    return None


def too_many_values(text: str, limit: int = MAX_VALUES) -> int | None:
    """The 1-based line where the keys, values and separators (strings, '=', ',', '[',
    '{') outside comments first number more than limit, or None."""
    count = 0
    for m in _TOKEN.finditer(text):
        if m.group()[0] in "#]}.":
            continue
        count += 1
        if count > limit:
            return text.count("\n", 0, m.start()) + 1
    return None


def too_dotted(text: str, limit: int = MAX_DOTS) -> int | None:
    """The 1-based line where more than limit dots (outside strings and comments) stand
    between two of '=', ',', '[', '{', or None."""
    dots = 0
    for m in _TOKEN.finditer(text):
        ch = m.group()
        if ch == ".":
            dots += 1
            if dots > limit:
                return text.count("\n", 0, m.start()) + 1
        elif ch in "=,[{":
            dots = 0
    return None
