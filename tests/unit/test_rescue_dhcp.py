"""The rescue's own DHCP client (packets built and answers parsed: hostile bytes) and how
the rescue picks and configures its interfaces."""

from __future__ import annotations

import ipaddress
import struct
from pathlib import Path

from resurgo.rescue import dhcp, system

MAC = bytes.fromhex("525400123456")


def answer(kind: int, xid: int, mac: bytes = MAC, yiaddr: str = "10.0.2.15",
           opts: bytes | None = None) -> bytes:
    """A server's reply as qemu's user network sends one."""
    fixed = dhcp._FIXED.pack(dhcp.BOOTREPLY, 1, 6, 0, xid, 0, 0x8000, bytes(4),
                             ipaddress.IPv4Address(yiaddr).packed, bytes(4), bytes(4),
                             mac.ljust(16, b"\0"), bytes(64), bytes(128))
    if opts is None:
        opts = (bytes([53, 1, kind, 54, 4, 10, 0, 2, 2, 1, 4, 255, 255, 255, 0,
                       3, 4, 10, 0, 2, 2, 6, 8, 10, 0, 2, 3, 0, 0, 0, 0])
                + bytes([51, 4]) + struct.pack("!I", 86400) + bytes([255]))
    return fixed + dhcp.MAGIC + opts


def test_discover_and_request_ask_for_a_broadcast_answer() -> None:
    p = dhcp.packet(dhcp.REQUEST, 0x1234, MAC, requested="10.0.2.15", server="10.0.2.2",
                    hostname="resurgo-rescue")
    fields = dhcp._FIXED.unpack_from(p)
    assert fields[0] == dhcp.BOOTREQUEST and fields[4] == 0x1234 and fields[6] == 0x8000
    assert fields[11][:6] == MAC
    opts = dhcp.options(p[dhcp._FIXED.size + 4:])
    assert opts[53] == bytes([dhcp.REQUEST])
    assert opts[50] == bytes([10, 0, 2, 15]) and opts[54] == bytes([10, 0, 2, 2])
    assert opts[12] == b"resurgo-rescue"


def test_an_answer_gives_address_mask_router_dns_and_lease() -> None:
    r = dhcp.parse(answer(dhcp.ACK, 7), 7, MAC)
    assert r == dhcp.Reply(kind=dhcp.ACK, address="10.0.2.15", server="10.0.2.2", prefix=24,
                           router="10.0.2.2", dns=("10.0.2.3",), lease=86400)


def test_answers_to_others_or_malformed_are_ignored() -> None:
    good = answer(dhcp.OFFER, 7)
    assert dhcp.parse(good, 8, MAC) is None  # another transaction
    assert dhcp.parse(answer(dhcp.OFFER, 7, mac=bytes(6)), 7, MAC) is None  # another client
    assert dhcp.parse(good[:200], 7, MAC) is None  # truncated
    assert dhcp.parse(good + bytes(2000), 7, MAC) is None  # larger than a packet
    assert dhcp.parse(answer(dhcp.OFFER, 7, yiaddr="0.0.0.0"), 7, MAC) is None
    assert dhcp.parse(answer(dhcp.OFFER, 7, yiaddr="255.255.255.255"), 7, MAC) is None
    # No message type, or an option running past the end: nothing is guessed.
    assert dhcp.parse(answer(dhcp.OFFER, 7, opts=bytes([255])), 7, MAC) is None
    assert dhcp.parse(answer(dhcp.OFFER, 7, opts=bytes([53, 9, 2])), 7, MAC) is None
    # A mask that is not one, a router list of odd length: left out, the address kept.
    odd = answer(dhcp.OFFER, 7, opts=bytes([53, 1, 2, 1, 4, 255, 0, 255, 0, 3, 3, 1, 2, 3,
                                            6, 4, 127, 0, 0, 1, 255]))
    r = dhcp.parse(odd, 7, MAC)
    assert r is not None and r.prefix is None and r.router is None and r.dns == ()


