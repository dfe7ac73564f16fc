"""The ssh command line, ssh's failures told as hints, and SFTP packet decoding."""

from __future__ import annotations

import io
import struct

import pytest

from resurgo.media import sftp_protocol as p
from resurgo.media.sftp import SshOptions, failure_hint, ssh_argv
from resurgo.media.url import SftpSpec


def test_ssh_argv_defaults() -> None:
    argv = ssh_argv(SftpSpec("host", "/srv", "backup", None), SshOptions())
    assert argv[0] == "ssh"
    assert argv[-4:] == ["-s", "--", "backup@host", "sftp"]
    text = " ".join(argv)
    assert "BatchMode=yes" in text
    # Strict unless asked otherwise: whoever answers first does not serve the sets.
    assert "StrictHostKeyChecking=yes" in text
    assert "-p" not in argv and "-i" not in argv and "UserKnownHostsFile" not in text
    assert "KnownHostsCommand" not in text


def test_ssh_argv_options() -> None:
    opts = SshOptions(identity="/k", known_hosts="/kh", strict_host_keys=True, port=2200)
    argv = ssh_argv(SftpSpec("h", "/srv"), opts, "/tmp/x/host-key")
    text = " ".join(argv)
    assert "StrictHostKeyChecking=yes" in text and "UserKnownHostsFile=/kh" in text
    # exactly that file: not the system's list too
    assert "GlobalKnownHostsFile=/dev/null" in text
    (record,) = [a for a in argv if a.startswith("KnownHostsCommand=")]
    assert record.endswith(" -I -c \"" + record.split('"')[1] + '" %I %H %t %K /tmp/x/host-key')
    accept = ssh_argv(SftpSpec("h", "/srv"), SshOptions(known_hosts="/kh", strict_host_keys=False))
    assert "StrictHostKeyChecking=accept-new" in accept and "GlobalKnownHostsFile" not in (
        " ".join(accept))
    assert "-i /k" in text and "IdentitiesOnly=yes" in text
    assert argv[argv.index("-p") + 1] == "2200"
    # a port in the URL wins over --ssh-port
    argv = ssh_argv(SftpSpec("h", "/srv", port=22), opts)
    assert argv[argv.index("-p") + 1] == "22"


@pytest.mark.parametrize(
    ("stderr", "hint"),
    [
        ("root@127.0.0.1: Permission denied (publickey).", "--ssh-key"),
        ("Host key verification failed.", "--ssh-known-hosts"),
        ("@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @", "in the middle"),
        ("ssh: Could not resolve hostname nowhere: Name or service not known", "resolve"),
        ("ssh: connect to host 127.0.0.1 port 1: Connection refused", "nothing listens"),
        ("ssh: connect to host 192.0.2.1 port 22: Connection timed out", "cannot be reached"),
        ("subsystem request failed on channel 0", "sftp subsystem"),
        ("something else", "check the URL"),
    ],
)
def test_failure_hints(stderr: str, hint: str) -> None:
    assert hint in failure_hint(stderr)


def packet(kind: int, payload: bytes) -> bytes:
    return struct.pack(">IB", len(payload) + 1, kind) + payload


def s(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def test_handshake_and_replies_out_of_order() -> None:
    server = io.BytesIO(
        packet(p.VERSION, struct.pack(">I", 3) + s(b"fsync@openssh.com") + s(b"1"))
        # replies to requests 2 then 1
        + packet(p.STATUS, struct.pack(">II", 2, p.NO_SUCH_FILE) + s(b"No such file") + s(b""))
        + packet(
            p.ATTRS,
            struct.pack(">II", 1, p.A_SIZE | p.A_PERMISSIONS) + struct.pack(">QI", 42, 0o100644),
        )
    )
    sent = io.BytesIO()
    conn = p.SftpConnection(sent, server)
    conn.handshake()
    assert conn.extensions == {"fsync@openssh.com": b"1"}
    assert conn.chunk == p.DEFAULT_CHUNK
    first = conn.send(p.LSTAT, s(b"/a"))
    second = conn.send(p.LSTAT, s(b"/b"))
    with pytest.raises(p.SftpStatus) as e:
        conn.reply(second, p.ATTRS)
    assert e.value.code == p.NO_SUCH_FILE and e.value.message == "No such file"
    attrs = conn.reply(first, p.ATTRS).attrs()
    assert attrs == p.Attrs(42, 0o100644) and attrs.is_file and not attrs.is_dir
    assert sent.getvalue()[:9] == packet(p.INIT, struct.pack(">I", 3))


def test_a_closed_pipe_is_connection_lost() -> None:
    conn = p.SftpConnection(io.BytesIO(), io.BytesIO(b"\x00\x00"))
    with pytest.raises(p.ConnectionLost):
        conn.handshake()
    garbage = io.BytesIO(b"Welcome to my server!\n")
    with pytest.raises(p.ConnectionLost, match="login shell"):
        p.SftpConnection(io.BytesIO(), garbage).handshake()
