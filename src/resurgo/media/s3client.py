"""A small S3 client on the standard library: http.client and Signature Version 4.

No boto3 (tens of MB for the rescue image); only what a medium needs: put
(single or multipart for streams, parts buffered in memory up to the part
size), streaming get that resumes where a dropped connection left it, list
(ListObjectsV2 with pagination), delete, and retries with exponential backoff
on what is transient (5xx, 429/503 SlowDown, RequestTimeout, a reset connection).
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import random
import re
import ssl
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, overload

from resurgo.errors import Damaged, OperationFailed
from resurgo.media import limits, sigv4
from resurgo.media.s3config import S3Settings

log = logging.getLogger("resurgo.media.s3")

RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
RETRY_CODES = frozenset({"RequestTimeout", "SlowDown", "InternalError", "ServiceUnavailable"})
AUTH_CODES = frozenset(
    {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken",
     "ExpiredToken", "TokenRefreshRequired", "AuthorizationHeaderMalformed"}
)  # fmt: skip
# bytes START-END/TOTAL (or */TOTAL) of a 206 answer.
_CONTENT_RANGE = re.compile(r"^bytes ([0-9]+)-([0-9]+)/([0-9]+|\*)$")
# An S3 error document is a few hundred bytes; a longer body is not read as one.
ERROR_BODY = 64 * 1024
# The answers request() reads whole: a ListObjectsV2 page holds 1000 keys of at most 1 KiB
# with their metadata (under 2 MB), the others are smaller still.
ANSWER_BODY = 16 * 1024 * 1024
MIN_PART = 5 * 1024 * 1024
DEFAULT_PART = 16 * 1024 * 1024
MAX_PARTS = 10000
# A listing has at most this many pages of 1000 keys: ten million objects, far beyond a
# medium of recovery sets (a few dozen objects a set).
MAX_LIST_PAGES = 10000


def _strip_ns(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _children(elem: ET.Element, name: str) -> list[ET.Element]:
    return [c for c in elem if _strip_ns(c.tag) == name]


def _text(elem: ET.Element, name: str) -> str | None:
    for c in elem:
        if _strip_ns(c.tag) == name:
            return c.text or ""
    return None


def parse_xml(body: bytes) -> ET.Element | None:
    try:
        return ET.fromstring(body)
    except ET.ParseError:
        return None


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def error(self) -> tuple[str, str]:
        """(code, message) of an S3 error document; ('', '') when there is none."""
        root = parse_xml(self.body)
        if root is None or _strip_ns(root.tag) != "Error":
            return "", ""
        return _text(root, "Code") or "", _text(root, "Message") or ""


@dataclass(frozen=True)
class Listing:
    objects: list[tuple[str, int]]
    prefixes: list[str]


def parse_list_v2(body: bytes) -> tuple[Listing, str | None]:
    """One page of ListObjectsV2, and the token of the next page."""
    root = parse_xml(body)
    if root is None:
        raise ValueError("ListObjectsV2 answered with something that is not XML")
    objects = [
        (_text(c, "Key") or "", int(_text(c, "Size") or 0)) for c in _children(root, "Contents")
    ]
    prefixes = [_text(c, "Prefix") or "" for c in _children(root, "CommonPrefixes")]
    token = None
    if (_text(root, "IsTruncated") or "").lower() == "true":
        token = _text(root, "NextContinuationToken")
    return Listing(objects, prefixes), token


def complete_body(etags: Sequence[str]) -> bytes:
    root = ET.Element("CompleteMultipartUpload")
    for n, etag in enumerate(etags, 1):
        part = ET.SubElement(root, "Part")
        ET.SubElement(part, "PartNumber").text = str(n)
        ET.SubElement(part, "ETag").text = etag
    return bytes(ET.tostring(root, encoding="utf-8", xml_declaration=True))


class S3Client:
    def __init__(
        self,
        settings: S3Settings,
        bucket: str,
        *,
        url: str,
        timeout: float = 60.0,
        attempts: int = 6,
        backoff: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.s = settings
        self.bucket = bucket
        self.url = url
        self.timeout = timeout
        self.attempts = attempts
        self.backoff = backoff
        self._sleep = sleep
        self._conn: http.client.HTTPConnection | None = None
        if settings.path_style:
            self.host = settings.host
        else:
            self.host = f"{bucket}.{settings.host}"

    @property
    def endpoint(self) -> str:
        return f"{self.s.scheme}://{self.s.host}"

    # --- transport ---

    def _connect(self) -> http.client.HTTPConnection:
        if self.s.scheme == "https":
            ctx = ssl.create_default_context(cafile=self.s.ca_file)
            return http.client.HTTPSConnection(self.host, timeout=self.timeout, context=ctx)
        return http.client.HTTPConnection(self.host, timeout=self.timeout)

    def path(self, key: str | None) -> str:
        if self.s.path_style:
            base = "/" + sigv4.uri_encode(self.bucket)
            return base if key is None else base + "/" + sigv4.uri_encode(key, keep_slash=True)
        return "/" if key is None else "/" + sigv4.uri_encode(key, keep_slash=True)

    def _headers(
        self,
        method: str,
        path: str,
        query: Sequence[tuple[str, str]],
        extra: dict[str, str],
        payload_hash: str,
    ) -> dict[str, str]:
        amz_date = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        headers = {
            "host": self.host,
            "x-amz-date": amz_date,
            "x-amz-content-sha256": payload_hash,
            **{k.lower(): v for k, v in extra.items()},
        }
        creds = self.s.credentials
        if creds.session_token:
            headers["x-amz-security-token"] = creds.session_token
        headers["authorization"] = sigv4.authorization(
            method=method,
            canonical_uri=path,
            query=query,
            headers=headers,
            payload_hash=payload_hash,
            access_key=creds.access_key,
            secret_key=creds.secret_key,
            region=self.s.region,
            service="s3",
            amz_date=amz_date,
        )
        return headers

    def _target(self, path: str, query: Sequence[tuple[str, str]]) -> str:
        q = sigv4.canonical_query(query)
        return path + ("?" + q if q else "")

    def _delay(self, attempt: int) -> float:
        return float(min(self.backoff * 2**attempt, 20.0) * (0.5 + random.random() / 2))

    def _unreachable(self, e: BaseException) -> OperationFailed:
        if isinstance(e, ssl.SSLCertVerificationError):
            return OperationFailed(
                f"the TLS certificate of the S3 endpoint {self.endpoint} is not trusted: {e}",
                "give its CA certificate in AWS_CA_BUNDLE",
            )
        return OperationFailed(
            f"cannot reach the S3 endpoint {self.endpoint} for {self.url}: {e}",
            "check --s3-endpoint, the network, and that the S3 server runs",
        )

    def request(
        self,
        method: str,
        key: str | None,
        *,
        query: Sequence[tuple[str, str]] = (),
        headers: dict[str, str] | None = None,
        body: bytes = b"",
        allow: Sequence[int] = (),
    ) -> Response:
        """Send one request, retrying what is transient.

        2xx answers are returned, and the statuses in ``allow``; anything else
        raises OperationFailed with a message for the user.
        """
        path = self.path(key)
        payload_hash = hashlib.sha256(body).hexdigest() if body else sigv4.EMPTY_SHA256
        extra = dict(headers or {})
        if method in ("PUT", "POST"):
            extra["content-length"] = str(len(body))
        last: BaseException | Response | None = None
        for attempt in range(self.attempts):
            if attempt:
                self._sleep(self._delay(attempt - 1))
            signed = self._headers(method, path, query, extra, payload_hash)
            try:
                conn = self._conn or self._connect()
                self._conn = conn
                conn.request(method, self._target(path, query), body=body or None, headers=signed)
                raw = conn.getresponse()
                data = raw.read(ANSWER_BODY + 1)
                resp = Response(raw.status, {k.lower(): v for k, v in raw.getheaders()}, data)
                if len(data) > ANSWER_BODY:
                    self.close()
                    raise limits.too_large(f"the answer to {method} {key or ''}".rstrip(),
                                           self.url, f"more than {ANSWER_BODY}", ANSWER_BODY)
            except ssl.SSLCertVerificationError as e:
                self.close()
                raise self._unreachable(e) from None
            except (OSError, http.client.HTTPException) as e:
                log.debug("S3 %s %s: %s (attempt %d)", method, path, e, attempt + 1)
                self.close()
                last = e
                continue
            if resp.headers.get("connection", "").lower() == "close":
                self.close()
            code, _ = resp.error
            # CompleteMultipartUpload may fail with 200 and an error document.
            if 200 <= resp.status < 300 and not code:
                return resp
            if resp.status in allow:
                return resp
            if resp.status in RETRY_STATUS or code in RETRY_CODES:
                log.debug(
                    "S3 %s %s: %d %s (attempt %d)", method, path, resp.status, code, attempt + 1
                )
                last = resp
                continue
            raise self.failure(resp, method, key)
        if isinstance(last, Response):
            code, message = last.error
            raise OperationFailed(
                f"the S3 endpoint {self.endpoint} kept failing for {self.url}: "
                f"{last.status} {code} {message}".rstrip(),
                "the server is overloaded or failing: try again later",
            )
        assert last is not None
        raise self._unreachable(last)

    def failure(self, resp: Response, method: str, key: str | None) -> OperationFailed:
        code, message = resp.error
        what = f"{resp.status} {code}: {message}" if code else f"HTTP {resp.status}"
        if resp.status == 403 or code in AUTH_CODES:
            return OperationFailed(
                f"the S3 endpoint {self.endpoint} refused the credentials for {self.url} ({what})",
                "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) and that "
                "they may use this bucket",
            )
        if code == "RequestTimeTooSkewed":
            return OperationFailed(
                f"the S3 endpoint {self.endpoint} refused the request: this machine's clock "
                "is wrong",
                "set the clock (date -s, or NTP) and try again",
            )
        if code == "NoSuchBucket" or (resp.status == 404 and key is None):
            return OperationFailed(
                f"the bucket {self.bucket!r} does not exist at {self.endpoint}",
                "create it first, or check the bucket name and --s3-endpoint",
            )
        if resp.status in (301, 307) or code == "PermanentRedirect":
            return OperationFailed(
                f"the bucket {self.bucket!r} is in another region ({what})",
                "give its region with --s3-region or AWS_REGION",
            )
        target = f"{key}" if key else "the bucket"
        return OperationFailed(
            f"S3 {method} of {target} failed on {self.url}: {what}",
            "the bucket may be full or read-only; check the server",
        )

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # --- operations ---

    def check_bucket(self) -> None:
        self.request("HEAD", None)

    def get_small(self, key: str, limit: int) -> bytes | None:
        """A small object whole (a set's index), or None if it does not exist; refused
        when the server says it has more than limit bytes, and read no further than that
        whatever it says."""
        raw = self.open_get(key, 0, None, missing_ok=True)
        if raw is None:
            return None
        try:
            length = raw.getheader("content-length")
            if length is not None and (not length.isdigit() or int(length) > limit):
                raise limits.too_large(key, self.url, length, limit)
            try:
                data = raw.read(limit + 1)
            except (OSError, http.client.HTTPException) as e:
                raise self._unreachable(e) from None
            if len(data) > limit:
                raise limits.too_large(key, self.url, f"more than {limit}", limit)
            return data
        finally:
            raw.close()

    def put(self, key: str, data: bytes) -> None:
        self.request("PUT", key, body=data)

    def delete(self, key: str) -> None:
        self.request("DELETE", key, allow=(404,))

    def list_objects(self, prefix: str, delimiter: str | None = None) -> Listing:
        """Every object and common prefix under prefix, page by page (MAX_LIST_PAGES)."""
        objects: list[tuple[str, int]] = []
        prefixes: list[str] = []
        token: str | None = None
        seen: set[str] = set()
        while True:
            query = [("list-type", "2"), ("prefix", prefix)]
            if delimiter:
                query.append(("delimiter", delimiter))
            if token:
                query.append(("continuation-token", token))
            resp = self.request("GET", None, query=query)
            try:
                page, token = parse_list_v2(resp.body)
            except ValueError as e:
                raise OperationFailed(f"cannot list {self.url}: {e}") from None
            objects += page.objects
            prefixes += page.prefixes
            if not token:
                return Listing(objects, prefixes)
            # A server that never stops (a token it gave before, or more pages than any
            # medium of sets has) would list for ever into memory.
            if token in seen or len(seen) >= MAX_LIST_PAGES:
                raise OperationFailed(
                    f"cannot list {self.url}: the server's listing does not end (page "
                    f"{len(seen) + 1}, a continuation token given before or too many pages)",
                    "check the S3 endpoint: it does not answer as S3 does",
                )
            seen.add(token)

    def multipart_uploads(self, prefix: str) -> list[tuple[str, str]]:
        """Unfinished multipart uploads under prefix: (key, upload id)."""
        resp = self.request("GET", None, query=[("uploads", ""), ("prefix", prefix)], allow=(501,))
        root = parse_xml(resp.body) if resp.status == 200 else None
        if root is None:
            return []
        return [
            (_text(u, "Key") or "", _text(u, "UploadId") or "") for u in _children(root, "Upload")
        ]

    def create_upload(self, key: str) -> str:
        resp = self.request("POST", key, query=[("uploads", "")])
        root = parse_xml(resp.body)
        upload_id = _text(root, "UploadId") if root is not None else None
        if not upload_id:
            raise OperationFailed(f"S3 did not start a multipart upload of {key} on {self.url}")
        return upload_id

    def upload_part(self, key: str, upload_id: str, number: int, data: bytes) -> str:
        resp = self.request(
            "PUT", key, query=[("partNumber", str(number)), ("uploadId", upload_id)], body=data
        )
        etag = resp.headers.get("etag")
        if not etag:
            raise OperationFailed(f"S3 returned no ETag for part {number} of {key} on {self.url}")
        return etag

    def complete_upload(self, key: str, upload_id: str, etags: Sequence[str]) -> None:
        self.request(
            "POST",
            key,
            query=[("uploadId", upload_id)],
            body=complete_body(etags),
            headers={"content-type": "application/xml"},
        )

    def abort_upload(self, key: str, upload_id: str) -> None:
        self.request("DELETE", key, query=[("uploadId", upload_id)], allow=(404,))

    @overload
    def open_get(self, key: str, offset: int, etag: str | None,
                 *, missing_ok: Literal[False] = False) -> http.client.HTTPResponse: ...

    @overload
    def open_get(self, key: str, offset: int, etag: str | None,
                 *, missing_ok: bool) -> http.client.HTTPResponse | None: ...

    def open_get(
        self, key: str, offset: int, etag: str | None, *, missing_ok: bool = False
    ) -> http.client.HTTPResponse | None:
        """A GET whose body is read as a stream, on a connection of its own; from offset,
        answered with exactly that range. None for a missing object if missing_ok."""
        path = self.path(key)
        extra: dict[str, str] = {}
        if offset:
            extra["range"] = f"bytes={offset}-"
        if etag:
            extra["if-match"] = etag
        last: BaseException | None = None
        for attempt in range(self.attempts):
            if attempt:
                self._sleep(self._delay(attempt - 1))
            signed = self._headers("GET", path, (), extra, sigv4.EMPTY_SHA256)
            conn = self._connect()
            try:
                conn.request("GET", path, headers=signed)
                raw = conn.getresponse()
            except ssl.SSLCertVerificationError as e:
                conn.close()
                raise self._unreachable(e) from None
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                last = e
                continue
            if raw.status in (200, 206):
                try:
                    self._check_range(raw, key, offset)
                except BaseException:
                    conn.close()
                    raise
                return raw
            # An error document is small; anything longer is not one.
            resp = Response(raw.status, {k.lower(): v for k, v in raw.getheaders()},
                            raw.read(ERROR_BODY))
            conn.close()
            if resp.status in RETRY_STATUS or resp.error[0] in RETRY_CODES:
                last = OperationFailed(f"S3 answered {resp.status} {resp.error[0]}")
                continue
            if resp.status == 404 and resp.error[0] != "NoSuchBucket":
                if missing_ok:
                    return None
                raise Damaged(
                    f"{key} is missing on {self.url}", "the set is incomplete: use another set"
                )
            if resp.status == 412:
                raise OperationFailed(f"{key} changed on {self.url} while it was read")
            raise self.failure(resp, "GET", key)
        assert last is not None
        raise self._unreachable(last)


    def _check_range(self, raw: http.client.HTTPResponse, key: str, offset: int) -> None:
        """A GET from offset must be answered 206 with the range asked for: a 200 is the
        whole object again (appended, it would splice the stream), another range is the
        wrong bytes. A plain GET must be answered 200."""
        if not offset:
            if raw.status != 200:
                raise self._bad_range(key, f"a whole object was asked for, the answer was "
                                           f"{raw.status}")
            return
        if raw.status != 206:
            raise self._bad_range(key, f"bytes from {offset} were asked for, the answer was "
                                       f"{raw.status} (the whole object)")
        got = _CONTENT_RANGE.match(raw.getheader("content-range") or "")
        if got is None or int(got.group(1)) != offset:
            raise self._bad_range(key, f"bytes from {offset} were asked for, the answer was "
                                       f"the range {raw.getheader('content-range')!r}")

    def _bad_range(self, key: str, why: str) -> OperationFailed:
        return OperationFailed(
            f"S3 answered a read of {key} on {self.url} with other bytes than asked: {why}",
            "the server, or something between it and this machine, does not honour ranged "
            "reads: nothing of the object is used; check the endpoint (--s3-endpoint) and "
            "any proxy",
        )


class ObjectSource:
    """A streamed GET; a connection that drops is reopened at the offset reached."""

    def __init__(self, client: S3Client, key: str) -> None:
        self._c = client
        self._key = key
        self._pos = 0
        self._resp = client.open_get(key, 0, None)
        self._etag = self._resp.getheader("etag")
        length = self._resp.getheader("content-length")
        self._size = int(length) if length and length.isdigit() else None
        self._resumes = 0

    def read(self, size: int) -> bytes:
        while True:
            try:
                data = self._resp.read(size)
            except (OSError, http.client.HTTPException) as e:
                data = b""
                error: BaseException | None = e
            else:
                error = None
            if data:
                self._pos += len(data)
                return data
            if error is None and (self._size is None or self._pos >= self._size):
                return b""
            self._resumes += 1
            if self._resumes > self._c.attempts:
                raise OperationFailed(
                    f"reading {self._key} from {self._c.url} kept failing: {error}",
                    "check the network and the S3 server",
                )
            log.debug("S3 GET %s dropped at %d (%s): resuming", self._key, self._pos, error)
            self._resp.close()
            self._c._sleep(self._c._delay(self._resumes - 1))
            self._resp = self._c.open_get(self._key, self._pos, self._etag)

    def close(self) -> None:
        self._resp.close()


class UploadSink:
    """A streamed PUT: one request for a small file, a multipart upload for a large one.

    At most one part is held in memory. The part size doubles every 1000 parts
    so a stream of any size fits in S3's 10000 parts.
    """

    def __init__(self, client: S3Client, key: str, part_size: int = DEFAULT_PART) -> None:
        if part_size < MIN_PART:
            raise ValueError(f"S3 parts are at least {MIN_PART} bytes")
        self._c = client
        self._key = key
        self._part = part_size
        self._buf = bytearray()
        self._upload: str | None = None
        self._etags: list[str] = []

    def _part_size(self) -> int:
        return int(self._part << (len(self._etags) // 1000))

    def write(self, data: bytes) -> None:
        self._buf += data
        while len(self._buf) >= self._part_size():
            size = self._part_size()
            self._send_part(bytes(self._buf[:size]))
            del self._buf[:size]

    def _send_part(self, data: bytes) -> None:
        if self._upload is None:
            self._upload = self._c.create_upload(self._key)
        if len(self._etags) >= MAX_PARTS:
            raise OperationFailed(f"{self._key} is too large for one S3 object")
        self._etags.append(self._c.upload_part(self._key, self._upload, len(self._etags) + 1, data))

    def finish(self) -> None:
        if self._upload is None:
            self._c.put(self._key, bytes(self._buf))
        else:
            if self._buf:
                self._send_part(bytes(self._buf))
            self._c.complete_upload(self._key, self._upload, self._etags)
        self._buf = bytearray()

    def discard(self) -> None:
        self._buf = bytearray()
        if self._upload is not None:
            try:
                self._c.abort_upload(self._key, self._upload)
            except OperationFailed as e:
                log.warning("could not abort the upload of %s: %s", self._key, e)
