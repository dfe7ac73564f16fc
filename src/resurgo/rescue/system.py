"""The rescue system's own chores: drivers, filesystems to search, network, power.

These run inside the rescue (PID 1 is /init, a shell script; this is its helper).
There is no udevd there on purpose: nothing assembles, activates or mounts what is on
the disks before recovery decides to, and resurgo runs as it does on the build machine
(devtmpfs makes the device nodes). So drivers are loaded here: every device's modalias
goes to modprobe, in rounds, since a loaded controller driver brings new devices.
"""

from __future__ import annotations

import ctypes
import ipaddress
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from resurgo import run
from resurgo.errors import ResurgoError
from resurgo.rescue import dhcp
from resurgo.rescue.cmdline import Dhcp, Network, StaticIp
from resurgo.rescue.layout import HOSTNAME

log = logging.getLogger("resurgo.rescue")

SYS = Path("/sys")
RUN_DIR = Path("/run/resurgo")
MOUNTABLE = frozenset({"ext2", "ext3", "ext4", "xfs", "btrfs", "vfat", "exfat", "iso9660", "udf"})
# Kernel block devices never searched: memory, loop, mapper and md devices (a set on
# them was opened by a person, who then names it with resurgo.from=).
_NOT_SEARCHED = ("ram", "zram", "loop", "dm-", "md", "nbd", "fd")

# reboot(2) commands (linux/reboot.h)
RB_POWER_OFF = 0x4321FEDC
RB_AUTOBOOT = 0x01234567

Say = Callable[[str], None]


def uptime() -> float:
    try:
        return float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0


# -------------------------------------------------------------------------------------
# drivers


def modaliases(sys_bus: Path = SYS / "bus") -> set[str]:
    """The modalias of every device on every bus (each device is listed under its bus:
    cheaper than walking all of /sys/devices, which counts under emulation)."""
    out: set[str] = set()
    for path in sys_bus.glob("*/devices/*/modalias"):
        try:
            alias = path.read_text().strip()
        except OSError:
            continue
        if alias:
            out.add(alias)
    return out


def coldplug(seen: set[str], *, settle: float = 0.3, limit: float = 20.0) -> int:
    """Load the drivers of the devices present, until no new device shows up.

    ``seen`` carries the aliases already handled between calls. Returns how many new
    aliases were handed to modprobe.
    """
    handled = 0
    deadline = time.monotonic() + limit
    quiet_rounds = 0
    while time.monotonic() < deadline and quiet_rounds < 2:
        new = sorted(modaliases() - seen)
        if new:
            seen.update(new)
            handled += len(new)
            quiet_rounds = 0
            # -b: honour blacklists; -q: an alias with no module is no error
            run.run(["modprobe", "-a", "-b", "-q", *new], check=False)
        else:
            quiet_rounds += 1
        time.sleep(settle)
    return handled


def load_modules(names: list[str]) -> None:
    run.run(["modprobe", "-a", "-q", *names], check=False)


# -------------------------------------------------------------------------------------
# block devices and their filesystems


def block_devices(sys_block: Path = SYS / "class" / "block") -> list[str]:
    """Kernel names of the disks, partitions and optical drives to search."""
    try:
        names = sorted(os.listdir(sys_block))
    except OSError:
        return []
    return [n for n in names if not n.startswith(_NOT_SEARCHED)]


def disk_ids(device: str, sys_class: Path = SYS / "class" / "block") -> set[str]:
    """Serial and WWN of the disk holding ``device`` (a disk or a partition), as the
    probes record them (sysfs; no udev here)."""
    kname = os.path.basename(os.path.realpath(device))
    node = sys_class / kname
    if (node / "partition").exists():
        node = node.resolve().parent
    out: set[str] = set()
    for rel in ("device/serial", "serial", "wwid", "device/wwid"):
        try:
            text = (node / rel).read_text(errors="replace").strip()
        except OSError:
            continue
        if text:
            out.add(text)
            out.add(text.removeprefix("naa.").removeprefix("eui."))
    return out


