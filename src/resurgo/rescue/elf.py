"""The shared libraries an ELF file needs (its DT_NEEDED entries), and where they are.

dracut brings along the libraries of the programs it installs, but only for files with
an execute bit: Python's extension modules (lib-dynload/*.so, mode 644) would arrive
without libssl, libffi, libmpdec ... Their needs are read here and handed to dracut as
files to install, which then lands them (and their links) as it does any library.
"""

from __future__ import annotations

import glob
import struct
from collections.abc import Iterable
from pathlib import Path

from resurgo.probe import rootfs

DT_NEEDED = 1
DT_STRTAB = 5
PT_LOAD = 1
PT_DYNAMIC = 2
#: Where the dynamic linker looks when ld.so.conf says nothing else (x86-64 first).
DEFAULT_DIRS = (
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
)


def needed(data: bytes) -> list[str]:
    """DT_NEEDED names of a 64-bit little-endian ELF file ([] for anything else)."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return []
    (phoff,) = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    loads: list[tuple[int, int, int]] = []  # (vaddr, offset, filesz)
    dynamic: tuple[int, int] | None = None
    for i in range(phnum):
        base = phoff + i * phentsize
        p_type, _flags, p_offset, p_vaddr, _paddr, p_filesz = struct.unpack_from(
            "<IIQQQQ", data, base
        )
        if p_type == PT_LOAD:
            loads.append((p_vaddr, p_offset, p_filesz))
        elif p_type == PT_DYNAMIC:
            dynamic = (p_offset, p_filesz)
    if dynamic is None:
        return []
    entries: list[tuple[int, int]] = []
    off, size = dynamic
    for pos in range(off, off + size, 16):
        tag, val = struct.unpack_from("<qQ", data, pos)
        if tag == 0:
            break
        entries.append((tag, val))
    strtab = next((v for t, v in entries if t == DT_STRTAB), None)
    if strtab is None:
        return []
    # DT_STRTAB is an address: find the file offset through the segment holding it.
    str_off = next((o + strtab - v for v, o, s in loads if v <= strtab < v + s), None)
    if str_off is None:
        return []
    out = []
    for tag, val in entries:
        if tag == DT_NEEDED:
            start = str_off + val
            end = data.index(b"\0", start)
            out.append(data[start:end].decode())
    return out


def has_debug_info(data: bytes) -> bool:
    """Whether a 64-bit little-endian ELF file has .debug_* sections (False for anything
    else, or a section table that does not fit in the file)."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1 or len(data) < 0x40:
        return False
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    if shentsize < 0x28 or shstrndx >= shnum or shoff + shnum * shentsize > len(data):
        return False
    names_at, names_size = struct.unpack_from("<QQ", data, shoff + shstrndx * shentsize + 0x18)
    names = data[names_at:names_at + names_size]
    for i in range(shnum):
        (name,) = struct.unpack_from("<I", data, shoff + i * shentsize)
        if names[name:name + 7] == b".debug_":
            return True
    return False


def parse_ld_so_conf(text: str) -> tuple[list[str], list[str]]:
    """(directories, include patterns) of an ld.so.conf file."""
    dirs: list[str] = []
    includes: list[str] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("include "):
            includes += line.split()[1:]
        else:
            dirs.append(line)
    return dirs, includes


def library_dirs(root: Path) -> list[str]:
    """The dynamic linker's search directories in the tree at root (inside paths)."""
    dirs: list[str] = []
    pending = ["/etc/ld.so.conf"]
    seen: set[str] = set()
    while pending:
        conf = pending.pop(0)
        if conf in seen:
            continue
        seen.add(conf)
        try:
            text = rootfs.host_path(root, conf).read_text()
        except OSError:
            continue
        found, includes = parse_ld_so_conf(text)
        dirs += found
        for pattern in includes:
            if not pattern.startswith("/"):
                pattern = f"/etc/{pattern}"
            base = str(rootfs.host_path(root, "/"))
            for match in sorted(glob.glob(str(rootfs.host_path(root, pattern)))):
                pending.append("/" + str(Path(match).relative_to(base)))
    return list(dict.fromkeys([*dirs, *DEFAULT_DIRS]))


def find_library(root: Path, name: str, dirs: Iterable[str]) -> str | None:
    for d in dirs:
        inside = f"{d.rstrip('/')}/{name}"
        real = rootfs.resolve(root, inside)
        if real is not None and rootfs.host_path(root, real).is_file():
            return inside
    return None


def library_closure(root: Path, files: Iterable[str]) -> tuple[list[str], list[str]]:
    """(libraries, names not found) that the files (inside paths) need, transitively."""
    dirs = library_dirs(root)
    found: list[str] = []
    missing: list[str] = []
    seen: set[str] = set()
    pending = list(files)
    while pending:
        inside = pending.pop(0)
        real = rootfs.resolve(root, inside)
        if real is None:
            continue
        try:
            data = rootfs.host_path(root, real).read_bytes()
        except OSError:
            continue
        for name in needed(data):
            if name in seen:
                continue
            seen.add(name)
            lib = find_library(root, name, dirs)
            if lib is None:
                missing.append(name)
                continue
            found.append(lib)
            pending.append(lib)
    return found, missing
