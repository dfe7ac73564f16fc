"""A corpus of malformed descriptions: the valid example with one defect each.

Each case asserts the exact problems the reader reports: the place (record
path, id and field), the message, and the text of the line it points at.
"""

from __future__ import annotations

import pytest

from resurgo.fileformat import check_bytes, document, version
from tests.support.examples import Case, check, edit, example_text, found

EXTENDED_AND_LOGICAL = """
[[partitions]]
id = "part.sdc2"
disk = "disk.sdc"
number = 2
start = 10487808
size = 4194304
sector_size = 512
type = "5"
kind = "extended"

[[partitions]]
id = "part.sdc5"
disk = "disk.sdc"
number = 5
start = 2048
size = 2048
sector_size = 512
type = "83"
kind = "logical"

[[raid_arrays]]"""

CASES = [
    Case(
        "missing required field",
        lambda t: edit(t, 'id = "luks.md0"', 'cipher = "aes-xts-plain64"\n', ""),
        [
            (
                "luks_volumes[0] (id 'luks.md0').cipher",
                "required field is missing",
                "[[luks_volumes]]",
            )
        ],
    ),
    Case(
        "wrong type",
        lambda t: edit(t, 'id = "md.md0"', "size = 10733223936", 'size = "10 GiB"'),
        [
            (
                "raid_arrays[0] (id 'md.md0').size",
                "must be an integer, not a string",
                'size = "10 GiB"',
            )
        ],
    ),
    Case(
        "an array where a record belongs",
        lambda t: edit(t, "[system]", 'kernel = "6.1.0-21-amd64"', 'kernel = ["6.1"]'),
        [("system.kernel", "must be a string, not an array", 'kernel = ["6.1"]')],
    ),
    Case(
        "a string where an array belongs",
        lambda t: edit(t, 'id = "md.md0"', "members = [", 'members = "part.sdb1"\nxmembers = ['),
        [
            (
                "raid_arrays[0] (id 'md.md0').members",
                "must be an array, not a string",
                'members = "part.sdb1"',
            ),
            ("raid_arrays[0] (id 'md.md0').xmembers", "unknown field", "xmembers = ["),
        ],
    ),
    Case(
        "unknown enum value",
        lambda t: edit(t, "[system]", 'firmware = "uefi"', 'firmware = "efi"'),
        [("system.firmware", "unknown value 'efi'; allowed: 'bios', 'uefi'", 'firmware = "efi"')],
    ),
    Case(
        "unknown enum value in a nested record",
        lambda t: edit(t, 'id = "disk.sdc"', 'label = "dos"', 'label = "msdos"'),
        [
            (
                "disks[2] (id 'disk.sdc').table.label",
                "unknown value 'msdos'; allowed: 'gpt', 'dos'",
                'label = "msdos"',
            )
        ],
    ),
    Case(
        "unknown field",
        lambda t: edit(
            t, 'id = "disk.sdb"', 'path = "/dev/sdb"', 'colour = "red"\npath = "/dev/sdb"'
        ),
        [("disks[1] (id 'disk.sdb').colour", "unknown field", 'colour = "red"')],
    ),
    Case(
        "duplicate id, across kinds of record",
        lambda t: edit(t, 'id = "swap.sda4"', 'id = "swap.sda4"', 'id = "fs.sda2"'),
        [
            (
                "swaps[0] (id 'fs.sda2').id",
                "id 'fs.sda2' is not unique: also filesystems[1]",
                'id = "fs.sda2"',
            )
        ],
    ),
    Case(
        "malformed id",
        lambda t: edit(t, "[[removable_devices]]", 'id = "removable.sdd"', 'id = "usb stick"'),
        [
            (
                "removable_devices[0] (id 'usb stick').id",
                "id 'usb stick' must be letters, digits and . _ : @ + -",
                'id = "usb stick"',
            )
        ],
    ),
    Case(
        "dangling reference",
        lambda t: edit(t, 'id = "fs.sda2"', 'device = "part.sda2"', 'device = "part.sda9"'),
        [
            (
                "filesystems[1] (id 'fs.sda2').device",
                "refers to 'part.sda9', which is not in the description",
                'device = "part.sda9"',
            )
        ],
    ),
    Case(
        "dangling reference in an array",
        lambda t: edit(t, 'id = "md.md0"', '"part.sdc1",', '"part.sdd1",'),
        [
            (
                "raid_arrays[0] (id 'md.md0').members[1]",
                "refers to 'part.sdd1', which is not in the description",
                '"part.sdd1",',
            )
        ],
    ),
    Case(
        "reference to the wrong kind of record",
        lambda t: edit(t, 'id = "fs.dm-1"', 'device = "lv.data.srv"', 'device = "vg.data"'),
        [
            (
                "filesystems[3] (id 'fs.dm-1').device",
                "refers to 'vg.data', a volume_groups record, not a block device",
                'device = "vg.data"',
            )
        ],
    ),
    Case(
        "system volume that is no filesystem",
        lambda t: edit(t, "[system]", 'system_volume = "fs.sda3"', 'system_volume = "part.sda3"'),
        [
            (
                "system.system_volume",
                "refers to 'part.sda3', a partitions record, not a filesystem",
                'system_volume = "part.sda3"',
            )
        ],
    ),
    Case(
        "mount of a subvolume of another filesystem",
        lambda t: edit(
            t,
            'id = "fs.dm-1"',
            '{ mountpoint = "/srv"',
            '{ subvolume = "subvol.sda3.257", mountpoint = "/srv"',
        ),
        [
            (
                "filesystems[3] (id 'fs.dm-1').mounts[0].subvolume",
                "subvolume 'subvol.sda3.257' belongs to 'fs.sda3'",
                '{ subvolume = "subvol.sda3.257", mountpoint = "/srv", options = "defaults" },',
            )
        ],
    ),
    Case(
        "overlapping partitions",
        lambda t: edit(t, 'id = "part.sda3"', "start = 3147776", "start = 3000000"),
        [
            (
                "partitions[2] (id 'part.sda3').start",
                "overlaps partition 'part.sda2' (which ends at sector 3147775)",
                "start = 3000000",
            )
        ],
    ),
    Case(
        "partition beyond the end of its disk",
        lambda t: edit(t, 'id = "part.sdc1"', "size = 20967424", "size = 20971520"),
        [
            (
                "partitions[5] (id 'part.sdc1').size",
                "ends at byte 10738466816, beyond the end of disk 'disk.sdc' (10737418240 bytes)",
                "size = 20971520",
            )
        ],
    ),
    Case(
        "partition before the first usable LBA",
        lambda t: edit(t, 'id = "part.sda1"', "start = 2048", "start = 34"),
        [
            (
                "partitions[0] (id 'part.sda1').start",
                "starts before the first usable LBA 2048",
                "start = 34",
            )
        ],
    ),
    Case(
        "partition after the last usable LBA",
        lambda t: edit(t, 'id = "part.sdb1"', "size = 20967424", "size = 20969440"),
        [
            (
                "partitions[4] (id 'part.sdb1').size",
                "ends after the last usable LBA 20971486",
                "size = 20969440",
            )
        ],
    ),
    Case(
        "sector size differs from the disk's",
        lambda t: edit(t, 'id = "part.sda2"', "sector_size = 512", "sector_size = 4096"),
        [
            (
                "partitions[1] (id 'part.sda2').sector_size",
                "4096 differs from the disk's logical sector size 512",
                "sector_size = 4096",
            )
        ],
    ),
    Case(
        "disk sector size not a power of two",
        lambda t: edit(
            t, 'id = "disk.sdb"', "physical_sector_size = 512", "physical_sector_size = 520"
        ),
        [
            (
                "disks[1] (id 'disk.sdb').physical_sector_size",
                "520 is not a power of two >= 512",
                "physical_sector_size = 520",
            )
        ],
    ),
    Case(
        "duplicate partition number",
        lambda t: edit(t, 'id = "part.sda3"', "number = 3", "number = 2"),
        [
            (
                "partitions[2] (id 'part.sda3').number",
                "partition number 2 is used twice on disk 'disk.sda' (also partitions[1])",
                "number = 2",
            )
        ],
    ),
    Case(
        "partitions on a disk without a table",
        lambda t: edit(
            t, 'id = "disk.sdc"', '[disks.table]\nlabel = "dos"\nid = "0x5f3a9c1e"\n', ""
        ),
        [
            (
                "disks[2] (id 'disk.sdc').table",
                "the disk has partitions but no partition table",
                "[[disks]]",
            )
        ],
    ),
    Case(
        "logical partition without an extended one",
        lambda t: edit(t, 'id = "part.sdc1"', 'kind = "primary"', 'kind = "logical"').replace(
            'number = 1\nstart = 2048\nsize = 20967424\nsector_size = 512\ntype = "fd"',
            'number = 5\nstart = 2048\nsize = 20967424\nsector_size = 512\ntype = "fd"',
        ),
        [
            (
                "partitions[5] (id 'part.sdc1').kind",
                "a logical partition needs an extended partition",
                'kind = "logical"',
            )
        ],
    ),
    Case(
        "logical partition outside the extended one",
        lambda t: edit(t, 'id = "part.sdc1"', "size = 20967424", "size = 10485760").replace(
            "\n[[raid_arrays]]", EXTENDED_AND_LOGICAL, 1
        ),
        [
            (
                "partitions[7] (id 'part.sdc5').start",
                "logical partition lies outside the extended partition 'part.sdc2'",
                "start = 2048",
            )
        ],
    ),
    Case(
        "logical partition numbered below 5",
        lambda t: edit(t, 'id = "part.sdc1"', "size = 20967424", "size = 10485760").replace(
            "\n[[raid_arrays]]",
            EXTENDED_AND_LOGICAL.replace("number = 5", "number = 3").replace(
                "start = 2048", "start = 10489856"
            ),
            1,
        ),
        [
            (
                "partitions[7] (id 'part.sdc5').number",
                "logical partitions are numbered from 5",
                "number = 3",
            )
        ],
    ),
    Case(
        "GPT with a logical partition",
        lambda t: edit(t, 'id = "part.sdb1"', 'kind = "primary"', 'kind = "logical"'),
        [
            (
                "partitions[4] (id 'part.sdb1').kind",
                "GPT has no extended or logical partitions",
                'kind = "logical"',
            ),
            (
                "partitions[4] (id 'part.sdb1').kind",
                "a logical partition needs an extended partition",
                'kind = "logical"',
            ),
        ],
    ),
    Case(
        "swap with neither device nor file",
        lambda t: edit(t, 'id = "swap.sda4"', 'device = "part.sda4"\n', ""),
        [("swaps[0] (id 'swap.sda4')", "needs exactly one of device or file", "[[swaps]]")],
    ),
    Case(
        "swap with both device and file",
        lambda t: edit(
            t,
            'id = "swap.sda4"',
            'device = "part.sda4"\n',
            'device = "part.sda4"\nfile = "/swap"\nfilesystem = "fs.sda3"\n',
        ),
        [("swaps[0] (id 'swap.sda4')", "needs exactly one of device or file", "[[swaps]]")],
    ),
    Case(
        "swap file without its filesystem",
        lambda t: edit(t, 'id = "swapfile.srv_swapfile"', 'filesystem = "fs.dm-1"\n', ""),
        [
            (
                "swaps[1] (id 'swapfile.srv_swapfile').filesystem",
                "a swap file needs the filesystem that holds it",
                "[[swaps]]",
            )
        ],
    ),
    Case(
        "options of the wrong filesystem type",
        lambda t: edit(t, 'id = "fs.sda2"', 'type = "ext4"', 'type = "xfs"'),
        [
            (
                "filesystems[1] (id 'fs.sda2').ext",
                "ext options on a xfs filesystem",
                "[filesystems.ext]",
            )
        ],
    ),
    Case(
        "a supported filesystem of type other",
        lambda t: edit(t, 'id = "fs.dm-2"', 'type = "xfs"', 'type = "other"'),
        [
            (
                "filesystems[4] (id 'fs.dm-2').xfs",
                "xfs options on a other filesystem",
                "[filesystems.xfs]",
            ),
            (
                "filesystems[4] (id 'fs.dm-2').supported",
                "a filesystem of type 'other' cannot be supported",
                "supported = true",
            ),
        ],
    ),
    Case(
        "relative mountpoint",
        lambda t: edit(
            t, 'id = "fs.dm-2"', 'mountpoint = "/var/backups"', 'mountpoint = "var/backups"'
        ),
        [
            (
                "filesystems[4] (id 'fs.dm-2').mounts[0].mountpoint",
                "'var/backups' is not an absolute path",
                '{ mountpoint = "var/backups", options = "rw,relatime" },',
            )
        ],
    ),
    Case(
        "subvolume on a filesystem that is not btrfs",
        lambda t: edit(
            t, 'id = "subvol.sda3.258"', 'filesystem = "fs.sda3"', 'filesystem = "fs.dm-1"'
        ),
        [
            (
                "subvolumes[2] (id 'subvol.sda3.258').filesystem",
                "subvolumes live on btrfs, not ext4",
                'filesystem = "fs.dm-1"',
            )
        ],
    ),
    Case(
        "command sequence numbers not ascending",
        lambda t: edit(t, "seq = 30", "seq = 30", "seq = 5"),
        [("commands[2].seq", "sequence numbers must ascend (5 after 20)", "seq = 5")],
    ),
    Case(
        "command sequence number used twice",
        lambda t: edit(t, "seq = 30", "seq = 30", "seq = 20"),
        [("commands[2].seq", "sequence number 20 is used twice", "seq = 20")],
    ),
    Case(
        "command without a program",
        lambda t: edit(t, "seq = 90", 'program = "/usr/bin/touch"', 'program = ""'),
        [("commands[8].program", "must not be empty", 'program = ""')],
    ),
    Case(
        "bad base64 config content",
        lambda t: edit(t, 'id = "cfg.etc.console-setup', 'content = "H4sI', 'content = "!H4sI'),
        [
            (
                "config_files[4] (id 'cfg.etc.console-setup.cached_UTF-8_del.kmap.gz').content",
                "is not valid base64",
                'content = "!H4sIAAAAAAACA1NWyE6tzE0sUEhOTM5I5QJykvNTUhUMTRRsFVxSc1JLUrkA2E5K'
                'EyMAAAA="',
            )
        ],
    ),
    Case(
        "config file mode that is not octal",
        lambda t: edit(t, 'id = "cfg.etc.crypttab"', 'mode = "0600"', 'mode = "rw-------"'),
        [
            (
                "config_files[1] (id 'cfg.etc.crypttab').mode",
                "'rw-------' is not an octal mode like 0644",
                'mode = "rw-------"',
            )
        ],
    ),
    Case(
        "config file with a relative path",
        lambda t: edit(t, 'id = "cfg.etc.fstab"', 'path = "/etc/fstab"', 'path = "etc/fstab"'),
        [
            (
                "config_files[0] (id 'cfg.etc.fstab').path",
                "'etc/fstab' is not absolute",
                'path = "etc/fstab"',
            )
        ],
    ),
    Case(
        "bad catalog sha256",
        lambda t: edit(t, "[catalog]", 'sha256 = "0c5e', 'sha256 = "0C5E'),
        [
            (
                "catalog.sha256",
                "must be 64 lowercase hex digits",
                'sha256 = "0C5E8a4f2d1b9c7e6a3f5d8b2e4c1a9f7d6b3e8c5a2f4d1b9e7c6a3f8d5b2e4c"',
            )
        ],
    ),
    Case(
        "raid array without members",
        lambda t: edit(
            t, 'id = "md.md0"', 'members = [\n    "part.sdb1",\n    "part.sdc1",\n]', "members = []"
        ),
        [("raid_arrays[0] (id 'md.md0').members", "an array needs members", "members = []")],
    ),
    Case(
        "a device built on itself",
        lambda t: edit(t, 'id = "md.md0"', '"part.sdc1",', '"md.md0",'),
        [("raid_arrays[0] (id 'md.md0')", "'md.md0' is built on itself", "[[raid_arrays]]")],
    ),
    Case(
        "a device built on itself through LUKS and LVM",
        lambda t: edit(t, 'id = "luks.md0"', 'device = "md.md0"', 'device = "lv.data.backup"'),
        [
            (
                "luks_volumes[0] (id 'luks.md0')",
                "'luks.md0' is built on itself",
                "[[luks_volumes]]",
            ),
            (
                "logical_volumes[1] (id 'lv.data.backup')",
                "'lv.data.backup' is built on itself",
                "[[logical_volumes]]",
            ),
        ],
    ),
    Case(
        "newer major version",
        lambda t: edit(
            t,
            "[format]",
            'version = "1.3"\nresurgo = "0.1.0"',
            'version = "2.0"\nresurgo = "7.3.0"',
        ),
        [
            (
                "format.version",
                "format 2.0 is newer than this resurgo reads (format 1.x): it was written by "
                "resurgo 7.3.0; read it with resurgo 7.3.0 or newer",
                'version = "2.0"',
            )
        ],
    ),
    Case(
        "older major version",
        lambda t: edit(t, "[format]", 'version = "1.3"', 'version = "0.9"'),
        [
            (
                "format.version",
                "format 0.9 is older than this resurgo reads (format 1.x): "
                "read it with resurgo 0.1.0",
                'version = "0.9"',
            )
        ],
    ),
    Case(
        "malformed version string",
        lambda t: edit(t, "[format]", 'version = "1.3"', 'version = "1.0.0"'),
        [("format.version", "'1.0.0' is not a version like '1.3'", 'version = "1.0.0"')],
    ),
    Case(
        "version with a leading zero",
        lambda t: edit(t, "[format]", 'version = "1.3"', 'version = "01.0"'),
        [("format.version", "'01.0' is not a version like '1.3'", 'version = "01.0"')],
    ),
    Case(
        "version as a number",
        lambda t: edit(t, "[format]", 'version = "1.3"', "version = 1.0"),
        [("format.version", "must be a string, not a number", "version = 1.0")],
    ),
    Case(
        "no format table",
        lambda t: edit(t, "[format]", "[format]", "[formats]"),
        [("(file)", "not a recovery description: it has no [format] table with a version", None)],
    ),
    Case(
        "not TOML",
        lambda t: edit(t, "[system]", 'hostname = "web1"', "hostname = web1"),
        [
            (
                "(file)",
                "not valid TOML: Invalid value (at line 8, column 12)",
                None,
            )
        ],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_malformed(case: Case) -> None:
    text = case.defect(example_text())
    assert text != example_text()
    report = check(text)
    assert report.description is None
    assert found(text, report) == case.expected


def test_the_base_is_valid() -> None:
    report = check(example_text())
    assert report.problems == []
    assert report.description is not None


def test_messages_name_file_line_place_and_problem() -> None:
    text = edit(example_text(), 'id = "part.sda3"', "start = 3147776", "start = 3000000")
    (message,) = check(text).messages()
    line = text.split("\n").index("start = 3000000") + 1
    assert message == (
        f"description.toml (line {line}): partitions[2] (id 'part.sda3').start: "
        "overlaps partition 'part.sda2' (which ends at sector 3147775)"
    )


def test_older_minor_is_read_silently(monkeypatch: pytest.MonkeyPatch) -> None:
    """A reader of format 1.3 reads a 1.0 file: minors only ever add optional fields."""
    monkeypatch.setattr(version, "FORMAT_MINOR", 3)
    monkeypatch.setattr(version, "FORMAT_VERSION", "1.3")
    report = check(example_text())
    assert report.problems == []
    assert report.warnings == []
    assert report.description == check(example_text()).description


def test_newer_minor_is_read_with_a_warning_and_unknown_fields_skipped() -> None:
    text = edit(example_text(), "[format]", 'version = "1.3"', 'version = "1.4"')
    text = edit(text, 'id = "disk.sdb"', 'path = "/dev/sdb"', 'colour = "red"\npath = "/dev/sdb"')
    text += "\n[future]\nanswer = 42\n"
    report = check(text)
    assert report.problems == []
    assert report.warnings == [
        "description.toml: format 1.4 is newer than 1.3; fields this resurgo does not know "
        "are skipped",
        "description.toml: skipped unknown field disks[1].colour",
        "description.toml: skipped unknown field future",
    ]
    plain = check(example_text()).description
    assert plain is not None and report.description is not None
    assert report.description.disks == plain.disks
    assert report.description.system == plain.system


def test_newer_minor_still_checks_the_rules() -> None:
    text = edit(example_text(), "[format]", 'version = "1.3"', 'version = "1.4"')
    text = edit(text, 'id = "fs.sda2"', 'device = "part.sda2"', 'device = "part.sda9"')
    report = check(text)
    assert [p.message for p in report.problems] == [
        "refers to 'part.sda9', which is not in the description"
    ]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "the file is empty"),
        (b"  \n\n\t\n", "the file is empty"),
        (
            b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
            "not a text file (invalid UTF-8 at byte 0); is this the right file?",
        ),
        (b'a = "x"\x00\n', "not a text file (it contains NUL bytes)"),
        (
            b"[[disks]]\nid = 'x'\n",
            "not a recovery description: it has no [format] table with a version",
        ),
        (b"format = 1\n", "not a recovery description: it has no [format] table with a version"),
    ],
)
def test_files_that_are_no_description(raw: bytes, message: str) -> None:
    report = check_bytes(raw, "description.toml", expected_digest=None)
    assert [(p.location(), p.message) for p in report.problems] == [("(file)", message)]


