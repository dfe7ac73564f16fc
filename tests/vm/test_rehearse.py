"""`resurgo rehearse` for real (vm tier): a set saved from the whole-cycle UEFI/GPT source
(the cached source test_whole_cycle.py boots, saved as it saves it but with the test
image's own runner disabled first, signed with the run's key) rehearsed on blank virtual
disks by the run's kernel-root rescue image (the one the whole-cycle tests boot, put into
the set as its rescue image and the set signed again), then booted and checked; and broken
copies of it:

- the set on SFTP (a real sshd on 127.0.0.1) and on S3 (SeaweedFS on 127.0.0.1): the
  rescue reaches the server over qemu's user network as 10.0.2.2, the host key and the
  credentials handed to it by the rehearsal; both pass (the directory medium is rehearsed
  by (b) and (c), (c) through the first boot and every check). The SFTP one is encrypted
  (age, its secret config files sealed): rehearsed with --identity, which reaches the
  rescue on the key disk beside the SSH key, and the rescue restores every archive
  through age;
- (a) its /boot archive holds an initramfs without its /init (the name of that entry
  changed in the archive, nothing else): finalize lists the drivers the disks need in it
  and keeps it, and the recovered system's kernel panics at its first boot, which the
  rehearsal sees on the console and stops at once. A /boot archive without any initramfs
  cannot fail a first boot: finalize's driver check finds no initramfs to list, takes
  every driver the disks need as missing and makes one anew (update-initramfs -c), so such
  a set recovers and boots (measured once: finalize took 226 s instead of about 90 under
  TCG); a /boot without the kernel fails in finalize ("no kernel"), not at the first boot;
- (b) its description runs a command that fails before the restores: the recovery fails
  at the restore step (no first boot). It is encrypted too, on a directory medium: the
  rescue gets the medium's disk and a key disk with the identity alone, and its recover
  opens the set's manifests with it before the layout (without it, it would stop there);
- (c) its root archive's fstab names a filesystem UUID that does not exist (nofail): the
  recovered system boots and its mounts check fails.

The broken sets are made on the host from the saved one: the same set id (every manifest
names it), the changed files written anew (a description edited; an archive and manifest
saved again with the engine from the tree restored on the host and changed), the index
signed with the run's key. An encrypted copy is made the same way: each archive and
manifest (zstd streams) piped through `age -r`, as save's zstd | age pipe writes them, the
description sealed (secrets.age), the index labelled encrypted for that recipient.
Each rehearsal is minutes under TCG: the broken sets that fail in the rescue are
rehearsed before those that boot.

The reports go to the module's tmp dir (rehearse-*.json) and the phases to stdout.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from resurgo import fileformat
from resurgo.engine import restore_tree, save_tree
from resurgo.media import Medium, MediumOptions, SetReader, open_medium
from resurgo.media.directory import directory_backend
from resurgo.media.setindex import RESCUE
from resurgo.model import Command
from resurgo.recovery import secrets, setfiles
from resurgo.recovery.load import load_set
from resurgo.rescue import RescueReport
from resurgo.restoreunits import Unit
from tests.support.cli import run
from tests.support.media_servers import Seaweed, Sshd
from tests.vm import guest
from tests.vm.cycle import (
    MARKERS,
    PLAIN_UNUSED,
    SAVE_SCRIPT,
    Saved,
    Times,
    cached_source,
    save_in_guest,
)
from tests.vm.network_sets import seaweed_server, sshd_server
from tests.vm.rescue_images import Keys

pytestmark = pytest.mark.vm

SOURCE_SIZE = 2 * guest.GiB
SET_DISK_SIZE = 2 * guest.GiB
HOST = "resurgo-src"
# The test image's runner (resurgo-test.service) runs its check script at every boot and
# powers the guest off: the saved system must not, or its first boot in a rehearsal ends
# before the rehearsal's own check (which waits for the boot to settle) has spoken.
SAVE = SAVE_SCRIPT.replace("set -u\n",
                           "set -u\nsystemctl disable --quiet resurgo-test.service\n", 1)
assert SAVE != SAVE_SCRIPT
MISSING_UUID = "0badc0de-0000-4000-8000-00000000dead"
FSTAB_LINE = (f"UUID={MISSING_UUID} /srv/missing ext4 "
              "defaults,nofail,x-systemd.device-timeout=5s 0 2\n")


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("rehearse")


@pytest.fixture(scope="module")
def times(work: Path) -> Times:
    return Times(work / "rehearse-times.json", "rehearse")


@pytest.fixture(scope="module")
def trust(work: Path, keys: Keys) -> Path:
    path = work / "allowed_signers"
    path.write_bytes(keys.signers)
    return path


@dataclasses.dataclass(frozen=True)
class AgeKey:
    identity: Path
    recipient: str


@pytest.fixture(scope="module")
def age_key(work: Path) -> AgeKey:
    path = work / "age-identity.txt"
    guest.run_cmd(["age-keygen", "-o", path])
    recipient = next(line.split(":", 1)[1].strip() for line in path.read_text().splitlines()
                     if line.startswith("# public key:"))
    return AgeKey(path, recipient)


@pytest.fixture(scope="module")
def saved(work: Path, times: Times, keys: Keys) -> tuple[Saved, Path]:
    """The source booted and saved (signed), as test_whole_cycle.py saves it; the set then
    copied off its disk into a directory medium on the host."""
    with times.timed("build source"):
        info = guest.copy_image(
            cached_source(hostname=HOST, size=SOURCE_SIZE, uefi=True, label="gpt",
                          unused=PLAIN_UNUSED),
            work / "source.raw")
    set_disk = guest.blank_disk(work / "set.img", SET_DISK_SIZE)
    guest.run_cmd(["mkfs.ext4", "-q", "-F", "-L", "backup", set_disk])
    result = save_in_guest(
        work, times, source=guest.Drive(info.path, serial="resurgo-source"),
        disks=[guest.Drive(set_disk, serial="resurgo-set")], set_disk=set_disk,
        markers={"/resurgo-marker.bin": MARKERS["/resurgo-marker.bin"]},
        exclude=["/dev/vdb", "/dev/vdc"], keys=keys, host=HOST, firmware="uefi",
        script=SAVE)
    medium = work / "saved"
    medium.mkdir()
    with guest.mounted_image(set_disk) as mnt:
        shutil.copytree(mnt / "resurgo" / HOST / result.set_id, medium / result.set_id,
                        symlinks=True)
    info.path.unlink()
    set_disk.unlink()
    return result, medium


Replace = Callable[[Medium, str, dict[str, Path]], None]


ENCRYPTED = (".archive", ".manifest", ".pooled")


def age_encrypted(data: Callable[[], Any], recipient: str, out: Path) -> Path:
    """The bytes of the stream ``data`` opens, through ``age -r recipient``, into ``out``."""
    with open(out, "wb") as sink:
        proc = subprocess.Popen(["age", "-r", recipient], stdin=subprocess.PIPE, stdout=sink)
        assert proc.stdin is not None
        with data() as src:
            while chunk := src.read(1 << 20):
                proc.stdin.write(chunk)
        proc.stdin.close()
        assert proc.wait() == 0
    return out


def encrypt(reader: SetReader, replaced: dict[str, Path], recipient: str,
            scratch: Path) -> tuple[secrets.Sealed, str]:
    """The set's archives and manifests (as ``replaced`` has them, else the set's)
    encrypted to ``recipient``, and its description sealed, into ``replaced``; the sealed
    files and the sealed description's digest, for secrets.age."""
    for n, entry in enumerate(reader.files()):
        if not entry.name.endswith(ENCRYPTED):
            continue
        plain = replaced.get(entry.name)
        data = (functools.partial(open, plain, "rb") if plain is not None
                else functools.partial(reader.open, entry.name))
        replaced[entry.name] = age_encrypted(data, recipient, scratch / f"encrypted-{n}")
    name = setfiles.DESCRIPTION
    raw = replaced[name].read_bytes() if name in replaced else reader.read_bytes(name)
    desc = fileformat.check_bytes(raw, name, expected_digest=None).description
    assert desc is not None
    desc, files = secrets.seal(desc)
    replaced[name] = scratch / "sealed-description.toml"
    digest = fileformat.write(desc, replaced[name])
    replaced[setfiles.DESCRIPTION_DIGEST] = scratch / "sealed-description.toml.sha256"
    replaced[setfiles.DESCRIPTION_DIGEST].write_text(f"{digest}  {name}\n")
    return files, digest


