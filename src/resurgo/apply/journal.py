"""The journal of completed actions, which makes recovery resumable.

One JSON-lines file per plan, named by the plan hash, so a rerun with another plan never
reads an old journal:

    {"journal": 1, "plan": "sha256:...", "started": "2026-01-01T10:00:00Z"}
    {"action": "wipe:disk.sda", "kind": "wipe", "done": "2026-01-01T10:00:01Z"}
    ...

A line is appended (and fsync'd) only after an action has finished and its result has
been checked on the disks. A journal line is a claim, not proof: before an action is
skipped on a rerun, what it made is checked again on the disks (see apply.verify).
A line cut short by a crash is ignored. Keys and other secrets are never written here;
the journal and the directories made for it are private all the same (0600 and 0700,
whatever the umask).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from resurgo import private
from resurgo.errors import OperationFailed

ENV_STATE_DIR = "RESURGO_STATE_DIR"
STATE_DIR = Path("/var/lib/resurgo")
VERSION = 1


def state_dir() -> Path:
    return Path(os.environ.get(ENV_STATE_DIR) or STATE_DIR)


def default_path(plan_hash: str, directory: Path | None = None) -> Path:
    digest = plan_hash.removeprefix("sha256:")
    return (directory or state_dir()) / f"journal-{digest}.jsonl"


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def parse(text: str, plan_hash: str) -> list[str] | None:
    """The completed action ids in a journal's text; None when it is not this plan's journal."""
    lines = text.splitlines()
    if not lines:
        return None
    try:
        head = json.loads(lines[0])
    except ValueError:
        return None
    if not isinstance(head, dict) or head.get("plan") != plan_hash:
        return None
    done: list[str] = []
    for line in lines[1:]:
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # cut short by a crash
        if isinstance(entry, dict) and isinstance(entry.get("action"), str):
            done.append(entry["action"])
    return done


class Journal:
    def __init__(self, path: Path, plan_hash: str) -> None:
        self.path = path
        self.plan_hash = plan_hash
        self.done: list[str] = []
        # Whether an earlier run of this plan left the journal (and so, maybe, devices).
        self.resumed = False
        # Another plan's journal found at path (only with an explicit --journal FILE).
        self.replaced = False

    def exists(self) -> bool:
        try:
            text = self.path.read_text()
        except OSError:
            return False
        return parse(text, self.plan_hash) is not None

    def open(self) -> None:
        """Read what earlier runs of this plan completed, or start the journal."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            text = None
        except OSError as e:
            raise OperationFailed(f"cannot read the journal {self.path}: {e.strerror}") from None
        done = parse(text, self.plan_hash) if text is not None else None
        if done is not None:
            self.done = done
            self.resumed = True
            return
        self.replaced = text is not None
        try:
            private.makedirs(self.path.parent)
        except OSError as e:
            raise OperationFailed(
                f"cannot create {self.path.parent} for the journal: {e.strerror}",
                f"set {ENV_STATE_DIR} or --journal to a writable place",
            ) from None
        self._write({"journal": VERSION, "plan": self.plan_hash, "started": now()}, "w")

    def record(self, action_id: str, kind: str, **extra: Any) -> None:
        self._write({"action": action_id, "kind": kind, "done": now(), **extra}, "a")
        self.done.append(action_id)

    def _write(self, entry: dict[str, Any], mode: str) -> None:
        line = json.dumps(entry, sort_keys=True) + "\n"
        try:
            # 0600 whatever the umask: the journal names the disks and what was made on them.
            private.write_text(self.path, line, append=mode == "a")
        except OSError as e:
            raise OperationFailed(f"cannot write the journal {self.path}: {e.strerror}") from None
