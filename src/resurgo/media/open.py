"""open_medium: from the URL the user typed to a Medium."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from resurgo.errors import BadInput
from resurgo.media.base import Medium
from resurgo.media.directory import directory_backend
from resurgo.media.floppy import FloppyBackend
from resurgo.media.s3 import S3Backend
from resurgo.media.s3client import DEFAULT_PART, MIN_PART, S3Client
from resurgo.media.s3config import resolve
from resurgo.media.sftp import SftpBackend, SshOptions
from resurgo.media.url import DirectorySpec, FloppySpec, S3Spec, SftpSpec, parse_url


def open_medium(
    url: str,
    *,
    s3_endpoint: str | None = None,
    s3_region: str | None = None,
    s3_part_size: int = DEFAULT_PART,
    s3_insecure_http: bool = False,
    ssh: SshOptions | None = None,
    environ: Mapping[str, str] | None = None,
    home: Path | None = None,
) -> Medium:
    """The medium at ``url``; S3 credentials come from ``environ`` (default: the
    process environment) and the AWS files under ``home`` (default: ~). An SFTP server's
    host key is checked strictly unless ``ssh`` says otherwise; a plain http:// S3
    endpoint is refused unless ``s3_insecure_http``."""
    spec = parse_url(url)
    if isinstance(spec, DirectorySpec):
        return Medium(directory_backend(spec.path))
    if isinstance(spec, FloppySpec):
        return Medium(FloppyBackend(spec.path))
    if isinstance(spec, SftpSpec):
        return Medium(SftpBackend(spec, ssh or SshOptions()))
    assert isinstance(spec, S3Spec)
    if s3_part_size < MIN_PART:
        raise BadInput(f"S3 parts are at least {MIN_PART} bytes")
    settings = resolve(
        environ=os.environ if environ is None else environ,
        home=Path.home() if home is None else home,
        endpoint=s3_endpoint,
        region=s3_region,
        insecure_http=s3_insecure_http,
    )
    client = S3Client(settings, spec.bucket, url=spec.display)
    return Medium(S3Backend(client, spec.prefix, s3_part_size))
