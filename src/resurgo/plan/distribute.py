"""Sharing space among the partitions of a disk or the logical volumes of a group.

Pure integer arithmetic in bytes. Every size changes by whole quanta (1 MiB for
partitions, one extent for logical volumes), so that the offsets after a
resized item move by whole alignment units and stay aligned.

The policies:
  - raise: an item below its minimum is raised to it (a fixed one too);
  - grow (default): the extra space goes to the item holding the system volume, else
    to the last resizable one; fixed items (ESP, /boot, BIOS boot, swap) keep their size;
  - grow (proportional): the extra is spread over the resizable items in proportion to
    their saved sizes;
  - shrink: resizable items give up space in proportion to the room each has above its
    minimum; refused (a Shortfall) when all that room is less than what is missing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from resurgo.plan.model import GrowPolicy


@dataclass(frozen=True)
class Item:
    id: str
    # The saved size (bytes), the smallest its content allows, and whether it keeps its size.
    size: int
    minimum: int
    fixed: bool
    # It holds the system volume: the first to receive extra space.
    preferred: bool = False


@dataclass(frozen=True)
class Shortfall:
    """Space missing: `missing` bytes more than all resizable items can give up."""

    missing: int
    available: int
    items: tuple[Item, ...]


def ceil_to(value: int, unit: int) -> int:
    return -(-value // unit) * unit


def raised(items: Sequence[Item], quantum: int) -> dict[str, int]:
    """Each item at its saved size, or raised to its minimum (by whole quanta) if below."""
    out: dict[str, int] = {}
    for it in items:
        size = it.size
        if size < it.minimum:
            size += ceil_to(it.minimum - size, quantum)
        out[it.id] = size
    return out


def room(item: Item, size: int, quantum: int) -> int:
    """Whole quanta an item can give up and still hold its content."""
    if item.fixed or size <= item.minimum:
        return 0
    return (size - item.minimum) // quantum


def grow_default(
    items: Sequence[Item], sizes: dict[str, int], extra: int, quantum: int
) -> str | None:
    """Give whole quanta of extra to one item; returns its id (None: nothing can grow)."""
    resizable = [it for it in items if not it.fixed]
    if not resizable or extra < quantum:
        return None
    preferred = [it for it in resizable if it.preferred]
    target = preferred[0] if preferred else resizable[-1]
    sizes[target.id] += extra // quantum * quantum
    return target.id


def grow_proportional(
    items: Sequence[Item], sizes: dict[str, int], extra: int, quantum: int
) -> list[str]:
    """Spread whole quanta of extra over the resizable items by their saved sizes."""
    resizable = [it for it in items if not it.fixed]
    units = extra // quantum
    if not resizable or units == 0:
        return []
    shares = _apportion(units, [max(1, it.size) for it in resizable], [units] * len(resizable))
    for it, share in zip(resizable, shares, strict=True):
        sizes[it.id] += share * quantum
    return [it.id for it, share in zip(resizable, shares, strict=True) if share]


def shrink(
    items: Sequence[Item], sizes: dict[str, int], deficit: int, quantum: int
) -> Shortfall | list[str]:
    """Take at least deficit bytes, in whole quanta, from the resizable items."""
    rooms = [room(it, sizes[it.id], quantum) for it in items]
    units = -(-deficit // quantum)
    total = sum(rooms)
    if total < units:
        return Shortfall(deficit - total * quantum, total * quantum, tuple(items))
    shares = _apportion(units, rooms, rooms)
    for it, share in zip(items, shares, strict=True):
        sizes[it.id] -= share * quantum
    return [it.id for it, share in zip(items, shares, strict=True) if share]


def _apportion(units: int, weights: Sequence[int], caps: Sequence[int]) -> list[int]:
    """units split in proportion to weights (largest remainder), none above its cap.

    Ties go to the earlier item, so the same input always gives the same split.
    """
    total = sum(weights)
    if total <= 0:
        return [0] * len(weights)
    shares = [min(cap, units * w // total) for w, cap in zip(weights, caps, strict=True)]
    left = units - sum(shares)
    order = sorted(range(len(weights)), key=lambda i: (-(units * weights[i] % total), i))
    while left > 0:
        progressed = False
        for i in order:
            if left == 0:
                break
            if shares[i] < caps[i]:
                shares[i] += 1
                left -= 1
                progressed = True
        if not progressed:
            break
    return shares


@dataclass(frozen=True)
class Resized:
    sizes: dict[str, int]
    # The items whose size the policy changed (raising to a minimum aside).
    changed: tuple[str, ...]
    grew: bool
    shortfall: Shortfall | None = None


def resize(
    items: Sequence[Item], capacity: int, kept_free: int, policy: GrowPolicy, quantum: int
) -> Resized:
    """Sizes for items sharing capacity bytes, keeping kept_free of it free when growing.

    Larger: the extra above the saved total (and the saved free space) grows items;
    smaller: the saved free space goes first, then resizable items shrink.
    """
    sizes = raised(items, quantum)
    total = sum(sizes.values())
    if capacity - kept_free >= total:
        extra = capacity - kept_free - total
        if policy == GrowPolicy.PROPORTIONAL:
            changed = grow_proportional(items, sizes, extra, quantum)
        else:
            one = grow_default(items, sizes, extra, quantum)
            changed = [one] if one else []
        return Resized(sizes, tuple(changed), True)
    if capacity >= total:
        return Resized(sizes, (), False)
    taken = shrink(items, sizes, total - capacity, quantum)
    if isinstance(taken, Shortfall):
        return Resized(sizes, (), False, taken)
    return Resized(sizes, tuple(taken), False)
