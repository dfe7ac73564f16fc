"""The recovery planner: saved description + actual disks -> a Plan. Pure: it writes nothing.

make_plan() matches saved disks to actual ones (match), fits the layouts to them
(fit, distribute, sizes), lists the actions in dependency order (actions), checks
the preconditions (checks), lists the description's commands with where each writes
(commands), and hashes the result (render; finalize's part is added by
render.with_finalize once its preview is known). Every failing precondition is listed,
not just the first. It reads nothing: the caller passes the actual disks (probe.actual
reads them).

The policies, in one place:
  - matching: --map first, then WWN, then serial; then the best assignment by
    (fits, matched, needs no shrinking, same size, same bus); the order of names only
    pairs disks that are otherwise alike, never picks which disk stays untouched --
    that is an ambiguous match, a failing precondition listing the candidates.
    Never candidates: the disk of the running system or its medium, of the recovery
    set, and a disk that was removable when saved (by WWN/serial, else model + size);
    without --target also removable and loop disks.
  - a saved disk left without an actual disk: a failing precondition when it held a
    mounted filesystem (or is marked critical), otherwise a warning and it is left out;
    md arrays and volume groups reaching onto it are left out with it.
  - sizes are bytes; every partition start is aligned to 1 MiB and counted in the
    target's sectors; GPT keeps 1 + 16 KiB of entries free at the end; the saved free
    space after the last partition is kept when the disk is larger.
  - larger disk: the extra goes to the partition (or LV) holding the system volume, else
    the last resizable one; --grow proportional spreads it over all resizable ones.
    ESP, separate /boot, BIOS boot, swap, vfat and unknown content keep their size.
  - smaller disk: the saved free space, then the gaps, then resizable partitions shrink in
    proportion to their room, never below used bytes + 10 % + 64 MiB (unknown used
    bytes: never below the saved size), nor below mkfs's minimum (xfs 300 MiB, btrfs
    114 MiB, ext 2048 blocks with a journal, FAT32 65525 clusters: 33 MiB at 512-byte
    and 257 MiB at 4096-byte sectors, swap 10 pages). The margin only binds when shrinking.
  - identities (plan.identities): a saved identity also seen on a disk outside the
    targets is kept where nothing refuses it (XFS: mounted with nouuid), made anew where
    tools or the kernel would (btrfs fsid, PV and md UUIDs; finalize rewrites what names
    it), and a name in use there (an active VG, an open mapping, an assembled array) is
    a failing precondition; --new-identities makes every one anew.
  - sector sizes: ext or xfs blocks (btrfs sectors) smaller than the new sectors are made
    as large as the sectors when resurgo restores the filesystem file by file (a note says
    so), a failing precondition otherwise (its content may be an image); a FAT or xfs with
    smaller sectors is recreated with the new ones (a note).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from resurgo.machine import ActualDisk
from resurgo.model import Description, Disk, Filesystem
from resurgo.plan import actions, checks, commands, filesystems, fit, identities, match
from resurgo.plan.distribute import Shortfall
from resurgo.plan.layers import Layers
from resurgo.plan.model import (
    Check,
    DiskLayout,
    DiskMatch,
    FittedVolume,
    GrowPolicy,
    Plan,
    PlanOptions,
    PreconditionFailure,
    VolumeKind,
)
from resurgo.plan.render import plan_hash
from resurgo.plan.sizes import Sizer, pv_extents
from resurgo.units import human

__all__ = ["GrowPolicy", "Plan", "PlanOptions", "make_plan"]


def make_plan(
    desc: Description, actual: Sequence[ActualDisk], options: PlanOptions
) -> Plan:
    """The plan to recreate desc's storage on the actual disks.

    Raises BadInput for what a person typed wrong (a --map naming no saved disk); every
    problem of the machine is a PreconditionFailure in the plan.
    """
    opts = options
    layers = Layers(desc)

    def min_size(disk: Disk, lss: int) -> int:
        return fit.minimum_size(layers, Sizer(layers, {disk.id: lss}), disk, lss)

    m = match.match(desc, layers, actual, opts, min_size)
    failures = list(m.failures)
    warnings = list(m.warnings)
    notes = list(m.notes)
    matched = {sid: a for sid, (a, _) in m.matches.items()}
    # Identities seen on the disks left alone: decided before anything else is planned, the
    # layout made with what was decided.
    ids = identities.decide(layers, matched, actual, new_identities=opts.new_identities,
                            machine=opts.machine)
    warnings.extend(ids.warnings)
    if ids.new_values():
        layers = Layers(identities.applied(desc, ids.new_values()))
    failures.extend(identities.in_use(layers, matched, actual))
    sizer = Sizer(layers, {sid: a.logical_sector_size for sid, a in matched.items()})

    layouts: dict[str, DiskLayout] = {}
    base: dict[str, int] = {}
    for sid in sorted(matched):
        a = matched[sid]
        f = fit.fit_disk(
            layers, sizer, layers.disks[sid], a.path, a.size, a.logical_sector_size, opts.grow
        )
        if f.layout is None:
            failures.append(_too_small(layers, a, f))
            continue
        layouts[sid] = f.layout
        base.update(f.sizes)
        notes.extend(_fixed_notes(f.layout))
    stack = fit.Stack(layers, sizer, opts.grow, base)

    for vg in desc.volume_groups:
        g = stack.group(vg.id)
        if g is not None and g.shortfall is not None:
            failures.append(
                PreconditionFailure(
                    Check.TARGET_TOO_SMALL,
                    vg.id,
                    f"volume group {vg.name} gets {human(g.capacity)}, "
                    f"{human(g.shortfall.missing)} less than its volumes need",
                )
            )
            stack.groups[vg.id] = None

    failures.extend(_unmatched(layers, m.unmatched, warnings))
    builder = actions.Builder(layers, sizer, stack, matched, layouts, opts.root, ids.nouuid)
    volumes = _volumes(layers, stack, builder)
    for fs in desc.filesystems:
        size = stack.after(fs.device)
        if size is None or not fs.supported:
            continue
        saved = fs.size or layers.original_size(fs.device)
        how = filesystems.recreate(fs, size, sizer.sector_size(fs.device), saved,
                                   file_by_file=fs.id in layers.restored_by_file)
        for problem in how.problems:
            failures.append(
                PreconditionFailure(
                    Check.FILESYSTEM,
                    fs.id,
                    f"{fs.id} ({_where(fs)}) cannot be recreated: {problem}",
                )
            )
        notes.extend(f"{fs.id} ({_where(fs)}): {n}" for n in how.notes)
    acts = builder.build()
    warnings.extend(builder.warnings)
    warnings.extend(_stranded(layers, stack, set(matched)))
    for sw in desc.swaps:
        if sw.file is not None:
            notes.append(f"{sw.id}: the swap file {sw.file} is made after the restore, not here")
    if opts.targets:
        used = {a.path for a in matched.values()}
        for t in opts.targets:
            d = match.find_actual(actual, t)
            if d is not None and d.path not in used and not match.forbidden(desc, d):
                warnings.append(f"the target {d.path} is not used: no saved disk goes to it")
    failures.extend(checks.in_use(matched[s] for s in sorted(matched)))
    failures.extend(checks.tools(acts, opts.which))
    failures.extend(checks.keys(acts, opts.keys, opts.interactive))

    dm = tuple(
        DiskMatch(
            saved=sid,
            saved_path=layers.disks[sid].path,
            path=a.path,
            kname=a.kname,
            by=m.matches[sid][1],
            size=a.size,
            logical_sector_size=a.logical_sector_size,
            wwn=a.wwn,
            serial=a.serial,
            model=a.model,
        )
        for sid, a in sorted(matched.items())
    )
    plan = Plan(
        host=desc.system.hostname,
        created=desc.format.created,
        grow=opts.grow,
        root=opts.root,
        matches=dm,
        layouts=tuple(layouts[s] for s in sorted(layouts)),
        volumes=tuple(volumes),
        actions=tuple(acts),
        failures=tuple(failures),
        warnings=tuple(warnings),
        notes=tuple(notes),
        hash="",
        commands=commands.planned(desc, opts.root, acts),
        identities=ids.decisions,
    )
    return replace(plan, hash=plan_hash(plan))


def _where(fs: Filesystem) -> str:
    return f"{fs.type} on {fs.mounts[0].mountpoint}" if fs.mounts else f"{fs.type}, not mounted"


def _too_small(layers: Layers, a: ActualDisk, f: fit.DiskFit) -> PreconditionFailure:
    short: Shortfall | None = f.shortfall
    details = []
    for it in f.items:
        label = layers.label(it.id)
        if it.fixed:
            details.append(f"{it.id} ({label}) keeps {human(max(it.size, it.minimum))}")
        else:
            fs = [x for x in layers.filesystems_above(it.id)]
            used = [x.state.used_bytes for x in fs if x.state and x.state.used_bytes is not None]
            why = f", {human(sum(used))} used" if used else (", used space unknown" if fs else "")
            details.append(f"{it.id} ({label}) needs at least {human(it.minimum)}{why}")
    missing = f" ({human(short.missing)} short)" if short is not None else ""
    return PreconditionFailure(
        Check.TARGET_TOO_SMALL,
        a.path,
        f"{a.path} ({human(a.size)}) is too small for {f.disk}: it needs at least "
        f"{human(f.minimum)}{missing}; " + "; ".join(details),
        "use a larger disk; the data of each filesystem must fit with a margin of "
        f"{filesystems.MARGIN_PERCENT}% + {human(filesystems.MARGIN_BYTES)}",
    )


def _fixed_notes(lay: DiskLayout) -> list[str]:
    out = []
    for p in lay.partitions:
        if p.fixed and p.kind != "extended" and p.after > p.before + lay.sector_size:
            out.append(
                f"{p.id} ({p.label}) grows from {human(p.before)} to {human(p.after)}: "
                "its content cannot be created smaller on the new disk"
            )
    return out


def _unmatched(
    layers: Layers, unmatched: Sequence[str], warnings: list[str]
) -> list[PreconditionFailure]:
    out = []
    for sid in unmatched:
        d = layers.disks[sid]
        fss = layers.filesystems_above(sid)
        mounted = sorted({m.mountpoint for f in fss for m in f.mounts})
        if not mounted:
            mounted = [f.id for f in fss if f.state is not None and f.state.mounted]
        if d.critical or mounted:
            what = ", ".join(mounted) if mounted else "the system"
            out.append(
                PreconditionFailure(
                    Check.NO_DISK,
                    sid,
                    f"no disk is left for {match.describe_saved(d)}, which holds {what}",
                    "attach another disk, or name one with --target / --map",
                )
            )
        else:
            warnings.append(
                f"{sid} ({d.path}) has no disk to go to; nothing on it was mounted, "
                "so it is left out"
            )
    return out


def _stranded(layers: Layers, stack: fit.Stack, matched: set[str]) -> list[str]:
    """Mounted filesystems on matched disks that still cannot be recreated: say so."""
    out = []
    for fs in layers.desc.filesystems:
        if not fs.mounts or not fs.supported or stack.after(fs.device) is not None:
            continue
        under = layers.disks_under(fs.device)
        if under and not under <= matched:
            continue  # left out with its disk, reported there
        where = ", ".join(m.mountpoint for m in fs.mounts)
        out.append(
            f"{fs.id} ({where}) is not recreated: the device it lies on, {fs.device}, "
            "cannot be recreated on these disks"
        )
    return out


def _volumes(layers: Layers, stack: fit.Stack, builder: actions.Builder) -> list[FittedVolume]:
    out: list[FittedVolume] = []
    for md in layers.desc.raid_arrays:
        after = stack.after(md.id)
        if after is not None:
            out.append(
                FittedVolume(md.id, VolumeKind.MD, md.path, md.size, after, layers.label(md.id))
            )
    for lk in layers.desc.luks_volumes:
        after = stack.after(lk.id)
        if after is not None:
            out.append(
                FittedVolume(
                    lk.id,
                    VolumeKind.LUKS,
                    builder.path(lk.id),
                    layers.original_size(lk.id),
                    after,
                    layers.label(lk.id),
                )
            )
    for vg in layers.desc.volume_groups:
        g = stack.group(vg.id)
        if g is not None:
            usable = sum(
                pv_extents(stack.after(pv.device) or 0, vg.extent_size)
                for pv in layers.pvs_of.get(vg.id, [])
            )
            out.append(
                FittedVolume(
                    vg.id,
                    VolumeKind.VG,
                    f"/dev/{vg.name}",
                    vg.size,
                    usable * vg.extent_size,
                    vg.name,
                )
            )
    for lv in layers.desc.logical_volumes:
        after = stack.after(lv.id)
        if after is not None:
            out.append(
                FittedVolume(
                    lv.id, VolumeKind.LV, builder.path(lv.id), lv.size, after, layers.label(lv.id)
                )
            )
    for fs in layers.desc.filesystems:
        after = stack.after(fs.device)
        if after is not None and fs.supported:
            out.append(
                FittedVolume(
                    fs.id,
                    VolumeKind.FILESYSTEM,
                    builder.path(fs.device),
                    fs.size or layers.original_size(fs.device),
                    after,
                    ", ".join(m.mountpoint for m in fs.mounts) or str(fs.type),
                )
            )
    for sw in layers.desc.swaps:
        if sw.device is None:
            continue
        after = stack.after(sw.device)
        if after is not None:
            out.append(
                FittedVolume(
                    sw.id, VolumeKind.SWAP, builder.path(sw.device), sw.size, after, "swap"
                )
            )
    return out
