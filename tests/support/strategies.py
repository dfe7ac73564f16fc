"""Hypothesis strategies that build VALID recovery descriptions.

Valid means every rule of resurgo.fileformat.rules holds: ids unique and well
formed, every reference names a record of the right kind, partitions fit their
disk and table and do not overlap, options match the filesystem type, command
sequence numbers ascend, and every value has its form and range (values.py):
UUIDs, labels, names, sizes, normal paths. Everything the rules leave free is
drawn freely: any unicode but control characters in text (labels, names), and
any text at all in a configuration file's content; integers up to 2**62.

Block devices are stacked in layers (disks -> partitions -> raid -> LUKS ->
physical volumes -> logical volumes), each layer built only on earlier ones,
so no device is built on itself.
"""

from __future__ import annotations

import base64
import string
from typing import Any, TypeVar

from hypothesis import strategies as st

from resurgo.fileformat import FORMAT_VERSION
from resurgo.model import (
    Bootloader,
    BootloaderKind,
    BtrfsOptions,
    Canary,
    CatalogRef,
    Command,
    ConfigFile,
    Description,
    Disk,
    Driver,
    DriverClass,
    Encoding,
    ExtOptions,
    Filesystem,
    Firmware,
    FormatInfo,
    FsType,
    InitramfsImage,
    LogicalVolume,
    LuksVolume,
    LvSegment,
    LvType,
    MadeAtRecovery,
    Module,
    Mount,
    OnFailure,
    OsRelease,
    Partition,
    PartitionKind,
    PartitionTable,
    PhysicalVolume,
    RaidArray,
    Rehearsal,
    RemovableDevice,
    Subvolume,
    Swap,
    SystemInfo,
    TableLabel,
    Unsupported,
    VfatOptions,
    VolumeGroup,
    VolumeState,
    XfsOptions,
    initramfs_paths,
)

T = TypeVar("T")

# Text a TOML writer must take care with, mixed into the free text.
NASTY = [
    "",
    " ",
    "trailing spaces   ",
    "line\n",
    "two\nlines\n",
    "\n\nleading newlines",
    "crlf\r\nline\r\n",
    "lone\rcarriage return",
    'quote " inside',
    '"""triple"""',
    "'''single triple'''",
    '""""four',
    'ends with a quote"',
    "back\\slash",
    "ends with a backslash\\",
    "backslash before newline\\\nnext",
    "tab\there",
    "nul\x00byte",
    "escape\x1b[0m",
    "del\x7f",
    "line\u2028separator",
    "# not a comment",
    '[[disks]]\nid = "fake"',
    "unicode: äöü ß 日本語 🙂",
]

# What a configuration file may hold: anything. Every other string reaches a command
# line, a path or a terminal, so holds no control character.
CONTENT: st.SearchStrategy[str] = st.one_of(st.text(), st.sampled_from(NASTY))
TEXT: st.SearchStrategy[str] = st.one_of(
    st.text(st.characters(blacklist_categories=("Cc", "Cs"))),
    st.sampled_from([t for t in NASTY if not any(ord(c) < 32 or c == "\x7f" for c in t)]),
)
SIZE = st.integers(min_value=0, max_value=2**62)
POSITIVE = st.integers(min_value=1, max_value=2**62)
ANY_INT = st.integers(min_value=-(2**62), max_value=2**62)
FLOAT = st.floats(allow_nan=False, allow_infinity=False)
# A path name: no slash, not empty, not . or ..
NAME = TEXT.map(lambda s: s.replace("/", "")).filter(lambda s: s not in ("", ".", ".."))
ABS_PATH = st.lists(NAME, max_size=4).map(lambda names: "/" + "/".join(names))
REL_PATH = st.lists(NAME, min_size=1, max_size=3).map("/".join)
# A subvolume is mounted with -o subvol=PATH: no comma in its path.
SUBVOLUME_PATH = st.lists(
    NAME.map(lambda s: s.replace(",", "")).filter(lambda s: s not in ("", ".", "..")),
    min_size=1,
    max_size=3,
).map("/".join)
HEX = "0123456789abcdefABCDEF"


def _hex(n: int) -> st.SearchStrategy[str]:
    return st.text(alphabet=HEX, min_size=n, max_size=n)


