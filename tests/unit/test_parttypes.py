"""The one table of partition types, and the one way of comparing their codes."""

from __future__ import annotations

import pytest

from resurgo import parttypes
from resurgo.parttypes import Role


@pytest.mark.parametrize(
    "code",
    ["c12a7328-f81f-11d2-ba4b-00a0c93ec93b", "C12A7328-F81F-11D2-BA4B-00A0C93EC93B", "ef", "EF",
     "0xef", "0xEF", "0ef", " ef "],
)
def test_esp_spellings(code: str) -> None:
    assert parttypes.is_esp(code)
    assert not parttypes.is_bios_boot(code)


@pytest.mark.parametrize("code", ["83", "0fc63daf-8483-4772-8e79-3d69d8477de4", "e", "0xe0", ""])
def test_not_esp(code: str) -> None:
    assert not parttypes.is_esp(code)


def test_bios_boot() -> None:
    assert parttypes.is_bios_boot("21686148-6449-6E6F-744E-656564454649")
    assert parttypes.is_bios_boot("21686148-6449-6e6f-744e-656564454649")
    assert not parttypes.is_bios_boot("ef")


@pytest.mark.parametrize("code", ["5", "05", "0x05", "f", "0F", "0x0f", "85"])
def test_extended(code: str) -> None:
    assert parttypes.is_extended(code)


@pytest.mark.parametrize("code", ["83", "8e", "50", "a19d880f-05fc-4d3b-a006-743f0f84911e", "z"])
def test_not_extended(code: str) -> None:
    assert not parttypes.is_extended(code)


def test_names() -> None:
    assert parttypes.name("C12A7328-F81F-11D2-BA4B-00A0C93EC93B") == "EFI System"
    assert parttypes.name("0xef") == "EFI (FAT)"
    assert parttypes.name("05") == "Extended"
    assert parttypes.name("fd") == "Linux RAID"
    # A type not in the table is shown as it is spelt.
    assert parttypes.name("0xDA") == "0xDA"
    assert parttypes.role("8e") == Role.LVM
    assert parttypes.role("da") is None


def test_table_is_keyed_and_unique() -> None:
    codes = [t.code for t in parttypes.TABLE]
    assert len(set(codes)) == len(codes)
    assert all(parttypes.key(c) == c for c in codes)
    gpt_names = [t.name for t in parttypes.TABLE if t.gpt]
    assert len(set(gpt_names)) == len(gpt_names)


def test_gpt_guid() -> None:
    assert parttypes.gpt_guid("EFI System") == "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
    assert parttypes.is_esp(parttypes.gpt_guid("EFI System"))
    with pytest.raises(KeyError):
        parttypes.gpt_guid("EFI (FAT)")  # an MBR type's name
