"""What a rehearsal hands the rescue of a set on SFTP, S3, NFS or CIFS (rehearse.network):
the URL and the pinned host key for the name the guest uses, the S3 endpoint, the NFS
version, the key disk's secrets (the CIFS credentials among them),
the initramfs overlay; and what it refuses (exit 3). Also the consoles' dead ends, which
end a boot that will say nothing more (rehearse.console)."""

from __future__ import annotations

import io
import json
import os
import re
import stat
import subprocess
import time
from pathlib import Path

import pytest

from resurgo.errors import BadInput, ExitCode, PreconditionFailed
from resurgo.media import MediumOptions, SshOptions
from resurgo.media.share import ShareOptions
from resurgo.media.url import CifsSpec, NfsSpec, S3Spec, SftpSpec, parse_url
from resurgo.model import Firmware
from resurgo.rehearse import console, network
from resurgo.rehearse.console import _Pump
from resurgo.rehearse.machine import Accel, Bus, Drive, Machine, qemu_argv
from resurgo.rehearse.rescueboot import command_line
from resurgo.rehearse.timeline import BootRun, boot_failure, rescue_failure
from resurgo.rescue import cpio
from resurgo.rescue.access import credentials_file

KEY = "AAAAC3NzaC1lZDI1NTE5AAAAIMt3ZbqDn5Ld3Jk0o9Q0mCqGq8pQy1yq8s3v0m6j4x9K"
SET = "20261207T020000Z-ab12"


def sftp(url: str) -> SftpSpec:
    spec = parse_url(url)
    assert isinstance(spec, SftpSpec)
    return spec


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "LOCALHOST.", "::1", "[::1]",
                                  "::ffff:127.0.0.1"])
def test_the_hosts_loopback_is_10_0_2_2_for_the_guest(host: str) -> None:
    assert network.guest_host(host) == "10.0.2.2"


@pytest.mark.parametrize("host", ["192.0.2.10", "backup.example.org", "2001:db8::1",
                                  "localhost.example.org"])
def test_other_hosts_stay_as_they_are(host: str) -> None:
    assert network.guest_host(host) == host


@pytest.mark.parametrize("host", ["127.0.0.2", "127.1.2.3", "::ffff:127.0.0.2"])
def test_another_loopback_address_cannot_be_reached(host: str) -> None:
    with pytest.raises(PreconditionFailed):
        network.guest_host(host)


def test_the_sftp_url_the_rescue_opens() -> None:
    assert network.guest_url(sftp("sftp://backup@127.0.0.1:2222/srv/sets")) == \
        "sftp://backup@10.0.2.2:2222/srv/sets"
    # The port the host used (--ssh-port) is written out: the rescue has no other.
    assert network.guest_url(sftp("sftp://localhost/srv/sets"), ssh_port=2200) == \
        "sftp://10.0.2.2:2200/srv/sets"
    assert network.guest_url(sftp("sftp://[::1]/~/sets")) == "sftp://10.0.2.2/~/sets"
    assert network.guest_url(sftp("sftp://u@backup.example.org/srv")) == \
        "sftp://u@backup.example.org/srv"
    s3 = parse_url("s3://bucket/rescued")
    assert isinstance(s3, S3Spec)
    assert network.guest_url(s3) == "s3://bucket/rescued"


@pytest.mark.parametrize(("url", "guest"), [
    ("nfs://127.0.0.1/srv/sets", "nfs://10.0.2.2/srv/sets"),
    ("nfs://[::1]:2050/srv/my%20sets", "nfs://10.0.2.2:2050/srv/my%20sets"),
    ("nfs://nas.example.org/export", "nfs://nas.example.org/export"),
    ("cifs://backup@localhost:4450/sets/resurgo", "cifs://backup@10.0.2.2:4450/sets/resurgo"),
    ("cifs://127.0.0.1/sets", "cifs://10.0.2.2/sets"),
    ("cifs://nas.example.org/sets/a", "cifs://nas.example.org/sets/a"),
])
def test_the_share_url_the_rescue_opens(url: str, guest: str) -> None:
    spec = parse_url(url)
    assert isinstance(spec, NfsSpec | CifsSpec)
    assert network.is_network(url)
    assert network.guest_url(spec) == guest
    # Only the host changed: share, path, user, port as the host's.
    assert {**parse_url(guest).__dict__, "host": spec.host} == spec.__dict__