UUID = st.tuples(_hex(8), _hex(4), _hex(4), _hex(4), _hex(12)).map("-".join)
VFAT_ID = st.tuples(_hex(4), _hex(4)).map("-".join)
MD_UUID = st.tuples(_hex(8), _hex(8), _hex(8), _hex(8)).map(":".join)
MD_PATH = st.one_of(st.integers(0, 999).map(lambda n: f"/dev/md{n}"),
                    st.from_regex(r"/dev/md/[a-z][a-z0-9_:-]{0,15}", fullmatch=True))
_LVM_ALPHABET = string.ascii_letters + string.digits + "!#"
LVM_UUID = st.tuples(
    *(st.text(alphabet=_LVM_ALPHABET, min_size=n, max_size=n) for n in (6, 4, 4, 4, 4, 4, 6))
).map("-".join)
LVM_NAME = st.from_regex(r"\A[A-Za-z0-9+_.][A-Za-z0-9+_.\-]{0,20}\Z").filter(
    lambda s: s not in (".", "..")
)
DM_NAME = st.from_regex(r"\A[A-Za-z0-9_][A-Za-z0-9_.+:@\-]{0,20}\Z")
FEATURE = st.from_regex(r"\A[a-z0-9_\-]{1,12}\Z")
PROFILE = st.from_regex(r"\A[a-z0-9]{1,8}\Z")
GPT_ATTRS = st.from_regex(r"\A[A-Za-z0-9:, ]{0,20}\Z")
SECTOR = st.sampled_from([512, 1024, 2048, 4096])


def pow2(lo: int, hi: int) -> st.SearchStrategy[int]:
    return st.integers(min_value=lo.bit_length() - 1, max_value=hi.bit_length() - 1).map(
        lambda n: 2**n
    )


def label(limit: int) -> st.SearchStrategy[str]:
    """Text of at most limit bytes of UTF-8, cut at a character."""
    return TEXT.map(lambda s: s.encode()[:limit].decode(errors="ignore"))
OCTAL_MODE = st.from_regex(r"\A[0-7]{3,4}\Z")
HEX64 = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)
# What an id may hold after its unique head; "@" is left out so heads stay unique.
ID_TAIL = st.text(alphabet=string.ascii_letters + string.digits + "_.:+-", max_size=8)


def opt(strategy: st.SearchStrategy[T]) -> st.SearchStrategy[T | None]:
    return st.one_of(st.none(), strategy)


class Ids:
    """Fresh ids: a unique head (prefix + counter) and an arbitrary allowed tail after '@'."""

    def __init__(self, draw: Any) -> None:
        self.draw = draw
        self.n = 0

    def new(self, prefix: str) -> str:
        self.n += 1
        tail = self.draw(ID_TAIL)
        return f"{prefix}{self.n}" + (f"@{tail}" if tail else "")


def _pick(draw: Any, pool: list[str]) -> str:
    return str(draw(st.sampled_from(pool)))


def _picks(draw: Any, pool: list[str], min_size: int = 0, max_size: int = 3) -> tuple[str, ...]:
    if not pool:
        return ()
    return tuple(draw(st.lists(st.sampled_from(pool), min_size=min_size, max_size=max_size)))


