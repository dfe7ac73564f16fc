"""Partition types: the GPT type GUIDs and MBR type codes resurgo knows, named and given
the roles it acts on (an ESP, a BIOS boot partition, an extended partition...).

A description keeps a partition's type as the partition table spells it (sfdisk writes
GUIDs in upper case, MBR codes as "ef", tools and people as "0xEF" or "0x05"): compare
codes only through key() or the predicates here, never by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    ESP = "esp"
    BIOS_BOOT = "bios-boot"
    LINUX = "linux"
    SWAP = "swap"
    LVM = "lvm"
    RAID = "raid"
    LUKS = "luks"
    EXTENDED = "extended"


@dataclass(frozen=True)
class PartType:
    code: str  # as key() spells it: a lower-case GUID, or an MBR code without 0x
    name: str  # as fdisk names it
    role: Role | None = None

    @property
    def gpt(self) -> bool:
        return len(self.code) > 4


TABLE: tuple[PartType, ...] = (
    PartType("c12a7328-f81f-11d2-ba4b-00a0c93ec93b", "EFI System", Role.ESP),
    PartType("21686148-6449-6e6f-744e-656564454649", "BIOS boot", Role.BIOS_BOOT),
    PartType("0fc63daf-8483-4772-8e79-3d69d8477de4", "Linux filesystem", Role.LINUX),
    PartType("0657fd6d-a4ab-43c4-84e5-0933c84b4f4f", "Linux swap", Role.SWAP),
    PartType("e6d6d379-f507-44c2-a23c-238f2a3df928", "Linux LVM", Role.LVM),
    PartType("a19d880f-05fc-4d3b-a006-743f0f84911e", "Linux RAID", Role.RAID),
    PartType("bc13c2ff-59e6-4262-a352-b275fd6f7172", "Linux extended boot"),
    PartType("4f68bce3-e8cd-4db1-96e7-fbcaf984b709", "Linux root (x86-64)"),
    PartType("933ac7e1-2eb4-4f13-b844-0e14e2aef915", "Linux home"),
    PartType("ca7d7ccb-63ed-4c53-861c-1742536059cc", "Linux LUKS", Role.LUKS),
    PartType("ebd0a0a2-b9e5-4433-87c0-68b6b72699c7", "Microsoft basic data"),
    PartType("83", "Linux", Role.LINUX),
    PartType("82", "Linux swap", Role.SWAP),
    PartType("8e", "Linux LVM", Role.LVM),
    PartType("fd", "Linux RAID", Role.RAID),
    PartType("5", "Extended", Role.EXTENDED),
    PartType("f", "W95 Ext'd (LBA)", Role.EXTENDED),
    PartType("85", "Linux extended", Role.EXTENDED),
    PartType("ef", "EFI (FAT)", Role.ESP),
    PartType("b", "W95 FAT32"),
    PartType("c", "W95 FAT32 (LBA)"),
    PartType("e", "W95 FAT16 (LBA)"),
    PartType("6", "FAT16"),
    PartType("7", "HPFS/NTFS/exFAT"),
)

_BY_CODE = {t.code: t for t in TABLE}


def key(code: str) -> str:
    """A partition type as compared: lower case, MBR codes without 0x and leading zeros."""
    code = code.strip().lower()
    return code if len(code) > 4 else (code.removeprefix("0x").lstrip("0") or "0")


def lookup(code: str) -> PartType | None:
    return _BY_CODE.get(key(code))


def name(code: str) -> str:
    """fdisk's name of a type, or the code itself for one not in the table."""
    found = lookup(code)
    return found.name if found is not None else code


def role(code: str) -> Role | None:
    found = lookup(code)
    return found.role if found is not None else None


def is_esp(code: str) -> bool:
    return role(code) == Role.ESP


def is_bios_boot(code: str) -> bool:
    return role(code) == Role.BIOS_BOOT


def is_extended(code: str) -> bool:
    """An MBR extended partition (CHS, LBA or Linux), which holds the logical ones."""
    return role(code) == Role.EXTENDED


def gpt_guid(type_name: str) -> str:
    """The GPT type GUID fdisk names type_name, upper case as sfdisk writes it."""
    for t in TABLE:
        if t.name == type_name and t.gpt:
            return t.code.upper()
    raise KeyError(f"no GPT partition type named {type_name!r}")