def test_a_share_on_another_loopback_address_is_refused() -> None:
    spec = parse_url("nfs://127.0.0.2/srv/sets")
    assert isinstance(spec, NfsSpec)
    with pytest.raises(PreconditionFailed):
        network.guest_url(spec)


def test_an_nfs_plan_hands_the_hosts_version_and_no_secret(tmp_path: Path) -> None:
    reach = network.plan("nfs://localhost/srv/sets", MediumOptions(
        share=ShareOptions(nfs_version="4.1")), None, environ={}, home=tmp_path)
    assert reach.url == "nfs://10.0.2.2/srv/sets"
    assert dict(reach.secrets) == {} and dict(reach.overlay) == {}
    assert reach.medium_table is not None
    assert reach.medium_table["nfs_version"] == "4.1"
    assert reach.medium_table["nfs_mount_port"] is None
    assert reach.describe() == "nfs://10.0.2.2/srv/sets over qemu's user network"
    files = network.overlay_files(reach, {"build_id": "b1", "medium": {"nfs_version": "3"}})
    assert json.loads(files["etc/resurgo/rescue.json"])["medium"]["nfs_version"] == "4.1"


def test_a_cifs_plan_hands_the_hosts_credentials(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.write_text("# the sets' account\nuser=backup\npassword= a,b=c \n")
    creds.chmod(0o600)
    reach = network.plan("cifs://127.0.0.1/sets/resurgo", MediumOptions(
        share=ShareOptions(cifs_credentials=creds)), None, environ={}, home=tmp_path)
    assert reach.url == "cifs://10.0.2.2/sets/resurgo"
    assert dict(reach.secrets) == {"cifs-credentials": b"username=backup\npassword= a,b=c \n"}
    assert reach.medium_table is None and dict(reach.overlay) == {}
    assert "a,b=c" not in repr(reach)
    assert reach.describe().endswith("cifs-credentials on a key disk")
    # Others may read the file: as the host's own mount, refused (exit 2).
    creds.chmod(0o644)
    with pytest.raises(BadInput):
        network.plan("cifs://127.0.0.1/sets/resurgo", MediumOptions(
            share=ShareOptions(cifs_credentials=creds)), None, environ={}, home=tmp_path)


def test_a_url_the_kernel_command_line_cannot_carry_is_refused() -> None:
    with pytest.raises(PreconditionFailed):
        network.guest_url(SftpSpec("127.0.0.1", "/srv/my sets"))
    with pytest.raises(PreconditionFailed):
        network.guest_url(SftpSpec("127.0.0.1", "/srv/" + "x" * network.MAX_URL))
    with pytest.raises(PreconditionFailed):
        network.guest_url(SftpSpec("127.0.0.1", '/srv/"quoted"'))


def test_the_verified_host_key_is_pinned_for_the_name_the_rescue_uses() -> None:
    line = network.known_hosts_line(f"[127.0.0.1]:2222 ssh-ed25519 {KEY}\n",
                                    sftp("sftp://u@127.0.0.1:2222/s"))
    assert line == f"[10.0.2.2]:2222 ssh-ed25519 {KEY}\n"
    # Port 22: the bare name, as ssh looks it up.
    assert network.known_hosts_line(f"localhost ssh-ed25519 {KEY}",
                                    sftp("sftp://localhost/s")) == f"10.0.2.2 ssh-ed25519 {KEY}\n"
    assert network.known_hosts_line(f"backup.example.org ssh-rsa {KEY}",
                                    sftp("sftp://backup.example.org/s")) == \
        f"backup.example.org ssh-rsa {KEY}\n"
    assert network.known_hosts_line(f"[2001:db8::1]:22 ssh-ed25519 {KEY}",
                                    sftp("sftp://[2001:db8::1]/s")) == \
        f"[2001:db8::1]:22 ssh-ed25519 {KEY}\n"


@pytest.mark.parametrize("recorded", [
    "", "garbage", f"@revoked [127.0.0.1]:2222 ssh-ed25519 {KEY}",
    f"[127.0.0.1]:2222 ssh-ed25519 {KEY}\n10.0.2.2 ssh-rsa {KEY}",
    f"[127.0.0.1]:2222 ssh-ed25519 {KEY} comment", "[127.0.0.1]:2222 ssh-ed25519 not/base64!",
])
def test_a_recorded_key_that_is_no_plain_line_is_refused(recorded: str) -> None:
    with pytest.raises(PreconditionFailed):
        network.known_hosts_line(recorded, sftp("sftp://u@127.0.0.1:2222/s"))


def test_the_s3_endpoint_the_rescue_reaches() -> None:
    assert network.guest_endpoint("http://127.0.0.1:8333") == "http://10.0.2.2:8333"
    assert network.guest_endpoint("http://localhost") == "http://10.0.2.2"
    assert network.guest_endpoint("https://s3.example.org") == "https://s3.example.org"
    with pytest.raises(PreconditionFailed) as e:
        network.guest_endpoint("https://localhost:9000")
    assert "certificate" in e.value.message


def _key(tmp_path: Path, name: str, passphrase: str = "") -> Path:
    path = tmp_path / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", "", "-f",
                    str(path)], check=True)
    return path


