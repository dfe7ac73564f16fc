"""How the rescue reaches a set on a network medium (SFTP, S3, NFS, CIFS), unattended.

What is not secret travels in the image, written at build time (`resurgo rescue`, and
the image save builds into a set), in the "medium" table of rescue.json: the S3
endpoint, region and whether plain http is allowed; the S3 server's CA bundle (when the
build machine names one: --s3-endpoint's AWS_CA_BUNDLE or the profile's ca_bundle) at
S3_CA_PATH; the NFS version and MOUNT port; the SFTP server's pinned host key at
layout.KNOWN_HOSTS_PATH. rescue.json is also readable on the ISO itself: nothing secret
goes in it.

The secrets (the S3 access keys, the SSH private key, the CIFS credentials) come, in this order:

- from the key medium, ``resurgo.keys=DEV[:/dir]`` (as the LUKS key files do): in that
  directory, ``s3-credentials`` (an AWS shared-credentials file, profile [default]) and
  ``ssh-key`` (an OpenSSH private key), ``cifs-credentials`` (mount.cifs's credentials
  file: username=, password=, domain=). Each is copied, bounded, into RUN_DIR with mode
  0600 (ssh refuses a key others can read, as a FAT stick shows every file);
- else, from the image itself, only when it was built with ``--embed-credentials``:
  the same files in EMBEDDED_DIR, 0600 inside the initramfs. Whoever holds the image
  (the ISO, the stick, a copy of the set that carries it) then holds the credentials.

The rescue opens the medium with these (``Access.open``), and hands the same to the
resurgo it runs: options on its argv, paths in its environment, never a secret on argv.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from resurgo import private
from resurgo.errors import BadInput, ResurgoError

if TYPE_CHECKING:
    from resurgo.media import Medium, MediumOptions

#: The S3 server's CA bundle the image carries.
S3_CA_PATH: Final = Path("/etc/resurgo/s3-ca.pem")
#: Credentials built into the image (--embed-credentials), 0600.
EMBEDDED_DIR: Final = Path("/etc/resurgo/credentials")
#: Credentials copied from the key medium, 0600 in a 0700 directory.
RUN_DIR: Final = Path("/run/resurgo/credentials")
S3_CREDENTIALS: Final = "s3-credentials"
SSH_KEY: Final = "ssh-key"
CIFS_CREDENTIALS: Final = "cifs-credentials"
SECRETS: Final = (S3_CREDENTIALS, SSH_KEY, CIFS_CREDENTIALS)
#: An AWS credentials file or an SSH private key: far below this.
MAX_SECRET: Final = 64 << 10
#: A CA bundle (the whole Mozilla set is about 220 KB).
MAX_CA: Final = 4 << 20


@dataclass(frozen=True)
class ImageAccess:
    """What a rescue image carries to reach its set's medium (build side)."""

    s3_endpoint: str | None = None
    s3_region: str | None = None
    s3_insecure_http: bool = False
    s3_ca: bytes | None = None
    nfs_version: str | None = None
    nfs_mount_port: int | None = None
    # Only with --embed-credentials: the text of an AWS credentials file, an SSH key, a
    # CIFS credentials file.
    s3_credentials: bytes | None = field(default=None, repr=False)
    ssh_key: bytes | None = field(default=None, repr=False)
    cifs_credentials: bytes | None = field(default=None, repr=False)

    def _secrets(self) -> tuple[tuple[str, bytes | None], ...]:
        return ((S3_CREDENTIALS, self.s3_credentials), (SSH_KEY, self.ssh_key),
                (CIFS_CREDENTIALS, self.cifs_credentials))

    @property
    def embedded(self) -> tuple[str, ...]:
        """The names of the secrets the image carries."""
        return tuple(name for name, data in self._secrets() if data is not None)

    def config(self) -> dict[str, Any]:
        """The "medium" table of rescue.json: nothing secret (the ISO shows it too)."""
        return {
            "s3_endpoint": self.s3_endpoint,
            "s3_region": self.s3_region,
            "s3_insecure_http": self.s3_insecure_http,
            "s3_ca": self.s3_ca is not None,
            "nfs_version": self.nfs_version,
            "nfs_mount_port": self.nfs_mount_port,
            "embedded_credentials": list(self.embedded),
        }

    def files(self) -> list[tuple[str, bytes, int]]:
        """(path in the image, content, mode) of the files the image carries for it."""
        out: list[tuple[str, bytes, int]] = []
        if self.s3_ca is not None:
            out.append((str(S3_CA_PATH), self.s3_ca, 0o644))
        for name, data in self._secrets():
            if data is not None:
                out.append((str(EMBEDDED_DIR / name), data, 0o600))
        return out


