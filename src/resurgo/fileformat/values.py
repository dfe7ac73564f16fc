"""The values a description may hold: what reaches a command line, a path or a size.

A description is read from a medium anyone may have written, and its values end up in
argv (mkfs, mount, cryptsetup, lvm), in the sfdisk script, and in paths under the
restore root. So, before any of it is used:

- no string holds a control character (a newline would add a line to the sfdisk
  script, a NUL fails in the middle of the layout, an escape rewrites the terminal),
  except the free text that never reaches a command line (FREE_TEXT);
- every integer fits the 64-bit integers the tools take;
- UUIDs, labels and names have the form their tool writes and accepts;
- sizes, sector sizes and counts lie in the range the kernel and the tools know;
- mountpoints and paths are normal: they cannot climb out of the restore root.

Each problem names the record and field, as the other rules do.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import fields, is_dataclass
from typing import Any

from resurgo.fileformat.codec import Problem
from resurgo.model import (
    BtrfsOptions,
    ConfigFile,
    Description,
    ExtOptions,
    FsType,
    Rehearsal,
    TableLabel,
    Unsupported,
    VfatOptions,
    XfsOptions,
    initramfs_paths,
)

Where = tuple[str | int, ...]

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
# The largest disk taken: 64 PiB, a hundred times any disk made today. Bounding it keeps
# (start + size) * sector_size of every partition far below 2**63, so neither our
# arithmetic nor sfdisk's, parted's or the kernel's 64-bit sector math can overflow.
MAX_DISK_SIZE = 2**56
# Any other size in bytes (an md array or LV spanning many disks) fits a signed 64-bit
# byte count, as the kernel's loff_t does.
MAX_SIZE = INT64_MAX
SECTOR_SIZES = (512, 1024, 2048, 4096)
# Records of one kind, and items of one array: far more than any machine has, few
# enough that no rule's work grows out of hand.
MAX_RECORDS = 4096
MAX_ITEMS = 4096

# Fields of free text that never reach a command line: a file's content, written to the
# file; what the probe says of a device it cannot describe (a tool's output, lines and
# all), which only explains why the plan refuses the device. Whoever shows them escapes
# control characters.
FREE_TEXT = frozenset(
    {(ConfigFile, "content"), (Unsupported, "reason"), (Unsupported, "details")}
)

# Unicode's control characters (category Cc): C0, DEL and C1.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_VFAT_ID = re.compile(r"[0-9a-fA-F]{4}-[0-9a-fA-F]{4}")
# mdadm's UUID: four groups of eight hex digits, colon separated.
_MD_UUID = re.compile(r"[0-9a-fA-F]{8}(?::[0-9a-fA-F]{8}){3}")
# An md array's device, as mdadm --create takes it (never an option, never a disk).
_MD_PATH = re.compile(r"/dev/md[0-9]{1,6}|/dev/md/[A-Za-z0-9_][A-Za-z0-9_.:+-]{0,63}")
# LVM's ids: 32 characters of its alphabet (lvm2 lib/uuid: letters, digits, ! and #)
# grouped 6-4-4-4-4-4-6.
_LVM_UUID = re.compile(r"[A-Za-z0-9!#]{6}(?:-[A-Za-z0-9!#]{4}){5}-[A-Za-z0-9!#]{6}")
# A DOS partition's PARTUUID: the disk identifier and the partition number.
_DOS_PARTUUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{2}")
_DOS_TABLE_ID = re.compile(r"0x[0-9a-fA-F]{1,8}")
_DOS_TYPE = re.compile(r"(?:0x)?[0-9a-fA-F]{1,2}")
# sfdisk's GPT attribute names and GUID:bit lists; quotes would end the script's field.
_GPT_ATTRS = re.compile(r"[A-Za-z0-9:, ]*")
# LVM's rule for VG and LV names (lvm2 lib/misc/lvm-string.c), 127 characters at most.
_LVM_NAME = re.compile(r"[A-Za-z0-9+_.][A-Za-z0-9+_.\-]{0,126}")
_FEATURE = re.compile(r"\^?[A-Za-z0-9_\-]+")
_HEX64 = re.compile(r"[0-9a-f]{64}")
# A kernel release as uname -r gives it: 6.1.0-28-amd64, 5.14.0-427.el9.x86_64.
_KERNEL_RELEASE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+~-]{0,127}")
# A systemd unit name (systemd's unit-name.c): a prefix of letters, digits and : _ . \ -,
# an @ and an instance for a template's, a type suffix; 256 characters at most.
_UNIT_NAME = re.compile(r"[A-Za-z0-9:_.\\-]+(?:@[A-Za-z0-9:_.\\-]*)?\.[a-z]+")
UNIT_NAME_MAX = 256
_PROFILE = re.compile(r"[A-Za-z0-9]+")

# The longest label each filesystem stores, in bytes (of UTF-8).
_LABEL_BYTES = {
    FsType.EXT2: 16,
    FsType.EXT3: 16,
    FsType.EXT4: 16,
    FsType.XFS: 12,
    FsType.BTRFS: 255,
    FsType.VFAT: 11,
}
SWAP_LABEL_BYTES = 16


def check(desc: Description, reported: frozenset[Where] = frozenset()) -> list[Problem]:
    """The problems of desc's values; one a field, none where reported holds one already
    (a NUL in a UUID is a control character, not also a malformed UUID)."""
    problems: list[Problem] = []
    _check_leaves(desc, problems)
    _check_disks(desc, problems)
    _check_volumes(desc, problems)
    _check_filesystems(desc, problems)
    _check_other(desc, problems)
    seen = set(reported)
    out = []
    for p in problems:
        if p.where not in seen:
            seen.add(p.where)
            out.append(p)
    return out


# ------------------------------------------------------------ every string and integer


def _leaves(owner: type, name: str, value: Any, where: Where) -> Iterator[tuple[Where, Any]]:
    """(where, value) of every string and integer in value, free text left out."""
    if is_dataclass(value) and not isinstance(value, type):
        for f in fields(value):
            yield from _leaves(type(value), f.name, getattr(value, f.name), (*where, f.name))
    elif isinstance(value, tuple):
        for i, item in enumerate(value):
            yield from _leaves(owner, name, item, (*where, i))
    elif (owner, name) not in FREE_TEXT:
        yield where, value


def _check_leaves(desc: Description, problems: list[Problem]) -> None:
    for f in fields(desc):
        value = getattr(desc, f.name)
        if isinstance(value, tuple) and len(value) > MAX_RECORDS:
            problems.append(
                Problem((f.name,), f"{len(value)} records, more than {MAX_RECORDS}")
            )
            return
    for where, value in _leaves(type(desc), "", desc, ()):
        if isinstance(value, str):
            bad = _CONTROL.search(value)
            if bad is not None:
                problems.append(Problem(where, f"holds the control character {bad.group()!r}"))
        elif (
            isinstance(value, int)
            and not isinstance(value, bool)
            and not INT64_MIN <= value <= INT64_MAX
        ):
            problems.append(Problem(where, f"{value} does not fit a 64-bit integer"))
    for where, value in _arrays(desc, ()):
        if len(value) > MAX_ITEMS:
            problems.append(Problem(where, f"{len(value)} items, more than {MAX_ITEMS}"))


def _arrays(value: Any, where: Where) -> Iterator[tuple[Where, tuple[Any, ...]]]:
    """Every array below the top-level groups, with its place."""
    if is_dataclass(value) and not isinstance(value, type):
        for f in fields(value):
            item = getattr(value, f.name)
            if isinstance(item, tuple):
                if where:
                    yield (*where, f.name), item
                for i, rec in enumerate(item):
                    yield from _arrays(rec, (*where, f.name, i))
            else:
                yield from _arrays(item, (*where, f.name))


# ------------------------------------------------------------ helpers


def _range(problems: list[Problem], where: Where, v: int | None, lo: int, hi: int) -> None:
    if v is not None and not lo <= v <= hi:
        problems.append(Problem(where, f"{v} is out of range ({lo} to {hi})"))


def _power_of_two(problems: list[Problem], where: Where, v: int | None, lo: int, hi: int) -> None:
    if v is not None and (not lo <= v <= hi or v & (v - 1)):
        problems.append(Problem(where, f"{v} is not a power of two from {lo} to {hi}"))


def _is_power_of_two(v: int, lo: int) -> bool:
    return v >= lo and not v & (v - 1)


def _sector_size(problems: list[Problem], where: Where, v: int | None) -> None:
    if v is not None and v not in SECTOR_SIZES:
        problems.append(Problem(where, f"{v} is not a sector size (512, 1024, 2048 or 4096)"))


def _form(
    problems: list[Problem], where: Where, v: str | None, form: re.Pattern[str], what: str
) -> None:
    if v is not None and not form.fullmatch(v):
        problems.append(Problem(where, f"{v!r} is not {what}"))


UUID = "a UUID like 2f9d8c7b-6a5e-4d3c-9b2a-1f0e9d8c7b6a"
LVM_UUID = "an LVM id like kL3mN4-oP5q-R6sT-7uV8-wX9y-Z0aB-cD1eF2"


def _label(problems: list[Problem], where: Where, v: str | None, limit: int, what: str) -> None:
    if v is not None and len(v.encode()) > limit:
        problems.append(
            Problem(where, f"{len(v.encode())} bytes, longer than a {what} label ({limit} at most)")
        )


def absolute_path_problem(path: str) -> str | None:
    """Why path is no absolute, normal path (one that names a place under any root), or None.

    Normal: "/" or "/" and names joined by single slashes, none of them "." or "..".
    """
    if not path.startswith("/"):
        return f"{path!r} is not an absolute path"
    if path == "/":
        return None
    return _normal_problem(path[1:], path)


def relative_path_problem(path: str) -> str | None:
    """Why path is no relative, normal path (names joined by single slashes), or None."""
    if path.startswith("/"):
        return f"{path!r} is not a relative path"
    return _normal_problem(path, path)


def _normal_problem(names: str, path: str) -> str | None:
    for name in names.split("/"):
        if name in ("", ".", ".."):
            shown = "an empty name (// or a trailing /)" if name == "" else f"{name!r}"
            return f"{path!r} is not a normal path: it holds {shown}"
    return None


def _path(problems: list[Problem], where: Where, path: str | None, absolute: bool) -> None:
    if path is None:
        return
    why = absolute_path_problem(path) if absolute else relative_path_problem(path)
    if why is not None:
        problems.append(Problem(where, why))


# ------------------------------------------------------------ records


def _check_disks(desc: Description, problems: list[Problem]) -> None:
    labels = {d.id: d.table.label for d in desc.disks if d.table is not None}
    for i, d in enumerate(desc.disks):
        w: Where = ("disks", i)
        # rules checks the lower bounds (size positive, sector sizes powers of two >= 512).
        if d.size > MAX_DISK_SIZE:
            problems.append(
                Problem((*w, "size"), f"{d.size} bytes is larger than any disk "
                                      f"({MAX_DISK_SIZE} at most)")
            )
        if _is_power_of_two(d.logical_sector_size, 512):
            _sector_size(problems, (*w, "logical_sector_size"), d.logical_sector_size)
        if _is_power_of_two(d.physical_sector_size, 512):
            # Some disks report physical blocks larger than any sector (16 KiB NAND pages).
            _power_of_two(problems, (*w, "physical_sector_size"), d.physical_sector_size,
                          512, 65536)
        if d.table is not None:
            t = d.table
            if t.id:
                form = _UUID if t.label == TableLabel.GPT else _DOS_TABLE_ID
                what = UUID if t.label == TableLabel.GPT else "a disk identifier like 0x5f3a9c1e"
                _form(problems, (*w, "table", "id"), t.id, form, what)
            _range(problems, (*w, "table", "first_lba"), t.first_lba, 0, MAX_DISK_SIZE)
            _range(problems, (*w, "table", "last_lba"), t.last_lba, 0, MAX_DISK_SIZE)
    for i, p in enumerate(desc.partitions):
        w = ("partitions", i)
        # Linux numbers at most 256 partitions of a disk (DISK_MAX_PARTS).
        _range(problems, (*w, "number"), p.number, 1, 256)
        # rules checks that start and size are positive and fit the disk.
        _sector_size(problems, (*w, "sector_size"), p.sector_size)
        label = labels.get(p.disk)
        if label == TableLabel.GPT:
            _form(problems, (*w, "type"), p.type, _UUID, "a GPT type GUID")
        elif label == TableLabel.DOS:
            _form(problems, (*w, "type"), p.type, _DOS_TYPE, "an MBR type code like 83")
        if p.uuid is not None and not (_UUID.fullmatch(p.uuid) or _DOS_PARTUUID.fullmatch(p.uuid)):
            problems.append(Problem((*w, "uuid"), f"{p.uuid!r} is not {UUID}"))
        _form(problems, (*w, "attrs"), p.attrs, _GPT_ATTRS, "a list of GPT attributes")


def _check_volumes(desc: Description, problems: list[Problem]) -> None:
    for i, md in enumerate(desc.raid_arrays):
        w: Where = ("raid_arrays", i)
        _form(problems, (*w, "uuid"), md.uuid, _MD_UUID,
              "an md UUID like 3a7c1e5f:9b2d4f6a:8c0e2a4b:6d8f0a2c")
        _form(problems, (*w, "path"), md.path, _MD_PATH, "an md device like /dev/md0")
        _range(problems, (*w, "size"), md.size, 1, MAX_SIZE)
        _range(problems, (*w, "chunk"), md.chunk, 1, MAX_SIZE)
    for i, lk in enumerate(desc.luks_volumes):
        w = ("luks_volumes", i)
        _range(problems, (*w, "version"), lk.version, 1, 2)
        _form(problems, (*w, "uuid"), lk.uuid, _UUID, UUID)
        # cryptsetup's largest volume key is 512 bytes.
        _range(problems, (*w, "key_size"), lk.key_size, 8, 4096)
        _sector_size(problems, (*w, "sector_size"), lk.sector_size)
        _range(problems, (*w, "size"), lk.size, 0, MAX_SIZE)
        if lk.name is not None and (
            lk.name in (".", "..") or "/" in lk.name or lk.name.startswith("-") or not lk.name
            or len(lk.name.encode()) > 127
        ):
            problems.append(
                Problem((*w, "name"), f"{lk.name!r} is not a device-mapper name")
            )
    for i, pv in enumerate(desc.physical_volumes):
        w = ("physical_volumes", i)
        _form(problems, (*w, "uuid"), pv.uuid, _LVM_UUID, LVM_UUID)
        _range(problems, (*w, "size"), pv.size, 1, MAX_SIZE)
    for i, vg in enumerate(desc.volume_groups):
        w = ("volume_groups", i)
        _lvm_name(problems, (*w, "name"), vg.name)
        _form(problems, (*w, "uuid"), vg.uuid, _LVM_UUID, LVM_UUID)
        _range(problems, (*w, "extent_size"), vg.extent_size, 1, MAX_SIZE)
        _range(problems, (*w, "size"), vg.size, 0, MAX_SIZE)
    for i, lv in enumerate(desc.logical_volumes):
        w = ("logical_volumes", i)
        _lvm_name(problems, (*w, "name"), lv.name)
        _form(problems, (*w, "uuid"), lv.uuid, _LVM_UUID, LVM_UUID)
        _range(problems, (*w, "size"), lv.size, 1, MAX_SIZE)
        for j, seg in enumerate(lv.segments):
            sw: Where = (*w, "segments", j)
            _range(problems, (*sw, "start_extent"), seg.start_extent, 0, MAX_SIZE)
            _range(problems, (*sw, "extent_count"), seg.extent_count, 1, MAX_SIZE)
            # LVM stripes a segment over 128 devices at most.
            _range(problems, (*sw, "stripes"), seg.stripes, 1, 128)
            _range(problems, (*sw, "stripe_size"), seg.stripe_size, 1, MAX_SIZE)


def _lvm_name(problems: list[Problem], where: Where, name: str) -> None:
    if not _LVM_NAME.fullmatch(name) or name in (".", ".."):
        problems.append(
            Problem(where, f"{name!r} is not an LVM name (letters, digits and + _ . -, "
                           "not starting with -, 127 at most)")
        )


def _check_filesystems(desc: Description, problems: list[Problem]) -> None:
    subvolume_paths = {sv.id: sv.path for sv in desc.subvolumes}
    for i, fs in enumerate(desc.filesystems):
        w: Where = ("filesystems", i)
        if fs.type == FsType.VFAT:
            _form(problems, (*w, "uuid"), fs.uuid, _VFAT_ID, "a FAT volume id like 1A2B-3C4D")
        elif fs.type != FsType.OTHER:
            _form(problems, (*w, "uuid"), fs.uuid, _UUID, UUID)
        limit = _LABEL_BYTES.get(fs.type)
        if limit is not None:
            _label(problems, (*w, "label"), fs.label, limit, str(fs.type))
        _range(problems, (*w, "size"), fs.size, 1, MAX_SIZE)
        if fs.ext is not None:
            _check_ext(problems, (*w, "ext"), fs.ext)
        if fs.xfs is not None:
            _check_xfs(problems, (*w, "xfs"), fs.xfs)
        if fs.vfat is not None:
            _check_vfat(problems, (*w, "vfat"), fs.vfat)
        if fs.btrfs is not None:
            _check_btrfs(problems, (*w, "btrfs"), fs.btrfs)
        if fs.state is not None:
            for name in ("used_bytes", "total_bytes", "inodes_used", "inodes_total"):
                _range(problems, (*w, "state", name), getattr(fs.state, name), 0, MAX_SIZE)
        for j, m in enumerate(fs.mounts):
            # rules reports a mountpoint that is not absolute.
            if m.mountpoint.startswith("/"):
                _path(problems, (*w, "mounts", j, "mountpoint"), m.mountpoint, absolute=True)
            sv_path = subvolume_paths.get(m.subvolume or "")
            if sv_path is not None and "," in sv_path:
                # It is mounted with -o subvol=PATH: a comma would start another option.
                problems.append(Problem((*w, "mounts", j, "subvolume"),
                                        f"the subvolume's path {sv_path!r} holds a comma; "
                                        "it cannot be mounted by path"))
    for i, sv in enumerate(desc.subvolumes):
        w = ("subvolumes", i)
        _path(problems, (*w, "path"), sv.path, absolute=False)
        # Subvolume ids start at 256; 5 is the top level (BTRFS_FS_TREE_OBJECTID).
        _range(problems, (*w, "subvol_id"), sv.subvol_id, 256, MAX_SIZE)
        _range(problems, (*w, "parent_id"), sv.parent_id, 5, MAX_SIZE)
        _form(problems, (*w, "uuid"), sv.uuid, _UUID, UUID)


def _check_ext(problems: list[Problem], w: Where, ext: ExtOptions) -> None:
    _power_of_two(problems, (*w, "block_size"), ext.block_size, 1024, 65536)
    _power_of_two(problems, (*w, "inode_size"), ext.inode_size, 128, 65536)
    _range(problems, (*w, "inode_count"), ext.inode_count, 1, 2**32 - 1)
    pct = ext.reserved_blocks_percent
    if pct is not None and not 0 <= pct <= 50:  # mke2fs -m takes 0 to 50
        problems.append(
            Problem((*w, "reserved_blocks_percent"), f"{pct} is out of range (0 to 50)")
        )
    for j, feat in enumerate(ext.features):
        _form(problems, (*w, "features", j), feat, _FEATURE, "a feature name")


def _check_xfs(problems: list[Problem], w: Where, xfs: XfsOptions) -> None:
    _power_of_two(problems, (*w, "block_size"), xfs.block_size, 512, 65536)
    _power_of_two(problems, (*w, "sector_size"), xfs.sector_size, 512, 32768)
    _power_of_two(problems, (*w, "inode_size"), xfs.inode_size, 256, 2048)
    _range(problems, (*w, "ag_count"), xfs.ag_count, 1, 2**32 - 1)
    _range(problems, (*w, "log_size"), xfs.log_size, 1, MAX_SIZE)


def _check_vfat(problems: list[Problem], w: Where, vfat: VfatOptions) -> None:
    if vfat.fat_size not in (12, 16, 32):
        problems.append(Problem((*w, "fat_size"), f"{vfat.fat_size} is not 12, 16 or 32"))
    _form(problems, (*w, "volume_id"), vfat.volume_id, _VFAT_ID, "a FAT volume id like 1A2B-3C4D")
    _power_of_two(problems, (*w, "sector_size"), vfat.sector_size, 512, 32768)
    _power_of_two(problems, (*w, "cluster_size"), vfat.cluster_size, 512, 2**21)


def _check_btrfs(problems: list[Problem], w: Where, btrfs: BtrfsOptions) -> None:
    _power_of_two(problems, (*w, "node_size"), btrfs.node_size, 4096, 65536)
    _power_of_two(problems, (*w, "sector_size"), btrfs.sector_size, 4096, 65536)
    _form(problems, (*w, "data_profile"), btrfs.data_profile, _PROFILE, "a profile name")
    _form(problems, (*w, "metadata_profile"), btrfs.metadata_profile, _PROFILE, "a profile name")
    for j, feat in enumerate(btrfs.features):
        _form(problems, (*w, "features", j), feat, _FEATURE, "a feature name")
    _range(problems, (*w, "default_subvolume"), btrfs.default_subvolume, 5, MAX_SIZE)


def _check_other(desc: Description, problems: list[Problem]) -> None:
    for i, sw in enumerate(desc.swaps):
        w: Where = ("swaps", i)
        _range(problems, (*w, "size"), sw.size, 1, MAX_SIZE)
        _path(problems, (*w, "file"), sw.file, absolute=True)
        _form(problems, (*w, "uuid"), sw.uuid, _UUID, UUID)
        _label(problems, (*w, "label"), sw.label, SWAP_LABEL_BYTES, "swap")
        _power_of_two(problems, (*w, "page_size"), sw.page_size, 4096, 65536)
        # swapon -p takes 0 to 32767; the kernel numbers the others -2, -3, ...
        _range(problems, (*w, "priority"), sw.priority, -(2**31), 32767)
    for i, cf in enumerate(desc.config_files):
        # rules reports a path that is not absolute.
        if cf.path.startswith("/"):
            _path(problems, ("config_files", i, "path"), cf.path, absolute=True)
    for i, rd in enumerate(desc.removable_devices):
        _range(problems, ("removable_devices", i, "size"), rd.size, 0, MAX_SIZE)
    if desc.rehearsal is not None:
        _check_rehearsal(desc.rehearsal, problems)
    kernels: set[str] = set()
    for i, left in enumerate(desc.initramfs_made_at_recovery()):
        # The release names a file under /boot and /lib/modules, and goes on the command
        # line of update-initramfs or dracut in the chroot.
        if not _KERNEL_RELEASE.fullmatch(left.kernel):
            problems.append(Problem(("made_at_recovery", "initramfs", i, "kernel"),
                                    f"{left.kernel[:80]!r} is not a kernel release"))
            continue
        if left.kernel in kernels:
            problems.append(Problem(("made_at_recovery", "initramfs", i, "kernel"),
                                    f"kernel {left.kernel} is listed twice"))
        kernels.add(left.kernel)
        if left.path not in initramfs_paths(left.kernel):
            problems.append(Problem(("made_at_recovery", "initramfs", i, "path"),
                                    f"{left.path[:200]!r} is not where initramfs-tools or "
                                    f"dracut put the initramfs of {left.kernel[:80]}"))
    if desc.catalog is not None:
        _path(problems, ("catalog", "path"), desc.catalog.path, absolute=False)
        _range(problems, ("catalog", "files"), desc.catalog.files, 0, MAX_SIZE)
        _range(problems, ("catalog", "packages"), desc.catalog.packages, 0, MAX_SIZE)


def _check_rehearsal(rh: Rehearsal, problems: list[Problem]) -> None:
    """The canary's path and digest, the failed units' names: the recovered system's
    check reads them (a path it opens, names it compares)."""
    if rh.canary is not None:
        _path(problems, ("rehearsal", "canary", "path"), rh.canary.path, absolute=True)
        _form(problems, ("rehearsal", "canary", "sha256"), rh.canary.sha256, _HEX64,
              "64 lower-case hex digits")
    for i, name in enumerate(rh.failed_units or ()):
        if len(name) > UNIT_NAME_MAX or not _UNIT_NAME.fullmatch(name):
            problems.append(Problem(("rehearsal", "failed_units", i),
                                    f"{name[:80]!r} is not a systemd unit name"))
