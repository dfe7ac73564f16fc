"""probe.system: parsers on recorded data, readers on small trees built here and on this machine."""

from __future__ import annotations

import base64
import hashlib
import os
import platform
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from resurgo.model import (
    BootloaderKind,
    Disk,
    Encoding,
    Firmware,
    Partition,
)
from resurgo.probe import rootfs, system
from tests.support.consts import BIOS

DATA = Path(__file__).parent.parent / "data" / "system"


def write(root: Path, inside: str, text: str | bytes, mode: int | None = None) -> Path:
    path = root / inside.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    if mode is not None:
        path.chmod(mode)
    return path


def status(*packages: str) -> str:
    return "".join(
        f"Package: {p}\nStatus: install ok installed\nVersion: 1\nArchitecture: amd64\n\n"
        for p in packages
    )


def disk(tmp: Path, name: str, sector: bytes) -> Disk:
    path = tmp / name
    path.write_bytes(sector + bytes(4096))
    return Disk(
        id=f"disk.{name}",
        path=str(path),
        size=4608,
        logical_sector_size=512,
        physical_sector_size=512,
    )


# --- os-release ---------------------------------------------------------------------------


def test_os_release_recorded_debian() -> None:
    fields = system.parse_os_release((DATA / "os-release.debian12").read_text())
    assert fields["ID"] == "debian"
    assert fields["VERSION_ID"] == "12"
    assert fields["PRETTY_NAME"] == "Debian GNU/Linux 12 (bookworm)"
    assert fields["HOME_URL"] == "https://www.debian.org/"
    rel = system.os_release_of(fields)
    assert (rel.id, rel.version_id, rel.pretty_name) == (
        "debian",
        "12",
        "Debian GNU/Linux 12 (bookworm)",
    )


def test_os_release_shell_quoting() -> None:
    text = (
        "# a comment\n"
        "ID=opensuse-leap\n"
        "NAME='It'\\''s \"quoted\"'\n"
        'PRETTY_NAME="A \\"B\\" \\$HOME \\`x\\` \\\\ \\n"\n'
        "VERSION_ID=15.5\n"
        'URL="https://example.org/#top"\n'
        'BROKEN="unterminated\n'
        "not a line\n"
        "1BAD=x\n"
    )
    fields = system.parse_os_release(text)
    assert fields == {
        "ID": "opensuse-leap",
        "NAME": 'It\'s "quoted"',
        "PRETTY_NAME": 'A "B" $HOME `x` \\ \\n',
        "VERSION_ID": "15.5",
        "URL": "https://example.org/#top",
    }


def test_os_release_defaults_from_the_spec() -> None:
    rel = system.os_release_of({})
    assert (rel.id, rel.version_id, rel.pretty_name) == ("linux", "", "Linux")


# --- small pure helpers -------------------------------------------------------------------


def test_architecture_names() -> None:
    assert system.normalise_architecture("x86_64") == "x86_64"
    assert system.normalise_architecture("amd64") == "x86_64"
    assert system.normalise_architecture("arm64") == "aarch64"
    assert system.normalise_architecture("i386") == "i686"
    assert system.normalise_architecture("mips") == "mips"


def test_newest_kernel_is_natural_order() -> None:
    assert system.newest_version(["6.1.0-9-amd64", "6.1.0-10-amd64", "5.10.0-28-amd64"]) == (
        "6.1.0-10-amd64"
    )
    assert system.newest_version(["6.10.1", "6.9.12"]) == "6.10.1"
    assert system.newest_version([]) == ""


def test_fstab_esp() -> None:
    entries = system.parse_fstab(
        "# <file system> <mount point> <type> <options> <dump> <pass>\n"
        "UUID=abc / ext4 errors=remount-ro 0 1\n"
        "UUID=1234-ABCD /boot/efi vfat umask=0077 0 1\n"
        "/dev/sdb1 /mnt/my\\040disk ext4\n"
    )
    assert [e.mountpoint for e in entries] == ["/", "/boot/efi", "/mnt/my disk"]
    assert entries[2].options == "defaults"
    assert system.esp_in_fstab(entries)
    assert not system.esp_in_fstab(entries[:1] + entries[2:])


# --- bootloader ---------------------------------------------------------------------------


def test_grub_signature_in_recorded_mbr() -> None:
    sector = (DATA / "mbr-grub-pc-gpt.bin").read_bytes()
    assert len(sector) == 512
    assert system.has_grub_boot_code(sector)
    assert not system.has_grub_boot_code(bytes(512))
    # The text in the partition table area does not count: it is not boot code.
    assert not system.has_grub_boot_code(bytes(446) + b"GRUB " + bytes(61))


