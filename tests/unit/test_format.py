"""The description format: round trips, the JSON form, the digest, atomic writes,
and the documented example (docs/format.md) kept in step with the code."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import subprocess
import typing
from enum import Enum
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, find, given, settings
from hypothesis.errors import NoSuchExample

from resurgo.errors import BadInput, ExitCode
from resurgo.fileformat import (
    InvalidDescription,
    document,
    dumps,
    dumps_json,
    read,
    to_data,
    write,
)
from resurgo.model import (
    Description,
    Encoding,
    FsType,
    PartitionKind,
    TableLabel,
)
from tests.support.examples import EXAMPLE, check, example
from tests.support.strategies import descriptions

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "format.md"

PROPERTY = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# --- round trips ------------------------------------------------------------------------------


@PROPERTY
@given(descriptions())
def test_toml_round_trip_gives_the_same_description(desc: Description) -> None:
    text = dumps(desc)
    report = check(text)
    assert report.messages() == []
    assert report.warnings == []
    assert report.description == desc
    # The writer is canonical: what it reads back it writes byte for byte the same.
    assert dumps(report.description) == text


@settings(PROPERTY, max_examples=50)
@given(descriptions())
def test_json_form_is_the_plain_data(desc: Description) -> None:
    assert json.loads(document.dumps_json(desc)) == to_data(desc)


def test_the_strategy_reaches_the_corners() -> None:
    """The generator really builds the tricky cases the round trip is meant to cover."""
    corners: dict[str, typing.Callable[[Description], bool]] = {
        "logical partitions": lambda d: any(p.kind == PartitionKind.LOGICAL for p in d.partitions),
        "gpt with first and last lba": lambda d: (
            any(
                x.table is not None
                and x.table.label == TableLabel.GPT
                and x.table.first_lba is not None
                and x.table.last_lba is not None
                for x in d.disks
            )
            and bool(d.partitions)
        ),
        "raid, luks, lvm and a filesystem": lambda d: bool(
            d.raid_arrays and d.luks_volumes and d.logical_volumes and d.filesystems
        ),
        "a subvolume mounted": lambda d: any(m.subvolume for f in d.filesystems for m in f.mounts),
        "base64 content": lambda d: any(
            c.encoding == Encoding.BASE64 and c.content for c in d.config_files
        ),
        "multi-line content": lambda d: any("\n" in c.content for c in d.config_files),
        "a disk over 2**50 bytes": lambda d: any(x.size > 2**50 for x in d.disks),
        "btrfs options": lambda d: any(
            f.type == FsType.BTRFS and f.btrfs is not None for f in d.filesystems
        ),
    }
    seen: set[str] = set()

    def all_seen(d: Description) -> bool:
        seen.update(name for name, corner in corners.items() if corner(d))
        return len(seen) == len(corners)

    try:
        find(
            descriptions(),
            all_seen,
            settings=settings(
                max_examples=3000,
                phases=[Phase.generate],
                suppress_health_check=list(HealthCheck),
                database=None,
            ),
        )
    except NoSuchExample:
        pytest.fail(f"never generated: {sorted(set(corners) - seen)}")


def _with_content(desc: Description, content: str) -> Description:
    cf = dataclasses.replace(desc.config_files[0], content=content, sha256=None)
    return dataclasses.replace(desc, config_files=(cf, *desc.config_files[1:]))


@pytest.mark.parametrize(
    "content",
    [
        "dos\r\nline endings\r\n",
        "mixed\nendings\r\n",
        'ends in quotes"""',
        "ends in a backslash\\",
        "\\\nbackslash newline",
        "trailing spaces   \n   \n",
        "line\u2028separator\n[[disks]]\nid = 1\n",
    ],
)
def test_config_content_survives_byte_for_byte(content: str) -> None:
    desc = _with_content(example(), content)
    back = check(dumps(desc)).description
    assert back is not None
    assert back.config_files[0].content == content
    assert back == desc


def test_crlf_content_keeps_other_content_readable() -> None:
    """Only a CRLF forces single-line strings; the file stays one line per field then."""
    desc = _with_content(example(), "a\r\nb\r\n")
    text = dumps(desc)
    assert 'content = "a\\r\\nb\\r\\n"' in text
    assert check(text).description == desc


