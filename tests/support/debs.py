"""Debian packages made in memory for the tests: any member, hostile ones included."""

from __future__ import annotations

import gzip
import hashlib
import io
import lzma
import subprocess
import tarfile
from dataclasses import dataclass


@dataclass(frozen=True)
class Member:
    name: str  # as the tar holds it ("./usr/bin/x", "../x", "/etc/x")
    data: bytes = b""
    kind: bytes = tarfile.REGTYPE
    target: str = ""  # symlink or hard link target
    mode: int = 0o644


def tar(members: list[Member]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as t:
        for m in members:
            info = tarfile.TarInfo(m.name)
            info.type = m.kind
            info.mode = m.mode
            info.linkname = m.target
            if m.kind == tarfile.CHRTYPE:
                info.devmajor, info.devminor = 8, 0
            if m.kind in (tarfile.REGTYPE, tarfile.AREGTYPE):
                info.size = len(m.data)
                t.addfile(info, io.BytesIO(m.data))
            else:
                t.addfile(info)
    return out.getvalue()


def compress(data: bytes, how: str) -> bytes:
    if how == "xz":
        return lzma.compress(data)
    if how == "gz":
        return gzip.compress(data)
    if how == "zst":
        return subprocess.run(["zstd", "-q", "-c"], input=data, capture_output=True,
                              check=True).stdout
    return data


def ar(members: list[tuple[str, bytes]]) -> bytes:
    out = bytearray(b"!<arch>\n")
    for name, data in members:
        out += (f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n").encode()
        out += data
        if len(data) % 2:
            out += b"\n"
    return bytes(out)


def deb(package: str, version: str, arch: str, members: list[Member], *,
        compression: str = "xz", md5sums: dict[str, str] | None = None,
        control_files: tuple[Member, ...] = ()) -> bytes:
    """A .deb whose md5sums lists its regular members (or ``md5sums`` as given), its control
    archive with ``control_files`` too (maintainer scripts, ...)."""
    if md5sums is None:
        md5sums = {m.name.removeprefix("./"): hashlib.md5(m.data).hexdigest()
                   for m in members if m.kind == tarfile.REGTYPE}
    control = (f"Package: {package}\nVersion: {version}\nArchitecture: {arch}\n"
               "Maintainer: test\nDescription: test\n").encode()
    sums = "".join(f"{md5}  {path}\n" for path, md5 in md5sums.items()).encode()
    control_tar = tar([Member("./control", control), Member("./md5sums", sums),
                       *control_files])
    suffix = "" if compression == "none" else f".{compression}"
    return ar([
        ("debian-binary", b"2.0\n"),
        (f"control.tar{suffix}", compress(control_tar, compression)),
        (f"data.tar{suffix}", compress(tar(members), compression)),
    ])
