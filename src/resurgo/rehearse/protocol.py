"""What a rehearsal's guests tell the host on the serial console, and how the host reads it.

Every message is one line: the marker, a space, and a JSON object with a ``kind``::

    RESURGO-REHEARSE {"kind": "step", "step": "layout", "event": "start"}
    RESURGO-REHEARSE {"kind": "step", "step": "layout", "event": "end", "ok": true}
    RESURGO-REHEARSE {"kind": "recovered", "ok": true, "exit": 0}
    RESURGO-REHEARSE {"kind": "check", "name": "canary", "ok": false, "detail": "..."}
    RESURGO-REHEARSE {"kind": "result", "ok": true}

The rescue in rehearsal mode (resurgo.rehearse=1) writes ``step`` lines (the steps of
recovery.events.Step, and "rescue" and "set" of the agent itself) and one ``recovered``
line; the recovered system's check writes a ``check`` line per property and one
``result`` line, then powers off. The host times each line as it arrives (its own clock:
the guests' clocks say nothing about the host's), so the lines carry no time.

The console is written by a system being tested, and the kernel may print into the
middle of a line: a line is read only from its marker on, bounded, and anything that is
not such an object is no message (never an error: the console holds all sorts).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

MARK = "RESURGO-REHEARSE"
# A message is a few hundred bytes; a longer "line" is console garbage.
MAX_LINE = 4096
# Names and details as they may be shown: bounded, printable.
MAX_FIELD = 1024

KINDS = ("step", "recovered", "check", "result")


@dataclass(frozen=True)
class Message:
    kind: str
    fields: dict[str, Any]

    def text(self, name: str, default: str = "") -> str:
        value = self.fields.get(name, default)
        return value if isinstance(value, str) else default

    def flag(self, name: str) -> bool | None:
        value = self.fields.get(name)
        return value if isinstance(value, bool) else None


def line(kind: str, **fields: str | int | bool) -> str:
    """One message as its console line (with the newline)."""
    if kind not in KINDS:
        raise ValueError(f"unknown message kind {kind!r}")
    body = json.dumps({"kind": kind, **fields}, separators=(", ", ": "), ensure_ascii=True)
    return f"{MARK} {body}\n"


def _clean(value: object) -> object:
    if isinstance(value, str):
        text = "".join(c if c.isprintable() else "?" for c in value)
        return text[:MAX_FIELD]
    if isinstance(value, bool | int) and not (isinstance(value, int) and abs(value) > 2**31):
        return value
    return None


def parse(text: str) -> Message | None:
    """The message a console line holds, or None when it holds none."""
    at = text.find(MARK + " {")
    if at < 0 or len(text) - at > MAX_LINE:
        return None
    body = text[at + len(MARK) + 1:].strip()
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("kind") not in KINDS:
        return None
    fields = {str(k)[:64]: _clean(v) for k, v in data.items() if k != "kind"}
    kept = {k: v for k, v in fields.items() if v is not None}
    return Message(kind=str(data["kind"]), fields=kept)
