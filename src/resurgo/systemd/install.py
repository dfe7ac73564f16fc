"""resurgo install-units: put the shipped systemd units in place.

The units (package data beside this module) are written to DIR/etc/systemd/system, 0644,
each with a first line recording the digest of what follows it: a file whose body still
has its recorded digest is resurgo's own and is replaced by a newer one silently, a file
changed since (by hand) is refused without ``force`` (the place for local changes is a
drop-in, which survives upgrades). Installing again changes nothing.

The service's ExecStart names the resurgo this is (the one next to this interpreter, else
the first on PATH), so that the timer runs the installed program whatever systemd's PATH.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from resurgo import __version__, run
from resurgo.errors import BadInput, OperationFailed, PreconditionFailed

SERVICE = "resurgo-save.service"
TIMER = "resurgo-save.timer"
FAILURE = "resurgo-failure@.service"
REHEARSE_SERVICE = "resurgo-rehearse.service"
REHEARSE_TIMER = "resurgo-rehearse.timer"
UNITS = (SERVICE, TIMER, FAILURE, REHEARSE_SERVICE, REHEARSE_TIMER)
# The services whose ExecStart names this installation's resurgo.
EXEC_UNITS = (SERVICE, REHEARSE_SERVICE)
UNIT_DIR = Path("etc/systemd/system")
SHIPPED_EXEC = "ExecStart=/usr/local/bin/resurgo "
_HEADER = "# installed by resurgo install-units {version}; sha256 of the lines below: {digest}\n"
_HEADER_START = "# installed by resurgo install-units "


def shipped(name: str) -> str:
    return resources.files("resurgo.systemd").joinpath(name).read_text(encoding="utf-8")


def resurgo_executable() -> str:
    """The resurgo program of this installation (a venv's, pipx's, pip's)."""
    beside = Path(sys.executable).parent / "resurgo"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("resurgo")
    return os.path.abspath(found) if found else "/usr/local/bin/resurgo"


def body(name: str, executable: str) -> str:
    text = shipped(name)
    if name in EXEC_UNITS:
        if any(c.isspace() for c in executable) or "%" in executable:
            raise BadInput(f"resurgo is installed at {executable!r}: a path with blanks or % "
                           "cannot be a unit's ExecStart", "install resurgo elsewhere")
        text = text.replace(SHIPPED_EXEC, f"ExecStart={executable} ")
    return text


def with_header(text: str) -> str:
    digest = hashlib.sha256(text.encode()).hexdigest()
    return _HEADER.format(version=__version__, digest=digest) + text


def ours_unchanged(content: str) -> bool:
    """A file install-units wrote and nobody changed since."""
    first, _, rest = content.partition("\n")
    if not first.startswith(_HEADER_START):
        return False
    return first.rsplit(" ", 1)[-1] == hashlib.sha256(rest.encode()).hexdigest()


def exec_start(content: str) -> str:
    """The command line of a unit's ExecStart= (the last one, as systemd takes it)."""
    lines = [ln.split("=", 1)[1].strip() for ln in content.splitlines()
             if ln.startswith("ExecStart=")]
    if not lines or not lines[-1]:
        raise BadInput("the unit has no ExecStart=")
    return lines[-1]


@dataclass(frozen=True)
class InstallOptions:
    root: Path = Path("/")
    enable: bool = False
    force: bool = False
    executable: str | None = None


@dataclass(frozen=True)
class Installed:
    path: str
    state: str  # installed, updated, unchanged, replaced


@dataclass(frozen=True)
class InstallReport:
    units: tuple[Installed, ...]
    executable: str
    enabled: str  # what became of --enable

    def text(self) -> str:
        lines = [f"{u.path}: {u.state}" for u in self.units]
        lines.append(f"ExecStart runs {self.executable}")
        if self.enabled:
            lines.append(self.enabled)
        return "\n".join(lines) + "\n"

    def data(self) -> dict[str, Any]:
        return {"units": [{"path": u.path, "state": u.state} for u in self.units],
                "executable": self.executable, "enabled": self.enabled}


def systemd_running() -> bool:
    """As sd_booted(3): systemd is this machine's init."""
    return Path("/run/systemd/system").is_dir()


def install_units(opts: InstallOptions,
                  systemctl: Callable[[list[str]], None] | None = None) -> InstallReport:
    executable = opts.executable or resurgo_executable()
    dest = opts.root / UNIT_DIR
    planned: list[tuple[Path, str, str]] = []
    changed: list[str] = []
    for name in UNITS:
        path = dest / name
        content = with_header(body(name, executable))
        exists = path.is_symlink() or path.exists()
        current = None
        if exists and not path.is_symlink():  # a link put there is a local change
            try:
                current = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                current = None
        if not exists:
            planned.append((path, content, "installed"))
        elif current == content:
            planned.append((path, content, "unchanged"))
        elif current is not None and ours_unchanged(current):
            planned.append((path, content, "updated"))
        elif opts.force:
            planned.append((path, content, "replaced (it was changed here)"))
        else:
            changed.append(str(path))
    if changed:
        raise PreconditionFailed(
            f"{', '.join(changed)} changed since resurgo installed it: not overwritten",
            "put local changes in a drop-in (systemctl edit UNIT), then run install-units "
            "--force to install resurgo's own again",
        )
    try:
        dest.mkdir(parents=True, exist_ok=True)
        for path, content, state in planned:
            if state != "unchanged":
                _write(path, content)
    except OSError as e:
        raise OperationFailed(f"cannot install the units in {dest}: {e.strerror}",
                              "run as root, or give --root DIR") from None
    done = tuple(Installed(str(p), s) for p, _, s in planned)
    enabled = ""
    if opts.enable:
        enabled = _enable(opts.root, dest, systemctl or _systemctl)
    elif opts.root == Path("/") and systemd_running() and any(
            s != "unchanged" for _, _, s in planned):
        (systemctl or _systemctl)(["daemon-reload"])
    return InstallReport(done, executable, enabled)


def _write(path: Path, content: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(content)
            f.flush()
            os.fchmod(f.fileno(), 0o644)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _enable(root: Path, dest: Path, systemctl: Callable[[list[str]], None]) -> str:
    if root != Path("/"):
        # As `systemctl --root` would: the [Install] section's link, no running systemd.
        wants = dest / "timers.target.wants"
        wants.mkdir(exist_ok=True)
        link = wants / TIMER
        target = f"/{UNIT_DIR}/{TIMER}"
        if not (link.is_symlink() and os.readlink(link) == target):
            link.unlink(missing_ok=True)
            link.symlink_to(target)
        return f"{TIMER} enabled under {root} (it starts at that system's next boot)"
    if not systemd_running():
        return (f"systemd is not running here: {TIMER} not enabled (once it runs: "
                f"systemctl enable --now {TIMER})")
    systemctl(["daemon-reload"])
    systemctl(["enable", "--now", TIMER])
    return f"{TIMER} enabled and started"


def _systemctl(args: list[str]) -> None:
    run.run(["systemctl", *args])
