"""Signature Version 4 against AWS's published examples.

The first group is AWS's SigV4 test suite (credentials AKIDEXAMPLE, service
"service", 2015-08-30T12:36:00Z); the second the worked examples of the S3
documentation ("Signature Calculations for the Authorization Header").
"""

from __future__ import annotations

import hashlib

from resurgo.media import sigv4

SUITE_KEY = "AKIDEXAMPLE"
SUITE_SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
SUITE_DATE = "20150830T123600Z"
SUITE_HEADERS = {"Host": "example.amazonaws.com", "X-Amz-Date": SUITE_DATE}
SUITE_CREDENTIAL = (
    "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
    "SignedHeaders=host;x-amz-date, Signature="
)


def suite(method: str, query: list[tuple[str, str]]) -> str:
    return sigv4.authorization(
        method=method,
        canonical_uri="/",
        query=query,
        headers=SUITE_HEADERS,
        payload_hash=sigv4.EMPTY_SHA256,
        access_key=SUITE_KEY,
        secret_key=SUITE_SECRET,
        region="us-east-1",
        service="service",
        amz_date=SUITE_DATE,
    )


def test_get_vanilla_canonical_request_and_string_to_sign() -> None:
    request, signed = sigv4.canonical_request("GET", "/", [], SUITE_HEADERS, sigv4.EMPTY_SHA256)
    assert request == (
        "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\n"
        "host;x-amz-date\n"
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
    assert signed == "host;x-amz-date"
    assert sigv4.string_to_sign(
        SUITE_DATE, sigv4.scope("20150830", "us-east-1", "service"), request
    ) == (
        "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\n"
        "bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63"
    )


def test_signing_key() -> None:
    key = sigv4.signing_key(SUITE_SECRET, "20150830", "us-east-1", "service")
    assert key.hex() == "938127b5336810ddb6a5d6af445fcac9e371f9ed418ed386b022aed82901be75"


def test_get_vanilla() -> None:
    assert suite("GET", []) == SUITE_CREDENTIAL + (
        "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
    )


def test_get_vanilla_query_order_key_case() -> None:
    query = [("Param2", "value2"), ("Param1", "value1")]
    assert suite("GET", query) == SUITE_CREDENTIAL + (
        "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"
    )


def test_post_vanilla() -> None:
    assert suite("POST", []) == SUITE_CREDENTIAL + (
        "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"
    )


S3_KEY = "AKIAIOSFODNN7EXAMPLE"
S3_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
S3_DATE = "20130524T000000Z"
S3_HOST = "examplebucket.s3.amazonaws.com"


def s3(
    method: str, uri: str, query: list[tuple[str, str]], headers: dict[str, str], payload: str
) -> str:
    return sigv4.authorization(
        method=method,
        canonical_uri=uri,
        query=query,
        headers={
            "host": S3_HOST,
            "x-amz-date": S3_DATE,
            "x-amz-content-sha256": payload,
            **headers,
        },
        payload_hash=payload,
        access_key=S3_KEY,
        secret_key=S3_SECRET,
        region="us-east-1",
        service="s3",
        amz_date=S3_DATE,
    )


def test_s3_get_object() -> None:
    auth = s3("GET", "/test.txt", [], {"range": "bytes=0-9"}, sigv4.EMPTY_SHA256)
    assert auth == (
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
        "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    )


def test_s3_put_object_with_an_encoded_key() -> None:
    payload = hashlib.sha256(b"Welcome to Amazon S3.").hexdigest()
    assert payload == "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072"
    uri = "/" + sigv4.uri_encode("test$file.text", keep_slash=True)
    assert uri == "/test%24file.text"
    headers = {"date": "Fri, 24 May 2013 00:00:00 GMT", "x-amz-storage-class": "REDUCED_REDUNDANCY"}
    assert s3("PUT", uri, [], headers, payload).endswith(
        "Signature=98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"
    )


def test_s3_get_bucket_lifecycle_and_list() -> None:
    assert s3("GET", "/", [("lifecycle", "")], {}, sigv4.EMPTY_SHA256).endswith(
        "Signature=fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"
    )
    listing = s3("GET", "/", [("prefix", "J"), ("max-keys", "2")], {}, sigv4.EMPTY_SHA256)
    assert listing.endswith(
        "Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"
    )


def test_canonical_forms() -> None:
    assert sigv4.uri_encode("a b/c~d", keep_slash=True) == "a%20b/c~d"
    assert sigv4.uri_encode("a/b=c") == "a%2Fb%3Dc"
    assert sigv4.canonical_query([("b", "2"), ("a", "1"), ("A", "0")]) == "A=0&a=1&b=2"
    block, signed = sigv4.canonical_headers({"X-B": "  two   words ", "a": "1", "x-b": "more"})
    assert block == "a:1\nx-b:two words,more\n"
    assert signed == "a;x-b"
