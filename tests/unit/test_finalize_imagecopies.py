"""An initramfs-tools image's copies of rewritten files renamed in the image itself
(finalize/imagecopies.py), on images made here as initramfs-tools makes them: an
uncompressed early archive, then the compressed main one."""

from __future__ import annotations

import gzip
import io
import lzma
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from resurgo.finalize import imagecopies
from resurgo.finalize.imagecopies import Copy, Unpatchable
from resurgo.finalize.model import LineChange
from resurgo.rescue import cpio

OLD_LUKS, NEW_LUKS = "a522fcb4-5cda-4aaa-86f6-7294dc473a82", "6e1491af-df1e-478d-a985-dd7037c1814a"
OLD_MD, NEW_MD = "92323df1:0cb7b67e:380f8ba1:47247aac", "ea0f1ac7:f0014ff5:b44c5de2:9cf2ec9e"
OLD_SWAP, NEW_SWAP = "ead1538d-9bc7-4947-b84a-1be57ec8cff1", "a1abda88-19b4-443e-9faf-acca749915df"
SAVED = (OLD_LUKS, OLD_MD, OLD_SWAP)

CRYPTTAB = (
    "# <target> <source> <key> <options>\n"
    f"cryptroot UUID={OLD_LUKS} /dev/disk/by-label/KEYS:/root.key luks,keyscript=passdev\n"
    "cryptdata UUID=11111111-2222-3333-4444-555555555555 none luks,noauto\n"
)
MDADM = f"HOMEHOST <system>\nARRAY /dev/md/root metadata=1.2 UUID={OLD_MD} name=h:root\n"
RESUME = f"RESUME=UUID={OLD_SWAP}\n"


def _copy(path: str, before: str, pairs: list[tuple[str, str]]) -> Copy:
    after, changes = before, []
    for n, line in enumerate(before.splitlines(), 1):
        for old, new in pairs:
            if old in line:
                changes.append(LineChange(n, line, line.replace(old, new), "renamed"))
        for old, new in pairs:
            after = after.replace(old, new)
    return Copy(path, before, after, tuple(changes))


COPIES = [
    _copy("/etc/crypttab", CRYPTTAB, [(OLD_LUKS, NEW_LUKS)]),
    _copy("/etc/mdadm/mdadm.conf", MDADM, [(OLD_MD, NEW_MD)]),
    _copy("/etc/initramfs-tools/conf.d/resume", RESUME, [(OLD_SWAP, NEW_SWAP)]),
]

# The hook writes the root's entry only.
IMAGE_CRYPTTAB = CRYPTTAB.splitlines(keepends=True)[1]
BINARY = bytes(range(256)) * 300 + b"\x01"  # not a multiple of 4: the padding moves


def _archive(members: dict[str, bytes | str]) -> bytes:
    out = io.BytesIO()
    w = cpio.Writer(out)
    for name, data in members.items():
        w.ensure_dirs(name)
        if isinstance(data, str):
            w.add(cpio.Entry.symlink(name, data))
        else:
            w.add(cpio.Entry.file(name, data, 0o755 if name.startswith("usr/") else 0o644))
    w.close()
    return out.getvalue()


def _zstd(data: bytes) -> bytes:
    return subprocess.run(["zstd", "-q", "-c"], input=data, capture_output=True,
                          check=True).stdout


def _unzstd(data: bytes) -> bytes:
    return subprocess.run(["zstd", "-q", "-d", "-c"], input=data, capture_output=True,
                          check=True).stdout


needs_zstd = pytest.mark.skipif(shutil.which("zstd") is None, reason="no zstd here")
PACKERS: dict[str, tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]] = {
    "gzip": (lambda d: gzip.compress(d, mtime=0), gzip.decompress),
    "xz": (lambda d: lzma.compress(d, check=lzma.CHECK_CRC32), lzma.decompress),
    "zstd": (_zstd, _unzstd),
}

EARLY = _archive({"kernel/x86/microcode/GenuineIntel.bin": b"\xaa" * 1000})
EARLY_PADDED = EARLY + b"\0" * (-len(EARLY) % 512)