def read_bounded(path: Path, limit: int, what: str) -> bytes:
    """A regular file's content, at most ``limit`` bytes (BadInput otherwise)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as e:
        raise BadInput(f"{what} {path}: {e.strerror}") from None
    # Checked before fdopen, which refuses a directory with an exception of its own.
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise BadInput(f"{what} {path}: not a regular file")
    with os.fdopen(fd, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise BadInput(f"{what} {path}: larger than {limit} bytes")
    if not data.strip():
        raise BadInput(f"{what} {path}: empty")
    return data


def image_access(url: str | None, options: MediumOptions, *, embed: bool,
                 environ: Mapping[str, str], home: Path) -> ImageAccess:
    """What an image whose set lives at ``url`` carries, from the options the host reaches
    that medium with; the credentials too when ``embed`` (--embed-credentials)."""
    from resurgo.media import s3config
    from resurgo.media.url import CifsSpec, S3Spec, SftpSpec, parse_url

    spec = parse_url(url) if url else None
    if embed and not isinstance(spec, S3Spec | SftpSpec | CifsSpec):
        raise BadInput("--embed-credentials: the image's medium is not an sftp://, s3:// or "
                       "cifs:// one", "give the medium with --from-url (or save to it)")
    loc = s3config.where(environ=environ, home=home, endpoint=options.s3_endpoint,
                         region=options.s3_region)
    if loc.endpoint is not None:
        scheme, _host = s3config.parse_endpoint(loc.endpoint)
        if scheme == "http" and not options.s3_insecure_http and isinstance(spec, S3Spec):
            raise BadInput(f"the S3 endpoint {loc.endpoint} is plain HTTP",
                           "use https://, or give --s3-insecure-http")
    ca = read_bounded(Path(loc.ca_file), MAX_CA, "the S3 CA bundle") if loc.ca_file else None
    s3_creds: bytes | None = None
    ssh_key: bytes | None = None
    if embed and isinstance(spec, S3Spec):
        try:
            creds = s3config.credentials(environ=environ, home=home)
        except ResurgoError as e:
            raise BadInput(f"--embed-credentials: {e.message}", e.hint) from None
        s3_creds = credentials_file(creds.access_key, creds.secret_key, creds.session_token)
    if embed and isinstance(spec, SftpSpec):
        if options.ssh.identity is None:
            raise BadInput("--embed-credentials: which SSH key? (--ssh-key FILE)",
                           "give the private key the SFTP server accepts")
        ssh_key = read_bounded(Path(options.ssh.identity), MAX_SECRET, "--ssh-key")
    cifs_creds: bytes | None = None
    if embed and isinstance(spec, CifsSpec):
        cifs_creds = cifs_credentials_file(options.share.cifs_credentials)
    return ImageAccess(
        s3_endpoint=loc.endpoint,
        s3_region=loc.region,
        s3_insecure_http=options.s3_insecure_http,
        s3_ca=ca,
        s3_credentials=s3_creds,
        ssh_key=ssh_key,
        nfs_version=options.share.nfs_version,
        nfs_mount_port=options.share.nfs_mount_port,
        cifs_credentials=cifs_creds,
    )


def cifs_credentials_file(path: Path | None) -> bytes:
    """The CIFS credentials the image carries: those of ``path`` (checked as a mount
    reads them: private, complete), written anew."""
    from resurgo.media.share import read_cifs_credentials

    if path is None:
        raise BadInput("--embed-credentials: which CIFS credentials? (--cifs-credentials FILE)")
    creds = read_cifs_credentials(path)
    lines = [f"username={creds.username}", f"password={creds.password}"]
    if creds.domain:
        lines.append(f"domain={creds.domain}")
    return ("\n".join(lines) + "\n").encode()


def credentials_file(access_key: str, secret_key: str, token: str | None) -> bytes:
    """An AWS shared-credentials file holding these, as the [default] profile."""
    for value in (access_key, secret_key, token or ""):
        if any(c in value for c in "\r\n\0"):
            raise BadInput("the S3 credentials hold a line break")
    lines = ["[default]", f"aws_access_key_id = {access_key}",
             f"aws_secret_access_key = {secret_key}"]
    if token:
        lines.append(f"aws_session_token = {token}")
    return ("\n".join(lines) + "\n").encode()


# ------------------------------------------------------------------------ rescue side


@dataclass(frozen=True)
class Settings:
    """The "medium" table of rescue.json, checked (it is the image's own, but a damaged
    one must not crash the agent)."""

    s3_endpoint: str | None = None
    s3_region: str | None = None
    s3_insecure_http: bool = False
    nfs_version: str | None = None
    nfs_mount_port: int | None = None

    @classmethod
    def from_config(cls, data: Any) -> Settings:
        from resurgo.media.share import NFS_VERSIONS

        if not isinstance(data, dict):
            return cls()
        endpoint, region = data.get("s3_endpoint"), data.get("s3_region")
        version, port = data.get("nfs_version"), data.get("nfs_mount_port")
        return cls(
            s3_endpoint=endpoint if isinstance(endpoint, str) and endpoint else None,
            s3_region=region if isinstance(region, str) and region else None,
            s3_insecure_http=data.get("s3_insecure_http") is True,
            nfs_version=version if version in NFS_VERSIONS else None,
            nfs_mount_port=(port if type(port) is int and 0 < port < 65536 else None),
        )


@dataclass(frozen=True)
class Access:
    """How the rescue, and the resurgo it runs, open the set's medium."""

    ssh_key: Path | None = None
    s3_credentials: Path | None = None
    cifs_credentials: Path | None = None
    s3_ca: Path | None = None
    known_hosts: Path | None = None
    settings: Settings = Settings()
    trust_file: Path | None = None
    #: Where each secret came from, for the console.
    lines: tuple[str, ...] = ()

    def environ(self) -> dict[str, str]:
        """AWS lookups pointed at the image's files, never at a stray ~/.aws."""
        env = {"AWS_CONFIG_FILE": os.devnull,
               "AWS_SHARED_CREDENTIALS_FILE": str(self.s3_credentials or os.devnull)}
        if self.s3_ca is not None:
            env["AWS_CA_BUNDLE"] = str(self.s3_ca)
        return env

    def options(self) -> MediumOptions:
        from resurgo.media import MediumOptions, SshOptions
        from resurgo.media.share import DEFAULT_NFS_VERSION, ShareOptions

        ssh = SshOptions(identity=str(self.ssh_key) if self.ssh_key else None,
                         known_hosts=str(self.known_hosts) if self.known_hosts else None,
                         strict_host_keys=True)
        s = self.settings
        share = ShareOptions(nfs_version=s.nfs_version or DEFAULT_NFS_VERSION,
                             nfs_mount_port=s.nfs_mount_port,
                             cifs_credentials=self.cifs_credentials)
        return MediumOptions(s3_endpoint=s.s3_endpoint, s3_region=s.s3_region,
                             s3_insecure_http=s.s3_insecure_http, ssh=ssh,
                             trust_file=self.trust_file, share=share)

    def argv(self, url: str) -> list[str]:
        """recover's (plan's) options for the medium at ``url``, as options() says."""
        out: list[str] = []
        if url.startswith("s3://"):
            s = self.settings
            if s.s3_endpoint:
                out += ["--s3-endpoint", s.s3_endpoint]
            if s.s3_region:
                out += ["--s3-region", s.s3_region]
            if s.s3_insecure_http:
                out.append("--s3-insecure-http")
        elif url.startswith("sftp://"):
            if self.ssh_key is not None:
                out += ["--ssh-key", str(self.ssh_key)]
            if self.known_hosts is not None:
                out += ["--ssh-known-hosts", str(self.known_hosts), "--ssh-strict-host-keys"]
        elif url.startswith("nfs://"):
            if self.settings.nfs_version:
                out += ["--nfs-version", self.settings.nfs_version]
            if self.settings.nfs_mount_port:
                out += ["--nfs-mount-port", str(self.settings.nfs_mount_port)]
        elif url.startswith("cifs://") and self.cifs_credentials is not None:
            out += ["--cifs-credentials", str(self.cifs_credentials)]
        return out

    def open(self, url: str) -> Medium:
        from resurgo.media import open_medium

        return open_medium(url, self.options(), environ=self.environ(), home=Path("/root"))


