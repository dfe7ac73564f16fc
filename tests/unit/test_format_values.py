"""A description from a hostile medium: values that would reach a command line, a path
under the restore root or a size computation are refused by validation, each with its
record, field and line, before anything reads them further.

Each case is the valid example with one defect, as in test_format_malformed.
"""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resurgo.errors import BadInput
from resurgo.fileformat import bounds, check_bytes, document, rules, values
from tests.support.examples import Case, check, edit, example_text, found

VFAT = 'id = "fs.sda1"'
BOOT = 'id = "fs.sda2"'
ROOT = 'id = "fs.sda3"'
SRV = 'id = "fs.dm-1"'
BACKUP = 'id = "fs.dm-2"'
SWAP = 'id = "swap.sda4"'
MADE = "[made_at_recovery]"


def fs_field(anchor: str, old: str, new: str, where: str, message: str, line: str) -> Case:
    return Case(f"{where}: {new}", lambda t: edit(t, anchor, old, new), [(where, message, line)])


CASES = [
    # --- the three examples of the issue, exactly
    Case(
        "a NUL byte in a UUID",
        lambda t: edit(t, BOOT, 'uuid = "2f9d8c7b-6a5e-4d3c-9b2a-1f0e9d8c7b6a"',
                       'uuid = "2f9d8c7b-6a5e-4d3c-9b2a-1f0e9d8c7b6a\\u0000"'),
        [("filesystems[1] (id 'fs.sda2').uuid", "holds the control character '\\x00'",
          'uuid = "2f9d8c7b-6a5e-4d3c-9b2a-1f0e9d8c7b6a\\u0000"')],
    ),
    Case(
        "a disk of 10**27 bytes",
        lambda t: edit(t, 'id = "disk.sdb"', "size = 10737418240", f"size = {10**27}"),
        [("disks[1] (id 'disk.sdb').size", f"{10**27} does not fit a 64-bit integer",
          f"size = {10**27}")],
    ),
    # --- an md array's device goes to mdadm --create as it is
    Case(
        "an md path that is an option",
        lambda t: edit(t, 'id = "md.md0"', 'path = "/dev/md0"', 'path = "--zero-superblock"'),
        [("raid_arrays[0] (id 'md.md0').path",
          "'--zero-superblock' is not an md device like /dev/md0",
          'path = "--zero-superblock"')],
    ),
    # --- mountpoints and paths stay under the root
    Case(
        "a mountpoint that climbs out of the root",
        lambda t: edit(t, SRV, 'mountpoint = "/srv"', 'mountpoint = "/../../../tmp/escaped"'),
        [("filesystems[3] (id 'fs.dm-1').mounts[0].mountpoint",
          "'/../../../tmp/escaped' is not a normal path: it holds '..'",
          '{ mountpoint = "/../../../tmp/escaped", options = "defaults" },')],
    ),
    Case(
        "a mountpoint with a trailing slash",
        lambda t: edit(t, SRV, 'mountpoint = "/srv"', 'mountpoint = "/srv/"'),
        [("filesystems[3] (id 'fs.dm-1').mounts[0].mountpoint",
          "'/srv/' is not a normal path: it holds an empty name (// or a trailing /)",
          '{ mountpoint = "/srv/", options = "defaults" },')],
    ),
    Case(
        "a mountpoint with a double slash",
        lambda t: edit(t, SRV, 'mountpoint = "/srv"', 'mountpoint = "//srv"'),
        [("filesystems[3] (id 'fs.dm-1').mounts[0].mountpoint",
          "'//srv' is not a normal path: it holds an empty name (// or a trailing /)",
          '{ mountpoint = "//srv", options = "defaults" },')],
    ),
    Case(
        "a mountpoint with a dot",
        lambda t: edit(t, SRV, 'mountpoint = "/srv"', 'mountpoint = "/./srv"'),
        [("filesystems[3] (id 'fs.dm-1').mounts[0].mountpoint",
          "'/./srv' is not a normal path: it holds '.'",
          '{ mountpoint = "/./srv", options = "defaults" },')],
    ),
    Case(
        "a subvolume path with ..",
        lambda t: edit(t, 'id = "subvol.sda3.257"', 'path = "@home"', 'path = "@home/../../x"'),
        [("subvolumes[1] (id 'subvol.sda3.257').path",
          "'@home/../../x' is not a normal path: it holds '..'", 'path = "@home/../../x"')],
    ),
    Case(
        "an absolute subvolume path",
        lambda t: edit(t, 'id = "subvol.sda3.257"', 'path = "@home"', 'path = "/@home"'),
        [("subvolumes[1] (id 'subvol.sda3.257').path", "'/@home' is not a relative path",
          'path = "/@home"')],
    ),
    Case(
        "a config file path with ..",
        lambda t: edit(t, 'id = "cfg.etc.fstab"', 'path = "/etc/fstab"',
                       'path = "/etc/../../root/.ssh/authorized_keys"'),
        [("config_files[0] (id 'cfg.etc.fstab').path",
          "'/etc/../../root/.ssh/authorized_keys' is not a normal path: it holds '..'",
          'path = "/etc/../../root/.ssh/authorized_keys"')],
    ),
    Case(
        "a swap file path with ..",
        lambda t: edit(t, 'id = "swapfile.srv_swapfile"', 'file = "/srv/swapfile"',
                       'file = "/srv/../../swapfile"'),
        [("swaps[1] (id 'swapfile.srv_swapfile').file",
          "'/srv/../../swapfile' is not a normal path: it holds '..'",
          'file = "/srv/../../swapfile"')],
    ),
    Case(
        "a catalog path out of the set",
        lambda t: edit(t, "[catalog]", 'path = "catalog.zst"', 'path = "../catalog.zst"'),
        [("catalog.path", "'../catalog.zst' is not a normal path: it holds '..'",
          'path = "../catalog.zst"')],
    ),
    Case(
        "a mounted subvolume whose path holds a comma (mount -o subvol=PATH)",
        lambda t: edit(t, 'id = "subvol.sda3.257"', 'path = "@home"', 'path = "@home,loop"'),
        [("filesystems[2] (id 'fs.sda3').mounts[1].subvolume",
          "the subvolume's path '@home,loop' holds a comma; it cannot be mounted by path",
          '{ mountpoint = "/home", options = "rw,noatime", subvolume = "subvol.sda3.257" },')],
    ),
    # --- control characters
    Case(
        "a newline in mount options",
        lambda t: edit(t, SRV, 'options = "defaults"', 'options = "defaults\\nx"'),
        [("filesystems[3] (id 'fs.dm-1').mounts[0].options",
          "holds the control character '\\n'",
          '{ mountpoint = "/srv", options = "defaults\\nx" },')],
    ),
    Case(
        "an escape in a command argument",
        lambda t: edit(t, "seq = 90", '"/mnt/target/.autorelabel"', '"\\u001b[2J"'),
        [("commands[8].args[0]", "holds the control character '\\x1b'", '"\\u001b[2J",')],
    ),
    Case(
        "a C1 control character in a partition name",
        lambda t: edit(t, 'id = "part.sda3"', 'name = "root"', 'name = "ro\\u009bot"'),
        [("partitions[2] (id 'part.sda3').name", "holds the control character '\\x9b'",
          'name = "ro\\u009bot"')],
    ),
    Case(
        "a quote in GPT attributes (the sfdisk script quotes them)",
        lambda t: edit(t, 'id = "part.sda3"', 'name = "root"',
                       'name = "root"\nattrs = "x\\", type=0"'),
        [("partitions[2] (id 'part.sda3').attrs",
          "'x\", type=0' is not a list of GPT attributes", 'attrs = "x\\", type=0"')],
    ),
    # --- UUIDs of each kind
    fs_field(BOOT, 'uuid = "2f9d8c7b-6a5e-4d3c-9b2a-1f0e9d8c7b6a"', 'uuid = "2f9d8c7b"',
             "filesystems[1] (id 'fs.sda2').uuid",
             "'2f9d8c7b' is not a UUID like 2f9d8c7b-6a5e-4d3c-9b2a-1f0e9d8c7b6a",
             'uuid = "2f9d8c7b"'),
    fs_field(VFAT, 'uuid = "1A2B-3C4D"', 'uuid = "1A2B3C4D"',
             "filesystems[0] (id 'fs.sda1').uuid",
             "'1A2B3C4D' is not a FAT volume id like 1A2B-3C4D", 'uuid = "1A2B3C4D"'),
    fs_field(VFAT, 'volume_id = "1A2B-3C4D"', 'volume_id = "-o loop"',
             "filesystems[0] (id 'fs.sda1').vfat.volume_id",
             "'-o loop' is not a FAT volume id like 1A2B-3C4D", 'volume_id = "-o loop"'),
    fs_field('id = "md.md0"', 'uuid = "3a7c1e5f:9b2d4f6a:8c0e2a4b:6d8f0a2c"',
             'uuid = "3a7c1e5f-9b2d-4f6a-8c0e-2a4b6d8f0a2c"',
             "raid_arrays[0] (id 'md.md0').uuid",
             "'3a7c1e5f-9b2d-4f6a-8c0e-2a4b6d8f0a2c' is not an md UUID like "
             "3a7c1e5f:9b2d4f6a:8c0e2a4b:6d8f0a2c",
             'uuid = "3a7c1e5f-9b2d-4f6a-8c0e-2a4b6d8f0a2c"'),
    fs_field('id = "luks.md0"', 'uuid = "5d4c3b2a-1f0e-4d9c-8b7a-6f5e4d3c2b1a"',
             'uuid = "--header=/etc/x"', "luks_volumes[0] (id 'luks.md0').uuid",
             "'--header=/etc/x' is not a UUID like 2f9d8c7b-6a5e-4d3c-9b2a-1f0e9d8c7b6a",
             'uuid = "--header=/etc/x"'),
    fs_field('id = "pv.dm-0"', 'uuid = "kL3mN4-oP5q-R6sT-7uV8-wX9y-Z0aB-cD1eF2"',
             'uuid = "kL3mN4-oP5q"', "physical_volumes[0] (id 'pv.dm-0').uuid",
             "'kL3mN4-oP5q' is not an LVM id like kL3mN4-oP5q-R6sT-7uV8-wX9y-Z0aB-cD1eF2",
             'uuid = "kL3mN4-oP5q"'),
    fs_field(SWAP, 'uuid = "9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c6b"', 'uuid = "swap"',
             "swaps[0] (id 'swap.sda4').uuid",
             "'swap' is not a UUID like 2f9d8c7b-6a5e-4d3c-9b2a-1f0e9d8c7b6a", 'uuid = "swap"'),
    fs_field('id = "disk.sda"', 'id = "8E2A4C6D-1B3F-4A5E-9C7D-0F1E2D3C4B5A"',
             'id = "8E2A4C6D"', "disks[0] (id 'disk.sda').table.id",
             "'8E2A4C6D' is not a UUID like 2f9d8c7b-6a5e-4d3c-9b2a-1f0e9d8c7b6a",
             'id = "8E2A4C6D"'),
    fs_field('id = "part.sdc1"', 'type = "fd"', 'type = "linux"',
             "partitions[5] (id 'part.sdc1').type",
             "'linux' is not an MBR type code like 83", 'type = "linux"'),
    # --- labels, by each filesystem's limit
    fs_field(BOOT, 'label = "boot"', 'label = "' + "b" * 17 + '"',
             "filesystems[1] (id 'fs.sda2').label",
             "17 bytes, longer than a ext4 label (16 at most)", 'label = "' + "b" * 17 + '"'),
    fs_field(BOOT, 'label = "boot"', 'label = "äöüäöüäöü"',
             "filesystems[1] (id 'fs.sda2').label",
             "18 bytes, longer than a ext4 label (16 at most)", 'label = "äöüäöüäöü"'),
    fs_field(VFAT, 'label = "ESP"', 'label = "EFI SYSTEM P"',
             "filesystems[0] (id 'fs.sda1').label",
             "12 bytes, longer than a vfat label (11 at most)", 'label = "EFI SYSTEM P"'),
    fs_field(ROOT, 'label = "root"', 'label = "' + "r" * 256 + '"',
             "filesystems[2] (id 'fs.sda3').label",
             "256 bytes, longer than a btrfs label (255 at most)", 'label = "' + "r" * 256 + '"'),
    fs_field(BACKUP, 'type = "xfs"', 'type = "xfs"\nlabel = "backups-of-xx"',
             "filesystems[4] (id 'fs.dm-2').label",
             "13 bytes, longer than a xfs label (12 at most)", 'label = "backups-of-xx"'),
    fs_field(SWAP, 'label = "swap"', 'label = "swap-of-the-disks"',
             "swaps[0] (id 'swap.sda4').label",
             "17 bytes, longer than a swap label (16 at most)", 'label = "swap-of-the-disks"'),
    # --- names that reach argv as they are
    fs_field('id = "vg.data"', 'name = "data"', 'name = "--force"',
             "volume_groups[0] (id 'vg.data').name",
             "'--force' is not an LVM name (letters, digits and + _ . -, not starting with -, "
             "127 at most)", 'name = "--force"'),
    fs_field('id = "lv.data.srv"', 'name = "srv"', 'name = "../srv"',
             "logical_volumes[0] (id 'lv.data.srv').name",
             "'../srv' is not an LVM name (letters, digits and + _ . -, not starting with -, "
             "127 at most)", 'name = "../srv"'),
    fs_field('id = "luks.md0"', 'name = "crypt_srv"', 'name = "../../dev/sda"',
             "luks_volumes[0] (id 'luks.md0').name",
             "'../../dev/sda' is not a device-mapper name", 'name = "../../dev/sda"'),
    fs_field(BOOT, '"has_journal",', '"has_journal,^metadata_csum",',
             "filesystems[1] (id 'fs.sda2').ext.features[0]",
             "'has_journal,^metadata_csum' is not a feature name",
             '"has_journal,^metadata_csum",'),
    # --- sizes, sector sizes and counts in range
    fs_field('id = "disk.sdb"', "size = 10737418240", f"size = {2**56 + 512}",
             "disks[1] (id 'disk.sdb').size",
             f"{2**56 + 512} bytes is larger than any disk ({2**56} at most)",
             f"size = {2**56 + 512}"),
    fs_field('id = "lv.data.srv"', "size = 5368709120", "size = 0",
             "logical_volumes[0] (id 'lv.data.srv').size",
             f"0 is out of range (1 to {2**63 - 1})", "size = 0"),
    fs_field("[[volume_groups]]", "extent_size = 4194304", "extent_size = -4194304",
             "volume_groups[0] (id 'vg.data').extent_size",
             f"-4194304 is out of range (1 to {2**63 - 1})", "extent_size = -4194304"),
    fs_field(BACKUP, "used_bytes = 2147483648", f"used_bytes = {2**64}",
             "filesystems[4] (id 'fs.dm-2').state.used_bytes",
             f"{2**64} does not fit a 64-bit integer", f"used_bytes = {2**64}"),
    fs_field('id = "disk.sde"', "logical_sector_size = 512", "logical_sector_size = 8192",
             "disks[3] (id 'disk.sde').logical_sector_size",
             "8192 is not a sector size (512, 1024, 2048 or 4096)",
             "logical_sector_size = 8192"),
    fs_field('id = "disk.sdb"', "physical_sector_size = 512", "physical_sector_size = 131072",
             "disks[1] (id 'disk.sdb').physical_sector_size",
             "131072 is not a power of two from 512 to 65536", "physical_sector_size = 131072"),
    fs_field('id = "luks.md0"', "sector_size = 4096", "sector_size = 520",
             "luks_volumes[0] (id 'luks.md0').sector_size",
             "520 is not a sector size (512, 1024, 2048 or 4096)", "sector_size = 520"),
    fs_field('id = "luks.md0"', "version = 2", "version = 3",
             "luks_volumes[0] (id 'luks.md0').version", "3 is out of range (1 to 2)",
             "version = 3"),
    fs_field('id = "luks.md0"', "key_size = 512", "key_size = 1048576",
             "luks_volumes[0] (id 'luks.md0').key_size",
             "1048576 is out of range (8 to 4096)", "key_size = 1048576"),
    fs_field('id = "part.sdb1"', "number = 1", "number = 1000",
             "partitions[4] (id 'part.sdb1').number", "1000 is out of range (1 to 256)",
             "number = 1000"),
    fs_field('id = "lv.data.srv"', "stripes = 1", "stripes = 100000",
             "logical_volumes[0] (id 'lv.data.srv').segments[0].stripes",
             "100000 is out of range (1 to 128)", "stripes = 100000"),
    fs_field(BOOT, "block_size = 4096", "block_size = 3000",
             "filesystems[1] (id 'fs.sda2').ext.block_size",
             "3000 is not a power of two from 1024 to 65536", "block_size = 3000"),
    fs_field(BOOT, "reserved_blocks_percent = 5.0", "reserved_blocks_percent = 95.0",
             "filesystems[1] (id 'fs.sda2').ext.reserved_blocks_percent",
             "95.0 is out of range (0 to 50)", "reserved_blocks_percent = 95.0"),
    fs_field(BACKUP, "inode_size = 512", "inode_size = 65536",
             "filesystems[4] (id 'fs.dm-2').xfs.inode_size",
             "65536 is not a power of two from 256 to 2048", "inode_size = 65536"),
    fs_field(VFAT, "fat_size = 32", "fat_size = 64",
             "filesystems[0] (id 'fs.sda1').vfat.fat_size", "64 is not 12, 16 or 32",
             "fat_size = 64"),
    fs_field(ROOT, "node_size = 16384", "node_size = 1000",
             "filesystems[2] (id 'fs.sda3').btrfs.node_size",
             "1000 is not a power of two from 4096 to 65536", "node_size = 1000"),
    fs_field('id = "subvol.sda3.257"', "subvol_id = 257", "subvol_id = 5",
             "subvolumes[1] (id 'subvol.sda3.257').subvol_id",
             f"5 is out of range (256 to {2**63 - 1})", "subvol_id = 5"),
    fs_field(SWAP, "page_size = 4096", "page_size = 4095",
             "swaps[0] (id 'swap.sda4').page_size",
             "4095 is not a power of two from 4096 to 65536", "page_size = 4095"),
    # An initramfs made at recovery: its release goes on update-initramfs's command line
    # in the chroot, its path names a file under the restored /boot.
    fs_field(MADE, 'kernel = "6.1.0-21-amd64"', 'kernel = "-x;reboot"',
             "made_at_recovery.initramfs[0].kernel", "'-x;reboot' is not a kernel release",
             '{ kernel = "-x;reboot", path = "/boot/initrd.img-6.1.0-21-amd64" },'),
    fs_field(MADE, 'path = "/boot/initrd.img-6.1.0-21-amd64"', 'path = "/etc/shadow"',
             "made_at_recovery.initramfs[0].path",
             "'/etc/shadow' is not where initramfs-tools or dracut put the initramfs of "
             "6.1.0-21-amd64",
             '{ kernel = "6.1.0-21-amd64", path = "/etc/shadow" },'),
    fs_field(MADE, 'path = "/boot/initrd.img-6.1.0-21-amd64"',
             'path = "/boot/initrd.img-6.1.0-21-amd64/../../etc/shadow"',
             "made_at_recovery.initramfs[0].path",
             "'/boot/initrd.img-6.1.0-21-amd64/../../etc/shadow' is not where "
             "initramfs-tools or dracut put the initramfs of 6.1.0-21-amd64",
             '{ kernel = "6.1.0-21-amd64", path = '
             '"/boot/initrd.img-6.1.0-21-amd64/../../etc/shadow" },'),
    fs_field(MADE, "},", '}, { kernel = "6.1.0-21-amd64", path = '
             '"/boot/initramfs-6.1.0-21-amd64.img" },',
             "made_at_recovery.initramfs[1].kernel", "kernel 6.1.0-21-amd64 is listed twice",
             '{ kernel = "6.1.0-21-amd64", path = "/boot/initrd.img-6.1.0-21-amd64" }, '
             '{ kernel = "6.1.0-21-amd64", path = "/boot/initramfs-6.1.0-21-amd64.img" },'),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_values(case: Case) -> None:
    text = case.defect(example_text())
    assert text != example_text()
    report = check(text)
    assert report.description is None
    assert found(text, report) == case.expected


def test_a_value_is_reported_once() -> None:
    """A NUL in a UUID is a control character; it is not also reported as no UUID."""
    text = edit(example_text(), BOOT, 'uuid = "2f9d8c7b-6a5e-4d3c-9b2a-1f0e9d8c7b6a"',
                'uuid = "\\u0000"')
    assert [p.message for p in check(text).problems] == ["holds the control character '\\x00'"]


def test_free_text_that_reaches_no_command_line_may_hold_any_character() -> None:
    """A config file's content; why the probe could not describe a device (a tool's
    message, lines and all)."""
    text = edit(example_text(), 'id = "cfg.etc.crypttab"', "luks,discard",
                "luks,discard\\t\\u001b\\r")
    text = edit(
        text, "[[unsupported]]", 'reason = "zfs_member', 'reason = "failed:\\n  | zfs_member'
    )
    assert check(text).problems == []


def test_an_array_nested_2000_deep_is_refused_before_parsing() -> None:
    text = example_text() + "\nx = " + "[" * 2000 + "]" * 2000 + "\n"
    line = text.count("\n")
    assert found(text, check(text)) == [
        ("(file)", "arrays and tables nest more than 32 deep (a description nests 3 deep at most)",
         "x = " + "[" * 2000 + "]" * 2000)
    ]
    assert check(text).problems[0].line == line


@pytest.mark.parametrize(
    "text",
    [
        'x = "' + "[" * 100 + '"\n',
        "x = '''" + "{" * 100 + "'''\n",
        '# ' + "[" * 100 + "\n",
        'x = """a\\"""' + "[" * 100 + '"""\n',
    ],
    ids=["basic string", "literal string", "comment", "escaped quote in multi-line"],
)
def test_brackets_in_strings_and_comments_do_not_nest(text: str) -> None:
    assert bounds.too_deep(text) is None


def test_inline_tables_nested_deep_are_refused() -> None:
    assert bounds.too_deep("x = " + "{a = " * 33 + "1" + "}" * 33) == 1
    assert bounds.too_deep("x = " + "{a = " * 32 + "1" + "}" * 32) is None


def test_a_key_of_thousands_of_dotted_parts_is_refused_before_parsing() -> None:
    """74 KB of one dotted key took tomllib 2 GB; refused by a scan of the text."""
    text = "[x]\n" + ".".join(["a"] * 30_000) + " = 1\n"
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    report = check_bytes(text.encode(), "d.toml", expected_digest=None)
    assert report.description is None
    assert "dotted parts" in report.problems[0].message and report.problems[0].line == 2
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100 * 1024  # KiB
    # Dots in strings, comments, numbers and times, and ordinary dotted keys pass.
    fine = ('a.b = 1.5\nt = 2026-01-01T00:00:00.123Z\ns = "' + "." * 100 + '"\n# '
            + "." * 100 + "\nx = [" + ", ".join(["1.5"] * 100) + "]\n")
    assert bounds.too_dotted(fine) is None


def test_a_description_larger_than_the_bound_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bounds, "MAX_BYTES", 1000)
    raw = example_text().encode()
    report = check_bytes(raw, "d.toml", expected_digest=None)
    assert [p.message for p in report.problems] == [
        f"{len(raw)} bytes is more than a description holds (1000 at most); "
        "is this the right file?"
    ]


