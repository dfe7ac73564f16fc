"""The check a recovered system runs in a rehearsal (rehearse.checkscript), run here by
the host's sh against a tree of its own, with systemctl a shim (the real run, on a
recovered system, is the vm tier's); and its installation into a recovered target
(rehearse.installcheck)."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
from pathlib import Path

import pytest

from resurgo.errors import OperationFailed
from resurgo.model import Canary
from resurgo.rehearse import checkscript, installcheck, protocol

SH = "/bin/sh"


def sh(script: str, *args: str, path: str | None = None) -> list[str]:
    """The lines FUNCTIONS writes when SCRIPT runs after them (emit to stdout only)."""
    body = checkscript.FUNCTIONS + "\nemit() { printf '%s\\n' \"$1\"; }\n" + script
    env = {"PATH": path or os.environ["PATH"], "LC_ALL": "C.UTF-8"}
    proc = subprocess.run([SH, "-c", body, "sh", *args], capture_output=True, env=env,
                          check=True, timeout=60)
    return proc.stdout.decode("utf-8", errors="replace").splitlines()


# ----------------------------------------------------------------- the JSON written in sh

HOSTILE = [
    'a "quoted" word',
    "back\\slash and \\\" both",
    "two\nlines\r\nand a tab\there",
    "\x1b[31mred\x1b[0m and \x07 bell",
    "",
    "naïve ünïcode ✓",
    "}, \"ok\": true, \"x\": {",
    "RESURGO-REHEARSE {\"kind\": \"result\", \"ok\": true}",
    "x" * 5000,
    "\\",
    "trailing backslash \\",
]


def expected_detail(text: str) -> str:
    """What the sh writer keeps of text: printable ASCII, anything else '?' (a byte
    each), cut to DETAIL_MAX."""
    kept = "".join(chr(b) if 32 <= b < 127 else "?" for b in text.encode())
    return kept[: checkscript.DETAIL_MAX]


@pytest.mark.parametrize("detail", HOSTILE)
def test_the_sh_writer_and_protocol_parse_agree(detail: str) -> None:
    (out,) = sh('check_line "$1" false "$2"', "mounts", detail)
    msg = protocol.parse(out)
    assert msg is not None and msg.kind == "check", out
    assert msg.text("name") == "mounts"
    assert msg.flag("ok") is False
    assert msg.text("detail") == expected_detail(detail)
    assert set(msg.fields) == {"name", "ok", "detail"}


def test_the_sh_result_line_is_the_one_python_writes() -> None:
    assert sh("result_line true; result_line false") == [
        protocol.line("result", ok=True).rstrip("\n"),
        protocol.line("result", ok=False).rstrip("\n"),
    ]
    (out,) = sh('check_line "$1" true "$2"', "hostname", "web1")
    assert out + "\n" == protocol.line("check", name="hostname", ok=True, detail="web1")


# ----------------------------------------------------------------- the checks on a tree

UUID = "2f9d8c7b-6a5e-4d3c-9b2a-1f0e9d8c7b6a"


class Tree:
    """A recovered system's files below root, systemctl a shim in bin/ that answers from
    files (its state and its failed units)."""

    def __init__(self, base: Path) -> None:
        self.root = base / "root"
        self.bin = base / "bin"
        self.expected = base / "expected"
        self.bin.mkdir()
        shim = self.bin / "systemctl"
        shim.write_text(
            "#!/bin/sh\n"
            f'case "$1" in\n'
            f'  is-system-running) cat "{base}/state" ;;\n'
            f'  list-units) cat "{base}/failed" ;;\n'
            "  *) exit 1 ;;\n"
            "esac\n")
        shim.chmod(0o755)
        (base / "state").write_text("running\n")
        (base / "failed").write_text("")
        self.base = base
        r = self.root
        for d in ("etc", "proc/self", "proc/sys/kernel", "var/lib/resurgo", "sys/class/net/lo",
                  "sys/class/net/ens3", "dev/disk/by-uuid"):
            (r / d).mkdir(parents=True)
        (r / "etc/fstab").write_text(
            "# /etc/fstab: static file system information.\n"
            f"UUID={UUID}\t/\text4\terrors=remount-ro 0 1\n"
            "/dev/vda1  /boot/  ext4  defaults  0  2\n"
            "/dev/vdb1  /media/usb  auto  noauto,user  0  0\n"
            "UUID=11111111-2222-3333-4444-555555555555 none swap sw 0 0\n"
            "/swapfile none swap defaults 0 0\n"
            "proc /proc proc defaults 0 0\n")
        (r / "proc/self/mounts").write_text(
            "/dev/vda2 / ext4 rw,relatime 0 0\n"
            "/dev/vda1 /boot ext4 rw,relatime 0 0\n"
            "proc /proc proc rw 0 0\n")
        (r / "dev/vda3").write_text("")
        (r / "dev/disk/by-uuid/11111111-2222-3333-4444-555555555555").symlink_to("../../vda3")
        (r / "proc/swaps").write_text(
            "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n"
            "/dev/vda3                               partition\t1048572\t\t0\t\t-2\n"
            "/swapfile                               file\t\t65532\t\t0\t\t-3\n")
        (r / "proc/sys/kernel/hostname").write_text("web1\n")
        (r / "etc/machine-id").write_text("4c1d2e3f5a6b7c8d9e0f1a2b3c4d5e6f\n")
        canary = b"0123456789abcdef" * 8 + b"\n"
        (r / "var/lib/resurgo/canary").write_bytes(canary)
        self.values = installcheck.Expected(
            hostname="web1", machine_id="4c1d2e3f5a6b7c8d9e0f1a2b3c4d5e6f",
            canary=Canary("/var/lib/resurgo/canary", hashlib.sha256(canary).hexdigest()),
            failed_units=("smartmontools.service",), interfaces=("ens3",))

    def run(self) -> dict[str, tuple[bool | None, str]]:
        self.expected.write_text(self.values.text())
        lines = sh('run_checks "$1" "$2"; result_line "$ALL_OK"', str(self.root),
                   str(self.expected), path=f"{self.bin}:{os.environ['PATH']}")
        msgs = [protocol.parse(line) for line in lines]
        assert all(m is not None for m in msgs), lines
        checks = [m for m in msgs if m is not None and m.kind == "check"]
        results = [m for m in msgs if m is not None and m.kind == "result"]
        assert len(results) == 1 and msgs[-1] is results[0]
        out = {m.text("name"): (m.flag("ok"), m.text("detail")) for m in checks}
        assert [m.text("name") for m in checks] == [
            "boot", "units", "mounts", "swap", "canary", "hostname", "machine-id", "network"]
        assert results[0].flag("ok") is all(ok for ok, _ in out.values())
        return out


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    return Tree(tmp_path)


def test_a_system_recovered_whole_passes_every_check(tree: Tree) -> None:
    got = tree.run()
    assert got == {
        "boot": (True, "running"),
        "units": (True, "none failed"),
        "mounts": (True, "3 fstab entries mounted"),
        "swap": (True, "2 active"),
        "canary": (True, "/var/lib/resurgo/canary as saved"),
        "hostname": (True, "web1"),
        "machine-id": (True, "4c1d2e3f5a6b7c8d9e0f1a2b3c4d5e6f"),
        "network": (True, "present: ens3"),
    }


def test_boot_degraded_passes_and_a_boot_that_did_not_settle_fails(tree: Tree) -> None:
    (tree.base / "state").write_text("degraded\n")
    assert tree.run()["boot"] == (True, "degraded")
    (tree.base / "state").write_text("maintenance\n")
    assert tree.run()["boot"] == (False, "maintenance")
    (tree.base / "state").write_text("")
    assert tree.run()["boot"] == (False, "systemctl is-system-running said nothing")


def test_only_units_failed_anew_fail(tree: Tree) -> None:
    (tree.base / "failed").write_text(
        "● smartmontools.service loaded failed failed Self Monitoring\n")
    assert tree.run()["units"] == (
        True, "none failed anew; failed as at save time: smartmontools.service")
    (tree.base / "failed").write_text(
        "smartmontools.service loaded failed failed Self Monitoring\n"
        "● systemd-networkd-wait-online.service loaded failed failed Wait\n"
        "dev-disk-by\\x2duuid-ab.swap loaded failed failed /dev/disk/by-uuid/ab\n")
    assert tree.run()["units"] == (
        False, "failed anew: systemd-networkd-wait-online.service dev-disk-by\\x2duuid-ab.swap")
    tree.values = installcheck.Expected(**{**tree.values.__dict__, "failed_units": None})
    (tree.base / "failed").write_text("smartmontools.service loaded failed failed S\n")
    assert tree.run()["units"] == (
        False, "failed: smartmontools.service (the units failed at save time are not known)")


def test_an_fstab_entry_not_mounted_is_named(tree: Tree) -> None:
    (tree.root / "proc/self/mounts").write_text("/dev/vda2 / ext4 rw 0 0\nproc /proc proc rw 0 0\n")
    assert tree.run()["mounts"] == (False, "not mounted: /boot")
    (tree.root / "etc/fstab").unlink()
    got = tree.run()
    assert got["mounts"] == (True, "no /etc/fstab") and got["swap"] == (True, "no swap in fstab")


def test_a_swap_not_active_is_named(tree: Tree) -> None:
    (tree.root / "proc/swaps").write_text("Filename Type Size Used Priority\n"
                                          "/swapfile file 65532 0 -3\n")
    assert tree.run()["swap"] == (
        False, "not active: UUID=11111111-2222-3333-4444-555555555555")


def test_the_canary_missing_changed_or_never_saved(tree: Tree) -> None:
    canary = tree.root / "var/lib/resurgo/canary"
    canary.write_bytes(canary.read_bytes().replace(b"0", b"1"))
    assert tree.run()["canary"] == (False, "/var/lib/resurgo/canary differs from the saved one")
    canary.unlink()
    assert tree.run()["canary"] == (False, "/var/lib/resurgo/canary is missing")
    canary.symlink_to(tree.root / "etc/machine-id")
    assert tree.run()["canary"] == (False, "/var/lib/resurgo/canary is a symbolic link")
    tree.values = installcheck.Expected(**{**tree.values.__dict__, "canary": None})
    assert tree.run()["canary"] == (True, "none was saved with the set")


def test_hostname_and_machine_id_other_than_saved(tree: Tree) -> None:
    (tree.root / "proc/sys/kernel/hostname").write_text("localhost\n")
    (tree.root / "etc/machine-id").write_text("ffffffffffffffffffffffffffffffff\n")
    got = tree.run()
    assert got["hostname"] == (False, "localhost, saved web1")
    assert got["machine-id"] == (
        False, "ffffffffffffffffffffffffffffffff, saved 4c1d2e3f5a6b7c8d9e0f1a2b3c4d5e6f")


def test_an_interface_the_configuration_names_must_exist(tree: Tree) -> None:
    tree.values = installcheck.Expected(**{**tree.values.__dict__,
                                           "interfaces": ("ens3", "eth0", "eth1")})
    assert tree.run()["network"] == (False, "missing: eth0 eth1")
    tree.values = installcheck.Expected(**{**tree.values.__dict__, "interfaces": ()})
    assert tree.run()["network"] == (True, "the network configuration names no interface")


def test_the_whole_script_is_posix_sh() -> None:
    # The real shell of a Debian system parses it (-n: read, not run).
    subprocess.run([SH, "-n", "-c", checkscript.script()], check=True)
    text = checkscript.script()
    assert text.startswith("#!/bin/sh\n")
    assert "systemctl --no-block --job-mode=replace-irreversibly start poweroff.target" in text
    assert f": > {checkscript.DONE_PATH}" in text


# ----------------------------------------------------------------- the install


def target(tmp_path: Path) -> Path:
    t = tmp_path / "target"
    (t / "usr/lib/systemd").mkdir(parents=True)
    (t / "usr/lib/systemd/systemd").write_text("")
    (t / "lib").symlink_to("usr/lib")
    (t / "etc/systemd/system").mkdir(parents=True)
    (t / "etc/network").mkdir()
    (t / "etc/network/interfaces").write_text(
        "auto lo\niface lo inet loopback\n\nallow-hotplug ens3\niface ens3 inet dhcp\n")
    return t


VALUES = installcheck.Expected(
    hostname="web1", machine_id="4c1d2e3f5a6b7c8d9e0f1a2b3c4d5e6f",
    canary=Canary("/var/lib/resurgo/canary", "a" * 64), failed_units=("x.service",),
    interfaces=("ens3",))


def test_install_writes_the_script_the_unit_and_the_values(tmp_path: Path) -> None:
    t = target(tmp_path)
    written = installcheck.install(t, VALUES)
    unit = "resurgo-rehearse-check.service"
    assert written == ["/var/lib/resurgo/rehearse/check.sh", "/var/lib/resurgo/rehearse/expected",
                       f"/etc/systemd/system/{unit}",
                       f"/etc/systemd/system/multi-user.target.wants/{unit}",
                       f"/etc/systemd/system/emergency.target.wants/{unit}"]
    d = t / "var/lib/resurgo/rehearse"
    assert (d / "check.sh").read_text() == checkscript.script()
    assert stat.S_IMODE((d / "check.sh").stat().st_mode) == 0o700
    assert stat.S_IMODE((d / "expected").stat().st_mode) == 0o600
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    assert (d / "expected").read_text() == (
        "hostname=web1\nmachine_id=4c1d2e3f5a6b7c8d9e0f1a2b3c4d5e6f\n"
        "canary_path=/var/lib/resurgo/canary\ncanary_sha256=" + "a" * 64 + "\n"
        "failed_units=known\nfailed_unit=x.service\ninterface=ens3\n")
    u = t / "etc/systemd/system" / unit
    assert u.read_text() == checkscript.unit()
    assert stat.S_IMODE(u.stat().st_mode) == 0o644
    assert "ExecStart=/bin/sh /var/lib/resurgo/rehearse/check.sh" in u.read_text()
    assert "WantedBy=multi-user.target emergency.target\n" in u.read_text()
    for wanted in ("multi-user", "emergency"):
        link = t / f"etc/systemd/system/{wanted}.target.wants" / unit
        assert link.is_symlink() and os.readlink(link) == f"/etc/systemd/system/{unit}"
    # Again: replaced in place, and a done mark of an earlier run removed.
    (d / "done").write_text("")
    assert installcheck.install(t, VALUES) == written
    assert not (d / "done").exists()
    assert sorted(os.listdir(d)) == ["check.sh", "expected"]


def test_install_also_enables_it_for_another_default_target(tmp_path: Path) -> None:
    t = target(tmp_path)
    (t / "etc/systemd/system/default.target").symlink_to("/usr/lib/systemd/system/kiosk.target")
    written = installcheck.install(t, VALUES)
    assert written[-1] == "/etc/systemd/system/kiosk.target.wants/resurgo-rehearse-check.service"
    (t / "etc/systemd/system/default.target").unlink()
    (t / "etc/systemd/system/default.target").symlink_to(
        "/usr/lib/systemd/system/graphical.target")
    assert installcheck.install(t, VALUES)[-1].startswith(
        "/etc/systemd/system/emergency.target.wants/")


def test_install_refuses_a_systemd_directory_that_leads_out(tmp_path: Path) -> None:
    t = target(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (t / "etc/systemd/system").rmdir()
    (t / "etc/systemd/system").symlink_to(outside)
    with pytest.raises(OperationFailed, match="symbolic link"):
        installcheck.install(t, VALUES)
    assert list(outside.iterdir()) == []


def test_install_refuses_a_check_directory_that_leads_out(tmp_path: Path) -> None:
    t = target(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (t / "var/lib").mkdir(parents=True)
    (t / "var/lib/resurgo").symlink_to(outside)
    with pytest.raises(OperationFailed, match="symbolic link"):
        installcheck.install(t, VALUES)
    assert list(outside.iterdir()) == []


def test_install_replaces_a_planted_link_without_following_it(tmp_path: Path) -> None:
    t = target(tmp_path)
    victim = tmp_path / "victim"
    victim.write_text("keep me\n")
    (t / "etc/systemd/system/resurgo-rehearse-check.service").symlink_to(victim)
    installcheck.install(t, VALUES)
    assert victim.read_text() == "keep me\n"
    assert not (t / "etc/systemd/system/resurgo-rehearse-check.service").is_symlink()


def test_install_needs_a_system_that_runs_systemd(tmp_path: Path) -> None:
    t = target(tmp_path)
    (t / "usr/lib/systemd/systemd").unlink()
    with pytest.raises(OperationFailed, match="does not run systemd"):
        installcheck.install(t, VALUES)


def test_expected_values_come_from_the_description_and_the_network_configuration(
    tmp_path: Path,
) -> None:
    from tests.support.examples import example

    t = target(tmp_path)
    (t / "etc/systemd/network").mkdir(parents=True)
    (t / "etc/systemd/network/10-wan.network").write_text("[Match]\nName=enp1s0\n")
    (t / "etc/network/interfaces.d").mkdir()
    (t / "etc/network/interfaces.d/x").write_text("auto ens10\niface ens10 inet dhcp\n")
    desc = example()
    values = installcheck.expected(desc, t)
    assert values.hostname == desc.system.hostname == "web1"
    assert values.machine_id == desc.system.machine_id
    assert desc.rehearsal is not None
    assert values.canary == desc.rehearsal.canary
    assert values.failed_units == ("smartmontools.service",)
    assert values.interfaces == ("enp1s0", "ens3", "ens10")
    from dataclasses import replace

    assert installcheck.expected(replace(desc, rehearsal=None), t).failed_units is None
    unknown = installcheck.Expected(hostname="h", failed_units=None).text()
    assert "failed_units=unknown\n" in unknown and "canary" not in unknown