def _dns(option: bytes) -> tuple[str, ...]:
    r = dhcp.parse(answer(dhcp.ACK, 7, opts=bytes([53, 1, dhcp.ACK]) + option + bytes([255])),
                   7, MAC)
    assert r is not None
    return r.dns


def test_the_dns_servers_of_a_hostile_answer_are_bounded_and_checked() -> None:
    def addrs(*quads: str) -> bytes:
        return b"".join(ipaddress.IPv4Address(q).packed for q in quads)

    # 63 addresses (the whole option), the unusable ones left out, three kept at most.
    junk = addrs("0.0.0.0", "127.0.0.53", "224.0.0.251", "255.255.255.255")
    full = junk + addrs("192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4") * 14
    full += addrs(*["198.51.100.9"] * (63 - len(full) // 4))
    assert len(full) == 252
    assert _dns(bytes([6, len(full)]) + full) == ("192.0.2.1", "192.0.2.2", "192.0.2.3")
    # A length that is no multiple of 4, none at all, or past the packet's end: none.
    assert _dns(bytes([6, 5]) + addrs("192.0.2.1") + b"\x01") == ()
    assert _dns(bytes([6, 0])) == ()
    assert dhcp.parse(answer(dhcp.ACK, 7, opts=bytes([53, 1, dhcp.ACK, 6, 200, 1, 2, 3, 4])),
                      7, MAC) is not None
    assert _dns(bytes([6, 200, 192, 0, 2, 1])) == ()
    # The first option 6 counts, as every option's first.
    assert _dns(bytes([6, 4]) + addrs("192.0.2.7") + bytes([6, 4]) + addrs("192.0.2.8")) == \
        ("192.0.2.7",)
    # What the rescue writes of them: one nameserver line each.
    assert system.resolv_conf(("10.0.2.3", "192.0.2.1")) == \
        "nameserver 10.0.2.3\nnameserver 192.0.2.1\n"


def test_options_stop_at_the_end_of_the_data() -> None:
    assert dhcp.options(bytes([0, 0, 1, 4, 255, 255])) == {}
    assert dhcp.options(bytes([3, 4, 1, 2, 3, 4, 3, 4, 9, 9, 9, 9])) == {3: bytes([1, 2, 3, 4])}


def test_a_lease_sets_the_address_and_only_the_first_the_default_route() -> None:
    got = dhcp.Lease("10.0.2.15", 24, "10.0.2.2", ("10.0.2.3",), "10.0.2.2", 86400)
    assert system.lease_commands(got, "ens3", route=True) == [
        ["ip", "addr", "add", "10.0.2.15/24", "dev", "ens3"],
        ["ip", "route", "add", "default", "via", "10.0.2.2", "dev", "ens3"],
    ]
    assert system.lease_commands(got, "ens4", route=False) == [
        ["ip", "addr", "add", "10.0.2.15/24", "dev", "ens4"]]


def test_wired_interfaces_and_their_link(tmp_path: Path) -> None:
    for name, carrier in (("lo", "1"), ("ens3", "1"), ("ens4", "0"), ("wlp2s0", "1"),
                          ("br0", "1")):
        d = tmp_path / name
        d.mkdir()
        (d / "carrier").write_text(carrier + "\n")
        if name not in ("lo", "br0"):
            (d / "device").mkdir()
    (tmp_path / "wlp2s0" / "wireless").mkdir()
    assert system.interfaces(tmp_path) == ["ens3", "ens4"]
    assert system.has_link("ens3", 0, tmp_path)
    assert not system.has_link("ens4", 0, tmp_path)
    assert not system.has_link("gone", 0, tmp_path)


def test_the_hardware_address_is_read_from_sysfs(tmp_path: Path) -> None:
    (tmp_path / "ens3").mkdir()
    (tmp_path / "ens3" / "address").write_text("52:54:00:12:34:56\n")
    assert dhcp.hardware_address("ens3", tmp_path) == MAC
