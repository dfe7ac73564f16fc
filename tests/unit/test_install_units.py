"""install-units and the shipped systemd units (resurgo.systemd)."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from resurgo.errors import BadInput, ExitCode
from resurgo.systemd import install
from resurgo.systemd.install import (
    FAILURE,
    SERVICE,
    TIMER,
    UNITS,
    InstallOptions,
    exec_start,
    install_units,
    shipped,
)
from tests.support.cli import run


def units(root: Path) -> Path:
    return root / "etc/systemd/system"


def sections(text: str) -> dict[str, dict[str, list[str]]]:
    """A unit file's settings by section (comments and blank lines left out)."""
    out: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            current = out.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key, []).append(value)
    return out


def test_install_puts_the_units_in_place_0644_with_the_executable(tmp_path: Path) -> None:
    r = run("install-units", "--root", tmp_path)
    assert r.returncode == 0, r.stderr
    for name in UNITS:
        path = units(tmp_path) / name
        assert path.stat().st_mode & 0o777 == 0o644
        assert f"{path}: installed" in r.stdout
    service = (units(tmp_path) / SERVICE).read_text()
    argv = shlex.split(exec_start(service))
    assert argv[1:] == ["save"]  # the configuration file says the rest
    assert Path(argv[0]).is_absolute() and Path(argv[0]).name == "resurgo"
    assert argv[0] == install.resurgo_executable()
    assert not (units(tmp_path) / "timers.target.wants").exists()


def test_the_units_say_what_the_issue_asks() -> None:
    service = sections(shipped(SERVICE))
    assert service["Service"]["Type"] == ["oneshot"]
    assert service["Service"]["IOSchedulingClass"] == ["idle"]
    assert service["Service"]["CPUSchedulingPolicy"] in (["idle"], ["batch"])
    assert service["Service"]["Nice"] == ["19"]
    # Nothing that gives the save a mount namespace of its own (it would describe that).
    for key in ("ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices",
                "ProtectKernelTunables", "ProtectKernelModules", "ProtectControlGroups",
                "ReadOnlyPaths", "DeviceAllow", "ProtectClock", "ProtectProc"):
        assert key not in service["Service"], key
    assert "OnFailure=resurgo-failure@%n.service" in shipped(SERVICE)
    timer = sections(shipped(TIMER))
    assert timer["Timer"]["Persistent"] == ["true"]
    assert timer["Timer"]["RandomizedDelaySec"]
    assert timer["Timer"]["OnCalendar"]
    assert timer["Install"]["WantedBy"] == ["timers.target"]
    assert sections(shipped(FAILURE))["Service"]["ExecStart"]


def test_installing_again_changes_nothing(tmp_path: Path) -> None:
    run("install-units", "--root", tmp_path)
    before = {n: (units(tmp_path) / n).stat().st_mtime_ns for n in UNITS}
    r = run("install-units", "--root", tmp_path)
    assert r.returncode == 0
    assert r.stdout.count(": unchanged") == len(UNITS)
    assert {n: (units(tmp_path) / n).stat().st_mtime_ns for n in UNITS} == before


def test_a_unit_changed_here_is_not_overwritten_without_force(tmp_path: Path) -> None:
    run("install-units", "--root", tmp_path)
    timer = units(tmp_path) / TIMER
    changed = timer.read_text().replace("01:00:00", "03:00:00")
    timer.write_text(changed)
    r = run("install-units", "--root", tmp_path)
    assert r.returncode == ExitCode.PRECONDITION
    assert f"{timer} changed since resurgo installed it" in r.stderr
    assert "drop-in" in r.stderr
    assert timer.read_text() == changed
    r = run("install-units", "--root", tmp_path, "--force")
    assert r.returncode == 0, r.stderr
    assert f"{timer}: replaced" in r.stdout
    assert "01:00:00" in timer.read_text()


def test_an_older_units_of_resurgo_are_updated(tmp_path: Path) -> None:
    """A unit resurgo installed and nobody changed is replaced by the new one silently."""
    service = units(tmp_path) / SERVICE
    service.parent.mkdir(parents=True)
    service.write_text(install.with_header("[Service]\nExecStart=/old/resurgo save\n"))
    r = run("install-units", "--root", tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"{service}: updated" in r.stdout
    assert service.read_text() == install.with_header(
        install.body(SERVICE, install.resurgo_executable()))


def test_enable_under_a_root_links_the_timer(tmp_path: Path) -> None:
    r = run("install-units", "--root", tmp_path, "--enable")
    assert r.returncode == 0, r.stderr
    link = units(tmp_path) / "timers.target.wants" / TIMER
    assert link.is_symlink() and str(link.readlink()) == f"/etc/systemd/system/{TIMER}"
    assert run("install-units", "--root", tmp_path, "--enable").returncode == 0


def test_enable_on_this_system(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []
    monkeypatch.setattr(install, "systemd_running", lambda: False)
    said = install._enable(Path("/"), tmp_path, calls.append)
    assert "systemd is not running" in said and calls == []
    monkeypatch.setattr(install, "systemd_running", lambda: True)
    said = install._enable(Path("/"), tmp_path, calls.append)
    assert calls == [["daemon-reload"], ["enable", "--now", TIMER]]
    assert "enabled" in said


def test_an_executable_that_cannot_be_an_execstart_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="blanks"):
        install_units(InstallOptions(root=tmp_path, executable="/opt/my tools/resurgo"))
    assert not units(tmp_path).exists()


def test_systemd_analyze_verify_finds_nothing_to_say(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (package systemd)")
    assert install_units(InstallOptions(root=tmp_path)).units
    # The OnFailure= example enabled too, and an instance of the failure template.
    service = units(tmp_path) / SERVICE
    service.write_text(service.read_text().replace("#OnFailure=", "OnFailure="))
    instance = units(tmp_path) / f"resurgo-failure@{SERVICE}.service"
    shutil.copy(units(tmp_path) / FAILURE, instance)
    files = [str(units(tmp_path) / n) for n in (SERVICE, TIMER)] + [str(instance)]
    proc = subprocess.run([analyze, "verify", "--man=no", *files], capture_output=True,
                          text=True, check=False, timeout=120,
                          env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                               "SYSTEMD_LOG_LEVEL": "notice"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "", proc.stderr  # not even a warning
