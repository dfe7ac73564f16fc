"""The rescue's DHCP client on a real interface: two network namespaces joined by a veth
pair (nothing of the machine's own network is touched), a DHCP server that answers by
broadcast on one side, the client asking from an interface with no address on the other,
as the rescue does at boot."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = str(Path(__file__).resolve().parents[2] / "src")

SERVER = r"""
import ipaddress, socket, sys
from resurgo.rescue import dhcp
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, sys.argv[1].encode())
s.bind(("0.0.0.0", 67))
s.settimeout(30)
print("ready", flush=True)
for want, kind in ((dhcp.DISCOVER, dhcp.OFFER), (dhcp.REQUEST, dhcp.ACK)):
    data = s.recv(2000)
    f = dhcp._FIXED.unpack_from(data)
    assert dhcp.options(data[dhcp._FIXED.size + 4:])[53][0] == want
    fixed = dhcp._FIXED.pack(2, 1, 6, 0, f[4], 0, 0x8000, bytes(4),
                             ipaddress.IPv4Address("10.9.0.50").packed, bytes(4), bytes(4),
                             f[11], bytes(64), bytes(128))
    opts = bytes([53, 1, kind, 54, 4, 10, 9, 0, 1, 1, 4, 255, 255, 255, 0, 3, 4, 10, 9, 0, 1,
                  6, 4, 10, 9, 0, 1, 51, 4, 0, 0, 14, 16, 255])
    s.sendto(fixed + dhcp.MAGIC + opts, ("255.255.255.255", 68))
"""

CLIENT = r"""
from resurgo.rescue import dhcp, system
assert system.has_link("vc", 5)
print(dhcp.lease("vc", timeout=10, hostname="resurgo-rescue"))
"""


def _ip(*argv: str) -> None:
    subprocess.run(["ip", *argv], check=True, capture_output=True)


@pytest.fixture
def namespaces() -> Iterator[tuple[str, str]]:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    tag = secrets.token_hex(3)
    server, client = f"rsg-dhcps-{tag}", f"rsg-dhcpc-{tag}"
    made: list[str] = []
    try:
        for ns in (server, client):
            _ip("netns", "add", ns)
            made.append(ns)
        _ip("link", "add", "vs", "netns", server, "type", "veth", "peer", "name", "vc",
            "netns", client)
        _ip("-n", server, "addr", "add", "10.9.0.1/24", "dev", "vs")
        _ip("-n", server, "link", "set", "vs", "up")
        _ip("-n", client, "link", "set", "vc", "up")
        yield server, client
    finally:
        for ns in made:  # deleting a namespace deletes its end of the pair, and so both
            subprocess.run(["ip", "netns", "del", ns], check=False)


def test_the_rescue_gets_an_address_by_broadcast(namespaces: tuple[str, str]) -> None:
    server, client = namespaces
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": SRC}
    srv = subprocess.Popen(["ip", "netns", "exec", server, sys.executable, "-c", SERVER, "vs"],
                           stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert srv.stdout is not None and srv.stdout.readline().strip() == "ready"
        out = subprocess.run(["ip", "netns", "exec", client, sys.executable, "-c", CLIENT],
                             capture_output=True, text=True, env=env, timeout=60)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == (
            "Lease(address='10.9.0.50', prefix=24, router='10.9.0.1', dns=('10.9.0.1',), "
            "server='10.9.0.1', seconds=3600)")
        assert srv.wait(timeout=30) == 0
    finally:
        if srv.poll() is None:
            srv.kill()
            srv.wait()
