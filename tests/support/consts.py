"""Sizes and partition type codes, as the tests spell them.

The partition type GUIDs are those of resurgo's table (resurgo.parttypes), lower case
as descriptions keep them; sfdisk writes them upper case.
"""

from __future__ import annotations

from resurgo import parttypes

KIB = 1 << 10
MIB = 1 << 20
GIB = 1 << 30
TIB = 1 << 40


def _gpt(name: str) -> str:
    return parttypes.gpt_guid(name).lower()


ESP = _gpt("EFI System")
BIOS = _gpt("BIOS boot")
LINUX = _gpt("Linux filesystem")
SWAP = _gpt("Linux swap")
LVM = _gpt("Linux LVM")
RAID = _gpt("Linux RAID")
HOME = _gpt("Linux home")
ROOT_X86_64 = _gpt("Linux root (x86-64)")