# --- write, read, digest ----------------------------------------------------------------------


def test_write_writes_the_file_and_a_sha256sum_digest(tmp_path: Path) -> None:
    desc = example()
    path = tmp_path / "description.toml"
    digest = write(desc, path)
    raw = path.read_bytes()
    assert raw.decode() == dumps(desc)
    assert digest == hashlib.sha256(raw).hexdigest()
    digest_file = tmp_path / "description.toml.sha256"
    assert digest_file.read_text() == f"{digest}  description.toml\n"
    # The digest file is in sha256sum's format: the standard tool checks it.
    proc = subprocess.run(
        ["sha256sum", "--check", "--strict", digest_file.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "description.toml: OK\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "description.toml",
        "description.toml.sha256",
    ]
    assert path.stat().st_mode & 0o777 == 0o600
    assert read(path) == desc


def test_read_refuses_a_changed_byte(tmp_path: Path) -> None:
    path = tmp_path / "description.toml"
    write(example(), path)
    raw = bytearray(path.read_bytes())
    at = raw.index(b'hostname = "web1"') + len(b'hostname = "web')
    raw[at] = ord("2")
    path.write_bytes(bytes(raw))
    with pytest.raises(InvalidDescription) as err:
        read(path)
    assert err.value.exit_code == ExitCode.BAD_INPUT
    (problem,) = err.value.report.problems
    assert problem.message == (
        f"content does not match its digest {path}.sha256: the file was changed or damaged "
        "after it was written (if you edited it on purpose, run 'resurgo validate --rehash' "
        "on it)"
    )
    assert str(err.value).startswith(f"{path} is not a valid recovery description")


def test_read_refuses_a_damaged_digest_file(tmp_path: Path) -> None:
    path = tmp_path / "description.toml"
    write(example(), path)
    (tmp_path / "description.toml.sha256").write_text("0" * 64 + "  description.toml\n")
    with pytest.raises(InvalidDescription, match="does not match its digest"):
        read(path)


def test_read_without_a_digest_file_checks_the_content_only(tmp_path: Path) -> None:
    path = tmp_path / "description.toml"
    path.write_text(EXAMPLE.read_text())
    assert read(path) == example()


def test_read_reports_every_problem_not_just_the_first(tmp_path: Path) -> None:
    text = EXAMPLE.read_text()
    text = text.replace('firmware = "uefi"', 'firmware = "efi"')
    text = text.replace('device = "part.sda2"', 'device = "part.nowhere"')
    path = tmp_path / "description.toml"
    path.write_text(text)
    with pytest.raises(InvalidDescription) as err:
        read(path)
    # Type problems stop the rules (they need a well-typed description): first fix those.
    assert [p.message for p in err.value.report.problems] == [
        "unknown value 'efi'; allowed: 'bios', 'uefi'"
    ]
    path.write_text(text.replace('firmware = "efi"', 'firmware = "uefi"'))
    text = path.read_text().replace("seq = 30", "seq = 15")
    path.write_text(text)
    with pytest.raises(InvalidDescription) as err:
        read(path)
    assert [p.message for p in err.value.report.problems] == [
        "refers to 'part.nowhere', which is not in the description",
        "sequence numbers must ascend (15 after 20)",
    ]


def test_atomic_write_replaces_the_file_in_one_step(tmp_path: Path) -> None:
    path = tmp_path / "description.toml"
    path.write_bytes(b"old content\n")
    old_inode = path.stat().st_ino
    with path.open("rb") as reader:
        document.atomic_write(path, b"new content\n")
        # A reader that opened the old file still reads all of it: a rename, no rewrite.
        assert reader.read() == b"old content\n"
    assert path.read_bytes() == b"new content\n"
    assert path.stat().st_ino != old_inode
    assert [p.name for p in tmp_path.iterdir()] == ["description.toml"]


@pytest.mark.parametrize("failing", ["fsync", "replace"])
def test_atomic_write_that_fails_leaves_the_old_file_and_no_debris(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    path = tmp_path / "description.toml"
    path.write_bytes(b"old content\n")

    def fail(*args: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(document.os, failing, fail)
    with pytest.raises(OSError, match="No space left"):
        document.atomic_write(path, b"new content\n")
    monkeypatch.undo()
    assert path.read_bytes() == b"old content\n"
    assert [p.name for p in tmp_path.iterdir()] == ["description.toml"]


def test_missing_and_directory_paths_are_bad_input(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match=r"does not exist$"):
        read(tmp_path / "nothing.toml")
    with pytest.raises(BadInput, match="is a directory, not a recovery description"):
        read(tmp_path)


# --- the documented example and the field reference -------------------------------------------


def _doc() -> str:
    return DOC.read_text(encoding="utf-8")


def test_the_doc_example_is_the_example_file_and_is_valid() -> None:
    blocks = re.findall(r"^```toml\n(.*?)^```$", _doc(), re.S | re.M)
    assert len(blocks) == 1, "docs/format.md has exactly one ```toml block: the example"
    (block,) = blocks
    assert block == EXAMPLE.read_text(encoding="utf-8")
    report = check(block)
    assert report.messages() == []
    assert report.warnings == []
    assert report.description is not None
    # The example is exactly what the writer writes.
    assert dumps(report.description) == block


def test_the_example_covers_every_record_kind() -> None:
    desc = example()
    for f in dataclasses.fields(desc):
        value = getattr(desc, f.name)
        assert value not in ((), None), f"the example has no {f.name}"
    labels = {d.table.label for d in desc.disks if d.table}
    assert labels == {TableLabel.GPT, TableLabel.DOS}
    assert {f.type for f in desc.filesystems} >= {
        FsType.VFAT,
        FsType.EXT4,
        FsType.XFS,
        FsType.BTRFS,
    }
    assert all(f.ext or f.xfs or f.vfat or f.btrfs for f in desc.filesystems if f.supported), (
        "every supported filesystem of the example shows its options"
    )
    assert any(f.type == FsType.OTHER and not f.supported for f in desc.filesystems)
    assert {c.encoding for c in desc.config_files} == set(Encoding)
    assert {s.device is None for s in desc.swaps} == {True, False}


def _records(cls: type, path: str) -> dict[str, type]:
    """Every record type reachable from cls, by its dotted TOML path."""
    out = {path: cls} if path else {}
    for name, tp in typing.get_type_hints(cls).items():
        for arg in (tp, *typing.get_args(tp)):
            inner = typing.get_args(arg)[0] if typing.get_origin(arg) is tuple else arg
            if dataclasses.is_dataclass(inner):
                out.update(_records(typing.cast(type, inner), f"{path}.{name}".lstrip(".")))
    return out


def _doc_sections() -> dict[str, str]:
    """The field reference: each '### `[path]`' or '### `[[path]]`' heading to its text."""
    sections: dict[str, str] = {}
    parts = re.split(r"^### `\[{1,2}([a-z_.]+)\]{1,2}`.*$", _doc(), flags=re.M)
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        assert name not in sections, f"two sections for {name}"
        sections[name] = body.split("\n## ")[0]
    return sections


def test_the_doc_documents_every_field_of_every_record() -> None:
    records = _records(Description, "")
    sections = _doc_sections()
    assert sorted(sections) == sorted(records)
    for path, cls in records.items():
        rows = re.findall(r"^\| `([a-z_0-9]+)` \|", sections[path], flags=re.M)
        assert len(rows) == len(set(rows)), f"{path}: a field documented twice"
        assert rows == [f.name for f in dataclasses.fields(cls)], path


def _is_enum(tp: object) -> bool:
    return isinstance(tp, type) and issubclass(tp, Enum)


def test_the_doc_lists_every_enum_value() -> None:
    records = _records(Description, "")
    sections = _doc_sections()
    for path, cls in records.items():
        for name, tp in typing.get_type_hints(cls).items():
            enum = next(
                (a for a in (tp, *typing.get_args(tp)) if _is_enum(a)),
                None,
            )
            if enum is None:
                continue
            (row,) = re.findall(rf"^\| `{name}` \|.*$", sections[path], flags=re.M)
            for member in enum:
                assert f'`"{member.value}"`' in row, f"{path}.{name}: {member.value}"


def test_dumps_json_of_the_example_matches_to_data() -> None:
    desc = example()
    assert json.loads(dumps_json(desc)) == to_data(desc)