def test_reading_stops_past_the_bound_and_takes_regular_files_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bounds, "MAX_BYTES", 1000)
    big = tmp_path / "big.toml"
    big.write_bytes(b"#" * 5000)
    assert len(document.load_bytes(big)) == 1001
    with pytest.raises(BadInput, match="/dev/zero is not a regular file"):
        document.load_bytes(Path("/dev/zero"))
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    opened = os.open(fifo, os.O_RDWR)  # a writer, so that opening it to read does not block
    try:
        with pytest.raises(BadInput, match="is not a regular file"):
            document.load_bytes(fifo)
    finally:
        os.close(opened)


def test_too_many_records_are_refused() -> None:
    text = example_text() + "".join(
        f'\n[[modules]]\nname = "m{i}"\nreason = "r"\n' for i in range(values.MAX_RECORDS)
    )
    assert [(p.location(), p.message) for p in check(text).problems] == [
        ("modules", f"{values.MAX_RECORDS + 10} records, more than {values.MAX_RECORDS}")
    ]


def test_too_many_items_in_an_array_are_refused() -> None:
    items = ", ".join(['"x"'] * (values.MAX_ITEMS + 1))
    text = edit(example_text(), "seq = 90", 'args = [\n    "/mnt/target/.autorelabel",\n]',
                f"args = [{items}]")
    assert [(p.location(), p.message) for p in check(text).problems] == [
        ("commands[8].args", f"{values.MAX_ITEMS + 1} items, more than {values.MAX_ITEMS}")
    ]


