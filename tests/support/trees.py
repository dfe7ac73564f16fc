"""For the engine's storage tests: a tree with every kind of metadata, and an independent
walker that describes a tree (lstat, every xattr, content sha256, data map of sparse
files, device numbers, symlink targets, hard-link groups) so two trees can be compared
metadata for metadata and byte for byte, without using any of the engine's code."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import socket
import stat
import subprocess
from pathlib import Path
from typing import Any

from tests.support.consts import MIB

Snapshot = dict[bytes, dict[str, Any]]

DEEP_LEVELS = 40
DEEP_NAME = "d" * 120  # 40 levels of 121 bytes: deeper than PATH_MAX (4096)


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


def write(path: Path, data: bytes, mode: int = 0o644, owner: tuple[int, int] = (0, 0),
          mtime_ns: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chown(path, *owner)
    os.chmod(path, mode)
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))
    return path


def sparse(path: Path, size: int, extents: list[tuple[int, bytes]]) -> None:
    with open(path, "wb") as f:
        f.truncate(size)
        for offset, data in extents:
            f.seek(offset)
            f.write(data)


def try_setxattr(path: Path | str, name: str, value: bytes, follow: bool = True) -> bool:
    try:
        os.setxattr(path, name, value, follow_symlinks=follow)
        return True
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EPERM, errno.EINVAL):
            return False
        raise


def build_rich_tree(root: Path, *, many: int = 3000) -> None:
    """Every kind of entry and metadata the engine must keep."""
    rnd = os.urandom
    write(root / "plain.txt", b"plain text\n" * 100)
    write(root / "empty", b"")
    write(root / "zero-mode", b"no access", mode=0o000)
    write(root / "setuid-bin", b"\x7fELF" + rnd(2000), mode=0o4755)
    write(root / "setgid-file", rnd(100), mode=0o2755, owner=(1000, 1000))
    write(root / "nameless-owner", b"owned by nobody we know", mode=0o640, owner=(4242, 4343))
    write(root / "nsec", b"ns", mtime_ns=1_234_567_890_123_456_789)
    write(root / "before-1970", b"old", mtime_ns=-123_456_789)
    write(root / "big.bin", rnd(3 << 20))  # more than a slot's file: the streaming path
    sparse(root / "sparse", 10 << 20, [(1 << 20, rnd(4096)), (5 << 20, rnd(8192))])
    sparse(root / "sparse-big", 8 << 20, [(2 << 20, rnd(3 << 19)), (5 << 20, rnd(1 << 20))])
    sparse(root / "all-hole", 5 << 20, [])
    # hard links across directories, and a pair in one directory
    write(root / "links/a/h1", b"linked three times", owner=(1000, 1000), mode=0o600)
    (root / "links/b").mkdir()
    (root / "links/c/d").mkdir(parents=True)
    os.link(root / "links/a/h1", root / "links/b/h2")
    os.link(root / "links/a/h1", root / "links/c/d/h3")
    write(root / "links/pair1", rnd(5000))
    os.link(root / "links/pair1", root / "links/pair2")
    # symlinks
    (root / "sym").mkdir()
    os.symlink("nothere", root / "sym/dangling")
    os.symlink("/etc/passwd", root / "sym/absolute")
    os.symlink("../links", root / "sym/todir")
    os.symlink("x" * 1000, root / "sym/long")
    os.lchown(root / "sym/dangling", 4242, 4343)
    os.utime(root / "sym/absolute", ns=(1, 987_654_321_000_000_001), follow_symlinks=False)
    # devices and a fifo
    (root / "dev").mkdir()
    os.mknod(root / "dev/null-like", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.chmod(root / "dev/null-like", 0o666)
    os.mknod(root / "dev/loop-like", stat.S_IFBLK | 0o660, os.makedev(7, 200))
    os.chown(root / "dev/loop-like", 0, 6)
    os.mkfifo(root / "dev/fifo", 0o620)
    os.chmod(root / "dev/fifo", 0o620)
    # extended attributes of every namespace
    write(root / "xattr/user", b"u")
    os.setxattr(root / "xattr/user", "user.comment", b"hello")
    os.setxattr(root / "xattr/user", "user.binary", b"\x00\xff\x01")
    write(root / "xattr/trusted", b"t")
    os.setxattr(root / "xattr/trusted", "trusted.secret", b"t-value")
    write(root / "xattr/selinux", b"s")
    try_setxattr(root / "xattr/selinux", "security.selinux", b"system_u:object_r:etc_t:s0\0")
    (root / "xattr/dir").mkdir()
    os.setxattr(root / "xattr/dir", "user.dirattr", b"d")
    os.symlink("user", root / "xattr/symlink")
    os.setxattr(root / "xattr/symlink", "trusted.link", b"l", follow_symlinks=False)
    # POSIX ACLs (access and default) and a file capability on a non-root file
    write(root / "acl/file", b"acl")
    sh("setfacl", "-m", "u:4242:rwx,g:4343:r", str(root / "acl/file"))
    (root / "acl/dir").mkdir()
    sh("setfacl", "-m", "u:4242:rx", "-d", "-m", "u:4242:rwx", str(root / "acl/dir"))
    write(root / "caps/ping", b"#!/bin/true\n", mode=0o750, owner=(1000, 1000))
    sh("setcap", "cap_net_raw+ep", str(root / "caps/ping"))
    # directory modes
    (root / "modes/sticky").mkdir(parents=True)
    os.chmod(root / "modes/sticky", 0o1777)
    (root / "modes/setgid-dir").mkdir()
    os.chown(root / "modes/setgid-dir", 0, 4343)
    os.chmod(root / "modes/setgid-dir", 0o2775)
    write(root / "modes/setgid-dir/inside", b"group of the directory", owner=(0, 4343))
    (root / "modes/readonly-dir").mkdir()
    write(root / "modes/readonly-dir/inside", b"ro")
    os.chmod(root / "modes/readonly-dir", 0o555)
    # names
    names = root / "names"
    names.mkdir()
    for raw in (b"L" * 255, b"caf\xe9", b"tab\tnew\nline\\back", "ünïcödé".encode(),
                b" leading space", b"-dash", b"\xff\xfe"):
        write(Path(os.fsdecode(bytes(names) + b"/" + raw)), raw)
    # deeper than PATH_MAX
    (root / "deep").mkdir()
    fd = os.open(root / "deep", os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(DEEP_LEVELS):
        os.mkdir(DEEP_NAME, dir_fd=fd)
        child = os.open(DEEP_NAME, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = child
    bottom = os.open("bottom.txt", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
    os.write(bottom, b"at the bottom")
    os.close(bottom)
    os.close(fd)
    # many small files: enough records for the writer processes
    for i in range(many):
        write(root / f"many/{i % 3}/f{i:05d}", rnd(i % 700))
    (root / "emptydir").mkdir()
    with contextlib.chdir(root):
        s = socket.socket(socket.AF_UNIX)
        s.bind("sock")
        s.close()
    os.chmod(root, 0o751)
    os.setxattr(root, "user.root", b"r")


def _xattrs(path: bytes) -> dict[str, bytes]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EPERM):
            return {}
        raise
    # XFS shows its ACLs also as trusted.SGI_ACL_*: the same ACLs as system.posix_acl_*.
    return {n: os.getxattr(path, n, follow_symlinks=False) for n in names
            if not n.startswith("trusted.SGI_ACL_")}


def _data_map(fd: int, size: int) -> list[tuple[int, int]]:
    extents = []
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as e:
            if e.errno == errno.ENXIO:
                break
            raise
        end = os.lseek(fd, start, os.SEEK_HOLE)
        extents.append((start, min(end, size) - start))
        pos = end
    return extents


def _describe(dir_fd: int, name: bytes, st: os.stat_result) -> dict[str, Any]:
    proc = b"/proc/self/fd/%d/%s" % (dir_fd, name)
    d: dict[str, Any] = {
        "mode": st.st_mode, "uid": st.st_uid, "gid": st.st_gid, "mtime_ns": st.st_mtime_ns,
        "xattrs": _xattrs(proc), "ino": st.st_ino, "nlink": st.st_nlink,
    }
    if stat.S_ISREG(st.st_mode):
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dir_fd)
        try:
            h = hashlib.sha256()
            while chunk := os.read(fd, 1 << 20):
                h.update(chunk)
            d["sha256"] = h.hexdigest()
            d["size"] = st.st_size
            if st.st_blocks * 512 < st.st_size:
                d["data_map"] = _data_map(fd, st.st_size)
                d["blocks"] = st.st_blocks
        finally:
            os.close(fd)
    elif stat.S_ISLNK(st.st_mode):
        d["target"] = os.readlink(name, dir_fd=dir_fd)
    elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        d["rdev"] = st.st_rdev
    return d


def snapshot(root: Path | str) -> Snapshot:
    """Every entry below root (not crossing mounts; sockets left out), by relative path."""
    top = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    dev = os.fstat(top).st_dev
    result: Snapshot = {b".": _describe(top, b".", os.fstat(top))}

    def visit(dir_fd: int, rel: bytes) -> None:
        for entry in os.scandir(dir_fd):
            name = os.fsencode(entry.name)
            path = rel + b"/" + name if rel else name
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            if stat.S_ISSOCK(st.st_mode):
                continue
            result[path] = _describe(dir_fd, name, st)
            if stat.S_ISDIR(st.st_mode) and st.st_dev == dev:
                child = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW,
                                dir_fd=dir_fd)
                try:
                    visit(child, path)
                finally:
                    os.close(child)

    try:
        visit(top, b"")
    finally:
        os.close(top)
    return result


def link_groups(snap: Snapshot) -> list[list[bytes]]:
    groups: dict[int, list[bytes]] = {}
    for path, d in snap.items():
        if "sha256" in d and d["nlink"] > 1:
            groups.setdefault(d["ino"], []).append(path)
    return sorted(sorted(g) for g in groups.values())


def comparable(snap: Snapshot, *, exact_sparse: bool = True) -> Snapshot:
    """The snapshot without what a restore cannot keep (inode numbers), and with sparse
    files reduced to "sparse" where the file system may allocate differently."""
    out: Snapshot = {}
    for path, d in snap.items():
        d = {k: v for k, v in d.items() if k != "ino"}
        if stat.S_ISDIR(d["mode"]):
            del d["nlink"]  # counts subdirectories: those of an emptied one are gone
        if "data_map" in d and not exact_sparse:
            d["data_map"] = "sparse"
            d["blocks"] = "fewer than the size"
        out[path] = d
    return out


def without(snap: Snapshot, *, excluded: tuple[bytes, ...] = (),
            emptied: tuple[bytes, ...] = ()) -> Snapshot:
    """What a save with these excludes and emptied directories should restore."""
    def dropped(path: bytes) -> bool:
        return any(path == e or path.startswith(e + b"/") for e in excluded) or any(
            path.startswith(e + b"/") for e in emptied)

    return {p: d for p, d in snap.items() if not dropped(p)}


# The directories a save empties (their contents are the running system's, not saved).
EMPTIED_BY_SAVE = (b"proc", b"sys", b"dev", b"run", b"tmp")


def system_snapshot(root: Path, spot: Path) -> Snapshot:
    """The filesystem at root as the walker sees it, through a plain bind mount at spot
    (nothing mounted below it seen), the emptied directories' contents left out as save
    leaves them."""
    spot.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "--bind", str(root), str(spot)], check=True)
    try:
        return without(snapshot(spot), emptied=EMPTIED_BY_SAVE)
    finally:
        subprocess.run(["umount", str(spot)], check=True)


def assert_same_trees(expected: Snapshot, actual: Snapshot, *, exact_sparse: bool = True) -> None:
    assert sorted(actual) == sorted(expected), (
        f"only expected: {sorted(set(expected) - set(actual))[:10]}, "
        f"only restored: {sorted(set(actual) - set(expected))[:10]}"
    )
    exp, act = comparable(expected, exact_sparse=exact_sparse), comparable(
        actual, exact_sparse=exact_sparse)
    different = [p for p in exp if exp[p] != act[p]]
    assert not different, "\n".join(
        f"{p!r}:\n  expected {exp[p]}\n  restored {act[p]}" for p in different[:5])
    assert link_groups(actual) == link_groups(expected)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(4 * MIB):
            h.update(chunk)
    return h.hexdigest()
