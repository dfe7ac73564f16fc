"""The rescue image, built from the cached Debian tree and booted under qemu (vm tier).

The image is the run's shared ``rescue`` (conftest.py, tests/vm/rescue_images.py): kernel,
modules, programs and Python all from the tree, a small description embedded, the
unattended entry the default:

    disk.vda (GPT, 256 MiB)  p1 200 MiB ── ext4 "rescued" /

and `resurgo.args=--layout-only --root /mnt/rescued` on its kernel command line (the
archives are another test's business: here the set holds the description alone).
Each boot gives it a blank target disk and a disk holding the recovery set (ext4,
resurgo/rescued/<set id>/), and checks on the serial console that it booted, found the
set, checked its description, ran `resurgo recover`, and powered off;
then that the target disk holds the saved partition table and filesystem identities.

    BIOS, the image as a CD (-cdrom), and a second disk with planted sets: a newer one
        (dated 2099) unsigned, one signed by a key the image does not trust: ignored
    UEFI (OVMF), the image as a disk (a USB stick written with dd)
    BIOS, the image as a disk, no set disk: the embedded description alone
    BIOS, the set changed after it was signed (one byte of its description's command, its
        index updated to match), beside the planted sets: refused, the target untouched
        (the image's kernel and initramfs booted with its recover entry's command line:
        what is checked is the agent, not the boot loader)

The image trusts one signing key (RescueOptions.trusted_signers), and the sets are signed
with it (save --sign-key does the same).
    its kernel and initramfs, booted to the rescue shell, which is typed a Python line:
        blake3 (an extension module and its libraries) imports and hashes in there

and the image with this host's programs and the tree's kernel (--kernel-root, the one
the whole-cycle tests boot), booted with a network card when RESURGO_VM_FULL=1 (one boot
more for the tier).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import blake3
import pytest

from resurgo import signing
from resurgo.media import SetKind, SetMeta, open_medium
from resurgo.rescue import RescueReport, cpio
from tests.vm import guest
from tests.vm.rescue_images import (
    DISK_GUID,
    FS_UUID,
    HOST,
    KERNEL_ARGS,
    PART_UUID,
    TARGET_SIZE,
    Keys,
    agent_started_at,
    direct_boot,
    rescue_lines,
)

pytestmark = pytest.mark.vm

MiB = 1 << 20
MAX_SIZE = 80 * MiB
BOOT_TIMEOUT = 480.0
#: The rescue shell's prompt (PS1 resurgo-rescue:\w# ); the agent's lines have a space.
PROMPT = re.compile(rb"resurgo-rescue:[^\s\[]*# ")
BLAKE3_SO = "blake3.cpython-311-x86_64-linux-gnu.so"
ZSTANDARD_SO = "backend_c.cpython-311-x86_64-linux-gnu.so"
PLAINFILES_SO = "_plainfiles.cpython-311-x86_64-linux-gnu.so"
#: The image's default entry (its grub.cfg, checked above), booted without GRUB.
RECOVER_ENTRY = ("resurgo.recover=auto", "resurgo.after=poweroff")
BLAKE3_ABC = "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"


def make_set_disk(path: Path, desc_file: Path, staging: Path, key: signing.SignKey | None,
                  *, label: str = "backup", set_id: str | None = None,
                  tamper: bool = False) -> str:
    """An ext4 disk holding one recovery set at resurgo/rescued/<id>/, signed with key.

    tamper: then one byte of its description's command is changed and its index updated
    to match, as whoever can write the disk could: only the signature no longer matches."""
    medium_dir = staging / "resurgo" / HOST
    medium_dir.mkdir(parents=True)
    with (
        open_medium(str(medium_dir)) as medium,
        medium.begin_set(SetMeta(SetKind.FULL, host=HOST), set_id=set_id, sign_key=key) as w,
    ):
        w.write_bytes("description.toml", desc_file.read_bytes())
        w.write_bytes(
            "description.toml.sha256", (desc_file.parent / "description.toml.sha256").read_bytes()
        )
        info = w.commit()
    if tamper:
        set_dir = medium_dir / info.id
        text = (set_dir / "description.toml").read_bytes()
        changed = text.replace(b"echo recovered", b"echo recoverez", 1)
        assert changed != text
        (set_dir / "description.toml").write_bytes(changed)
        index = json.loads((set_dir / "set.json").read_text())
        for f in index["files"]:
            if f["name"] == "description.toml":
                f["blake3"] = blake3.blake3(changed).hexdigest()
        (set_dir / "description.toml.sha256").unlink()
        index["files"] = [f for f in index["files"] if f["name"] != "description.toml.sha256"]
        (set_dir / "set.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    guest.blank_disk(path, 64 * MiB)
    guest.run_cmd(
        ["mkfs.ext4", "-q", "-F", "-L", label, "-E", "root_owner=0:0", "-d", staging, path]
    )
    return info.id


PLANTED = ("20991231T235959Z-dead", "20991231T235958Z-beef")


def make_planted_disk(path: Path, desc_file: Path, staging: Path, keys: Keys) -> None:
    """Another disk with two sets of the same host and description, newer than any real
    one: one unsigned, one signed by a key the image does not trust."""
    make_set_disk(path, desc_file, staging / "a", None, label="planted", set_id=PLANTED[0])
    extra = staging / "b"
    make_set_disk(path.with_suffix(".tmp"), desc_file, extra, keys.intruder,
                  set_id=PLANTED[1])
    path.with_suffix(".tmp").unlink()
    shutil.copytree(extra / "resurgo" / HOST / PLANTED[1],
                    staging / "a" / "resurgo" / HOST / PLANTED[1])
    guest.run_cmd(["mkfs.ext4", "-q", "-F", "-L", "planted", "-E", "root_owner=0:0", "-d",
                   staging / "a", path])


def check_target(image: Path) -> None:
    """The target disk holds the saved table, partition and filesystem identities."""
    table = json.loads(guest.run_cmd(["sfdisk", "--json", image]).stdout)["partitiontable"]
    assert table["label"] == "gpt"
    assert table["id"].lower() == DISK_GUID
    (p,) = table["partitions"]
    assert (p["start"], p["size"]) == (2048, 200 * 2048)
    assert p["uuid"].lower() == PART_UUID and p["name"] == "root"
    probe = guest.run_cmd(["blkid", "-p", "-o", "export", "-O", str(2048 * 512), image]).stdout
    fields = dict(line.split("=", 1) for line in probe.splitlines() if "=" in line)
    assert fields["TYPE"] == "ext4"
    assert fields["UUID"] == FS_UUID
    assert fields["LABEL"] == HOST


def check_run(
    result: guest.BootResult, *, medium_kname: str | None, set_id: str | None
) -> list[str]:
    text = result.text
    lines = rescue_lines(text)
    detail = "\n".join(lines) or guest._tail(text, 60)
    assert not result.timed_out, f"the rescue did not power off:\n{detail}"
    assert result.returncode == 0, detail
    assert any("resurgo 0.1.0 rescue system" in x for x in lines), detail
    if set_id is not None:
        found = [x for x in lines if x.startswith("recovery set:")]
        assert found and set_id in found[0], detail
        assert "signed by admin@test" in found[0] or "signed by a trusted key" in found[0], detail
        assert any(
            x.startswith("+ resurgo recover --from /run/resurgo/disks/")
            and f"--set {set_id} --yes --layout-only --root /mnt/rescued" in x
            for x in lines
        ), detail
    else:
        assert any(x.startswith("using the description in this image") for x in lines), detail
        assert any(
            x.startswith(
                "+ resurgo recover --from /resurgo/description.toml --yes "
                "--layout-only --root /mnt/rescued"
            )
            for x in lines
        ), detail
    assert any(x.startswith("checking the description ") for x in lines), detail
    assert "valid recovery description" in text, detail
    if medium_kname is not None:
        assert f"booted from /dev/{medium_kname} (kept mounted: recovery leaves it alone)" in lines
    assert "recovery finished: ok" in lines, detail
    assert lines[-1] == "poweroff now", detail
    return lines


def report_boot(name: str, result: guest.BootResult) -> None:
    started = agent_started_at(result.text)
    print(
        f"\n{name}: powered off after {result.seconds:.1f} s (host), the agent started at "
        f"{started} s of guest uptime"
    )


# ---------------------------------------------------------------------------- the image


def test_image_holds_what_recovery_needs(
    rescue: RescueReport, tree: Path, desc_file: Path, extracted: Path, keys: Keys
) -> None:
    assert rescue.size < MAX_SIZE, f"{rescue.size / MiB:.1f} MiB"
    assert rescue.kernel_version == Path(
        next((tree / "boot").glob("vmlinuz-*")).name
    ).name.removeprefix("vmlinuz-")
    for prog in (
        "sfdisk",
        "partx",
        "wipefs",
        "blkid",
        "mkfs.ext4",
        "mkfs.xfs",
        "mkfs.vfat",
        "mkfs.btrfs",
        "mkswap",
        "mdadm",
        "cryptsetup",
        "lvm",
        "mount",
        "chroot",
        "modprobe",
        "grub-install",
        "setsid",
        "ssh-keygen",
    ):
        assert prog in rescue.programs, prog
    # The tree has no zstd or age: named, with their packages.
    assert ("age", "age") in rescue.missing_programs
    for mod in (
        "virtio_blk",
        "virtio_scsi",
        "nvme",
        "ahci",
        "usb_storage",
        "uas",
        "e1000e",
        "igb",
        "ixgbe",
        "ext4",
        "xfs",
        "btrfs",
        "vfat",
        "isofs",
        "md_mod",
        "raid1",
        "raid456",
        "dm_crypt",
        "dm_thin_pool",
    ):
        assert mod in rescue.modules, mod
    assert rescue.python.version == "3.11" and rescue.python.compiled
    packages = {p.name: p for p in rescue.python.packages}
    assert list(packages) == ["resurgo", "tomli_w", "blake3", "zstandard"]
    assert packages["blake3"].extension_modules == (f"/usr/lib/resurgo/python/blake3/{BLAKE3_SO}",)
    assert packages["zstandard"].extension_modules == (
        f"/usr/lib/resurgo/python/zstandard/{ZSTANDARD_SO}",)
    assert packages["resurgo"].extension_modules == (
        f"/usr/lib/resurgo/python/resurgo/engine/{PLAINFILES_SO}",)
    assert {Path(lib).name for lib in rescue.python.libraries} >= {"libgcc_s.so.1", "libc.so.6"}
    assert rescue.default_entry == "recover"
    assert rescue.description_sha256 is not None and rescue.host == HOST

    # Inside: the boot menu, and the initramfs's files (both archives).
    out = extracted
    cfg = (out / "boot/grub/grub.cfg").read_text()
    assert "set default=0" in cfg and "set timeout=0" in cfg
    first = cfg.split("menuentry", 2)[1]
    assert "resurgo.recover=auto resurgo.after=poweroff" in first
    assert "console=ttyS0,115200 console=tty0" in first
    assert "'resurgo.args=--layout-only --root /mnt/rescued'" in first
    embedded = (out / "resurgo/description.toml").read_bytes()
    assert embedded == desc_file.read_bytes()
    raw = subprocess.run(
        ["zstd", "-d", "-c", out / "boot/initrd.img"], capture_output=True, check=True
    ).stdout
    entries = {e.name: e for e in cpio.read(raw)}
    for name in (
        "init",
        "usr/bin/python3.11",
        "usr/bin/resurgo",
        "usr/sbin/lvm",
        "usr/lib/resurgo/python/resurgo/rescue/agent.py",
        "usr/lib/resurgo/python/tomli_w/__init__.py",
        "usr/lib/resurgo/python/blake3/__init__.py",
        f"usr/lib/resurgo/python/blake3/{BLAKE3_SO}",
        f"usr/lib/resurgo/python/resurgo/engine/{PLAINFILES_SO}",
        "usr/lib/x86_64-linux-gnu/libgcc_s.so.1",
        "usr/lib/python3.11/os.py",
        "usr/lib/x86_64-linux-gnu/libssl.so.3",
        "usr/lib/x86_64-linux-gnu/libffi.so.8",
        "resurgo/description.toml",
        "resurgo/description.toml.sha256",
        "etc/resurgo/rescue.json",
        "etc/lvm/lvm.conf",
        "usr/lib/grub/i386-pc/normal.mod",
        "usr/lib/grub/x86_64-efi/normal.mod",
    ):
        assert name in entries, name
    assert entries["resurgo/description.toml"].data == embedded
    assert entries[f"usr/lib/resurgo/python/blake3/{BLAKE3_SO}"].mode == 0o100755
    # Merged /usr: dracut's symlinks stay symlinks (the second archive names no "lib").
    assert entries["lib"].mode & 0o170000 == 0o120000
    assert not any(
        n.startswith(
            (
                "usr/lib/python3.11/test/",
                "usr/lib/python3.11/idlelib",
                "usr/lib/python3.11/tkinter",
                "usr/lib/grub/x86_64-efi/monolithic",
            )
        )
        for n in entries
    )
    # The trusted signers, where every resurgo command in the rescue looks for them.
    assert entries["etc/resurgo/allowed_signers"].data == keys.signers
    assert "--id ask" in cfg
    config = json.loads(entries["etc/resurgo/rescue.json"].data)
    assert config["build_id"] == rescue.build_id
    assert config["description_sha256"] == rescue.description_sha256


def test_kernel_from_another_root(kernel_root_image: RescueReport) -> None:
    """--kernel-root: this machine's programs and Python (which has `ip`), the tree's
    kernel and modules; a static address on the kernel command line."""
    report = kernel_root_image
    assert report.size < MAX_SIZE
    assert report.description_sha256 is None
    assert "virtio_blk" in report.modules and "e1000" in report.modules
    for prog in ("ip", "ssh", "zstd", "mcopy"):  # this host has what the tree lacks
        if shutil.which(prog):
            assert prog in report.programs, prog


# ---------------------------------------------------------------------------- boots


def test_bios_cdrom_finds_the_set_and_recovers(
    rescue: RescueReport, desc_file: Path, tmp_path: Path, keys: Keys
) -> None:
    set_id = make_set_disk(tmp_path / "set.img", desc_file, tmp_path / "staging", keys.trusted)
    make_planted_disk(tmp_path / "planted.img", desc_file, tmp_path / "planted", keys)
    target = guest.blank_disk(tmp_path / "target.img", TARGET_SIZE)
    result = guest.boot(
        guest.Drive(target, serial="target"),  # vda: blank, so SeaBIOS goes on to the CD
        [guest.Drive(tmp_path / "set.img", serial="backup"),
         guest.Drive(tmp_path / "planted.img", serial="planted")],
        timeout=BOOT_TIMEOUT,
        serial_log=tmp_path / "serial.log",
        extra_args=["-cdrom", str(rescue.path)],
    )
    report_boot("BIOS, CD", result)
    check_run(result, medium_kname=None, set_id=set_id)
    check_target(target)
    lines = rescue_lines(result.text)
    for planted in PLANTED:
        assert any(x.startswith("refused ") and planted in x for x in lines), "\n".join(lines)


def test_a_set_changed_after_signing_is_refused_before_any_disk_is_touched(
    extracted: Path, desc_file: Path, tmp_path: Path, keys: Keys
) -> None:
    set_id = make_set_disk(tmp_path / "set.img", desc_file, tmp_path / "staging", keys.trusted,
                           tamper=True)
    make_planted_disk(tmp_path / "planted.img", desc_file, tmp_path / "planted", keys)
    target = guest.blank_disk(tmp_path / "target.img", TARGET_SIZE)
    result = guest.boot(
        guest.Drive(target, serial="target"),
        [guest.Drive(tmp_path / "set.img", serial="backup"),
         guest.Drive(tmp_path / "planted.img", serial="planted")],
        timeout=BOOT_TIMEOUT,
        serial_log=tmp_path / "serial.log",
        extra_args=direct_boot(extracted, [*RECOVER_ENTRY, *KERNEL_ARGS]),
    )
    report_boot("BIOS, the image's kernel, a changed set", result)
    lines = rescue_lines(result.text)
    detail = "\n".join(lines) or guest._tail(result.text, 60)
    assert not result.timed_out, detail
    assert any(x.startswith("refused ") and set_id in x and "does not match its signature" in x
               for x in lines), detail
    assert any("refused as not authentic" in x and "no disk was touched" in x
               for x in lines), detail
    assert not any(x.startswith("+ resurgo recover") for x in lines), detail
    assert any(x.startswith("recovery finished: FAILED") for x in lines), detail
    # Not a byte written: the blank target reads as zeros from end to end.
    with open(target, "rb") as f:
        while chunk := f.read(4 * MiB):
            assert chunk.count(0) == len(chunk)


def test_uefi_usb_stick_finds_the_set_and_recovers(
    rescue: RescueReport, desc_file: Path, tmp_path: Path, keys: Keys
) -> None:
    set_id = make_set_disk(tmp_path / "set.img", desc_file, tmp_path / "staging", keys.trusted)
    target = guest.blank_disk(tmp_path / "target.img", TARGET_SIZE)
    result = guest.boot(
        guest.Drive(rescue.path, format="raw", read_only=True, serial="stick"),  # vda
        [guest.Drive(target, serial="target"), guest.Drive(tmp_path / "set.img")],
        timeout=BOOT_TIMEOUT,
        serial_log=tmp_path / "serial.log",
        firmware="uefi",
    )
    report_boot("UEFI, USB stick", result)
    check_run(result, medium_kname="vda", set_id=set_id)
    check_target(target)


def test_bios_usb_stick_with_the_embedded_description(rescue: RescueReport, tmp_path: Path) -> None:
    target = guest.blank_disk(tmp_path / "target.img", TARGET_SIZE)
    result = guest.boot(
        guest.Drive(rescue.path, format="raw", read_only=True, serial="stick"),
        [guest.Drive(target, serial="target")],
        timeout=BOOT_TIMEOUT,
        serial_log=tmp_path / "serial.log",
    )
    report_boot("BIOS, USB stick, no set disk", result)
    check_run(result, medium_kname="vda", set_id=None)
    check_target(target)


def type_at_the_prompt(
    argv: list[str], text: str, *, serial_log: Path, timeout: float
) -> int | None:
    """Run qemu with the serial console on its stdin and stdout; once the rescue shell's
    prompt shows, type ``text``, then wait for the guest to power off (None: it did not,
    and was killed at ``timeout``)."""
    prompted = threading.Event()
    with serial_log.open("wb") as sink:
        proc = guest.spawn_qemu(argv, stdin=subprocess.PIPE)
        assert proc.stdin is not None and proc.stdout is not None
        stdout = proc.stdout

        def pump() -> None:
            tail = b""
            while chunk := os.read(stdout.fileno(), 65536):
                sink.write(chunk)
                sink.flush()
                tail = (tail + chunk)[-4096:]
                if PROMPT.search(tail):
                    prompted.set()

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        deadline = time.monotonic() + timeout
        try:
            if prompted.wait(timeout):
                proc.stdin.write(text.encode())
                proc.stdin.flush()
            return proc.wait(max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            return None
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            reader.join(timeout=10)
            proc.stdin.close()
            stdout.close()


def test_blake3_hashes_in_the_rescue_shell(extracted: Path, tmp_path: Path) -> None:
    """The image's kernel and initramfs, no unattended run: at the shell, the Python line
    resurgo's digests stand on (blake3's extension module, loaded with the libraries the
    image carries for it), and resurgo's own extension module."""
    argv = guest.qemu_command(
        [],
        extra_args=direct_boot(extracted, []),
    )
    # and resurgo's own extension module (the restore's plain-file path)
    command = ("import blake3; print(blake3.blake3(b'abc').hexdigest()); "
               "from resurgo.engine import _plainfiles; print(_plainfiles.make.__name__)")
    serial_log = tmp_path / "serial.log"
    started = time.monotonic()
    rc = type_at_the_prompt(
        argv,
        f'python3 -c "{command}"; echo "exit status $?"\npoweroff\n',
        serial_log=serial_log,
        timeout=BOOT_TIMEOUT,
    )
    print(f"\nrescue shell, blake3: powered off after {time.monotonic() - started:.1f} s")
    text = serial_log.read_text(errors="replace")
    lines = [line.strip() for line in text.splitlines()]
    detail = guest._tail(text, 40)
    assert rc == 0, detail
    assert "exit status 0" in lines, detail
    assert BLAKE3_ABC in lines, detail
    assert "make" in lines, detail


@pytest.mark.skipif(
    not os.environ.get("RESURGO_VM_FULL"), reason="one more boot: set RESURGO_VM_FULL=1"
)
def test_network_comes_up(kernel_root_image: RescueReport, tmp_path: Path) -> None:
    """Booted with a NIC and a static ip=, the network comes up; with no set and no
    description the unattended run fails, says so, and still powers off."""
    result = guest.boot(
        guest.blank_disk(tmp_path / "blank.img", 16 * MiB),
        timeout=BOOT_TIMEOUT,
        serial_log=tmp_path / "serial.log",
        extra_args=["-cdrom", str(kernel_root_image.path), "-nic", "user,model=e1000"],
    )
    report_boot("BIOS, CD, host tools, network", result)
    lines = rescue_lines(result.text)
    detail = "\n".join(lines) or guest._tail(result.text, 60)
    assert not result.timed_out and result.returncode == 0, detail
    assert "eth0: 10.0.2.15/24 via 10.0.2.2" in lines, detail
    assert "no recovery set was found, and this image holds no description" in lines, detail
    assert "recovery finished: FAILED (exit code 1)" in lines, detail
    assert lines[-1] == "poweroff now", detail
