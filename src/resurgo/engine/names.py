"""Paths inside an archive: validation, walk order, and the manifest's text escaping.

A path is the bytes of a relative path below the saved tree's root, components joined by
``/``; the root itself is ``.``. Names are bytes because Linux names are: they need not be
UTF-8. Every path read from an archive or manifest passes ``check_path`` before it is used,
so a restore never leaves its target directory through ``..``, ``/`` or an empty component.
"""

from __future__ import annotations

import re

ROOT = b"."
# A component is a directory entry's name: the kernel's NAME_MAX. A path is restored one
# directory at a time (targets.DirCache), so it may be longer than PATH_MAX (4096) and
# deep trees are kept; MAX_PATH bounds what one entry may make a reader hold.
NAME_MAX = 255
MAX_PATH = 32 << 10


class BadPath(ValueError):
    """A path that may not appear in an archive or manifest."""


def check_path(path: bytes) -> bytes:
    """``path`` if it is a safe relative path (or the root ``.``), else BadPath."""
    if path == ROOT:
        return path
    if not path or b"\0" in path or path[:1] == b"/" or path[-1:] == b"/" or b"//" in path:
        raise BadPath(f"not a relative path: {path!r}")
    # Most paths are shorter than a name may be: only a longer one is split.
    if len(path) > NAME_MAX and (
        len(path) > MAX_PATH or any(len(part) > NAME_MAX for part in path.split(b"/"))
    ):
        raise BadPath(f"a path longer than {MAX_PATH} bytes or with a name longer than "
                      f"{NAME_MAX}: {path[:64]!r}...")
    # Only a component that starts with a dot can be . or ..: most paths have none.
    if (path[:1] == b"." or b"/." in path) and any(
        part in (b".", b"..") for part in path.split(b"/")
    ):
        raise BadPath(f"unsafe path component in {path!r}")
    return path


def components(path: bytes) -> tuple[bytes, ...]:
    """The components of a path; the root has none."""
    return () if path == ROOT else tuple(path.split(b"/"))


def walk_key(path: bytes) -> tuple[bytes, ...]:
    """The sort key of the walk order: depth first, pre-order, names in byte order.

    Archives and manifests list entries in this order, so two of them can be merged as
    streams (an incremental save against the previous manifest, a restore against an
    archive) without holding either in memory.
    """
    return components(path)


def order_key(path: bytes) -> bytes:
    """walk_key as one byte string: ``/`` becomes NUL, which sorts before every byte a
    name can hold, so comparing keys compares walk order without splitting paths."""
    return b"" if path == ROOT else path.replace(b"/", b"\0")


def join(parent: bytes, name: bytes) -> bytes:
    return name if parent == ROOT else parent + b"/" + name


def parent_of(path: bytes) -> bytes:
    head, sep, _ = path.rpartition(b"/")
    return head if sep else ROOT


# Text escaping of byte strings in the manifest: printable UTF-8 stays as it is (a reader
# can grep it); backslash, control characters, DEL and bytes that are not UTF-8 become
# \xHH. Tabs and newlines are control characters, so a field never contains a separator.
_NEEDS_ESCAPE = re.compile(r"[\x00-\x1f\x7f\\\udc80-\udcff]")
_ESCAPE = re.compile(rb"\\x([0-9a-f]{2})")


def _escape_char(m: re.Match[str]) -> str:
    c = m.group(0)
    code = ord(c)
    byte = code - 0xDC00 if code >= 0xDC80 else code
    return f"\\x{byte:02x}"


def escape(raw: bytes) -> str:
    text = raw.decode("utf-8", "surrogateescape")
    if _NEEDS_ESCAPE.search(text) is None:
        return text
    return _NEEDS_ESCAPE.sub(_escape_char, text)


def unescape(text: str) -> bytes:
    raw = text.encode("utf-8", "surrogateescape")
    if b"\\" not in raw:
        return raw
    if re.search(rb"\\(?!x[0-9a-f]{2})", raw):
        raise BadPath(f"bad escape in {text!r}")
    return _ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), raw)