def probe(device: str) -> dict[str, str]:
    """blkid's low-level probe of one device (no cache, no udev): TYPE, LABEL, UUID..."""
    res = run.run(["blkid", "-p", "-o", "export", device], check=False)
    out: dict[str, str] = {}
    for line in res.stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key] = value
    return out


def find_device(spec: str) -> str | None:
    """A /dev path for an fstab-style name (LABEL=, UUID=, PARTUUID=, PARTLABEL=, /dev/...)."""
    if spec.startswith("/dev/"):
        return spec if os.path.exists(spec) else None
    res = run.run(["blkid", "-l", "-o", "device", "-t", spec], check=False)
    dev = res.stdout.strip()
    return dev or None


def mount_ro(device: str, fstype: str, target: Path) -> bool:
    target.mkdir(parents=True, exist_ok=True)
    res = run.run(["mount", "-o", "ro", "-t", fstype, device, str(target)], check=False)
    if res.returncode != 0:
        log.info("%s: not mounted (%s)", device, res.stderr.strip())
        return False
    return True


def umount(target: Path) -> None:
    run.run(["umount", str(target)], check=False)


def mounted_devices() -> dict[str, str]:
    """Mount point -> source, from /proc/self/mounts."""
    out: dict[str, str] = {}
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        fields = line.split()
        if len(fields) >= 2:
            out[fields[1].encode().decode("unicode_escape")] = fields[0]
    return out


# -------------------------------------------------------------------------------------
# network


def interfaces(sys_net: Path = SYS / "class" / "net") -> list[str]:
    """Wired interfaces of a device (not lo, not virtual ones, not wireless), by name."""
    try:
        names = sorted(os.listdir(sys_net))
    except OSError:
        return []
    return [n for n in names if n != "lo" and (sys_net / n / "device").exists()
            and not (sys_net / n / "wireless").exists()]


