"""Where S3 credentials, region and endpoint come from."""

from __future__ import annotations

from pathlib import Path

import pytest

from resurgo.errors import BadInput, OperationFailed
from resurgo.media.s3client import Response, complete_body, parse_list_v2
from resurgo.media.s3config import parse_endpoint, resolve

NOWHERE = Path("/nonexistent")


def test_environment_first() -> None:
    s = resolve(
        environ={
            "AWS_ACCESS_KEY_ID": "AK",
            "AWS_SECRET_ACCESS_KEY": "SECRET1",
            "AWS_SESSION_TOKEN": "TOKEN1",
            "AWS_DEFAULT_REGION": "eu-west-3",
        },
        home=NOWHERE,
    )
    assert (s.credentials.access_key, s.credentials.secret_key) == ("AK", "SECRET1")
    assert s.credentials.session_token == "TOKEN1"
    assert (s.scheme, s.host, s.region, s.path_style) == (
        "https",
        "s3.eu-west-3.amazonaws.com",
        "eu-west-3",
        False,
    )
    assert "SECRET1" not in repr(s) and "TOKEN1" not in repr(s)


def test_region_and_endpoint_precedence() -> None:
    env = {
        "AWS_ACCESS_KEY_ID": "a",
        "AWS_SECRET_ACCESS_KEY": "b",
        "AWS_REGION": "r1",
        "AWS_DEFAULT_REGION": "r2",
        "AWS_ENDPOINT_URL": "http://10.0.0.1:9000",
    }
    s = resolve(environ=env, home=NOWHERE, insecure_http=True)
    assert (s.region, s.scheme, s.host, s.path_style) == ("r1", "http", "10.0.0.1:9000", True)
    s = resolve(environ=env, home=NOWHERE, endpoint="https://s3.local", region="r0")
    assert (s.region, s.host) == ("r0", "s3.local")


def test_profiles_from_files(tmp_path: Path) -> None:
    aws = tmp_path / ".aws"
    aws.mkdir()
    (aws / "credentials").write_text(
        "[default]\naws_access_key_id = DEF\naws_secret_access_key = defsecret\n"
        "[work]\naws_access_key_id = WORK\naws_secret_access_key = worksecret\n"
    )
    (aws / "config").write_text(
        "[default]\nregion = eu-central-1\n"
        "[profile work]\nregion = ap-south-1\nendpoint_url = http://127.0.0.1:8333\n"
        "[profile cfgonly]\naws_access_key_id = CFG\naws_secret_access_key = cfgsecret\n"
    )
    s = resolve(environ={}, home=tmp_path)
    assert (s.credentials.access_key, s.region, s.path_style) == ("DEF", "eu-central-1", False)
    s = resolve(environ={"AWS_PROFILE": "work"}, home=tmp_path, insecure_http=True)
    assert (s.credentials.access_key, s.region, s.host) == ("WORK", "ap-south-1", "127.0.0.1:8333")
    assert s.credentials.source == f"profile work in {aws / 'credentials'}"
    s = resolve(environ={"AWS_PROFILE": "cfgonly"}, home=tmp_path)
    assert s.credentials.access_key == "CFG"
    with pytest.raises(OperationFailed, match="profile 'nope'"):
        resolve(environ={"AWS_PROFILE": "nope"}, home=tmp_path)


def test_plain_http_endpoints_need_to_be_allowed(tmp_path: Path) -> None:
    # From the option, the environment or a profile: plain HTTP is refused, saying why.
    keys = {"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"}
    (tmp_path / ".aws").mkdir()
    (tmp_path / ".aws" / "config").write_text("[default]\nendpoint_url = http://10.0.0.1\n")
    for environ, home, endpoint in (
        (keys, NOWHERE, "http://10.0.0.1:9000"),
        ({**keys, "AWS_ENDPOINT_URL_S3": "HTTP://10.0.0.1"}, NOWHERE, None),
        (keys, tmp_path, None),
    ):
        with pytest.raises(BadInput, match="plain HTTP") as e:
            resolve(environ=environ, home=home, endpoint=endpoint)
        assert e.value.hint is not None and "--s3-insecure-http" in e.value.hint
        assert resolve(environ=environ, home=home, endpoint=endpoint, insecure_http=True)
    assert resolve(environ=keys, home=NOWHERE, endpoint="https://10.0.0.1").scheme == "https"


def test_no_credentials() -> None:
    with pytest.raises(OperationFailed, match="no S3 credentials") as e:
        resolve(environ={}, home=NOWHERE)
    assert e.value.hint is not None and "AWS_ACCESS_KEY_ID" in e.value.hint


@pytest.mark.parametrize(
    "bad", ["127.0.0.1:8333", "ftp://h", "http://", "http://h/path", "http://u:p@h", "http://h:x"]
)
def test_bad_endpoints(bad: str) -> None:
    with pytest.raises(BadInput, match="S3 endpoint"):
        parse_endpoint(bad)


def test_list_and_error_documents() -> None:
    page = (
        b'<?xml version="1.0" encoding="UTF-8"?>'
        b'<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
        b"<Name>b</Name><Prefix>p/</Prefix><KeyCount>2</KeyCount><IsTruncated>true</IsTruncated>"
        b"<NextContinuationToken>tok/=</NextContinuationToken>"
        b"<Contents><Key>p/a</Key><Size>12</Size></Contents>"
        b"<CommonPrefixes><Prefix>p/20261125T233000Z-ab12/</Prefix></CommonPrefixes>"
        b"</ListBucketResult>"
    )
    listing, token = parse_list_v2(page)
    assert listing.objects == [("p/a", 12)]
    assert listing.prefixes == ["p/20261125T233000Z-ab12/"]
    assert token == "tok/="
    err = Response(
        403, {}, b"<Error><Code>SignatureDoesNotMatch</Code><Message>m</Message></Error>"
    )
    assert err.error == ("SignatureDoesNotMatch", "m")
    assert Response(200, {}, b"").error == ("", "")
    assert complete_body(['"e1"', '"e2"']).endswith(
        b'<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>"e1"</ETag></Part>'
        b'<Part><PartNumber>2</PartNumber><ETag>"e2"</ETag></Part></CompleteMultipartUpload>'
    )
