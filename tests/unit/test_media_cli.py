"""The medium options: when an SFTP server's key must already be known, plain HTTP to S3."""

from __future__ import annotations

import pytest

from resurgo.cli.main import build_parser, main
from resurgo.cli.medium import medium_options

SFTP = "sftp://backup@192.0.2.1/srv/sets"


@pytest.mark.parametrize(
    ("argv", "strict"),
    [
        # Only a save, without a known_hosts file, may meet a server for the first time.
        (["save", "--to", SFTP], False),
        (["save", "--to", SFTP, "--ssh-strict-host-keys"], True),
        (["save", "--to", SFTP, "--ssh-known-hosts", "/kh"], True),
        # Reading is what a recovery does: never the word of whoever answers first.
        (["list", SFTP], True),
        (["list", SFTP, "--ssh-known-hosts", "/kh"], True),
        (["verify", "--from", SFTP, "--root", "/mnt"], True),
    ],
)
def test_strict_host_keys(argv: list[str], strict: bool) -> None:
    args = build_parser().parse_args(argv)
    opts = medium_options(args, writing=args.command == "save")
    assert opts.ssh.strict_host_keys is strict


def test_plain_http_s3_needs_the_option(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "a")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "b")
    code = main(["list", "s3://bucket/sets", "--s3-endpoint", "http://192.0.2.1:8333"])
    assert code == 2
    err = capsys.readouterr().err
    assert "plain HTTP" in err and "--s3-insecure-http" in err
