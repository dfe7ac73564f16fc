"""Properties of the planner on random layouts, random targets, both sector sizes, both labels."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resurgo.fileformat import rules
from resurgo.machine import ActualDisk
from resurgo.model import (
    Description,
    Filesystem,
    FsType,
    PartitionKind,
    TableLabel,
    XfsOptions,
)
from resurgo.plan import filesystems, fit, make_plan
from resurgo.plan.layers import Layers
from resurgo.plan.model import Check, GrowPolicy, Plan, PlanOptions
from resurgo.plan.sizes import Sizer
from tests.support.builders import actual, description, disk, esp, ext4, other_fs, part, swap
from tests.support.consts import ESP, GIB, LINUX, MIB, SWAP

CONTENTS = ("ext4", "xfs", "btrfs", "swap", "esp", "none")
# The smallest saved size (MiB) drawn for each content: what its mkfs needs at 4 KiB sectors.
LOWEST = {"ext4": 16, "xfs": 300, "btrfs": 114, "swap": 1, "esp": 257, "none": 1}

PROFILE = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@dataclass(frozen=True)
class Case:
    desc: Description
    target: ActualDisk
    policy: GrowPolicy


def _fs(kind: str, device: str, used: int | None, n: int) -> Filesystem | None:
    if kind == "ext4":
        return ext4(device, f"/m{n}" if n else "/", used)
    if kind == "xfs":
        return other_fs(
            device,
            FsType.XFS,
            f"/x{n}",
            used,
            xfs=XfsOptions(block_size=4096, sector_size=512, inode_size=512, crc=True),
        )
    if kind == "btrfs":
        return other_fs(device, FsType.BTRFS, f"/b{n}", used)
    if kind == "esp":
        return esp(device)
    return None


@st.composite
def layouts(draw: st.DrawFn, *, aligned_tail: bool = False) -> Description:
    lss = draw(st.sampled_from([512, 4096]))
    label = draw(st.sampled_from([TableLabel.GPT, TableLabel.DOS]))
    n = draw(st.integers(1, 5))
    kinds = draw(st.lists(st.sampled_from(CONTENTS), min_size=n, max_size=n))
    sizes = [draw(st.integers(LOWEST[k], LOWEST[k] + 3000)) * MIB for k in kinds]
    gaps = [draw(st.integers(0, 2)) * MIB for _ in kinds]
    used = [
        None
        if draw(st.integers(0, 9)) == 0
        else s * draw(st.one_of(st.integers(0, 20), st.integers(0, 100))) // 100
        for s in sizes
    ]
    logical_from = n
    if label == TableLabel.DOS and n >= 2 and draw(st.booleans()):
        logical_from = draw(st.integers(1, n - 1))  # partitions from here are logical
    if label == TableLabel.DOS and (logical_from > 3 or n > 4):
        logical_from = min(logical_from, 3)  # the extended partition is one of the four
    tail = draw(st.integers(1 if aligned_tail else 0, 1024)) * MIB
    # Lay the saved partitions out, in bytes.
    cursor = MIB
    spans = []
    ext_start = None
    for i in range(n):
        if i == logical_from:
            ext_start = cursor
            cursor += MIB  # the first EBR
        start = cursor + gaps[i] if i else MIB + gaps[0]
        if i > logical_from:
            start += MIB  # each further EBR
        spans.append((start, sizes[i]))
        cursor = start + sizes[i]
    end = cursor + tail
    gpt_tail = 33 * 512 if lss == 512 else 5 * 4096
    d = disk("sda", end + (gpt_tail if label == TableLabel.GPT else 0), lss, label)
    parts = []
    fss = []
    swaps = []
    number = 1
    for i, (start, size) in enumerate(spans):
        kind = PartitionKind.LOGICAL if i >= logical_from else PartitionKind.PRIMARY
        if i == logical_from:
            assert ext_start is not None
            parts.append(
                part(d, number, ext_start, end - tail - ext_start, "5", PartitionKind.EXTENDED)
            )
            number = 5
        code = {
            "swap": SWAP if label == TableLabel.GPT else "82",
            "esp": ESP if label == TableLabel.GPT else "ef",
        }.get(kinds[i], LINUX if label == TableLabel.GPT else "83")
        p = part(d, number, start, size, code, kind)
        number += 1
        parts.append(p)
        if kinds[i] == "swap":
            swaps.append(swap(p.id, size))
        else:
            f = _fs(kinds[i], p.id, used[i], i)
            if f is not None:
                fss.append(f)
    desc = description(disks=[d], partitions=parts, filesystems=fss, swaps=swaps)
    assert not rules.check(desc), rules.check(desc)
    return desc


@st.composite
def cases(draw: st.DrawFn) -> Case:
    desc = draw(layouts())
    saved = desc.disks[0].size
    tss = draw(st.sampled_from([512, 4096]))
    size = draw(st.integers(saved // 3, saved * 2)) // tss * tss
    policy = draw(st.sampled_from(list(GrowPolicy)))
    return Case(desc, actual("vdb", size, tss), policy)


def plan_of(case: Case) -> Plan:
    return make_plan(case.desc, [case.target], PlanOptions(grow=case.policy, which=lambda p: p))


def minimum(case: Case) -> int:
    layers = Layers(case.desc)
    tss = case.target.logical_sector_size
    return fit.minimum_size(layers, Sizer(layers, {"disk.sda": tss}), case.desc.disks[0], tss)


@PROFILE
@given(cases())
def test_partitions_are_aligned_inside_the_disk_and_never_overlap(case: Case) -> None:
    plan = plan_of(case)
    if not plan.layouts:
        return
    lay = plan.layouts[0]
    tss = lay.sector_size
    assert lay.first_lba is not None and lay.last_lba is not None
    total = case.target.size // tss
    if lay.label == TableLabel.GPT:
        entries = 16384 // tss
        assert lay.last_lba == total - 1 - (1 + entries)  # the backup header and entries fit
    for p in lay.partitions:
        assert p.size > 0
        assert p.start_bytes % MIB == 0, p
        assert p.start >= lay.first_lba
        assert p.start + p.size - 1 <= lay.last_lba, p
        if lay.label == TableLabel.DOS:
            assert p.start + p.size <= 1 << 32
    outer = sorted((p for p in lay.partitions if p.kind != "logical"), key=lambda p: p.start)
    inner = sorted((p for p in lay.partitions if p.kind == "logical"), key=lambda p: p.start)
    for group in (outer, inner):
        for a, b in itertools.pairwise(group):
            assert a.start + a.size <= b.start, (a, b)
    ext = [p for p in outer if p.kind == "extended"]
    prev = ext[0].start_bytes if ext else 0
    for lp in inner:
        assert ext and lp.start_bytes - prev >= MIB  # room for the EBR
        assert lp.start_bytes + lp.after <= ext[0].start_bytes + ext[0].after
        prev = lp.start_bytes + lp.after


@PROFILE
@given(cases())
def test_shrink_is_refused_exactly_when_the_data_cannot_fit(case: Case) -> None:
    plan = plan_of(case)
    too_small = Check.TARGET_TOO_SMALL in [f.check for f in plan.failures]
    assert too_small == (case.target.size < minimum(case))
    if too_small:
        assert not plan.layouts
        return
    tss = case.target.logical_sector_size
    after = {p.id: p for p in plan.layouts[0].partitions}
    for fs in case.desc.filesystems:
        p = after[fs.device]
        saved = next(x for x in case.desc.partitions if x.id == fs.device)
        saved_size = saved.size * saved.sector_size
        assert p.after >= filesystems.creatable_minimum(fs, tss)  # mkfs minimums hold
        data = filesystems.data_minimum(fs)
        assert p.after >= (min(data, saved_size) if data is not None else saved_size)
    for sw in case.desc.swaps:
        assert sw.device is not None
        assert after[sw.device].after >= filesystems.swap_minimum(sw)


@PROFILE
@given(cases())
def test_fixed_partitions_keep_their_size_and_a_larger_disk_shrinks_nothing(case: Case) -> None:
    plan = plan_of(case)
    if not plan.layouts:
        return
    tss = case.target.logical_sector_size
    layers = Layers(case.desc)
    sizer = Sizer(layers, {"disk.sda": tss})
    for p in plan.layouts[0].partitions:
        if p.fixed and p.kind != "extended":
            assert p.after == max(-(-p.before // tss) * tss, p.after)
            need = -(-sizer.need(p.id) // tss) * tss
            if p.after != -(-p.before // tss) * tss:
                assert p.after < need + MIB  # raised only as far as its content requires
        if case.target.size >= case.desc.disks[0].size + MIB:
            assert p.after >= p.before, p


@PROFILE
@given(cases())
def test_same_input_same_plan_and_dependencies_come_first(case: Case) -> None:
    a, b = plan_of(case), plan_of(case)
    assert a.hash == b.hash
    assert a == b
    seen: set[str] = set()
    for act in a.actions:
        assert set(act.depends_on) <= seen, act.id
        assert set(act.writes) <= {case.target.path}
        seen.add(act.id)


@PROFILE
@given(layouts(aligned_tail=True))
def test_512_and_4096_byte_sectors_keep_byte_offsets_and_sizes(desc: Description) -> None:
    saved = desc.disks[0]
    other = 4096 if saved.logical_sector_size == 512 else 512
    plan = make_plan(desc, [actual("vdb", saved.size, other)], PlanOptions(which=lambda p: p))
    if not plan.layouts:
        # Only a FAT32 ESP whose minimum grows with the sector size may not fit.
        assert other == 4096
        return
    got = {p.id: p for p in plan.layouts[0].partitions}
    raised = any(p.fixed and p.after > p.before for p in got.values())
    for p in desc.partitions:
        fp = got[p.id]
        assert fp.sector_size == other
        assert fp.start * other == fp.start_bytes
        if not raised:
            assert (fp.start_bytes, fp.after) == (p.start * p.sector_size, p.size * p.sector_size)


def test_same_size_disk_is_an_identity() -> None:
    # A fixed example of the identity the properties above allow for, for reading.
    d = disk("sda", 8 * GIB)
    p1 = part(d, 1, MIB, 2 * GIB)
    desc = description(disks=[d], partitions=[p1], filesystems=[ext4(p1.id, "/", GIB)])
    plan = make_plan(desc, [actual("vdb", 8 * GIB)], PlanOptions(which=lambda p: p))
    assert plan.layouts[0].partitions[0].start == 2048
    assert plan.layouts[0].partitions[0].size == 2 * GIB // 512
    assert plan.layouts[0].partitions[0].after == 2 * GIB
