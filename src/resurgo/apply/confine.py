"""Paths from a description made into places under the restore root, and kept there.

The description's validation already refuses a mountpoint or subvolume path that is
not normal; this is the second line. A path joined to the root is normalised and must
stay under it, and the directories on the way are made and entered one at a time from
the root's descriptor with O_NOFOLLOW: a symlink under the root (restored by an earlier
run, or planted) never leads a mount or a subvolume outside it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import stat

from resurgo.errors import OperationFailed

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def under_root(root: str, path: str) -> str:
    """root joined with path (absolute in the restored system, or relative to root),
    normalised; OperationFailed when the result would not lie at or under root."""
    if "\x00" in path or "\x00" in root:
        raise OperationFailed(f"refusing the path {path!r}: it holds a NUL byte")
    base = posixpath.normpath(root)
    joined = posixpath.normpath(base.rstrip("/") + "/" + path.lstrip("/"))
    if relative(base, joined) is None:
        raise OperationFailed(
            f"refusing {path!r}: under the root {base} it names {joined}, outside the root",
            "the description is not valid: run 'resurgo validate' on it",
        )
    return joined


def relative(root: str, path: str) -> str | None:
    """path below root ("" for root itself), both normalised absolute paths; None when
    path is not at or under root."""
    if path == root:
        return ""
    prefix = root.rstrip("/") + "/"
    return path[len(prefix):] if path.startswith(prefix) else None


def make_dirs(root: str, target: str, mode: int = 0o755) -> None:
    """Make target (at or under root) and the directories on the way, as os.makedirs
    does, but never through a symlink: each name is created and entered from its
    parent's descriptor with O_NOFOLLOW. OperationFailed names a symlink or a
    non-directory in the way. root itself may be a symlink: the administrator chose it."""
    os.close(open_dirs(root, target, mode))


def open_dirs(root: str, target: str, mode: int = 0o755) -> int:
    """make_dirs, and the descriptor of target reached that way (the caller closes it):
    what is written through it stays under root."""
    base = posixpath.normpath(root)
    rest = relative(base, posixpath.normpath(target))
    if rest is None:
        raise OperationFailed(f"refusing {target}: it is not under the root {base}")
    try:
        os.makedirs(base, exist_ok=True)
        fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise OperationFailed(f"cannot open the root {base}: {e.strerror}") from None
    try:
        here = base
        for name in rest.split("/") if rest else []:
            here = f"{here.rstrip('/')}/{name}"
            parent, fd = fd, -1
            try:
                fd = _enter(parent, name, here, mode)
            finally:
                os.close(parent)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        raise
    return fd


def _enter(parent: int, name: str, here: str, mode: int) -> int:
    """The descriptor of directory name in parent, made if missing."""
    try:
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, mode, dir_fd=parent)
        return os.open(name, _DIR_FLAGS, dir_fd=parent)
    except OSError as e:
        if e.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise OperationFailed(f"cannot make {here}: {e.strerror}") from None
        raise OperationFailed(_not_a_directory(parent, name, here),
                              f"remove {here}, or recover under an empty root") from None


def _not_a_directory(parent: int, name: str, here: str) -> str:
    st = os.stat(name, dir_fd=parent, follow_symlinks=False)
    if stat.S_ISLNK(st.st_mode):
        link = os.readlink(name, dir_fd=parent)
        return (f"refusing {here}: it is a symbolic link (to {link}); a mount or subvolume "
                "under the root is reached through directories only")
    return f"refusing {here}: it is not a directory"


def replace_at(dir_fd: int, name: str, data: bytes, mode: int) -> None:
    """data as the file name in the directory dir_fd, of mode (whatever the umask),
    complete before its name appears (a new file, fsync, rename over whatever had the
    name): a symbolic link planted there is replaced, never followed."""
    tmp = f".{name}.{os.getpid()}.tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp, dir_fd=dir_fd)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 mode, dir_fd=dir_fd)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise
