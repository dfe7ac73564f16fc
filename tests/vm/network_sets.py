"""What the vm tests that recover a set over the network share (test_rescue_network.py,
test_netboot.py, test_rehearse.py): the servers on the host's loopback (a real sshd and
SeaweedFS's S3 on 127.0.0.1 alone, reached from a guest as GUEST_HOST, which qemu's user
network turns into a connection to the host's loopback: nothing leaves the machine), the
set written to a medium on one, the rescue's initramfs with what a build writes for that
medium, the key medium, and the checks of an unattended recovery from the network."""

from __future__ import annotations

import contextlib
import io
import shutil
from collections.abc import Iterator
from pathlib import Path

from resurgo.media import MediumOptions, SetKind, SetMeta, open_medium
from resurgo.rescue import cpio
from tests.support.media_servers import Seaweed, Sshd
from tests.vm import guest
from tests.vm.rescue_images import HOST, Keys, rescue_lines
from tests.vm.test_rescue import MiB, check_target, report_boot

#: The host's loopback as qemu's user network shows it to a guest.
GUEST_HOST = "10.0.2.2"


@contextlib.contextmanager
def sshd_server(base: Path) -> Iterator[Sshd]:
    """sshd on 127.0.0.1 (its files below ``base``/sshd, its root ``.root``), stopped
    however the test ends."""
    (base / "sshd").mkdir()
    server = Sshd(base / "sshd")
    try:
        yield server
    finally:
        server.close()


@contextlib.contextmanager
def seaweed_server(base: Path, *buckets: str) -> Iterator[Seaweed]:
    """SeaweedFS (S3 on 127.0.0.1, signatures checked) with ``buckets`` made; stopped and
    its data thrown away however the test ends."""
    (base / "weed").mkdir()
    server = Seaweed(base / "weed")
    try:
        for bucket in buckets:
            server.create_bucket(bucket)
        yield server
    finally:
        server.close()


def overlaid_initrd(initrd: Path, extra: dict[str, bytes], out: Path) -> Path:
    """``initrd`` with ``extra`` files (path in the image: content) unpacked after it, as
    a build writes them (the pinned host key, rescue.json's medium table)."""
    buf = io.BytesIO()
    w = cpio.Writer(buf)
    for path, data in extra.items():
        w.ensure_dirs(path)
        w.add(cpio.Entry.file(path, data))
    w.close()
    with out.open("wb") as dst:
        with initrd.open("rb") as src:
            shutil.copyfileobj(src, dst)
        dst.write(b"\0" * (-dst.tell() % 4) + buf.getvalue())
    return out


def write_set(url: str, options: MediumOptions, desc_file: Path, keys: Keys,
              environ: dict[str, str] | None = None) -> str:
    """A set of the shared description (host "rescued"), signed by the trusted key."""
    with (
        open_medium(url, options, environ=environ) as medium,
        medium.begin_set(SetMeta(SetKind.FULL, host=HOST), sign_key=keys.trusted) as w,
    ):
        w.write_bytes("description.toml", desc_file.read_bytes())
        w.write_bytes("description.toml.sha256",
                      (desc_file.parent / "description.toml.sha256").read_bytes())
        return w.commit().id


def key_medium(tmp_path: Path, secrets: dict[str, bytes]) -> Path:
    """An ext4 image labelled "keys" holding ``secrets`` (name: content)."""
    key_dir = tmp_path / "keys"
    key_dir.mkdir()
    for name, data in secrets.items():
        (key_dir / name).write_bytes(data)
    image = guest.blank_disk(tmp_path / "keys.img", 16 * MiB)
    guest.run_cmd(["mkfs.ext4", "-q", "-F", "-L", "keys", "-E", "root_owner=0:0", "-d",
                   key_dir, image])
    return image


def check_recovered(result: guest.BootResult, set_id: str, target: Path,
                    what: str) -> list[str]:
    """The rescue's lines, once it got an address by DHCP, took the set, recovered its
    layout onto ``target`` and powered off."""
    report_boot(what, result)
    lines = rescue_lines(result.text)
    detail = "\n".join(lines) or guest._tail(result.text, 60)
    assert not result.timed_out and result.returncode == 0, detail
    assert any(x.endswith("from DHCP server 10.0.2.2, lease 86400 s") for x in lines), detail
    assert any(x.startswith("recovery set:") and set_id in x for x in lines), detail
    assert "recovery finished: ok" in lines, detail
    assert lines[-1] == "poweroff now", detail
    check_target(target)
    return lines
