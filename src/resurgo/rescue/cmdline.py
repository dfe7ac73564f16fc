"""What the rescue system is asked to do, read from the kernel command line.

    resurgo.recover=off|auto|plan   off (default): a shell, nothing else; auto: find the
                                    recovery set and run `resurgo recover --yes` on it;
                                    plan: find it and show `resurgo plan` (writes nothing)
    resurgo.from=WHERE              where the set is (default: the location embedded at
                                    build time, else the disks are searched):
                                      embedded          the description inside the image
                                      /dir, sftp://..., s3://...   a medium URL
                                      DEV[:/dir]        a filesystem (/dev/sdb1, LABEL=x,
                                                        UUID=x, PARTUUID=x), searched below
                                                        /dir (default: everywhere)
    resurgo.set=SET_ID              which set to take when several are found (the id of a
                                    set, as `resurgo sets` lists it): the others are left
                                    alone, and the one named must pass the same checks
                                    (signed by a trusted key, or the image's pin)
    resurgo.keys=DEV[:/dir]         a filesystem (as in resurgo.from) holding the key
                                    files of the LUKS volumes, named by volume id,
                                    LUKS UUID or as the saved crypttab names them
                                    (see rescue.keys): mounted read-only,
                                    each becomes --key-file ID=PATH; and the network
                                    medium's credentials, s3-credentials and ssh-key
                                    (see rescue.access)
    resurgo.args="..."              more arguments for recover/plan (--target, --map ...),
                                    split like a shell would; several add up in order
    resurgo.after=shell|poweroff|reboot   what to do when the unattended run ends,
                                    success or not (default: shell)
    resurgo.wait=SECONDS            how long to wait for the disk holding the set (15)
    resurgo.rehearse=0|1            1: a rehearsal (`resurgo rehearse` boots the rescue so,
                                    with resurgo.recover=auto, which it needs): the agent
                                    writes its progress as lines of the rehearsal protocol
                                    (rehearse.protocol) on the consoles, and once the
                                    recovery succeeded installs the check that the
                                    recovered system runs at its first boot (rehearse
                                    package docstring); 0 (default): no rehearsal
    ip=...                          network (default with a network medium: DHCP on every
                                    wired interface with a link): "dhcp", IFACE:dhcp,
                                    or the kernel's static form
                                    ADDR::GATEWAY:NETMASK:HOSTNAME:IFACE:none[:DNS0[:DNS1]]
    nameserver=ADDR                 a DNS server (repeatable)

The kernel passes /proc/cmdline as the boot loader wrote it: GRUB puts double quotes
around an argument holding spaces ("resurgo.args=--map a=b"), a person typing at the boot
prompt writes resurgo.args="--map a=b". Both mean the same, as they do to the kernel.
A value that does not parse is a problem, never a guess: the unattended run then does
not start (it would erase disks).
"""

from __future__ import annotations

import ipaddress
import shlex
from dataclasses import dataclass
from enum import StrEnum

DEFAULT_WAIT = 15.0
MAX_WAIT = 3600.0


class Mode(StrEnum):
    OFF = "off"
    AUTO = "auto"
    PLAN = "plan"
    # Attended: the sets found are listed at the console, a person picks one, and recover
    # shows the plan and asks before it writes.
    ASK = "ask"


class After(StrEnum):
    SHELL = "shell"
    POWEROFF = "poweroff"
    REBOOT = "reboot"


@dataclass(frozen=True)
class Embedded:
    """resurgo.from=embedded: the description copied into the image."""


@dataclass(frozen=True)
class MediumUrl:
    """A medium URL as `resurgo.media.open_medium` takes it (a directory, sftp, s3)."""

    url: str


@dataclass(frozen=True)
class OnDevice:
    """A filesystem named like fstab does (a /dev path, LABEL=, UUID=, PARTUUID=),
    searched below ``path`` (None: everywhere)."""

    device: str
    path: str | None = None


Source = Embedded | MediumUrl | OnDevice

_DEVICE_TAGS = ("LABEL=", "UUID=", "PARTUUID=", "PARTLABEL=")


