"""A set on an SFTP server recovered unattended by the rescue (vm tier).

The run's ``kernel_root`` image (this host's programs, among them ssh and no DHCP client,
the tree's kernel) boots its kernel and initramfs directly, with a NIC on qemu's user
network, a blank target disk, and a key medium (ext4 "keys") holding ``ssh-key``. The set
(the shared description, signed by the key the image trusts) lives on a real sshd that
listens on 127.0.0.1 alone: the guest reaches it as 10.0.2.2, which qemu's user network
turns into a connection to the host's loopback (nothing leaves the machine). The server's
host key is pinned as a build puts it in the image: /etc/resurgo/known_hosts, here in a
second initramfs archive the kernel unpacks over the image's.

Checked: the rescue gets an address by DHCP (its own client), takes the SSH key from the
key medium, lists the server's sets against the pinned key, and runs recover on the set
with the key and the pin (layout only); the target then holds the saved layout.
"""

from __future__ import annotations

import io
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from resurgo.media import MediumOptions, SetKind, SetMeta, open_medium
from resurgo.rescue import cpio
from tests.support.media_servers import Sshd
from tests.vm import guest
from tests.vm.rescue_images import HOST, TARGET_SIZE, Keys, direct_boot, rescue_lines
from tests.vm.test_rescue import BOOT_TIMEOUT, MiB, check_target, report_boot

pytestmark = pytest.mark.vm

GUEST_HOST = "10.0.2.2"


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[Sshd]:
    (tmp_path / "sshd").mkdir()
    server = Sshd(tmp_path / "sshd")
    try:
        yield server
    finally:
        server.close()


def pinned_initrd(files: Path, host_key_line: str, out: Path) -> Path:
    """The image's initramfs with /etc/resurgo/known_hosts added after it (as a build
    with the server's key writes it)."""
    buf = io.BytesIO()
    w = cpio.Writer(buf)
    w.ensure_dirs("etc/resurgo/known_hosts")
    w.add(cpio.Entry.file("etc/resurgo/known_hosts", (host_key_line + "\n").encode()))
    w.close()
    with out.open("wb") as dst:
        with (files / "boot/initrd.img").open("rb") as src:
            shutil.copyfileobj(src, dst)
        dst.write(b"\0" * (-dst.tell() % 4) + buf.getvalue())
    return out


def test_a_set_on_sftp_is_recovered_with_the_key_medium(
    kernel_root_files: Path, desc_file: Path, keys: Keys, sshd: Sshd, tmp_path: Path
) -> None:
    sets = sshd.root / "sets"
    sets.mkdir()
    with (
        open_medium(sshd.url(sets), MediumOptions(ssh=sshd.options())) as medium,
        medium.begin_set(SetMeta(SetKind.FULL, host=HOST), sign_key=keys.trusted) as w,
    ):
        w.write_bytes("description.toml", desc_file.read_bytes())
        w.write_bytes("description.toml.sha256",
                      (desc_file.parent / "description.toml.sha256").read_bytes())
        set_id = w.commit().id
    key_dir = tmp_path / "keys"
    key_dir.mkdir()
    shutil.copyfile(sshd.key, key_dir / "ssh-key")
    keys_img = guest.blank_disk(tmp_path / "keys.img", 16 * MiB)
    guest.run_cmd(["mkfs.ext4", "-q", "-F", "-L", "keys", "-E", "root_owner=0:0", "-d",
                   key_dir, keys_img])
    host_key = sshd.host_key_line.replace("[127.0.0.1]", f"[{GUEST_HOST}]", 1)
    initrd = pinned_initrd(kernel_root_files, host_key, tmp_path / "initrd.img")
    url = f"sftp://{sshd.user}@{GUEST_HOST}:{sshd.port}{sets}"
    args = direct_boot(kernel_root_files, [
        "resurgo.recover=auto", "resurgo.after=poweroff", f"resurgo.from={url}",
        f"resurgo.set={set_id}", "resurgo.keys=LABEL=keys",
        "resurgo.args=--layout-only --root /mnt/rescued"])
    args[args.index("-initrd") + 1] = str(initrd)
    target = guest.blank_disk(tmp_path / "target.img", TARGET_SIZE)
    result = guest.boot(
        guest.Drive(target, serial="target"),
        [guest.Drive(keys_img, serial="keys")],
        timeout=BOOT_TIMEOUT,
        serial_log=tmp_path / "serial.log",
        extra_args=[*args, "-nic", "user,model=virtio-net-pci"],
    )
    report_boot("SFTP over the user network, key medium", result)
    lines = rescue_lines(result.text)
    detail = "\n".join(lines) or guest._tail(result.text, 60)
    assert not result.timed_out and result.returncode == 0, detail
    assert any(x.endswith("from DHCP server 10.0.2.2, lease 86400 s") for x in lines), detail
    assert "ssh-key: from the key medium (/run/resurgo/keys/ssh-key)" in lines, detail
    assert any(x.startswith("recovery set:") and set_id in x for x in lines), detail
    assert any(
        x.startswith(f"+ resurgo recover --from {url} --set {set_id} --ssh-key "
                     "/run/resurgo/credentials/ssh-key --ssh-known-hosts "
                     "/etc/resurgo/known_hosts --ssh-strict-host-keys --yes")
        for x in lines), detail
    assert "recovery finished: ok" in lines, detail
    assert lines[-1] == "poweroff now", detail
    check_target(target)
