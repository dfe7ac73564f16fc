"""Which actual network interface each saved one's configuration now belongs to.

Saved NICs are what the restored configuration names (interface names, MACs, the
pairs of both some files give) — the description records network controllers by bus
address and driver, not by MAC or name. Actual NICs are this machine's (the rescue runs
on the target hardware): /sys/class/net/*/address of the interfaces with a device, in
the order of their bus paths (PCI order). Pairing: --net-map first; then the same MAC
(the NIC is still there, perhaps under another name); then a saved NIC without MAC
whose name exists is taken as present; the rest pair in order, saved (by name) with
actual (PCI order).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from resurgo.errors import BadInput
from resurgo.finalize.model import NicPair
from resurgo.finalize.netconf import MAC, NetMap, NicRef
from resurgo.probe.sysfs import attribute, entries
from resurgo.sortkeys import natural_key


@dataclass(frozen=True)
class Nic:
    name: str | None
    mac: str | None
    # Sort key: the bus path of the device (actual NICs).
    path: str = ""
    pinned: bool = False

    def label(self) -> str:
        if self.name and self.mac:
            return f"{self.name} ({self.mac})"
        return self.name or self.mac or "?"


def actual_nics(sysfs: Path = Path("/sys")) -> list[Nic]:
    """This machine's physical NICs (those with a device behind them), in bus order."""
    base = sysfs / "class" / "net"
    out = []
    for name in sorted(entries(base)):
        dev = base / name / "device"
        if not os.path.exists(dev):
            continue  # lo, bridges, bonds, tunnels
        mac = (attribute(base / name / "address") or "").lower()
        real = os.path.realpath(dev)
        out.append(Nic(name, mac if MAC.fullmatch(mac) else None, real))
    # PCI addresses are fixed-width hex: plain string order is bus order.
    return sorted(out, key=lambda n: n.path)


def saved_nics(refs: Iterable[NicRef]) -> list[Nic]:
    """One Nic per interface the configuration names, merging the references that share a
    MAC or a name; in natural order of their names (eth0, eth1, ens3, ens4, ...)."""
    groups: list[dict[str, object]] = []
    for ref in refs:
        hit = None
        for g in groups:
            if (ref.mac and ref.mac == g["mac"]) or (ref.name and ref.name == g["name"]):
                hit = g
                break
        if hit is None:
            groups.append({"name": ref.name, "mac": ref.mac, "pinned": ref.pinned})
            continue
        if hit["name"] is None and ref.name:
            hit["name"] = ref.name
        if hit["mac"] is None and ref.mac:
            hit["mac"] = ref.mac
        hit["pinned"] = bool(hit["pinned"]) or ref.pinned
    nics = [
        Nic(
            name=g["name"] if isinstance(g["name"], str) else None,
            mac=g["mac"] if isinstance(g["mac"], str) else None,
            pinned=bool(g["pinned"]),
        )
        for g in groups
    ]
    return sorted(nics, key=lambda n: (n.name is None, natural_key(n.name or n.mac or "")))


def _find(nics: Sequence[Nic], key: str) -> Nic | None:
    low = key.lower()
    return next((n for n in nics if n.name == key or (n.mac is not None and n.mac == low)), None)