@dataclass(frozen=True)
class StaticIp:
    address: str
    prefix: int
    gateway: str | None
    interface: str | None
    hostname: str | None
    dns: tuple[str, ...] = ()


@dataclass(frozen=True)
class Dhcp:
    interface: str | None = None


Network = StaticIp | Dhcp


@dataclass(frozen=True)
class RescueArgs:
    recover: Mode = Mode.OFF
    source: Source | None = None
    args: tuple[str, ...] = ()
    keys: OnDevice | None = None
    set_id: str | None = None
    after: After = After.SHELL
    wait: float = DEFAULT_WAIT
    network: tuple[Network, ...] = ()
    nameservers: tuple[str, ...] = ()
    rehearse: bool = False
    # Values that did not parse, one message each.
    problems: tuple[str, ...] = ()


def split(cmdline: str) -> list[str]:
    """Words of a kernel command line, as the kernel splits them (lib/cmdline.c).

    Whitespace separates words except inside double quotes; the quotes themselves are
    dropped wherever they stand ("a=b c" and a="b c" are both the word a=b c).
    There is no escape character.
    """
    words: list[str] = []
    word: list[str] = []
    started = False
    quoted = False
    for ch in cmdline:
        if ch == '"':
            quoted = not quoted
            started = True
        elif ch.isspace() and not quoted:
            if started:
                words.append("".join(word))
            word, started = [], False
        else:
            word.append(ch)
            started = True
    if started:
        words.append("".join(word))
    return words


def parse_source(value: str) -> Source:
    """The value of resurgo.from= (raises ValueError when it names nothing usable)."""
    value = value.strip()
    if not value:
        raise ValueError("it is empty")
    if value == "embedded":
        return Embedded()
    if "://" in value or value.startswith("floppy:"):
        return MediumUrl(value)
    if value.startswith(_DEVICE_TAGS) or value.startswith("/dev/"):
        device, sep, path = value.partition(":")
        tag, _, name = device.partition("=")
        if device.startswith(_DEVICE_TAGS) and not name:
            raise ValueError(f"{device!r} names no {tag}")
        if sep and not path.startswith("/"):
            raise ValueError(f"the directory after {device}: must be absolute")
        return OnDevice(device, path if sep else None)
    if value.startswith("/"):
        return MediumUrl(value)
    raise ValueError(
        "expected embedded, a directory, a medium URL (sftp://, s3://) or a filesystem "
        "(/dev/..., LABEL=..., UUID=...) optionally followed by :/directory"
    )


def parse_keys(value: str) -> OnDevice:
    """The value of resurgo.keys= (raises ValueError unless it names a filesystem)."""
    source = parse_source(value)
    if not isinstance(source, OnDevice):
        raise ValueError(
            "expected a filesystem (/dev/..., LABEL=..., UUID=...) optionally followed "
            "by :/directory"
        )
    return source


def parse_ip(value: str, nameservers: list[str]) -> Network:
    """ip=dhcp, ip=IFACE:dhcp, or ip=ADDR::GW:NETMASK:HOSTNAME:IFACE:none[:DNS0[:DNS1]]."""
    if value in ("dhcp", "on", "any"):
        return Dhcp()
    fields = value.split(":")
    if len(fields) == 2 and fields[1] == "dhcp":
        return Dhcp(fields[0] or None)
    if len(fields) < 4:
        raise ValueError("expected dhcp or ADDR::GATEWAY:NETMASK:HOSTNAME:IFACE:none")
    fields += [""] * (9 - len(fields))
    address, _peer, gateway, netmask, hostname, iface, autoconf, dns0, dns1 = fields[:9]
    if autoconf not in ("", "none", "off", "static"):
        if autoconf == "dhcp":
            return Dhcp(iface or None)
        raise ValueError(f"autoconf {autoconf!r}: expected none or dhcp")
    try:
        addr = ipaddress.ip_address(address)
        if "/" in netmask or netmask.isdigit():
            prefix = int(netmask.lstrip("/"))
        elif netmask:
            prefix = ipaddress.ip_network(f"0.0.0.0/{netmask}").prefixlen
        else:
            prefix = 24 if addr.version == 4 else 64
        ipaddress.ip_network(f"{addr}/{prefix}", strict=False)
        gw = str(ipaddress.ip_address(gateway)) if gateway else None
        dns = tuple(str(ipaddress.ip_address(d)) for d in (dns0, dns1) if d)
    except ValueError as e:
        raise ValueError(str(e)) from None
    nameservers.extend(dns)
    return StaticIp(str(addr), prefix, gw, iface or None, hostname or None, dns)


