"""finalize: network configuration mapped to new interfaces, per format, and the pairing."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from resurgo.errors import BadInput
from resurgo.finalize import configs, netconf, netmap
from resurgo.finalize.netconf import NetMap, NicRef
from resurgo.finalize.netmap import Nic
from resurgo.finalize.tree import SavedTree
from resurgo.model import ConfigFile

OLD_MAC = "52:54:00:ab:cd:ef"
NEW_MAC = "52:54:00:12:00:01"


def nm_map(names: dict[str, str] | None = None, macs: dict[str, str] | None = None) -> NetMap:
    return NetMap(names or {}, macs or {})


# ---------------------------------------------------------------------------- ifupdown

INTERFACES = """\
# This file describes the network interfaces available on your system
# and how to activate them. For more information, see interfaces(5).

source /etc/network/interfaces.d/*

# The loopback network interface
auto lo
iface lo inet loopback

# The primary network interface (ens3 is the onboard one)
allow-hotplug ens3
iface ens3 inet dhcp
# This is an autoconfigured IPv6 interface
iface ens3 inet6 auto

auto br0
iface br0 inet static
\taddress 192.168.1.10/24
\tgateway 192.168.1.1
\tbridge_ports ens4
\thwaddress ether 52:54:00:AB:CD:EF

auto ens4.100
iface ens4.100 inet manual
    vlan-raw-device ens4
    post-up ip link set dev ens4 mtu 9000
"""


def test_ifupdown_stanzas_options_vlans_and_commands_follow_the_new_names() -> None:
    rw = netconf.rewrite_ifupdown(
        INTERFACES, nm_map({"ens3": "enp1s0", "ens4": "enp2s0"}, {OLD_MAC: NEW_MAC})
    )
    expected = (
        INTERFACES.replace("allow-hotplug ens3", "allow-hotplug enp1s0")
        .replace("iface ens3 inet", "iface enp1s0 inet")
        .replace("bridge_ports ens4", "bridge_ports enp2s0")
        .replace("ether 52:54:00:AB:CD:EF", "ether 52:54:00:12:00:01")
        .replace("ens4.100", "enp2s0.100")
        .replace("vlan-raw-device ens4", "vlan-raw-device enp2s0")
        .replace("dev ens4 mtu", "dev enp2s0 mtu")
    )
    assert "(ens3 is the onboard one)" in expected  # the comment stays as it was
    assert rw.text == expected
    assert [c.line for c in rw.changes] == [11, 12, 14, 20, 21, 23, 24, 25, 26]
    assert rw.changes[0].why == "interface ens3 is now enp1s0"


def test_ifupdown_names_swap_in_one_pass_and_prefixes_do_not_match() -> None:
    text = "auto eth0 eth1 eth10\niface eth0 inet dhcp\niface eth1 inet dhcp\n"
    rw = netconf.rewrite_ifupdown(text, nm_map({"eth0": "eth1", "eth1": "eth0"}))
    assert rw.text == "auto eth1 eth0 eth10\niface eth1 inet dhcp\niface eth0 inet dhcp\n"


def test_ifupdown_refs_are_the_physical_interfaces() -> None:
    refs = netconf.refs_ifupdown(INTERFACES, "/etc/network/interfaces")
    assert sorted({r.name for r in refs if r.name}) == ["ens3", "ens4"]
    assert all(r.mac is None for r in refs)


# ---------------------------------------------------------------------------- NetworkManager

NM_KEYFILE = f"""\
[connection]
id=Wired connection 1
uuid=3c5d8a1e-8f2b-3b4a-9d1e-6a7b8c9d0e1f
type=ethernet
autoconnect-priority=-999
interface-name=enp1s0
timestamp=1700000000

[ethernet]
mac-address={OLD_MAC.upper()}
cloned-mac-address=02:00:00:00:00:01

[ipv4]
method=auto

[ipv6]
addr-gen-mode=stable-privacy
method=auto

[proxy]
"""


def test_nm_keyfile_interface_name_and_mac_address_only() -> None:
    nm = nm_map({"enp1s0": "ens5"}, {OLD_MAC: NEW_MAC, "02:00:00:00:00:01": "x"})
    rw = netconf.rewrite_nm_keyfile(NM_KEYFILE, nm)
    assert rw.text == NM_KEYFILE.replace("interface-name=enp1s0", "interface-name=ens5").replace(
        f"mac-address={OLD_MAC.upper()}", f"mac-address={NEW_MAC.upper()}"
    )
    assert [c.line for c in rw.changes] == [6, 10]
    assert netconf.refs_nm_keyfile(NM_KEYFILE, "x.nmconnection") == [
        NicRef("enp1s0", OLD_MAC, "x.nmconnection")
    ]


# ---------------------------------------------------------------------------- networkd

NETWORK = f"""\
# /etc/systemd/network/10-wired.network
[Match]
Name=enp1s0 en*
MACAddress={OLD_MAC}

[Network]
DHCP=yes
# Name=enp1s0 here is only a comment
"""

LINK = f"""\
[Match]
MACAddress={OLD_MAC}

[Link]
Name=lan0
"""


def test_networkd_match_section_only() -> None:
    rw = netconf.rewrite_networkd(NETWORK, nm_map({"enp1s0": "ens5"}, {OLD_MAC: NEW_MAC}))
    assert rw.text == NETWORK.replace("Name=enp1s0 en*", "Name=ens5 en*").replace(
        f"MACAddress={OLD_MAC}", f"MACAddress={NEW_MAC}"
    )
    assert [c.line for c in rw.changes] == [3, 4]


def test_networkd_link_keeps_its_pinned_name_and_matches_the_new_mac() -> None:
    refs = netconf.refs_networkd(LINK, "/etc/systemd/network/10-lan0.link")
    assert refs == [NicRef("lan0", OLD_MAC, "/etc/systemd/network/10-lan0.link", pinned=True)]
    saved = netmap.saved_nics(refs)
    pairs = netmap.pair_nics(saved, [Nic("ens5", NEW_MAC, "/sys/devices/pci0000:00/0000:00:05.0")])
    nm = netmap.netmap(pairs)
    assert nm.names == {} and nm.macs == {OLD_MAC: NEW_MAC}
    assert netconf.rewrite_networkd(LINK, nm).text == LINK.replace(OLD_MAC, NEW_MAC)


# ---------------------------------------------------------------------------- netplan

NETPLAN_CLOUD = """\
# This file is generated from information provided by the datasource.  Changes
# to it will not persist across an instance reboot.  To disable cloud-init's
# network configuration capabilities, write a file
# /etc/cloud/cloud.cfg.d/99-disable-network-config.cfg with the following:
# network: {config: disabled}
network:
    ethernets:
        ens3:
            dhcp4: true
            match:
                macaddress: fa:16:3e:12:34:56
            set-name: ens3
    version: 2
"""

NETPLAN_BRIDGE = """\
network:
  version: 2
  renderer: networkd
  ethernets:
    enp1s0:
      dhcp4: no
    enp2s0: {dhcp4: no}   # enp2s0 is the uplink
  bridges:
    br0:
      interfaces: [enp1s0, enp2s0]
      addresses: [10.0.0.5/24]
  vlans:
    vlan10:
      id: 10
      link: "enp1s0"
"""


def test_netplan_set_name_pin_keeps_the_name_and_takes_the_new_mac() -> None:
    refs = netconf.refs_netplan(NETPLAN_CLOUD, "/etc/netplan/50-cloud-init.yaml")
    assert [(r.name, r.mac, r.pinned) for r in refs] == [("ens3", "fa:16:3e:12:34:56", True)]
    pairs = netmap.pair_nics(netmap.saved_nics(refs), [Nic("ens4", NEW_MAC, "/sys/x")])
    nm = netmap.netmap(pairs)
    rw = netconf.rewrite_netplan(NETPLAN_CLOUD, nm)
    assert rw.text == NETPLAN_CLOUD.replace("fa:16:3e:12:34:56", NEW_MAC)
    assert [c.line for c in rw.changes] == [11]


def test_netplan_keys_lists_quoted_values_renamed_comments_and_layout_kept() -> None:
    refs = netconf.refs_netplan(NETPLAN_BRIDGE, "p.yaml")
    assert sorted(r.name for r in refs if r.name) == ["enp1s0", "enp2s0"]
    rw = netconf.rewrite_netplan(NETPLAN_BRIDGE, nm_map({"enp1s0": "ens3", "enp2s0": "ens4"}))
    assert rw.text == (
        NETPLAN_BRIDGE.replace("    enp1s0:\n", "    ens3:\n")
        .replace("    enp2s0: {dhcp4: no}   # enp2s0 is", "    ens4: {dhcp4: no}   # enp2s0 is")
        .replace("[enp1s0, enp2s0]", "[ens3, ens4]")
        .replace('link: "enp1s0"', 'link: "ens3"')
    )


# ---------------------------------------------------------------------------- udev rules

RULES = """\
# This file was automatically generated by the /lib/udev/write_net_rules
# program, run by the persistent-net-generator.rules rules file.
#
# You can modify it, as long as you keep each rule on a single
# line, and change only the value of the NAME= key.

# PCI device 0x8086:0x100e (e1000)
SUBSYSTEM=="net", ACTION=="add", DRIVERS=="?*", ATTR{address}=="52:54:00:ab:cd:ef", \
ATTR{dev_id}=="0x0", ATTR{type}=="1", KERNEL=="eth*", NAME="eth0"

# PCI device 0x8086:0x10d3 (e1000e)
SUBSYSTEM=="net", ACTION=="add", DRIVERS=="?*", ATTR{address}=="52:54:00:aa:bb:cc", \
ATTR{dev_id}=="0x0", ATTR{type}=="1", KERNEL=="eth*", NAME="eth1"
"""


def test_persistent_net_rules_of_gone_macs_are_removed_with_their_comment() -> None:
    rw = netconf.rewrite_persistent_net_rules(RULES, frozenset({OLD_MAC}))
    lines = RULES.splitlines(keepends=True)
    assert rw.text == "".join(lines[:6] + lines[8:])
    assert [(c.line, c.after) for c in rw.changes] == [(7, None), (8, None)]
    assert "keep the name eth0 from the new interface" in rw.changes[1].why
    refs = netconf.refs_persistent_net_rules(RULES, "r")
    assert [(r.name, r.mac) for r in refs] == [("eth0", OLD_MAC), ("eth1", "52:54:00:aa:bb:cc")]
    assert not netconf.rewrite_persistent_net_rules(RULES, frozenset()).changed


# ---------------------------------------------------------------------------- pairing


def test_pairing_by_mac_then_order_and_unpaired_warned() -> None:
    saved = netmap.saved_nics(
        [
            NicRef("eth1", "52:54:00:aa:bb:cc", "r"),
            NicRef("eth0", OLD_MAC, "r"),
            NicRef("eth0", None, "/etc/network/interfaces"),
            NicRef("eth2", None, "/etc/network/interfaces"),
        ]
    )
    assert [n.name for n in saved] == ["eth0", "eth1", "eth2"]
    actual = [
        Nic("enp2s0", "52:54:00:aa:bb:cc", "/sys/devices/pci0000:00/0000:00:02.0"),
        Nic("enp10s0", "52:54:00:99:99:99", "/sys/devices/pci0000:00/0000:00:10.0"),
    ]
    warnings: list[str] = []
    pairs = netmap.pair_nics(saved, actual, warnings=warnings)
    assert [(o.name, n.name, how) for o, n, how in pairs] == [
        ("eth1", "enp2s0", "mac"),
        ("eth0", "enp10s0", "order"),
    ]
    assert len(warnings) == 1 and "eth2" in warnings[0]
    nm = netmap.netmap(pairs)
    # eth1 is still there: the restored system names it as before, whatever the rescue does.
    assert nm.names == {"eth0": "enp10s0"}
    assert nm.macs == {OLD_MAC: "52:54:00:99:99:99"}
    assert netmap.gone_macs(saved, actual) == frozenset({OLD_MAC})


def test_net_map_option_wins_and_a_wrong_one_is_bad_input() -> None:
    saved = [Nic("eth0", OLD_MAC), Nic("eth1", None)]
    actual = [Nic("ens3", "52:54:00:00:00:03", "/a"), Nic("ens4", "52:54:00:00:00:04", "/b")]
    pairs = netmap.pair_nics(saved, actual, [("eth0", "52:54:00:00:00:04")])
    assert [(o.name, n.name, how) for o, n, how in pairs] == [
        ("eth0", "ens4", "map"),
        ("eth1", "ens3", "order"),
    ]
    with pytest.raises(BadInput, match="this machine has no network interface wlan9"):
        netmap.pair_nics(saved, actual, [("eth0", "wlan9")])
    with pytest.raises(BadInput, match="saved network configuration names no interface eth7"):
        netmap.pair_nics(saved, actual, [("eth7", "ens3")])
    # The same saved NIC by its name and by its MAC, or one actual NIC for two saved ones.
    twice = f"saved interface eth0 ({OLD_MAC}) is already mapped by --net-map eth0=ens3"
    with pytest.raises(BadInput, match=re.escape(twice)):
        netmap.pair_nics(saved, actual, [("eth0", "ens3"), (OLD_MAC.upper(), "ens4")])
    twice = "actual interface ens3 (52:54:00:00:00:03) is already mapped by --net-map eth0=ens3"
    with pytest.raises(BadInput, match=re.escape(twice)):
        netmap.pair_nics(saved, actual, [("eth0", "ens3"), ("eth1", "52:54:00:00:00:03")])
    assert netmap.parse_net_map(["eth0=ens3", " a = b "]) == (("eth0", "ens3"), ("a", "b"))
    with pytest.raises(BadInput, match="expected OLD=NEW"):
        netmap.parse_net_map(["eth0"])


def _net_device(sysfs: Path, name: str, mac: str, device: str | None) -> None:
    real = sysfs / (device or "devices/virtual/net") / "net" / name
    if device is None:
        real = sysfs / "devices/virtual/net" / name
    real.mkdir(parents=True)
    (real / "address").write_text(mac + "\n")
    if device is not None:
        os.symlink(os.path.relpath(sysfs / device, real), real / "device")
    link = sysfs / "class/net" / name
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(os.path.relpath(real, link.parent), link)


def test_actual_nics_are_the_ones_with_a_device_in_bus_order(tmp_path: Path) -> None:
    _net_device(tmp_path, "lo", "00:00:00:00:00:00", None)
    _net_device(
        tmp_path, "enp10s0", "52:54:00:00:00:0A", "devices/pci0000:00/0000:00:1c.0/0000:0a:00.0"
    )
    _net_device(
        tmp_path, "enp1s0", "52:54:00:00:00:01", "devices/pci0000:00/0000:00:02.0/0000:01:00.0"
    )
    _net_device(tmp_path, "br0", "52:54:00:00:00:01", None)
    nics = netmap.actual_nics(tmp_path)
    assert [(n.name, n.mac) for n in nics] == [
        ("enp1s0", "52:54:00:00:00:01"),
        ("enp10s0", "52:54:00:00:00:0a"),
    ]


def test_actual_nics_of_this_machine_have_devices_and_macs() -> None:
    for nic in netmap.actual_nics(Path("/sys")):
        assert os.path.exists(f"/sys/class/net/{nic.name}/device")
        assert nic.mac is None or netconf.MAC.fullmatch(nic.mac)
        assert nic.path.startswith("/sys/devices/")


# ---------------------------------------------------------------------------- all formats


def test_network_files_of_a_tree_are_found_and_rewritten_together() -> None:
    files = [
        ConfigFile("c1", "/etc/network/interfaces", INTERFACES),
        ConfigFile("c2", "/etc/NetworkManager/system-connections/w.nmconnection", NM_KEYFILE),
        ConfigFile("c3", "/etc/systemd/network/10-wired.network", NETWORK),
        ConfigFile("c4", "/etc/netplan/01-br.yaml", NETPLAN_BRIDGE),
        ConfigFile("c5", "/etc/udev/rules.d/70-persistent-net.rules", RULES),
        ConfigFile("c6", "/etc/systemd/network/README", "Name=ens3\n"),
    ]
    tree = SavedTree(files)
    found = configs.network_files(tree)
    assert [p for p, _, _ in found] == [
        "/etc/network/interfaces",
        "/etc/NetworkManager/system-connections/w.nmconnection",
        "/etc/systemd/network/10-wired.network",
        "/etc/netplan/01-br.yaml",
        "/etc/udev/rules.d/70-persistent-net.rules",
    ]
    saved = netmap.saved_nics(configs.network_refs(found))
    assert [n.label() for n in saved] == [
        "enp1s0 (52:54:00:ab:cd:ef)",
        "enp2s0",
        "ens3",
        "ens4",
        "eth1 (52:54:00:aa:bb:cc)",
    ]
    nm = NetMap({"enp1s0": "ens9"}, {OLD_MAC: NEW_MAC})
    out = dict(configs.network_rewrites(found, nm, frozenset({OLD_MAC})))
    assert "interface-name=ens9" in out[found[1][0]].text
    assert f"MACAddress={NEW_MAC}" in out[found[2][0]].text
    assert "[ens9, enp2s0]" in out[found[3][0]].text
    assert OLD_MAC not in out[found[4][0]].text


def test_a_system_booted_with_net_ifnames_0_names_the_new_nics_eth_n() -> None:
    grub = 'GRUB_CMDLINE_LINUX="net.ifnames=0 biosdevname=0"\n'
    assert netmap.ifnames_off([grub])
    assert not netmap.ifnames_off(['#GRUB_CMDLINE_LINUX="net.ifnames=0"\n', "net.ifnames=01"])
    actual = [Nic("enp1s0", NEW_MAC, "/a"), Nic("enp2s0", "52:54:00:00:00:02", "/b")]
    named = netmap.kernel_named(actual)
    assert [(n.name, n.mac) for n in named] == [("eth0", NEW_MAC), ("eth1", "52:54:00:00:00:02")]
    pairs = netmap.pair_nics([Nic("eth0", OLD_MAC)], named)
    nm = netmap.netmap(pairs)
    assert nm.names == {} and nm.macs == {OLD_MAC: NEW_MAC}