@pytest.mark.skipif(shutil.which("sfdisk") is None, reason="needs sfdisk")
def test_grub_disks_reads_each_disk(tmp_path: Path) -> None:
    grub = disk(tmp_path, "grub", (DATA / "mbr-grub-pc-gpt.bin").read_bytes())
    # A disk partitioned by sfdisk alone: a valid MBR, no boot code.
    plain = tmp_path / "plain"
    plain.write_bytes(bytes(4 * 1024 * 1024))
    subprocess.run(["sfdisk", "-q", str(plain)], input="label: dos\n,\n", text=True, check=True)
    assert plain.read_bytes()[510:512] == b"\x55\xaa"
    plain_disk = Disk(
        id="disk.plain",
        path=str(plain),
        size=4 << 20,
        logical_sector_size=512,
        physical_sector_size=512,
    )
    missing = Disk(
        id="disk.gone",
        path=str(tmp_path / "gone"),
        size=1,
        logical_sector_size=512,
        physical_sector_size=512,
    )
    warnings: list[str] = []
    assert system.grub_disks([plain_disk, grub, missing], warnings) == ("disk.grub",)
    assert len(warnings) == 1 and str(tmp_path / "gone") in warnings[0]


def part(pid: str, disk_id: str, number: int, type_: str) -> Partition:
    return Partition(
        id=pid, disk=disk_id, number=number, start=2048, size=1 << 20, sector_size=512, type=type_
    )


def test_bios_boot_partition_prefers_the_grub_disk() -> None:
    parts = [
        part("part.sda1", "disk.sda", 1, BIOS.upper()),
        part("part.sdb1", "disk.sdb", 1, BIOS),
        part("part.sdb2", "disk.sdb", 2, "0FC63DAF-8483-4772-8E79-3D69D8477DE4"),
    ]
    assert system.bios_boot_partition(parts, ("disk.sdb",)) == "part.sdb1"
    assert system.bios_boot_partition(parts, ()) == "part.sda1"
    assert system.bios_boot_partition(parts[2:], ("disk.sdb",)) is None


def test_choose_efi_path() -> None:
    files = [
        "EFI/BOOT/BOOTX64.EFI",
        "EFI/debian/grubx64.efi",
        "EFI/debian/shimx64.efi",
        "EFI/debian/mmx64.efi",
        "EFI/ubuntu/grubx64.efi",
        "EFI/systemd/systemd-bootx64.efi",
    ]
    grub = BootloaderKind.GRUB_EFI
    assert system.choose_efi_path(files, grub, "x86_64", "debian") == "/EFI/debian/shimx64.efi"
    assert system.choose_efi_path(files, grub, "x86_64", "ubuntu") == "/EFI/ubuntu/grubx64.efi"
    assert system.choose_efi_path(files, BootloaderKind.SYSTEMD_BOOT, "x86_64", "debian") == (
        "/EFI/systemd/systemd-bootx64.efi"
    )
    assert system.choose_efi_path(["EFI/BOOT/BOOTX64.EFI"], grub, "x86_64", "debian") == (
        "/EFI/BOOT/BOOTX64.EFI"
    )
    assert system.choose_efi_path(["efi/debian/GRUBAA64.EFI"], grub, "aarch64", "debian") == (
        "/efi/debian/GRUBAA64.EFI"
    )
    assert system.choose_efi_path(files, grub, "aarch64", "debian") is None


def test_decide_bootloader() -> None:
    Ev = system.LoaderEvidence
    bios, uefi = Firmware.BIOS, Firmware.UEFI
    both = Ev(grub_pc=True, grub_efi_files=True, kernel_images=True)
    assert system.decide_bootloader(bios, both) == BootloaderKind.GRUB_PC
    assert system.decide_bootloader(uefi, both) == BootloaderKind.GRUB_EFI
    sdboot = Ev(systemd_boot=True, grub_efi_files=True, kernel_images=True)
    assert system.decide_bootloader(uefi, sdboot) == BootloaderKind.SYSTEMD_BOOT
    assert system.decide_bootloader(uefi, Ev(grub_efi_package=True, systemd_boot=True)) == (
        BootloaderKind.GRUB_EFI
    )
    assert system.decide_bootloader(bios, sdboot) == BootloaderKind.UNKNOWN
    assert system.decide_bootloader(bios, Ev(kernel_images=True)) == BootloaderKind.UNKNOWN
    assert system.decide_bootloader(uefi, Ev()) == BootloaderKind.NONE


