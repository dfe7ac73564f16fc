"""Filesystems: identity from blkid, creation options from each type's own tool, usage from statvfs.

Parsers (parse_*) are pure and fed recorded output in the unit tests; the read_* and
describe functions around them run the tools, once per device.
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from resurgo import run
from resurgo.errors import CommandFailed, OperationFailed
from resurgo.model import (
    BtrfsOptions,
    ExtOptions,
    Filesystem,
    FsType,
    Mount,
    Subvolume,
    Unsupported,
    VfatOptions,
    VolumeState,
    XfsOptions,
)
from resurgo.probe import ids, sysfs
from resurgo.probe.mounts import MountEntry

SYS_FS_BTRFS = Path("/sys/fs/btrfs")

SUPPORTED = {
    "ext2": FsType.EXT2,
    "ext3": FsType.EXT3,
    "ext4": FsType.EXT4,
    "xfs": FsType.XFS,
    "vfat": FsType.VFAT,
    "btrfs": FsType.BTRFS,
}

BTRFS_TOP_LEVEL = 5

# ext feature flags that describe the filesystem's state, not how it was made.
_EXT_STATE_FEATURES = frozenset({"needs_recovery", "orphan_present"})

# XFS superblock feature bits (xfs_format.h).
_XFS_RO_FINOBT = 1 << 0
_XFS_RO_RMAPBT = 1 << 1
_XFS_RO_REFLINK = 1 << 2
_XFS_RO_INOBTCNT = 1 << 3
_XFS_IN_SPINODES = 1 << 1
_XFS_IN_BIGTIME = 1 << 3
_XFS_SB_VERSION_5 = 5

# Microsoft's FAT specification: the cluster count decides between FAT12 and FAT16.
_FAT12_MAX_CLUSTERS = 4084


# ---------------------------------------------------------------- blkid



# Where save keeps its snapshots while it reads them (recovery.snapshots.DIRECTORY).
SNAPSHOTS = ".resurgo-snapshots"

def parse_blkid_export(text: str) -> dict[str, str]:
    """KEY=value lines of `blkid -o export`, with its backslash escapes undone."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, eq, value = line.partition("=")
        if eq and key:
            out[key] = re.sub(r"\\(.)", r"\1", value)
    return out


def read_blkid(device: str) -> dict[str, str]:
    """What the superblocks on device say; {} when blkid finds no signature."""
    result = run.run(["blkid", "-p", "-o", "export", device], check=False)
    if result.returncode == 2 and not result.stderr.strip():
        return {}
    if result.returncode != 0:
        raise CommandFailed(list(result.argv), result.returncode, result.stderr)
    return parse_blkid_export(result.stdout)


# ---------------------------------------------------------------- ext2/3/4


