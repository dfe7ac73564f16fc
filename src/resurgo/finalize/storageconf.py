"""Rewrites of the files that name storage: fstab, crypttab, mdadm.conf, resume.

Pure text -> text: each takes the file's content and the Identities, and returns the
new content with one LineChange per changed line. Comments, blank lines and every
line that names nothing that changed stay byte-identical; inside a changed line only
the one field changes (tabs and spacing around it are kept).
"""

from __future__ import annotations

import re

from resurgo.finalize import lines
from resurgo.finalize.identity import Identities, Kind, norm_uuid, resolve
from resurgo.finalize.model import Rewrite

# fstab(5) escapes blanks in names as octal (\040).
_OCTAL = re.compile(r"\\([0-7]{3})")


def _unescape(field: str) -> str:
    return _OCTAL.sub(lambda m: chr(int(m[1], 8)), field)


def rewrite_fstab(text: str, ids: Identities) -> Rewrite:
    """fstab: the first field (the device) of each entry whose device changed identity."""

    def edit(_n: int, content: str) -> tuple[str | None, str, list[str]]:
        if lines.is_comment(content):
            return content, "", []
        fs = lines.fields(content)
        if len(fs) < 3:
            return content, "", []
        spec, mountpoint, fstype = fs[0].group(), _unescape(fs[1].group()), fs[2].group()
        options = fs[3].group().split(",") if len(fs) > 3 else []
        if "bind" in options or "rbind" in options:
            return content, "", []
        kinds = [Kind.SWAP, Kind.FILESYSTEM] if fstype == "swap" else [Kind.FILESYSTEM]
        res = resolve(
            spec, ids, kinds, mountpoint=mountpoint if mountpoint.startswith("/") else None
        )
        warned = [f"fstab {mountpoint}: {res.warning}"] if res.warning else []
        if res.spec is None:
            return content, "", warned
        return lines.replace_span(content, fs[0].span(), res.spec), res.why, warned

    return lines.edit_lines(text, edit)


def rewrite_crypttab(text: str, ids: Identities) -> Rewrite:
    """crypttab: the source device (second field) of each mapping, and a key file that is
    a device. A LUKS source becomes UUID=; a plain (e.g. random-key swap) partition its
    PARTUUID= (or its new kernel name when it has none)."""

    def edit(_n: int, content: str) -> tuple[str | None, str, list[str]]:
        if lines.is_comment(content):
            return content, "", []
        fs = lines.fields(content)
        if len(fs) < 2:
            return content, "", []
        name = fs[0].group()
        new = content
        whys: list[str] = []
        warned: list[str] = []
        res = resolve(fs[1].group(), ids, [Kind.LUKS, Kind.PARTITION], luks_name=name)
        if res.warning:
            warned.append(f"crypttab {name}: {res.warning}")
        # Right to left, so that the spans of earlier fields stay valid.
        key_res = None
        if len(fs) > 2 and fs[2].group().startswith("/dev/"):
            device, colon, inside = fs[2].group().partition(":")
            key_res = resolve(device, ids, [Kind.FILESYSTEM, Kind.PARTITION])
            if key_res.spec is not None:
                new = lines.replace_span(new, fs[2].span(), key_res.spec + colon + inside)
                whys.append(f"key device: {key_res.why}")
        if res.spec is not None:
            new = lines.replace_span(new, fs[1].span(), res.spec)
            whys.insert(0, res.why)
        return new, "; ".join(whys), warned

    return lines.edit_lines(text, edit)


def _md_identity_new_uuid(value: str, ids: Identities) -> tuple[str, str] | None:
    """(new uuid in mdadm's spelling, record) when the array with UUID value changed it."""
    for ident in ids.of_kind([Kind.MD]):
        if ident.old_uuid and norm_uuid(ident.old_uuid) == norm_uuid(value):
            if ident.new_uuid is None or norm_uuid(ident.new_uuid) == norm_uuid(value):
                return None
            hexed = norm_uuid(ident.new_uuid)
            spelt = (
                ":".join(hexed[i : i + 8] for i in range(0, 32, 8))
                if ":" in value
                else (ident.new_uuid)
            )
            return spelt, ident.record
    return None


def _member_path(path: str, ids: Identities) -> tuple[str, str] | None:
    for ident in ids.items:
        if path in ident.old_paths and ident.new_path and ident.new_path != path:
            return ident.new_path, ident.record
    return None


def rewrite_mdadm_conf(text: str, ids: Identities) -> Rewrite:
    """mdadm.conf: ARRAY lines' UUID= (when an array got another UUID) and devices= lists,
    and DEVICE lines, whose kernel names moved. Continuation lines (leading blanks) are
    edited the same way; MAILADDR, HOMEHOST and the rest stay as they are."""
    section = ""

    def edit(_n: int, content: str) -> tuple[str | None, str, list[str]]:
        nonlocal section
        if lines.is_comment(content):
            return content, "", []
        fs = lines.fields(content)
        if not content[:1].isspace():
            section = fs[0].group().upper() if fs else ""
        if section not in ("ARRAY", "DEVICE"):
            return content, "", []
        new = content
        whys: list[str] = []
        for m in reversed(fs):
            tok = m.group()
            if section == "DEVICE":
                moved = _member_path(tok, ids) if tok.startswith("/dev/") else None
                if moved is not None:
                    new = lines.replace_span(new, m.span(), moved[0])
                    whys.append(f"{moved[1]} was {tok} and is now {moved[0]}")
                continue
            key, eq, value = tok.partition("=")
            if not eq:
                continue
            if key.lower() == "uuid":
                changed = _md_identity_new_uuid(value, ids)
                if changed is not None:
                    new = lines.replace_span(new, m.span(), f"{key}={changed[0]}")
                    whys.append(f"the UUID of {changed[1]} changed from {value} to {changed[0]}")
            elif key.lower() == "devices":
                members = value.split(",")
                out = []
                for member in members:
                    moved = _member_path(member, ids)
                    out.append(moved[0] if moved else member)
                    if moved:
                        whys.append(f"{moved[1]} was {member} and is now {moved[0]}")
                if out != members:
                    new = lines.replace_span(new, m.span(), f"{key}={','.join(out)}")
        return new, "; ".join(reversed(whys)), []

    return lines.edit_lines(text, edit)


_RESUME = re.compile(r"^(\s*(?:export\s+)?RESUME=)(\S+?)(\s*(?:#.*)?)$")


def rewrite_resume_conf(text: str, ids: Identities) -> Rewrite:
    """/etc/initramfs-tools/conf.d/resume (RESUME=...), for hibernation's swap."""

    def edit(_n: int, content: str) -> tuple[str | None, str, list[str]]:
        m = _RESUME.match(content)
        if m is None:
            return content, "", []
        value = m.group(2)
        quote = value[0] if value[:1] in "\"'" and value[-1:] == value[:1] else ""
        spec = value[1:-1] if quote else value
        if spec in ("none", "auto", ""):
            return content, "", []
        res = resolve(spec, ids, [Kind.SWAP])
        warned = [f"resume: {res.warning}"] if res.warning else []
        if res.spec is None:
            return content, "", warned
        return f"{m.group(1)}{quote}{res.spec}{quote}{m.group(3)}", res.why, warned

    return lines.edit_lines(text, edit)
