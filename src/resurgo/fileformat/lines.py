"""Find the line of a record or field in TOML text, for error messages.

tomllib does not report positions, so the text is scanned once more: string
contents and comments are blanked (a config file's content never looks like a
key), then table headers, keys, array items and inline-table keys are mapped to
the path of keys and indexes they define. A problem's place is the line of the
longest known prefix of its path: the field itself, else its record. Bare keys
only (our writer never quotes keys); a position that cannot be found is simply
left out of the message.
"""

from __future__ import annotations

import re

Path = tuple[str | int, ...]

_HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_\-]+(?:\s*\.\s*[A-Za-z0-9_\-]+)*)\s*\]\]?\s*$")
_KEY = re.compile(r"\s*([A-Za-z0-9_\-]+(?:\s*\.\s*[A-Za-z0-9_\-]+)*)\s*=")


def locate(text: str, where: Path) -> int | None:
    """1-based line of where (e.g. ("partitions", 2, "start")), or None."""
    return locate_in(positions(text), where)


def locate_in(index: dict[Path, int], where: Path) -> int | None:
    """locate, in the positions of a text scanned once (a file with thousands of
    problems is scanned once, not once for each)."""
    for n in range(len(where), 0, -1):
        line = index.get(where[:n])
        if line is not None:
            return line
    return None


def positions(text: str) -> dict[Path, int]:
    """Every path the text defines, to the 1-based line where it is defined first."""
    return _Scanner(_code_lines(text)).run()


class _Scanner:
    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        self.found: dict[Path, int] = {}
        # Arrays of tables by their resolved path, to how many elements they have so far.
        self.arrays: dict[Path, int] = {}
        self.table: Path = ()
        # Open inline arrays/tables of a value that spans lines:
        # [path, kind, next item index, expecting an item or key].
        self.stack: list[list[object]] = []

    def record(self, path: Path, line: int) -> None:
        self.found.setdefault(path, line + 1)

    def run(self) -> dict[Path, int]:
        for n, line in enumerate(self.lines):
            if self.stack:
                self.value(line, 0, n)
                continue
            m = _HEADER.match(line)
            if m:
                self.header(m.group(1) == "[[", _dotted(m.group(2)), n)
                continue
            k = _KEY.match(line)
            if k:
                path = (*self.table, *_dotted(k.group(1)))
                for depth in range(len(self.table) + 1, len(path) + 1):
                    self.record(path[:depth], n)
                self.value(line, k.end(), n, path)
        return self.found

    def header(self, array: bool, names: list[str], n: int) -> None:
        path: Path = ()
        for i, name in enumerate(names):
            path = (*path, name)
            last = i == len(names) - 1
            if last and array:
                self.record(path, n)  # the array as a whole: where it starts
                count = self.arrays.get(path, 0)
                self.arrays[path] = count + 1
                path = (*path, count)
            elif path in self.arrays:
                path = (*path, self.arrays[path] - 1)
        self.table = path
        self.record(path, n)

    def value(self, line: str, pos: int, n: int, path: Path | None = None) -> None:
        """Scan a value from pos; items and keys of inline arrays and tables are recorded."""
        if path is not None:
            rest = line[pos:].lstrip()
            if rest[:1] not in ("[", "{"):
                return  # a scalar
            pos = len(line) - len(rest) + 1
            self.stack.append([path, rest[0], 0, True])
        while pos < len(line) and self.stack:
            frame = self.stack[-1]
            fpath, kind, count, expecting = frame
            assert isinstance(fpath, tuple) and isinstance(count, int)
            ch = line[pos]
            if ch.isspace():
                pos += 1
            elif ch in "]}":
                self.stack.pop()
                pos += 1
            elif ch == ",":
                frame[3] = True
                pos += 1
            elif kind == "{":
                m = _KEY.match(line, pos)
                if m is None or not expecting:
                    pos += 1
                    continue
                frame[3] = False
                item = (*fpath, *_dotted(m.group(1)))
                self.record(item, n)
                pos = self._open(line, m.end(), item)
            elif expecting:
                item = (*fpath, count)
                frame[2] = count + 1
                frame[3] = False
                self.record(item, n)
                pos = self._open(line, pos, item)
            else:
                pos += 1

    def _open(self, line: str, pos: int, path: Path) -> int:
        """After a key or at an item: open a nested array or table, or skip past a scalar."""
        while pos < len(line) and line[pos].isspace():
            pos += 1
        if pos < len(line) and line[pos] in "[{":
            self.stack.append([path, line[pos], 0, True])
            return pos + 1
        while pos < len(line) and line[pos] not in ",]}":
            pos += 1
        return pos


def _dotted(key: str) -> list[str]:
    return [part.strip() for part in key.split(".")]


# Inside a string, what can end it or matters to it; outside, what starts a string or a
# comment. Runs of anything else are taken whole (a description's long base64 content
# is one run, not a million steps).
_IN_STRING = {'"': re.compile(r'[\\\n"]'), "'": re.compile(r"[\n']")}
_CODE = re.compile(r"""[^#"']+""")


def _code_lines(text: str) -> list[str]:
    """The lines of text with string contents and comments removed (quotes kept).

    Lines are split at LF only, as TOML and editors count them (a U+2028 inside
    a string is no line break).
    """
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "#":
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif ch in "\"'":
            quote = ch * 3 if text.startswith(ch * 3, i) else ch
            out.append(quote)
            i += len(quote)
            special = _IN_STRING[ch]
            while i < n:
                m = special.search(text, i)
                if m is None:
                    i = n
                    break
                i = m.start()
                c = text[i]
                if c == "\\":
                    if text.startswith("\n", i + 1):
                        out.append("\n")
                    i += 2
                elif text.startswith(quote, i):
                    if len(quote) == 3:
                        # Up to two quotes right before the closing three belong to the string.
                        while text.startswith(quote, i + 1) and text[i + 3 : i + 4] == ch:
                            i += 1
                    out.append(quote)
                    i += len(quote)
                    break
                elif c == "\n":
                    if len(quote) == 1:
                        break  # an unterminated string; tomllib reports it
                    out.append("\n")
                    i += 1
                else:
                    i += 1
        else:
            m = _CODE.match(text, i)
            assert m is not None  # ch is none of # " '
            out.append(m.group())
            i = m.end()
    return [line.removesuffix("\r") for line in "".join(out).split("\n")]
