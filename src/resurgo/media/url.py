"""Medium URLs: what the user types after --medium.

Forms::

    /mnt/usb/resurgo             a directory (also file:///mnt/usb/resurgo)
    sftp://user@host:22/srv/sets  an SFTP server, key authentication; the path is
                                  absolute, sftp://host/~/sets is relative to the home
                                  directory, sftp://host is the home directory itself
    s3://bucket/prefix            an S3 bucket (any S3-compatible server: --s3-endpoint)
    floppy:/path/desc.img         a 1.44 MB FAT image holding only the description
    nfs://server[:port]/export/dir
                                  a directory on an NFS server (the server resolves the
                                  path; --nfs-version, default 4.2)
    cifs://[user@]server[:port]/share/dir
                                  a directory of an SMB/CIFS share; the password (and the
                                  user) from a credentials file (--cifs-credentials)

A path or share name may hold spaces (%20), never a comma, a control character or a
"." or ".." part: a share's names go to the kernel as mount options (one option each, but
a comma in them is refused all the same: older kernels join the options with commas).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

from resurgo.errors import BadInput


@dataclass(frozen=True)
class DirectorySpec:
    path: str


@dataclass(frozen=True)
class SftpSpec:
    host: str
    path: str
    user: str | None = None
    port: int | None = None

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    @property
    def display(self) -> str:
        port = f":{self.port}" if self.port else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        user = f"{self.user}@" if self.user else ""
        path = self.path if self.path.startswith("/") else "/~/" + self.path.removeprefix(".")
        return f"sftp://{user}{host}{port}{path.rstrip('/') or '/'}"


@dataclass(frozen=True)
class S3Spec:
    bucket: str
    prefix: str

    @property
    def display(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")


@dataclass(frozen=True)
class FloppySpec:
    path: str


@dataclass(frozen=True)
class NfsSpec:
    host: str
    path: str  # absolute, as the server knows it
    port: int | None = None

    @property
    def display(self) -> str:
        return f"nfs://{_hostport(self.host, self.port)}{quote(self.path)}"

    @property
    def source(self) -> str:
        """The mount's source, server:/path."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.path}"


@dataclass(frozen=True)
class CifsSpec:
    host: str
    share: str
    #: The directory below the share, "" for the share's own top (walked down, nothing
    #: on the way followed).
    path: str = ""
    user: str | None = None
    port: int | None = None

    @property
    def display(self) -> str:
        user = f"{quote(self.user)}@" if self.user else ""
        path = f"/{self.path}" if self.path else ""
        return f"cifs://{user}{_hostport(self.host, self.port)}/{quote(self.share + path)}"

    @property
    def source(self) -> str:
        """The mount's source, //server/share."""
        return f"//{self.host}/{self.share}"


MediumSpec = DirectorySpec | SftpSpec | S3Spec | FloppySpec | NfsSpec | CifsSpec

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_HOST = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_IPV6 = re.compile(r"^[0-9A-Fa-f:.]+$")
_USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@-]*$")
_BUCKET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,61}[A-Za-z0-9]$")
_PREFIX_PART = re.compile(r"^[A-Za-z0-9_+=,@-][A-Za-z0-9._+=,@-]*$")

#: What a share's path and names may not hold: commas (the kernel's option separator),
#: control characters; nor the characters SMB refuses in names.
_SHARE_BAD = re.compile(r"[,\x00-\x1f\x7f]")
_SMB_BAD = re.compile(r'[\\:*?"<>|]')

EXAMPLES = (
    "a directory (/mnt/usb/resurgo), sftp://user@host/path, s3://bucket/prefix, "
    "nfs://server/export/dir, cifs://server/share/dir or floppy:/path/image.img"
)


def _bad(url: str, why: str) -> BadInput:
    return BadInput(f"bad medium {url!r}: {why}", f"a medium is {EXAMPLES}")