def test_decide_firmware() -> None:
    assert (
        system.decide_firmware(grub_pc_only=True, efi_loader=True, esp_mounted_by_fstab=True)
        == Firmware.BIOS
    )
    assert (
        system.decide_firmware(grub_pc_only=False, efi_loader=True, esp_mounted_by_fstab=True)
        == Firmware.UEFI
    )
    assert (
        system.decide_firmware(grub_pc_only=False, efi_loader=True, esp_mounted_by_fstab=False)
        == Firmware.BIOS
    )
    assert (
        system.decide_firmware(grub_pc_only=False, efi_loader=False, esp_mounted_by_fstab=True)
        == Firmware.BIOS
    )


# --- whole trees --------------------------------------------------------------------------


def base_tree(root: Path) -> Path:
    write(root, "etc/hostname", "# set by the installer\nsaved-host\n")
    write(root, "etc/machine-id", "0123456789abcdef0123456789abcdef\n")
    write(root, "usr/lib/os-release", (DATA / "os-release.debian12").read_text())
    os.symlink("../usr/lib/os-release", root / "etc/os-release")
    # merged /usr: /lib is a relative link, as on Debian 12.
    os.symlink("usr/lib", root / "lib")
    write(root, "usr/lib/modules/6.1.0-9-amd64/modules.dep", "")
    write(root, "usr/lib/modules/6.1.0-10-amd64/kernel/fs/ext4/ext4.ko", "")
    (root / "usr/lib/modules/7.0-not-a-kernel").mkdir()
    write(root, "boot/vmlinuz-5.10.0-28-amd64", "")
    return root


def test_probe_system_on_a_bios_tree(tmp_path: Path) -> None:
    root = base_tree(tmp_path)
    write(root, "var/lib/dpkg/status", status("grub-pc", "grub-efi-amd64-bin", "grub-pc-bin"))
    write(root, "etc/fstab", "UUID=1 / ext4 defaults 0 1\nUUID=2 /boot/efi vfat umask=0077 0 1\n")
    facts = system.probe_system(root)
    assert facts.hostname == "saved-host"
    assert facts.machine_id == "0123456789abcdef0123456789abcdef"
    assert facts.os_release.id == "debian"
    assert facts.kernel == "6.1.0-10-amd64"
    # grub-pc is GRUB's BIOS platform package: the tree was set up for BIOS, ESP or not.
    assert facts.firmware == Firmware.BIOS
    assert facts.architecture == system.normalise_architecture(platform.machine())


def test_probe_system_on_a_uefi_tree(tmp_path: Path) -> None:
    root = base_tree(tmp_path)
    write(root, "var/lib/dpkg/status", status("grub-efi-amd64", "grub-efi-amd64-bin"))
    write(root, "etc/fstab", "UUID=1 / ext4 defaults 0 1\nUUID=2 /boot/efi vfat umask=0077 0 1\n")
    assert system.probe_system(root).firmware == Firmware.UEFI
    # The same loader with no ESP in fstab boots nothing: BIOS.
    write(root, "etc/fstab", "UUID=1 / ext4 defaults 0 1\n")
    assert system.probe_system(root).firmware == Firmware.BIOS


