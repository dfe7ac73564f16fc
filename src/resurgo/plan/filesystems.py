"""Filesystem and swap rules: how small each can be, and how mkfs recreates it.

Two different minimums:
  - creatable: below it mkfs refuses (or makes something the firmware will not read);
  - data: the used bytes at save time plus a safety margin, so that the
    restored files fit with room for the metadata a fresh filesystem needs.
A filesystem whose used bytes are unknown cannot shrink below its saved size.
"""

from __future__ import annotations

from dataclasses import dataclass

from resurgo.model import Filesystem, FsType, Swap

KIB = 1 << 10
MIB = 1 << 20

# The safety margin on top of the used bytes: 10 % of them plus 64 MiB (journals, logs,
# inode tables and allocation slack of a freshly made filesystem).
MARGIN_PERCENT = 10
MARGIN_BYTES = 64 * MIB

# mkfs.xfs (xfsprogs >= 5.19) refuses anything below 300 MiB.
XFS_MINIMUM = 300 * MIB
# mkfs.btrfs of a single device with default profiles; btrfs-progs 6.x needs ~109-114 MiB.
BTRFS_MINIMUM = 114 * MIB
# mkswap needs 10 pages.
SWAP_MINIMUM_PAGES = 10
# Journal of 1024 blocks (mke2fs's smallest) plus as much again for the rest.
EXT_JOURNAL_BLOCKS = 2048
EXT_MINIMUM = 256 * KIB

# FAT: the cluster counts that make a FAT12/16/32 what it is (Microsoft's FAT spec).
FAT_MIN_CLUSTERS = {12: 1, 16: 4085, 32: 65525}
FAT_ENTRY_BITS = {12: 12, 16: 16, 32: 32}

EXT = (FsType.EXT2, FsType.EXT3, FsType.EXT4)


