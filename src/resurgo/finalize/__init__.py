"""Finalize: make the restored system boot, and find its network, on the hardware it now
runs on. The last step of recover, run once the data is restored into the mounted tree.

    finalize(desc, plan, root, options) -> FinalizeReport

In order, each change recorded with its reason:
  1. storage configuration (fstab, crypttab, mdadm.conf, /etc/default/grub and grub.d,
     initramfs resume, /etc/kernel/cmdline, systemd-boot entries): every device named by
     an identity that changed (a UUID mkfs could not keep, a kernel name that moved, a
     by-id link to a disk that is gone) is renamed by what blkid -p reads now;
  2. network configuration (ifupdown, NetworkManager, systemd-networkd, netplan,
     70-persistent-net.rules): saved interfaces mapped to this machine's by --net-map,
     then by MAC, then in PCI order; then the initramfs images the set left out
     (save --initramfs rebuild: the description's [made_at_recovery]) made with the
     restored system's generator, in a chroot;
  3. drivers: the modules between this machine's target disks and its buses, checked in
     the restored initramfs of the installed kernel; only a gap pays for a rebuild, in a
     chroot, after naming the modules in the generator's configuration, or a file of
     step 1 the initramfs carries a copy of (crypttab, mdadm.conf, resume): the root's
     LUKS and md are unlocked and assembled from those copies. One rebuild per kernel
     whatever the reasons; when the copies are all it needs (initramfs-tools, no driver
     lacking), they are renamed in the image instead (imagecopies: seconds, not the
     minutes of a rebuild);
  4. bootloader: the one the description names, onto the disks it now lives on (GRUB for
     BIOS, GRUB for UEFI with an NVRAM entry and the removable path, systemd-boot), then
     grub.cfg regenerated and its root= checked to be a UUID; or kept as restored when it
     boots every installed kernel with its image and neither the identities it can name
     nor anything grub-mkconfig reads changed (GRUB finds /boot by UUID: a new disk or
     bus changes only its hints);
  5. the report, also left in the restored system as /var/log/resurgo/recovery-*.log.

With options.dry_run nothing is written and nothing is run that changes anything;
preview() computes the file rewrites from the description's own copy of the
configuration, before anything is restored (for plan display), and the initramfs rebuild
step 3 will make: planned when a rewritten file is carried by the initramfs of the
generator that configuration names, if-needed when this machine's disks need drivers
the saved system's disks did not use (the restored image is looked inside only once it
is there).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from resurgo.errors import PreconditionFailed
from resurgo.finalize import identity
from resurgo.finalize.model import (
    CommandRecord,
    FileChange,
    FinalizeOptions,
    FinalizeReport,
    InitramfsCheck,
    LineChange,
    NicPair,
    Rewrite,
    StepStatus,
)
from resurgo.finalize.netmap import parse_net_map
from resurgo.finalize.report import data, text
from resurgo.finalize.steps import Finalizer
from resurgo.finalize.tree import RootTree, SavedTree
from resurgo.model import Description
from resurgo.plan.model import Plan

__all__ = [
    "CommandRecord",
    "FileChange",
    "FinalizeOptions",
    "FinalizeReport",
    "InitramfsCheck",
    "LineChange",
    "NicPair",
    "Rewrite",
    "StepStatus",
    "data",
    "finalize",
    "parse_net_map",
    "preview",
    "text",
]


def finalize(
    desc: Description,
    plan: Plan,
    root: Path,
    options: FinalizeOptions | None = None,
    announce: Callable[[str], None] | None = None,
) -> FinalizeReport:
    """Finalize the system restored (and mounted) at root. Never raises for a failing
    command: the report lists it under errors (report.ok is False). ``announce`` is told
    a line as each command starts (the report comes when all is done).

    Raises BadInput for a --net-map naming no interface of this machine (before any
    change), PreconditionFailed when root is not a directory.
    """
    opts = options or FinalizeOptions()
    if not root.is_dir():
        raise PreconditionFailed(f"{root} is not a directory: nothing restored to finalize")
    warnings: list[str] = []
    ids = identity.planned(desc, plan)
    ids = identity.probe(ids, warnings=warnings)
    ids = replace(ids, links=identity.current_links(ids))
    f = Finalizer(desc, plan, RootTree(root), root, opts, ids, announce)
    f.warnings.extend(warnings)
    return _run(f)


def preview(
    desc: Description, plan: Plan, options: FinalizeOptions | None = None
) -> FinalizeReport:
    """What finalize will rewrite, from the configuration the description carries and the
    identities the plan gives: nothing is read from the disks, nothing written or run."""
    opts = replace(options or FinalizeOptions(), dry_run=True)
    ids = identity.planned(desc, plan)
    f = Finalizer(desc, plan, SavedTree(desc.config_files), None, opts, ids)
    return _run(f)


def _run(f: Finalizer) -> FinalizeReport:
    opts = f.options
    boot_before = f.boot_state()
    try:
        # The net map is checked first: a typo there must stop before any change.
        if opts.network:
            f.check_net_map()
        with f.step("storage configuration"):
            f.rewrite_storage()
        if opts.network:
            with f.step("network"):
                f.map_network()
        if f.desc.initramfs_made_at_recovery():
            with f.step("initramfs made"):
                f.make_left_out_images()
        if opts.drivers:
            with f.step("drivers"):
                f.check_drivers()
        if opts.bootloader:
            with f.step("bootloader"):
                f.install_bootloader()
        else:
            with f.step("grub.cfg"):
                f.fix_grub_cfg_text()
    finally:
        f.close()
    f.note_regenerated(boot_before)
    log = f.write_log()
    return f.report(log=log)
