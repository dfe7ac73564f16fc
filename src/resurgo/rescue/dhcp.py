"""A small DHCPv4 client (RFC 2131) for a rescue whose build machine had none.

The rescue asks for an address once, to reach the set's medium for the length of a
recovery: DISCOVER, OFFER, REQUEST, ACK, then the address, the default route and the DNS
servers are set with `ip` (system.py). No renewal: a recovery takes less than any lease a
server hands out (the lease time is said). Replies are hostile bytes from the network:
parsed within the packet's bounds, matched by transaction id and our hardware address,
and only well-formed IPv4 values are used.

The socket is an ordinary UDP one bound to port 68 on the interface (SO_BINDTODEVICE):
Linux sends a limited broadcast from an interface that has no address yet, and the
broadcast flag asks the server to answer by broadcast too.
"""

from __future__ import annotations

import ipaddress
import os
import select
import socket
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

CLIENT_PORT: Final = 68
SERVER_PORT: Final = 67
MAGIC: Final = b"\x63\x82\x53\x63"
BOOTREQUEST: Final = 1
BOOTREPLY: Final = 2
DISCOVER, OFFER, REQUEST, ACK, NAK = 1, 2, 3, 5, 6
# Options (RFC 2132)
OPT_PAD, OPT_END = 0, 255
OPT_SUBNET, OPT_ROUTER, OPT_DNS, OPT_LEASE = 1, 3, 6, 51
OPT_MSGTYPE, OPT_SERVER_ID, OPT_PARAMS, OPT_REQUESTED, OPT_HOSTNAME = 53, 54, 55, 50, 12
_FIXED = struct.Struct("!BBBBIHH4s4s4s4s16s64s128s")  # 236 bytes before the magic cookie
MAX_PACKET: Final = 1500


@dataclass(frozen=True)
class Reply:
    kind: int
    address: str
    server: str | None
    prefix: int | None
    router: str | None
    dns: tuple[str, ...]
    lease: int | None


@dataclass(frozen=True)
class Lease:
    address: str
    prefix: int
    router: str | None
    dns: tuple[str, ...]
    server: str | None
    seconds: int | None


def packet(kind: int, xid: int, mac: bytes, *, requested: str | None = None,
           server: str | None = None, hostname: str | None = None) -> bytes:
    """A BOOTREQUEST of DHCP message type ``kind``, asking for a broadcast answer."""
    fixed = _FIXED.pack(BOOTREQUEST, 1, len(mac), 0, xid, 0, 0x8000, bytes(4), bytes(4),
                        bytes(4), bytes(4), mac.ljust(16, b"\0"), bytes(64), bytes(128))
    opts = bytes([OPT_MSGTYPE, 1, kind])
    if requested is not None:
        opts += bytes([OPT_REQUESTED, 4]) + ipaddress.IPv4Address(requested).packed
    if server is not None:
        opts += bytes([OPT_SERVER_ID, 4]) + ipaddress.IPv4Address(server).packed
    if hostname:
        name = hostname.encode()[:63]
        opts += bytes([OPT_HOSTNAME, len(name)]) + name
    opts += bytes([OPT_PARAMS, 4, OPT_SUBNET, OPT_ROUTER, OPT_DNS, OPT_LEASE])
    return fixed + MAGIC + opts + bytes([OPT_END])


def options(data: bytes) -> dict[int, bytes]:
    """The options after the magic cookie (the first of each code), within the data."""
    out: dict[int, bytes] = {}
    pos = 0
    while pos < len(data):
        code = data[pos]
        if code == OPT_END:
            break
        if code == OPT_PAD:
            pos += 1
            continue
        if pos + 1 >= len(data):
            break
        size = data[pos + 1]
        value = data[pos + 2 : pos + 2 + size]
        if len(value) != size:
            break
        out.setdefault(code, value)
        pos += 2 + size
    return out


def _addresses(value: bytes | None) -> list[str]:
    if not value or len(value) % 4:
        return []
    out = []
    for i in range(0, len(value), 4):
        addr = ipaddress.IPv4Address(value[i : i + 4])
        if not (addr.is_unspecified or addr.is_multicast or addr.is_loopback
                or addr == ipaddress.IPv4Address("255.255.255.255")):
            out.append(str(addr))
    return out