def test_thousands_of_bad_records_are_checked_in_seconds() -> None:
    """A chain of 4000 md arrays, each on the one before and each with a bad UUID: every
    problem is found and placed without rescanning the file or the chain for each."""
    members = ["part.sdb1"] + [f"md.x{i}" for i in range(3999)]
    text = example_text() + "".join(
        f'\n[[raid_arrays]]\nid = "md.x{i}"\npath = "/dev/md{i}"\nlevel = "raid1"\n'
        f'metadata = "1.2"\nuuid = "bad"\nmembers = ["{member}"]\nsize = 1000\n'
        for i, member in enumerate(members)
    )
    start = time.monotonic()
    report = check(text)
    assert time.monotonic() - start < 30
    assert len(report.problems) == 4000
    assert report.problems[-1].line == text.count("\n") - 2  # the uuid line of the last


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from("abcdefgh"), st.lists(st.sampled_from("abcdefghij"))))
def test_the_nodes_on_cycles_are_those_that_reach_themselves(graph: dict[str, list[str]]) -> None:
    def reaches_itself(start: str) -> bool:
        seen: set[str] = set()
        todo = list(graph.get(start, []))
        while todo:
            cur = todo.pop()
            if cur == start:
                return True
            if cur not in seen:
                seen.add(cur)
                todo.extend(graph.get(cur, []))
        return False

    assert rules._on_cycles(graph) == {n for n in graph if reaches_itself(n)}


