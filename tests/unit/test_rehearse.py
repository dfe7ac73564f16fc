"""rehearse without a real virtual machine: the disks sized, the room counted, the firmware
chosen, qemu's command line per bus and firmware, the KVM decision, the rescue's command
line, the verdict from timed console messages, and the whole command with a fake qemu
(a script on PATH) that passes, fails or hangs: its files removed, its processes gone."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from resurgo import run as runmod
from resurgo.engine import save_tree
from resurgo.errors import BadInput, PreconditionFailed
from resurgo.media import Medium, MediumOptions, SetKind, SetMeta
from resurgo.media.directory import directory_backend
from resurgo.media.share import ShareBackend, ShareOptions
from resurgo.model import Firmware
from resurgo.recovery import load, results, setfiles
from resurgo.recovery.rehearse import RehearseOptions, rehearse_sets
from resurgo.rehearse import console, images, network, protocol
from resurgo.rehearse.console import Timed, _Pump
from resurgo.rehearse.machine import (
    Accel,
    Bus,
    DirectKernel,
    DiskImage,
    Drive,
    FirmwareChoice,
    Machine,
    Ovmf,
    boot_order,
    choose_firmware,
    grown,
    plan_disks,
    qemu_argv,
)
from resurgo.rehearse.report import Rehearsal
from resurgo.rehearse.rescueboot import command_line, default_args, kvm_decision
from resurgo.rehearse.timeline import BootRun, rescue_failure, verdict
from resurgo.rescue import cpio
from resurgo.rescue.cmdline import After
from resurgo.rescue.iso import boot_entries, grub_cfg
from resurgo.restoreunits import units
from tests.support import fakesets
from tests.support.cli import Result, run
from tests.support.examples import example, example_text

GiB = 1 << 30
MiB = 1 << 20


# --- disks, room, firmware -------------------------------------------------------------


def test_the_disks_are_the_saved_ones_grown_to_whole_mib() -> None:
    desc = example()
    disks = plan_disks(desc, 0)
    assert [d.saved_id for d in disks] == [d.id for d in desc.disks]
    assert [d.size for d in disks] == [d.size for d in desc.disks]
    assert len({d.serial for d in disks}) == len(disks)
    assert not {d.serial for d in disks} & {d.serial for d in desc.disks}
    bigger = plan_disks(desc, 25)
    assert bigger[0].size == desc.disks[0].size * 5 // 4
    assert grown(1000, 10, 512) == MiB
    assert grown(10 * MiB + 1, 1, 4096) == 11 * MiB
    assert grown(10 * MiB + 1, 0, 4096) == 10 * MiB + 4096


@pytest.mark.parametrize("pct", [-1, 1001])
def test_a_grow_out_of_bounds_is_bad_input(pct: int) -> None:
    with pytest.raises(BadInput):
        plan_disks(example(), pct)


def test_the_boot_disk_comes_first() -> None:
    desc = example()
    disks = plan_disks(desc, 0)
    assert boot_order(desc, tuple(reversed(disks)))[0].saved_id == "disk.sda"


def test_the_room_counts_data_metadata_set_and_rescue(tmp_path: Path) -> None:
    disks = (DiskImage("disk.a", "disk0.img", 10 * GiB),)
    room = images.room_needed(3 * GiB, 2, disks, 1 * GiB, 100 * MiB)
    assert room.data == 3 * GiB
    assert room.metadata == 2 * images.FS_METADATA + 10 * GiB * 5 // 1000
    assert room.medium == 2 * GiB + images.MEDIUM_SLACK
    assert room.rescue == 200 * MiB
    images.check_room(tmp_path, room, free=lambda _p: room.total)
    with pytest.raises(PreconditionFailed, match="needs"):
        images.check_room(tmp_path, room, free=lambda _p: room.total - 1)


def test_the_firmware_is_the_saved_one_unless_asked() -> None:
    uefi = example()
    assert choose_firmware(FirmwareChoice.AUTO, uefi) is Firmware.UEFI
    system = replace(uefi.system, firmware=Firmware.BIOS, esp=None,
                     bootloader=replace(uefi.system.bootloader, kind="grub-pc"))
    bios = replace(uefi, system=system)
    assert choose_firmware(FirmwareChoice.AUTO, bios) is Firmware.BIOS
    assert choose_firmware(FirmwareChoice.UEFI, bios) is Firmware.UEFI
    assert choose_firmware(FirmwareChoice.BIOS, uefi) is Firmware.BIOS


# --- qemu's command line ---------------------------------------------------------------


def _machine(bus: Bus, firmware: Firmware = Firmware.BIOS, **kw: object) -> Machine:
    drives = (Drive(Path("/w/disk0.img"), "rehearse-0"),
              Drive(Path("/w/disk,1.img"), "rehearse-1", 4096),
              Drive(Path("/w/medium.img"), "rehearse-medium", read_only=True))
    return Machine(Accel.TCG, firmware, bus, 2048, 2, drives, **kw)  # type: ignore[arg-type]


def test_qemu_virtio_bios_boots_the_first_disk_without_network() -> None:
    argv = qemu_argv(_machine(Bus.VIRTIO))
    assert argv[:12] == ["qemu-system-x86_64", "-accel", "tcg", "-m", "2048", "-smp", "2",
                         "-nographic", "-no-reboot", "-nic", "none", "-global"]
    assert "-bios" not in argv and "-kernel" not in argv
    drives = [argv[i + 1] for i, a in enumerate(argv) if a == "-drive"]
    devices = [argv[i + 1] for i, a in enumerate(argv) if a == "-device"]
    assert drives == [
        "file=/w/disk0.img,format=raw,if=none,id=d0,cache=unsafe",
        "file=/w/disk,,1.img,format=raw,if=none,id=d1,cache=unsafe",
        "file=/w/medium.img,format=raw,if=none,id=d2,cache=unsafe,readonly=on",
    ]
    assert devices == [
        "virtio-blk-pci,drive=d0,serial=rehearse-0,bootindex=0",
        "virtio-blk-pci,drive=d1,serial=rehearse-1,logical_block_size=4096,"
        "physical_block_size=4096",
        "virtio-blk-pci,drive=d2,serial=rehearse-medium",
    ]


@pytest.mark.parametrize(("bus", "controller", "device"), [
    (Bus.NVME, None, "nvme,drive=d0,serial=rehearse-0"),
    (Bus.SCSI, "virtio-scsi-pci,id=scsi0", "scsi-hd,drive=d0,bus=scsi0.0,serial=rehearse-0"),
    (Bus.SATA, "ahci,id=ahci0", "ide-hd,drive=d0,bus=ahci0.0,serial=rehearse-0"),
])
def test_qemu_per_bus(bus: Bus, controller: str | None, device: str) -> None:
    kernel = DirectKernel(Path("/w/vmlinuz"), Path("/w/initrd.img"), "console=ttyS0")
    argv = qemu_argv(_machine(bus), kernel)
    devices = [argv[i + 1] for i, a in enumerate(argv) if a == "-device"]
    if controller:
        assert devices[0] == controller
        devices = devices[1:]
    # A kernel given: no disk boots (no bootindex).
    assert devices[0] == device
    assert argv[-6:] == ["-kernel", "/w/vmlinuz", "-initrd", "/w/initrd.img", "-append",
                         "console=ttyS0"]


def test_qemu_uefi_with_nvram_and_without() -> None:
    ovmf = Ovmf(Path("/o/CODE.fd"), Path("/o/VARS.fd"))
    argv = qemu_argv(_machine(Bus.VIRTIO, Firmware.UEFI, ovmf=ovmf,
                              ovmf_vars=Path("/w/VARS.fd")))
    drives = [argv[i + 1] for i, a in enumerate(argv) if a == "-drive"]
    assert drives[:2] == ["if=pflash,format=raw,unit=0,readonly=on,file=/o/CODE.fd",
                          "if=pflash,format=raw,unit=1,file=/w/VARS.fd"]
    single = qemu_argv(_machine(Bus.VIRTIO, Firmware.UEFI, ovmf=Ovmf(Path("/o/OVMF.fd"))))
    assert single[single.index("-bios") + 1] == "/o/OVMF.fd"
    with pytest.raises(BadInput):
        qemu_argv(_machine(Bus.VIRTIO, Firmware.UEFI))


# --- the rescue's command line, KVM ----------------------------------------------------


def test_the_default_entry_and_the_rehearsal_words() -> None:
    entries = boot_entries(unattended=True, after=After.REBOOT,
                           extra_args=("resurgo.args=--map disk.sda=/dev/vda", "ip=dhcp"))
    cfg = grub_cfg(entries, timeout=0, label="test")
    words = default_args(cfg)
    assert "resurgo.recover=auto" in words and "ip=dhcp" in words
    assert "resurgo.args=--map disk.sda=/dev/vda" in words
    line = command_line(words, "20261207T020000Z-ab12", accel=Accel.TCG,
                        medium_label="resurgo-rehearse")
    assert "resurgo.after=reboot" not in line and "console=tty0" not in line
    assert "ip=dhcp" not in line  # no network card in a rehearsal's rescue
    assert line.count("resurgo.recover=auto") == 1
    for word in ("console=ttyS0,115200", "resurgo.after=poweroff",
                 "resurgo.set=20261207T020000Z-ab12", "resurgo.rehearse=1",
                 "resurgo.from=LABEL=resurgo-rehearse", "mitigations=off"):
        assert word in line.split(), word
    kvm = command_line(words, "20261207T020000Z-ab12", accel=Accel.KVM, medium_label=None)
    assert "mitigations=off" not in kvm and "resurgo.from=" not in kvm
    # Not the unattended default: the image's menu says which entry is the default.
    attended = grub_cfg(boot_entries(unattended=False, after=After.POWEROFF), timeout=5,
                        label="x")
    assert "resurgo.recover=off" in default_args(attended)
    assert default_args("no menu here") == ()


def test_kvm_only_when_the_device_works_and_the_probe_started_the_kernel() -> None:
    assert kvm_decision(False, None, False).accel is Accel.TCG
    ok = kvm_decision(True, "SeaBIOS\n[    0.000000] Linux version 6.1.0-28-amd64 (x)", False)
    assert ok.accel is Accel.KVM
    hung = kvm_decision(True, "\x1bc\x1b[?7l\x1b[2JSeaBIOS (version 1.16.2)\nBooting from ROM..."
                        "\nProbing EDD (edd=off to disable)... ok\n\x1bc\x1b[?7l\x1b[2J"
                        "qemu-system-x86_64: terminating on signal 15 from pid 1", True)
    assert hung.accel is Accel.TCG
    assert hung.reason == ("software emulation (TCG): a probe boot under KVM hung before the "
                           "kernel started at 'Probing EDD (edd=off to disable)... ok'")
    ended = kvm_decision(True, "", False)
    assert ended.accel is Accel.TCG and "ended" in ended.reason


# --- the verdict -----------------------------------------------------------------------


def _timed(at: float, kind: str, **fields: str | int | bool) -> Timed:
    message = protocol.parse(protocol.line(kind, **fields))
    assert message is not None
    return Timed(at, message)


def _rescue(*, fail: str | None = None, recovered: bool = True) -> BootRun:
    lines = [_timed(20.0, "step", step="rescue", event="start"),
             _timed(21.0, "step", step="set", event="start"),
             _timed(24.5, "step", step="set", event="end", ok=True)]
    at = 25.0
    for step, seconds in (("layout", 4.0), ("restore", 60.0), ("check", 5.0),
                          ("finalize", 100.0)):
        lines.append(_timed(at, "step", step=step, event="start"))
        at += seconds
        if step == fail:
            lines.append(_timed(at, "step", step=step, event="end", ok=False,
                                detail="mkfs.ext4 failed"))
            lines.append(_timed(at + 1, "recovered", ok=False, exit=1))
            return BootRun(tuple(lines), at + 5, False, 0)
        lines.append(_timed(at, "step", step=step, event="end", ok=True))
    if recovered:
        lines.append(_timed(at + 1, "recovered", ok=True, exit=0))
    return BootRun(tuple(lines), at + 10, not recovered, 0 if recovered else None)


def _boot(*, result: bool = True, bad: str | None = None) -> BootRun:
    lines = [_timed(30.0 + n, "check", name=name, ok=name != bad,
                    detail="" if name != bad else "/srv: UUID=1234 not mounted")
             for n, name in enumerate(("boot", "units", "mounts", "canary"))]
    if result:
        lines.append(_timed(40.0, "result", ok=bad is None))
    return BootRun(tuple(lines), 45.0 if result else 600.0, not result,
                   0 if result else None)


def test_a_pass_has_every_phase_timed() -> None:
    v = verdict(_rescue(), _boot(), total=250.0)
    assert v.ok and v.failure is None and v.recovery_exit == 0
    assert v.phases == {"rescue_boot": 20.0, "set_checks": 3.5, "layout": 4.0,
                        "restore": 60.0, "finalize": 100.0, "check": 5.0,
                        "recovery": 204.0, "first_boot": 40.0, "total": 250.0}
    assert [c.name for c in v.checks] == ["boot", "units", "mounts", "canary"]


def test_a_failed_step_is_named() -> None:
    v = verdict(_rescue(fail="layout"), None)
    assert v.failure is not None and v.failure.step == "layout"
    assert "mkfs.ext4 failed" in v.failure.reason
    assert v.phases["first_boot"] is None and v.phases["restore"] is None


def test_a_rescue_that_hangs_or_says_nothing() -> None:
    hung = verdict(_rescue(recovered=False), None)
    assert hung.failure is not None and "timed out" in hung.failure.reason
    silent = verdict(BootRun((), 3.0, False, 1), None)
    assert silent.failure is not None and silent.failure.step == "rescue boot"


def test_a_first_boot_without_result_and_a_failed_check() -> None:
    none = verdict(_rescue(), _boot(result=False))
    assert none.failure is not None and none.failure.step == "first boot"
    assert none.failure.reason.startswith("first boot: no result")
    bad = verdict(_rescue(), _boot(bad="mounts"))
    assert bad.failure is not None and bad.failure.step == "check"
    assert "mounts: /srv: UUID=1234 not mounted" in bad.failure.reason


# --- the command, with a fake qemu -----------------------------------------------------

FAKE_QEMU = """#!/bin/sh
# A stand-in for qemu-system-x86_64: what it does is in $0.mode. Its arguments go to
# $0.argv (one run a line), a key disk it is given is copied to $0.keys.img.
mode=$(cat "$0.mode")
echo $$ >>"$0.pids"
printf '%s\n' "$*" >>"$0.argv"
kernel=no
for a in "$@"; do
    [ "$a" = "-kernel" ] && kernel=yes
    case "$a" in file=*/keys.img,*) f=${a#file=}; cp "${f%%,*}" "$0.keys.img" ;; esac
done
say() { printf 'RESURGO-REHEARSE %s\\n' "$1"; }
case "$mode,$kernel" in
hang,*) exec sleep 600 ;;
quit,*) echo "qemu: cannot start"; exit 1 ;;
*,yes)
    say '{"kind": "step", "step": "rescue", "event": "start"}'
    for s in set layout restore check finalize; do
        say "{\\"kind\\": \\"step\\", \\"step\\": \\"$s\\", \\"event\\": \\"start\\"}"
        say "{\\"kind\\": \\"step\\", \\"step\\": \\"$s\\", \\"event\\": \\"end\\", \\"ok\\": true}"
    done
    say '{"kind": "recovered", "ok": true, "exit": 0}'
    ;;
