"""describe: every probe, once, assembled into one Description."""

from __future__ import annotations

import datetime
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from resurgo import __version__, parttypes
from resurgo.fileformat.version import FORMAT_VERSION
from resurgo.model import (
    Command,
    Description,
    Filesystem,
    FormatInfo,
    FsType,
    OnFailure,
    Partition,
    Subvolume,
    SystemInfo,
    referrers,
)
from resurgo.probe import catalog, hardware, system
from resurgo.probe.state import StorageState
from resurgo.probe.storage import probe_storage


@dataclass(frozen=True)
class DescribeOptions:
    root: Path = Path("/")
    include_disks: tuple[str, ...] = ()
    exclude_disks: tuple[str, ...] = ()
    # Where the catalog is written (beside the description); None: no catalog.
    catalog_dir: Path | None = None


def describe(opts: DescribeOptions) -> tuple[Description, list[str]]:
    """The description of the system at opts.root, and the warnings met on the way."""
    storage = probe_storage(opts.root, opts.include_disks, opts.exclude_disks)
    warnings = list(storage.warnings)
    facts = system.probe_system(opts.root)
    roles = volume_roles(storage)
    esp_mount = _esp_mountpoint(storage, roles[2], opts.root)
    bootloader = system.probe_bootloader(
        opts.root, facts.firmware, storage.disks, storage.partitions, esp_mount, warnings
    )
    info = SystemInfo(
        hostname=facts.hostname,
        machine_id=facts.machine_id,
        architecture=facts.architecture,
        firmware=facts.firmware,
        os_release=facts.os_release,
        kernel=facts.kernel,
        bootloader=bootloader,
        system_volume=roles[0],
        boot_volume=roles[1],
        esp=roles[2],
    )
    # The restored system boots its own kernel: its module index, not the running one's.
    kernel_modules = hardware.KernelModules.load(opts.root, facts.kernel)
    drivers = hardware.probe_drivers(storage, modules=kernel_modules, warnings=warnings)
    modules = hardware.required_modules(storage, modules=kernel_modules)
    config = system.capture_config(opts.root, warnings)
    cat = None
    if opts.catalog_dir is not None:
        cat = catalog.write_catalog(opts.root, opts.catalog_dir, warnings=warnings)
    desc = Description(
        format=FormatInfo(
            version=FORMAT_VERSION,
            resurgo=__version__,
            created=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            host=socket.gethostname(),
        ),
        system=info,
        disks=tuple(storage.disks),
        partitions=tuple(storage.partitions),
        raid_arrays=tuple(storage.raid_arrays),
        luks_volumes=tuple(storage.luks_volumes),
        physical_volumes=tuple(storage.physical_volumes),
        volume_groups=tuple(storage.volume_groups),
        logical_volumes=tuple(storage.logical_volumes),
        filesystems=tuple(storage.filesystems),
        subvolumes=tuple(storage.subvolumes),
        swaps=tuple(storage.swaps),
        removable_devices=tuple(storage.removable_devices),
        drivers=tuple(drivers),
        modules=tuple(modules),
        config_files=tuple(config),
        catalog=cat,
        commands=tuple(restore_commands(storage.filesystems, storage.subvolumes)),
        unsupported=tuple(storage.unsupported),
    )
    return desc, warnings


def _mounted_at(filesystems: list[Filesystem], mountpoint: str) -> Filesystem | None:
    for fs in filesystems:
        if any(m.mountpoint == mountpoint for m in fs.mounts):
            return fs
    return None


def volume_roles(storage: StorageState) -> tuple[str | None, str | None, str | None]:
    """(system volume, boot volume, ESP) filesystem ids.

    The boot volume holds /boot, or is / when /boot is no filesystem of its own.
    The ESP is the vfat filesystem mounted at /boot/efi or /efi, else an
    unmounted one on a partition of the ESP type: an ESP is often not mounted.
    """
    system_fs = _mounted_at(storage.filesystems, "/")
    boot_fs = _mounted_at(storage.filesystems, "/boot") or system_fs
    esp = _mounted_at(storage.filesystems, "/boot/efi") or _mounted_at(storage.filesystems, "/efi")
    if esp is None:
        parts: dict[str, Partition] = {p.id: p for p in storage.partitions}
        for fs in storage.filesystems:
            part = parts.get(fs.device)
            if fs.type == FsType.VFAT and part is not None and parttypes.is_esp(part.type):
                esp = fs
                break
    return (
        system_fs.id if system_fs else None,
        boot_fs.id if boot_fs else None,
        esp.id if esp else None,
    )


def _esp_mountpoint(storage: StorageState, esp_id: str | None, root: Path) -> Path | None:
    for fs in storage.filesystems:
        if fs.id == esp_id and fs.mounts:
            return root / fs.mounts[0].mountpoint.lstrip("/")
    return None


def restore_commands(
    filesystems: Sequence[Filesystem], subvolumes: Sequence[Subvolume] = ()
) -> list[Command]:
    """The built-in restore program, once per mounted filesystem, parents before children.

    ``resurgo:restore ID MOUNTPOINT``: ID a filesystem, restored where it is mounted. A
    btrfs has one archive per subvolume (each is a tree of its own: a walk of one never
    enters another), so it gets one command for its top level (ID the filesystem) and one
    per subvolume (ID the subvolume), parents first; the MOUNTPOINT is where that one is
    mounted, and is left out for a subvolume that is not mounted (it is restored through
    the top level). Filesystems that cannot be recreated are skipped here: nothing could
    receive their data.
    """
    by_fs = referrers(subvolumes)
    mounted = [(m.mountpoint, fs) for fs in filesystems if fs.supported for m in fs.mounts[:1]]
    mounted.sort(key=lambda mf: (mf[0].count("/") - (mf[0] == "/"), mf[0]))
    steps: list[tuple[tuple[str, ...], str, OnFailure]] = []
    for mountpoint, fs in mounted:
        if fs.type != FsType.BTRFS:
            # FAT keeps no owners or modes of its own: the mount's options make them, and
            # the kernel refuses to change them; what the ESP holds the bootloader step
            # installs again, so a refusal there must not stop the recovery.
            on_failure = OnFailure.CONTINUE if fs.type == FsType.VFAT else OnFailure.ABORT
            steps.append(
                (
                    (fs.id, mountpoint),
                    f"restore the files of {mountpoint} from its archive",
                    on_failure,
                )
            )
            continue
        where = {m.subvolume: m.mountpoint for m in reversed(fs.mounts)}
        top = where.get(None)
        steps.append(
            (
                (fs.id, top) if top else (fs.id,),
                f"restore the top level of the btrfs of {mountpoint} from its archive",
                OnFailure.ABORT,
            )
        )
        for sv in sorted(by_fs.get(fs.id, []), key=lambda s: (s.path.count("/"), s.path)):
            at = where.get(sv.id)
            steps.append(
                (
                    (sv.id, at) if at else (sv.id,),
                    f"restore btrfs subvolume {sv.path}{f' ({at})' if at else ''} from its archive",
                    OnFailure.ABORT,
                )
            )
    return [
        Command(
            seq=10 * (n + 1),
            program="resurgo:restore",
            args=args,
            on_failure=on_failure,
            description=description,
        )
        for n, (args, description, on_failure) in enumerate(steps)
    ]