def _spans(draw: Any, lo: int, hi: int, most: int) -> list[tuple[int, int]]:
    """Up to most disjoint [start, end) sector ranges with lo <= start < end <= hi."""
    most = min(most, (hi - lo) // 2)
    count = draw(st.integers(min_value=0, max_value=max(most, 0)))
    bounds = sorted(
        draw(
            st.lists(
                st.integers(min_value=lo, max_value=hi),
                min_size=2 * count,
                max_size=2 * count,
                unique=True,
            )
        )
    )
    return [(bounds[2 * k], bounds[2 * k + 1]) for k in range(count)]


@st.composite
def disk_with_partitions(draw: Any, ids: Ids) -> tuple[Disk, list[Partition]]:
    lss = draw(st.sampled_from([512, 4096]))
    pss = draw(st.sampled_from([s for s in (512, 1024, 4096, 65536) if s >= lss]))
    sectors = draw(st.integers(min_value=64, max_value=2**56 // lss))
    disk_id = ids.new("disk")
    label = draw(st.sampled_from([None, TableLabel.GPT, TableLabel.DOS]))
    table = None
    parts: list[Partition] = []
    if label is not None:
        lo, hi = 1, sectors - 1  # usable sectors, inclusive
        first = last = None
        if label == TableLabel.GPT and draw(st.booleans()):
            first = lo = draw(st.integers(min_value=1, max_value=sectors // 2))
        if label == TableLabel.GPT and draw(st.booleans()):
            last = hi = draw(st.integers(min_value=lo, max_value=sectors - 1))
        table_id = draw(UUID if label == TableLabel.GPT else _hex(8).map(lambda h: "0x" + h))
        table = PartitionTable(label=label, id=table_id, first_lba=first, last_lba=last)
        spans = _spans(draw, lo, hi + 1, 4)
        if label == TableLabel.GPT:
            numbers = draw(st.permutations(range(1, 129)))[: len(spans)]
            kinds = [PartitionKind.PRIMARY] * len(spans)
        else:
            numbers = draw(st.permutations(range(1, 5)))[: len(spans)]
            kinds = [PartitionKind.PRIMARY] * len(spans)
            if spans and draw(st.booleans()):
                kinds[draw(st.integers(min_value=0, max_value=len(spans) - 1))] = (
                    PartitionKind.EXTENDED
                )
        for (start, end), number, kind in zip(spans, numbers, kinds, strict=True):
            parts.append(draw(_partition(ids, disk_id, number, start, end, lss, kind, label)))
            if kind == PartitionKind.EXTENDED:
                # Logical partitions start after the extended one's first sector (its EBR).
                inner = _spans(draw, start + 1, end, 3)
                for k, (s, e) in enumerate(inner):
                    parts.append(
                        draw(
                            _partition(
                                ids, disk_id, 5 + k, s, e, lss, PartitionKind.LOGICAL, label
                            )
                        )
                    )
    disk = Disk(
        id=disk_id,
        path=draw(TEXT),
        size=sectors * lss,
        logical_sector_size=lss,
        physical_sector_size=pss,
        transport=draw(TEXT),
        rotational=draw(st.booleans()),
        removable=draw(st.booleans()),
        critical=draw(st.booleans()),
        wwn=draw(opt(TEXT)),
        serial=draw(opt(TEXT)),
        model=draw(opt(TEXT)),
        by_id=draw(opt(TEXT)),
        table=table,
    )
    return disk, parts


@st.composite
def _partition(
    draw: Any,
    ids: Ids,
    disk_id: str,
    number: int,
    start: int,
    end: int,
    sector_size: int,
    kind: PartitionKind,
    label: TableLabel,
) -> Partition:
    return Partition(
        id=ids.new("part"),
        disk=disk_id,
        number=number,
        start=start,
        size=end - start,
        sector_size=sector_size,
        type=draw(UUID if label == TableLabel.GPT else st.sampled_from(["83", "5", "c", "fd"])),
        kind=kind,
        path=draw(opt(TEXT)),
        uuid=draw(opt(UUID)),
        name=draw(opt(TEXT)),
        attrs=draw(opt(GPT_ATTRS)),
        bootable=draw(st.booleans()),
    )


@st.composite
def _fs_options(draw: Any, fs_type: FsType) -> dict[str, Any]:
    if fs_type in (FsType.EXT2, FsType.EXT3, FsType.EXT4):
        ext = ExtOptions(
            block_size=draw(pow2(1024, 65536)),
            inode_size=draw(pow2(128, 65536)),
            features=tuple(draw(st.lists(FEATURE, max_size=3))),
            inode_count=draw(opt(st.integers(min_value=1, max_value=2**32 - 1))),
            reserved_blocks_percent=draw(opt(st.floats(min_value=0, max_value=50))),
            journal=draw(st.booleans()),
        )
        return {"ext": draw(opt(st.just(ext)))}
    if fs_type == FsType.XFS:
        flags = st.none() | st.booleans()
        xfs = XfsOptions(
            block_size=draw(pow2(512, 65536)),
            sector_size=draw(pow2(512, 32768)),
            inode_size=draw(pow2(256, 2048)),
            ag_count=draw(opt(st.integers(min_value=1, max_value=2**32 - 1))),
            log_size=draw(opt(POSITIVE)),
            reflink=draw(flags),
            crc=draw(flags),
            finobt=draw(flags),
            sparse=draw(flags),
            bigtime=draw(flags),
            inobtcount=draw(flags),
            rmapbt=draw(flags),
        )
        return {"xfs": draw(opt(st.just(xfs)))}
    if fs_type == FsType.VFAT:
        vfat = VfatOptions(
            fat_size=draw(st.sampled_from([12, 16, 32])),
            volume_id=draw(VFAT_ID),
            sector_size=draw(opt(pow2(512, 32768))),
            cluster_size=draw(opt(pow2(512, 2**21))),
        )
        return {"vfat": draw(opt(st.just(vfat)))}
    if fs_type == FsType.BTRFS:
        btrfs = BtrfsOptions(
            node_size=draw(opt(pow2(4096, 65536))),
            sector_size=draw(opt(pow2(4096, 65536))),
            data_profile=draw(opt(PROFILE)),
            metadata_profile=draw(opt(PROFILE)),
            features=tuple(draw(st.lists(FEATURE, max_size=3))),
            default_subvolume=draw(st.integers(min_value=5, max_value=2**62)),
        )
        return {"btrfs": draw(opt(st.just(btrfs)))}
    return {}


_LABEL_BYTES = {
    FsType.EXT2: 16,
    FsType.EXT3: 16,
    FsType.EXT4: 16,
    FsType.XFS: 12,
    FsType.VFAT: 11,
}


def _fs_uuid(fs_type: FsType) -> st.SearchStrategy[str]:
    if fs_type == FsType.VFAT:
        return VFAT_ID
    return TEXT if fs_type == FsType.OTHER else UUID


@st.composite
def descriptions(draw: Any) -> Description:
    ids = Ids(draw)
    disks: list[Disk] = []
    partitions: list[Partition] = []
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        disk, parts = draw(disk_with_partitions(ids))
        disks.append(disk)
        partitions.extend(parts)
    block = [d.id for d in disks] + [p.id for p in partitions]

    raid_arrays = []
    if block:
        for _ in range(draw(st.integers(min_value=0, max_value=2))):
            raid_arrays.append(
                RaidArray(
                    id=ids.new("md"),
                    path=draw(MD_PATH),
                    level=draw(TEXT),
                    metadata=draw(TEXT),
                    uuid=draw(MD_UUID),
                    members=_picks(draw, block, min_size=1),
                    size=draw(POSITIVE),
                    name=draw(opt(TEXT)),
                    chunk=draw(opt(POSITIVE)),
                    spares=_picks(draw, block),
                    layout=draw(opt(TEXT)),
                )
            )
    block += [r.id for r in raid_arrays]

    luks_volumes = []
    if block:
        for _ in range(draw(st.integers(min_value=0, max_value=2))):
            luks_volumes.append(
                LuksVolume(
                    id=ids.new("luks"),
                    device=_pick(draw, block),
                    version=draw(st.sampled_from([1, 2])),
                    uuid=draw(UUID),
                    cipher=draw(TEXT),
                    key_size=draw(st.integers(min_value=8, max_value=4096)),
                    name=draw(opt(DM_NAME)),
                    pbkdf=draw(opt(TEXT)),
                    hash=draw(opt(TEXT)),
                    label=draw(opt(TEXT)),
                    subsystem=draw(opt(TEXT)),
                    sector_size=draw(opt(SECTOR)),
                    size=draw(opt(SIZE)),
                )
            )
    block += [lk.id for lk in luks_volumes]

    volume_groups = [
        VolumeGroup(
            id=ids.new("vg"),
            name=draw(LVM_NAME),
            uuid=draw(LVM_UUID),
            extent_size=draw(POSITIVE),
            size=draw(SIZE),
        )
        for _ in range(draw(st.integers(min_value=0, max_value=2)))
    ]
    vg_ids = [vg.id for vg in volume_groups]
    physical_volumes = []
    if block and vg_ids:
        for _ in range(draw(st.integers(min_value=0, max_value=3))):
            physical_volumes.append(
                PhysicalVolume(
                    id=ids.new("pv"),
                    device=_pick(draw, block),
                    uuid=draw(LVM_UUID),
                    volume_group=_pick(draw, vg_ids),
                    size=draw(POSITIVE),
                )
            )
    pv_ids = [pv.id for pv in physical_volumes]
    logical_volumes: list[LogicalVolume] = []
    if vg_ids:
        for _ in range(draw(st.integers(min_value=0, max_value=3))):
            segments = tuple(
                LvSegment(
                    start_extent=draw(SIZE),
                    extent_count=draw(POSITIVE),
                    type=draw(TEXT),
                    stripes=draw(st.integers(min_value=1, max_value=128)),
                    stripe_size=draw(opt(POSITIVE)),
                    devices=_picks(draw, pv_ids),
                )
                for _ in range(draw(st.integers(min_value=0, max_value=2)))
            )
            earlier = [lv.id for lv in logical_volumes]
            logical_volumes.append(
                LogicalVolume(
                    id=ids.new("lv"),
                    volume_group=_pick(draw, vg_ids),
                    name=draw(LVM_NAME),
                    uuid=draw(LVM_UUID),
                    size=draw(POSITIVE),
                    type=draw(st.sampled_from(LvType)),
                    path=draw(opt(TEXT)),
                    pool=draw(opt(st.sampled_from(earlier))) if earlier else None,
                    segments=segments,
                )
            )
    block += [lv.id for lv in logical_volumes]

    filesystems: list[Filesystem] = []
    subvolumes: list[Subvolume] = []
    if block:
        for _ in range(draw(st.integers(min_value=0, max_value=4))):
            fs_id = ids.new("fs")
            fs_type = draw(st.sampled_from(FsType))
            own_subvols = []
            if fs_type == FsType.BTRFS:
                own_subvols = [
                    Subvolume(
                        id=ids.new("subvol"),
                        filesystem=fs_id,
                        path=draw(SUBVOLUME_PATH),
                        subvol_id=draw(st.integers(min_value=256, max_value=2**62)),
                        parent_id=draw(st.integers(min_value=5, max_value=2**62)),
                        uuid=draw(opt(UUID)),
                        readonly=draw(st.booleans()),
                    )
                    for _ in range(draw(st.integers(min_value=0, max_value=3)))
                ]
                subvolumes.extend(own_subvols)
            sv_ids = [sv.id for sv in own_subvols]
            mounts = tuple(
                Mount(
                    mountpoint=draw(ABS_PATH),
                    options=draw(TEXT),
                    subvolume=draw(opt(st.sampled_from(sv_ids))) if sv_ids else None,
                )
                for _ in range(draw(st.integers(min_value=0, max_value=3)))
            )
            state = VolumeState(
                mounted=draw(st.booleans()),
                used_bytes=draw(opt(SIZE)),
                total_bytes=draw(opt(SIZE)),
                inodes_used=draw(opt(SIZE)),
                inodes_total=draw(opt(SIZE)),
            )
            filesystems.append(
                Filesystem(
                    id=fs_id,
                    device=_pick(draw, block),
                    type=fs_type,
                    uuid=draw(opt(_fs_uuid(fs_type))),
                    label=draw(opt(label(_LABEL_BYTES.get(fs_type, 255)))),
                    type_name=draw(opt(TEXT)),
                    supported=False if fs_type == FsType.OTHER else draw(st.booleans()),
                    size=draw(opt(POSITIVE)),
                    mounts=mounts,
                    state=draw(opt(st.just(state))),
                    **draw(_fs_options(fs_type)),
                )
            )
    fs_ids = [fs.id for fs in filesystems]

    swaps = []
    for _ in range(draw(st.integers(min_value=0, max_value=2))):
        as_file = bool(fs_ids) and (not block or draw(st.booleans()))
        if not as_file and not block:
            break
        swaps.append(
            Swap(
                id=ids.new("swap"),
                size=draw(POSITIVE),
                device=None if as_file else _pick(draw, block),
                file=draw(ABS_PATH) if as_file else None,
                filesystem=_pick(draw, fs_ids) if as_file else None,
                uuid=draw(opt(UUID)),
                label=draw(opt(label(16))),
                page_size=draw(opt(pow2(4096, 65536))),
                priority=draw(opt(st.integers(min_value=-(2**31), max_value=32767))),
                active=draw(st.booleans()),
            )
        )

    disk_ids = [d.id for d in disks]
    part_ids = [p.id for p in partitions]
    system = SystemInfo(
        hostname=draw(TEXT),
        machine_id=draw(TEXT),
        architecture=draw(TEXT),
        firmware=draw(st.sampled_from(Firmware)),
        os_release=OsRelease(id=draw(TEXT), version_id=draw(TEXT), pretty_name=draw(TEXT)),
        kernel=draw(TEXT),
        bootloader=Bootloader(
            kind=draw(st.sampled_from(BootloaderKind)),
            disks=_picks(draw, disk_ids),
            bios_boot_partition=draw(opt(st.sampled_from(part_ids))) if part_ids else None,
            efi_path=draw(opt(TEXT)),
        ),
        system_volume=draw(opt(st.sampled_from(fs_ids))) if fs_ids else None,
        boot_volume=draw(opt(st.sampled_from(fs_ids))) if fs_ids else None,
        esp=draw(opt(st.sampled_from(fs_ids))) if fs_ids else None,
    )
    removable = [
        RemovableDevice(
            id=ids.new("removable"),
            path=draw(TEXT),
            size=draw(SIZE),
            transport=draw(TEXT),
            wwn=draw(opt(TEXT)),
            serial=draw(opt(TEXT)),
            model=draw(opt(TEXT)),
        )
        for _ in range(draw(st.integers(min_value=0, max_value=2)))
    ]
    drivers = [
        Driver(
            id=ids.new("drv"),
            device_class=draw(st.sampled_from(DriverClass)),
            bus=draw(TEXT),
            address=draw(TEXT),
            modalias=draw(opt(TEXT)),
            vendor=draw(opt(TEXT)),
            device=draw(opt(TEXT)),
            description=draw(opt(TEXT)),
            module=draw(opt(TEXT)),
            dependencies=tuple(draw(st.lists(TEXT, max_size=3))),
        )
        for _ in range(draw(st.integers(min_value=0, max_value=3)))
    ]
    modules = [
        Module(
            name=draw(TEXT),
            reason=draw(TEXT),
            dependencies=tuple(draw(st.lists(TEXT, max_size=3))),
            builtin=draw(st.booleans()),
        )
        for _ in range(draw(st.integers(min_value=0, max_value=3)))
    ]
    config_files = []
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        encoding = draw(st.sampled_from(Encoding))
        content = (
            base64.b64encode(draw(st.binary())).decode()
            if encoding == Encoding.BASE64
            else draw(CONTENT)
        )
        config_files.append(
            ConfigFile(
                id=ids.new("cfg"),
                path=draw(ABS_PATH),
                content=content,
                encoding=encoding,
                mode=draw(OCTAL_MODE),
                sha256=draw(opt(TEXT)),
            )
        )
    catalog = draw(
        opt(
            st.builds(
                CatalogRef,
                path=REL_PATH,
                sha256=HEX64,
                files=SIZE,
                packages=SIZE,
                package_manager=TEXT,
            )
        )
    )
    seqs = sorted(draw(st.sets(ANY_INT, max_size=4)))
    commands = [
        Command(
            seq=seq,
            program=draw(TEXT.filter(bool)),
            args=tuple(draw(st.lists(TEXT, max_size=3))),
            on_failure=draw(st.sampled_from(OnFailure)),
            description=draw(opt(TEXT)),
        )
        for seq in seqs
    ]
    unsupported = [
        Unsupported(
            id=ids.new("unsupported"),
            kind=draw(TEXT),
            path=draw(TEXT),
            reason=draw(TEXT),
            details=tuple(draw(st.lists(TEXT, max_size=3))),
        )
        for _ in range(draw(st.integers(min_value=0, max_value=2)))
    ]
    unit_name = st.tuples(
        st.text(alphabet=string.ascii_letters + string.digits + ":_.\\-", min_size=1,
                max_size=20),
        st.sampled_from(("service", "mount", "socket", "timer")),
    ).map(".".join)
    rehearsal = draw(opt(st.builds(
        Rehearsal,
        canary=opt(st.builds(Canary, path=ABS_PATH, sha256=HEX64)),
        failed_units=opt(st.lists(unit_name, max_size=3).map(tuple)),
    )))
    release = st.text(alphabet=string.ascii_letters + string.digits + "._+~-", max_size=30)
    made = draw(opt(st.builds(MadeAtRecovery, initramfs=st.lists(
        st.tuples(st.sampled_from(string.digits), release, st.booleans()), max_size=2,
        unique_by=lambda t: t[0] + t[1],
    ).map(lambda images: tuple(
        InitramfsImage(k, initramfs_paths(k)[dracut])
        for k, dracut in ((digit + rest, int(d)) for digit, rest, d in images)
    )))))
    return Description(
        format=FormatInfo(
            version=FORMAT_VERSION,
            resurgo=draw(TEXT),
            created=draw(TEXT),
            host=draw(TEXT),
        ),
        system=system,
        disks=tuple(disks),
        partitions=tuple(draw(st.permutations(partitions))),
        raid_arrays=tuple(raid_arrays),
        luks_volumes=tuple(luks_volumes),
        physical_volumes=tuple(physical_volumes),
        volume_groups=tuple(volume_groups),
        logical_volumes=tuple(logical_volumes),
        filesystems=tuple(filesystems),
        subvolumes=tuple(subvolumes),
        swaps=tuple(swaps),
        removable_devices=tuple(removable),
        drivers=tuple(drivers),
        modules=tuple(modules),
        config_files=tuple(config_files),
        catalog=catalog,
        commands=tuple(commands),
        unsupported=tuple(unsupported),
        rehearsal=rehearsal,
        made_at_recovery=made,
    )