def secret_file(name: str, keys_dir: Path | None, embedded_dir: Path,
                run_dir: Path) -> tuple[Path | None, str]:
    """The file of secret ``name`` to use (from the key medium, copied 0600 into
    ``run_dir``; else the image's own), and a line saying where it came from."""
    if keys_dir is not None:
        found = keys_dir / name
        if os.path.lexists(found):
            try:
                data = read_bounded(found, MAX_SECRET, "the key medium's")
            except BadInput as e:
                return None, f"{name}: {e.message}"
            private.makedirs(run_dir)
            copy = run_dir / name
            private.replace_bytes(copy, data)
            return copy, f"{name}: from the key medium ({found})"
    embedded = embedded_dir / name
    if embedded.is_file():
        return embedded, f"{name}: the one built into this image"
    where = f"on the key medium ({keys_dir}) nor " if keys_dir is not None else ""
    return None, f"{name}: none {where}in this image"


def rescue_access(config: Any, *, known_hosts: Path | None, trust_file: Path | None,
                  keys_dir: Path | None, embedded_dir: Path = EMBEDDED_DIR,
                  run_dir: Path = RUN_DIR, s3_ca: Path = S3_CA_PATH) -> Access:
    """The Access of the rescue: ``config`` is rescue.json's "medium" table, ``keys_dir``
    the key medium's directory (resurgo.keys) when one is mounted."""
    lines = []
    found: dict[str, Path | None] = {}
    for name in SECRETS:
        found[name], line = secret_file(name, keys_dir, embedded_dir, run_dir)
        lines.append(line)
    return Access(
        ssh_key=found[SSH_KEY],
        s3_credentials=found[S3_CREDENTIALS],
        cifs_credentials=found[CIFS_CREDENTIALS],
        s3_ca=s3_ca if s3_ca.is_file() else None,
        known_hosts=known_hosts,
        settings=Settings.from_config(config),
        trust_file=trust_file,
        lines=tuple(lines),
    )
