"""Sets on NFS and on CIFS: recovered unattended by the rescue, and written read-write
from inside a guest (vm tier: this host's kernel has neither client).

As test_rescue_network does for SFTP and S3 (network_sets.py's helpers): the run's
``kernel_root`` image boots its kernel and initramfs directly, with a NIC on qemu's user
network, a blank target disk and a key medium (ext4 "keys"). The servers run on the host,
on 127.0.0.1 alone (NFS-Ganesha, NFSv4 over TCP; Samba's smbd with one account whose
password holds a comma, a space and an "="); the guest reaches them as 10.0.2.2. The set
(the shared description, signed by the key the image trusts) is written into the
directory the server serves.

One boot per protocol checks both directions:

- the recovery: the rescue gets an address by DHCP, mounts the share read-only (the CIFS
  credentials from the key medium), lists and checks the set, and runs recover with the
  share's options (layout only); the target then holds the saved layout;
- the write: with resurgo.after=shell the rescue's login shell runs (the test's
  /etc/profile, added over the image's) a script that saves a set to a directory of the
  share that does not exist yet, the medium API save uses, mounted read-write; then,
  mounted read-only, lists it and is refused a write (EROFS); and shows that no share is
  left in the mount table. The host compares the set's file byte for byte.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from resurgo.media import MediumOptions, open_medium
from resurgo.rescue import layout
from resurgo.rescue.access import ImageAccess
from tests.support.share_servers import NFS_PSEUDO, SMB_SHARE, Ganesha, Smbd
from tests.vm import guest
from tests.vm.network_sets import key_medium, overlaid_initrd, write_set
from tests.vm.rescue_images import TARGET_SIZE, Keys, direct_boot, rescue_lines
from tests.vm.test_rescue import BOOT_TIMEOUT, check_target, report_boot
from tests.vm.test_rescue_network import GUEST_HOST

pytestmark = pytest.mark.vm

MARK = "SHARE-TEST"
#: What the guest saves: 1 MiB of every byte value (the host compares it).
PAYLOAD = bytes(range(256)) * 4096

# Run by the rescue's login shell once the agent is done (resurgo.after=shell): the
# image's Python and resurgo, as the agent runs them.
PROFILE = f"""export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root LANG=C.UTF-8 PYTHONPATH={layout.SITE_DIR}
PY=$(sed -n 's/^\\([^ ]*\\) -P -m resurgo.rescue.agent boot.*/\\1/p' /init)
"$PY" -P /root/share-test.py "$(cat /root/share-url)" 2>&1 | sed 's/^/{MARK} /'
echo "{MARK} mounts after: $(grep -c -E ' (nfs4?|cifs) ' /proc/self/mountinfo)"
poweroff
"""

SCRIPT = """
import hashlib, sys
from pathlib import Path
from resurgo.errors import ResurgoError
from resurgo.media import MediumOptions, SetKind, SetMeta, open_medium
from resurgo.media.share import ShareOptions

url = sys.argv[1]
creds = Path("/run/resurgo/credentials/cifs-credentials")
share = ShareOptions(cifs_credentials=creds if creds.exists() else None)
payload = bytes(range(256)) * 4096

def shares_mounted():
    return sum(1 for line in open("/proc/self/mountinfo")
               if " nfs " in line or " nfs4 " in line or " cifs " in line)

with open_medium(url, MediumOptions(share=share, writable=True)) as medium:
    with medium.begin_set(SetMeta(SetKind.FULL, host="guest")) as w:
        w.write_bytes("payload.bin", payload)
        print("saved", w.commit().id)
    print("mounts while open:", shares_mounted())
# Closed, the medium's mount is gone at once (not only when this process ends): the NFS
# client lists no volume any more.
volumes = Path("/proc/fs/nfsfs/volumes")
print("nfs volumes after close:",
      len(volumes.read_text().splitlines()) - 1 if volumes.exists() else "-")
with open_medium(url, MediumOptions(share=share)) as medium:
    infos = medium.list_sets()
    print("listed", " ".join(i.id for i in infos))
    with medium.open_set(infos[0].id).open("payload.bin") as f:
        print("read back", hashlib.sha256(f.read()).hexdigest())
    try:
        with medium.begin_set(SetMeta(SetKind.FULL, host="guest")) as w:
            w.write_bytes("x", b"x")
            w.commit()
        print("read-only: written")
    except ResurgoError as e:
        print("read-only: refused:", e.message)
try:
    open_medium(url + "-missing", MediumOptions(share=share))
    print("missing: opened")
except ResurgoError as e:
    print("missing: refused:", e.message)