def craft(source: Path, set_id: str, dest: Path | Callable[[], Medium], keys: Keys,
          rescue: Path, change: Replace | None = None, *,
          encrypt_to: str | None = None) -> None:
    """A copy of the set on a medium of its own (a directory, or the medium ``dest``
    opens), with ``rescue`` as its rescue image and the files ``change`` gives (name -> a
    file holding the new bytes) in place of its own, encrypted to ``encrypt_to`` when
    given (encrypt); the index signed with the run's trusted key."""
    with tempfile.TemporaryDirectory(dir=source.parent) as tmp:
        _craft(source, set_id, dest, keys, rescue, change, encrypt_to, Path(tmp))


def _craft(source: Path, set_id: str, dest: Path | Callable[[], Medium], keys: Keys,
           rescue: Path, change: Replace | None, encrypt_to: str | None,
           scratch: Path) -> None:
    replaced: dict[str, Path] = {}
    sealed: secrets.Sealed = {}
    digest = ""
    target = dest if callable(dest) else lambda: Medium(directory_backend(str(dest)))
    with Medium(directory_backend(str(source))) as src:
        reader = src.open_set(set_id)
        if change is not None:
            change(src, set_id, replaced)
        meta = reader.index.meta
        if encrypt_to is not None:
            sealed, digest = encrypt(reader, replaced, encrypt_to, scratch)
            meta = dataclasses.replace(
                meta, labels={**meta.labels, **setfiles.labels([encrypt_to])})
        with target() as out, out.begin_set(
                meta, set_id=set_id, sign_key=keys.trusted,
                created=reader.index.created) as w:
            for entry in reader.files():
                if entry.name == RESCUE:
                    continue
                with w.create(entry.name) as f:
                    if entry.name in replaced:
                        with open(replaced[entry.name], "rb") as new:
                            shutil.copyfileobj(new, f)  # type: ignore[misc]
                    else:
                        with reader.open(entry.name) as old:
                            while chunk := old.read(1 << 20):
                                f.write(chunk)
            if sealed:
                secrets.write(w, sealed, digest, [encrypt_to or ""])
            with w.create(RESCUE) as f, open(rescue, "rb") as iso:
                shutil.copyfileobj(iso, f)  # type: ignore[misc]
            w.commit()


