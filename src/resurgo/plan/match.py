"""Which actual disk receives each saved disk.

In order: --map (explicit), then stable identity (WWN, then serial), then the best
assignment by size and bus, with the order of names as the last word between disks
that are otherwise alike. Order may say which of two alike disks is which; it never
chooses which disk is left untouched: when the best assignments use different sets
of disks, the match is ambiguous and a person must say (--map or --target).

A disk that holds the running system or its medium, the recovery set or the key files
being read, or that was a removable device when the system was saved (matched by
identity) is never a candidate.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from resurgo.errors import BadInput
from resurgo.machine import ActualDisk
from resurgo.model import Description, Disk, RemovableDevice
from resurgo.plan.layers import Layers
from resurgo.plan.model import Check, MatchBy, PlanOptions, PreconditionFailure
from resurgo.sortkeys import natural_key
from resurgo.units import human

# Beyond this many assignments to weigh, ask for --map rather than think for minutes.
MAX_ASSIGNMENTS = 200_000


def norm_id(value: str | None) -> str | None:
    """An identity as compared: case and the usual prefixes and padding do not count."""
    if not value:
        return None
    v = value.strip().lower()
    for prefix in ("0x", "naa.", "eui.", "wwn-", "t10."):
        v = v.removeprefix(prefix)
    v = re.sub(r"[\s_]+", " ", v).strip()
    return v or None


def same_identity(
    a_wwn: str | None, a_serial: str | None, b_wwn: str | None, b_serial: str | None
) -> bool:
    wa, wb = norm_id(a_wwn), norm_id(b_wwn)
    if wa and wb:
        return wa == wb
    sa, sb = norm_id(a_serial), norm_id(b_serial)
    return bool(sa and sb and sa == sb)


def removable_at_save(desc: Description, disk: ActualDisk) -> RemovableDevice | None:
    for rd in desc.removable_devices:
        if same_identity(rd.wwn, rd.serial, disk.wwn, disk.serial):
            return rd
        # Without any identity, a device of the same model and size is taken to be it:
        # wrongly refusing a disk is safe, wrongly writing on one is not.
        if (
            not (rd.wwn or rd.serial)
            and rd.model
            and disk.model
            and rd.model.strip() == disk.model.strip()
            and rd.size == disk.size
        ):
            return rd
    return None


def forbidden(desc: Description, disk: ActualDisk) -> str | None:
    """Why recovery must never write to this disk, or None."""
    if disk.holds_system:
        return "it holds the running system or the medium it was started from"
    if disk.holds_recovery_set:
        return "it holds the recovery set, a key file or the identity being read"
    rd = removable_at_save(desc, disk)
    if rd is not None:
        what = f"{rd.path}" + (f", {rd.model}" if rd.model else "")
        return f"it was a removable device when the system was saved ({what})"
    return None


def describe_actual(d: ActualDisk) -> str:
    bits = [human(d.size)]
    if d.transport:
        bits.append(d.transport)
    if d.model:
        bits.append(d.model)
    if d.serial:
        bits.append(f"serial {d.serial}")
    if d.wwn:
        bits.append(f"wwn {d.wwn}")
    return f"{d.path} ({', '.join(bits)})"


def describe_saved(d: Disk) -> str:
    return f"{d.id} ({d.path}, {human(d.size)})"


@dataclass
class Matching:
    matches: dict[str, tuple[ActualDisk, MatchBy]] = field(default_factory=dict)
    failures: list[PreconditionFailure] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # Saved disks with no actual disk, and those a person must decide about.
    unmatched: list[str] = field(default_factory=list)
    undecided: list[str] = field(default_factory=list)


def find_actual(actual: Sequence[ActualDisk], name: str) -> ActualDisk | None:
    for d in actual:
        if name in (d.path, d.kname, f"/dev/{d.kname}"):
            return d
    return None


def find_saved(desc: Description, ref: str) -> Disk | None:
    for d in desc.disks:
        if ref in (d.id, d.path, d.by_id) or d.path == f"/dev/{ref}":
            return d
    return None


def needs_disk(layers: Layers, disk: Disk) -> bool:
    return disk.table is not None or layers.user(disk.id) is not None


MinSize = Callable[[Disk, int], int]


def match(
    desc: Description,
    layers: Layers,
    actual: Sequence[ActualDisk],
    options: PlanOptions,
    min_size: MinSize,
) -> Matching:
    """Match saved disks to actual disks; raises BadInput for a --map naming no saved disk."""
    out = Matching()
    saved = [d for d in desc.disks if needs_disk(layers, d)]
    for d in desc.disks:
        if not needs_disk(layers, d):
            out.notes.append(f"{d.id} held nothing resurgo recreates; no disk is used for it")
    candidates = _candidates(desc, actual, options, out)
    remaining = _apply_maps(desc, actual, options, saved, candidates, out)
    remaining = _by_identity(remaining, candidates, out)
    _by_assignment(remaining, candidates, out, min_size)
    return out


def _candidates(
    desc: Description, actual: Sequence[ActualDisk], options: PlanOptions, out: Matching
) -> list[ActualDisk]:
    cands: list[ActualDisk] = []
    if options.targets:
        for t in options.targets:
            d = find_actual(actual, t)
            if d is None:
                out.failures.append(
                    PreconditionFailure(
                        Check.TARGET_MISSING,
                        t,
                        f"there is no disk {t} on this machine",
                        "name a whole disk (not a partition) that `lsblk -d` lists",
                    )
                )
                continue
            why = forbidden(desc, d)
            if why is not None:
                out.failures.append(
                    PreconditionFailure(
                        Check.TARGET_FORBIDDEN, d.path, f"{d.path} cannot be a target: {why}"
                    )
                )
                continue
            if d not in cands:
                cands.append(d)
        return cands
    for d in actual:
        if d.kname.startswith("loop"):
            continue
        if d.removable:
            out.notes.append(
                f"{d.path} is not a candidate: it is removable (name it with --target)"
            )
            continue
        why = forbidden(desc, d)
        if why is not None:
            out.notes.append(f"{d.path} is not a candidate: {why}")
            continue
        cands.append(d)
    return cands


def _apply_maps(
    desc: Description,
    actual: Sequence[ActualDisk],
    options: PlanOptions,
    saved: list[Disk],
    candidates: list[ActualDisk],
    out: Matching,
) -> list[Disk]:
    mapped: dict[str, str] = {}
    settled: set[str] = set()
    for saved_ref, actual_ref in options.maps:
        s = find_saved(desc, saved_ref)
        if s is None:
            known = ", ".join(f"{d.id} ({d.path})" for d in desc.disks) or "none"
            raise BadInput(
                f"--map {saved_ref}={actual_ref}: the description has no disk {saved_ref!r}",
                f"the saved disks are: {known}",
            )
        if s.id in settled:
            raise BadInput(f"--map names the saved disk {s.id} twice")
        settled.add(s.id)
        a = find_actual(actual, actual_ref)
        if a is None:
            out.failures.append(
                PreconditionFailure(
                    Check.TARGET_MISSING,
                    actual_ref,
                    f"--map {saved_ref}={actual_ref}: there is no disk {actual_ref} "
                    "on this machine",
                )
            )
            out.undecided.append(s.id)
            continue
        if a.path in mapped:
            raise BadInput(f"--map gives {a.path} to both {mapped[a.path]} and {s.id}")
        mapped[a.path] = s.id
        why = forbidden(desc, a)
        if why is not None:
            out.failures.append(
                PreconditionFailure(
                    Check.TARGET_FORBIDDEN, a.path, f"{a.path} cannot be a target: {why}"
                )
            )
            out.undecided.append(s.id)
            continue
        out.matches[s.id] = (a, MatchBy.MAP)
        if a in candidates:
            candidates.remove(a)
    return [d for d in saved if d.id not in settled]


def _by_identity(saved: list[Disk], candidates: list[ActualDisk], out: Matching) -> list[Disk]:
    rest: list[Disk] = []
    for d in saved:
        found = False
        for by, key in ((MatchBy.WWN, "wwn"), (MatchBy.SERIAL, "serial")):
            ident = norm_id(getattr(d, key))
            if ident is None:
                continue
            same = [c for c in candidates if norm_id(getattr(c, key)) == ident]
            if len(same) == 1:
                out.matches[d.id] = (same[0], by)
                candidates.remove(same[0])
                found = True
                break
            if len(same) > 1:
                out.failures.append(_ambiguous(d, same, f"{len(same)} disks have its {key}"))
                out.undecided.append(d.id)
                found = True
                break
        if not found:
            rest.append(d)
    return rest


def _ambiguous(d: Disk, cands: Sequence[ActualDisk], why: str) -> PreconditionFailure:
    listing = "; ".join(describe_actual(c) for c in cands)
    return PreconditionFailure(
        Check.AMBIGUOUS_MATCH,
        d.id,
        f"cannot tell which disk should receive {describe_saved(d)} ({why}): candidates {listing}",
        f"say it with --map {d.id}=DISK, or name the disks to use with --target",
    )


Score = tuple[int, int, int, int, int]


def _pair_score(s: Disk, a: ActualDisk, min_size: MinSize) -> Score:
    return (
        int(a.size >= min_size(s, a.logical_sector_size)),
        1,
        int(a.size >= s.size),
        int(a.size == s.size),
        int(bool(s.transport) and s.transport == a.transport),
    )


def _by_assignment(
    saved: list[Disk], candidates: list[ActualDisk], out: Matching, min_size: MinSize
) -> None:
    if not saved:
        return
    cands = sorted(candidates, key=lambda c: natural_key(c.kname))
    saved = sorted(saved, key=lambda d: natural_key(d.path))
    scores = [[_pair_score(s, a, min_size) for a in cands] for s in saved]
    best: list[tuple[int | None, ...]] = []
    best_score: Score | None = None
    explored = 0

    def walk(i: int, used: frozenset[int], chosen: tuple[int | None, ...], acc: Score) -> None:
        nonlocal best_score, explored
        if i == len(saved):
            explored += 1
            if explored > MAX_ASSIGNMENTS:
                raise _TooMany
            if best_score is None or acc > best_score:
                best_score = acc
                best.clear()
            if acc == best_score:
                best.append(chosen)
            return
        for j in range(len(cands)):
            if j not in used:
                sc = scores[i][j]
                nxt = (
                    acc[0] + sc[0],
                    acc[1] + sc[1],
                    acc[2] + sc[2],
                    acc[3] + sc[3],
                    acc[4] + sc[4],
                )
                walk(i + 1, used | {j}, (*chosen, j), nxt)
        walk(i + 1, used, (*chosen, None), acc)

    try:
        walk(0, frozenset(), (), (0, 0, 0, 0, 0))
    except _TooMany:
        for s in saved:
            out.failures.append(
                PreconditionFailure(
                    Check.TOO_MANY_DISKS,
                    s.id,
                    f"too many disks to match {s.id} automatically",
                    f"say which disk receives it with --map {s.id}=DISK",
                )
            )
            out.undecided.append(s.id)
        return

    chosen = _decide(best)
    for i, s in enumerate(saved):
        options_i = sorted({b[i] for b in best}, key=lambda j: -1 if j is None else j)
        if chosen is not None:
            j = chosen[i]
            by = MatchBy.SIZE if len(options_i) == 1 else MatchBy.ORDER
        elif len(options_i) == 1:
            j = options_i[0]
            by = MatchBy.SIZE
        else:
            listing = [cands[k] for k in options_i if k is not None]
            out.failures.append(_ambiguous(s, listing, "they are alike in size and bus"))
            out.undecided.append(s.id)
            continue
        if j is None:
            out.unmatched.append(s.id)
        else:
            out.matches[s.id] = (cands[j], by)


class _TooMany(Exception):
    pass


def _decide(best: list[tuple[int | None, ...]]) -> tuple[int | None, ...] | None:
    """The one assignment to take among equally good ones, or None if a person must choose."""
    if len(best) == 1:
        return best[0]
    used = {frozenset(j for j in b if j is not None) for b in best}
    if len(used) != 1:
        return None
    preserving = [b for b in best if _order_preserving(b)]
    return preserving[0] if len(preserving) == 1 else None


def _order_preserving(assignment: tuple[int | None, ...]) -> bool:
    taken = [j for j in assignment if j is not None]
    return taken == sorted(taken)