def test_millions_of_tiny_values_are_refused_before_parsing() -> None:
    """600,000 empty inline tables in 2 MB would take some 150 MB once parsed."""
    text = example_text() + "\nx = [" + "{}," * 600_000 + "]\n"
    assert [(p.location(), p.message, p.line) for p in check(text).problems] == [
        ("(file)", "more than 1000000 keys and values: more than a description holds; "
         "is this the right file?", text.count("\n"))
    ]


def test_the_example_is_far_from_every_bound() -> None:
    text = example_text()
    assert bounds.too_deep(text, 2) is None
    assert bounds.too_many_values(text, 10_000) is None
    assert len(text.encode()) < bounds.MAX_BYTES // 1000


def test_keys_and_the_writer_are_shown_without_their_escape_sequences() -> None:
    """A quoted key or the writer's version string reaches the messages: an escape
    sequence in them must not reach the terminal."""
    text = example_text().replace('version = "1.', 'version = "9.', 1).replace(
        'resurgo = "', 'resurgo = "\\u001b]0;pwned\\u0007', 1)
    report = check_bytes(text.encode(), "d.toml", expected_digest=None)
    assert report.problems and all("\x1b" not in m for m in report.messages())
    odd = example_text() + '\n[system."\\u001b[31mEVIL"]\n'
    report = check_bytes(odd.encode(), "d.toml", expected_digest=None)
    assert report.messages() and all("\x1b" not in m for m in report.messages())