def failing_command(scratch: Path) -> Replace:
    """The description with a command that fails, run before the restores."""
    def change(medium: Medium, set_id: str, out: dict[str, Path]) -> None:
        text = medium.open_set(set_id).read_bytes("description.toml")
        desc = fileformat.check_bytes(text, "description.toml",
                                      expected_digest=None).description
        assert desc is not None
        first = min((c.seq for c in desc.commands), default=10)
        broken = dataclasses.replace(desc, commands=(
            Command(max(first - 1, 0), "/bin/false", (),
                    description="a command that fails, before the restores"),
            *desc.commands))
        new = scratch / "description.toml"
        fileformat.write(broken, new)
        digest = hashlib.sha256(new.read_bytes()).hexdigest()
        (scratch / "description.toml.sha256").write_text(f"{digest}  description.toml\n")
        out["description.toml"] = new
        out["description.toml.sha256"] = scratch / "description.toml.sha256"
    return change


def resaved(scratch: Path, mountpoint: str, edit: Callable[[Path], None]) -> Replace:
    """The tree of ``mountpoint`` restored on the host, ``edit``ed, and saved again with
    the engine into a new archive and manifest of the same set."""
    def change(medium: Medium, set_id: str, out: dict[str, Path]) -> None:
        loaded = load_set(medium, set_id)
        unit: Unit = next(u for u in loaded.units if u.mountpoint == mountpoint)
        tree = scratch / "tree"
        tree.mkdir()
        restore_tree(tree, loaded.manifest(unit), loaded.archives(unit), writers=0)
        edit(tree)
        archive, manifest = scratch / "archive", scratch / "manifest"
        with open(archive, "wb") as a, open(manifest, "wb") as m:
            save_tree(tree, a, m, set_id=set_id)
        out[unit.archive_name] = archive
        out[unit.manifest_name] = manifest
    return change


NEWC = b"070701"
# Compressors by magic number: (argv to decompress, argv to compress), both on stdio.
COMPRESSORS = {
    b"\x28\xb5\x2f\xfd": (["zstd", "-q", "-d", "-c"], ["zstd", "-q", "-c", "-1"]),
    b"\x1f\x8b": (["gzip", "-d", "-c"], ["gzip", "-c", "-1"]),
    b"\xfd7zXZ": (["xz", "-d", "-c"], ["xz", "-c", "--check=crc32"]),
}


def newc_entries(data: bytes) -> Iterator[tuple[int, int, str]]:
    """The entries of the newc archives at the start of ``data``: (offset of the header,
    offset after the entry, name); they end where no header follows."""
    pos = 0
    while True:
        while data[pos:pos + 1] == b"\0":
            pos += 1
        if data[pos:pos + 6] != NEWC:
            return
        size, namesize = int(data[pos + 54:pos + 62], 16), int(data[pos + 94:pos + 102], 16)
        name_end = pos + 110 + namesize
        end = name_end + (-name_end % 4) + size
        end += -end % 4
        yield pos, end, data[pos + 110:name_end - 1].decode()
        pos = end