def _key_values(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, colon, value = line.partition(":")
        if colon and key and not key.startswith(" "):
            out.setdefault(key.strip(), value.strip())
    return out


def _int_field(fields: Mapping[str, str], key: str, tool: str) -> int:
    try:
        return int(fields[key].split()[0])
    except (KeyError, IndexError, ValueError):
        raise OperationFailed(f"{tool} did not report {key!r}") from None


def parse_dumpe2fs(text: str) -> tuple[ExtOptions, int]:
    """(creation options, size in bytes) from `dumpe2fs -h`."""
    f = _key_values(text)
    block_size = _int_field(f, "Block size", "dumpe2fs")
    blocks = _int_field(f, "Block count", "dumpe2fs")
    features = tuple(
        x for x in f.get("Filesystem features", "").split()
        if x not in _EXT_STATE_FEATURES and x != "(none)"
    )
    reserved = int(f.get("Reserved block count", "0").split()[0] or 0)
    opts = ExtOptions(
        block_size=block_size,
        inode_size=_int_field(f, "Inode size", "dumpe2fs"),
        features=features,
        inode_count=_int_field(f, "Inode count", "dumpe2fs"),
        reserved_blocks_percent=round(100 * reserved / blocks, 2) if blocks else None,
        journal="has_journal" in features,
    )
    return opts, block_size * blocks


# ---------------------------------------------------------------- xfs


def parse_xfs_sb(text: str) -> tuple[XfsOptions, int]:
    """(creation options, size in bytes) from `xfs_db -r -c 'sb 0' -c print`."""
    f: dict[str, str] = {}
    for line in text.splitlines():
        key, eq, value = line.partition(" = ")
        if eq:
            f[key.strip()] = value.strip()

    def num(key: str) -> int:
        try:
            return int(f[key].split()[0], 0)
        except (KeyError, IndexError, ValueError):
            raise OperationFailed(f"xfs_db did not report {key!r}") from None

    block_size = num("blocksize")
    ro_compat = num("features_ro_compat") if "features_ro_compat" in f else 0
    incompat = num("features_incompat") if "features_incompat" in f else 0
    v5 = (num("versionnum") & 0xF) == _XFS_SB_VERSION_5
    opts = XfsOptions(
        block_size=block_size,
        sector_size=num("sectsize"),
        inode_size=num("inodesize"),
        ag_count=num("agcount"),
        log_size=num("logblocks") * block_size,
        reflink=bool(ro_compat & _XFS_RO_REFLINK),
        crc=v5,
        finobt=bool(ro_compat & _XFS_RO_FINOBT),
        sparse=bool(incompat & _XFS_IN_SPINODES),
        bigtime=bool(incompat & _XFS_IN_BIGTIME),
        inobtcount=bool(ro_compat & _XFS_RO_INOBTCNT),
        rmapbt=bool(ro_compat & _XFS_RO_RMAPBT),
    )
    return opts, num("dblocks") * block_size


# ---------------------------------------------------------------- vfat


def parse_fat_boot_sector(sector: bytes) -> tuple[VfatOptions, int]:
    """(options, size in bytes) from the first sector of a FAT filesystem."""
    if len(sector) < 90 or sector[510:512] != b"\x55\xaa":
        raise OperationFailed("not a FAT boot sector (no 55 AA signature)")
    (bytes_per_sector, sectors_per_cluster, reserved, fats, root_entries, total16, _media,
     fat16) = struct.unpack_from("<HBHBHHBH", sector, 11)
    total32 = struct.unpack_from("<I", sector, 32)[0]
    if bytes_per_sector == 0 or sectors_per_cluster == 0:
        raise OperationFailed("FAT boot sector with a zero sector or cluster size")
    total = total16 or total32
    if fat16 == 0:
        # Only FAT32 keeps its FAT size in the extended BPB, and its volume id after it.
        fat_size = 32
        volume_id = struct.unpack_from("<I", sector, 67)[0]
    else:
        root_sectors = (root_entries * 32 + bytes_per_sector - 1) // bytes_per_sector
        data = total - reserved - fats * fat16 - root_sectors
        clusters = data // sectors_per_cluster
        fat_size = 12 if clusters <= _FAT12_MAX_CLUSTERS else 16
        volume_id = struct.unpack_from("<I", sector, 39)[0]
    opts = VfatOptions(
        fat_size=fat_size,
        volume_id=f"{volume_id >> 16:04X}-{volume_id & 0xFFFF:04X}",
        sector_size=bytes_per_sector,
        cluster_size=bytes_per_sector * sectors_per_cluster,
    )
    return opts, total * bytes_per_sector


def read_boot_sector(device: str) -> bytes:
    try:
        with open(device, "rb") as f:
            return f.read(512)
    except OSError as e:
        raise OperationFailed(f"cannot read the boot sector of {device}: {e.strerror}") from None


# ---------------------------------------------------------------- btrfs


@dataclass(frozen=True)
class BtrfsSuper:
    fsid: str
    node_size: int
    sector_size: int
    total_bytes: int
    num_devices: int
    features: tuple[str, ...]


@dataclass(frozen=True)
class SubvolEntry:
    subvol_id: int
    parent_id: int
    uuid: str | None
    # From the top level, without a leading slash: "@", "@home", "@/srv/nested".
    path: str


def parse_dump_super(text: str) -> BtrfsSuper:
    """Superblock facts from `btrfs inspect-internal dump-super`."""
    f: dict[str, str] = {}
    flags: list[str] = []
    in_flags = False
    for line in text.splitlines():
        if line.startswith(("\t", " ")):
            # The names of the bits of the flag word above, "( A |\n B )".
            if in_flags:
                flags.extend(n.lower() for n in re.findall(r"[A-Z][A-Z0-9_]+", line))
            continue
        parts = line.split(None, 1)
        if len(parts) != 2:
            in_flags = False
            continue
        key, value = parts
        f.setdefault(key, value.strip())
        in_flags = key in ("compat_flags", "compat_ro_flags", "incompat_flags")
        if in_flags and "(" in value:
            flags.extend(n.lower() for n in re.findall(r"[A-Z][A-Z0-9_]+", value.split("(", 1)[1]))

    def num(key: str) -> int:
        try:
            return int(f[key].split()[0], 0)
        except (KeyError, IndexError, ValueError):
            raise OperationFailed(f"btrfs dump-super did not report {key!r}") from None

    return BtrfsSuper(
        fsid=f.get("fsid", ""),
        node_size=num("nodesize"),
        sector_size=num("sectorsize"),
        total_bytes=num("total_bytes"),
        num_devices=num("num_devices"),
        features=tuple(flags),
    )


_SUBVOL_LINE = re.compile(
    r"^ID (?P<id>\d+) gen \d+(?: cgen \d+)?(?: parent (?P<parent>\d+))? top level (?P<top>\d+)"
    r"(?: parent_uuid \S+)?(?: received_uuid \S+)?(?: uuid (?P<uuid>\S+))? path (?P<path>.*)$"
)


def parse_subvolume_list(text: str) -> list[SubvolEntry]:
    """Lines of `btrfs subvolume list -p -u -a MNT`."""
    out: list[SubvolEntry] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        m = _SUBVOL_LINE.match(line)
        if m is None:
            raise OperationFailed(f"cannot read btrfs subvolume list line {line!r}")
        uuid = m.group("uuid")
        parent = m.group("parent") or m.group("top")
        out.append(
            SubvolEntry(
                subvol_id=int(m.group("id")),
                parent_id=int(parent),
                uuid=None if uuid in (None, "-") else uuid,
                # With -a, subvolumes outside the mounted one carry this prefix.
                path=m.group("path").removeprefix("<FS_TREE>/").lstrip("/"),
            )
        )
    return out


def parse_subvolume_ids(text: str) -> set[int]:
    """The subvolume ids in `btrfs subvolume list` output (used with -r: the read-only ones)."""
    return {int(m.group(1)) for m in re.finditer(r"^ID (\d+) ", text, re.MULTILINE)}


def parse_get_default(text: str) -> int:
    """`btrfs subvolume get-default`: "ID 256 gen 9 top level 5 path @" or "ID 5 (FS_TREE)"."""
    m = re.match(r"\s*ID (\d+)", text)
    if m is None:
        raise OperationFailed(f"cannot read btrfs subvolume get-default output {text.strip()!r}")
    return int(m.group(1))


def btrfs_profile(fsid: str, kind: str, sys_fs_btrfs: Path = SYS_FS_BTRFS) -> str | None:
    """The block group profile (single, dup, raid1...) of a mounted btrfs's data or metadata.

    While a balance converts profiles two may be present: the one holding more wins.
    """
    base = sys_fs_btrfs / fsid / "allocation" / kind
    best: tuple[int, str] | None = None
    for name in sysfs.entries(base):
        total = base / name / "total_bytes"
        if not total.is_file():
            continue
        size = sysfs.int_attribute(total)
        if size is None:
            continue
        if best is None or size > best[0]:
            best = (size, name)
    return best[1] if best else None


def btrfs_devices(sys_fs_btrfs: Path = SYS_FS_BTRFS) -> dict[str, str]:
    """kernel name -> fsid of every device of every btrfs the kernel has mounted."""
    out: dict[str, str] = {}
    for fsid in sysfs.entries(sys_fs_btrfs):
        for kname in sysfs.entries(sys_fs_btrfs / fsid / "devices"):
            out[kname] = fsid
    return out


# ---------------------------------------------------------------- assembling


@dataclass
class Described:
    """A filesystem record and what came with it."""

    filesystem: Filesystem
    subvolumes: list[Subvolume] = field(default_factory=list)
    unsupported: list[Unsupported] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def volume_state(mountpoint: str | None) -> VolumeState:
    if mountpoint is None:
        return VolumeState(mounted=False)
    try:
        st = os.statvfs(mountpoint)
    except OSError:
        return VolumeState(mounted=True)
    return VolumeState(
        mounted=True,
        used_bytes=(st.f_blocks - st.f_bfree) * st.f_frsize,
        total_bytes=st.f_blocks * st.f_frsize,
        inodes_used=st.f_files - st.f_ffree if st.f_files else None,
        inodes_total=st.f_files or None,
    )


def describe_filesystem(
    kname: str,
    device_id: str,
    device: str,
    blkid: Mapping[str, str],
    mounts: Sequence[tuple[str, MountEntry]],
    any_mount: MountEntry | None,
) -> Described:
    """The filesystem blkid found on a device.

    mounts: (mountpoint relative to the root, entry) of its mounts under the root;
    any_mount: one of its mounts anywhere, to measure it and to ask btrfs about it.
    An unknown type is kept as "other", unsupported, with a warning: never an error.
    """
    type_name = blkid.get("TYPE", "")
    fs_id = ids.filesystem(kname)
    uuid = blkid.get("UUID") or None
    label = blkid.get("LABEL") or None
    state = volume_state(any_mount.mountpoint if any_mount else None)
    fs_type = SUPPORTED.get(type_name)
    if fs_type is None:
        reason = f"{type_name} filesystems cannot be recreated by resurgo"
        return Described(
            Filesystem(
                id=fs_id, device=device_id, type=FsType.OTHER, uuid=uuid, label=label,
                type_name=type_name, supported=False,
                mounts=tuple(Mount(rel, e.options) for rel, e in mounts), state=state,
            ),
            unsupported=[Unsupported(
                id=ids.unsupported(kname), kind="filesystem", path=device, reason=reason,
                details=tuple(f"{k}={v}" for k, v in sorted(blkid.items()) if k != "DEVNAME"),
            )],
            warnings=[f"{device}: {reason}; it is recorded but will not be restored"],
        )
    fs = Filesystem(id=fs_id, device=device_id, type=fs_type, uuid=uuid, label=label,
                    state=state)
    if fs_type in (FsType.EXT2, FsType.EXT3, FsType.EXT4):
        ext, size = parse_dumpe2fs(run.output(["dumpe2fs", "-h", device]))
        fs = replace(fs, ext=ext, size=size)
    elif fs_type == FsType.XFS:
        xfs, size = parse_xfs_sb(run.output(["xfs_db", "-r", "-c", "sb 0", "-c", "print", device]))
        fs = replace(fs, xfs=xfs, size=size)
    elif fs_type == FsType.VFAT:
        vfat, size = parse_fat_boot_sector(read_boot_sector(device))
        fs = replace(fs, vfat=vfat, size=size)
    else:
        return _describe_btrfs(fs, kname, device, mounts, any_mount)
    return Described(replace(fs, mounts=tuple(Mount(rel, e.options) for rel, e in mounts)))


def _describe_btrfs(
    fs: Filesystem,
    kname: str,
    device: str,
    mounts: Sequence[tuple[str, MountEntry]],
    any_mount: MountEntry | None,
) -> Described:
    sb = parse_dump_super(run.output(["btrfs", "inspect-internal", "dump-super", device]))
    out = Described(fs)
    subvols: dict[int, Subvolume] = {}
    default = BTRFS_TOP_LEVEL
    data = metadata = None
    if any_mount is None:
        out.warnings.append(
            f"{device}: btrfs is not mounted, so its subvolumes and profiles are not described"
        )
    else:
        mnt = any_mount.mountpoint
        listing = parse_subvolume_list(run.output(["btrfs", "subvolume", "list", "-p", "-u", "-a",
                                                   mnt]))
        readonly = parse_subvolume_ids(run.output(["btrfs", "subvolume", "list", "-r", "-a", mnt]))
        default = parse_get_default(run.output(["btrfs", "subvolume", "get-default", mnt]))
        for e in listing:
            if e.path.removeprefix("<FS_TREE>/").split("/")[0] == SNAPSHOTS:
                continue  # save's own snapshots (recovery.snapshots), not the system's
            subvols[e.subvol_id] = Subvolume(
                id=ids.subvolume(fs.id, e.subvol_id),
                filesystem=fs.id,
                path=e.path,
                subvol_id=e.subvol_id,
                parent_id=e.parent_id,
                uuid=e.uuid,
                readonly=e.subvol_id in readonly,
            )
        fsid = sb.fsid or fs.uuid or ""
        data = btrfs_profile(fsid, "data")
        metadata = btrfs_profile(fsid, "metadata")
    mount_records = []
    for rel, m in mounts:
        subvolid = m.btrfs_subvolid
        sv = subvols.get(subvolid) if subvolid is not None else None
        if subvolid not in (None, BTRFS_TOP_LEVEL) and sv is None:
            out.warnings.append(f"{m.mountpoint}: subvolume {subvolid} is not in the list of "
                                f"subvolumes of {device}")
        mount_records.append(Mount(rel, m.options, sv.id if sv else None))
    options = BtrfsOptions(
        node_size=sb.node_size,
        sector_size=sb.sector_size,
        data_profile=data,
        metadata_profile=metadata,
        features=sb.features,
        default_subvolume=default,
    )
    supported = True
    if sb.num_devices > 1:
        supported = False
        reason = f"btrfs spanning {sb.num_devices} devices cannot be recreated by resurgo yet"
        out.unsupported.append(Unsupported(
            id=ids.unsupported(kname), kind="filesystem", path=device, reason=reason,
        ))
        out.warnings.append(f"{device}: {reason}")
    out.filesystem = replace(fs, btrfs=options, size=sb.total_bytes, supported=supported,
                              mounts=tuple(mount_records))
    out.subvolumes = sorted(subvols.values(), key=lambda s: s.subvol_id)
    return out