def parse(cmdline: str) -> RescueArgs:
    """Everything the rescue reads from /proc/cmdline; unknown words are ignored."""
    mode = Mode.OFF
    after = After.SHELL
    source: Source | None = None
    args: list[str] = []
    keys: OnDevice | None = None
    set_id: str | None = None
    wait = DEFAULT_WAIT
    network: list[Network] = []
    nameservers: list[str] = []
    problems: list[str] = []
    rehearse = False
    for word in split(cmdline):
        key, eq, value = word.partition("=")
        if key == "resurgo.recover":
            try:
                mode = Mode(value)
            except ValueError:
                problems.append(f"resurgo.recover={value}: expected off, auto, plan or ask")
        elif key == "resurgo.after":
            try:
                after = After(value)
            except ValueError:
                problems.append(f"resurgo.after={value}: expected shell, poweroff or reboot")
        elif key == "resurgo.from":
            try:
                source = parse_source(value)
            except ValueError as e:
                problems.append(f"resurgo.from={value}: {e}")
        elif key == "resurgo.keys":
            try:
                keys = parse_keys(value)
            except ValueError as e:
                problems.append(f"resurgo.keys={value}: {e}")
        elif key == "resurgo.set":
            # Here, not at the top: resurgo.media pulls in http and ssl.
            from resurgo.media import setindex

            if setindex.is_set_id(value):
                set_id = value
            else:
                problems.append(f"resurgo.set={value}: not a set id (like 20261125T233000Z-ab12)")
        elif key == "resurgo.args":
            try:
                args += shlex.split(value)
            except ValueError as e:
                problems.append(f"resurgo.args={value}: {e}")
        elif key == "resurgo.wait":
            try:
                wait = float(value)
                if not 0 <= wait <= MAX_WAIT:
                    raise ValueError
            except ValueError:
                problems.append(f"resurgo.wait={value}: expected seconds (0 to {MAX_WAIT:.0f})")
        elif key == "resurgo.rehearse":
            if value in ("0", "1"):
                rehearse = value == "1"
            else:
                problems.append(f"resurgo.rehearse={value}: expected 0 or 1")
        elif key == "ip" and eq:
            try:
                network.append(parse_ip(value, nameservers))
            except ValueError as e:
                problems.append(f"ip={value}: {e}")
        elif key == "nameserver" and eq:
            try:
                nameservers.append(str(ipaddress.ip_address(value)))
            except ValueError:
                problems.append(f"nameserver={value}: not an IP address")
        elif key.startswith("resurgo.") and key not in KNOWN_OTHER:
            problems.append(f"{key}: unknown option (a typo?)")
    if rehearse and mode is not Mode.AUTO:
        problems.append(f"resurgo.rehearse=1 needs resurgo.recover=auto, not {mode}")
    return RescueArgs(
        recover=mode,
        source=source,
        args=tuple(args),
        keys=keys,
        set_id=set_id,
        after=after,
        wait=wait,
        network=tuple(network),
        nameservers=tuple(dict.fromkeys(nameservers)),
        rehearse=rehearse,
        problems=tuple(problems),
    )


# resurgo.* words that are not the rescue's (the vm test runner's resurgo.test=keep).
KNOWN_OTHER = frozenset({"resurgo.test", "resurgo.debug"})


def grub_quote(word: str) -> str:
    """One kernel argument as a GRUB script word: single quotes keep it one argument
    (GRUB then puts double quotes around it for the kernel when it holds spaces)."""
    if word and all(c.isalnum() or c in "._-=/:,+@%" for c in word):
        return word
    if "'" in word or '"' in word:
        raise ValueError(f"a kernel argument cannot hold quotes: {word!r}")
    return f"'{word}'"
