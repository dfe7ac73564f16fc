"""NFS and SMB/CIFS shares as media: a directory medium on a mount resurgo makes itself.

The mount is made with the kernel's mount API (resurgo.fsmount): detached (in no mount
table, reachable by this process alone), nosuid, nodev and noexec always, read-only
unless the command writes sets (save, prune, rehearse's report), and gone when the
medium is closed, or when this process ends however it ends. The options are resurgo's
own, each passed to the kernel on its own: the URL's names can add none
(media.url refuses commas and control characters in them all the same), and the CIFS
password goes from its credentials file to the kernel, never to a command line or a log.
No mount helper is needed: the server's address is resolved here and given as the
kernel's ``addr=`` (NFS) or ``ip=`` (CIFS) option, which mount.nfs and mount.cifs
would otherwise add.

Below the mount, the share is a directory medium like a USB disk (directory.py,
tree.py): the directory the URL names is walked down from the share's top without
following a link, nothing below it is followed, and every set is checked (digests,
signatures) before it is used.

NFS: ``vers`` (default 4.2; 3 for servers without NFSv4, then the MOUNT service is
found by the server's rpcbind unless --nfs-mount-port names its port), TCP only, the
URL's port as ``port=``. NFSv3 mounts with ``nolock``: the rescue runs no rpc.statd, and
concurrent saves are kept apart by the medium's leases (lease.py), not by NFS locks.

CIFS: the credentials file is mount.cifs's format (``username=``, ``password=``,
``domain=``, one a line), a regular file that only its owner (root, or the user running
resurgo) can read; files on the share appear 0600, directories 0700.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from resurgo import fsmount, run
from resurgo.errors import BadInput, OperationFailed, PreconditionFailed
from resurgo.fsmount import Param
from resurgo.media import limits
from resurgo.media.directory import LocalFiles
from resurgo.media.tree import TreeBackend
from resurgo.media.url import CifsSpec, NfsSpec

NFS_VERSIONS: Final = ("3", "4", "4.0", "4.1", "4.2")
DEFAULT_NFS_VERSION: Final = "4.2"
#: A credentials file is a few lines.
MAX_CREDENTIALS: Final = 64 << 10
_KEYS: Final = {"username": "username", "user": "username", "password": "password",
                "pass": "password", "domain": "domain", "dom": "domain"}


@dataclass(frozen=True)
class ShareOptions:
    """How to mount a share, besides its URL."""

    nfs_version: str = DEFAULT_NFS_VERSION
    #: NFSv3: the MOUNT service's port (None: asked from the server's rpcbind).
    nfs_mount_port: int | None = None
    #: CIFS: the credentials file (mount.cifs's format).
    cifs_credentials: Path | None = None


@dataclass(frozen=True)
class CifsCredentials:
    username: str
    password: str = field(repr=False)
    domain: str | None = None


def check_nfs_version(version: str) -> str:
    if version not in NFS_VERSIONS:
        raise BadInput(f"NFS version {version!r}: one of {', '.join(NFS_VERSIONS)}")
    return version


def parse_cifs_credentials(data: bytes, where: str) -> CifsCredentials:
    """The credentials of a mount.cifs credentials file's text (BadInput when unusable;
    the message never holds the password)."""
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise BadInput(f"the CIFS credentials {where}: not UTF-8 text") from None
    found: dict[str, str] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip("\r")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, sep, value = line.partition("=")
        name = _KEYS.get(key.strip().lower())
        if not sep or name is None:
            raise BadInput(f"the CIFS credentials {where}, line {n}: expected username=, "
                           "password= or domain=")
        # A password is taken as written, spaces included (as mount.cifs takes it).
        found[name] = value if name == "password" else value.strip()
    for name, value in found.items():
        if "\0" in value or (name != "password" and ("," in value or not value)):
            raise BadInput(f"the CIFS credentials {where}: a bad {name}")
    if "username" not in found or not found.get("password"):
        raise BadInput(f"the CIFS credentials {where}: needs username= and password=")
    return CifsCredentials(found["username"], found["password"], found.get("domain"))


def read_cifs_credentials(path: Path) -> CifsCredentials:
    """The credentials file at ``path``: a regular file, at most MAX_CREDENTIALS bytes,
    owned by root or by this user, that no one else may read or write (BadInput else)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as e:
        raise BadInput(f"the CIFS credentials {path}: {e.strerror}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise BadInput(f"the CIFS credentials {path}: not a regular file")
    with os.fdopen(fd, "rb") as f:
        if st.st_uid not in (0, os.geteuid()) or st.st_mode & 0o077:
            raise BadInput(
                f"the CIFS credentials {path} may be read or changed by others "
                f"(mode {stat.S_IMODE(st.st_mode):04o}, owner uid {st.st_uid}): refused",
                f"chown root: {path}; chmod 600 {path}")
        data = f.read(MAX_CREDENTIALS + 1)
    if len(data) > MAX_CREDENTIALS:
        raise BadInput(f"the CIFS credentials {path}: larger than {MAX_CREDENTIALS} bytes")
    return parse_cifs_credentials(data, str(path))


def resolve(host: str, display: str) -> str:
    """The server's address (the kernel resolves no names without helpers)."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise OperationFailed(f"cannot reach {display}: cannot resolve {host}: {e}",
                              "check the server's name and the DNS settings") from None
    return str(infos[0][4][0])


def nfs_params(spec: NfsSpec, addr: str, options: ShareOptions,
               path: str | None = None) -> list[Param]:
    """The options of an NFS mount of ``path`` (default: the URL's) from ``addr``."""
    version = check_nfs_version(options.nfs_version)
    host = f"[{spec.host}]" if ":" in spec.host else spec.host
    proto = "tcp6" if ":" in addr else "tcp"
    out = [Param("source", f"{host}:{path or spec.path}"), Param("vers", version),
           Param("addr", addr), Param("proto", proto)]
    if spec.port:
        out.append(Param("port", str(spec.port)))
    if version == "3":
        out.append(Param("mountproto", proto))
        if options.nfs_mount_port:
            out.append(Param("mountport", str(options.nfs_mount_port)))
        out.append(Param("nolock"))
    return out


def cifs_params(spec: CifsSpec, addr: str, creds: CifsCredentials) -> list[Param]:
    """The options of a CIFS mount of the URL's share from ``addr``."""
    if spec.user and spec.user != creds.username:
        raise BadInput(f"{spec.display}: the URL's user {spec.user} is not the credentials' "
                       f"({creds.username})", "name the user in one place")
    out = [Param("source", spec.source), Param("ip", addr),
           Param("username", creds.username), Param("password", creds.password, secret=True)]
    if creds.domain:
        out.append(Param("domain", creds.domain))
    if spec.port:
        out.append(Param("port", str(spec.port)))
    # Modes as the share shows them to this machine: what resurgo creates is private.
    out += [Param("file_mode", "0600"), Param("dir_mode", "0700")]
    return out


def _hint(fstype: str, err: int) -> str | None:
    if fsmount.missing_filesystem(err):
        return f"this kernel has no {fstype} client: load its module (modprobe {fstype})"
    if err == errno.EPERM and os.geteuid() != 0:
        return "mounting a share needs root"
    if err in (errno.EACCES, errno.EPERM):
        return ("check the credentials file (--cifs-credentials)" if fstype == "cifs"
                else "does the server export this path to this machine?")
    if err in (errno.ETIMEDOUT, errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH):
        return "is the server up, reachable from here, and the port right?"
    if err == errno.EPROTONOSUPPORT:
        return "the server does not speak this version: --nfs-version"
    if err == errno.ENOENT and fstype == "cifs":
        # The kernel's CIFS client says ENOENT for a share that is not there, and also
        # for a crypto algorithm it could not load (its own message is in dmesg only).
        return ("check the share's name; else the kernel lacks a module CIFS needs: see "
                "dmesg (cmac, ccm, gcm, ctr, ghash_generic)")
    if err == errno.ENOENT:
        return "check the path: the server has no such directory (a save creates the last one)"
    return None


def _load_modules(names: list[str]) -> None:
    """The client modules, when not in the kernel yet (the kernel would ask modprobe
    itself, but not everywhere: a rescue has no /sbin/modprobe link on every system)."""
    if run.which("modprobe") is None:
        return
    missing = [name for name in names if not Path("/sys/module", name).exists()]
    if missing:
        run.run(["modprobe", "-q", "-a", "--", *missing], check=False)


class MountRefused(OperationFailed):
    """The kernel refused the mount; ``errno`` says why."""

    def __init__(self, message: str, hint: str | None, err: int) -> None:
        super().__init__(message, hint)
        self.errno = err


class NoSuchDirectory(OperationFailed):
    """A directory of the URL's path is not on the share."""


class ShareBackend(TreeBackend):
    """A directory medium below a detached mount; closing it unmounts."""

    def __init__(self, url: str, root_fd: int, fds: list[int]) -> None:
        root = f"/proc/self/fd/{root_fd}"
        super().__init__(url, LocalFiles(url, root, inside=True), root)
        self._fds = fds

    def close(self) -> None:
        try:
            super().close()
        finally:
            while self._fds:
                os.close(self._fds.pop())


def _mount(fstype: str, params: list[Param], display: str, writable: bool) -> int:
    def failed(why: str, err: int) -> MountRefused:
        return MountRefused(f"cannot mount {display}: {why}", _hint(fstype, err), err)

    attributes = fsmount.CONFINED | (0 if writable else fsmount.MOUNT_ATTR_RDONLY)
    return fsmount.detached_mount(fstype, params, attributes=attributes, failed=failed)


def _walk(top: int, parts: list[str], display: str, writable: bool) -> int:
    """The directory ``parts`` below the open directory ``top`` (closed here), nothing on
    the way followed; the last one made (0700) when missing and ``writable``."""
    fd = top
    private = limits.Private(display)
    for i, part in enumerate(parts):
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            try:
                new = os.open(part, flags, dir_fd=fd)
            except FileNotFoundError:
                if not writable or i != len(parts) - 1:
                    raise
                os.mkdir(part, limits.DIR_MODE, dir_fd=fd)
                new = os.open(part, flags, dir_fd=fd)
                private.make(new, limits.DIR_MODE)
        except FileNotFoundError:
            raise NoSuchDirectory(f"the medium {display} does not exist",
                                  "check the path; a save creates its last directory") from None
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENOTDIR):
                raise OperationFailed(
                    f"{part} on {display} is a symbolic link or not a directory: refused",
                    "name the directory itself") from None
            raise OperationFailed(f"cannot open {part} on {display}: {e.strerror}") from None
        finally:
            os.close(fd)
        fd = new
    return fd


def open_share(spec: NfsSpec | CifsSpec, options: ShareOptions, *,
               writable: bool) -> ShareBackend:
    """The share at ``spec``, mounted as the module's text says."""
    display = spec.display
    below: list[str] = []
    if isinstance(spec, NfsSpec):
        fstype = "nfs"
        addr = resolve(spec.host, display)
        check_nfs_version(options.nfs_version)
        _load_modules(["nfs", "nfsv3" if options.nfs_version == "3" else "nfsv4"])
        try:
            mnt = _mount(fstype, nfs_params(spec, addr, options), display, writable)
        except MountRefused as e:
            # A save to a directory that is not there yet: mount its parent, make it.
            parent, _, last = spec.path.rpartition("/")
            if e.errno != errno.ENOENT or not writable or not last:
                raise
            mnt = _mount(fstype, nfs_params(spec, addr, options, parent or "/"), display,
                         writable)
            below = [last]
    else:
        fstype = "cifs"
        if options.cifs_credentials is None:
            raise PreconditionFailed(f"{display}: which credentials? (--cifs-credentials FILE)",
                                     "a file of username=, password= (and domain=) lines, "
                                     "readable by root alone")
        creds = read_cifs_credentials(options.cifs_credentials)
        addr = resolve(spec.host, display)
        # And the crypto it asks the kernel for by name (where the kernel cannot run
        # modprobe itself, as in a rescue without /sbin/modprobe, it would not be found).
        _load_modules(["cifs", "cmac", "ccm", "gcm", "ctr", "ghash_generic"])
        mnt = _mount(fstype, cifs_params(spec, addr, creds), display, writable)
        below = [p for p in spec.path.split("/") if p]
    try:
        top = os.open(f"/proc/self/fd/{mnt}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        root = _walk(top, below, display, writable)
    except BaseException:
        os.close(mnt)
        raise
    return ShareBackend(display, root, [mnt, root])


def missing_directory(error: BaseException) -> bool:
    """Whether ``error``, from open_share, says that the URL's directory is not there (a
    mount the server refused with ENOENT, a directory not found below it)."""
    return isinstance(error, NoSuchDirectory) or (
        isinstance(error, MountRefused) and error.errno == errno.ENOENT)


def parent_spec(spec: NfsSpec | CifsSpec) -> NfsSpec | CifsSpec | None:
    """The share URL one directory up (None for an NFS export's root or a CIFS share's
    top: a save makes no share)."""
    if isinstance(spec, NfsSpec):
        parent, _, last = spec.path.rstrip("/").rpartition("/")
        return NfsSpec(spec.host, parent or "/", spec.port) if last else None
    parts = [p for p in spec.path.split("/") if p]
    if not parts:
        return None
    return CifsSpec(spec.host, spec.share, "/".join(parts[:-1]), spec.user, spec.port)


def save_makes_it(spec: NfsSpec | CifsSpec, options: ShareOptions) -> bool:
    """Whether a save to ``spec``, whose directory is not there, would make it: its
    parent is on the share (looked at through a read-only mount; nothing is made)."""
    parent = parent_spec(spec)
    if parent is None:
        return False
    try:
        open_share(parent, options, writable=False).close()
    except OperationFailed:
        return False
    return True
