"""open_medium: from the URL the user typed to a Medium."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from resurgo.errors import BadInput
from resurgo.media.base import Backend, Medium
from resurgo.media.directory import directory_backend
from resurgo.media.floppy import FloppyBackend
from resurgo.media.s3 import S3Backend
from resurgo.media.s3client import DEFAULT_PART, MIN_PART, S3Client
from resurgo.media.s3config import resolve
from resurgo.media.sftp import SftpBackend, SshOptions
from resurgo.media.share import ShareOptions, open_share
from resurgo.media.url import (
    CifsSpec,
    DirectorySpec,
    FloppySpec,
    NfsSpec,
    S3Spec,
    SftpSpec,
    parse_url,
)
from resurgo.signing import Trust


@dataclass(frozen=True)
class MediumOptions:
    """How to reach a medium, and whose sets to trust on it."""

    #: S3: the server (default: AWS, or AWS_ENDPOINT_URL) and region.
    s3_endpoint: str | None = None
    s3_region: str | None = None
    #: S3 over plain http:// (refused otherwise: the sets would cross in the clear).
    s3_insecure_http: bool = False
    #: SFTP: the key, the known hosts, how strictly the server's key is checked.
    ssh: SshOptions = field(default_factory=SshOptions)
    #: The trusted signers' allowed-signers file: read when the medium is opened, before
    #: anything else (a bad file fails fast); a set is then read only once its signature
    #: is checked. None: signatures are not checked.
    trust_file: Path | None = None
    #: NFS and CIFS: the version, the MOUNT port, the credentials file (media.share).
    share: ShareOptions = field(default_factory=ShareOptions)
    #: Whether the command writes to the medium (save, prune, rehearse's report): an NFS
    #: or CIFS share is mounted read-write only then.
    writable: bool = False


def open_medium(
    url: str,
    options: MediumOptions | None = None,
    *,
    s3_part_size: int = DEFAULT_PART,
    environ: Mapping[str, str] | None = None,
    home: Path | None = None,
) -> Medium:
    """The medium at ``url``; S3 credentials come from ``environ`` (default: the
    process environment) and the AWS files under ``home`` (default: ~). An SFTP server's
    host key is checked strictly unless ``options.ssh`` says otherwise; a plain http://
    S3 endpoint is refused unless ``options.s3_insecure_http``."""
    opts = options or MediumOptions()
    trust = Trust.load(opts.trust_file) if opts.trust_file is not None else None
    return Medium(_backend(url, opts, s3_part_size, environ, home), trust)


def _backend(url: str, opts: MediumOptions, s3_part_size: int,
             environ: Mapping[str, str] | None, home: Path | None) -> Backend:
    spec = parse_url(url)
    if isinstance(spec, DirectorySpec):
        return directory_backend(spec.path)
    if isinstance(spec, FloppySpec):
        return FloppyBackend(spec.path)
    if isinstance(spec, SftpSpec):
        return SftpBackend(spec, opts.ssh)
    if isinstance(spec, NfsSpec | CifsSpec):
        return open_share(spec, opts.share, writable=opts.writable)
    assert isinstance(spec, S3Spec)
    if s3_part_size < MIN_PART:
        raise BadInput(f"S3 parts are at least {MIN_PART} bytes")
    settings = resolve(
        environ=os.environ if environ is None else environ,
        home=Path.home() if home is None else home,
        endpoint=opts.s3_endpoint,
        region=opts.s3_region,
        insecure_http=opts.s3_insecure_http,
    )
    client = S3Client(settings, spec.bucket, url=spec.display)
    return S3Backend(client, spec.prefix, s3_part_size)