"""


@pytest.fixture
def ganesha(tmp_path: Path) -> Iterator[Ganesha]:
    (tmp_path / "nfs").mkdir()
    server = Ganesha(tmp_path / "nfs")
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def smbd(tmp_path: Path) -> Iterator[Smbd]:
    (tmp_path / "smb").mkdir()
    server = Smbd(tmp_path / "smb")
    try:
        yield server
    finally:
        server.close()


def boot_rescue(url: str, write_url: str, set_id: str, files: Path, tmp_path: Path, *,
                secrets: dict[str, bytes], extra: dict[str, bytes], what: str) -> list[str]:
    """Boot the rescue on ``url`` with a key medium holding ``secrets``; it recovers,
    then its shell runs the write script on ``write_url`` and powers off. Its lines."""
    keys_img = key_medium(tmp_path, secrets)
    args = direct_boot(files, [
        "resurgo.recover=auto", "resurgo.after=shell", f"resurgo.from={url}",
        f"resurgo.set={set_id}", "resurgo.keys=LABEL=keys",
        "resurgo.args=--layout-only --root /mnt/rescued"])
    overlay = {**extra, "etc/profile": PROFILE.encode(),
               "root/share-test.py": SCRIPT.encode(), "root/share-url": write_url.encode()}
    args[args.index("-initrd") + 1] = str(
        overlaid_initrd(files / "boot/initrd.img", overlay, tmp_path / "initrd"))
    target = guest.blank_disk(tmp_path / "target.img", TARGET_SIZE)
    result = guest.boot(
        guest.Drive(target, serial="target"),
        [guest.Drive(keys_img, serial="keys")],
        timeout=BOOT_TIMEOUT,
        serial_log=tmp_path / "serial.log",
        extra_args=[*args, "-nic", "user,model=virtio-net-pci"],
    )
    report_boot(what, result)
    lines = rescue_lines(result.text)
    marks = [line.split(MARK, 1)[1].strip() for line in result.text.splitlines()
             if MARK + " " in line and "sed " not in line]
    detail = "\n".join(lines + marks) or guest._tail(result.text, 60)
    assert not result.timed_out and result.returncode == 0, detail
    assert any(x.endswith("from DHCP server 10.0.2.2, lease 86400 s") for x in lines), detail
    assert any(x.startswith("recovery set:") and set_id in x for x in lines), detail
    assert "recovery finished: ok" in lines, detail
    check_target(target)
    return lines + [f"{MARK} {m}" for m in marks]


def check_written(lines: list[str], served: Path) -> None:
    """The guest's save is on the server, whole; the read-only mount refused a write;
    nothing was left mounted."""
    detail = "\n".join(lines)
    marks = [x.removeprefix(MARK + " ") for x in lines if x.startswith(MARK + " ")]
    saved = [m.split()[1] for m in marks if m.startswith("saved ")]
    assert len(saved) == 1, detail
    assert f"listed {saved[0]}" in marks, detail
    assert f"read back {hashlib.sha256(PAYLOAD).hexdigest()}" in marks, detail
    assert any(m.startswith("read-only: refused:") and "Read-only file system" in m
               for m in marks), detail
    assert any(m.startswith("missing: refused:") for m in marks), detail
    assert "mounts while open: 0" in marks, detail  # detached: in no mount table
    assert "mounts after: 0" in marks, detail
    assert any(m in marks for m in ("nfs volumes after close: 0",
                                    "nfs volumes after close: -")), detail
    with open_medium(str(served), MediumOptions()) as medium:
        (info,) = medium.list_sets()
        assert info.id == saved[0] and info.host == "guest"
        reader = medium.open_set(info.id)
        reader.check()
        with reader.open("payload.bin") as f:
            assert f.read() == PAYLOAD


def test_a_set_on_nfs_is_recovered_and_a_guest_saves_to_nfs(
    kernel_root_files: Path, desc_file: Path, keys: Keys, ganesha: Ganesha, tmp_path: Path
) -> None:
    set_id = write_set(str(ganesha.root / "rescued"), MediumOptions(), desc_file, keys)
    base = f"nfs://{GUEST_HOST}:{ganesha.port}{NFS_PSEUDO}"
    config = json.loads((kernel_root_files / "resurgo/rescue.json").read_text())
    config["medium"] = ImageAccess(nfs_version="4.2").config()
    lines = boot_rescue(f"{base}/rescued", f"{base}/written", set_id, kernel_root_files,
                        tmp_path, secrets={},
                        extra={"etc/resurgo/rescue.json": json.dumps(config).encode()},
                        what="NFSv4 over the user network")
    detail = "\n".join(lines)
    assert any(x.startswith(f"+ resurgo recover --from {base}/rescued --set {set_id} "
                            "--nfs-version 4.2 --yes") for x in lines), detail
    check_written(lines, ganesha.root / "written")
    # Made by the guest as resurgo makes a medium's files: private, whatever the umask.
    for path in (ganesha.root / "written").rglob("*"):
        assert path.stat().st_mode & 0o077 == 0, path


def test_a_set_on_cifs_is_recovered_with_the_key_medium_and_a_guest_saves_to_cifs(
    kernel_root_files: Path, desc_file: Path, keys: Keys, smbd: Smbd, tmp_path: Path
) -> None:
    set_id = write_set(str(smbd.root / "rescued"), MediumOptions(), desc_file, keys)
    base = f"cifs://{GUEST_HOST}:{smbd.port}/{SMB_SHARE}"
    lines = boot_rescue(f"{base}/rescued", f"cifs://{smbd.user}@{GUEST_HOST}:{smbd.port}/"
                        f"{SMB_SHARE}/written", set_id, kernel_root_files, tmp_path,
                        secrets={"cifs-credentials": smbd.credentials()}, extra={},
                        what="CIFS over the user network, key medium")
    detail = "\n".join(lines)
    assert ("cifs-credentials: from the key medium (/run/resurgo/keys/cifs-credentials)"
            in lines), detail
    assert any(x.startswith(f"+ resurgo recover --from {base}/rescued --set {set_id} "
                            "--cifs-credentials /run/resurgo/credentials/cifs-credentials "
                            "--yes") for x in lines), detail
    assert smbd.password not in "\n".join(lines), "the password reached the console"
    check_written(lines, smbd.root / "written")
