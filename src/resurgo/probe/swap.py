"""Swap: active areas from /proc/swaps, swap signatures (blkid) and the swap header itself."""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from resurgo.errors import OperationFailed
from resurgo.model import Swap
from resurgo.probe import ids
from resurgo.probe.mounts import unescape

PROC_SWAPS = Path("/proc/swaps")

_SIGNATURES = (b"SWAPSPACE2", b"SWAP-SPACE")
# Page sizes Linux runs with; the signature sits in the last 10 bytes of the first page.
_PAGE_SIZES = (4096, 8192, 16384, 65536)
# struct swap_header.info: version, last_page, nr_badpages, uuid[16], label[16], at byte 1024.
_INFO = struct.Struct("=III16s16s")


@dataclass(frozen=True)
class ActiveSwap:
    path: str
    is_file: bool
    size: int
    priority: int


@dataclass(frozen=True)
class SwapHeader:
    page_size: int
    # Bytes the swap area spans, header page included.
    size: int


def parse_proc_swaps(text: str) -> list[ActiveSwap]:
    out: list[ActiveSwap] = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 5:
            continue
        try:
            out.append(
                ActiveSwap(
                    path=unescape(fields[0]),
                    is_file=fields[1] == "file",
                    size=int(fields[2]) * 1024,
                    priority=int(fields[4]),
                )
            )
        except ValueError:
            raise OperationFailed(f"cannot read /proc/swaps line {line!r}") from None
    return out


def read_proc_swaps(path: Path = PROC_SWAPS) -> list[ActiveSwap]:
    try:
        return parse_proc_swaps(path.read_text(errors="surrogateescape"))
    except FileNotFoundError:
        return []


def parse_swap_header(data: bytes) -> SwapHeader | None:
    """The page size and extent of a swap area from its first page(s), or None if none is there."""
    for page in _PAGE_SIZES:
        if len(data) >= page and data[page - 10 : page] in _SIGNATURES:
            # mkswap writes the header in the byte order of the machine it runs on.
            _version, last_page, *_ = _INFO.unpack_from(data, 1024)
            return SwapHeader(page_size=page, size=(last_page + 1) * page)
    return None


def read_swap_header(device: str) -> SwapHeader | None:
    try:
        with open(device, "rb") as f:
            return parse_swap_header(f.read(max(_PAGE_SIZES)))
    except OSError as e:
        raise OperationFailed(f"cannot read the swap header of {device}: {e.strerror}") from None


def device_swap(
    kname: str,
    device_id: str,
    device: str,
    device_size: int,
    blkid: Mapping[str, str],
    active: ActiveSwap | None,
) -> Swap:
    header = read_swap_header(device)
    return Swap(
        id=ids.swap_device(kname),
        size=header.size if header else device_size,
        device=device_id,
        uuid=blkid.get("UUID") or None,
        label=blkid.get("LABEL") or None,
        page_size=header.page_size if header else None,
        priority=active.priority if active else None,
        active=active is not None,
    )


def file_swap(
    active: ActiveSwap,
    relative_path: str,
    filesystem_id: str,
    blkid: Mapping[str, str],
) -> Swap:
    """An active swap file; relative_path is where the described system sees it."""
    header = read_swap_header(active.path)
    return Swap(
        id=ids.swap_file(relative_path),
        size=header.size if header else active.size,
        file=relative_path,
        filesystem=filesystem_id,
        uuid=blkid.get("UUID") or None,
        label=blkid.get("LABEL") or None,
        page_size=header.page_size if header else None,
        priority=active.priority,
        active=True,
    )