def _prefix(value: bytes | None) -> int | None:
    if value is None or len(value) != 4:
        return None
    try:
        return ipaddress.IPv4Network(f"0.0.0.0/{ipaddress.IPv4Address(value)}").prefixlen
    except ValueError:
        return None  # not a contiguous mask


def parse(data: bytes, xid: int, mac: bytes) -> Reply | None:
    """A server's reply to our transaction, or None for anything else."""
    if len(data) < _FIXED.size + len(MAGIC) or len(data) > MAX_PACKET:
        return None
    fields = _FIXED.unpack_from(data)
    op, _htype, hlen, _hops, rxid = fields[:5]
    yiaddr, chaddr = fields[8], fields[11]
    if op != BOOTREPLY or rxid != xid or hlen != len(mac) or chaddr[:hlen] != mac:
        return None
    if data[_FIXED.size : _FIXED.size + 4] != MAGIC:
        return None
    opts = options(data[_FIXED.size + 4 :])
    kind = opts.get(OPT_MSGTYPE, b"")
    if len(kind) != 1:
        return None
    address = _addresses(yiaddr)
    if kind[0] != NAK and not address:
        return None
    server = _addresses(opts.get(OPT_SERVER_ID))
    router = _addresses(opts.get(OPT_ROUTER))
    lease = opts.get(OPT_LEASE)
    return Reply(
        kind=kind[0],
        address=address[0] if address else "",
        server=server[0] if server else None,
        prefix=_prefix(opts.get(OPT_SUBNET)),
        router=router[0] if router else None,
        dns=tuple(_addresses(opts.get(OPT_DNS))[:3]),
        lease=struct.unpack("!I", lease)[0] if lease is not None and len(lease) == 4 else None,
    )


def hardware_address(iface: str, sys_net: Path = Path("/sys/class/net")) -> bytes:
    text = (sys_net / iface / "address").read_text().strip()
    mac = bytes.fromhex(text.replace(":", ""))
    if len(mac) != 6:
        raise ValueError(f"{iface}: not an Ethernet address ({text})")
    return mac


def _exchange(sock: socket.socket, out: bytes, xid: int, mac: bytes, want: set[int],
              deadline: float) -> Reply | None:
    """Send ``out`` (again every 2 s) until a reply of a kind in ``want`` or the deadline."""
    resend = 0.0
    while (now := time.monotonic()) < deadline:
        if now >= resend:
            sock.sendto(out, ("255.255.255.255", SERVER_PORT))
            resend = now + 2.0
        ready, _, _ = select.select([sock], [], [], max(0.0, min(resend, deadline) - now))
        if not ready:
            continue
        data = sock.recv(MAX_PACKET + 1)
        reply = parse(data, xid, mac)
        if reply is not None and reply.kind in want:
            return reply
    return None


def lease(iface: str, *, timeout: float = 10.0, hostname: str | None = None) -> Lease | None:
    """An address for ``iface`` (up, with no address yet), or None when no server answered
    within ``timeout`` seconds. Needs root (port 68, SO_BINDTODEVICE)."""
    mac = hardware_address(iface)
    xid = int.from_bytes(os.urandom(4), "big")
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, iface.encode())
        sock.bind(("0.0.0.0", CLIENT_PORT))
        offer = _exchange(sock, packet(DISCOVER, xid, mac, hostname=hostname), xid, mac,
                          {OFFER}, deadline)
        if offer is None:
            return None
        req = packet(REQUEST, xid, mac, requested=offer.address, server=offer.server,
                     hostname=hostname)
        ack = _exchange(sock, req, xid, mac, {ACK, NAK}, deadline)
    if ack is None or ack.kind != ACK:
        return None
    prefix = ack.prefix or offer.prefix or 24
    return Lease(ack.address, prefix, ack.router or offer.router, ack.dns or offer.dns,
                 ack.server or offer.server, ack.lease)