def test_the_ssh_key_must_be_a_file_usable_without_passphrase(tmp_path: Path) -> None:
    good = _key(tmp_path, "good")
    assert network.ssh_key(str(good)) == good.read_bytes()
    with pytest.raises(PreconditionFailed) as e:
        network.ssh_key(None)
    assert "--ssh-key" in (e.value.hint or "")
    with pytest.raises(PreconditionFailed) as e:
        network.ssh_key(str(_key(tmp_path, "locked", "secret words")))
    assert "passphrase" in e.value.message
    with pytest.raises(PreconditionFailed):
        network.ssh_key(str(tmp_path / "missing"))
    os.symlink(good, tmp_path / "link")
    with pytest.raises(PreconditionFailed):
        network.ssh_key(str(tmp_path / "link"))


def test_an_sftp_plan(tmp_path: Path) -> None:
    key = _key(tmp_path, "id")
    reach = network.plan("sftp://backup@127.0.0.1:2222/srv/sets",
                         MediumOptions(ssh=SshOptions(identity=str(key))),
                         f"[127.0.0.1]:2222 ssh-ed25519 {KEY}\n", environ={}, home=tmp_path)
    assert reach.url == "sftp://backup@10.0.2.2:2222/srv/sets"
    assert dict(reach.secrets) == {"ssh-key": key.read_bytes()}
    assert dict(reach.overlay) == {
        "etc/resurgo/known_hosts": f"[10.0.2.2]:2222 ssh-ed25519 {KEY}\n".encode()}
    assert reach.medium_table is None
    assert "ssh-key on a key disk" in reach.describe()
    assert key.read_text() not in repr(reach)
    with pytest.raises(PreconditionFailed):
        network.plan("sftp://backup@127.0.0.1:2222/srv/sets",
                     MediumOptions(ssh=SshOptions(identity=str(key))), None, environ={},
                     home=tmp_path)


