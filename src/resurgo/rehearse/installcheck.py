"""The rehearsal's check installed into the recovered system by the rescue, while the
target is still mounted (rehearse.checkscript says what it checks).

Written, confined to the target (no directory on the way followed if it is a symbolic
link, and a link planted where a file goes replaced, not followed):

    /var/lib/resurgo/rehearse/check.sh      the script (0700)
    /var/lib/resurgo/rehearse/expected      the values it compares with (0600)
    /etc/systemd/system/resurgo-rehearse-check.service
    /etc/systemd/system/multi-user.target.wants/resurgo-rehearse-check.service -> the unit
    the same in emergency.target.wants (a failed boot still reports), and in the .wants
    of the system's default target when multi-user.target does not lead to it

The expected values come from the set's description (host name, machine-id, canary,
units failed at save time) and from the recovered system's network configuration as
finalize left it (the interface names it uses).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
from dataclasses import dataclass
from pathlib import Path

from resurgo.apply import confine
from resurgo.errors import OperationFailed
from resurgo.finalize import configs
from resurgo.finalize.tree import RootTree
from resurgo.model import Canary, Description
from resurgo.rehearse import checkscript
from resurgo.sortkeys import natural_key

SYSTEMD_DIR = "/etc/systemd/system"
# The kernel's interface names: up to 15 bytes, no slash, not . or .. (dev_valid_name).
_IFNAME = re.compile(r"[A-Za-z0-9_:.@-]{1,15}")
_TARGET = re.compile(r"[A-Za-z0-9_:.@-]{1,200}\.target")
_SYSTEMD = ("/lib/systemd/systemd", "/usr/lib/systemd/systemd")


@dataclass(frozen=True)
class Expected:
    """What the recovered system must show, as the check's file of KEY=VALUE lines."""

    hostname: str = ""
    machine_id: str = ""
    canary: Canary | None = None
    # None: not known which units were failed at save time.
    failed_units: tuple[str, ...] | None = None
    interfaces: tuple[str, ...] = ()

    def text(self) -> str:
        rows = [("hostname", self.hostname), ("machine_id", self.machine_id)]
        if self.canary is not None:
            rows += [("canary_path", self.canary.path), ("canary_sha256", self.canary.sha256)]
        rows.append(("failed_units", "unknown" if self.failed_units is None else "known"))
        rows += [("failed_unit", u) for u in self.failed_units or ()]
        rows += [("interface", n) for n in self.interfaces]
        # One value a line: a value that could hold a line of its own is left out (the
        # description's checks refuse control characters already).
        return "".join(f"{k}={v}\n" for k, v in rows if v.isprintable())


def interfaces(target: Path) -> tuple[str, ...]:
    """The interface names the network configuration of the system at target uses (as
    finalize reads them), in natural order; names the kernel could not have left out."""
    files = configs.network_files(RootTree(target))
    names = {r.name for r in configs.network_refs(files) if r.name}
    ok = (n for n in names if _IFNAME.fullmatch(n) and n not in (".", ".."))
    return tuple(sorted(ok, key=natural_key))


def expected(desc: Description, target: Path) -> Expected:
    rh = desc.rehearsal
    return Expected(
        hostname=desc.system.hostname,
        machine_id=desc.system.machine_id,
        canary=rh.canary if rh else None,
        failed_units=rh.failed_units if rh else None,
        interfaces=interfaces(target),
    )


def _runs_systemd(target: Path) -> bool:
    tree = RootTree(target)
    for path in _SYSTEMD:
        host = tree.host(path)
        if host is not None and host.is_file():
            return True
    return False


def _default_target(systemd_fd: int) -> str | None:
    """The default target the administrator set (default.target's link), when it is one
    multi-user.target does not lead to."""
    try:
        link = os.readlink("default.target", dir_fd=systemd_fd)
    except OSError:
        return None
    name = os.path.basename(link)
    if not _TARGET.fullmatch(name) or name in ("graphical.target", "default.target"):
        return None
    return name


def _link(dir_fd: int, name: str, to: str) -> None:
    """The symbolic link name -> to in dir_fd, replacing whatever had the name (a file or
    a link; never followed)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(name, dir_fd=dir_fd)
    os.symlink(to, name, dir_fd=dir_fd)


def install(target: Path, values: Expected) -> list[str]:
    """The check, its unit and the expected values written into the system mounted at
    target (see the module docstring); the paths written, as the system sees them.
    OperationFailed when the target does not run systemd or a write would leave it."""
    if not _runs_systemd(target):
        raise OperationFailed(f"the system at {target} does not run systemd: the "
                              "rehearsal's check is a systemd service")
    root = str(target)
    written: list[str] = []
    try:
        fd = confine.open_dirs(root, confine.under_root(root, checkscript.CHECK_DIR), 0o700)
        try:
            os.fchmod(fd, 0o700)
            confine.replace_at(fd, os.path.basename(checkscript.SCRIPT_PATH),
                               checkscript.script().encode(), 0o700)
            confine.replace_at(fd, os.path.basename(checkscript.EXPECTED_PATH),
                               values.text().encode(), 0o600)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.basename(checkscript.DONE_PATH), dir_fd=fd)
        finally:
            os.close(fd)
        written += [checkscript.SCRIPT_PATH, checkscript.EXPECTED_PATH]
        fd = confine.open_dirs(root, confine.under_root(root, SYSTEMD_DIR), 0o755)
        try:
            confine.replace_at(fd, checkscript.UNIT_NAME, checkscript.unit().encode(), 0o644)
            written.append(f"{SYSTEMD_DIR}/{checkscript.UNIT_NAME}")
            wanted_by = list(checkscript.WANTED_BY)
            other = _default_target(fd)
            if other is not None and other not in wanted_by:
                wanted_by.append(other)
        finally:
            os.close(fd)
        for name in wanted_by:
            wants = f"{SYSTEMD_DIR}/{name}.wants"
            fd = confine.open_dirs(root, confine.under_root(root, wants), 0o755)
            try:
                _link(fd, checkscript.UNIT_NAME, f"{SYSTEMD_DIR}/{checkscript.UNIT_NAME}")
            finally:
                os.close(fd)
            written.append(f"{wants}/{checkscript.UNIT_NAME}")
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise OperationFailed(f"refusing to write the rehearsal's check into {target}: "
                                  "a symbolic link stands where a file goes") from None
        raise OperationFailed(f"cannot write the rehearsal's check into {target}: "
                              f"{e.strerror}") from None
    return written


__all__ = ["Expected", "expected", "install", "interfaces"]
