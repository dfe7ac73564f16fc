"""Where in the text a problem is: the line locator behind the messages."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resurgo.fileformat import dumps, to_data
from resurgo.fileformat import lines as scanner
from resurgo.fileformat.lines import locate, positions
from resurgo.model import Description
from tests.support.examples import EXAMPLE
from tests.support.strategies import descriptions

CFG_SHA = "d32d62718a74f69cbaa4b56112513b367536640978d934cbb7aeda15352c7e12"
CATALOG_SHA = "0c5e8a4f2d1b9c7e6a3f5d8b2e4c1a9f7d6b3e8c5a2f4d1b9e7c6a3f8d5b2e4c"


def line_of(text: str, where: tuple[str | int, ...]) -> str | None:
    n = locate(text, where)
    return None if n is None else text.split("\n")[n - 1].strip()


@pytest.mark.parametrize(
    ("where", "line"),
    [
        (("format", "version"), 'version = "1.3"'),
        (("system", "esp"), 'esp = "fs.sda1"'),
        (("system", "os_release", "id"), 'id = "debian"'),
        (("system", "bootloader", "efi_path"), 'efi_path = "/EFI/debian/grubx64.efi"'),
        # Not in the file: the nearest enclosing table.
        (("system", "bootloader", "disks", 0), "[system.bootloader]"),
        (("disks", 1, "table"), "[disks.table]"),
        (("disks", 1, "table", "last_lba"), "last_lba = 20971486"),
        (("disks", 2, "table", "last_lba"), "[disks.table]"),
        (("partitions", 3, "start"), "start = 128976896"),
        (("partitions", 3), "[[partitions]]"),
        (("partitions",), "[[partitions]]"),
        (("logical_volumes", 0, "segments"), "[[logical_volumes.segments]]"),
        (("raid_arrays", 0, "members", 1), '"part.sdc1",'),
        (("logical_volumes", 1, "segments", 0, "extent_count"), "extent_count = 1024"),
        (("logical_volumes", 1, "segments", 0, "devices", 0), '"pv.dm-0",'),
        (
            ("filesystems", 2, "mounts", 1, "subvolume"),
            '{ mountpoint = "/home", options = "rw,noatime", subvolume = "subvol.sda3.257" },',
        ),
        (("filesystems", 1, "ext", "inode_count"), "inode_count = 65536"),
        (("filesystems", 4, "xfs", "rmapbt"), "rmapbt = false"),
        (("filesystems", 4, "state", "total_bytes"), "total_bytes = 4284481536"),
        (("config_files", 1, "mode"), 'mode = "0600"'),
        (("config_files", 3, "sha256"), f'sha256 = "{CFG_SHA}"'),
        (("catalog", "sha256"), f'sha256 = "{CATALOG_SHA}"'),
        (("commands", 8, "args", 0), '"/mnt/target/.autorelabel",'),
        (("unsupported", 0, "details", 1), '"TYPE=zfs_member",'),
    ],
)
def test_locates_fields_in_the_example(where: tuple[str | int, ...], line: str) -> None:
    assert line_of(EXAMPLE.read_text(), where) == line


def test_unknown_places_have_no_line() -> None:
    assert locate(EXAMPLE.read_text(), ("nothing", 3, "here")) is None
    assert locate(EXAMPLE.read_text(), ()) is None


def test_string_contents_never_look_like_keys_or_headers() -> None:
    text = (
        'a = """\n'
        "[[disks]]\n"
        'id = "fake"\n'
        '"""\n'
        "b = 'x = 1 # [[disks]]'\n"
        'c = "\\" [[disks]] \\\\"  # comment [[disks]]\n'
        "[[disks]]\n"
        'id = "real"\n'
    )
    found = positions(text)
    assert found[("a",)] == 1
    assert found[("b",)] == 5
    assert found[("c",)] == 6
    assert found[("disks", 0)] == 7
    assert found[("disks", 0, "id")] == 8
    assert ("disks", 1) not in found


def test_a_line_separator_inside_a_string_is_no_line_break() -> None:
    text = 'label = "a\u2028b\x0cc\x1cd"\nsize = 1\n'
    assert positions(text)[("size",)] == 2