def test_an_s3_plan_takes_the_hosts_endpoint_and_credentials(tmp_path: Path) -> None:
    environ = {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "s3cr3t"}
    options = MediumOptions(s3_endpoint="http://127.0.0.1:8333", s3_insecure_http=True)
    reach = network.plan("s3://sets/rescued", options, None, environ=environ, home=tmp_path)
    assert reach.url == "s3://sets/rescued"
    assert dict(reach.secrets) == {"s3-credentials": credentials_file("AKIDEXAMPLE",
                                                                      "s3cr3t", None)}
    assert reach.medium_table is not None
    assert reach.medium_table["s3_endpoint"] == "http://10.0.2.2:8333"
    assert reach.medium_table["s3_insecure_http"] is True
    assert reach.medium_table["embedded_credentials"] == []
    # The image's configuration kept, its medium table replaced.
    files = network.overlay_files(reach, {"build_id": "b1", "medium": {"s3_endpoint": "x"}})
    config = json.loads(files["etc/resurgo/rescue.json"])
    assert config["build_id"] == "b1" and config["medium"] == dict(reach.medium_table)
    assert "s3cr3t" not in files["etc/resurgo/rescue.json"].decode()
    with pytest.raises(BadInput):
        network.overlay_files(reach, None)
    # No credentials on the host: nothing to hand on.
    with pytest.raises(PreconditionFailed) as e:
        network.plan("s3://sets/rescued", options, None, environ={}, home=tmp_path)
    assert e.value.exit_code == ExitCode.PRECONDITION
    with pytest.raises(PreconditionFailed):
        network.plan("s3://sets/rescued", MediumOptions(
            s3_endpoint="https://localhost:9000"), None, environ=environ, home=tmp_path)


@pytest.mark.parametrize("raw", [b"", b"[1]", b"{", b"\xff\xfe",
                                 b'{"a": "' + b"x" * network.MAX_CONFIG + b'"}'])
def test_a_rescue_json_that_is_no_object_is_refused(raw: bytes) -> None:
    with pytest.raises(BadInput):
        network.rescue_config(raw)


def test_the_overlay_is_one_more_archive_after_the_images_own(tmp_path: Path) -> None:
    initrd = tmp_path / "initrd.img"
    first = io.BytesIO()
    cpio.write(first, [cpio.Entry.file("init", b"#!/bin/sh\n", 0o755)])
    initrd.write_bytes(first.getvalue() + b"odd")  # a length that is no multiple of 4
    network.append_overlay(initrd, {"etc/resurgo/known_hosts": b"10.0.2.2 ssh-ed25519 K\n"})
    data = initrd.read_bytes()
    start = len(first.getvalue()) + 4
    assert data[start - 1:start] == b"\0"
    entries = {e.name: e for e in cpio.read(data[start:])}
    assert entries["etc/resurgo/known_hosts"].data == b"10.0.2.2 ssh-ed25519 K\n"
    assert {"etc", "etc/resurgo"} <= set(entries)
    before = initrd.read_bytes()
    network.append_overlay(initrd, {})
    assert initrd.read_bytes() == before


def _debugfs(image: Path, request: str) -> str:
    return subprocess.run(["debugfs", "-R", request, str(image)], check=True,
                          capture_output=True, text=True).stdout


def test_the_key_disk_holds_the_secrets_alone_0600(tmp_path: Path) -> None:
    image = network.key_disk(tmp_path / "keys", tmp_path / "keys.img",
                             {"ssh-key": b"PRIVATE KEY\n"})
    assert not (tmp_path / "keys").exists()  # the staging is gone at once
    assert stat.S_IMODE(image.stat().st_mode) == 0o600
    label = subprocess.run(["e2label", str(image)], check=True, capture_output=True,
                           text=True).stdout.strip()
    assert label == network.KEYS_LABEL
    assert _debugfs(image, "cat /ssh-key") == "PRIVATE KEY\n"
    names = set(_debugfs(image, "ls -l /").split())
    assert "ssh-key" in names and "s3-credentials" not in names
    assert re.search(r"Mode: +0600 ", _debugfs(image, "stat /ssh-key"))
    # Made anew only: an image of that name already there is not written through.
    with pytest.raises(Exception):  # noqa: B017 - OperationFailed, before anything
        network.key_disk(tmp_path / "keys", image, {"ssh-key": b"other"})