def parse_url(url: str) -> MediumSpec:
    if not url or url != url.strip():
        raise _bad(url, "empty, or with spaces around it")
    if url.startswith("floppy:"):
        path = url.removeprefix("floppy:")
        if not path or path.endswith("/"):
            raise _bad(url, "floppy: needs the path of an image file")
        return FloppySpec(path)
    m = _SCHEME.match(url)
    if m is None:
        return DirectorySpec(url)
    scheme = m.group(1).lower()
    if re.search(r"[\x00-\x1f\x7f]", url):
        # urlsplit drops tabs and line breaks without a word: the URL would name another
        # place than the one typed.
        raise _bad(url, "a control character in the URL")
    try:
        parts = urlsplit(url)
    except ValueError as e:  # an unclosed [ of an IPv6 address
        raise _bad(url, f"{e} (unclosed [ in the host?)") from None
    if parts.query or parts.fragment:
        raise _bad(url, "a medium URL has no ?query or #fragment")
    if scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path:
            raise _bad(url, "file:// URLs name a local path: file:///mnt/usb")
        return DirectorySpec(unquote(parts.path))
    if scheme == "sftp":
        return _sftp(url, parts.netloc, parts.path)
    if scheme == "s3":
        return _s3(url, parts.netloc, parts.path)
    if scheme == "nfs":
        return _nfs(url, parts.netloc, parts.path)
    if scheme == "cifs":
        return _cifs(url, parts.netloc, parts.path)
    raise _bad(url, f"unknown kind of medium {scheme!r}")


def _hostport(host: str, port: int | None) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"{shown}:{port}" if port else shown


def _user_host_port(url: str, netloc: str,
                    no_password: str) -> tuple[str | None, str, int | None]:
    user: str | None = None
    hostport = netloc
    if "@" in netloc:
        userinfo, hostport = netloc.rsplit("@", 1)
        if ":" in userinfo:
            raise _bad(url, f"passwords are not accepted: {no_password}")
        user = unquote(userinfo)
        if not _USER.match(user):
            raise _bad(url, f"bad user name {user!r}")
    host, port = _host_port(url, hostport)
    return user, host, port


def _sftp(url: str, netloc: str, raw_path: str) -> SftpSpec:
    user, host, port = _user_host_port(url, netloc, "use key authentication (--ssh-key)")
    path = unquote(raw_path)
    if "\0" in path or "\n" in path:
        raise _bad(url, "bad path")
    if path in ("", "/~", "/~/"):
        path = "."
    elif path.startswith("/~/"):
        path = path[3:].rstrip("/") or "."
    elif path != "/":
        path = path.rstrip("/")
    return SftpSpec(host, path, user, port)


def _host_port(url: str, hostport: str) -> tuple[str, int | None]:
    port: int | None = None
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise _bad(url, "unclosed [ in the host")
        host, rest = hostport[1:end], hostport[end + 1 :]
        if not _IPV6.match(host):
            raise _bad(url, f"bad IPv6 address {host!r}")
        if rest:
            if not rest.startswith(":"):
                raise _bad(url, "bad port")
            port = _port(url, rest[1:])
    else:
        host, sep, port_text = hostport.partition(":")
        if sep:
            port = _port(url, port_text)
        if not _HOST.match(host):
            raise _bad(url, f"bad host name {host!r}")
    return host, port


def _share_parts(url: str, raw_path: str) -> list[str]:
    """The '/'-separated names of a share's path, each checked (see the module's text)."""
    parts = [unquote(p) for p in raw_path.split("/") if p]
    for part in parts:
        if "/" in part:
            raise _bad(url, f"{part!r}: an escaped / in a name")
        if _SHARE_BAD.search(part):
            raise _bad(url, f"{part!r}: a comma or a control character in the path")
        if part in (".", ".."):
            raise _bad(url, "no . or .. in the path")
    return parts


def _nfs(url: str, netloc: str, raw_path: str) -> NfsSpec:
    if "@" in netloc:
        raise _bad(url, "an NFS server knows no user names (it trusts the client's uid)")
    host, port = _host_port(url, netloc)
    parts = _share_parts(url, raw_path)
    return NfsSpec(host, "/" + "/".join(parts), port)


def _cifs(url: str, netloc: str, raw_path: str) -> CifsSpec:
    user, host, port = _user_host_port(
        url, netloc, "give a credentials file (--cifs-credentials), readable by root alone")
    parts = _share_parts(url, raw_path)
    if not parts:
        raise _bad(url, "which share? cifs://server/share/dir")
    for part in parts:
        if _SMB_BAD.search(part):
            raise _bad(url, f"{part!r}: SMB names hold none of \\ : * ? \" < > |")
    return CifsSpec(host, parts[0], "/".join(parts[1:]), user, port)


def _port(url: str, text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise _bad(url, f"bad port {text!r}")
    return int(text)


def _s3(url: str, bucket: str, raw_path: str) -> S3Spec:
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise _bad(url, f"bad bucket name {bucket!r}")
    prefix = raw_path.strip("/")
    if prefix:
        for part in prefix.split("/"):
            if not _PREFIX_PART.match(part):
                raise _bad(url, f"bad part {part!r} in the prefix (letters, digits, ._+=,@-)")
    return S3Spec(bucket, prefix)
