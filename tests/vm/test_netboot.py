"""The rescue booted over the network, recovering a set from the network (vm tier).

The tree is what ``rescue --netboot`` writes once the initramfs is made (netboot.write_tree),
of the run's kernel-root image: its kernel, and its initramfs overlaid as
test_rescue_network's is with what a build writes for the medium; its entries those of an
unattended image whose --kernel-arg name the set, the key medium and the layout-only
recovery. qemu's user network serves the tree from its built-in TFTP server (tftp=DIR,
bootfile=...), and the set from a server on the host's loopback (10.0.2.2). The guest has
no disk to boot from but a blank target and the key medium, and no kernel given by qemu:
its NIC boots first.

- BIOS: the NIC's iPXE ROM fetches boot.ipxe, whose menu boots the default entry (the
  unattended recovery) after a second; the set on SFTP.
- UEFI (OVMF): the NIC's iPXE EFI driver PXE-boots GRUB (grub/x86_64-efi/core.efi, made by
  grub-mknetdir), which reads grub/grub.cfg from the same server; the set on S3.
- BIOS: PXELINUX boots the tree the kernel-root image's build wrote as it is (its digests
  checked first); no set to find.
- UEFI HTTP boot (OVMF's own HTTP boot, from a static HTTP server on the host's loopback)
  of that tree's rescue.iso, booted by the firmware as a RAM disk; no set to find.

Checked beyond test_rescue_network's checks: the loader fetched the files by TFTP, the
kernel got the entry's command line (the argument with blanks in one piece), and (iPXE)
the rescue wrote the DNS server of the DHCP answer (qemu's 10.0.2.3) into resolv.conf.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import re
import threading
from pathlib import Path

import pytest

from resurgo.media import MediumOptions
from resurgo.rescue import After, RescueReport, iso, netboot
from resurgo.rescue.access import ImageAccess, credentials_file
from tests.support.media_servers import ACCESS_KEY, SECRET_KEY, Seaweed, Sshd
from tests.vm import guest
from tests.vm.network_sets import check_recovered, key_medium, overlaid_initrd, write_set
from tests.vm.rescue_images import NETWORK_ARGS, TARGET_SIZE, Keys, rescue_lines
from tests.vm.test_rescue import BOOT_TIMEOUT

pytestmark = pytest.mark.vm

GUEST_HOST = "10.0.2.2"
LAYOUT_ONLY = "resurgo.args=--layout-only --root /mnt/rescued"


def netboot_tree(files: Path, tmp_path: Path, kernel_args: tuple[str, ...],
                 extra: dict[str, bytes]) -> Path:
    """The tree of the kernel-root image, unattended, ``kernel_args`` on every entry."""
    entries = iso.boot_entries(unattended=True, after=After.POWEROFF,
                               extra_args=(*kernel_args, guest.FAST_TCG))
    out = tmp_path / "tftp"
    report = netboot.write_tree(
        out, kernel=files / "boot/vmlinuz",
        initrd=overlaid_initrd(files / "boot/initrd.img", extra, tmp_path / "initrd"),
        entries=entries, timeout=1, label="resurgo netboot test",
        manifest={"build_id": "test"}, loaders=netboot.Loaders.find())
    print(f"\nnetboot tree: {report.size / guest.MiB:.1f} MiB, {', '.join(report.loaders)}")
    return out


def pxe_boot(tree: Path, bootfile: str, tmp_path: Path, secrets: dict[str, bytes],
             firmware: guest.Firmware) -> tuple[guest.BootResult, Path]:
    keys_img = key_medium(tmp_path, secrets)
    target = guest.blank_disk(tmp_path / "target.img", TARGET_SIZE)
    result = guest.boot(
        guest.Drive(target, serial="target"),
        [guest.Drive(keys_img, serial="keys")],
        timeout=BOOT_TIMEOUT,
        serial_log=tmp_path / "serial.log",
        firmware=firmware,
        extra_args=["-netdev", f"user,id=n0,tftp={tree},bootfile={bootfile}",
                    "-device", "virtio-net-pci,netdev=n0,bootindex=0"],
    )
    return result, target


def kernel_command_line(text: str) -> str:
    line = next(x for x in text.splitlines() if "Command line: " in x)
    return line.split("Command line: ", 1)[1].strip()


def test_bios_pxe_ipxe_recovers_a_set_from_sftp(
    kernel_root_files: Path, desc_file: Path, keys: Keys, tmp_path: Path
) -> None:
    (tmp_path / "sshd").mkdir()
    sshd = Sshd(tmp_path / "sshd")
    try:
        sets = sshd.root / "sets"
        sets.mkdir()
        set_id = write_set(sshd.url(sets), MediumOptions(ssh=sshd.options()), desc_file, keys)
        host_key = sshd.host_key_line.replace("[127.0.0.1]", f"[{GUEST_HOST}]", 1)
        url = f"sftp://{sshd.user}@{GUEST_HOST}:{sshd.port}{sets}"
        tree = netboot_tree(
            kernel_root_files, tmp_path,
            (f"resurgo.from={url}", f"resurgo.set={set_id}", "resurgo.keys=LABEL=keys",
             LAYOUT_ONLY),
            {"etc/resurgo/known_hosts": (host_key + "\n").encode()})
        result, target = pxe_boot(tree, netboot.IPXE_SCRIPT, tmp_path,
                                  {"ssh-key": sshd.key.read_bytes()}, "bios")
    finally:
        sshd.close()
    text = result.text
    for name in (f"tftp://{GUEST_HOST}/{netboot.IPXE_SCRIPT}", netboot.KERNEL, netboot.INITRD):
        # "initrd.img... 15%<backspaces> 64%<backspaces> ok" as it comes
        assert re.search(rf"^{re.escape(name)}\.\.\. [^\n]*\bok\r?$", text, re.M), \
            guest._tail(text, 60)
    cmdline = kernel_command_line(text)
    assert cmdline.startswith(f"initrd={netboot.INITRD} console=ttyS0,115200"), cmdline
    assert f'"{LAYOUT_ONLY}"' in cmdline and "resurgo.recover=auto" in cmdline, cmdline
    lines = check_recovered(result, set_id, target, "BIOS PXE (iPXE), SFTP")
    assert any(x.startswith(f"+ resurgo recover --from {url} --set {set_id} --ssh-key ")
               for x in lines), "\n".join(lines)
    # The DNS server of qemu's DHCP answer, in the rescue's /etc/resolv.conf.
    assert "DNS servers: 10.0.2.3 (/etc/resolv.conf)" in lines, "\n".join(lines)


def test_uefi_pxe_grub_recovers_a_set_from_s3(
    kernel_root_files: Path, desc_file: Path, keys: Keys, tmp_path: Path
) -> None:
    if netboot.Loaders.find().mknetdir is None:
        pytest.skip("no grub-mknetdir on this host (grub-common)")
    (tmp_path / "weed").mkdir()
    server = Seaweed(tmp_path / "weed")
    try:
        server.create_bucket("sets")
        set_id = write_set("s3://sets/rescued", MediumOptions(
            s3_endpoint=server.endpoint, s3_insecure_http=True), desc_file, keys,
            environ=server.environ())
        endpoint = f"http://{GUEST_HOST}:{server.port}"
        config = json.loads((kernel_root_files / "resurgo/rescue.json").read_text())
        config["medium"] = ImageAccess(s3_endpoint=endpoint, s3_region="us-east-1",
                                       s3_insecure_http=True).config()
        tree = netboot_tree(
            kernel_root_files, tmp_path,
            ("resurgo.from=s3://sets/rescued", f"resurgo.set={set_id}",
             "resurgo.keys=LABEL=keys", LAYOUT_ONLY),
            {"etc/resurgo/rescue.json": json.dumps(config).encode()})
        result, target = pxe_boot(
            tree, netboot.GRUB_EFI_NBP, tmp_path,
            {"s3-credentials": credentials_file(ACCESS_KEY, SECRET_KEY, None)}, "uefi")
    finally:
        server.close()
    text = result.text
    assert f"tftp://{GUEST_HOST}/{netboot.GRUB_EFI_NBP}... ok" in text, guest._tail(text, 60)
    assert "Welcome to GRUB" in text
    cmdline = kernel_command_line(text)
    assert f'"{LAYOUT_ONLY}"' in cmdline and "resurgo.recover=auto" in cmdline, cmdline
    lines = check_recovered(result, set_id, target, "UEFI PXE (GRUB), S3")
    assert any(x.startswith(f"+ resurgo recover --from s3://sets/rescued --set {set_id} "
                            f"--s3-endpoint {endpoint}") for x in lines), "\n".join(lines)


def test_bios_pxe_pxelinux_starts_the_rescue_of_the_build(
    kernel_root_image: RescueReport, tmp_path: Path
) -> None:
    """The tree the kernel-root image's build wrote (rescue --netboot, unattended, no
    menu) as it is: PXELINUX boots its default entry; with no set anywhere (no network
    medium, a blank disk) the rescue finds none and powers off, touching nothing."""
    nb = kernel_root_image.netboot
    assert nb is not None
    if "pxelinux" not in nb.loaders:
        pytest.skip("no PXELINUX on this host (pxelinux, syslinux-common)")
    for line in (nb.directory / netboot.SUMS).read_text().splitlines():
        digest, name = line.split("  ", 1)
        data = (nb.directory / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == digest, name
    manifest = json.loads((nb.directory / netboot.MANIFEST).read_text())
    assert manifest["build_id"] == kernel_root_image.build_id
    result, target = pxe_boot(nb.directory, "pxelinux.0", tmp_path, {}, "bios")
    text = result.text
    assert "PXELINUX" in text and f"Loading {netboot.INITRD}" in text, guest._tail(text, 60)
    cmdline = kernel_command_line(text)
    assert f"initrd={netboot.INITRD}" in cmdline and "resurgo.recover=auto" in cmdline, cmdline
    check_found_no_set(result, target)


def check_found_no_set(result: guest.BootResult, target: Path) -> None:
    """The unattended rescue of the kernel-root build started, with its network
    arguments, found no set anywhere, touched nothing and powered off."""
    text = result.text
    assert all(arg in kernel_command_line(text).split() for arg in NETWORK_ARGS), \
        kernel_command_line(text)
    lines = rescue_lines(text)
    detail = "\n".join(lines) or guest._tail(text, 60)
    assert not result.timed_out and result.returncode == 0, detail
    assert "unattended: resurgo.recover=auto, then poweroff" in lines, detail
    assert any("no recovery set was found" in x for x in lines), detail
    assert not any(x.startswith("+ resurgo recover") for x in lines), detail
    assert lines[-1] == "poweroff now", detail
    assert target.stat().st_blocks == 0  # not a byte written


def test_uefi_http_boot_boots_the_iso_of_the_build(
    kernel_root_image: RescueReport, tmp_path: Path
) -> None:
    """UEFI HTTP boot (OVMF's own network stack, the NIC's iPXE ROM left out, its PXE
    turned off) of the tree the kernel-root image's build wrote, from a static HTTP server
    on the host's loopback: qemu's DHCP hands out the boot URL (no HTTPClient vendor
    class: OVMF takes the URL all the same), the firmware downloads rescue.iso and boots
    it as a RAM disk, and the rescue starts as from a CD."""
    nb, built = kernel_root_image.netboot, kernel_root_image.path
    assert nb is not None and built is not None
    assert nb.boot_files.get("uefi-http") == netboot.ISO, nb
    assert (nb.directory / netboot.ISO).read_bytes() == built.read_bytes()
    asked: list[str] = []

    class Served(http.server.SimpleHTTPRequestHandler):
        """The tree, statically; what was asked for noted."""

        def log_message(self, format: str, *args: object) -> None:
            asked.append(f"{self.command} {self.path}")

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Served, directory=str(nb.directory)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://{GUEST_HOST}:{server.server_address[1]}/{netboot.ISO}"
        target = guest.blank_disk(tmp_path / "target.img", TARGET_SIZE)
        result = guest.boot(
            guest.Drive(target, serial="target"),
            timeout=BOOT_TIMEOUT,
            serial_log=tmp_path / "serial.log",
            firmware="uefi",
            ovmf_vars=guest.new_ovmf_vars(tmp_path / "OVMF_VARS.fd"),
            extra_args=[
                "-fw_cfg", "name=opt/org.tianocore/IPv4PXESupport,string=n",
                "-fw_cfg", "name=opt/org.tianocore/IPv6PXESupport,string=n",
                "-netdev", f"user,id=n0,bootfile={url}",
                "-device", "virtio-net-pci,netdev=n0,romfile=,bootindex=0"],
        )
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=30)
    text = result.text
    assert "Start HTTP Boot over IPv4" in text and f"URI: {url}" in text, \
        guest._tail(text, 60)
    assert "Start PXE" not in text  # no PXE before it: it was HTTP that booted
    assert f"GET /{netboot.ISO}" in asked, asked
    assert "Welcome to GRUB" in text
    assert "BOOT_IMAGE=/boot/vmlinuz" in kernel_command_line(text)  # the ISO's own GRUB
    check_found_no_set(result, target)
