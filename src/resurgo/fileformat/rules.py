"""The rules a well-typed description must also keep: references, uniqueness, geometry.

Each rule appends Problems naming the record (by its place and id) and field;
all rules run, so a person sees everything wrong at once.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import re

from resurgo.fileformat import values
from resurgo.fileformat.codec import Problem
from resurgo.model import (
    BLOCK,
    Description,
    Disk,
    FsType,
    Link,
    Partition,
    PartitionKind,
    Swap,
    TableLabel,
    references,
)

_MODE = re.compile(r"^[0-7]{3,4}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@+\-]*$")


def check(desc: Description) -> list[Problem]:
    problems: list[Problem] = []
    ids = _check_ids(desc, problems)
    _check_references(desc, ids, problems)
    _check_partitions(desc, problems)
    _check_filesystems(desc, problems)
    _check_misc(desc, problems)
    problems.extend(values.check(desc, frozenset(p.where for p in problems)))
    return problems


def _check_ids(desc: Description, problems: list[Problem]) -> dict[str, str]:
    """All ids, to the group they belong to; duplicates and malformed ids are problems."""
    ids: dict[str, str] = {}
    first: dict[str, tuple[str, int]] = {}
    for group, i, rec in desc.records():
        if not _ID.match(rec.id):
            problems.append(
                Problem((group, i, "id"), f"id {rec.id!r} must be letters, digits and . _ : @ + -")
            )
        if rec.id in first:
            g, j = first[rec.id]
            problems.append(
                Problem((group, i, "id"), f"id {rec.id!r} is not unique: also {g}[{j}]")
            )
            continue
        first[rec.id] = (group, i)
        ids[rec.id] = group
    return ids


def _ref(
    problems: list[Problem],
    ids: dict[str, str],
    where: tuple[str | int, ...],
    value: str | None,
    groups: tuple[str, ...],
    what: str,
) -> None:
    if value is None:
        return
    group = ids.get(value)
    if group is None:
        problems.append(Problem(where, f"refers to {value!r}, which is not in the description"))
    elif group not in groups:
        problems.append(Problem(where, f"refers to {value!r}, a {group} record, not a {what}"))


def _check_references(desc: Description, ids: dict[str, str], problems: list[Problem]) -> None:
    for r in references(desc.system, ("system",)):
        _ref(problems, ids, r.where, r.target, r.ref.groups, r.ref.what)
    for group, i, rec in desc.records():
        for r in references(rec, (group, i)):
            _ref(problems, ids, r.where, r.target, r.ref.groups, r.ref.what)
        if isinstance(rec, Swap):
            _check_swap(i, rec, problems)


def _check_swap(i: int, sw: Swap, problems: list[Problem]) -> None:
    if (sw.device is None) == (sw.file is None):
        problems.append(Problem(("swaps", i), "needs exactly one of device or file"))
    if sw.file is not None and sw.filesystem is None:
        problems.append(
            Problem(("swaps", i, "filesystem"), "a swap file needs the filesystem that holds it")
        )


def _check_partitions(desc: Description, problems: list[Problem]) -> None:
    disks = {d.id: d for d in desc.disks}
    by_disk: dict[str, list[tuple[int, Partition]]] = {}
    for i, p in enumerate(desc.partitions):
        by_disk.setdefault(p.disk, []).append((i, p))
    for di, disk in enumerate(desc.disks):
        if disk.size <= 0:
            problems.append(Problem(("disks", di, "size"), "must be positive"))
        for name in ("logical_sector_size", "physical_sector_size"):
            v = getattr(disk, name)
            if v < 512 or v & (v - 1):
                problems.append(Problem(("disks", di, name), f"{v} is not a power of two >= 512"))
        if disk.table is None and by_disk.get(disk.id):
            problems.append(
                Problem(("disks", di, "table"), "the disk has partitions but no partition table")
            )
    for disk_id, parts in by_disk.items():
        owner = disks.get(disk_id)
        if owner is None:
            continue  # reported as a dangling reference
        _check_disk_partitions(owner, parts, problems)


def _check_disk_partitions(
    disk: Disk, parts: list[tuple[int, Partition]], problems: list[Problem]
) -> None:
    label = disk.table.label if disk.table else None
    numbers: dict[int, int] = {}
    for i, p in parts:
        w = ("partitions", i)
        if p.sector_size != disk.logical_sector_size:
            problems.append(
                Problem(
                    (*w, "sector_size"),
                    f"{p.sector_size} differs from the disk's logical sector size "
                    f"{disk.logical_sector_size}",
                )
            )
        if p.number in numbers:
            problems.append(
                Problem(
                    (*w, "number"),
                    f"partition number {p.number} is used twice "
                    f"on disk {disk.id!r} (also partitions[{numbers[p.number]}])",
                )
            )
        numbers[p.number] = i
        if p.start < 1:
            problems.append(Problem((*w, "start"), "must be at least 1 (sector 0 holds the table)"))
        if p.size <= 0:
            problems.append(Problem((*w, "size"), "must be positive"))
        end_bytes = (p.start + p.size) * p.sector_size
        if end_bytes > disk.size:
            problems.append(
                Problem(
                    (*w, "size"),
                    f"ends at byte {end_bytes}, beyond the end of "
                    f"disk {disk.id!r} ({disk.size} bytes)",
                )
            )
        table = disk.table
        if table is not None and table.first_lba is not None and p.start < table.first_lba:
            problems.append(
                Problem((*w, "start"), f"starts before the first usable LBA {table.first_lba}")
            )
        if (
            table is not None
            and table.last_lba is not None
            and p.start + p.size - 1 > table.last_lba
        ):
            problems.append(
                Problem((*w, "size"), f"ends after the last usable LBA {table.last_lba}")
            )
        if label == TableLabel.GPT and p.kind != PartitionKind.PRIMARY:
            problems.append(Problem((*w, "kind"), "GPT has no extended or logical partitions"))
        if label == TableLabel.DOS:
            if p.kind == PartitionKind.LOGICAL and p.number < 5:
                problems.append(Problem((*w, "number"), "logical partitions are numbered from 5"))
            if p.kind != PartitionKind.LOGICAL and p.number > 4:
                problems.append(
                    Problem((*w, "number"), "primary and extended partitions are numbered 1 to 4")
                )
    extended = [(i, p) for i, p in parts if p.kind == PartitionKind.EXTENDED]
    if len(extended) > 1:
        problems.append(
            Problem(
                ("partitions", extended[1][0], "kind"), "a disk has at most one extended partition"
            )
        )
    ext = extended[0][1] if extended else None
    outer = [(i, p) for i, p in parts if p.kind != PartitionKind.LOGICAL]
    inner = [(i, p) for i, p in parts if p.kind == PartitionKind.LOGICAL]
    for i, p in inner:
        if ext is None:
            problems.append(
                Problem(
                    ("partitions", i, "kind"), "a logical partition needs an extended partition"
                )
            )
        elif p.start <= ext.start or p.start + p.size > ext.start + ext.size:
            problems.append(
                Problem(
                    ("partitions", i, "start"),
                    f"logical partition lies outside the extended partition {ext.id!r}",
                )
            )
    for group in (outer, inner):
        ordered = sorted(group, key=lambda ip: ip[1].start)
        for (_, a), (j, b) in itertools.pairwise(ordered):
            if b.start < a.start + a.size:
                problems.append(
                    Problem(
                        ("partitions", j, "start"),
                        f"overlaps partition {a.id!r} (which ends at sector "
                        f"{a.start + a.size - 1})",
                    )
                )


_FS_OPTIONS = {
    "ext": (FsType.EXT2, FsType.EXT3, FsType.EXT4),
    "xfs": (FsType.XFS,),
    "vfat": (FsType.VFAT,),
    "btrfs": (FsType.BTRFS,),
}


def _check_filesystems(desc: Description, problems: list[Problem]) -> None:
    subvols = {s.id: s for s in desc.subvolumes}
    for i, fs in enumerate(desc.filesystems):
        for name, types in _FS_OPTIONS.items():
            if getattr(fs, name) is not None and fs.type not in types:
                problems.append(
                    Problem(("filesystems", i, name), f"{name} options on a {fs.type} filesystem")
                )
        if fs.type == FsType.OTHER and fs.supported:
            problems.append(
                Problem(
                    ("filesystems", i, "supported"),
                    "a filesystem of type 'other' cannot be supported",
                )
            )
        for j, m in enumerate(fs.mounts):
            if not m.mountpoint.startswith("/"):
                problems.append(
                    Problem(
                        ("filesystems", i, "mounts", j, "mountpoint"),
                        f"{m.mountpoint!r} is not an absolute path",
                    )
                )
            sv = subvols.get(m.subvolume) if m.subvolume else None
            if sv is not None and sv.filesystem != fs.id:
                problems.append(
                    Problem(
                        ("filesystems", i, "mounts", j, "subvolume"),
                        f"subvolume {sv.id!r} belongs to {sv.filesystem!r}",
                    )
                )
    fs_types = {f.id: f.type for f in desc.filesystems}
    for i, sv in enumerate(desc.subvolumes):
        t = fs_types.get(sv.filesystem)
        if t is not None and t != FsType.BTRFS:
            problems.append(
                Problem(("subvolumes", i, "filesystem"), f"subvolumes live on btrfs, not {t}")
            )


def _check_misc(desc: Description, problems: list[Problem]) -> None:
    seqs: set[int] = set()
    last = None
    for i, c in enumerate(desc.commands):
        if c.seq in seqs:
            problems.append(
                Problem(("commands", i, "seq"), f"sequence number {c.seq} is used twice")
            )
        elif last is not None and c.seq < last:
            problems.append(
                Problem(
                    ("commands", i, "seq"), f"sequence numbers must ascend ({c.seq} after {last})"
                )
            )
        seqs.add(c.seq)
        last = c.seq
        if not c.program:
            problems.append(Problem(("commands", i, "program"), "must not be empty"))
    for i, cf in enumerate(desc.config_files):
        if not cf.path.startswith("/"):
            problems.append(Problem(("config_files", i, "path"), f"{cf.path!r} is not absolute"))
        if not _MODE.match(cf.mode):
            problems.append(
                Problem(("config_files", i, "mode"), f"{cf.mode!r} is not an octal mode like 0644")
            )
        if cf.content is None:
            # Only a secret file may be sealed (its content kept in the set's secrets file).
            if not cf.secret:
                problems.append(Problem(("config_files", i, "content"),
                                        "required field is missing (only a secret file is "
                                        "sealed without its content)"))
        elif cf.encoding == "base64":
            try:
                base64.b64decode(cf.content, validate=True)
            except (binascii.Error, ValueError):
                problems.append(Problem(("config_files", i, "content"), "is not valid base64"))
    if desc.catalog is not None and not _HEX64.match(desc.catalog.sha256):
        problems.append(Problem(("catalog", "sha256"), "must be 64 lowercase hex digits"))
    for i, md in enumerate(desc.raid_arrays):
        if not md.members:
            problems.append(Problem(("raid_arrays", i, "members"), "an array needs members"))
    _check_stack_cycles(desc, problems)


def _check_stack_cycles(desc: Description, problems: list[Problem]) -> None:
    """A block device must not (indirectly) be built on itself."""
    # What each record is built on. An LV lies on its group, which lies on its PVs: so
    # thousands of LVs of a group do not each copy the list of its PVs.
    below: dict[str, list[str]] = {}
    for _, _, rec in desc.records():
        for r in references(rec):
            if r.ref.link == Link.ON:
                below.setdefault(rec.id, []).append(r.target)
            elif r.ref.link == Link.HOLDS:
                below.setdefault(r.target, []).append(rec.id)
    cyclic = _on_cycles(below)
    reported: set[str] = set()
    for group, i, rec in desc.records():
        if group in BLOCK and rec.id in cyclic and rec.id not in reported:
            reported.add(rec.id)
            problems.append(Problem((group, i), f"{rec.id!r} is built on itself"))


def _on_cycles(graph: dict[str, list[str]]) -> set[str]:
    """The nodes of graph that reach themselves: those of a strongly connected component
    of two or more, or with an edge to themselves (Tarjan's algorithm, without recursion:
    linear however long a chain a description builds)."""
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: set[str] = set()

    def visit(node: str) -> None:
        order[node] = low[node] = len(order)
        stack.append(node)
        on_stack.add(node)

    for root in graph:
        if root in order:
            continue
        visit(root)
        work = [(root, iter(graph.get(root, ())))]
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt == node:
                    out.add(node)
                if nxt not in order:
                    visit(nxt)
                    work.append((nxt, iter(graph.get(nxt, ()))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], order[nxt])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == order[node]:
                    component = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        component.append(w)
                        if w == node:
                            break
                    if len(component) > 1:
                        out.update(component)
    return out
