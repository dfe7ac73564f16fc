"""LUKS volumes: the header's parameters, never its key material.

LUKS2 has a machine-readable header (`cryptsetup luksDump --dump-json-metadata`), but
its JSON holds neither the UUID nor the label and subsystem, which live in the binary
header: blkid reads those. LUKS1 has only the `luksDump` report; its `Name: value`
lines are its one interface, and only the named fields below are read from it (never
the digests, salts or key slot areas).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from resurgo import run
from resurgo.errors import OperationFailed
from resurgo.model import LuksVolume
from resurgo.probe import ids

# The luksDump fields a LUKS1 description is made of.
LUKS1_FIELDS = ("Version", "Cipher name", "Cipher mode", "Hash spec", "MK bits", "UUID")


def parse_luks2_json(text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise OperationFailed(f"cryptsetup's LUKS2 metadata is not JSON: {e}") from None
    if not isinstance(data, dict):
        raise OperationFailed("cryptsetup's LUKS2 metadata is not a JSON object")
    return data


def _by_number(section: Any) -> list[dict[str, Any]]:
    # Keyslots, segments and digests are objects keyed by their number as a string.
    if not isinstance(section, dict):
        return []
    items = [(k, v) for k, v in section.items() if isinstance(v, dict)]
    return [v for k, v in sorted(items, key=lambda kv: int(kv[0]) if kv[0].isdigit() else 1 << 30)]


def luks2_volume(
    volume_id: str, device_id: str, metadata: Mapping[str, Any], blkid: Mapping[str, str]
) -> LuksVolume:
    """A LUKS2 volume from its JSON metadata and blkid's view of the header.

    blkid is the backing device's `blkid -p -o export`: UUID, LABEL, SUBSYSTEM.
    """
    segments = _by_number(metadata.get("segments"))
    crypt = next((s for s in segments if s.get("type") == "crypt"), None)
    if crypt is None:
        raise OperationFailed("the LUKS2 header has no crypt segment")
    keyslots = _by_number(metadata.get("keyslots"))
    # Every keyslot the JSON lists is in use; the volume key size is the same in all.
    first = keyslots[0] if keyslots else {}
    key_bytes = first.get("key_size")
    if not isinstance(key_bytes, int):
        raise OperationFailed("the LUKS2 header has no keyslot giving the volume key size")
    kdf = first["kdf"] if isinstance(first.get("kdf"), dict) else {}
    af = first["af"] if isinstance(first.get("af"), dict) else {}
    digests = _by_number(metadata.get("digests"))
    # PBKDF2 key slots name their hash; argon2 ones only their anti-forensic splitter's.
    hash_name = kdf.get("hash") or af.get("hash") or (digests[0].get("hash") if digests else None)
    uuid = blkid.get("UUID")
    if not uuid:
        raise OperationFailed("blkid does not report the LUKS2 header's UUID")
    sector = crypt.get("sector_size")
    return LuksVolume(
        id=volume_id,
        device=device_id,
        version=2,
        uuid=uuid,
        cipher=str(crypt.get("encryption", "")),
        key_size=key_bytes * 8,
        pbkdf=str(kdf["type"]) if kdf.get("type") else None,
        hash=str(hash_name) if hash_name else None,
        label=blkid.get("LABEL") or None,
        subsystem=blkid.get("SUBSYSTEM") or None,
        sector_size=sector if isinstance(sector, int) else None,
    )


def parse_luks1_dump(text: str) -> dict[str, str]:
    """The named header fields of a LUKS1 `cryptsetup luksDump` (see LUKS1_FIELDS)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        # Header fields start at the line's beginning; key slot details are indented.
        m = re.match(r"([A-Za-z][A-Za-z0-9 ]*):\s*(.*)$", line)
        if m and m.group(1) in LUKS1_FIELDS:
            out.setdefault(m.group(1), m.group(2).strip())
    return out


def luks1_volume(volume_id: str, device_id: str, dump_text: str) -> LuksVolume:
    fields = parse_luks1_dump(dump_text)
    if fields.get("Version") != "1":
        raise OperationFailed(f"not a LUKS1 header (version {fields.get('Version')!r})")
    missing = [f for f in LUKS1_FIELDS if not fields.get(f)]
    if missing:
        raise OperationFailed(f"cryptsetup luksDump does not give {', '.join(missing)}")
    try:
        key_size = int(fields["MK bits"])
    except ValueError:
        raise OperationFailed(f"luksDump: MK bits is {fields['MK bits']!r}") from None
    return LuksVolume(
        id=volume_id,
        device=device_id,
        version=1,
        uuid=fields["UUID"],
        cipher=f"{fields['Cipher name']}-{fields['Cipher mode']}",
        key_size=key_size,
        # LUKS1 key slots only know PBKDF2.
        pbkdf="pbkdf2",
        hash=fields["Hash spec"],
    )


def version_of(blkid: Mapping[str, str], dm_uuid: str | None = None) -> int:
    """The LUKS version from the opened mapping's dm uuid (CRYPT-LUKS2-...) or blkid."""
    if dm_uuid:
        m = re.match(r"CRYPT-LUKS(\d)-", dm_uuid)
        if m:
            return int(m.group(1))
    text = blkid.get("VERSION", "")
    if text.isdigit():
        return int(text)
    raise OperationFailed("neither the mapping nor blkid says which LUKS version this is")


def uuid_of_mapping(dm_uuid: str) -> str | None:
    """The header UUID an opened mapping's dm uuid carries (CRYPT-LUKS2-<hex>-<name>)."""
    m = re.match(r"CRYPT-LUKS\d-([0-9a-fA-F]{32})-", dm_uuid)
    if m is None:
        return None
    h = m.group(1).lower()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def describe(
    backing_kname: str, device_id: str, blkid: Mapping[str, str], dm_uuid: str | None = None
) -> LuksVolume:
    """The LUKS header on /dev/<backing_kname> (opened or not); name and size are the caller's."""
    path = f"/dev/{backing_kname}"
    volume_id = ids.luks(backing_kname)
    version = version_of(blkid, dm_uuid)
    if version == 2:
        if not blkid.get("UUID") and dm_uuid:
            blkid = {**blkid, "UUID": uuid_of_mapping(dm_uuid) or ""}
        text = run.output(["cryptsetup", "luksDump", "--dump-json-metadata", path])
        return luks2_volume(volume_id, device_id, parse_luks2_json(text), blkid)
    if version == 1:
        return luks1_volume(volume_id, device_id, run.output(["cryptsetup", "luksDump", path]))
    raise OperationFailed(f"{path}: LUKS version {version} is not described")