def test_the_rescues_words_for_a_network_medium() -> None:
    line = command_line(("quiet", "resurgo.keys=LABEL=theirs", "ip=192.0.2.5::192.0.2.1:24::"
                         "eth0:none"), SET, accel=Accel.TCG, medium_label=None,
                        from_url="sftp://u@10.0.2.2:2222/srv", keys_label=network.KEYS_LABEL)
    words = line.split()
    assert "resurgo.from=sftp://u@10.0.2.2:2222/srv" in words
    assert "resurgo.keys=LABEL=resurgo-keys" in words
    assert "resurgo.keys=LABEL=theirs" not in words
    assert not any(w.startswith(("ip=", "resurgo.from=LABEL")) for w in words)
    with pytest.raises(BadInput):
        command_line((), SET, accel=Accel.TCG, medium_label=None, from_url="s3://a b")


def test_only_the_rescues_machine_has_a_nic() -> None:
    drives = (Drive(Path("/w/disk0.img"), "rehearse-0"),)
    first_boot = Machine(Accel.TCG, Firmware.BIOS, Bus.VIRTIO, 2048, 2, drives)
    argv = qemu_argv(first_boot)
    assert argv[argv.index("-nic") + 1] == "none" and argv.count("-nic") == 1
    rescue = Machine(**{**first_boot.__dict__, "network": True})
    argv = qemu_argv(rescue)
    assert argv[argv.index("-nic") + 1] == "user,model=virtio-net-pci"
    assert argv.count("-nic") == 1


# --- dead ends on a console --------------------------------------------------------------


def _pump(*chunks: bytes, dead_ends: tuple[str, ...] = console.DEAD_ENDS) -> _Pump:
    read, write = os.pipe()
    pump = _Pump(os.fdopen(read, "rb"), io.BytesIO(), time.monotonic(), dead_ends)
    pump.start()
    with os.fdopen(write, "wb", buffering=0) as w:
        for chunk in chunks:
            w.write(chunk)
            time.sleep(0.2)  # each chunk read apart, as a console's come
    pump.join(timeout=30)
    return pump


def test_a_panic_or_a_prompt_is_a_dead_end() -> None:
    panic = _pump(b"[    2.1] Run /init as init process\r\n[    2.2] Kernel panic - not "
                  b"syncing: Attempted to kill init! exitcode=0x00000100\r\n[ 2.3] CPU: 0\n")
    assert panic.dead_end is not None
    assert panic.dead_end[1].endswith("Attempted to kill init! exitcode=0x00000100")
    # A prompt has no line end: seen all the same.
    grub = _pump(b"error: file '/grub/i386-pc/normal.mod' not found.\r\ngrub rescue> ")
    assert grub.dead_end is not None and grub.dead_end[1] == "grub rescue>"
    shell = _pump(b"ALERT!  UUID=1234 does not exist.  Dropping to a shell!\r\n(initramfs) ")
    assert shell.dead_end is not None and "UUID=1234" in shell.dead_end[1]
    assert _pump(b"Welcome to Debian GNU/Linux 12 (bookworm)!\n").dead_end is None
    # The rescue watches for a panic alone.
    assert _pump(b"grub rescue> \n", dead_ends=console.RESCUE_DEAD_ENDS).dead_end is None
    # A line that came in pieces is shown whole, timed by its first piece.
    split = _pump(b"[    9.13] Kernel panic - not syncing", b": VFS: Unable to mount root "
                  b"fs on unknown-block(0,0) ]---\n[    9.14] CPU: 0 PID: 1\n")
    assert split.dead_end is not None
    assert split.dead_end[1].endswith("Unable to mount root fs on unknown-block(0,0) ]---")


def test_a_dead_end_fails_the_boot_it_ends() -> None:
    dead = "Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)"
    checks, failure = boot_failure(BootRun((), 31.0, False, None, dead))
    assert checks == () and failure is not None and failure.step == "first boot"
    assert "cannot boot" in failure.reason and "Unable to mount root fs" in failure.reason
    rescue = rescue_failure(BootRun((), 12.0, False, None, dead))
    assert rescue is not None and rescue.step == "rescue boot" and "dead end" in rescue.reason
