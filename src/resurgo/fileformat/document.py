"""Read and write the recovery description file, with its sha256 digest beside it."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from resurgo.errors import BadInput
from resurgo.fileformat import bounds, codec, rules, version
from resurgo.fileformat.lines import locate, locate_in, positions
from resurgo.model import Description

log = logging.getLogger(__name__)

DIGEST_SUFFIX = ".sha256"


@dataclass
class Report:
    """What reading a description found: problems make it invalid, warnings do not."""

    path: str
    problems: list[codec.Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    description: Description | None = None

    def messages(self) -> list[str]:
        out = []
        for p in self.problems:
            line = f" (line {p.line})" if p.line else ""
            out.append(f"{self.path}{line}: {p.location()}: {p.message}")
        return out


class InvalidDescription(BadInput):
    def __init__(self, report: Report) -> None:
        msgs = report.messages()
        head = f"{report.path} is not a valid recovery description ({len(msgs)} problem(s))"
        super().__init__(head + "\n" + "\n".join("  " + m for m in msgs))
        self.report = report


def to_data(desc: Description) -> dict[str, Any]:
    data: dict[str, Any] = codec.encode(desc)
    return data


def dumps(desc: Description) -> str:
    data = to_data(desc)
    # tomli_w turns CRLF into LF inside multi-line strings; a file with a CRLF
    # anywhere is written with single-line strings ("\r\n" escaped) instead.
    return tomli_w.dumps(data, multiline_strings=not _has_crlf(data))


def _has_crlf(data: Any) -> bool:
    if isinstance(data, str):
        return "\r\n" in data
    if isinstance(data, dict):
        return any(_has_crlf(v) for v in data.values())
    if isinstance(data, list):
        return any(_has_crlf(v) for v in data)
    return False


def dumps_json(desc: Description) -> str:
    return json.dumps(to_data(desc), indent=2, sort_keys=False) + "\n"


def digest_path(path: Path) -> Path:
    return path.with_name(path.name + DIGEST_SUFFIX)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def atomic_write(path: Path, data: bytes) -> None:
    """Write data to path so that a reader sees the old file or the whole new one, never part.

    The file is 0600 whatever the umask: a description holds the machine's configuration,
    its secret files included when it is not sealed.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dirfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)


def write(desc: Description, path: Path) -> str:
    """Write the description and its digest; returns the sha256."""
    data = dumps(desc).encode()
    digest = sha256_hex(data)
    write_digest(path, digest)
    atomic_write(path, data)
    return digest


def write_digest(path: Path, digest: str) -> None:
    atomic_write(digest_path(path), f"{digest}  {path.name}\n".encode())


def read_digest(path: Path) -> str | None:
    dp = digest_path(path)
    try:
        text = dp.read_text(encoding="ascii", errors="replace")
    except FileNotFoundError:
        return None
    except OSError as e:
        raise BadInput(f"cannot read the digest {dp}: {e.strerror}") from None
    return text.split()[0] if text.split() else ""


