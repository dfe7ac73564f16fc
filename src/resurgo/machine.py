"""This machine as the planner receives it: its whole disks, as probe.actual reads them.

Frozen records only; no I/O. The planner takes them as data, so that it stays pure and a
test can give it any disks.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ActualDisk:
    """A whole disk of the machine the recovery runs on, as /sys shows it now."""

    path: str
    kname: str
    size: int
    logical_sector_size: int = 512
    physical_sector_size: int = 512
    wwn: str | None = None
    serial: str | None = None
    model: str | None = None
    transport: str = ""
    removable: bool = False
    rotational: bool = False
    # What uses the disk now: "sdb1 on /mnt", active swap areas on it, holders (dm-0, md127).
    mounted: tuple[str, ...] = ()
    swaps: tuple[str, ...] = ()
    holders: tuple[str, ...] = ()
    # It holds the running (rescue) system or its boot medium.
    holds_system: bool = False
    # It holds the recovery set being read (the description file), or a key file.
    holds_recovery_set: bool = False

    @property
    def in_use(self) -> bool:
        return bool(self.mounted or self.swaps or self.holders)
