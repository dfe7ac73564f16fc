"""`resurgo validate` and `resurgo show` as a user runs them: the real command line, real files.

Whatever the file, the user sees one clear message and exit code 2, never a traceback.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from resurgo.fileformat import check_bytes, document, read, to_data, write
from tests.support import cli
from tests.support.examples import EXAMPLE, example_text

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    """The example written as resurgo writes it: with its digest beside it."""
    desc = check_bytes(EXAMPLE.read_bytes(), "example", expected_digest=None).description
    assert desc is not None
    path = tmp_path / "description.toml"
    write(desc, path)
    return path


def test_validate_accepts_the_example(saved: Path) -> None:
    proc = cli.run("validate", saved)
    assert proc.returncode == 0
    assert proc.stdout == f"{saved}: valid recovery description\n"
    assert proc.stderr == ""


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "the file is empty"),
        (
            bytes(range(256)) * 4,
            "not a text file (invalid UTF-8 at byte 128); is this the right file?",
        ),
        (b"[server]\nport = 8080\n", "not a recovery description: it has no [format] table"),
        (b"[format\nversion = 1\n", "not valid TOML: Expected ']' at the end of a table"),
    ],
    ids=["empty", "binary garbage", "other TOML", "invalid TOML"],
)
def test_validate_of_files_that_are_no_description(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "description.toml"
    path.write_bytes(content)
    proc = cli.run("validate", path)
    assert proc.returncode == 2
    assert proc.stderr == ""
    problem, summary = proc.stdout.splitlines()
    assert problem.startswith(f"{path}")
    assert message in problem
    assert summary == f"{path}: 1 problem(s)"


def test_validate_of_a_format_table_alone_lists_what_is_missing(tmp_path: Path) -> None:
    path = tmp_path / "description.toml"
    path.write_bytes(b'[format]\nversion = "1.2"\n')
    proc = cli.run("validate", path)
    assert proc.returncode == 2
    assert proc.stdout.splitlines() == [
        f"{path} (line 1): format.resurgo: required field is missing",
        f"{path} (line 1): format.created: required field is missing",
        f"{path} (line 1): format.host: required field is missing",
        f"{path}: system: required field is missing",
        f"{path}: 4 problem(s)",
    ]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("missing.toml", "missing.toml does not exist"),
        (".", "is a directory, not a recovery description"),
    ],
)
def test_validate_of_a_path_that_is_no_file(tmp_path: Path, name: str, message: str) -> None:
    proc = cli.run("validate", tmp_path / name)
    assert proc.returncode == 2
    assert proc.stdout == ""
    first, *rest = proc.stderr.splitlines()
    assert first.startswith("resurgo: error: ")
    assert message in first
    assert all(line.startswith("  hint: ") for line in rest)


def test_validate_without_a_file_is_a_usage_error() -> None:
    proc = cli.run("validate")
    assert proc.returncode == 2
    assert "the following arguments are required: FILE" in proc.stderr


def test_validate_lists_every_problem_with_its_line(tmp_path: Path) -> None:
    text = example_text()
    text = text.replace("start = 3147776", "start = 3000000")
    text = text.replace('device = "part.sda2"', 'device = "part.sda9"')
    text = text.replace("seq = 30", "seq = 5")
    path = tmp_path / "description.toml"
    path.write_text(text)
    lines = text.split("\n")
    device_line = lines.index('device = "part.sda9"') + 1
    proc = cli.run("validate", path)
    assert proc.returncode == 2
    assert proc.stdout.splitlines() == [
        f"{path} (line {device_line}): filesystems[1] "
        "(id 'fs.sda2').device: refers to 'part.sda9', which is not in the description",
        f"{path} (line {lines.index('start = 3000000') + 1}): partitions[2] (id 'part.sda3')"
        ".start: overlaps partition 'part.sda2' (which ends at sector 3147775)",
        f"{path} (line {lines.index('seq = 5') + 1}): commands[2].seq: sequence numbers must "
        "ascend (5 after 20)",
        f"{path}: 3 problem(s)",
    ]


def test_validate_json_lists_all_problems(tmp_path: Path) -> None:
    text = example_text()
    text = text.replace("start = 3147776", "start = 3000000")
    text = text.replace('device = "part.sda2"', 'device = "part.sda9"')
    text = text.replace("seq = 30", "seq = 5")
    path = tmp_path / "description.toml"
    path.write_text(text)
    proc = cli.run("validate", "--json", path)
    assert proc.returncode == 2
    out = json.loads(proc.stdout)
    lines = text.split("\n")
    assert out == {
        "file": str(path),
        "valid": False,
        "problems": [
            {
                "where": "filesystems[1] (id 'fs.sda2').device",
                "line": lines.index('device = "part.sda9"') + 1,
                "record": "fs.sda2",
                "message": "refers to 'part.sda9', which is not in the description",
            },
            {
                "where": "partitions[2] (id 'part.sda3').start",
                "line": lines.index("start = 3000000") + 1,
                "record": "part.sda3",
                "message": "overlaps partition 'part.sda2' (which ends at sector 3147775)",
            },
            {
                "where": "commands[2].seq",
                "line": lines.index("seq = 5") + 1,
                "record": None,
                "message": "sequence numbers must ascend (5 after 20)",
            },
        ],
        "warnings": [],
    }


def test_validate_json_of_a_valid_file_and_of_garbage(saved: Path, tmp_path: Path) -> None:
    proc = cli.run("validate", "--json", saved)
    assert proc.returncode == 0
    assert json.loads(proc.stdout) == {
        "file": str(saved),
        "valid": True,
        "problems": [],
        "warnings": [],
    }
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"\xff\xfe\x00junk")
    proc = cli.run("validate", "--json", garbage)
    assert proc.returncode == 2
    out = json.loads(proc.stdout)
    assert out["valid"] is False
    assert [p["message"] for p in out["problems"]] == [
        "not a text file (invalid UTF-8 at byte 0); is this the right file?"
    ]


def test_validate_json_shows_the_warnings_of_a_newer_minor(tmp_path: Path) -> None:
    path = tmp_path / "description.toml"
    path.write_text(example_text().replace('version = "1.3"', 'version = "1.9"', 1))
    proc = cli.run("validate", "--json", path)
    assert proc.returncode == 0
    out = json.loads(proc.stdout)
    assert out["valid"] is True
    assert out["warnings"] == [
        f"{path}: format 1.9 is newer than 1.3; fields this resurgo does not know are skipped"
    ]


def test_changed_byte_then_rehash_after_a_deliberate_edit(saved: Path) -> None:
    digest_file = saved.with_name("description.toml.sha256")
    old_digest = digest_file.read_text()
    saved.write_text(saved.read_text().replace('hostname = "web1"', 'hostname = "web9"'))

    proc = cli.run("validate", saved)
    assert proc.returncode == 2
    assert proc.stdout.splitlines() == [
        f"{saved}: (file): content does not match its digest {saved}.sha256: the file was "
        "changed or damaged after it was written (if you edited it on purpose, run "
        "'resurgo validate --rehash' on it)",
        f"{saved}: 1 problem(s)",
    ]
    assert digest_file.read_text() == old_digest

    proc = cli.run("validate", "--rehash", saved)
    assert proc.returncode == 0
    assert proc.stdout == f"{saved}: valid recovery description (digest rewritten)\n"
    raw = saved.read_bytes()
    assert digest_file.read_text() == f"{document.sha256_hex(raw)}  description.toml\n"
    assert read(saved).system.hostname == "web9"
    assert cli.run("validate", saved).returncode == 0


def test_rehash_refuses_an_invalid_edit(saved: Path) -> None:
    digest_file = saved.with_name("description.toml.sha256")
    old_digest = digest_file.read_text()
    saved.write_text(saved.read_text().replace('firmware = "uefi"', 'firmware = "efi"'))
    proc = cli.run("validate", "--rehash", saved)
    assert proc.returncode == 2
    assert "unknown value 'efi'; allowed: 'bios', 'uefi'" in proc.stdout
    assert "digest rewritten" not in proc.stdout
    assert digest_file.read_text() == old_digest


# --- show -------------------------------------------------------------------------------------


def test_show_prints_each_disk_with_its_partitions_and_the_volume_roles(saved: Path) -> None:
    desc = read(saved)
    proc = cli.run("show", saved)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    lines = out.splitlines()

    def first_line(text: str) -> int:
        return next(n for n, line in enumerate(lines) if text in line)

    disk_at = [first_line(d.path) for d in desc.disks]
    assert disk_at == sorted(disk_at), "disks in description order"
    bounds = [*disk_at, len(lines)]
    for k, disk in enumerate(desc.disks):
        for part in desc.partitions:
            if part.disk == disk.id:
                assert part.path is not None
                at = first_line(part.path)
                assert bounds[k] < at < bounds[k + 1], f"{part.path} under {disk.path}"
    for fs in desc.filesystems:
        for mount in fs.mounts:
            assert f" {mount.mountpoint}" in out
    system = [line for line in lines if "system volume" in line.lower()]
    boot = [line for line in lines if "boot volume" in line.lower()]
    assert len(system) == 1 and "btrfs" in system[0] and "/home" in system[0]
    assert len(boot) == 1 and "ext4" in boot[0] and " /boot " in boot[0]


def test_show_json_is_the_description_data(saved: Path) -> None:
    proc = cli.run("show", "--json", saved)
    assert proc.returncode == 0
    assert json.loads(proc.stdout) == to_data(read(saved))


@pytest.mark.parametrize("defect", ["digest", "content", "missing", "empty"])
def test_show_of_a_bad_file_is_one_message(saved: Path, defect: str) -> None:
    path = saved
    if defect == "digest":
        saved.write_text(saved.read_text().replace('"web1"', '"web2"', 1))
    elif defect == "content":
        saved.write_text(saved.read_text().replace("seq = 30", "seq = 5"))
        saved.with_name("description.toml.sha256").unlink()
    elif defect == "missing":
        path = saved.with_name("nothing.toml")
    else:
        saved.write_bytes(b"")
        saved.with_name("description.toml.sha256").unlink()
    proc = cli.run("show", path)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.startswith("resurgo: error: ")
    assert proc.stderr.count("resurgo: error: ") == 1


HOSTILE = {
    "an array nested 2000 deep": (
        lambda t: t + "\nx = " + "[" * 2000 + "]" * 2000 + "\n",
        "(file): arrays and tables nest more than 32 deep (a description nests 3 deep at most)",
    ),
    "a NUL byte in a UUID": (
        lambda t: t.replace(
            'uuid = "2f9d8c7b-6a5e-4d3c-9b2a-1f0e9d8c7b6a"',
            'uuid = "2f9d8c7b-6a5e-4d3c-9b2a-1f0e9d8c7b6a\\u0000"',
        ),
        "filesystems[1] (id 'fs.sda2').uuid: holds the control character '\\x00'",
    ),
    "a disk of 10**27 bytes": (
        lambda t: t.replace("size = 68719476736", f"size = {10**27}"),
        f"disks[0] (id 'disk.sda').size: {10**27} does not fit a 64-bit integer",
    ),
    "a mountpoint out of the root": (
        lambda t: t.replace('mountpoint = "/srv"', 'mountpoint = "/../../../tmp/escaped"'),
        "filesystems[3] (id 'fs.dm-1').mounts[0].mountpoint: '/../../../tmp/escaped' is not "
        "a normal path: it holds '..'",
    ),
}


@pytest.mark.parametrize("name", HOSTILE)
def test_validate_and_plan_refuse_a_hostile_description(tmp_path: Path, name: str) -> None:
    """One message with the record, field and line, exit 2, no traceback: through
    `resurgo validate` and `resurgo plan --from FILE` alike."""
    defect, message = HOSTILE[name]
    text = defect(example_text())
    assert text != example_text()
    path = tmp_path / "description.toml"
    path.write_text(text, encoding="utf-8")
    proc = cli.run("validate", path)
    assert proc.returncode == 2
    problem, summary = proc.stdout.splitlines()
    assert problem.startswith(f"{path} (line ")
    assert problem.endswith(message)
    assert summary == f"{path}: 1 problem(s)"
    proc = cli.run("plan", "--from", path)
    assert proc.returncode == 2
    assert f"{path} is not a valid recovery description (1 problem(s))" in proc.stderr
    assert message in proc.stderr