def test_closing_quotes_of_multiline_strings() -> None:
    text = "a = \"\"\"x\"\"\"\"\nb = '''y'''''\nc = 3\n"
    assert positions(text)[("c",)] == 3


def test_hand_written_forms() -> None:
    """Inline tables, dotted keys, arrays that wrap anywhere, arrays of tables in arrays."""
    text = (
        "[system]\n"  # 1
        "bootloader.kind = 'grub-pc'\n"  # 2
        "bootloader.disks = [ 'disk.a',\n"  # 3
        "  'disk.b' ]\n"  # 4
        "[[disks]]\n"  # 5
        "id = 'disk.a'\n"  # 6
        "table = { label = 'gpt', id = 'X' }\n"  # 7
        "[[filesystems]]\n"  # 8
        "[[filesystems.mounts]]\n"  # 9
        "mountpoint = '/'\n"  # 10
        "[[filesystems]]\n"  # 11
        "[[filesystems.mounts]]\n"  # 12
        "[[filesystems.mounts]]\n"  # 13
        "mountpoint = '/b'\n"  # 14
        "[filesystems.state]\n"  # 15
        "mounted = true\n"  # 16
    )
    found = positions(text)
    assert found[("system", "bootloader")] == 2
    assert found[("system", "bootloader", "kind")] == 2
    assert found[("system", "bootloader", "disks", 0)] == 3
    assert found[("system", "bootloader", "disks", 1)] == 4
    assert found[("disks", 0, "table", "id")] == 7
    assert found[("filesystems", 0, "mounts", 0, "mountpoint")] == 10
    assert found[("filesystems", 1, "mounts", 0)] == 12
    assert found[("filesystems", 1, "mounts", 1, "mountpoint")] == 14
    assert found[("filesystems", 1, "state", "mounted")] == 16
    assert ("filesystems", 0, "mounts", 1) not in found


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(descriptions())
def test_every_record_and_field_is_found_whatever_the_text(desc: Description) -> None:
    """Free text full of quotes, newlines and fake headers never shifts a line."""
    text = dumps(desc)
    lines = text.split("\n")
    data = to_data(desc)
    for group, value in data.items():
        if not isinstance(value, list):
            continue
        for i, rec in enumerate(value):
            if not isinstance(rec, dict):
                continue
            for key, field in rec.items():
                n = locate(text, (group, i, key))
                assert n is not None, (group, i, key)
                line = lines[n - 1].lstrip()
                if line.startswith("{"):
                    # The writer put the whole (short) record on one line, as an inline table.
                    assert f" {key} = " in line, (group, i, key, line)
                elif isinstance(field, dict):
                    assert line == f"[{group}.{key}]" or line.startswith(f"{key} = {{"), line
                elif isinstance(field, list) and field and isinstance(field[0], dict):
                    assert line.startswith((f"{key} = [", f"[[{group}.{key}]]")), (group, i, key)
                else:
                    assert line.startswith(f"{key} = "), (group, i, key, line)


def _reference_code_lines(text: str) -> list[str]:
    """_code_lines as it was, one character at a time: the oracle of the faster one."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "#":
            while i < n and text[i] != "\n":
                i += 1
        elif ch in "\"'":
            quote = ch * 3 if text.startswith(ch * 3, i) else ch
            out.append(quote)
            i += len(quote)
            while i < n:
                c = text[i]
                if c == "\\" and ch == '"':
                    if text.startswith("\n", i + 1):
                        out.append("\n")
                    i += 2
                elif text.startswith(quote, i):
                    if len(quote) == 3:
                        while text.startswith(quote, i + 1) and text[i + 3 : i + 4] == ch:
                            i += 1
                    out.append(quote)
                    i += len(quote)
                    break
                elif c == "\n":
                    if len(quote) == 1:
                        break
                    out.append("\n")
                    i += 1
                else:
                    i += 1
        else:
            out.append(ch)
            i += 1
    return [line.removesuffix("\r") for line in "".join(out).split("\n")]


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet="ab =[]{}#\"'\\\n\r,.", max_size=80))
def test_strings_and_comments_are_blanked_as_one_character_at_a_time(text: str) -> None:
    """Runs of plain text are skipped whole; the result is what a character-by-character
    scan gives, whatever the quotes, backslashes and newlines."""
    assert scanner._code_lines(text) == _reference_code_lines(text)
