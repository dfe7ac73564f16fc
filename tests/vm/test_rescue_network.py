"""Sets on SFTP and on S3 recovered unattended by the rescue (vm tier).

The run's ``kernel_root`` image (this host's programs, among them ssh and no DHCP client,
the tree's kernel) boots its kernel and initramfs directly, with a NIC on qemu's user
network, a blank target disk, and a key medium (ext4 "keys") holding the credentials
(``ssh-key``, ``s3-credentials``). The set (the shared description, signed by the key the
image trusts) lives on a real server that listens on 127.0.0.1 alone (sshd, SeaweedFS's
S3): the guest reaches it as 10.0.2.2, which qemu's user network turns into a connection
to the host's loopback (nothing leaves the machine). What a build writes into the image
for the medium (the pinned host key /etc/resurgo/known_hosts; rescue.json's medium table
with the S3 endpoint) is added in a second initramfs archive the kernel unpacks over the
image's.

Checked: the rescue gets an address by DHCP (its own client), takes the credentials from
the key medium, lists the sets (SFTP against the pinned key), and runs recover on the set
with the same options (layout only); the target then holds the saved layout.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from resurgo.media import MediumOptions
from resurgo.rescue.access import ImageAccess, credentials_file
from tests.support.media_servers import ACCESS_KEY, SECRET_KEY, Sshd
from tests.vm import guest
from tests.vm.network_sets import (
    GUEST_HOST,
    check_recovered,
    key_medium,
    overlaid_initrd,
    seaweed_server,
    sshd_server,
    write_set,
)
from tests.vm.rescue_images import TARGET_SIZE, Keys, direct_boot
from tests.vm.test_rescue import BOOT_TIMEOUT

pytestmark = pytest.mark.vm


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[Sshd]:
    with sshd_server(tmp_path) as server:
        yield server


def recover_from(url: str, set_id: str, files: Path, tmp_path: Path, *,
                 secrets: dict[str, bytes], extra: dict[str, bytes], what: str) -> list[str]:
    """Boot the rescue on ``url`` with a key medium holding ``secrets``; its lines, once
    it recovered the layout and powered off."""
    keys_img = key_medium(tmp_path, secrets)
    args = direct_boot(files, [
        "resurgo.recover=auto", "resurgo.after=poweroff", f"resurgo.from={url}",
        f"resurgo.set={set_id}", "resurgo.keys=LABEL=keys",
        "resurgo.args=--layout-only --root /mnt/rescued"])
    args[args.index("-initrd") + 1] = str(
        overlaid_initrd(files / "boot/initrd.img", extra, tmp_path / "initrd"))
    target = guest.blank_disk(tmp_path / "target.img", TARGET_SIZE)
    result = guest.boot(
        guest.Drive(target, serial="target"),
        [guest.Drive(keys_img, serial="keys")],
        timeout=BOOT_TIMEOUT,
        serial_log=tmp_path / "serial.log",
        extra_args=[*args, "-nic", "user,model=virtio-net-pci"],
    )
    return check_recovered(result, set_id, target, what)


def test_a_set_on_sftp_is_recovered_with_the_key_medium(
    kernel_root_files: Path, desc_file: Path, keys: Keys, sshd: Sshd, tmp_path: Path
) -> None:
    sets = sshd.root / "sets"
    sets.mkdir()
    set_id = write_set(sshd.url(sets), MediumOptions(ssh=sshd.options()), desc_file, keys)
    host_key = sshd.host_key_line.replace("[127.0.0.1]", f"[{GUEST_HOST}]", 1)
    url = f"sftp://{sshd.user}@{GUEST_HOST}:{sshd.port}{sets}"
    lines = recover_from(url, set_id, kernel_root_files, tmp_path,
                         secrets={"ssh-key": sshd.key.read_bytes()},
                         extra={"etc/resurgo/known_hosts": (host_key + "\n").encode()},
                         what="SFTP over the user network, key medium")
    detail = "\n".join(lines)
    assert "ssh-key: from the key medium (/run/resurgo/keys/ssh-key)" in lines, detail
    assert any(
        x.startswith(f"+ resurgo recover --from {url} --set {set_id} --ssh-key "
                     "/run/resurgo/credentials/ssh-key --ssh-known-hosts "
                     "/etc/resurgo/known_hosts --ssh-strict-host-keys --yes")
        for x in lines), detail


def test_a_set_on_s3_is_recovered_with_the_key_medium(
    kernel_root_files: Path, desc_file: Path, keys: Keys, tmp_path: Path
) -> None:
    with seaweed_server(tmp_path, "sets") as server:
        set_id = write_set("s3://sets/rescued", MediumOptions(
            s3_endpoint=server.endpoint, s3_insecure_http=True), desc_file, keys,
            environ=server.environ())
        endpoint = f"http://{GUEST_HOST}:{server.port}"
        config = json.loads((kernel_root_files / "resurgo/rescue.json").read_text())
        config["medium"] = ImageAccess(s3_endpoint=endpoint, s3_region="us-east-1",
                                       s3_insecure_http=True).config()
        creds = credentials_file(ACCESS_KEY, SECRET_KEY, None)
        lines = recover_from(
            "s3://sets/rescued", set_id, kernel_root_files, tmp_path,
            secrets={"s3-credentials": creds},
            extra={"etc/resurgo/rescue.json": json.dumps(config).encode()},
            what="S3 over the user network, key medium")
    detail = "\n".join(lines)
    assert "s3-credentials: from the key medium (/run/resurgo/keys/s3-credentials)" in lines, \
        detail
    assert any(
        x.startswith(f"+ resurgo recover --from s3://sets/rescued --set {set_id} "
                     f"--s3-endpoint {endpoint} --s3-region us-east-1 --s3-insecure-http --yes")
        for x in lines), detail