def has_link(iface: str, wait: float = 5.0, sys_net: Path = SYS / "class" / "net") -> bool:
    """Whether ``iface`` (set up) has a carrier, waited for up to ``wait`` seconds (a
    link comes up a second or two after the interface)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            if (sys_net / iface / "carrier").read_text().strip() == "1":
                return True
        except OSError:
            pass  # EINVAL while the interface is down
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.25)


def lease_commands(got: dhcp.Lease, iface: str, *, route: bool) -> list[list[str]]:
    """The `ip` commands that apply a DHCP lease (pure: unit-tested); the default route
    only when ``route`` (the first interface's)."""
    cmds = [["ip", "addr", "add", f"{got.address}/{got.prefix}", "dev", iface]]
    if route and got.router:
        cmds.append(["ip", "route", "add", "default", "via", got.router, "dev", iface])
    return cmds


def static_commands(cfg: StaticIp, iface: str) -> list[list[str]]:
    """The `ip` commands that set up one static address (pure: unit-tested)."""
    cmds = [
        ["ip", "link", "set", iface, "up"],
        ["ip", "addr", "add", f"{cfg.address}/{cfg.prefix}", "dev", iface],
    ]
    if cfg.gateway:
        cmds.append(["ip", "route", "add", "default", "via", cfg.gateway, "dev", iface])
    return cmds


def dhcp_command(iface: str, which: Callable[[str], str | None] = run.which) -> list[str] | None:
    """How this image can ask for an address (the DHCP client the machine had)."""
    if which("dhclient"):
        return ["dhclient", "-1", "-4", iface]
    if which("dhcpcd"):
        return ["dhcpcd", "-1", "-4", "-w", iface]
    if which("udhcpc") and Path("/usr/share/udhcpc/default.script").exists():
        return ["udhcpc", "-n", "-q", "-i", iface]
    return None


#: How long DHCP may take on one interface: a switch port without PortFast forwards
#: about 30 s after the link comes up (spanning tree's listening and learning).
DHCP_WAIT = 35.0


def resolv_conf(nameservers: list[str] | tuple[str, ...]) -> str:
    return "".join(f"nameserver {ipaddress.ip_address(n)}\n" for n in nameservers)


def bring_up(network: tuple[Network, ...], nameservers: tuple[str, ...], say: Say) -> bool:
    """Configure the network as ip= asked; without ip=, DHCP on every wired interface
    with a link (the first lease gives the default route and the DNS servers). True when
    at least one interface got an address."""
    if run.which("ip") is None:
        say("no network: this image has no `ip` (the machine lacked iproute2)")
        return False
    ifaces = interfaces()
    if not ifaces:
        say("no network interface (no driver for the network card?)")
        return False
    configs: list[Network] = list(network) or [Dhcp()]
    dns = list(nameservers)
    ok = False
    for cfg in configs:
        if isinstance(cfg, StaticIp):
            for iface in [cfg.interface] if cfg.interface else ifaces:
                try:
                    for argv in static_commands(cfg, iface):
                        run.run(argv)
                except ResurgoError as e:
                    say(f"{iface}: {e}")
                    continue
                via = f" via {cfg.gateway}" if cfg.gateway else ""
                say(f"{iface}: {cfg.address}/{cfg.prefix}{via}")
                ok = True
                break
            continue
        for iface in [cfg.interface] if cfg.interface else ifaces:
            got = _dhcp(iface, say, route=not ok)
            if got is not None:
                ok = True
                dns += [d for d in got if d not in dns]
    if dns:
        Path("/etc/resolv.conf").write_text(resolv_conf(dns))
        say(f"DNS servers: {' '.join(dns)} (/etc/resolv.conf)")
    elif ok and not Path("/etc/resolv.conf").exists():
        say("no DNS server from DHCP or the command line: names cannot be resolved "
            "(nameserver=ADDR gives one)")
    return ok


def _dhcp(iface: str, say: Say, *, route: bool) -> list[str] | None:
    """DHCP on one interface: its DNS servers once it has an address, else None.

    resurgo's own client asks (dhcp.py): the one the vm tier proves, and it hands back
    the reply's DNS servers for /etc/resolv.conf. The build machine's client is only a
    fallback where ours cannot run on the interface (not Ethernet, port 68 taken): it
    sets the DNS servers itself if at all (dhclient's script does; dhcpcd without its
    hooks, which the image lacks, does not)."""
    run.run(["ip", "link", "set", iface, "up"], check=False)
    if not has_link(iface):
        say(f"{iface}: no link (no cable?)")
        return None
    try:
        got = dhcp.lease(iface, hostname=HOSTNAME, timeout=DHCP_WAIT)
    except (OSError, ValueError) as e:
        client = dhcp_command(iface)
        if client is None:
            say(f"{iface}: DHCP failed: {e}")
            return None
        say(f"{iface}: resurgo's DHCP client cannot run ({e}): asking with {client[0]}")
        res = run.run(client, check=False, timeout=60)
        if res.returncode != 0:
            say(f"{iface}: no DHCP answer")
            return None
        say(f"{iface}: address from DHCP ({client[0]})")
        return []
    if got is None:
        say(f"{iface}: no DHCP answer")
        return None
    try:
        for argv in lease_commands(got, iface, route=route):
            run.run(argv)
    except ResurgoError as e:
        say(f"{iface}: {e}")
        return None
    via = f" via {got.router}" if route and got.router else ""
    lease = f", lease {got.seconds} s" if got.seconds is not None else ""
    say(f"{iface}: {got.address}/{got.prefix}{via} from DHCP server {got.server}{lease}")
    return list(got.dns)


# -------------------------------------------------------------------------------------
# power


def unmount_all() -> None:
    """Unmount every block-device filesystem, deepest first (before power goes)."""
    mounts = mounted_devices()
    for target in sorted(mounts, key=len, reverse=True):
        if mounts[target].startswith("/dev/"):
            res = run.run(["umount", target], check=False)
            if res.returncode != 0:
                run.run(["umount", "-l", target], check=False)


def power(action: str) -> None:
    """Power off or reboot now (after syncing and unmounting); never returns."""
    cmd = {"poweroff": RB_POWER_OFF, "reboot": RB_AUTOBOOT}[action]
    os.sync()
    unmount_all()
    os.sync()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.reboot(cmd)
    raise OSError(ctypes.get_errno(), f"reboot(2) failed: {os.strerror(ctypes.get_errno())}")