def pair_nics(
    saved: Sequence[Nic],
    actual: Sequence[Nic],
    user_map: Sequence[tuple[str, str]] = (),
    warnings: list[str] | None = None,
) -> list[tuple[Nic, Nic, str]]:
    """(saved, actual, how) for every saved NIC that has an actual one.

    Raises BadInput when a --net-map names an interface the saved configuration does not
    name, or this machine does not have, or one that another --net-map already maps.
    """
    pairs: list[tuple[Nic, Nic, str]] = []
    left = list(saved)
    free = list(actual)
    # Which --net-map took each NIC: a NIC named twice (by name and by MAC too) is a typo.
    taken: dict[tuple[str, Nic], str] = {}
    for old, new in user_map:
        arg = f"--net-map {old}={new}"
        target = _find(actual, new)
        if target is None:
            have = ", ".join(n.label() for n in actual) or "none"
            raise BadInput(
                f"{arg}: this machine has no network interface {new}",
                f"its interfaces: {have}",
            )
        source = _find(saved, old)
        if source is None:
            named = ", ".join(n.label() for n in saved) or "none"
            raise BadInput(
                f"{arg}: the saved network configuration names no interface {old}",
                f"it names: {named}",
            )
        for nic, side in ((source, "saved"), (target, "actual")):
            if (side, nic) in taken:
                raise BadInput(
                    f"{arg}: the {side} interface {nic.label()} is already mapped by "
                    f"{taken[side, nic]}",
                    "map each interface once",
                )
        taken["saved", source] = taken["actual", target] = arg
        left.remove(source)
        free.remove(target)
        pairs.append((source, target, "map"))
    for nic in list(left):
        same = next((a for a in free if nic.mac and a.mac == nic.mac), None)
        if same is None and nic.mac is None and nic.name:
            same = next((a for a in free if a.name == nic.name), None)
        if same is not None:
            left.remove(nic)
            free.remove(same)
            pairs.append((nic, same, "mac" if nic.mac else "name"))
    for nic, target in zip(left, free, strict=False):
        pairs.append((nic, target, "order"))
    if len(left) > len(free) and warnings is not None:
        for nic in left[len(free) :]:
            warnings.append(
                f"no interface left on this machine for {nic.label()}: its configuration "
                "is kept as it is (map one with --net-map OLD=NEW)"
            )
    return pairs


def netmap(pairs: Iterable[tuple[Nic, Nic, str]]) -> NetMap:
    """The substitutions the pairs call for.

    A NIC that is still there (same MAC) keeps the name the restored system gives it,
    whatever this rescue system calls it (its naming policy may differ). A name the
    configuration pins to a MAC keeps its name: the MAC match moves to the new NIC.
    """
    names: dict[str, str] = {}
    macs: dict[str, str] = {}
    why: dict[str, str] = {}
    for old, new, how in pairs:
        by = {"map": "by --net-map", "order": "by PCI order", "mac": "same MAC", "name": ""}[how]
        if old.mac and new.mac and old.mac != new.mac:
            macs[old.mac] = new.mac
            why[old.mac] = f"MAC {old.mac} is now {new.mac} ({new.name}, {by})"
        if how in ("mac", "name"):
            continue
        if old.name and new.name and old.name != new.name and not old.pinned:
            names[old.name] = new.name
            why[old.name] = f"interface {old.name} is now {new.name} ({by})"
    return NetMap(names, macs, why)


def kernel_named(actual: Sequence[Nic]) -> list[Nic]:
    """The NICs as a system booted with net.ifnames=0 names them: eth0, eth1, ... in the
    order the kernel finds them (bus order)."""
    return [replace(n, name=f"eth{i}") for i, n in enumerate(actual)]


_IFNAMES_OFF = re.compile(r"(?<![\w.=-])net\.ifnames=0(?![\w.])")


def ifnames_off(texts: Iterable[str]) -> bool:
    """Whether a kernel command line (in /etc/default/grub, /etc/kernel/cmdline, ...) turns
    predictable interface names off."""
    for text in texts:
        for line in text.splitlines():
            if not line.lstrip().startswith("#") and _IFNAMES_OFF.search(line):
                return True
    return False


def report_pairs(pairs: Iterable[tuple[Nic, Nic, str]]) -> list[NicPair]:
    return [NicPair(o.name, o.mac, n.name, n.mac, how) for o, n, how in pairs]


def gone_macs(saved: Iterable[Nic], actual: Iterable[Nic]) -> frozenset[str]:
    here = {n.mac for n in actual if n.mac}
    return frozenset(n.mac for n in saved if n.mac and n.mac not in here)


def parse_net_map(values: Iterable[str]) -> tuple[tuple[str, str], ...]:
    """--net-map OLD=NEW values (interface names or MACs) -> pairs; BadInput otherwise."""
    out = []
    for value in values:
        old, eq, new = value.partition("=")
        if not eq or not old.strip() or not new.strip():
            raise BadInput(
                f"--net-map {value!r}: expected OLD=NEW",
                "OLD and NEW are interface names or MACs, e.g. --net-map eth0=enp3s0",
            )
        out.append((old.strip(), new.strip()))
    return tuple(out)