def _main(**more: bytes | str) -> dict[str, bytes | str]:
    return {
        "usr/bin/busybox": BINARY,
        "bin": "usr/bin",
        "cryptroot/crypttab": IMAGE_CRYPTTAB.encode(),
        "etc/mdadm/mdadm.conf": MDADM.encode(),
        "conf/conf.d/resume": RESUME.encode(),
        "conf/initramfs.conf": b"MODULES=dep\n",
        "scripts/local-top/cryptroot": b"#!/bin/sh\n",
        **more,
    }


def _image(tmp_path: Path, packer: str, members: dict[str, bytes | str]) -> Path:
    image = tmp_path / "initrd.img-6.1.0-50-amd64"
    image.write_bytes(EARLY_PADDED + PACKERS[packer][0](_archive(members)))
    image.chmod(0o600)
    return image


def _read(image: Path, packer: str) -> dict[str, cpio.Entry]:
    data = image.read_bytes()
    assert data.startswith(EARLY_PADDED)
    main = PACKERS[packer][1](data[len(EARLY_PADDED):])
    return {e.name: e for e in cpio.read(main)}


@pytest.mark.parametrize("packer", ["gzip", "xz", pytest.param("zstd", marks=needs_zstd)])
def test_the_copies_are_renamed_and_every_other_member_stays_as_it_was(
    tmp_path: Path, packer: str
) -> None:
    image = _image(tmp_path, packer, _main())
    before = _read(image, packer)
    changed = imagecopies.patch(image, COPIES, SAVED)
    assert sorted(changed) == ["conf/conf.d/resume", "cryptroot/crypttab",
                               "etc/mdadm/mdadm.conf"]
    after = _read(image, packer)
    # The derived crypttab (the root's line only) got the file's changed line.
    assert after["cryptroot/crypttab"].data.decode() == IMAGE_CRYPTTAB.replace(OLD_LUKS, NEW_LUKS)
    assert after["etc/mdadm/mdadm.conf"].data.decode() == COPIES[1].after
    assert after["conf/conf.d/resume"].data.decode() == f"RESUME=UUID={NEW_SWAP}\n"
    assert after.keys() == before.keys()
    for name in before.keys() - set(changed):
        assert after[name] == before[name], name
    assert image.stat().st_mode & 0o777 == 0o600
    assert not [p for p in tmp_path.iterdir() if p != image]


def test_an_image_naming_a_saved_identity_where_no_copy_is_is_left_to_a_rebuild(
    tmp_path: Path,
) -> None:
    # The resume hook derives zz-resume-auto from the swap it finds: a rebuild names the
    # new swap there, a rename of the copies would not.
    image = _image(tmp_path, "gzip", _main(**{
        "conf/conf.d/zz-resume-auto": f"RESUME=UUID={OLD_SWAP}\n".encode()}))
    raw = image.read_bytes()
    with pytest.raises(Unpatchable, match="zz-resume-auto still names a saved identity"):
        imagecopies.patch(image, COPIES, SAVED)
    assert image.read_bytes() == raw


def test_a_copy_not_as_the_file_had_it_is_left_to_a_rebuild(tmp_path: Path) -> None:
    # The md UUID spelt otherwise in the copy: its line is not the file's, and it still
    # names the saved array (found however it is spelt).
    bare = OLD_MD.replace(":", "")
    spelt = f"{bare[:8]}-{bare[8:12]}-{bare[12:16]}-{bare[16:20]}-{bare[20:]}"
    image = _image(tmp_path, "gzip", _main(**{
        "etc/mdadm/mdadm.conf": f"ARRAY /dev/md/root UUID={spelt.upper()}\n".encode()}))
    raw = image.read_bytes()
    with pytest.raises(Unpatchable, match=r"mdadm\.conf still names a saved identity"):
        imagecopies.patch(image, COPIES, SAVED)
    assert image.read_bytes() == raw