def ceil_to(value: int, unit: int) -> int:
    return -(-value // unit) * unit


def fat_minimum(fat_size: int, sector_size: int) -> int:
    """Bytes of the smallest proper FAT of this type with one sector per cluster.

    FAT32 needs 65525 clusters: ~33 MiB at 512-byte sectors, ~257 MiB at 4096.
    """
    clusters = FAT_MIN_CLUSTERS.get(fat_size, 1)
    bits = FAT_ENTRY_BITS.get(fat_size, 32)
    fat_sectors = -(-((clusters + 2) * bits // 8) // sector_size)
    reserved = 32 if fat_size == 32 else 1
    root_dir = 0 if fat_size == 32 else -(-512 * 32 // sector_size)
    sectors = reserved + 2 * fat_sectors + root_dir + clusters
    return ceil_to(sectors * sector_size, MIB)


def creatable_minimum(fs: Filesystem, sector_size: int) -> int:
    """The smallest device mkfs can recreate this filesystem on, with its options (the
    block size fitted to the sectors, as recreate makes it)."""
    if fs.type in EXT:
        block = fitted_block(fs.ext.block_size if fs.ext else 4096, sector_size)
        journal = fs.ext.journal if fs.ext else fs.type != FsType.EXT2
        return max(EXT_MINIMUM, block * (EXT_JOURNAL_BLOCKS if journal else 64))
    if fs.type == FsType.XFS:
        return XFS_MINIMUM
    if fs.type == FsType.BTRFS:
        return BTRFS_MINIMUM
    if fs.type == FsType.VFAT:
        fat = fs.vfat.fat_size if fs.vfat else 32
        return fat_minimum(fat, vfat_sector_size(fs, sector_size))
    return 0


def data_minimum(fs: Filesystem) -> int | None:
    """Used bytes plus the margin (and, for ext, room for as many inodes); None if unknown."""
    state = fs.state
    if state is None or state.used_bytes is None:
        return None
    need = state.used_bytes + state.used_bytes * MARGIN_PERCENT // 100 + MARGIN_BYTES
    ratio = ext_inode_ratio(fs)
    if ratio is not None and state.inodes_used:
        need = max(need, state.inodes_used * (100 + MARGIN_PERCENT) // 100 * ratio)
    return need


def ext_inode_ratio(fs: Filesystem, block_size: int | None = None) -> int | None:
    """Bytes per inode of a saved ext filesystem: a recreated one of another size keeps it
    (block_size: the block size it is recreated with, when not the saved one)."""
    if fs.type not in EXT or fs.ext is None or not fs.ext.inode_count:
        return None
    total = fs.size or (fs.state.total_bytes if fs.state else None)
    if not total:
        return None
    # mke2fs takes -i between the block size and 64 MiB.
    return min(max(block_size or fs.ext.block_size, total // fs.ext.inode_count), 64 * MIB)


def fitted_block(block_size: int, sector_size: int) -> int:
    """The smallest block size a disk of sector_size-byte sectors allows, from the saved
    one: blocks are powers of two from 512 bytes, and so are sectors."""
    return max(block_size, sector_size)


def _fitted(what: str, saved: int, sector_size: int, file_by_file: bool,
            problems: list[str], notes: list[str]) -> int:
    """The block (or sector) size to recreate with, saying why in notes or problems.

    Smaller than the new disk's sectors, mkfs refuses it. A filesystem whose files
    resurgo restores one by one holds them as well with larger blocks: it is made with the
    smallest the disk allows. One whose content comes otherwise (a command of the
    description writing an image, say) needs its own geometry: refused.
    """
    if saved >= sector_size:
        return saved
    if not file_by_file:
        problems.append(
            f"its {saved}-byte {what} are smaller than the {sector_size}-byte sectors of the "
            f"new disk, and its content is not restored file by file by resurgo (an image of "
            f"it needs its own {what})"
        )
        return saved
    notes.append(
        f"adapted: made with {sector_size}-byte {what} (was {saved}): the new disk's "
        f"{sector_size}-byte sectors allow none smaller, and its files are restored one by "
        "one, which any block size holds"
    )
    return sector_size


def minimum(fs: Filesystem, sector_size: int, saved_size: int) -> int:
    """The smallest device this filesystem may be recreated on, data included."""
    if not fs.supported or fs.type == FsType.OTHER:
        return saved_size
    data = data_minimum(fs)
    # The margin is what shrinking must leave; a filesystem that keeps its size fits anyway.
    fits = saved_size if data is None else min(saved_size, data)
    return max(creatable_minimum(fs, sector_size), fits)


def swap_minimum(sw: Swap) -> int:
    return SWAP_MINIMUM_PAGES * (sw.page_size or 4096)


def vfat_sector_size(fs: Filesystem, target_sector_size: int) -> int:
    """A FAT keeps its logical sector size unless the new disk's sectors are larger."""
    saved = fs.vfat.sector_size if fs.vfat and fs.vfat.sector_size else 512
    return max(saved, target_sector_size)


@dataclass(frozen=True)
class Recreate:
    """How mkfs recreates one filesystem, and what stands in the way."""

    program: str
    options: tuple[str, ...]
    problems: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


def recreate(
    fs: Filesystem, size: int, sector_size: int, saved_size: int, *, file_by_file: bool
) -> Recreate:
    """mkfs options for fs on a device of size bytes with sector_size-byte sectors.

    Options tied to the old size (inode count, allocation groups, log size) are kept only
    when the size is unchanged. file_by_file: a resurgo:restore command restores its
    content file by file, so its blocks may grow to the new disk's sectors (_fitted).
    """
    problems: list[str] = []
    notes: list[str] = []
    if not fs.supported or fs.type == FsType.OTHER:
        return Recreate("", (), (), ())
    low = creatable_minimum(fs, sector_size)
    if size < low:
        problems.append(f"{fs.type} needs at least {low} bytes to be created; it would get {size}")
    same_size = size == saved_size
    if fs.type in EXT:
        opts, p, n = _ext(fs, sector_size, same_size, file_by_file)
    elif fs.type == FsType.XFS:
        opts, p, n = _xfs(fs, sector_size, same_size, file_by_file)
    elif fs.type == FsType.VFAT:
        opts, p, n = _vfat(fs, sector_size)
    else:
        opts, p, n = _btrfs(fs, sector_size, file_by_file)
    return Recreate(f"mkfs.{fs.type}", tuple(opts), tuple(problems + p), tuple(notes + n))


Parts = tuple[list[str], list[str], list[str]]


def _ext(fs: Filesystem, sector_size: int, same_size: bool, file_by_file: bool) -> Parts:
    opts = ["-F", "-t", str(fs.type)]
    problems: list[str] = []
    notes: list[str] = []
    if fs.uuid:
        opts += ["-U", fs.uuid]
    if fs.label:
        opts += ["-L", fs.label]
    ext = fs.ext
    if ext is not None:
        block = _fitted("blocks", ext.block_size, sector_size, file_by_file, problems, notes)
        opts += ["-b", str(block), "-I", str(ext.inode_size)]
        if ext.features:
            # "none" first: exactly the saved features, not mke2fs.conf's defaults plus them.
            opts += ["-O", ",".join(("none", *ext.features))]
        if ext.reserved_blocks_percent is not None:
            opts += ["-m", f"{ext.reserved_blocks_percent:g}"]
        ratio = ext_inode_ratio(fs, block)
        if same_size and ext.inode_count:
            opts += ["-N", str(ext.inode_count)]
        elif ratio is not None:
            opts += ["-i", str(ratio)]
    return opts, problems, notes


def _flag(value: bool) -> str:
    return "1" if value else "0"


def _xfs(fs: Filesystem, sector_size: int, same_size: bool, file_by_file: bool) -> Parts:
    opts = ["-f"]
    problems: list[str] = []
    notes: list[str] = []
    meta: list[str] = []
    if fs.uuid:
        meta.append(f"uuid={fs.uuid}")
    if fs.label:
        opts += ["-L", fs.label]
    x = fs.xfs
    if x is not None:
        block = _fitted("blocks", x.block_size, sector_size, file_by_file, problems, notes)
        sect = max(x.sector_size, sector_size)
        if sect != x.sector_size:
            notes.append(
                f"adapted: made with {sect}-byte sectors (was {x.sector_size}): the new "
                "disk's sectors are that large"
            )
        opts += ["-b", f"size={block}", "-s", f"size={sect}"]
        inode = [f"size={x.inode_size}"]
        if x.crc is not None:
            meta.insert(0, f"crc={_flag(x.crc)}")
        if x.crc is not False:
            for name in ("finobt", "reflink", "bigtime", "inobtcount", "rmapbt"):
                value = getattr(x, name)
                if value is not None:
                    meta.append(f"{name}={_flag(value)}")
            if x.sparse is not None:
                inode.append(f"sparse={_flag(x.sparse)}")
        opts += ["-i", ",".join(inode)]
        if same_size and x.ag_count:
            opts += ["-d", f"agcount={x.ag_count}"]
        if same_size and x.log_size:
            opts += ["-l", f"size={x.log_size}"]
    if meta:
        opts += ["-m", ",".join(meta)]
    return opts, problems, notes


def _vfat(fs: Filesystem, sector_size: int) -> Parts:
    opts: list[str] = []
    notes: list[str] = []
    v = fs.vfat
    sect = vfat_sector_size(fs, sector_size)
    saved_sect = v.sector_size if v and v.sector_size else 512
    if sect != saved_sect:
        notes.append(
            f"adapted: made with {sect}-byte sectors (was {saved_sect}): a FAT's logical "
            "sectors cannot be smaller than the new disk's"
        )
    opts += ["-S", str(sect)]
    if v is not None:
        opts += ["-F", str(v.fat_size)]
        if v.cluster_size and v.cluster_size >= sect:
            opts += ["-s", str(v.cluster_size // sect)]
        elif v.cluster_size:
            # Said, not left to mkfs.vfat: its default clusters for the size may be too few
            # for the FAT type (fat_minimum counts one sector per cluster).
            opts += ["-s", "1"]
            notes.append(f"its {v.cluster_size}-byte clusters become {sect}-byte ones")
        opts += ["-i", v.volume_id.replace("-", "")]
    if fs.label:
        opts += ["-n", fs.label]
    return opts, [], notes


def _btrfs(fs: Filesystem, sector_size: int, file_by_file: bool) -> Parts:
    opts = ["-f"]
    problems: list[str] = []
    notes: list[str] = []
    if fs.uuid:
        opts += ["-U", fs.uuid]
    if fs.label:
        opts += ["-L", fs.label]
    b = fs.btrfs
    if b is not None:
        if b.node_size:
            opts += ["-n", str(b.node_size)]
        if b.sector_size:
            sect = _fitted("sectors", b.sector_size, sector_size, file_by_file, problems, notes)
            opts += ["-s", str(sect)]
        for flag, profile in (("-d", b.data_profile), ("-m", b.metadata_profile)):
            if profile is None:
                continue
            if profile.lower() not in ("single", "dup"):
                problems.append(
                    f"its {profile} profile needs several devices; resurgo recreates "
                    "single-device btrfs only"
                )
            opts += [flag, profile.lower()]
        if b.features:
            opts += btrfs_feature_options(b.features)
    return opts, problems, notes


# The description keeps the superblock's flag names (dump-super); mkfs.btrfs has its own
# names, and enables some by default: those the saved filesystem lacks are turned off ("^").
# Flags not listed are implied by every mkfs (mixed_backref, big_metadata) or not chosen at
# mkfs time (compression, default_subvol, metadata_uuid, free_space_tree_valid).
BTRFS_MKFS_FEATURES = {
    "mixed_groups": "mixed-bg",
    "extended_iref": "extref",
    "raid56": "raid56",
    "skinny_metadata": "skinny-metadata",
    "no_holes": "no-holes",
    "raid1c34": "raid1c34",
}
BTRFS_MKFS_DEFAULTS = ("extref", "skinny-metadata", "no-holes")
# -R: btrfs-progs 6.2 takes free-space-tree only as a runtime feature (later ones take -R too).
BTRFS_RUNTIME_FEATURES = {"free_space_tree": "free-space-tree"}


def btrfs_feature_options(features: tuple[str, ...]) -> list[str]:
    """mkfs.btrfs -O/-R arguments that make exactly the saved superblock feature flags."""
    have = {f.lower() for f in features}
    on = [name for flag, name in BTRFS_MKFS_FEATURES.items() if flag in have]
    off = [f"^{name}" for name in BTRFS_MKFS_DEFAULTS if name not in on]
    runtime = [
        name if flag in have else f"^{name}" for flag, name in BTRFS_RUNTIME_FEATURES.items()
    ]
    return ["-O", ",".join(on + off), "-R", ",".join(runtime)]


def mkswap_options(sw: Swap) -> tuple[str, ...]:
    opts: list[str] = []
    if sw.uuid:
        opts += ["-U", sw.uuid]
    if sw.label:
        opts += ["-L", sw.label]
    if sw.page_size:
        opts += ["-p", str(sw.page_size)]
    return tuple(opts)
