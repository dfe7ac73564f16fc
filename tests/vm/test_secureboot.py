"""The rescue ISO's Secure Boot path, with Debian's real signed shim and GRUB.

The signed parts come from Debian's packages (``apt-get download`` through the mirror
apt already uses, into the test cache, unpacked there: ``signed_tree``), the kernel and
initramfs from the vm tier's own ``kernel_root`` rescue image (the Debian tree's kernel,
which Debian signed). The ISO is made as the build makes it (``secure_boot_esp``,
``iso.make_iso``), without a second dracut run.

1. Its EFI boot image (El Torito's UEFI entry, also the GPT's EFI partition) holds shim
   as /EFI/BOOT/BOOTX64.EFI, the signed GRUB beside it, and grub.cfg where that GRUB
   reads it (/EFI/debian, its built-in prefix).
2. Under OVMF with Secure Boot enforced and Microsoft's keys enrolled, it boots to the
   rescue's shell (the kernel says Secure Boot is on), and powers off when told.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from resurgo.rescue import RescueReport, iso, secureboot
from resurgo.rescue.build import secure_boot_esp, volume_date
from resurgo.rescue.cmdline import After
from resurgo.rescue.secureboot import SecureBootMode
from tests.vm import guest
from tests.vm.test_rescue import type_at_the_prompt

pytestmark = pytest.mark.vm

PACKAGES = ("shim-signed", "shim-helpers-amd64-signed", "grub-efi-amd64-signed")
OVMF_SB_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.secboot.fd")
OVMF_MS_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.ms.fd")
BUILD_ID = "20261207T080000Z-5ecb0075"
SB_TIMEOUT = 240.0


def signed_tree(cache_dir: Path = guest.DEFAULT_CACHE_DIR) -> Path:
    """Debian's signed shim, MokManager and GRUB, unpacked under the test cache (once
    per package list)."""
    final = cache_dir / f"secureboot-{guest.cache_key(*PACKAGES)}"
    stamp = final / "COMPLETE"
    if stamp.is_file():
        return final / "root"
    guest.require_tools("apt-get", "dpkg-deb")
    with guest.locked(cache_dir / f"{final.name}.lock"):
        if stamp.is_file():
            return final / "root"
        shutil.rmtree(final, ignore_errors=True)
        debs = final / "debs"
        debs.mkdir(parents=True)
        # apt-get download writes into its working directory.
        subprocess.run(["apt-get", "download", "-q", *PACKAGES], cwd=debs, check=True,
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=600)
        for deb in sorted(debs.glob("*.deb")):
            guest.run_cmd(["dpkg-deb", "-x", deb, final / "root"])
        stamp.write_text("\n".join(p.name for p in sorted(debs.glob("*.deb"))) + "\n")
    return final / "root"


@pytest.fixture(scope="module")
def secure_iso(kernel_root_image: RescueReport, kernel_root_files: Path,
               tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, secureboot.SecureBootPlan]:
    parts = signed_tree()
    work = tmp_path_factory.mktemp("secureboot")
    tree = work / "iso"
    (tree / "boot/grub").mkdir(parents=True)
    for name in ("vmlinuz", "initrd.img"):
        shutil.copyfile(kernel_root_files / "boot" / name, tree / "boot" / name)
    sb = secureboot.plan(SecureBootMode.REQUIRED, [parts], tree / "boot/vmlinuz")
    secureboot.check(SecureBootMode.REQUIRED, sb)
    entries = iso.boot_entries(unattended=False, after=After.POWEROFF)
    (tree / "boot/grub/grub.cfg").write_text(iso.grub_cfg(entries, timeout=0, label="sb"))
    esp = secure_boot_esp(sb, tree, work, BUILD_ID)
    assert esp is not None
    out = work / "secure.iso"
    iso.make_iso(tree, out, volume_date=volume_date(datetime.now(UTC)), esp=esp)
    return out, sb


def _extract(image: Path, inside: str, dest: Path) -> Path:
    guest.run_cmd(["xorriso", "-osirrox", "on", "-indev", image, "-extract", inside, dest])
    return dest


def _mtype(esp: Path, inside: str) -> bytes:
    return subprocess.run(["mtype", "-i", str(esp), f"::{inside}"], capture_output=True,
                          check=True).stdout


def test_the_efi_image_holds_shim_the_signed_grub_and_its_config(
        secure_iso: tuple[Path, secureboot.SecureBootPlan], tmp_path: Path) -> None:
    image, _ = secure_iso
    parts = signed_tree()
    report = subprocess.run(
        ["xorriso", "-indev", str(image), "-report_el_torito", "as_mkisofs"],
        capture_output=True, text=True, check=True).stdout
    assert "-e '/efi.img'" in report and "-efi-boot-part --efi-boot-image" in report, report
    assert "-b '/boot/grub/i386-pc/eltorito.img'" in report, report  # BIOS as before
    esp = _extract(image, "/efi.img", tmp_path / "efi.img")
    shim = parts / "usr/lib/shim/shimx64.efi.signed"
    grub = parts / "usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed"
    assert _mtype(esp, "/EFI/BOOT/BOOTX64.EFI") == shim.read_bytes()
    assert _mtype(esp, "/EFI/BOOT/grubx64.efi") == grub.read_bytes()
    assert _mtype(esp, "/EFI/BOOT/mmx64.efi") == (
        parts / "usr/lib/shim/mmx64.efi.signed").read_bytes()
    # Debian's signed GRUB has /EFI/debian built in as its prefix.
    assert b"/EFI/debian\0" in grub.read_bytes()
    cfg = _mtype(esp, "/EFI/debian/grub.cfg").decode()
    assert f"search --no-floppy --file --set=root /resurgo/{BUILD_ID}.id" in cfg
    assert "configfile $prefix/grub.cfg" in cfg
    marker = _extract(image, f"/resurgo/{BUILD_ID}.id", tmp_path / "marker")
    assert marker.read_text() == BUILD_ID + "\n"
    # The kernel GRUB starts through shim's verifier: Debian signed it.
    assert secureboot.pe_signed(_extract(image, "/boot/vmlinuz", tmp_path / "vmlinuz").read_bytes())


def test_boots_under_ovmf_with_secure_boot_enforced(
        secure_iso: tuple[Path, secureboot.SecureBootPlan], tmp_path: Path) -> None:
    for fd in (OVMF_SB_CODE, OVMF_MS_VARS):
        if not fd.is_file():
            pytest.skip(f"no {fd} (Debian's ovmf package)")
    image, _ = secure_iso
    nvram = tmp_path / "vars.fd"
    shutil.copyfile(OVMF_MS_VARS, nvram)
    argv = guest.qemu_command([], extra_args=[
        "-machine", "q35,smm=on",
        "-global", "driver=cfi.pflash01,property=secure,value=on",
        "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_SB_CODE}",
        "-drive", f"if=pflash,format=raw,unit=1,file={nvram}",
        "-drive", f"if=none,id=cd,format=raw,media=cdrom,readonly=on,file={image}",
        "-device", "ide-cd,drive=cd,bootindex=0",
    ])
    serial_log = tmp_path / "serial.log"
    started = time.monotonic()
    rc = type_at_the_prompt(argv, "poweroff\n", serial_log=serial_log, timeout=SB_TIMEOUT)
    print(f"\nSecure Boot: rescue shell reached and powered off after "
          f"{time.monotonic() - started:.1f} s")
    text = serial_log.read_text(errors="replace")
    detail = guest._tail(text, 40)
    assert "Access Denied" not in text, detail
    assert "Secure boot enabled" in text, detail
    assert "resurgo rescue system" in text, detail
    assert rc == 0, detail
