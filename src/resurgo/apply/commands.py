"""The command line of each destructive action, built from the plan's parameters alone.

Pure: no I/O, so every argv is unit-tested. Secrets never appear here: cryptsetup reads
the key from stdin (``--key-file -``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from resurgo.errors import OperationFailed
from resurgo.model import LvType
from resurgo.plan.model import (
    LuksFormatParams,
    LuksOpenParams,
    LvParams,
    MdParams,
    MkfsParams,
    MkswapParams,
    MountParams,
    PvParams,
    VgParams,
)

# Levels whose redundancy is a copy, or that have none: see md_create.
ASSUME_CLEAN_LEVELS = frozenset({"raid1", "raid10", "raid0", "linear", "1", "10", "0"})
# Parity levels and how many of their stripes hold parity.
PARITY = {LvType.RAID4: 1, LvType.RAID5: 1, LvType.RAID6: 2}


def md_create(p: MdParams) -> list[str]:
    """mdadm --create with the saved UUID, name, level, metadata and geometry.

    --assume-clean skips the initial resync. That is safe where redundancy is a copy
    (raid1, raid10) or absent (raid0, linear): the new array holds no data yet, and every
    block written later goes to all copies through md, so what was never written is never
    read. It is NOT safe for parity levels (raid4/5/6): a partial-stripe write updates the
    parity from the old parity (read-modify-write), so the parity of never-synced stripes
    would stay wrong and a degraded array would rebuild garbage. Those resync in the
    background; the array is usable meanwhile. --run: never ask (no terminal is used).
    """
    level = p.level.lower()
    argv = [
        "mdadm",
        "--create",
        p.device,
        "--run",
        f"--metadata={p.metadata}",
        f"--level={level}",
        f"--raid-devices={len(p.members)}",
        f"--uuid={p.uuid}",
    ]
    if level in ASSUME_CLEAN_LEVELS:
        argv.append("--assume-clean")
    # 0.90 superblocks have no name.
    if p.name and not p.metadata.startswith("0"):
        argv.append(f"--name={p.name}")
    if p.chunk:
        argv.append(f"--chunk={p.chunk // 1024}K")
    if p.layout:
        argv.append(f"--layout={p.layout}")
    if p.spares:
        argv.append(f"--spare-devices={len(p.spares)}")
    return argv + list(p.members) + list(p.spares)


def md_assemble(p: MdParams) -> list[str]:
    """The array from its planned members alone: no configuration file (the rescue's, or
    one naming the old disks' arrays) adds devices."""
    return ["mdadm", "--assemble", p.device, "--run", "--config=none", f"--uuid={p.uuid}",
            *p.members, *p.spares]


def luks_format(p: LuksFormatParams) -> list[str]:
    argv = [
        "cryptsetup",
        "luksFormat",
        "--batch-mode",
        f"--type=luks{p.version}",
        f"--uuid={p.uuid}",
        f"--cipher={p.cipher}",
        f"--key-size={p.key_size}",
        "--key-file=-",
    ]
    if p.hash:
        argv.append(f"--hash={p.hash}")
    if p.version >= 2:
        # LUKS1 headers have no label, subsystem or sector size, and only PBKDF2.
        if p.pbkdf:
            argv.append(f"--pbkdf={p.pbkdf}")
        if p.label:
            argv.append(f"--label={p.label}")
        if p.subsystem:
            argv.append(f"--subsystem={p.subsystem}")
        if p.sector_size:
            argv.append(f"--sector-size={p.sector_size}")
    return [*argv, p.device]


def luks_open(p: LuksOpenParams) -> list[str]:
    return ["cryptsetup", "open", "--type=luks", "--key-file=-", p.device, p.name]


def pv_create(p: PvParams) -> list[str]:
    # --norestorefile: the saved UUID without a metadata backup to restore from.
    return ["lvm", "pvcreate", "--yes", "--uuid", p.uuid, "--norestorefile", p.device]


def vg_create(p: VgParams) -> list[str]:
    return [
        "lvm",
        "vgcreate",
        "--yes",
        "--physicalextentsize",
        f"{p.extent_size // 1024}k",
        p.name,
        *p.devices,
    ]


def lv_create(p: LvParams) -> list[str]:
    """lvcreate with the saved name and type; LVM chooses new LV UUIDs (it cannot take one)."""
    argv = ["lvm", "lvcreate", "--yes", "--name", p.name]
    if p.type == LvType.THIN:
        size = p.virtual_size if p.virtual_size is not None else 0
        return [*argv, "--type", "thin", "--virtualsize", f"{size}b", "--thinpool",
                str(p.pool), p.vg_name]
    argv += ["--extents", str(p.extents)]
    if p.type == LvType.THIN_POOL:
        argv += ["--type", "thin-pool"]
    elif p.type == LvType.STRIPED or (p.type == LvType.LINEAR and p.stripes > 1):
        argv += ["--stripes", str(p.stripes)]
        if p.stripe_size:
            argv += ["--stripesize", f"{p.stripe_size // 1024}k"]
    elif p.type in (LvType.RAID1, LvType.MIRROR):
        argv += ["--type", "raid1", "--mirrors", str(max(1, p.stripes - 1))]
    elif p.type == LvType.RAID10:
        argv += ["--type", "raid10", "--mirrors", "1", "--stripes", str(max(2, p.stripes // 2))]
    elif p.type in PARITY:
        data = max(1, p.stripes - PARITY[p.type]) if p.stripes > 1 else 2
        argv += ["--type", str(p.type), "--stripes", str(data)]
        if p.stripe_size:
            argv += ["--stripesize", f"{p.stripe_size // 1024}k"]
    elif p.type == LvType.RAID0:
        argv += ["--type", "raid0", "--stripes", str(max(2, p.stripes))]
        if p.stripe_size:
            argv += ["--stripesize", f"{p.stripe_size // 1024}k"]
    return [*argv, p.vg_name, *p.devices]


# A device path as an LVM filter may name it: nothing that could end the pattern or the
# configuration string.
_FILTER_SAFE = re.compile(r"/dev/[A-Za-z0-9_+.:/-]+")


def lvm_scoped(argv: list[str], devices: Sequence[str]) -> list[str]:
    """An lvm command (["lvm", SUBCOMMAND, ...]) that sees devices alone: the physical
    volumes of the plan. Old disks still attached may hold physical volumes of the same
    UUIDs and groups of the same names; LVM must neither refuse for them nor use them.
    The filter (and global_filter, which lvm.conf may set) accepts each device and rejects
    the rest; the devices file, where lvm.conf enables one, is not read. Raises
    OperationFailed for a device path a filter cannot name safely."""
    for d in devices:
        if not _FILTER_SAFE.fullmatch(d):
            raise OperationFailed(f"refusing to name {d!r} in an LVM filter")
    # A dot as a class of its own: a backslash would be taken by the string's unescaping.
    accept = "".join(f'"a|^{d.replace(".", "[.]")}$|", ' for d in devices)
    rules = f'[ {accept}"r|.*|" ]'
    config = f"devices {{ filter = {rules} global_filter = {rules} use_devicesfile = 0 }}"
    return [*argv[:2], "--config", config, *argv[2:]]


def vg_activate(vg_name: str) -> list[str]:
    return ["lvm", "vgchange", "--activate", "y", vg_name]


def mkfs(p: MkfsParams) -> list[str]:
    return [p.program, *p.options, p.device]


def mkswap(p: MkswapParams) -> list[str]:
    return ["mkswap", *p.options, p.device]


def mount(p: MountParams) -> list[str]:
    argv = ["mount", "-t", p.type]
    if p.options:
        argv += ["-o", ",".join(p.options)]
    return [*argv, p.device, p.target]