def without_init(image: Path) -> None:
    """The initramfs ``image`` with its /init renamed (to "tini", same length: nothing else
    in the archive moves): every module still listed, no init for the kernel to run."""
    data = image.read_bytes()
    head = max((end for _, end, _ in newc_entries(data)), default=0)  # early microcode
    body = data[head:].lstrip(b"\0")
    head = len(data) - len(body)
    tools = next((t for magic, t in COMPRESSORS.items() if body.startswith(magic)), None)
    raw = body if tools is None else subprocess.run(
        tools[0], input=body, capture_output=True, check=True).stdout
    patched = bytearray(raw)
    found = 0
    for pos, _, name in newc_entries(raw):
        if name in ("init", "./init"):
            at = pos + 110 + len(name) - len("init")
            patched[at:at + 4] = b"tini"
            found += 1
    assert found, f"{image.name}: no /init in its archive"
    out = bytes(patched) if tools is None else subprocess.run(
        tools[1], input=bytes(patched), capture_output=True, check=True).stdout
    image.write_bytes(data[:head] + out)


def rehearse(medium: Path | str, trust: Path, work: Path, name: str, *more: str,
             env: dict[str, str] | None = None) -> dict[str, Any]:
    report = work / f"rehearse-{name}.json"
    result = run("rehearse", "--from", medium, "--trust", trust, "--json",
                 "--work-dir", work / "images", "--state-dir", work / "state",
                 "--report-dir", work / "reports", "--report", report,
                 "--cpus", str(guest.default_cpus()), *more,
                 env={"RESURGO_CONFIG": "", **(env or {})})
    assert result.returncode in (0, 1), result.output
    data: dict[str, Any] = json.loads(report.read_text())
    (one,) = data["rehearsals"]
    print(f"\nrehearse {name}: {'PASSED' if one['ok'] else 'FAILED at ' + one['failed_step']}"
          f" {one['phases']} {one['machine']['accel_reason']}", flush=True)
    assert list((work / "images").iterdir()) == [], "the images were not removed"
    return one


def passed(one: dict[str, Any], set_id: str) -> None:
    assert one["ok"], (one["reason"], "\n".join(one["console_tail"]))
    assert all(one["phases"][p] is not None for p in one["phases"]), one["phases"]
    names = {c["name"] for c in one["checks"]}
    assert {"boot", "units", "mounts", "canary", "hostname", "machine-id"} <= names
    assert all(c["ok"] for c in one["checks"])
    assert one["set"] == set_id


@pytest.fixture(scope="module")
def sshd(work: Path) -> Iterator[Sshd]:
    with sshd_server(work) as server:
        yield server


@pytest.fixture(scope="module")
def seaweed(work: Path) -> Iterator[Seaweed]:
    with seaweed_server(work, "sets") as server:
        yield server


def test_an_encrypted_set_on_sftp_rehearses_and_passes_with_every_phase_timed(
        saved: tuple[Saved, Path], work: Path, keys: Keys, trust: Path, sshd: Sshd,
        kernel_root_image: RescueReport, times: Times, age_key: AgeKey) -> None:
    result, medium = saved
    sets = sshd.root / "sets"
    craft(medium, result.set_id, sets, keys, kernel_root_image.path,
          encrypt_to=age_key.recipient)
    with Medium(directory_backend(str(sets))) as crafted:
        info = crafted.open_set(result.set_id).info
        assert setfiles.encrypted(info.labels)
    with times.timed("rehearse (sftp, encrypted, pass)"):
        one = rehearse(sshd.url(sets), trust, work, "sftp", "--ssh-key", str(sshd.key),
                       "--ssh-known-hosts", str(sshd.known_hosts),
                       "--identity", str(age_key.identity))
    passed(one, result.set_id)
    reach = one["machine"]["medium_reach"]
    assert reach == (f"sftp://{sshd.user}@10.0.2.2:{sshd.port}{sets} over qemu's user "
                     "network, age-identity, ssh-key on a key disk"), reach
    stored = json.loads((sets / result.set_id / "rehearsal.json").read_text())
    assert stored["ok"] and stored["set"] == result.set_id
    status = (work / "state" / f"rehearse-{HOST}.json")
    assert json.loads(status.read_text())["ok"]


