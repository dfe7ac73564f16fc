"""Partition tables from `sfdisk --json`: GPT and MBR, extended and logical partitions."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from resurgo import parttypes, run
from resurgo.errors import OperationFailed
from resurgo.model import Partition, PartitionKind, PartitionTable, TableLabel
from resurgo.probe import ids


@dataclass(frozen=True)
class TableEntry:
    """One partition as sfdisk lists it; sizes in sectors of the table's sector size."""

    node: str
    number: int
    start: int
    size: int
    type: str
    kind: PartitionKind
    uuid: str | None = None
    name: str | None = None
    attrs: str | None = None
    bootable: bool = False


@dataclass(frozen=True)
class ParsedTable:
    table: PartitionTable
    # None when sfdisk is too old to say: the disk's logical sector size applies.
    sector_size: int | None
    entries: tuple[TableEntry, ...]


def _number(node: str) -> int:
    m = re.search(r"(\d+)$", node)
    if m is None:
        raise OperationFailed(f"sfdisk listed a partition {node!r} without a number")
    return int(m.group(1))


def _kind(label: TableLabel, number: int, type_code: str) -> PartitionKind:
    if label != TableLabel.DOS:
        return PartitionKind.PRIMARY
    if number > 4:
        return PartitionKind.LOGICAL
    return PartitionKind.EXTENDED if parttypes.is_extended(type_code) else PartitionKind.PRIMARY


def _text(entry: Mapping[str, Any], key: str) -> str | None:
    value = entry.get(key)
    return str(value) if value not in (None, "") else None


def parse_sfdisk_json(text: str) -> ParsedTable:
    """The partition table in sfdisk's JSON dump (util-linux 2.26 and later)."""
    try:
        pt = json.loads(text)["partitiontable"]
        label = TableLabel(pt["label"])
    except (ValueError, KeyError, TypeError) as e:
        raise OperationFailed(f"cannot read sfdisk's JSON output: {e}") from None
    if pt.get("unit", "sectors") != "sectors":
        raise OperationFailed(f"sfdisk reported unit {pt.get('unit')!r}, expected sectors")
    entries = []
    for p in pt.get("partitions", []):
        number = _number(p["node"])
        type_code = str(p["type"])
        entries.append(
            TableEntry(
                node=p["node"],
                number=number,
                start=int(p["start"]),
                size=int(p["size"]),
                type=type_code,
                kind=_kind(label, number, type_code),
                uuid=_text(p, "uuid"),
                name=_text(p, "name"),
                attrs=_text(p, "attrs"),
                bootable=bool(p.get("bootable", False)),
            )
        )
    table = PartitionTable(
        label=label,
        id=str(pt.get("id", "")),
        first_lba=pt.get("firstlba"),
        last_lba=pt.get("lastlba"),
    )
    sector_size = pt.get("sectorsize")
    return ParsedTable(table, int(sector_size) if sector_size else None, tuple(entries))


def read_table(device: str) -> ParsedTable:
    return parse_sfdisk_json(run.output(["sfdisk", "--json", device]))


def partition_records(
    parsed: ParsedTable,
    disk_id: str,
    sector_size: int,
    knames: Mapping[int, str],
) -> list[tuple[str, Partition]]:
    """(kernel name, record) of each partition in the table.

    knames maps partition numbers to the names the kernel gave them; a partition
    the kernel does not know (table written but not re-read) is named after
    sfdisk's device node.
    """
    out: list[tuple[str, Partition]] = []
    size = parsed.sector_size or sector_size
    for e in parsed.entries:
        kname = knames.get(e.number, os.path.basename(e.node))
        out.append(
            (
                kname,
                Partition(
                    id=ids.partition(kname),
                    disk=disk_id,
                    number=e.number,
                    start=e.start,
                    size=e.size,
                    sector_size=size,
                    type=e.type,
                    kind=e.kind,
                    path=f"/dev/{kname}",
                    uuid=e.uuid,
                    name=e.name,
                    attrs=e.attrs,
                    bootable=e.bootable,
                ),
            )
        )
    return out
