"""A set on SFTP, S3, NFS or CIFS rehearsed the way a real recovery reaches it: the rescue
gets a NIC on qemu's user network (its own DHCP client takes an address there) and opens
the medium itself, on the same server the host uses.

qemu's user network lives inside the qemu process: the guest's connections become the
host's own. Its address 10.0.2.2 is the host's loopback (127.0.0.1): a server the host
reaches on 127.0.0.1, ``localhost`` or ``::1`` is named 10.0.2.2 for the rescue (one on
``::1`` must listen on 127.0.0.1 too); any other host stays as it is (qemu's NAT reaches
it as the host would, and the rescue resolves names through qemu's DNS relay, which asks
the host's resolvers, not its /etc/hosts). Another loopback address (127.0.0.2) cannot be
reached from the guest: refused.

What the rescue is handed, from the host's own view of the medium (never the set's word):

- the medium URL, the host rewritten, on its kernel command line (``resurgo.from=``);
- for SFTP, the server's host key that the host's connection verified (ssh's
  KnownHostsCommand records it: hashed known_hosts and ssh_config included), pinned for
  the name the rescue uses, in /etc/resurgo/known_hosts; for S3, the host's endpoint
  (rewritten), region, plain-http choice and CA bundle, in rescue.json's medium table
  and /etc/resurgo/s3-ca.pem; for NFS, the host's NFS version and MOUNT port in
  rescue.json's medium table. They go into an extra archive appended to the rescue's
  initramfs (the kernel unpacks it over the image's own): nothing secret goes there;
- the credentials the host uses for the medium (``--ssh-key``'s file, the S3 keys the
  host's environment or ~/.aws give, as an AWS credentials file, ``--cifs-credentials``'
  user and password) on a key disk: a small ext4 image (0600, in the run's directory,
  removed with it, never in a kept image) that the rescue mounts read-only as its key
  medium (``resurgo.keys=LABEL=...``) and copies the secrets from, 0600, as a real
  recovery's USB stick. An NFS medium needs none: no key disk then.

An NFS server sees the rescue's connections come from qemu's side of the host, from an
unprivileged port (qemu's user network is no root of the host's): an export that asks for
a reserved port (Linux's ``secure``, the default) refuses the rescue though it lets the
host mount it.

What cannot work is refused before anything is made (exit 3): an SFTP medium without
``--ssh-key`` (an ssh-agent's keys cannot be handed on) or with a key that asks for a
passphrase; an https S3 endpoint on the loopback (its certificate names 127.0.0.1 or
localhost, never 10.0.2.2); a CIFS medium without ``--cifs-credentials``; a URL the kernel
command line cannot carry.
"""

from __future__ import annotations

import io
import ipaddress
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from resurgo import run
from resurgo.errors import BadInput, PreconditionFailed, ResurgoError
from resurgo.media import MediumOptions
from resurgo.media.url import CifsSpec, NfsSpec, S3Spec, SftpSpec, parse_url
from resurgo.rehearse import images
from resurgo.rehearse.rescueboot import MAX_CONFIG
from resurgo.rescue import cpio
from resurgo.rescue.access import (
    CIFS_CREDENTIALS,
    MAX_SECRET,
    S3_CA_PATH,
    S3_CREDENTIALS,
    SSH_KEY,
    ImageAccess,
    cifs_credentials_file,
    credentials_file,
    image_access,
    read_bounded,
)
from resurgo.rescue.layout import CONFIG_PATH, KNOWN_HOSTS_PATH

#: The host's loopback as qemu's user network shows it to the guest.
GUEST_HOST = "10.0.2.2"
#: The names of the host's loopback that the guest reaches as GUEST_HOST.
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
#: The rescue's NIC (the recovered system's first boot has none).
NIC = ("-nic", "user,model=virtio-net-pci")
#: The key disk's filesystem label (resurgo.keys=LABEL=...).
KEYS_LABEL = "resurgo-keys"
KEYS_DISK = 16 << 20
#: A medium URL on the kernel command line (2048 bytes on x86, all words together).
MAX_URL = 512
_KEY_LINE = re.compile(r"^\S+ ([a-z0-9@.-]{1,64}) ([A-Za-z0-9+/]{16,16384}={0,3})$")
_HINT = "copy the set to a directory (a local disk) and rehearse it from there"


@dataclass(frozen=True)
class NetworkMedium:
    """How the rehearsal's rescue reaches a network medium."""

    #: The medium's URL as the rescue opens it.
    url: str
    #: Secrets for the key disk: file name -> content.
    secrets: Mapping[str, bytes] = field(repr=False)
    #: Files added to the rescue's initramfs: path in the image -> content (0644).
    overlay: Mapping[str, bytes] = field(default_factory=dict)
    #: S3: the medium table rescue.json gets (the image's own is replaced).
    medium_table: Mapping[str, Any] | None = None

    def describe(self, *, keys: bool = True) -> str:
        """How the rescue reaches the medium; with ``keys``, what its key disk holds."""
        names = ", ".join(sorted(self.secrets)) if keys else ""
        return (f"{self.url} over qemu's user network, {names} on a key disk"
                if names else f"{self.url} over qemu's user network")