noresult,no) echo "Kernel panic - not syncing: VFS: Unable to mount root fs"; exit 0 ;;
panic,no) echo "Kernel panic - not syncing: Attempted to kill init!"; exec sleep 600 ;;
*,no)
    for c in boot units mounts canary; do
        say "{\\"kind\\": \\"check\\", \\"name\\": \\"$c\\", \\"ok\\": true}"
    done
    say '{"kind": "result", "ok": true}'
    ;;
esac
"""

ISO_CFG = """set timeout=0
set default=0
menuentry 'resurgo: RECOVER' --id recover {
    linux /boot/vmlinuz console=ttyS0,115200 resurgo.recover=auto resurgo.after=poweroff
    initrd /boot/initrd.img
}
"""


@pytest.fixture
def fake_qemu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    qemu = bindir / "qemu-system-x86_64"
    qemu.write_text(FAKE_QEMU)
    qemu.chmod(stat.S_IRWXU)
    monkeypatch.setattr(runmod, "PATH", f"{bindir}:{runmod.PATH}")
    # The fake sets' manifests are no manifests: read the rest as recover would.
    real = load.load_set

    def load_set(medium: Medium, set_id: str | None, **_kw: object) -> load.LoadedSet:
        return real(medium, set_id, read_manifests=False)

    monkeypatch.setattr("resurgo.recovery.rehearse.load_set", load_set)
    # The example's disks ask for about 19 GiB of room: these tests are not about the
    # room check (test_too_little_room_is_refused_before_anything_is_made is), nor about
    # this host's free space.
    monkeypatch.setattr(images, "free_bytes", lambda _directory: 1 << 50)
    return qemu


def _tiny_iso(tmp_path: Path, config: dict[str, object] | None = None) -> bytes:
    tree = tmp_path / "iso"
    (tree / "boot/grub").mkdir(parents=True)
    if config is not None:
        (tree / "resurgo").mkdir()
        (tree / "resurgo/rescue.json").write_text(json.dumps(config))
    (tree / "boot/vmlinuz").write_bytes(b"kernel")
    (tree / "boot/initrd.img").write_bytes(b"initrd")
    (tree / "boot/grub/grub.cfg").write_text(ISO_CFG)
    subprocess.run(["xorriso", "-as", "mkisofs", "-quiet", "-o", str(tmp_path / "r.iso"),
                    str(tree)], check=True, capture_output=True)
    return (tmp_path / "r.iso").read_bytes()


def _rehearse(tmp_path: Path, qemu: Path, mode: str, *more: str) -> tuple[Result, str]:
    qemu.with_name(qemu.name + ".mode").write_text(mode)
    medium = tmp_path / "medium"
    set_id = fakesets.save(medium, rescue_image=_tiny_iso(tmp_path))
    work = tmp_path / "work"
    result = run("rehearse", "--from", str(medium), "--json", "--accel", "tcg",
                 "--work-dir", str(work), "--state-dir", str(tmp_path / "state"),
                 "--report-dir", str(tmp_path / "reports"), "--rescue-timeout", "3",
                 "--boot-timeout", "3", *more, env={"RESURGO_CONFIG": ""})
    return result, set_id


def _gone(qemu: Path) -> None:
    pids = qemu.with_name(qemu.name + ".pids").read_text().split()
    assert pids
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(int(pid), 0)


def test_a_rehearsal_that_passes(tmp_path: Path, fake_qemu: Path) -> None:
    result, set_id = _rehearse(tmp_path, fake_qemu, "pass", "--report",
                               str(tmp_path / "r.json"))
    assert result.returncode == 0, result.output
    data = result.json()
    (one,) = data["rehearsals"]
    assert one["ok"] and one["set"] == set_id and one["failed_step"] is None
    assert one["machine"]["accel"] == "tcg" and one["machine"]["firmware"] == "uefi"
    assert one["machine"]["rescue"] == "set"
    assert all(one["phases"][p] is not None for p in one["phases"]), one["phases"]
    assert [c["name"] for c in one["checks"]] == ["boot", "units", "mounts", "canary"]
    assert json.loads((tmp_path / "r.json").read_text()) == data
    stored = json.loads((tmp_path / "medium" / set_id / "rehearsal.json").read_text())
    assert stored["set"] == set_id and stored["ok"]
    recorded = results.read_result(results.Verb.REHEARSE, fakesets.HOST, tmp_path / "state")
    assert recorded is not None and recorded.ok and recorded.about(set_id) is not None
    assert list((tmp_path / "work").iterdir()) == []
    _gone(fake_qemu)
    # The stored report leaves the set itself whole.
    with Medium(directory_backend(str(tmp_path / "medium"))) as medium:
        medium.open_set(set_id).check()


@pytest.mark.parametrize(("mode", "step"), [("quit", "rescue boot"), ("hang", "rescue boot"),
                                            ("noresult", "first boot")])
def test_a_failure_names_its_step_and_leaves_nothing(tmp_path: Path, fake_qemu: Path,
                                                     mode: str, step: str) -> None:
    result, _ = _rehearse(tmp_path, fake_qemu, mode)
    assert result.returncode == 1, result.output
    (one,) = result.json()["rehearsals"]
    assert not one["ok"] and one["failed_step"] == step, one
    assert one["console_tail"] or mode == "hang"
    assert list((tmp_path / "work").iterdir()) == []
    _gone(fake_qemu)
    recorded = results.read_result(results.Verb.REHEARSE, fakesets.HOST, tmp_path / "state")
    assert recorded is not None and not recorded.ok


# --- encrypted sets ---------------------------------------------------------------------

ENCRYPTED_SET = "20261207T120000Z-e2c1"
# An image whose agent takes the age identity from its key medium (rescue.json says so).
KNOWS_IDENTITY = {"format": "resurgo-rescue", "version": 1,
                  "key_medium": ["age-identity", "s3-credentials", "ssh-key"]}


def _age_key(path: Path) -> str:
    """A new age identity at ``path``; its recipient."""
    subprocess.run(["age-keygen", "-o", str(path)], check=True, capture_output=True)
    return next(line.split(":", 1)[1].strip() for line in path.read_text().splitlines()
                if line.startswith("# public key:"))


def _encrypted_set(tmp_path: Path, recipient: str, rescue_image: bytes) -> Path:
    """A directory medium holding one set encrypted to ``recipient``: the example
    description, and per tree a real archive and manifest (of a one-file tree), so that
    the set's load decrypts their heads as recover's does."""
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "hello").write_text("hello\n")
    text = example_text().encode()
    medium_dir = tmp_path / "medium"
    meta = SetMeta(SetKind.FULL, None, fakesets.HOST, setfiles.labels([recipient]))
    with Medium(directory_backend(str(medium_dir))) as medium, \
            medium.begin_set(meta, set_id=ENCRYPTED_SET) as w:
        w.write_bytes("description.toml", text)
        w.write_bytes("description.toml.sha256",
                      f"{hashlib.sha256(text).hexdigest()}  description.toml\n".encode())
        for u in units(example()):
            archive, manifest = tmp_path / "archive", tmp_path / "manifest"
            with open(archive, "wb") as a, open(manifest, "wb") as m:
                save_tree(tree, a, m, set_id=ENCRYPTED_SET, recipients=[recipient])
            w.write_bytes(u.archive_name, archive.read_bytes())
            w.write_bytes(u.manifest_name, manifest.read_bytes())
        w.write_bytes("rescue.iso", rescue_image)
        w.commit()
    return medium_dir


def _rehearse_encrypted(tmp_path: Path, qemu: Path, monkeypatch: pytest.MonkeyPatch,
                        *more: str, config: dict[str, object] | None = KNOWS_IDENTITY,
                        mode: str = "pass") -> tuple[Result, Path]:
    if shutil.which("age") is None or shutil.which("age-keygen") is None:
        pytest.skip("needs age and age-keygen")
    # This set's manifests are real: loaded as recover loads it, with the identity.
    monkeypatch.setattr("resurgo.recovery.rehearse.load_set", load.load_set)
    qemu.with_name(qemu.name + ".mode").write_text(mode)
    key = tmp_path / "age.key"
    medium = _encrypted_set(tmp_path, _age_key(key), _tiny_iso(tmp_path, config))
    result = run("rehearse", "--from", str(medium), "--json", "--accel", "tcg",
                 "--work-dir", str(tmp_path / "work"), "--state-dir", str(tmp_path / "state"),
                 "--report-dir", str(tmp_path / "reports"), "--rescue-timeout", "3",
                 "--boot-timeout", "3", *[m.replace("KEY", str(key)) for m in more],
                 env={"RESURGO_CONFIG": ""})
    return result, key


def _secret(key: Path) -> bytes:
    (line,) = [ln for ln in key.read_bytes().splitlines() if ln.startswith(b"AGE-SECRET-KEY-")]
    return line


def _nothing_booted(qemu: Path, tmp_path: Path) -> None:
    assert not qemu.with_name(qemu.name + ".pids").exists()
    assert not (tmp_path / "work").exists() or list((tmp_path / "work").iterdir()) == []


def test_an_encrypted_set_without_identity_is_refused_before_anything_is_made(
        tmp_path: Path, fake_qemu: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result, _ = _rehearse_encrypted(tmp_path, fake_qemu, monkeypatch)
    assert result.returncode == 3, result.output
    assert f"set {ENCRYPTED_SET} is encrypted (age, for age1" in result.stderr
    assert "no --identity was given" in result.stderr and "--identity FILE" in result.stderr
    _nothing_booted(fake_qemu, tmp_path)


def test_an_identity_that_does_not_open_the_set_is_refused_before_booting(
        tmp_path: Path, fake_qemu: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _age_key(tmp_path / "other.key")
    result, _ = _rehearse_encrypted(tmp_path, fake_qemu, monkeypatch,
                                    "--identity", str(tmp_path / "other.key"))
    assert result.returncode == 6, result.output
    assert "cannot decrypt" in result.stderr and "no identity matched" in result.stderr
    _nothing_booted(fake_qemu, tmp_path)


PASSPHRASE_AGE = b"age-encryption.org/v1\n-> scrypt c2FsdA 18\nAAAA\n--- AAAA\n\x00\x01"
PLUGIN = b"# a yubikey\nAGE-PLUGIN-YUBIKEY-1QQQQQQQQQQQQQQQQQQQQQQQ\n"


@pytest.mark.parametrize(("content", "said"), [
    (PASSPHRASE_AGE, "is protected by a passphrase"),
    (b"-----BEGIN AGE ENCRYPTED FILE-----\nYWdl\n-----END AGE ENCRYPTED FILE-----\n",
     "is protected by a passphrase"),
    (PLUGIN, "age plugin"),
    (None, "ssh-keygen cannot read without a passphrase"),
])
def test_an_identity_the_rescue_cannot_use_unattended_is_refused(
        tmp_path: Path, fake_qemu: Path, monkeypatch: pytest.MonkeyPatch,
        content: bytes | None, said: str) -> None:
    path = tmp_path / "identity"
    if content is None:
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "a passphrase", "-f",
                        str(path)], check=True, capture_output=True)
    else:
        path.write_bytes(content)
    result, _ = _rehearse_encrypted(tmp_path, fake_qemu, monkeypatch, "--identity", str(path))
    assert result.returncode == 3, result.output
    assert said in result.stderr and "unattended" in result.stderr
    _nothing_booted(fake_qemu, tmp_path)


@pytest.mark.parametrize("what", ["absent", "directory", "too large", "empty"])
def test_an_identity_file_that_is_not_one_is_bad_input(
        tmp_path: Path, fake_qemu: Path, monkeypatch: pytest.MonkeyPatch, what: str) -> None:
    path = tmp_path / "identity"
    if what == "directory":
        path.mkdir()
    elif what == "too large":
        path.write_bytes(b"x" * (65 << 10))
    elif what == "empty":
        path.write_bytes(b"\n")
    result, _ = _rehearse_encrypted(tmp_path, fake_qemu, monkeypatch, "--identity", str(path))
    assert result.returncode == 2, result.output
    assert f"--identity {path}" in result.stderr
    _nothing_booted(fake_qemu, tmp_path)


def _debugfs(image: Path, request: str) -> str:
    return subprocess.run(["debugfs", "-R", request, str(image)], check=True,
                          capture_output=True, text=True).stdout


def test_an_encrypted_set_rehearses_with_its_identity_on_the_key_disk_alone(
        tmp_path: Path, fake_qemu: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result, key = _rehearse_encrypted(tmp_path, fake_qemu, monkeypatch, "--identity", "KEY",
                                      "--keep")
    assert result.returncode == 0, result.output
    (one,) = result.json()["rehearsals"]
    assert one["ok"] and one["set"] == ENCRYPTED_SET
    assert one["machine"]["medium_reach"] == "a disk of its own, age-identity on a key disk"
    rescue_args, first_boot_args = fake_qemu.with_name(fake_qemu.name + ".argv") \
        .read_text().splitlines()
    # The rescue gets the medium's disk and the key disk (read-only), and is told both.
    words = rescue_args.split()
    assert f"resurgo.from=LABEL={images.MEDIUM_LABEL}" in words
    assert f"resurgo.keys=LABEL={network.KEYS_LABEL}" in words
    assert any(re.fullmatch(r"file=/\S+/keys\.img,format=raw,if=none,id=d\d+,cache=unsafe,"
                            r"readonly=on", w) for w in words), words
    assert "serial=rehearse-keys" in rescue_args and "serial=rehearse-medium" in rescue_args
    # The recovered system boots without either.
    assert "keys.img" not in first_boot_args and "medium.img" not in first_boot_args
    # The key disk: the identity file alone, 0600, the identity byte for byte.
    disk = fake_qemu.with_name(fake_qemu.name + ".keys.img")
    assert _debugfs(disk, "cat /age-identity").encode() == key.read_bytes()
    names = set(_debugfs(disk, "ls -l /").split())
    assert "age-identity" in names and not names & {"ssh-key", "s3-credentials"}
    assert re.search(r"Mode: +0600 ", _debugfs(disk, "stat /age-identity"))
    # Kept files, report, output: no key disk, and the secret nowhere.
    (kept,) = (tmp_path / "work").iterdir()
    assert not (kept / "keys.img").exists() and not (kept / "keys").exists()
    secret = _secret(key)
    for path in kept.rglob("*"):
        # The disk images are sparse and were never written (their data would be the
        # recovery's).
        if path.is_file() and path.stat().st_blocks:
            assert secret not in path.read_bytes(), path
    assert secret.decode() not in result.output and secret.decode() not in rescue_args
    for path in (tmp_path / "state").rglob("*"):
        assert secret not in path.read_bytes(), path
    stored = (tmp_path / "medium" / ENCRYPTED_SET / "rehearsal.json").read_bytes()
    assert secret not in stored


def test_the_key_disk_is_removed_when_the_rescue_fails(
        tmp_path: Path, fake_qemu: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result, _ = _rehearse_encrypted(tmp_path, fake_qemu, monkeypatch, "--identity", "KEY",
                                    "--keep", mode="quit")
    assert result.returncode == 1, result.output
    assert fake_qemu.with_name(fake_qemu.name + ".keys.img").exists()  # it was attached
    (kept,) = (tmp_path / "work").iterdir()
    assert not (kept / "keys.img").exists()


def test_an_image_that_takes_no_identity_from_its_key_medium_is_refused(
        tmp_path: Path, fake_qemu: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, config in (("none", None), ("older", {"format": "resurgo-rescue"})):
        (tmp_path / name).mkdir()
        result, _ = _rehearse_encrypted(tmp_path / name, fake_qemu, monkeypatch,
                                        "--identity", "KEY", config=config)
        assert result.returncode == 3, result.output
        assert "does not take an age identity from a key medium" in result.stderr
        _nothing_booted(fake_qemu, tmp_path / name)


def test_a_set_in_clear_needs_no_identity_and_gets_no_key_disk(
        tmp_path: Path, fake_qemu: Path) -> None:
    _age_key(tmp_path / "age.key")
    result, _ = _rehearse(tmp_path, fake_qemu, "pass", "--identity", str(tmp_path / "age.key"))
    assert result.returncode == 0, result.output
    (one,) = result.json()["rehearsals"]
    assert one["machine"]["medium_reach"] == "a disk of its own"
    assert "resurgo.keys=" not in fake_qemu.with_name(fake_qemu.name + ".argv").read_text()
    assert not fake_qemu.with_name(fake_qemu.name + ".keys.img").exists()


def test_a_first_boot_at_a_dead_end_fails_in_seconds_not_at_its_timeout(
        tmp_path: Path, fake_qemu: Path) -> None:
    started = time.monotonic()
    result, _ = _rehearse(tmp_path, fake_qemu, "panic", "--boot-timeout", "600")
    took = time.monotonic() - started
    assert result.returncode == 1, result.output
    (one,) = result.json()["rehearsals"]
    assert one["failed_step"] == "first boot", one
    assert "Kernel panic - not syncing: Attempted to kill init!" in one["reason"]
    assert any("Kernel panic" in line for line in one["console_tail"])
    assert took < console.DEAD_END_GRACE + 30, took
    _gone(fake_qemu)


def test_keep_keeps_the_images(tmp_path: Path, fake_qemu: Path) -> None:
    result, _ = _rehearse(tmp_path, fake_qemu, "quit", "--keep")
    assert result.returncode == 1
    (kept,) = (tmp_path / "work").iterdir()
    names = {p.name for p in kept.iterdir()}
    assert {"disk0.img", "medium.img", "rescue.log", "OVMF_VARS.fd"} <= names
    assert os.stat(kept / "disk0.img").st_blocks == 0  # sparse, never written
    assert stat.S_IMODE(kept.stat().st_mode) == 0o700


SHARE_CONFIG = {"build_id": "b1", "medium": {"nfs_version": "4.2", "nfs_mount_port": None}}


def _share_rehearsal(tmp_path: Path, qemu: Path, url: str,
                     share: ShareOptions) -> tuple[str, Rehearsal, list[str], Path]:
    """A rehearsal (kept) of a set on a share: the share is the set's directory below a
    ShareBackend (as a mount gives it), the medium's URL the share's. The report, the
    rescue's qemu command line and the kept run's directory."""
    qemu.with_name(qemu.name + ".mode").write_text("pass")
    medium_dir = tmp_path / "medium"
    set_id = fakesets.save(medium_dir, rescue_image=_tiny_iso(tmp_path, SHARE_CONFIG))
    root = os.open(medium_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    opts = RehearseOptions(accel=Accel.TCG, work_dir=tmp_path / "work", keep=True,
                           rescue_timeout=3, boot_timeout=3, state_dir=tmp_path / "state",
                           medium=MediumOptions(share=share, writable=True))
    said: list[str] = []
    with Medium(ShareBackend(url, root, [root])) as medium:
        report = rehearse_sets(medium, opts, said.append)
    (one,) = report.rehearsals
    lines = qemu.with_name(qemu.name + ".argv").read_text().splitlines()
    rescue = next(line for line in lines if " -kernel " in line)
    (kept,) = (tmp_path / "work").iterdir()
    return set_id, one, [rescue, *said], kept


def _overlay(kept: Path) -> dict[str, bytes]:
    """The files appended to the rescue's initramfs (after the fake image's own bytes)."""
    data = (kept / "rescue" / "initrd.img").read_bytes()
    assert data.startswith(b"initrd")
    # The overlay starts at the next multiple of 4 (newc's alignment counts from there).
    return {e.name: e.data for e in cpio.read(data[8:]) if e.data}


def test_a_set_on_nfs_is_reached_by_the_rescue_over_the_network(
        tmp_path: Path, fake_qemu: Path) -> None:
    set_id, one, (rescue, *said), kept = _share_rehearsal(
        tmp_path, fake_qemu, "nfs://127.0.0.1:2049/srv/sets",
        ShareOptions(nfs_version="3", nfs_mount_port=20048))
    assert one.verdict.ok, one
    assert one.machine.medium_reach == "nfs://10.0.2.2:2049/srv/sets over qemu's user network"
    assert f"the rescue reaches {one.machine.medium_reach}" in said
    assert "-nic user,model=virtio-net-pci" in rescue
    words = rescue.split(" -append ", 1)[1].split()
    assert "resurgo.from=nfs://10.0.2.2:2049/srv/sets" in words
    # Nothing secret to hand on: no key disk, no medium disk.
    assert not any(w.startswith("resurgo.keys=") for w in words)
    assert "serial=rehearse-medium" not in rescue and "serial=rehearse-keys" not in rescue
    assert not (kept / "medium.img").exists() and not (kept / "keys.img").exists()
    # The host's NFS version and MOUNT port, in place of the image's.
    config = json.loads(_overlay(kept)["etc/resurgo/rescue.json"])
    assert config["build_id"] == "b1"
    assert config["medium"]["nfs_version"] == "3"
    assert config["medium"]["nfs_mount_port"] == 20048
    # The report beside the set, on the share.
    stored = json.loads((tmp_path / "medium" / set_id / "rehearsal.json").read_text())
    assert stored["ok"] and stored["medium"] == "nfs://127.0.0.1:2049/srv/sets"


def test_a_set_on_cifs_is_reached_with_the_hosts_credentials_on_a_key_disk(
        tmp_path: Path, fake_qemu: Path) -> None:
    creds = tmp_path / "creds"
    creds.write_text("username=backup\npassword=p,w= x\ndomain=WORK\n")
    creds.chmod(0o600)
    _, one, (rescue, *said), kept = _share_rehearsal(
        tmp_path, fake_qemu, "cifs://backup@localhost/sets/resurgo",
        ShareOptions(cifs_credentials=creds))
    assert one.verdict.ok, one
    assert one.machine.medium_reach == ("cifs://backup@10.0.2.2/sets/resurgo over qemu's "
                                        "user network, cifs-credentials on a key disk")
    words = rescue.split(" -append ", 1)[1].split()
    assert "resurgo.from=cifs://backup@10.0.2.2/sets/resurgo" in words
    assert f"resurgo.keys=LABEL={network.KEYS_LABEL}" in words
    assert "serial=rehearse-keys" in rescue and "p,w= x" not in rescue
    # The key disk is gone once the rescue is done, --keep or not; the image's own
    # rescue.json is left as it is (nothing of the share's is in it).
    assert not (kept / "keys.img").exists()
    assert _overlay(kept) == {}
    assert not any("p,w= x" in line for line in said)


def test_a_cifs_set_without_credentials_is_a_precondition(tmp_path: Path) -> None:
    with pytest.raises(PreconditionFailed) as e:
        network.plan("cifs://10.0.0.5/sets", MediumOptions(), None, environ={},
                     home=tmp_path)
    assert "--cifs-credentials" in (e.value.hint or "")


def test_no_qemu_and_no_room_are_preconditions(
        tmp_path: Path, fake_qemu: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    r = run("rehearse", "--from", f"floppy:{tmp_path}/f.img", env={"RESURGO_CONFIG": ""})
    assert r.returncode == 2, r.output
    monkeypatch.setattr(images, "free_bytes", lambda _p: 1 << 20)
    result, _ = _rehearse(tmp_path, fake_qemu, "pass")
    assert result.returncode == 3 and "free" in result.stderr
    monkeypatch.setattr(runmod, "PATH", str(tmp_path / "nothing"))
    again = tmp_path / "again"
    again.mkdir()
    result, _ = _rehearse(again, fake_qemu, "pass")
    assert result.returncode == 3 and "qemu" in result.stderr


@pytest.mark.parametrize("args", [
    ["--grow", "-5"], ["--memory", "16"], ["--cpus", "0"], ["--disk-bus", "ide"],
    ["--set", "x", "--all-hosts"], ["--rescue-timeout", "0"],
])
def test_bad_options_are_bad_input(tmp_path: Path, args: list[str]) -> None:
    r = run("rehearse", "--from", str(tmp_path), *args, env={"RESURGO_CONFIG": ""})
    assert r.returncode == 2, r.output
    assert "Traceback" not in r.output


def test_host_and_all_hosts_choose_the_newest_of_each(tmp_path: Path) -> None:
    from resurgo.recovery.rehearse import RehearseOptions, chosen_sets

    medium_dir = tmp_path / "m"
    fakesets.save(medium_dir, host="a")
    newest_a = fakesets.save(medium_dir, host="a")
    only_b = fakesets.save(medium_dir, host="b")
    with Medium(directory_backend(str(medium_dir))) as medium:
        every = chosen_sets(medium, RehearseOptions(all_hosts=True))
        assert [s.id for s in every] == [newest_a, only_b]
        assert [s.id for s in chosen_sets(medium, RehearseOptions(host="b"))] == [only_b]
        mine = chosen_sets(medium, RehearseOptions(this_host="a"))
        assert [s.id for s in mine] == [newest_a]
        with pytest.raises(BadInput):
            chosen_sets(medium, RehearseOptions(host="c"))
        with pytest.raises(BadInput):  # two hosts, none of them this one
            chosen_sets(medium, RehearseOptions(this_host="z"))


def test_sigterm_stops_the_rehearsal_as_ctrl_c_does(tmp_path: Path, fake_qemu: Path) -> None:
    """systemctl stop: qemu stopped, the images removed, exit 130."""
    pids = fake_qemu.with_name(fake_qemu.name + ".pids")

    def stop_soon() -> None:
        deadline = time.monotonic() + 60
        while not pids.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
        if pids.exists():
            os.kill(os.getpid(), signal.SIGTERM)

    # Should the rehearsal end before the signal comes (it did once, refused for want of
    # room), the signal meets this handler instead of ending the test's process.
    stray: list[int] = []
    before = signal.signal(signal.SIGTERM, lambda signum, _frame: stray.append(signum))
    timer = threading.Thread(target=stop_soon)
    timer.start()
    try:
        result, _ = _rehearse(tmp_path, fake_qemu, "hang", "--rescue-timeout", "60")
    finally:
        timer.join()
        signal.signal(signal.SIGTERM, before)
    assert not stray, "the signal came after the rehearsal had ended"
    assert result.returncode == 130, result.output
    assert list((tmp_path / "work").iterdir()) == []
    _gone(fake_qemu)


# --- recorded consoles -----------------------------------------------------------------

RECORDED = Path(__file__).resolve().parents[1] / "data" / "rehearse"


def replay(name: str) -> BootRun:
    """A recorded console read as qemu's output is: through the pump, in pieces that cut
    lines anywhere (the times are those of this reading, not the recording's)."""
    data = (RECORDED / name).read_bytes()
    read, write = os.pipe()
    sink = io.BytesIO()
    pump = _Pump(os.fdopen(read, "rb"), sink, time.monotonic())
    pump.start()
    with os.fdopen(write, "wb") as w:
        for at in range(0, len(data), 1013):
            w.write(data[at:at + 1013])
    pump.join(timeout=10)
    assert sink.getvalue() == data  # the log keeps the console whole
    return BootRun(tuple(pump.messages), 100.0, False, 0)


def test_a_recorded_rehearsal_that_passes() -> None:
    rescue = replay("pass-rescue.log")
    steps = [t.message.text("step") for t in rescue.messages if t.message.kind == "step"]
    assert steps[0] == "rescue"
    assert {"set", "layout", "restore", "check", "finalize", "install-check"} <= set(steps)
    v = verdict(rescue, replay("pass-first-boot.log"), total=200.0)
    assert v.ok, v.failure
    assert v.recovery_exit == 0
    assert all(v.phases[p] is not None for p in v.phases), v.phases
    assert [c.name for c in v.checks] == ["boot", "units", "mounts", "swap", "canary",
                                          "hostname", "machine-id", "network"]
    assert all(c.ok for c in v.checks)


def test_a_recorded_first_boot_that_powers_off_before_its_check() -> None:
    rescue = replay("early-poweroff-rescue.log")
    assert rescue_failure(rescue) is None
    # The test image's own runner powered that first boot off before the check spoke.
    v = verdict(rescue, replay("first-boot-powered-off-early.log"))
    assert v.failure is not None and v.failure.step == "first boot"
    assert v.failure.reason.startswith("first boot: no result")
    assert v.phases["first_boot"] is None and v.phases["finalize"] is not None


def test_a_recorded_recovery_whose_command_fails() -> None:
    v = verdict(replay("command-fails-rescue.log"), None)
    assert v.failure is not None and v.failure.step == "restore", v.failure
    assert v.recovery_exit == 1
    assert v.phases["finalize"] is None and v.phases["first_boot"] is None


# ----------------------------------------------------------------- the work directory


def test_the_work_directory_is_made_only_in_a_directory_of_this_users_alone(
    tmp_path: Path,
) -> None:
    """The default parent is in /var/tmp, where anyone can make it first or plant a link
    by its name: root then writes disk images into a directory its owner can swap."""
    good = tmp_path / "good"
    made = images.make_work_dir(good, "S1")
    assert made.parent == good and stat.S_IMODE(made.stat().st_mode) == 0o700
    assert stat.S_IMODE(good.stat().st_mode) == 0o700

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(elsewhere)
    open_to_all = tmp_path / "open"
    open_to_all.mkdir()
    open_to_all.chmod(0o1777)
    someone_elses = tmp_path / "theirs"
    someone_elses.mkdir(mode=0o700)
    os.chown(someone_elses, os.geteuid() + 1, -1)
    for parent, why in ((link, "symbolic link"), (open_to_all, "written by others"),
                        (someone_elses, f"belongs to user {os.geteuid() + 1}")):
        with pytest.raises(PreconditionFailed, match=why) as e:
            images.make_work_dir(parent, "S1")
        assert e.value.hint is not None and "--work-dir" in e.value.hint
    assert list(elsewhere.iterdir()) == [] and list(open_to_all.iterdir()) == []
    assert list(someone_elses.iterdir()) == []


def test_too_little_room_is_refused_before_anything_is_made(
    tmp_path: Path, fake_qemu: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(images, "free_bytes", lambda _directory: 1 << 30)
    result, _ = _rehearse(tmp_path, fake_qemu, "pass")
    assert result.returncode == 3, result.output
    assert "has 1.0 GiB free; the rehearsal needs" in result.stderr
    assert list((tmp_path / "work").iterdir()) == []
    assert not fake_qemu.with_name(fake_qemu.name + ".pids").exists()


# --- a console is hostile ----------------------------------------------------------------


def test_a_console_line_holds_a_message_only_when_it_is_one() -> None:
    """The console is written by the system being tested and by its kernel: anything that
    is not the marker and one JSON object of a known kind is no message, and what a
    message holds is bounded and printable."""
    mark = protocol.MARK
    for garbage in ("", "plain kernel output", mark, f"{mark} ", f"{mark} {{",
                    f"{mark} []", f'{mark} {{"kind": "reboot"}}', f'{mark} {{"no": "kind"}}',
                    f'{mark} {{"kind": "result", "ok": true}}' + " " * protocol.MAX_LINE,
                    f'{mark} {{"kind": 7}}', f"{mark} \u0000"):
        assert protocol.parse(garbage) is None, garbage
    # The kernel printed into the line's start; the message is read from its marker on.
    m = protocol.parse("[   12.3] ok\x1b[0m"
                       + f'{mark} {{"kind": "check", "name": "a\\u001b[2Jb", '
                       f'"ok": true, "detail": "{"x" * 2000}", "n": 123456789012, '
                       f'"nested": {{"a": 1}}, "list": [1], "f": 1.5}}')
    assert m is not None and m.kind == "check"
    assert m.text("name") == "a?[2Jb" and m.flag("ok") is True
    assert len(m.text("detail")) == protocol.MAX_FIELD
    assert set(m.fields) == {"name", "ok", "detail"}  # the rest is no field of a message
    assert m.flag("name") is None and m.text("ok") == ""


def test_a_console_that_repeats_a_marker_without_end_is_not_kept_whole() -> None:
    read, write = os.pipe()
    pump = _Pump(os.fdopen(read, "rb"), io.BytesIO(), time.monotonic())
    pump.start()
    line = protocol.line("check", name="loop", ok=False).encode()
    with os.fdopen(write, "wb") as w:
        w.write(line * (console.MAX_MESSAGES + 500))
    pump.join(timeout=30)
    assert not pump.is_alive()
    assert len(pump.messages) == console.MAX_MESSAGES