def test_probe_system_without_identity_files(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    write(tmp_path, "etc/machine-id", "uninitialized\n")
    facts = system.probe_system(tmp_path)
    assert facts.hostname == ""  # not the host's: this tree is not the running system
    assert facts.machine_id == ""
    assert facts.kernel == ""
    assert facts.os_release.id == "linux"
    assert facts.firmware == Firmware.BIOS


def test_probe_system_running_machine() -> None:
    facts = system.probe_system(Path("/"))
    assert facts.kernel == platform.release()
    assert facts.hostname
    machine_id = Path("/etc/machine-id")
    if machine_id.is_file() and machine_id.read_text().strip() not in ("", "uninitialized"):
        assert re.fullmatch(r"[0-9a-f]{32}", facts.machine_id)
        assert facts.machine_id == machine_id.read_text().strip()
    else:
        assert facts.machine_id == ""
    expected = Firmware.UEFI if Path("/sys/firmware/efi").is_dir() else Firmware.BIOS
    assert facts.firmware == expected
    assert facts.os_release.id


def test_probe_bootloader_bios(tmp_path: Path) -> None:
    root = base_tree(tmp_path / "root")
    write(root, "var/lib/dpkg/status", status("grub-pc"))
    grub = disk(tmp_path, "sda", (DATA / "mbr-grub-pc-gpt.bin").read_bytes())
    other = disk(tmp_path, "sdb", bytes(512))
    parts = [part("part.sda1", "disk.sda", 1, BIOS.upper())]
    bl = system.probe_bootloader(root, Firmware.BIOS, [grub, other], parts, None)
    assert bl.kind == BootloaderKind.GRUB_PC
    assert bl.disks == ("disk.sda",)
    assert bl.bios_boot_partition == "part.sda1"
    assert bl.efi_path is None


def test_probe_bootloader_uefi(tmp_path: Path) -> None:
    root = base_tree(tmp_path / "root")
    write(root, "var/lib/dpkg/status", status("grub-efi-amd64", "shim-signed"))
    esp = root / "boot/efi"
    for f in ("EFI/debian/shimx64.efi", "EFI/debian/grubx64.efi", "EFI/BOOT/BOOTX64.EFI"):
        write(esp, f, b"MZ")
    bl = system.probe_bootloader(root, Firmware.UEFI, [], [], esp)
    sfx = system.EFI_SUFFIX.get(system.normalise_architecture(platform.machine()))
    assert bl.kind == BootloaderKind.GRUB_EFI
    assert bl.disks == ()
    assert bl.efi_path == ("/EFI/debian/shimx64.efi" if sfx == "x64" else None)
    # Unmounted ESP: the kind is known, the path is not.
    assert system.probe_bootloader(root, Firmware.UEFI, [], [], None).efi_path is None


def test_probe_bootloader_systemd_boot_seen_on_the_esp(tmp_path: Path) -> None:
    root = base_tree(tmp_path / "root")
    write(root, "var/lib/dpkg/status", status("systemd"))
    esp = tmp_path / "esp"
    write(esp, "EFI/systemd/systemd-bootx64.efi", b"MZ")
    write(esp, "EFI/BOOT/BOOTX64.EFI", b"MZ")
    bl = system.probe_bootloader(root, Firmware.UEFI, [], [], esp)
    assert bl.kind == BootloaderKind.SYSTEMD_BOOT
    if platform.machine() == "x86_64":
        assert bl.efi_path == "/EFI/systemd/systemd-bootx64.efi"


def test_probe_bootloader_container_has_none(tmp_path: Path) -> None:
    write(tmp_path, "etc/hostname", "c\n")
    bl = system.probe_bootloader(tmp_path, Firmware.BIOS, [], [], None)
    assert bl.kind == BootloaderKind.NONE


# --- configuration files ------------------------------------------------------------------


def test_capture_config(tmp_path: Path) -> None:
    root = tmp_path / "root"
    fstab = "UUID=1 / ext4 defaults 0 1\n"
    write(root, "etc/fstab", fstab, 0o644)
    write(root, "etc/mdadm/mdadm.conf", "ARRAY /dev/md0 UUID=a:b:c:d\n")
    os.symlink("mdadm/mdadm.conf", root / "etc/mdadm.conf")
    # Absolute targets mean the tree's own root, not the host's.
    write(root, "srv/hosts.real", "127.0.0.1 localhost saved\n")
    os.symlink("/srv/hosts.real", root / "etc/hosts")
    write(tmp_path / "outside", "secret", "host file\n")
    os.symlink("../../outside/secret", root / "etc/crypttab")
    os.symlink("../run/systemd/resolve/stub-resolv.conf", root / "etc/resolv.conf")
    write(root, "run/systemd/resolve/stub-resolv.conf", "nameserver 127.0.0.53\n")
    wifi = b"[wifi-security]\npsk=\xff\xfe not utf-8\n"
    write(root, "etc/NetworkManager/system-connections/home.nmconnection", wifi, 0o600)
    write(root, "etc/netplan/01-netcfg.yaml", "network: {version: 2}\n")
    write(root, "etc/netplan/README", "not yaml\n")
    write(root, "etc/default/grub.d/huge.cfg", "#" * (2 * 1024 * 1024))
    write(root, "etc/default/grub.d/serial.cfg", 'GRUB_TERMINAL="serial"\n')
    (root / "etc/default/grub.d/subdir").mkdir()
    write(root, "etc/systemd/network/10-eth.network", "[Match]\nName=eth0\n")
    os.symlink("/dev/null", root / "etc/systemd/network/99-default.link")

    warnings: list[str] = []
    files = system.capture_config(root, warnings)
    by_path = {f.path: f for f in files}
    assert sorted(by_path) == [
        "/etc/NetworkManager/system-connections/home.nmconnection",
        "/etc/default/grub.d/serial.cfg",
        "/etc/fstab",
        "/etc/hosts",
        "/etc/mdadm.conf",
        "/etc/mdadm/mdadm.conf",
        "/etc/netplan/01-netcfg.yaml",
        "/etc/systemd/network/10-eth.network",
    ]
    f = by_path["/etc/fstab"]
    assert (f.id, f.content, f.encoding, f.mode) == ("cfg.etc.fstab", fstab, Encoding.UTF8, "0644")
    assert f.sha256 == hashlib.sha256(fstab.encode()).hexdigest()
    assert by_path["/etc/mdadm.conf"].content == "ARRAY /dev/md0 UUID=a:b:c:d\n"
    assert by_path["/etc/hosts"].content == "127.0.0.1 localhost saved\n"
    nm = by_path["/etc/NetworkManager/system-connections/home.nmconnection"]
    assert nm.encoding == Encoding.BASE64
    assert base64.b64decode(nm.content) == wifi
    assert nm.mode == "0600"
    assert nm.sha256 == hashlib.sha256(wifi).hexdigest()
    assert len({f.id for f in files}) == len(files)
    assert len(warnings) == 2
    assert any("/etc/crypttab" in w and "outside" in w for w in warnings)
    assert any("huge.cfg" in w for w in warnings)


def test_capture_config_marks_the_secret_files(tmp_path: Path) -> None:
    """Secret: kept from other users (no o+r), of a kind that holds keys whatever its
    mode, or setting a key; public configuration is not."""
    root = tmp_path / "root"
    write(root, "etc/fstab", "UUID=1 / ext4 defaults 0 1\n", 0o644)
    write(root, "etc/hostname", "box\n", 0o600)
    write(root, "etc/default/grub", "GRUB_TIMEOUT=1\n", 0o640)
    nm = "etc/NetworkManager/system-connections/wifi.nmconnection"
    write(root, nm, "[wifi-security]\npsk=hunter22\n", 0o644)  # loosened by hand
    write(root, "etc/network/interfaces",
          "iface wlan0 inet dhcp\n    wpa-ssid home\n    wpa-psk hunter22\n", 0o644)
    write(root, "etc/systemd/network/10-eth.network", "[Match]\nName=eth0\n", 0o644)
    write(root, "etc/netplan/01.yaml", "network: {version: 2}\n", 0o644)
    write(root, "etc/crypttab", "data UUID=1 /etc/keys/data.key luks\n", 0o644)

    secret = {f.path: f.secret for f in system.capture_config(root, [])}
    assert secret == {
        "/etc/fstab": False,
        "/etc/crypttab": False,
        "/etc/hostname": True,
        "/etc/default/grub": True,
        f"/{nm}": True,
        "/etc/network/interfaces": True,
        "/etc/systemd/network/10-eth.network": False,
        "/etc/netplan/01.yaml": True,
    }
    # A CIFS mount's password in an fstab every local user may read: a set is read by others.
    write(root, "etc/fstab", "//srv/share /mnt cifs user=a,password=s3cret 0 0\n", 0o644)
    (fstab,) = [f for f in system.capture_config(root, []) if f.path == "/etc/fstab"]
    assert fstab.secret


def test_capture_config_running_machine() -> None:
    files = {f.path: f for f in system.capture_config(Path("/"), [])}
    if Path("/etc/fstab").is_file():
        assert files["/etc/fstab"].content == Path("/etc/fstab").read_text()
    if Path("/etc/machine-id").is_file():
        machine_id = Path("/etc/machine-id").read_text()
        assert files["/etc/machine-id"].content == machine_id


def test_resolve_stays_in_the_tree(tmp_path: Path) -> None:
    write(tmp_path, "usr/bin/tool", "x")
    os.symlink("usr/bin", tmp_path / "bin")
    os.symlink("/bin/tool", tmp_path / "abs")
    os.symlink("loop2", tmp_path / "loop1")
    os.symlink("loop1", tmp_path / "loop2")
    assert rootfs.resolve(tmp_path, "/bin/tool") == "/usr/bin/tool"
    assert rootfs.resolve(tmp_path, "/abs") == "/usr/bin/tool"
    assert rootfs.resolve(tmp_path, "/usr/../../etc") is None
    assert rootfs.resolve(tmp_path, "/loop1") is None
    assert rootfs.resolve(tmp_path, "/missing") is None