NetworkSpec = SftpSpec | S3Spec | NfsSpec | CifsSpec


def is_network(url: str) -> bool:
    return isinstance(parse_url(url), NetworkSpec)


def guest_host(host: str) -> str:
    """The name the rescue reaches ``host`` by: the loopback becomes GUEST_HOST."""
    name = host.lower().rstrip(".")
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    if name in LOOPBACK:
        return GUEST_HOST
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return host
    mapped = getattr(address, "ipv4_mapped", None)
    if mapped is not None:
        address = mapped
    if str(address) in LOOPBACK:
        return GUEST_HOST
    if address.is_loopback:
        raise PreconditionFailed(
            f"the medium's server is on {host}, a loopback address the rehearsal's virtual "
            f"machine cannot reach (qemu's user network shows it 127.0.0.1 alone, as "
            f"{GUEST_HOST})", "let the server listen on 127.0.0.1, or " + _HINT)
    return host


def _word(url: str) -> str:
    """``url`` as one word of the kernel command line (no blank, quote or control)."""
    if len(url) > MAX_URL or any(c.isspace() or c == '"' or not c.isprintable() for c in url):
        raise PreconditionFailed(
            f"the medium URL {url!r} cannot be handed to the rescue on its kernel command "
            f"line (blanks, quotes or more than {MAX_URL} characters)", _HINT)
    return url


def guest_url(spec: NetworkSpec, ssh_port: int | None = None) -> str:
    """The medium's URL as the rescue opens it: the server's host rewritten (an SFTP
    server's port written out); an s3:// URL names no host."""
    if isinstance(spec, S3Spec):
        return _word(spec.display)
    if isinstance(spec, NfsSpec):
        return _word(NfsSpec(guest_host(spec.host), spec.path, spec.port).display)
    if isinstance(spec, CifsSpec):
        return _word(CifsSpec(guest_host(spec.host), spec.share, spec.path, spec.user,
                              spec.port).display)
    port = spec.port or ssh_port
    moved = SftpSpec(guest_host(spec.host), spec.path, spec.user, port)
    return _word(moved.display)


def known_hosts_line(recorded: str, spec: SftpSpec, ssh_port: int | None = None) -> str:
    """The host key the host's connection verified (a known_hosts line, as
    SftpBackend.host_key_line gives it), pinned for the name and port the rescue
    connects to."""
    match = _KEY_LINE.match(recorded.strip())
    if match is None:
        raise PreconditionFailed(
            "the SFTP server's host key, as ssh verified it, is no known_hosts line "
            "resurgo can pin for the rescue", _HINT)
    host = guest_host(spec.host)
    port = spec.port or ssh_port or 22
    name = host if port == 22 and ":" not in host else f"[{host}]:{port}"
    return f"{name} {match.group(1)} {match.group(2)}\n"


