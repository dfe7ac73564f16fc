"""The last result of `check` and of `rehearse` on this machine, which `status` shows.

One file per verb and host in the state directory (/var/lib/resurgo, or --state-dir):
``check-<host>.json`` and ``rehearse-<host>.json``, the host being that of the sets the
result is about. Each is replaced whole (a new file renamed over the old one, 0600) by
the run that produced it: the newest result, never half of one.

    {
      "format": "resurgo-result", "version": 1,
      "verb": "check",                        # or "rehearse"
      "host": "web1",
      "time": "2026-12-07T04:10:00Z",         # when the run ended (UTC)
      "medium": "s3://backups/web1",
      "ok": true,                             # every set below was found good
      "detail": "every file's data read",     # what the run did, in a few words
      "sets": [{"id": "20261207T020000Z-ab12", "ok": true, "problems": []}]
    }

`rehearse` (not built yet) writes the same document with verb "rehearse": its sets are
those it restored and booted, ``ok`` whether they booted. A file that cannot be read as
such a document is taken as no result (and said once in the log).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from resurgo import private
from resurgo.apply.journal import state_dir
from resurgo.probe.ids import safe

log = logging.getLogger("resurgo.recovery")

FORMAT = "resurgo-result"
VERSION = 1
# A result lists at most every set of one host on a medium: far below this.
MAX_BYTES = 4 << 20
_TIME = "%Y-%m-%dT%H:%M:%SZ"


class Verb(StrEnum):
    CHECK = "check"
    REHEARSE = "rehearse"


@dataclass(frozen=True)
class SetResult:
    id: str
    ok: bool
    # What was found wrong, one line each, naming the file.
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class Result:
    verb: Verb
    host: str
    time: datetime
    medium: str
    ok: bool
    sets: tuple[SetResult, ...]
    detail: str = ""

    def about(self, set_id: str) -> SetResult | None:
        return next((s for s in self.sets if s.id == set_id), None)

    def data(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "verb": str(self.verb),
            "host": self.host,
            "time": self.time.astimezone(UTC).strftime(_TIME),
            "medium": self.medium,
            "ok": self.ok,
            "detail": self.detail,
            "sets": [{"id": s.id, "ok": s.ok, "problems": list(s.problems)}
                     for s in self.sets],
        }


def result_path(verb: Verb, host: str, directory: Path | None = None) -> Path:
    return (directory or state_dir()) / f"{verb}-{safe(host)}.json"


def write_result(result: Result, directory: Path | None = None) -> Path:
    """Replace the host's last result of its verb with this one; the file written."""
    path = result_path(result.verb, result.host, directory)
    private.makedirs(path.parent)
    private.replace_bytes(path, (json.dumps(result.data(), indent=2) + "\n").encode())
    return path


def read_result(verb: Verb, host: str, directory: Path | None = None) -> Result | None:
    """The host's last result of verb; None when there is none (or none readable)."""
    path = result_path(verb, host, directory)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as e:
        log.warning("the last %s result %s cannot be read: %s", verb, path, e.strerror)
        return None
    try:
        if len(raw) > MAX_BYTES:
            raise ValueError(f"larger than {MAX_BYTES} bytes")
        return _decode(json.loads(raw.decode()), verb)
    except (ValueError, KeyError, TypeError) as e:
        log.warning("the last %s result %s is not one: %s", verb, path, e)
        return None


def _decode(doc: Any, verb: Verb) -> Result:
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f"not a {FORMAT} document")
    if doc.get("version") != VERSION or doc.get("verb") != str(verb):
        raise ValueError(f"not version {VERSION} of a {verb} result")
    sets = doc["sets"]
    if not isinstance(sets, list):
        raise TypeError("sets is not a list")
    return Result(
        verb=verb,
        host=_str(doc, "host"),
        time=datetime.strptime(_str(doc, "time"), _TIME).replace(tzinfo=UTC),
        medium=_str(doc, "medium"),
        ok=_bool(doc, "ok"),
        detail=_str(doc, "detail"),
        sets=tuple(SetResult(_str(s, "id"), _bool(s, "ok"), _strs(s.get("problems", [])))
                   for s in sets),
    )


def _str(doc: Any, key: str) -> str:
    value = doc[key]
    if not isinstance(value, str):
        raise TypeError(f"{key} is not a string")
    return value


def _bool(doc: Any, key: str) -> bool:
    value = doc[key]
    if not isinstance(value, bool):
        raise TypeError(f"{key} is not true or false")
    return value


def _strs(values: Sequence[Any]) -> tuple[str, ...]:
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise TypeError("problems is not a list of strings")
    return tuple(values)


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)