def test_the_digest_is_checked_before_anything_else() -> None:
    raw = example_text().encode()
    report = check_bytes(raw, "d.toml", expected_digest=document.sha256_hex(raw + b"x"))
    assert [p.message for p in report.problems] == [
        "content does not match its digest d.toml.sha256: the file was changed or damaged after "
        "it was written (if you edited it on purpose, run 'resurgo validate --rehash' on it)"
    ]
    assert check_bytes(raw, "d.toml", expected_digest=document.sha256_hex(raw)).problems == []


def test_what_sits_on_an_unsupported_device_refers_to_its_record() -> None:
    """The probe keeps a device it cannot describe as an unsupported record; what is
    built on it still names it, and the description stays valid."""
    text = edit(example_text(), 'id = "fs.sde"', 'device = "disk.sde"',
                'device = "unsupported.sde"')
    report = check(text)
    assert report.problems == []
    assert report.description is not None
    assert report.description.filesystems[-1].device == "unsupported.sde"


def test_a_driver_is_no_block_device() -> None:
    text = edit(example_text(), 'id = "fs.sde"', 'device = "disk.sde"',
                'device = "drv.pci.0000:00:02.0"')
    assert found(text, check(text)) == [
        (
            "filesystems[5] (id 'fs.sde').device",
            "refers to 'drv.pci.0000:00:02.0', a drivers record, not a block device",
            'device = "drv.pci.0000:00:02.0"',
        )
    ]