def guest_endpoint(endpoint: str) -> str:
    """An S3 endpoint as the rescue reaches it: a loopback host becomes GUEST_HOST (plain
    http only: a certificate never names 10.0.2.2)."""
    parts = urlsplit(endpoint)
    host = parts.hostname or ""
    moved = guest_host(host)
    if moved == host:
        return endpoint
    if parts.scheme != "http":
        raise PreconditionFailed(
            f"the S3 endpoint {endpoint} is https on the loopback: the rehearsal's rescue "
            f"reaches it as {GUEST_HOST}, a name its certificate does not hold",
            "rehearse against the server's own name or address, or " + _HINT)
    netloc = moved + (f":{parts.port}" if parts.port is not None else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def ssh_key(identity: str | None) -> bytes:
    """The private key the host uses for the SFTP medium, for the key disk: a file, and
    one that needs no passphrase (the rescue runs unattended)."""
    if identity is None:
        raise PreconditionFailed(
            "rehearse hands the rescue the SSH key the host reaches the SFTP medium with, "
            "and none was given (the keys of an ssh-agent cannot be handed on)",
            "give the private key file with --ssh-key FILE (or ssh.key in the "
            "configuration)")
    try:
        data = read_bounded(Path(identity), MAX_SECRET, "--ssh-key")
    except BadInput as e:
        raise PreconditionFailed(e.message, "give the private key file with --ssh-key") \
            from None
    run.require("ssh-keygen")
    probe = run.run(["ssh-keygen", "-y", "-P", "", "-f", identity], check=False)
    if probe.returncode != 0:
        said = (probe.stderr or "").strip().splitlines()
        raise PreconditionFailed(
            f"--ssh-key {identity}: ssh-keygen cannot read the key without a passphrase"
            + (f" ({said[-1][:200]})" if said else "") + ", and the rescue recovers "
            "unattended", "give a key without a passphrase for the sets")
    return data


def s3_secrets(environ: Mapping[str, str], home: Path) -> bytes:
    """The S3 credentials the host uses, as the AWS credentials file the rescue reads."""
    from resurgo.media import s3config

    try:
        creds = s3config.credentials(environ=environ, home=home)
    except ResurgoError as e:
        raise PreconditionFailed(f"the rescue needs the S3 credentials the host uses, and "
                                 f"there are none: {e.message}", e.hint) from None
    return credentials_file(creds.access_key, creds.secret_key, creds.session_token)


def cifs_secrets(path: Path | None) -> bytes:
    """The CIFS credentials the host mounts the share with, as the credentials file the
    rescue reads (the file's user, password and domain, written anew)."""
    if path is None:
        raise PreconditionFailed(
            "rehearse hands the rescue the CIFS credentials the host mounts the share "
            "with, and none were given", "give them with --cifs-credentials FILE")
    return cifs_credentials_file(path)


def plan(url: str, options: MediumOptions, host_key: str | None, *,
         environ: Mapping[str, str], home: Path) -> NetworkMedium:
    """What the rescue gets to reach the medium at ``url``; ``host_key`` is the SFTP
    server's key as the host's connection verified it."""
    spec = parse_url(url)
    if isinstance(spec, SftpSpec):
        if host_key is None:
            raise PreconditionFailed(f"the connection to {url} verified no host key to pin "
                                     "for the rescue", _HINT)
        line = known_hosts_line(host_key, spec, options.ssh.port)
        return NetworkMedium(
            guest_url(spec, options.ssh.port), {SSH_KEY: ssh_key(options.ssh.identity)},
            {str(KNOWN_HOSTS_PATH).lstrip("/"): line.encode()})
    if isinstance(spec, NfsSpec):
        # The host's version and MOUNT port, in place of what the image was built with.
        table = ImageAccess(nfs_version=options.share.nfs_version,
                            nfs_mount_port=options.share.nfs_mount_port).config()
        return NetworkMedium(guest_url(spec), {}, {}, table)
    if isinstance(spec, CifsSpec):
        return NetworkMedium(guest_url(spec),
                             {CIFS_CREDENTIALS: cifs_secrets(options.share.cifs_credentials)})
    if not isinstance(spec, S3Spec):
        raise BadInput(f"{url} is no network medium")
    try:
        access = image_access(url, options, embed=False, environ=environ, home=home)
    except ResurgoError as e:
        raise PreconditionFailed(e.message, e.hint) from None
    table = access.config()
    if access.s3_endpoint is not None:
        table["s3_endpoint"] = guest_endpoint(access.s3_endpoint)
    overlay = {}
    if access.s3_ca is not None:
        overlay[str(S3_CA_PATH).lstrip("/")] = access.s3_ca
    return NetworkMedium(guest_url(spec), {S3_CREDENTIALS: s3_secrets(environ, home)},
                         overlay, table)


def rescue_config(raw: bytes) -> dict[str, Any]:
    """The rescue image's rescue.json (read off its ISO: the set's, hostile until
    checked): a JSON object, bounded."""
    if len(raw) > MAX_CONFIG:
        raise BadInput(f"the rescue image's rescue.json is larger than {MAX_CONFIG} bytes")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        data = None
    if not isinstance(data, dict):
        raise BadInput("the rescue image's rescue.json is no JSON object: not an image "
                       "resurgo built")
    return data


def overlay_files(reach: NetworkMedium, config: Mapping[str, Any] | None) -> dict[str, bytes]:
    """The files the rescue's initramfs gets on top of its own: the pinned host key or
    the CA bundle, and, for S3 and NFS, rescue.json with the medium table replaced."""
    files = dict(reach.overlay)
    if reach.medium_table is not None:
        if config is None:
            raise BadInput("the rescue image has no rescue.json to tell the medium's "
                           "settings in")
        changed = {**config, "medium": dict(reach.medium_table)}
        files[str(CONFIG_PATH).lstrip("/")] = (json.dumps(changed, indent=2) + "\n").encode()
    return files


def append_overlay(initrd: Path, files: Mapping[str, bytes]) -> None:
    """``files`` as one more (uncompressed) cpio archive at the end of ``initrd``, 4-byte
    aligned: the kernel unpacks it after the image's own archives, over them."""
    if not files:
        return
    buf = io.BytesIO()
    w = cpio.Writer(buf)
    for path, data in sorted(files.items()):
        w.ensure_dirs(path)
        w.add(cpio.Entry.file(path, data))
    w.close()
    fd = os.open(initrd, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "ab") as f:
        end = f.tell()
        f.write(b"\0" * (-end % 4) + buf.getvalue())


def key_disk(stage: Path, image: Path, secrets: Mapping[str, bytes]) -> Path:
    """An ext4 image labelled KEYS_LABEL holding ``secrets`` (0600, root's), made from a
    0700 staging directory that is removed at once; the image itself 0600."""
    stage.mkdir(mode=0o700)
    try:
        for name, data in secrets.items():
            fd = images.new_file(stage / name)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        images.sparse_image(image, KEYS_DISK)
        run.run(["mke2fs", "-q", "-F", "-t", "ext4", "-L", KEYS_LABEL, "-m", "0",
                 "-E", "root_owner=0:0", "-d", str(stage), str(image)], timeout=120)
    finally:
        images.remove_tree(stage)
    return image