def test_what_is_not_a_plain_copy_or_not_unpacked_here_is_left_to_a_rebuild(
    tmp_path: Path,
) -> None:
    image = _image(tmp_path, "gzip", _main())
    conf = Copy("/etc/initramfs-tools/initramfs.conf", "MODULES=most\n", "MODULES=dep\n", ())
    with pytest.raises(Unpatchable, match="derive more"):
        imagecopies.patch(image, [*COPIES, conf], SAVED)
    lz4 = tmp_path / "lz4.img"
    lz4.write_bytes(EARLY_PADDED + b"\x02\x21\x4c\x18" + b"\0" * 64)
    with pytest.raises(Unpatchable, match="compressed in a way"):
        imagecopies.patch(lz4, COPIES, SAVED)
    broken = tmp_path / "broken.img"
    broken.write_bytes(EARLY_PADDED + gzip.compress(b"070701" + b"Z" * 200))
    with pytest.raises(Unpatchable, match="damaged cpio header"):
        imagecopies.patch(broken, COPIES, SAVED)
    for name, packed in (("gz", gzip.compress(b"x" * 100)), ("xz", lzma.compress(b"x" * 100))):
        damaged = tmp_path / f"damaged-{name}.img"
        damaged.write_bytes(EARLY_PADDED + packed[:12] + b"\xff" * 40 + packed[52:])
        with pytest.raises(Unpatchable, match="could not be unpacked"):
            imagecopies.patch(damaged, COPIES, SAVED)
    cut = tmp_path / "cut.img"
    cut.write_bytes(EARLY_PADDED + gzip.compress(b"hello"))
    with pytest.raises(Unpatchable, match="no cpio header"):
        imagecopies.patch(cut, COPIES, SAVED)


def test_copies_the_image_does_not_hold_are_not_added(tmp_path: Path) -> None:
    members = _main()
    for name in ("cryptroot/crypttab", "etc/mdadm/mdadm.conf", "conf/conf.d/resume"):
        del members[name]
    image = _image(tmp_path, "gzip", members)
    raw = image.read_bytes()
    assert imagecopies.patch(image, COPIES, SAVED) == []
    assert image.read_bytes() == raw


def test_where_the_copies_are_and_how_an_identity_may_be_spelt() -> None:
    assert imagecopies.image_path("/etc/crypttab") == "cryptroot/crypttab"
    assert imagecopies.image_path("/etc/lvm/devices/system.devices") == \
        "etc/lvm/devices/system.devices"
    assert imagecopies.image_path("/etc/initramfs-tools/conf.d/resume") == "conf/conf.d/resume"
    assert imagecopies.image_path("/etc/initramfs-tools/modules") is None
    assert imagecopies.image_path("/etc/fstab") is None
    spelt = imagecopies.spellings([OLD_MD, "5E69-DBBC"])
    assert b"92323df10cb7b67e380f8ba147247aac" in spelt
    assert b"92323df1-0cb7-b67e-380f-8ba147247aac" in spelt
    assert OLD_MD.encode() in spelt and b"5e69-dbbc" in spelt and b"5e69dbbc" in spelt


@pytest.mark.parametrize("packer", ["gzip", "xz", pytest.param("zstd", marks=needs_zstd)])
def test_an_archive_that_inflates_past_the_bound_is_refused_before_it_is_all_in_memory(
    tmp_path: Path, packer: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The set's /boot is the set author's: a small stream that inflates to gigabytes would
    # fill the rescue's memory before any size check after the fact.
    monkeypatch.setattr(imagecopies, "MAX_UNPACKED", 1 << 20)
    bomb = tmp_path / "bomb.img"
    bomb.write_bytes(EARLY_PADDED + PACKERS[packer][0](b"\0" * (4 << 20)))
    with pytest.raises(Unpatchable, match="more than 1 MiB"):
        imagecopies.patch(bomb, COPIES, SAVED)
    cut = tmp_path / "cut.img"
    packed = PACKERS[packer][0](_archive(_main()))
    cut.write_bytes(EARLY_PADDED + packed[: len(packed) // 2])
    with pytest.raises(Unpatchable, match="could not be unpacked"):
        imagecopies.patch(cut, COPIES, SAVED)
