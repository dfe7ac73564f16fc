"""`resurgo validate`: a description file checked, every problem listed, and after a
deliberate edit (rehash) a new digest written beside a valid one."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from resurgo.errors import ExitCode
from resurgo.fileformat import document


@dataclass(frozen=True)
class Validation:
    path: Path
    report: document.Report
    # The digest was not checked but written anew (only for a valid description).
    rehashed: bool

    @property
    def valid(self) -> bool:
        return self.report.description is not None

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.OK if self.valid else ExitCode.BAD_INPUT

    def text(self) -> str:
        lines = [f"warning: {w}" for w in self.report.warnings]
        lines += self.report.messages()
        if self.valid:
            lines.append(f"{self.path}: valid recovery description"
                         + (" (digest rewritten)" if self.rehashed else ""))
        else:
            lines.append(f"{self.path}: {len(self.report.problems)} problem(s)")
        return "".join(line + "\n" for line in lines)

    def data(self) -> dict[str, Any]:
        return {
            "file": str(self.path),
            "valid": self.valid,
            "problems": [
                {"where": p.location(), "line": p.line, "record": p.record, "message": p.message}
                for p in self.report.problems
            ],
            "warnings": self.report.warnings,
        }


def validate_file(path: Path, *, rehash: bool = False) -> Validation:
    """The description at path checked against its digest; with rehash, its content alone
    checked and, when valid, its digest written anew."""
    raw = document.load_bytes(path)
    expected = None if rehash else document.read_digest(path)
    report = document.check_bytes(raw, str(path), expected_digest=expected)
    validation = Validation(path, report, rehashed=rehash)
    if rehash and validation.valid:
        document.write_digest(path, document.sha256_hex(raw))
    return validation
