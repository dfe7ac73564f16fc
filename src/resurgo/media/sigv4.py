"""AWS Signature Version 4, for S3 requests (pure functions, no I/O).

The secret key only ever enters ``signing_key``: it is never logged, never put
in a header or argv, and the Credentials object hides it from repr().
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from urllib.parse import quote

ALGORITHM = "AWS4-HMAC-SHA256"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
UNRESERVED = "-_.~"
_SPACES = re.compile(r"\s+")


def uri_encode(text: str, *, keep_slash: bool = False) -> str:
    """Percent-encode everything but the RFC 3986 unreserved characters (and '/')."""
    return quote(text, safe=UNRESERVED + ("/" if keep_slash else ""))


def canonical_query(params: Iterable[tuple[str, str]]) -> str:
    encoded = sorted((uri_encode(k), uri_encode(v)) for k, v in params)
    return "&".join(f"{k}={v}" for k, v in encoded)


def canonical_headers(headers: Mapping[str, str]) -> tuple[str, str]:
    """The canonical header block and the list of signed header names."""
    folded: dict[str, str] = {}
    for name, value in headers.items():
        key = name.lower().strip()
        value = _SPACES.sub(" ", value.strip())
        folded[key] = f"{folded[key]},{value}" if key in folded else value
    names = sorted(folded)
    block = "".join(f"{n}:{folded[n]}\n" for n in names)
    return block, ";".join(names)


def canonical_request(
    method: str,
    canonical_uri: str,
    query: Iterable[tuple[str, str]],
    headers: Mapping[str, str],
    payload_hash: str,
) -> tuple[str, str]:
    """The canonical request and its signed headers.

    ``canonical_uri`` is the path as sent on the wire, already URI-encoded
    (S3 encodes each key once and does not normalize it).
    """
    block, signed = canonical_headers(headers)
    text = "\n".join(
        [method, canonical_uri or "/", canonical_query(query), block, signed, payload_hash]
    )
    return text, signed


def scope(date: str, region: str, service: str) -> str:
    return f"{date}/{region}/{service}/aws4_request"


def string_to_sign(amz_date: str, credential_scope: str, request: str) -> str:
    digest = hashlib.sha256(request.encode()).hexdigest()
    return "\n".join([ALGORITHM, amz_date, credential_scope, digest])


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def signing_key(secret_key: str, date: str, region: str, service: str) -> bytes:
    k = _hmac(("AWS4" + secret_key).encode(), date)
    k = _hmac(k, region)
    k = _hmac(k, service)
    return _hmac(k, "aws4_request")


def authorization(
    *,
    method: str,
    canonical_uri: str,
    query: Iterable[tuple[str, str]],
    headers: Mapping[str, str],
    payload_hash: str,
    access_key: str,
    secret_key: str,
    region: str,
    service: str,
    amz_date: str,
) -> str:
    """The Authorization header value; ``headers`` must hold host and x-amz-date."""
    request, signed = canonical_request(method, canonical_uri, query, headers, payload_hash)
    cred_scope = scope(amz_date[:8], region, service)
    to_sign = string_to_sign(amz_date, cred_scope, request)
    key = signing_key(secret_key, amz_date[:8], region, service)
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return (
        f"{ALGORITHM} Credential={access_key}/{cred_scope}, "
        f"SignedHeaders={signed}, Signature={signature}"
    )