def test_a_set_on_s3_rehearses_and_passes(
        saved: tuple[Saved, Path], work: Path, keys: Keys, trust: Path, seaweed: Seaweed,
        kernel_root_image: RescueReport, times: Times) -> None:
    result, medium = saved
    url = "s3://sets/rehearse"
    options = MediumOptions(s3_endpoint=seaweed.endpoint, s3_insecure_http=True)
    craft(medium, result.set_id, lambda: open_medium(url, options, environ=seaweed.environ()),
          keys, kernel_root_image.path)
    with times.timed("rehearse (s3, pass)"):
        one = rehearse(url, trust, work, "s3", "--s3-endpoint", seaweed.endpoint,
                       "--s3-insecure-http", env=seaweed.environ())
    passed(one, result.set_id)
    assert one["machine"]["medium_reach"] == (
        f"{url} over qemu's user network, s3-credentials on a key disk")


def test_a_set_whose_command_fails_fails_in_the_recovery(
        saved: tuple[Saved, Path], work: Path, keys: Keys, trust: Path,
        kernel_root_image: RescueReport, times: Times, age_key: AgeKey) -> None:
    result, medium = saved
    scratch = work / "scratch-b"
    scratch.mkdir()
    craft(medium, result.set_id, work / "b", keys, kernel_root_image.path,
          failing_command(scratch), encrypt_to=age_key.recipient)
    with times.timed("rehearse (b: a command fails, encrypted)"):
        one = rehearse(work / "b", trust, work, "b", "--accel", "tcg",
                       "--identity", str(age_key.identity))
    assert not one["ok"]
    # The rescue's recover opened the set with the key disk's identity: it got past its
    # checks and the layout to the failing command.
    assert one["failed_step"] == "restore", one
    assert one["phases"]["layout"] is not None and one["recovery_exit"] == 1, one
    assert one["phases"]["first_boot"] is None
    assert one["machine"]["medium_reach"] == "a disk of its own, age-identity on a key disk"
    assert one["console_tail"]


def test_a_set_whose_initramfs_cannot_boot_fails_at_its_first_boot_in_seconds(
        saved: tuple[Saved, Path], work: Path, keys: Keys, trust: Path,
        kernel_root_image: RescueReport, times: Times) -> None:
    result, medium = saved
    scratch = work / "scratch-a"
    scratch.mkdir()

    def break_initramfs(tree: Path) -> None:
        images = sorted(tree.glob("initrd.img-*"))
        assert images, sorted(p.name for p in tree.iterdir())
        for image in images:
            without_init(image)

    craft(medium, result.set_id, work / "a", keys, kernel_root_image.path,
          resaved(scratch, "/boot", break_initramfs))
    with times.timed("rehearse (a: initramfs without init)"):
        one = rehearse(work / "a", trust, work, "a", "--accel", "tcg")
    assert not one["ok"]
    assert one["failed_step"] == "first boot", one
    # The recovery itself went through, finalize kept the initramfs (it has the drivers).
    assert one["recovery_exit"] == 0 and one["phases"]["finalize"] is not None, one
    assert "Kernel panic - not syncing" in one["reason"], one["reason"]
    assert any("Kernel panic" in line for line in one["console_tail"]), one["console_tail"]
    # Stopped at the dead end, not at the first boot's timeout (900 s under TCG).
    seconds = float(one["reason"].rsplit("(stopped ", 1)[1].split(" s ")[0])
    print(f"\nrehearse a: first boot stopped after {seconds:.0f} s", flush=True)
    assert seconds < 300, one["reason"]


def test_a_set_whose_fstab_names_a_missing_uuid_fails_its_mounts_check(
        saved: tuple[Saved, Path], work: Path, keys: Keys, trust: Path,
        kernel_root_image: RescueReport, times: Times) -> None:
    result, medium = saved
    scratch = work / "scratch-c"
    scratch.mkdir()

    def add_line(tree: Path) -> None:
        fstab = tree / "etc/fstab"
        fstab.write_text(fstab.read_text() + FSTAB_LINE)

    craft(medium, result.set_id, work / "c", keys, kernel_root_image.path,
          resaved(scratch, "/", add_line))
    with times.timed("rehearse (c: fstab)"):
        one = rehearse(work / "c", trust, work, "c", "--accel", "tcg")
    assert not one["ok"]
    assert one["failed_step"] == "check", one
    mounts = next(c for c in one["checks"] if c["name"] == "mounts")
    assert not mounts["ok"] and "/srv/missing" in mounts["detail"], one["checks"]
    assert all(c["ok"] for c in one["checks"] if c["name"] != "mounts"), one["checks"]
