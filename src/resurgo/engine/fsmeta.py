"""Reading and applying the metadata of one file: kinds, extended attributes, data extents.

Everything works relative to an open directory (``dir_fd`` + a name), never on a full
path, so trees deeper than PATH_MAX work and a restore never follows a symlink it did not
mean to. Extended attributes cover every namespace the kernel lets root read: user,
trusted, security (SELinux labels, file capabilities) and system.posix_acl_* (ACLs).
"""

from __future__ import annotations

import errno
import os
import stat

from resurgo.engine.records import BLK, CHR, DIR, FIFO, FILE, MAX_EXTENTS, SYMLINK

CAPABILITY = "security.capability"
# XFS lists its on-disk form of the POSIX ACLs as these too (to root): the same ACLs as
# system.posix_acl_*, which carry them to any file system. Saving both would make a tree
# saved on XFS differ from itself restored anywhere else.
ALIASES = frozenset(("trusted.SGI_ACL_FILE", "trusted.SGI_ACL_DEFAULT"))

_KIND_OF_FORMAT = {
    stat.S_IFREG: FILE,
    stat.S_IFDIR: DIR,
    stat.S_IFLNK: SYMLINK,
    stat.S_IFCHR: CHR,
    stat.S_IFBLK: BLK,
    stat.S_IFIFO: FIFO,
}


def kind_of(mode: int) -> str | None:
    """The entry kind of an st_mode; None for what is never saved (sockets)."""
    return _KIND_OF_FORMAT.get(stat.S_IFMT(mode))


def proc_path(dir_fd: int, name: bytes) -> bytes:
    """A path naming ``name`` in ``dir_fd`` for the calls that take no dir_fd (l*xattr).

    /proc/self/fd/N resolves to the directory itself, and the last component is looked up
    there without following it when the call is made with follow_symlinks=False.
    """
    return b"/proc/self/fd/%d/%s" % (dir_fd, name)


def _unsupported(e: OSError) -> bool:
    return e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENODATA, errno.EPERM)


def read_xattrs(target: int | bytes) -> tuple[tuple[str, bytes], ...]:
    """All extended attributes of an open file (fd) or of a /proc path (not followed)."""
    follow = isinstance(target, int)
    try:
        names = os.listxattr(target, follow_symlinks=follow)
    except OSError as e:
        if _unsupported(e):
            return ()
        raise
    if not names:
        return ()
    result = []
    for name in sorted(names):
        if name in ALIASES:
            continue
        try:
            result.append((name, os.getxattr(target, name, follow_symlinks=follow)))
        except OSError as e:
            if e.errno != errno.ENODATA:  # removed meanwhile
                raise
    return tuple(result)


def data_extents(fd: int, size: int, blocks: int) -> tuple[tuple[int, int], ...]:
    """(offset, length) of the data of a file; the gaps are holes (read back as zeros).

    Only a file that occupies fewer blocks than its size can have holes, so others are one
    extent without asking; the rest are mapped with SEEK_DATA/SEEK_HOLE.
    """
    if size == 0:
        return ()
    if blocks * 512 >= size:
        return ((0, size),)
    extents = []
    offset = 0
    try:
        while offset < size:
            try:
                start = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError as e:
                if e.errno == errno.ENXIO:  # only a hole remains
                    break
                raise
            if start >= size:
                break
            end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
            extents.append((start, end - start))
            offset = end
    except OSError as e:
        if e.errno in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
            return ((0, size),)  # the file system cannot tell: store it dense
        raise
    finally:
        os.lseek(fd, 0, os.SEEK_SET)
    if len(extents) > MAX_EXTENTS:
        # More than a header may list: the last one covers the rest, its holes stored as
        # zeros (the content, and so the digest, is the same).
        last = extents[MAX_EXTENTS - 1][0]
        end = extents[-1][0] + extents[-1][1]
        extents[MAX_EXTENTS - 1:] = [(last, end - last)]
    return tuple(extents)


def apply_xattrs(target: int | str | bytes, xattrs: tuple[tuple[str, bytes], ...], *,
                 follow: bool, capability: bool = True) -> list[str]:
    """Set the attributes, the names refused. ``target`` is an fd, or a path: a
    /proc/self/fd/N naming a pinned inode (``follow``), or a name in a directory as
    proc_path gives it (not ``follow``: a symlink's own attributes). ``capability``: set
    security.capability too (else the caller sets it last, see Applier.metadata).

    Called after chown and chmod: chown clears security.capability, and an ACL set before
    chmod would have its mask rewritten by it.
    """
    refused = []
    for name, value in xattrs:
        if name == CAPABILITY and not capability:
            continue
        try:
            os.setxattr(target, name, value, follow_symlinks=follow)
        except OSError as e:
            if _unsupported(e) or e.errno == errno.EINVAL:
                refused.append(f"{name} ({e.strerror})")
            else:
                raise
    return refused
