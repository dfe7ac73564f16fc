"""Where an S3 medium is and who we are there: endpoint, region, credentials.

Looked up the way the AWS tools do, so an operator's existing setup works:

- credentials: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (/ AWS_SESSION_TOKEN),
  else the profile (AWS_PROFILE, default "default") of the shared credentials
  file (AWS_SHARED_CREDENTIALS_FILE, ~/.aws/credentials), else of the config
  file (AWS_CONFIG_FILE, ~/.aws/config, section "[profile NAME]" or "[default]");
- region: --s3-region, AWS_REGION, AWS_DEFAULT_REGION, the profile's region,
  else us-east-1;
- endpoint: --s3-endpoint, AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, the
  profile's endpoint_url, else AWS itself (https://s3.REGION.amazonaws.com).
  A custom endpoint is addressed path-style (http://host:port/bucket/key),
  which every S3-compatible server understands. A plain http:// endpoint is refused
  unless the caller allows it (``--s3-insecure-http``): over it the sets travel in the
  clear and whoever sits between can serve other bytes (the request signatures cover
  requests, not answers).
"""

from __future__ import annotations

import configparser
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from resurgo.errors import BadInput, OperationFailed


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)
    source: str = "environment"


@dataclass(frozen=True)
class S3Settings:
    scheme: str  # http or https
    host: str  # host[:port] as sent in the Host header
    region: str
    credentials: Credentials
    path_style: bool
    ca_file: str | None = None


def _profile_sections(parser: configparser.ConfigParser, profile: str, config: bool) -> list[str]:
    names = [profile] if not config or profile == "default" else [f"profile {profile}"]
    return [n for n in names if parser.has_section(n)]


def _read_ini(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(path, encoding="utf-8")
    except (configparser.Error, UnicodeDecodeError) as e:
        raise BadInput(f"cannot read the AWS file {path}: {e}") from None
    return parser


def _lookup(parser: configparser.ConfigParser, profile: str, config: bool, key: str) -> str | None:
    for section in _profile_sections(parser, profile, config):
        value = parser.get(section, key, fallback=None)
        if value:
            return value.strip()
    return None


@dataclass(frozen=True)
class S3Where:
    """Where an S3 medium is, without who we are there (what a rescue image carries)."""

    endpoint: str | None  # None: AWS itself
    region: str
    ca_file: str | None = None


def where(
    *,
    environ: Mapping[str, str],
    home: Path,
    endpoint: str | None = None,
    region: str | None = None,
) -> S3Where:
    """Endpoint, region and CA bundle as resolve finds them (no credentials needed)."""
    profile = environ.get("AWS_PROFILE") or "default"
    config_ini = _read_ini(_config_path(environ, home))
    return S3Where(
        endpoint=(
            endpoint
            or environ.get("AWS_ENDPOINT_URL_S3")
            or environ.get("AWS_ENDPOINT_URL")
            or _lookup(config_ini, profile, True, "endpoint_url")
        ),
        region=(
            region
            or environ.get("AWS_REGION")
            or environ.get("AWS_DEFAULT_REGION")
            or _lookup(config_ini, profile, True, "region")
            or "us-east-1"
        ),
        ca_file=environ.get("AWS_CA_BUNDLE") or _lookup(config_ini, profile, True, "ca_bundle"),
    )


def _config_path(environ: Mapping[str, str], home: Path) -> Path:
    return Path(environ.get("AWS_CONFIG_FILE") or home / ".aws" / "config")


def credentials(*, environ: Mapping[str, str], home: Path) -> Credentials:
    """Who we are on S3, looked up as the AWS tools do (module docstring)."""
    profile = environ.get("AWS_PROFILE") or "default"
    creds_path = Path(environ.get("AWS_SHARED_CREDENTIALS_FILE") or home / ".aws" / "credentials")
    config_path = _config_path(environ, home)
    return _credentials(environ, profile, _read_ini(creds_path), creds_path,
                        _read_ini(config_path), config_path)


def resolve(
    *,
    environ: Mapping[str, str],
    home: Path,
    endpoint: str | None = None,
    region: str | None = None,
    insecure_http: bool = False,
) -> S3Settings:
    creds = credentials(environ=environ, home=home)
    loc = where(environ=environ, home=home, endpoint=endpoint, region=region)
    if loc.endpoint is None:
        return S3Settings(
            "https", f"s3.{loc.region}.amazonaws.com", loc.region, creds, False, loc.ca_file
        )
    endpoint = loc.endpoint
    scheme, host = parse_endpoint(endpoint)
    if scheme == "http" and not insecure_http:
        raise BadInput(
            f"the S3 endpoint {endpoint} is plain HTTP: the recovery sets would cross the "
            "network unencrypted, and anyone on the way could read them or answer with "
            "other bytes",
            "use https://, or give --s3-insecure-http for a server on a network you trust "
            "(a loopback or an isolated backup network)",
        )
    return S3Settings(scheme, host, loc.region, creds, True, loc.ca_file)


def parse_endpoint(endpoint: str) -> tuple[str, str]:
    parts = urlsplit(endpoint)
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.path not in ("", "/")
        or parts.query
        or parts.username
    ):
        raise BadInput(
            f"bad S3 endpoint {endpoint!r}",
            "give the server's base URL, e.g. --s3-endpoint http://192.0.2.10:8333",
        )
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise BadInput(f"bad port in the S3 endpoint {endpoint!r}") from None
    return parts.scheme, parts.netloc


def _credentials(
    environ: Mapping[str, str],
    profile: str,
    creds_ini: configparser.ConfigParser,
    creds_path: Path,
    config_ini: configparser.ConfigParser,
    config_path: Path,
) -> Credentials:
    key, secret = environ.get("AWS_ACCESS_KEY_ID"), environ.get("AWS_SECRET_ACCESS_KEY")
    if key and secret:
        return Credentials(key, secret, environ.get("AWS_SESSION_TOKEN") or None)
    for parser, path, config in ((creds_ini, creds_path, False), (config_ini, config_path, True)):
        key = _lookup(parser, profile, config, "aws_access_key_id")
        secret = _lookup(parser, profile, config, "aws_secret_access_key")
        if key and secret:
            token = _lookup(parser, profile, config, "aws_session_token")
            return Credentials(key, secret, token, f"profile {profile} in {path}")
    if environ.get("AWS_PROFILE") and not (
        _profile_sections(creds_ini, profile, False) or _profile_sections(config_ini, profile, True)
    ):
        raise OperationFailed(
            f"the AWS profile {profile!r} (AWS_PROFILE) is in neither {creds_path} nor "
            f"{config_path}",
            "check the name, or unset AWS_PROFILE",
        )
    raise OperationFailed(
        "no S3 credentials found",
        "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or put them in a profile of "
        "~/.aws/credentials (chosen with AWS_PROFILE)",
    )
