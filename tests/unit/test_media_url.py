"""Medium URLs."""

from __future__ import annotations

import pytest

from resurgo.errors import BadInput
from resurgo.media.url import DirectorySpec, FloppySpec, S3Spec, SftpSpec, parse_url


@pytest.mark.parametrize(
    ("url", "spec"),
    [
        ("/mnt/usb/resurgo", DirectorySpec("/mnt/usb/resurgo")),
        ("relative/dir", DirectorySpec("relative/dir")),
        ("file:///mnt/usb", DirectorySpec("/mnt/usb")),
        ("file:///mnt/with%20space", DirectorySpec("/mnt/with space")),
        ("floppy:/tmp/desc.img", FloppySpec("/tmp/desc.img")),
        ("floppy:desc.img", FloppySpec("desc.img")),
        (
            "sftp://backup@host.example:2222/srv/sets/",
            SftpSpec("host.example", "/srv/sets", "backup", 2222),
        ),
        ("sftp://host", SftpSpec("host", ".")),
        ("sftp://host/", SftpSpec("host", "/")),
        ("sftp://host/~/sets", SftpSpec("host", "sets")),
        ("sftp://host/~/", SftpSpec("host", ".")),
        ("sftp://u@[::1]:22/x", SftpSpec("::1", "/x", "u", 22)),
        ("sftp://u@[fe80::1]/x", SftpSpec("fe80::1", "/x", "u")),
        ("SFTP://h/x", SftpSpec("h", "/x")),
        ("s3://bucket", S3Spec("bucket", "")),
        ("s3://bucket/", S3Spec("bucket", "")),
        ("s3://my.bucket-1/a/b/", S3Spec("my.bucket-1", "a/b")),
    ],
)
def test_good(url: str, spec: object) -> None:
    assert parse_url(url) == spec


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("", "empty"),
        (" /x", "spaces"),
        ("floppy:", "image file"),
        ("floppy:/tmp/", "image file"),
        ("ftp://host/x", "unknown kind of medium 'ftp'"),
        ("sftp://user:secret@host/x", "passwords are not accepted"),
        ("sftp://-oProxyCommand=x/y", "bad host name"),
        ("sftp://host:0/x", "bad port"),
        ("sftp://host:99999/x", "bad port"),
        ("sftp://host:ssh/x", "bad port"),
        ("sftp://[::1/x", "unclosed"),
        ("sftp://-u@host/x", "bad user name"),
        ("sftp://host/x?y=1", "no ?query"),
        ("s3://", "bad bucket"),
        ("s3://a/x", "bad bucket"),
        ("s3://bad_bucket!/x", "bad bucket"),
        ("s3://bucket/a//b", "bad part ''"),
        ("s3://bucket/a/../b", "bad part '..'"),
        ("file://remote/x", "local path"),
    ],
)
def test_bad(url: str, why: str) -> None:
    with pytest.raises(BadInput, match="bad medium") as e:
        parse_url(url)
    assert why in e.value.message
    assert e.value.hint is not None and "s3://bucket/prefix" in e.value.hint


def test_display_forms() -> None:
    spec = parse_url("sftp://backup@host:2222/srv/sets/")
    assert isinstance(spec, SftpSpec)
    assert spec.display == "sftp://backup@host:2222/srv/sets"
    assert spec.destination == "backup@host"
    home = parse_url("sftp://host/~/sets")
    assert isinstance(home, SftpSpec) and home.display == "sftp://host/~/sets"
    s3 = parse_url("s3://bucket/a/b")
    assert isinstance(s3, S3Spec) and s3.display == "s3://bucket/a/b"
