"""Partition table geometry in bytes and in a disk's own sectors.

GPT: the primary header at LBA 1 and 128 entries of 128 bytes after it; the backup
entries and header at the end. With 512-byte sectors that is 33 sectors at the
end; with 4096-byte sectors 5. The last usable LBA is
disk_sectors - 1 - (1 + entry_sectors).
MBR: sector 0 only; partitions cannot reach past 2^32 sectors.
"""

from __future__ import annotations

from dataclasses import dataclass

from resurgo.model import TableLabel

MIB = 1 << 20
ALIGN = MIB
GPT_ENTRIES_BYTES = 128 * 128
MBR_MAX_SECTORS = 1 << 32


def align_up(value: int, unit: int = ALIGN) -> int:
    return -(-value // unit) * unit


def align_down(value: int, unit: int = ALIGN) -> int:
    return value // unit * unit


@dataclass(frozen=True)
class Geometry:
    sector_size: int
    sectors: int
    first_lba: int
    last_lba: int

    @property
    def first(self) -> int:
        """The first usable byte."""
        return self.first_lba * self.sector_size

    @property
    def end(self) -> int:
        """One past the last usable byte."""
        return (self.last_lba + 1) * self.sector_size

    @property
    def tail(self) -> int:
        """Bytes after the usable area (GPT backup)."""
        return self.sectors * self.sector_size - self.end


def gpt_entry_sectors(sector_size: int) -> int:
    return -(-GPT_ENTRIES_BYTES // sector_size)


def geometry(label: TableLabel, size: int, sector_size: int) -> Geometry:
    sectors = size // sector_size
    if label == TableLabel.GPT:
        entries = gpt_entry_sectors(sector_size)
        return Geometry(sector_size, sectors, 2 + entries, sectors - 2 - entries)
    return Geometry(sector_size, sectors, 1, min(sectors, MBR_MAX_SECTORS) - 1)


def minimum_disk_size(label: TableLabel | None, end: int, sector_size: int) -> int:
    """The smallest disk whose usable area reaches byte `end` (a multiple of sector_size)."""
    sectors = -(-end // sector_size)
    if label == TableLabel.GPT:
        sectors += 1 + gpt_entry_sectors(sector_size)
    return sectors * sector_size
