"""The format's example description (tests/data/format/example.toml), edits of it, and
what the reader reports about them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from resurgo.fileformat import Report, check_bytes
from resurgo.model import Description

EXAMPLE = Path(__file__).resolve().parents[1] / "data" / "format" / "example.toml"


def example_text() -> str:
    return EXAMPLE.read_text(encoding="utf-8")


def check(text: str) -> Report:
    return check_bytes(text.encode(), "description.toml", expected_digest=None)


def example() -> Description:
    report = check(example_text())
    assert report.description is not None, report.messages()
    return report.description


def edit(text: str, anchor: str, old: str, new: str) -> str:
    """text with the first `old` at or after the one `anchor` replaced by `new`."""
    assert text.count(anchor) == 1, f"anchor {anchor!r} is not unique"
    at = text.index(old, text.index(anchor))
    return text[:at] + new + text[at + len(old) :]


# (where, message, the stripped line it points at or None)
Found = tuple[str, str, str | None]


def found(text: str, report: Report) -> list[Found]:
    lines = text.split("\n")
    return [
        (p.location(), p.message, lines[p.line - 1].strip() if p.line else None)
        for p in report.problems
    ]


@dataclass(frozen=True)
class Case:
    """A malformed description: the example with one defect, and what the reader finds."""

    name: str
    defect: Callable[[str], str]
    expected: list[Found]