def load_bytes(path: Path) -> bytes:
    """The bytes of the description at path: a regular file, read up to one byte past
    the largest a description may be (check_bytes says it is too large)."""
    try:
        if path.is_dir():
            raise BadInput(
                f"{path} is a directory, not a recovery description",
                "name the description file, e.g. DIR/description.toml",
            )
        with open(path, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                # A device or a fifo (/dev/zero, say) would be read without end.
                raise BadInput(f"{path} is not a regular file, not a recovery description")
            return f.read(bounds.MAX_BYTES + 1)
    except FileNotFoundError:
        raise BadInput(f"{path} does not exist") from None
    except PermissionError:
        raise BadInput(f"{path} cannot be read: permission denied") from None
    except IsADirectoryError:
        raise BadInput(f"{path} is a directory, not a recovery description") from None
    except OSError as e:
        raise BadInput(f"{path} cannot be read: {e.strerror}") from None


def check_bytes(raw: bytes, name: str, *, expected_digest: str | None) -> Report:
    """Parse, decode and check the description in raw; never raises for bad content."""
    report = Report(name)
    if expected_digest is not None and sha256_hex(raw) != expected_digest:
        report.problems.append(
            codec.Problem(
                (),
                f"content does not match its digest {name}{DIGEST_SUFFIX}: the file was changed "
                "or damaged after it was written (if you edited it on purpose, run "
                "'resurgo validate --rehash' on it)",
            )
        )
        return report
    if len(raw) > bounds.MAX_BYTES:
        report.problems.append(
            codec.Problem(
                (),
                f"{len(raw)} bytes is more than a description holds "
                f"({bounds.MAX_BYTES} at most); is this the right file?",
            )
        )
        return report
    if not raw.strip():
        report.problems.append(codec.Problem((), "the file is empty"))
        return report
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        report.problems.append(
            codec.Problem(
                (), f"not a text file (invalid UTF-8 at byte {e.start}); is this the right file?"
            )
        )
        return report
    if "\x00" in text:
        report.problems.append(codec.Problem((), "not a text file (it contains NUL bytes)"))
        return report
    deep = bounds.too_deep(text)
    if deep is not None:
        report.problems.append(
            codec.Problem(
                (),
                f"arrays and tables nest more than {bounds.MAX_DEPTH} deep "
                "(a description nests 3 deep at most)",
                deep,
            )
        )
        return report
    many = bounds.too_many_values(text)
    if many is not None:
        report.problems.append(
            codec.Problem(
                (),
                f"more than {bounds.MAX_VALUES} keys and values: more than a description "
                "holds; is this the right file?",
                many,
            )
        )
        return report
    dotted = bounds.too_dotted(text)
    if dotted is not None:
        report.problems.append(
            codec.Problem(
                (), f"a key of more than {bounds.MAX_DOTS + 1} dotted parts (a description's "
                "keys have one or two)", dotted,
            )
        )
        return report
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        report.problems.append(codec.Problem((), f"not valid TOML: {e}"))
        return report
    fmt = data.get("format")
    if not isinstance(fmt, dict) or "version" not in fmt:
        report.problems.append(
            codec.Problem((), "not a recovery description: it has no [format] table with a version")
        )
        return report
    unknown: list[codec.Problem] | None = None
    ver = version.parse(str(fmt.get("version")))
    if ver is None:
        report.problems.append(
            codec.Problem(
                ("format", "version"),
                f"{fmt.get('version')!r} is not a version like {version.FORMAT_VERSION!r}",
                locate(text, ("format", "version")),
            )
        )
        return report
    major, minor = ver
    writer = codec.shown(str(fmt.get("resurgo", "an unknown version")))
    if major > version.FORMAT_MAJOR:
        report.problems.append(
            codec.Problem(
                ("format", "version"),
                f"format {major}.{minor} is newer than this resurgo reads "
                f"(format {version.FORMAT_MAJOR}.x): it was written by resurgo {writer}; "
                f"read it with resurgo {writer} or newer",
                locate(text, ("format", "version")),
            )
        )
        return report
    if major < version.FORMAT_MAJOR:
        report.problems.append(
            codec.Problem(
                ("format", "version"),
                f"format {major}.{minor} is older than this resurgo reads "
                f"(format {version.FORMAT_MAJOR}.x): read it with resurgo {writer}",
                locate(text, ("format", "version")),
            )
        )
        return report
    if minor > version.FORMAT_MINOR:
        unknown = []
        report.warnings.append(
            f"{name}: format {major}.{minor} is newer than {version.FORMAT_VERSION}; "
            f"fields this resurgo does not know are skipped"
        )
    try:
        desc = codec.decode(Description, data, unknown=unknown)
    except codec.DecodeErrors as e:
        report.problems.extend(_with_lines(text, data, e.problems))
        return report
    for p in unknown or []:
        report.warnings.append(f"{name}: skipped unknown field {p.location()}")
    report.problems.extend(_with_lines(text, data, rules.check(desc)))
    if not report.problems:
        report.description = desc
    return report


def _with_lines(
    text: str, data: dict[str, Any], problems: list[codec.Problem]
) -> list[codec.Problem]:
    index = positions(text) if problems else {}
    return [
        codec.Problem(
            p.where, p.message, p.line or locate_in(index, p.where), _record_id(data, p.where)
        )
        for p in problems
    ]


def _record_id(data: dict[str, Any], where: tuple[str | int, ...]) -> str | None:
    if len(where) < 2 or not isinstance(where[0], str) or not isinstance(where[1], int):
        return None
    group = data.get(where[0])
    if isinstance(group, list) and 0 <= where[1] < len(group) and isinstance(group[where[1]], dict):
        rid = group[where[1]].get("id")
        return rid if isinstance(rid, str) else None
    return None


def check_file(path: Path) -> Report:
    raw = load_bytes(path)
    return check_bytes(raw, str(path), expected_digest=read_digest(path))


def read(path: Path) -> Description:
    """The description at path, checked; raises InvalidDescription listing every problem."""
    report = check_file(path)
    for w in report.warnings:
        log.warning("%s", w)
    if report.description is None:
        raise InvalidDescription(report)
    return report.description
