"""The recovery sets on a medium, as `resurgo list` shows them: oldest first, with trusted
signers only those they signed (the others named on stderr as they were found)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from resurgo.errors import ExitCode
from resurgo.media import Medium, SetInfo
from resurgo.recovery import setfiles
from resurgo.units import human


def set_data(s: SetInfo) -> dict[str, Any]:
    return {
        "id": s.id,
        "created": s.created.isoformat(),
        "kind": str(s.kind),
        "parent": s.parent,
        "size": s.size,
        "files": s.file_count,
        "host": s.host,
        "encrypted": setfiles.encrypted(s.labels),
        "signed_by": s.signed_by,
        "rescue": s.has_rescue,
        "labels": dict(s.labels),
    }


def table(sets: Sequence[SetInfo]) -> str:
    rows = [("id", "created (UTC)", "kind", "parent", "size", "files", "host")]
    for s in sets:
        kind = str(s.kind) + (" (age)" if setfiles.encrypted(s.labels) else "")
        rows.append((s.id, f"{s.created:%Y-%m-%d %H:%M:%S}", kind, s.parent or "-",
                     human(s.size), str(s.file_count), s.host or "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() + "\n"
        for r in rows
    )


@dataclass(frozen=True)
class Listing:
    # The medium as the command line named it.
    medium: str
    sets: tuple[SetInfo, ...]
    # Trusted signers were given: only the sets they signed are listed.
    checked: bool
    # The sets left out as not authentic, (id, why); each was named on stderr as found.
    refused: tuple[tuple[str, str], ...]

    @property
    def exit_code(self) -> ExitCode:
        """4 when trusted signers are given and every set on the medium failed them."""
        return ExitCode.NOT_AUTHENTIC if self.refused and not self.sets else ExitCode.OK

    def text(self) -> str:
        if not self.sets:
            signed = " signed by a trusted key" if self.checked else ""
            return f"no recovery sets on {self.medium}{signed}\n"
        note = ("every set listed is signed by a trusted key (signed_by in --json)\n"
                if self.checked else "")
        return table(self.sets) + note

    def data(self) -> list[dict[str, Any]]:
        return [set_data(s) for s in self.sets]


def list_sets(medium: Medium, name: str) -> Listing:
    """The sets on the medium, which the command line called ``name``."""
    sets = tuple(medium.list_sets())
    return Listing(name, sets, checked=medium.trust is not None, refused=medium.refused)
