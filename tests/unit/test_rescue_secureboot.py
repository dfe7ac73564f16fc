"""The Secure Boot layout of the rescue image: which signed parts go where on its ESP,
given a tree with or without them (synthetic PE images: the real ones are the vm tier's)."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import pytest

from resurgo.errors import PreconditionFailed
from resurgo.rescue import secureboot
from resurgo.rescue.secureboot import SecureBootMode, esp_config, grub_prefixes, pe_signed
from tests.support.cli import run

PE_AT = 0x80


def pe(*, signed: bool, pe32plus: bool = True, body: bytes = b"") -> bytes:
    """A PE/COFF header whose certificate table (data directory 4) holds a PKCS#7
    WIN_CERTIFICATE when ``signed``, after ``body``."""
    opt_size = 240 if pe32plus else 224
    head = bytearray(PE_AT + 24 + opt_size)
    head[:2] = b"MZ"
    struct.pack_into("<I", head, 0x3C, PE_AT)
    head[PE_AT:PE_AT + 4] = b"PE\0\0"
    opt = PE_AT + 24
    struct.pack_into("<H", head, opt, 0x20B if pe32plus else 0x10B)
    dirs = opt + (112 if pe32plus else 96)
    struct.pack_into("<I", head, dirs - 4, 16)
    data = bytes(head) + body
    if signed:
        cert = struct.pack("<IHH", 8 + 32, 0x0200, 0x0002) + b"\x30" * 32
        struct.pack_into("<II", head, dirs + 4 * 8, len(data), len(cert))
        data = bytes(head) + body + cert
    return data


def put(root: Path, inside: str, data: bytes) -> Path:
    path = root / inside.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def debian_tree(root: Path, *, shim: bool = True, grub_signed: bool = True,
                kernel_signed: bool = True) -> Path:
    if shim:
        put(root, "/usr/lib/shim/shimx64.efi.signed", pe(signed=True, body=b"shim"))
        put(root, "/usr/lib/shim/mmx64.efi.signed", pe(signed=True, body=b"mokmanager"))
    put(root, "/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed",
        pe(signed=grub_signed, body=b"\0/EFI/debian\0\0prefix"))
    return put(root, "/boot/vmlinuz-6.1.0-50-amd64", pe(signed=kernel_signed, body=b"kernel"))


def test_an_authenticode_signature_is_seen_in_pe32_and_pe32_plus() -> None:
    assert pe_signed(pe(signed=True))
    assert pe_signed(pe(signed=True, pe32plus=False))
    assert not pe_signed(pe(signed=False))
    assert not pe_signed(b"MZ" + b"\0" * 10)
    assert not pe_signed(b"\x7fELF" + b"\0" * 400)
    signed = pe(signed=True)
    # The table pointing past the end of the file, or a certificate of another type.
    assert not pe_signed(signed[:-1])
    other = bytearray(signed)
    struct.pack_into("<H", other, len(signed) - 40 + 6, 0x0001)
    assert not pe_signed(bytes(other))


def test_the_prefix_built_into_grub_names_its_config_directory() -> None:
    assert grub_prefixes(b"xx\0/EFI/debian\0yy/EFI/debian\0") == ("debian",)
    assert grub_prefixes(b"/EFI/fedora\0") == ("fedora",)
    assert grub_prefixes(b"/EFI/../etc\0/EFI/\0") == ()


def test_debian_layout_shim_as_the_loader_grub_beside_it_config_at_its_prefix(
        tmp_path: Path) -> None:
    kernel = debian_tree(tmp_path)
    sb = secureboot.plan(SecureBootMode.AUTO, [tmp_path], kernel)
    assert sb.capable and sb.reasons == ()
    assert dict(sb.files) == {
        "/EFI/BOOT/BOOTX64.EFI": tmp_path / "usr/lib/shim/shimx64.efi.signed",
        "/EFI/BOOT/grubx64.efi": tmp_path / "usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed",
        "/EFI/BOOT/mmx64.efi": tmp_path / "usr/lib/shim/mmx64.efi.signed",
    }
    assert sb.configs == ("/EFI/debian/grub.cfg", "/EFI/BOOT/grub.cfg")
    assert "shim" in sb.summary() and "signed kernel" in sb.summary()


def test_fedora_layout_from_its_esp_directory(tmp_path: Path) -> None:
    put(tmp_path, "/boot/efi/EFI/fedora/shimx64.efi", pe(signed=True))
    put(tmp_path, "/boot/efi/EFI/fedora/grubx64.efi", pe(signed=True, body=b"/EFI/fedora\0"))
    kernel = put(tmp_path, "/lib/modules/6.11.4-301.fc41.x86_64/vmlinuz", pe(signed=True))
    sb = secureboot.plan(SecureBootMode.AUTO, [tmp_path], kernel)
    assert sb.capable
    assert [p for p, _ in sb.files] == ["/EFI/BOOT/BOOTX64.EFI", "/EFI/BOOT/grubx64.efi"]
    assert sb.configs == ("/EFI/fedora/grub.cfg", "/EFI/BOOT/grub.cfg")


def test_the_kernel_tree_comes_first(tmp_path: Path) -> None:
    kroot, sysroot = tmp_path / "k", tmp_path / "s"
    kernel = debian_tree(kroot)
    debian_tree(sysroot)
    sb = secureboot.plan(SecureBootMode.AUTO, [kroot, sysroot], kernel)
    assert all(host.is_relative_to(kroot) for _, host in sb.files)
    # Parts only in the second tree are taken from there.
    only_sys = tmp_path / "k2"
    kernel2 = put(only_sys, "/boot/vmlinuz-1", pe(signed=True))
    sb2 = secureboot.plan(SecureBootMode.AUTO, [only_sys, sysroot], kernel2)
    assert sb2.capable and all(host.is_relative_to(sysroot) for _, host in sb2.files)


@pytest.mark.parametrize(("tree", "reason"), [
    ({"shim": False}, "no signed shim"),
    ({"grub_signed": False}, "GRUB at /usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed "
                             "carries no signature"),
    ({"kernel_signed": False}, "the kernel vmlinuz-6.1.0-50-amd64 is not signed"),
])
def test_what_is_missing_is_said(tmp_path: Path, tree: dict[str, bool], reason: str) -> None:
    kernel = debian_tree(tmp_path, **tree)
    sb = secureboot.plan(SecureBootMode.AUTO, [tmp_path], kernel)
    assert not sb.capable and sb.files == ()
    assert any(reason in r for r in sb.reasons), sb.reasons
    assert sb.summary().startswith("will not boot with Secure Boot on")
    secureboot.check(SecureBootMode.AUTO, sb)  # auto builds the unsigned path
    with pytest.raises(PreconditionFailed, match=reason):
        secureboot.check(SecureBootMode.REQUIRED, sb)


def test_no_parts_names_the_packages(tmp_path: Path) -> None:
    kernel = put(tmp_path, "/boot/vmlinuz-1", pe(signed=True))
    sb = secureboot.plan(SecureBootMode.AUTO, [tmp_path], kernel)
    assert not sb.capable
    assert sb.reasons == (f"no signed shim nor GRUB in {tmp_path} (install {secureboot.PACKAGES})",)
    assert "shim-signed and grub-efi-amd64-signed" in sb.reasons[0]


def test_off_never_uses_the_signed_chain(tmp_path: Path) -> None:
    kernel = debian_tree(tmp_path)
    sb = secureboot.plan(SecureBootMode.OFF, [tmp_path], kernel)
    assert not sb.capable and sb.files == () and sb.reasons == ("--secure-boot off",)


def test_the_esp_config_finds_this_very_iso_and_reads_its_menu() -> None:
    cfg = esp_config("/resurgo/20261207T083000Z-0011aabb.id")
    assert "search --no-floppy --file --set=root /resurgo/20261207T083000Z-0011aabb.id\n" in cfg
    assert "set prefix=($root)/boot/grub\nconfigfile $prefix/grub.cfg\n" in cfg
    assert "insmod" not in cfg  # the signed GRUB loads no module from disk


def test_the_esp_holds_what_the_plan_says(tmp_path: Path) -> None:
    kernel = debian_tree(tmp_path / "tree")
    sb = secureboot.plan(SecureBootMode.AUTO, [tmp_path / "tree"], kernel)
    esp = tmp_path / "esp.img"
    secureboot.make_esp(sb, esp, config=esp_config("/x.id"))
    assert esp.stat().st_size % (1 << 20) == 0
    for inside, host in sb.files:
        got = subprocess.run(["mtype", "-i", str(esp), f"::{inside}"], capture_output=True,
                             check=True).stdout
        assert got == host.read_bytes(), inside
    for inside in sb.configs:
        got = subprocess.run(["mtype", "-i", str(esp), f"::{inside}"], capture_output=True,
                             check=True).stdout
        assert got.decode() == esp_config("/x.id")
    assert not list(tmp_path.glob("esp.img.*"))


def test_the_option_is_checked() -> None:
    result = run("rescue", "--to", "/tmp/x.iso", "--secure-boot", "maybe")
    assert result.returncode == 2
