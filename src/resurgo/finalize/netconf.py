"""Network configuration, mapped to the new interfaces: pure text transforms per format.

Each ``rewrite_*`` takes a file's text and a NetMap (old interface name -> new, old MAC
-> new) and changes only the places that name a physical interface: ifupdown's stanzas
and options, NetworkManager's interface-name/mac-address/parent keys, systemd-networkd's
[Match] section, netplan's keys and values (edited as text: comments and layout stay).
70-persistent-net.rules loses the rules of MACs that are gone. Each ``refs_*`` reads
which interfaces (name, MAC) a file names, so that the saved NICs are known.

Names pinned by the configuration itself (a .link file's Name=, netplan's set-name)
are not renamed: their MAC match is rewritten, and the pin then names the new NIC.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from resurgo.finalize import lines
from resurgo.finalize.model import LineChange, Rewrite

MAC = re.compile(r"(?<![0-9A-Fa-f:])(?:[0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2}(?![0-9A-Fa-f:])")
# Names the kernel and udev give physical NICs (eth0, enp0s3, ens3, eno1, enx..., wlp2s0,
# wlan0, wwan0, ib0, em1 and p1p1 of biosdevname): the ones hardware changes.
PHYSICAL = re.compile(r"(?:eth\d+|en[a-zA-Z0-9]+|wl[a-z0-9]+|ww[a-z0-9]+|ib\d+|em\d+|p\d+p\d+)")
_NAME_CHARS = "A-Za-z0-9_-"


def physical_base(token: str) -> str | None:
    """The physical interface a name refers to: eth0 of eth0, eth0.100 and eth0:1."""
    base = re.split(r"[.:]", token, maxsplit=1)[0]
    return base if PHYSICAL.fullmatch(base) else None


@dataclass(frozen=True)
class NetMap:
    """Substitutions to make: interface names and MACs (lower case), each with why."""

    names: Mapping[str, str] = field(default_factory=dict)
    macs: Mapping[str, str] = field(default_factory=dict)
    why: Mapping[str, str] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.names or self.macs)


def substitute(text: str, nm: NetMap) -> tuple[str, list[str]]:
    """Every whole-word old name and every old MAC in text replaced, in one pass (so that
    swapped names, eth0 <-> eth1, come out right); a MAC keeps its case."""
    whys: list[str] = []

    def mac(m: re.Match[str]) -> str:
        old = m.group(0)
        new = nm.macs.get(old.lower())
        if new is None:
            return old
        whys.append(nm.why.get(old.lower(), f"MAC {old.lower()} is now {new}"))
        return new.upper() if old.isupper() else new

    out = MAC.sub(mac, text) if nm.macs else text
    if nm.names:
        alternation = "|".join(re.escape(n) for n in sorted(nm.names, key=len, reverse=True))
        pattern = re.compile(rf"(?<![{_NAME_CHARS}])(?:{alternation})(?![{_NAME_CHARS}])")

        def name(m: re.Match[str]) -> str:
            old = m.group(0)
            whys.append(nm.why.get(old, f"interface {old} is now {nm.names[old]}"))
            return nm.names[old]

        out = pattern.sub(name, out)
    return out, list(dict.fromkeys(whys))


def _joined(whys: list[str]) -> str:
    return "; ".join(whys)


# ---------------------------------------------------------------------------------------
# ifupdown


def rewrite_ifupdown(text: str, nm: NetMap) -> Rewrite:
    """/etc/network/interfaces and interfaces.d/*: stanzas (auto, allow-*, iface, mapping)
    and options (bridge_ports, bond-slaves, vlan-raw-device, commands) alike."""

    def edit(_n: int, content: str) -> tuple[str | None, str, list[str]]:
        if lines.is_comment(content):
            return content, "", []
        new, whys = substitute(content, nm)
        return new, _joined(whys), []

    return lines.edit_lines(text, edit)


_STANZA_NAMES = re.compile(r"^\s*(?:auto|allow-[a-z-]+|iface|mapping|rename)\s+(.*)$")
_IFUPDOWN_PORTS = re.compile(
    r"^\s*(?:bridge[_-]ports|bond[_-]slaves|bond[_-]primary|vlan[_-]raw[_-]device|"
    r"bond-master|pre-up|up|post-up|down|pre-down|post-down)\s+(.*)$"
)


@dataclass(frozen=True)
class NicRef:
    """An interface a configuration file names: by name, MAC or both (one NIC)."""

    name: str | None
    mac: str | None
    source: str
    # The file gives this name to the NIC with this MAC (.link Name=, netplan set-name).
    pinned: bool = False


def refs_ifupdown(text: str, source: str) -> list[NicRef]:
    out: list[NicRef] = []
    for raw in text.splitlines():
        if lines.is_comment(raw):
            continue
        m = _STANZA_NAMES.match(raw) or _IFUPDOWN_PORTS.match(raw)
        if m is None:
            continue
        words = m.group(1).split()
        if raw.lstrip().startswith("iface"):
            words = words[:1]
        for word in words:
            base = physical_base(word)
            if base:
                out.append(NicRef(base, None, source))
    return out


# ---------------------------------------------------------------------------------------
# NetworkManager keyfiles

_SECTION = re.compile(r"^\s*\[([^\]]+)\]\s*$")
_KEYVALUE = re.compile(r"^(\s*)([A-Za-z0-9_.-]+)(\s*=\s*)(.*)$")
NM_KEYS = frozenset({"interface-name", "mac-address", "parent", "master", "controller"})


def rewrite_nm_keyfile(text: str, nm: NetMap) -> Rewrite:
    """A NetworkManager keyfile (system-connections/*.nmconnection): interface-name=,
    mac-address=, parent=, master= and controller= values (and [match] interface-name
    lists). cloned-mac-address is a chosen MAC, not the hardware's: left alone."""

    def edit(_n: int, content: str) -> tuple[str | None, str, list[str]]:
        if lines.is_comment(content, "#;"):
            return content, "", []
        m = _KEYVALUE.match(content)
        if m is None or m.group(2) not in NM_KEYS:
            return content, "", []
        value, whys = substitute(m.group(4), nm)
        return m.group(1) + m.group(2) + m.group(3) + value, _joined(whys), []

    return lines.edit_lines(text, edit)


def _ini_entries(text: str) -> Iterator[tuple[str, str, str]]:
    """(section, key, value) of each key=value line of an INI-style file (a keyfile, a
    .network or .link file), comments left out."""
    section = ""
    for raw in text.splitlines():
        s = _SECTION.match(raw)
        if s:
            section = s.group(1).strip()
            continue
        m = _KEYVALUE.match(raw)
        if m is None or lines.is_comment(raw, "#;"):
            continue
        yield section, m.group(2), m.group(4)


def refs_nm_keyfile(text: str, source: str) -> list[NicRef]:
    name: str | None = None
    mac: str | None = None
    for section, key, raw_value in _ini_entries(text):
        value = raw_value.strip()
        if key == "interface-name" and section in ("connection", "match"):
            name = physical_base(value.split(";")[0]) or name
        elif key == "mac-address" and MAC.fullmatch(value):
            mac = value.lower()
    if name is None and mac is None:
        return []
    return [NicRef(name, mac, source)]


# ---------------------------------------------------------------------------------------
# systemd-networkd (.network, .link)

NETWORKD_MATCH_KEYS = frozenset({"Name", "OriginalName", "MACAddress", "PermanentMACAddress"})


def rewrite_networkd(text: str, nm: NetMap) -> Rewrite:
    """A .network or .link file: the [Match] section's Name=, OriginalName=, MACAddress=
    and PermanentMACAddress= (space-separated lists; globs such as en* are left alone).
    A .link's [Link] Name= is the name it pins: kept."""
    section = ""

    def edit(_n: int, content: str) -> tuple[str | None, str, list[str]]:
        nonlocal section
        s = _SECTION.match(content)
        if s:
            section = s.group(1).strip()
            return content, "", []
        if section != "Match" or lines.is_comment(content, "#;"):
            return content, "", []
        m = _KEYVALUE.match(content)
        if m is None or m.group(2) not in NETWORKD_MATCH_KEYS:
            return content, "", []
        value, whys = substitute(m.group(4), nm)
        return m.group(1) + m.group(2) + m.group(3) + value, _joined(whys), []

    return lines.edit_lines(text, edit)


def refs_networkd(text: str, source: str) -> list[NicRef]:
    names: list[str] = []
    macs: list[str] = []
    pin: str | None = None
    for section, key, value in _ini_entries(text):
        if section == "Match" and key in ("Name", "OriginalName"):
            names += [b for w in value.split() if (b := physical_base(w)) is not None]
        elif section == "Match" and key in ("MACAddress", "PermanentMACAddress"):
            macs += [w.lower() for w in value.split() if MAC.fullmatch(w)]
        elif section == "Link" and key == "Name":
            pin = value.strip()
    if pin is not None and len(macs) == 1:
        return [NicRef(pin, macs[0], source, pinned=True)]
    if len(names) == 1 and len(macs) == 1:
        return [NicRef(names[0], macs[0], source)]
    return [NicRef(n, None, source) for n in names] + [NicRef(None, m, source) for m in macs]


# ---------------------------------------------------------------------------------------
# netplan (YAML, edited as text)


def _yaml_code(line: str) -> tuple[str, str]:
    """(code, comment) of a YAML line: a comment starts at a # after a blank, outside
    quotes."""
    quote = ""
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i], line[i:]
    return line, ""


def rewrite_netplan(text: str, nm: NetMap) -> Rewrite:
    """A netplan YAML file, as text: interface names as keys (ethernets: eth0:), in values
    (link:, interfaces: [..], match: name:) and MACs (match: macaddress:). Comments,
    quoting, indentation and flow style stay as they are."""

    def edit(_n: int, content: str) -> tuple[str | None, str, list[str]]:
        code, comment = _yaml_code(content)
        new, whys = substitute(code, nm)
        return new + comment, _joined(whys), []

    return lines.edit_lines(text, edit)


_YAML_KEY = re.compile(r"^(\s*)(?:-\s+)?([\"']?)([^\"':#\s][^\"':]*?)\2\s*:(?:\s+(.*?))?\s*$")
_FLOW_ITEM = re.compile(r"([A-Za-z-]+)\s*:\s*[\"']?([^,\"'}\s]+)")


def refs_netplan(text: str, source: str) -> list[NicRef]:
    """The physical interfaces a netplan file configures under ethernets: and wifis:
    (id, match: name/macaddress, set-name)."""
    stack: list[tuple[int, str]] = []
    found: dict[str, dict[str, str]] = {}
    for raw in text.splitlines():
        code, _ = _yaml_code(raw)
        if not code.strip():
            continue
        m = _YAML_KEY.match(code)
        if m is None:
            continue
        indent, key, value = len(m.group(1)), m.group(3).strip(), (m.group(4) or "").strip()
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = [k for _, k in stack] + [key]
        stack.append((indent, key))
        if len(path) < 3 or path[0] != "network" or path[1] not in ("ethernets", "wifis"):
            continue
        entry = found.setdefault(path[2], {})
        rest = path[3:]
        if rest[:1] == ["match"]:
            entry["matched"] = "1"
            if len(rest) == 2:
                entry[rest[1]] = value.strip("\"'")
            elif value.startswith("{"):
                entry.update(_FLOW_ITEM.findall(value))
        elif rest == ["set-name"]:
            entry["set-name"] = value.strip("\"'")
    out = []
    for ident, entry in found.items():
        mac = entry.get("macaddress", "").lower() or None
        if mac is not None and not MAC.fullmatch(mac):
            mac = None
        matched = "matched" in entry
        name = entry.get("set-name") or entry.get("name") or (None if matched else ident)
        base = physical_base(name) if name else None
        pinned = "set-name" in entry and mac is not None
        if base or mac:
            out.append(NicRef(name if pinned else base, mac, source, pinned=pinned))
    return out


# ---------------------------------------------------------------------------------------
# udev's 70-persistent-net.rules

_RULE_MAC = re.compile(r'ATTRS?\{address\}=="([^"]+)"')
_RULE_NAME = re.compile(r'NAME="([^"]+)"')
_GENERATOR_COMMENT = re.compile(r"^#.*\bdevice\b", re.IGNORECASE)


def rewrite_persistent_net_rules(text: str, gone: frozenset[str]) -> Rewrite:
    """The rules pinning names to MACs that no longer exist go, with the comment line the
    generator wrote above each; the new NICs then get their names afresh."""
    raw = lines.split_lines(text)
    drop: dict[int, str] = {}
    for i, line in enumerate(raw):
        content, _ = lines.body(line)
        if lines.is_comment(content):
            continue
        m = _RULE_MAC.search(content)
        if m is None or m.group(1).lower() not in gone:
            continue
        name = _RULE_NAME.search(content)
        why = f"MAC {m.group(1).lower()} is not on this machine" + (
            f": the rule would keep the name {name.group(1)} from the new interface" if name else ""
        )
        drop[i] = why
        if i > 0 and _GENERATOR_COMMENT.match(lines.body(raw[i - 1])[0]):
            drop[i - 1] = why
    changes = tuple(
        LineChange(i + 1, lines.body(raw[i])[0], None, why) for i, why in sorted(drop.items())
    )
    kept = "".join(line for i, line in enumerate(raw) if i not in drop)
    return Rewrite(kept, changes)


def refs_persistent_net_rules(text: str, source: str) -> list[NicRef]:
    out = []
    for raw in text.splitlines():
        if lines.is_comment(raw):
            continue
        m = _RULE_MAC.search(raw)
        if m is None:
            continue
        name = _RULE_NAME.search(raw)
        out.append(NicRef(name.group(1) if name else None, m.group(1).lower(), source))
    return out
