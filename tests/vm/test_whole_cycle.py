"""The whole cycle, end to end (vm tier): save a running system, lose it, recover it
onto a larger NVMe disk from the rescue image, and boot the result.

Stages (module-scoped fixtures, tests/vm/cycle.py has what both cycles share):

1. ``source``: a UEFI Debian 12 source disk (GPT: bios_grub, ESP, /boot, swap, /home, /)
   on virtio, its initramfs host-only (MODULES=list: virtio_pci, virtio_blk, ext4); the
   host's lsinitrd shows no NVMe driver in it (cached, a copy per run);
2. ``saved``: the source boots (OVMF, virtio), writes two marker files (/ and /home) and
   runs `resurgo save --no-rescue --sign-key KEY` to a second virtual disk mounted in the
   guest (that disk and the exchange disk left out with --exclude-disk);
3. ``recovered``: the run's kernel-root rescue (trusting KEY: conftest.py), its kernel
   and initramfs booted on OVMF with the unattended entry's command line and
   `resurgo.set=` naming the set, with the set disk and a blank NVMe disk 25 % larger:
   it finds the set, recovers and finalizes unattended, powers off;
4. ``booted``: the recovered disk boots alone from NVMe (OVMF) and its check script
   (saved with the system) prints the markers' hashes, the mounts, the swap and the
   kernel command line on the serial console; host: its initramfs now carries nvme.

The times go to whole-cycle.json in the module's tmp dir, and stdout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from resurgo.rescue import RescueReport
from tests.vm import guest
from tests.vm.cycle import (
    MARKERS,
    PLAIN_UNUSED,
    Saved,
    Times,
    boot_recovered,
    cached_source,
    hashes,
    initramfs_modules,
    mounts,
    numbered,
    partitions_mounted,
    rescue_boot,
    save_in_guest,
    table,
)
from tests.vm.rescue_images import SIGNER, Keys, rescue_lines

pytestmark = pytest.mark.vm

MiB = guest.MiB
SOURCE_SIZE = 2 * guest.GiB
TARGET_SIZE = SOURCE_SIZE * 5 // 4
SET_DISK_SIZE = 2 * guest.GiB
HOST = "resurgo-src"
MARKED = ("/resurgo-marker.bin", "/home/alice/marker.bin")


def part_numbers(tab: dict[str, Any]) -> dict[str, int]:
    return {p["name"]: n for n, p in numbered(tab).items()}


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("whole-cycle")


@pytest.fixture(scope="module")
def times(work: Path) -> Times:
    return Times(work / "whole-cycle.json", "whole cycle")


class Source:
    def __init__(self, info: guest.ImageInfo) -> None:
        self.info = info
        self.table = table(info.path)
        self.nums = part_numbers(self.table)
        with partitions_mounted(info.path, {"boot": self.nums["boot"]}, read_only=True) as m:
            self.modules = initramfs_modules(m["boot"], info.kernel)


@pytest.fixture(scope="module")
def source(work: Path, times: Times) -> Source:
    with times.timed("build source"):
        info = guest.copy_image(
            cached_source(hostname=HOST, size=SOURCE_SIZE, uefi=True, label="gpt",
                          unused=PLAIN_UNUSED),
            work / "source.raw",
        )
    return Source(info)


def test_the_source_is_gpt_uefi_with_a_host_only_initramfs(source: Source) -> None:
    assert set(source.nums) == {"bios_grub", "esp", "boot", "swap", "home", "root"}
    assert {"virtio_blk", "ext4"} <= source.modules
    assert "nvme" not in source.modules and "nvme_core" not in source.modules


@pytest.fixture(scope="module")
def set_disk(work: Path) -> Path:
    disk = guest.blank_disk(work / "set.img", SET_DISK_SIZE)
    guest.run_cmd(["mkfs.ext4", "-q", "-F", "-L", "backup", disk])
    return disk


@pytest.fixture(scope="module")
def saved(source: Source, set_disk: Path, work: Path, times: Times, keys: Keys) -> Saved:
    return save_in_guest(
        work,
        times,
        source=guest.Drive(source.info.path, serial="resurgo-source"),
        disks=[guest.Drive(set_disk, serial="resurgo-set")],
        set_disk=set_disk,
        markers={m: MARKERS[m] for m in MARKED},
        exclude=["/dev/vdb", "/dev/vdc"],
        keys=keys,
        host=HOST,
        firmware="uefi",
    )


def test_the_running_source_is_saved_signed(saved: Saved) -> None:
    saved_points = {u["mountpoint"] for u in saved.report["units"]}
    assert {"/", "/boot", "/home"} <= saved_points, saved.report["units"]
    assert not any(p and p.startswith(("/mnt/set", "/resurgo-test")) for p in saved_points)
    desc_text = saved.description.read_text()
    assert "/dev/vdb" not in desc_text and "/dev/vdc" not in desc_text


@pytest.fixture(scope="module")
def target(work: Path) -> Path:
    return guest.blank_disk(work / "target.raw", TARGET_SIZE)


@pytest.fixture(scope="module")
def recovered(
    saved: Saved, set_disk: Path, target: Path, work: Path, times: Times,
    kernel_root_image: RescueReport, kernel_root_files: Path,
) -> guest.BootResult:
    times.note("rescue build", kernel_root_image.seconds)
    times.note("rescue image MiB", kernel_root_image.size / MiB)
    return rescue_boot(
        work,
        times,
        files=kernel_root_files,
        set_id=saved.set_id,
        disks=[
            guest.Drive(set_disk, serial="resurgo-set"),
            guest.Drive(target, interface="nvme", serial="resurgo-target"),
        ],
        firmware="uefi",
    )


def test_the_rescue_takes_the_signed_set_and_recovers(
    recovered: guest.BootResult, saved: Saved
) -> None:
    lines = rescue_lines(recovered.text)
    detail = "\n".join(lines[-60:])
    assert any(x.startswith("recovery set:") and saved.set_id in x
               and f"signed by a trusted key ({SIGNER})" in x for x in lines), detail
    assert lines[-1] == "poweroff now", detail


def test_the_target_has_the_saved_layout_root_grown(
    recovered: guest.BootResult, source: Source, target: Path
) -> None:
    tgt_table = table(target)
    assert tgt_table["id"].lower() == source.table["id"].lower()
    assert part_numbers(tgt_table) == source.nums
    size = {p["name"]: p["size"] for p in tgt_table["partitions"]}
    src_size = {p["name"]: p["size"] for p in source.table["partitions"]}
    assert size["root"] > src_size["root"]
    for name in ("esp", "boot", "swap", "home"):
        assert size[name] == src_size[name], name


def test_the_recovered_initramfs_has_nvme(
    recovered: guest.BootResult, source: Source, target: Path
) -> None:
    with partitions_mounted(target, {"boot": source.nums["boot"]}, read_only=True) as m:
        recovered_modules = initramfs_modules(m["boot"], source.info.kernel)
    assert {"nvme", "nvme_core"} <= recovered_modules
    assert source.modules <= recovered_modules


@pytest.fixture(scope="module")
def booted(recovered: guest.BootResult, target: Path, work: Path, times: Times) -> list[str]:
    drive = guest.Drive(target, interface="nvme", serial="resurgo-target")
    return boot_recovered([drive], work / "recovered.log", times, firmware="uefi")


def test_the_recovered_disk_boots_alone_from_nvme(
    booted: list[str], saved: Saved, source: Source, times: Times
) -> None:
    checks = booted
    assert hashes(checks) == saved.want, checks
    nums = source.nums
    mounted = mounts(checks)
    assert mounted["/"] == [f"/dev/nvme0n1p{nums['root']}", "ext4"], checks
    assert mounted["/boot"] == [f"/dev/nvme0n1p{nums['boot']}", "ext4"], checks
    assert mounted["/home"] == [f"/dev/nvme0n1p{nums['home']}", "ext4"], checks
    assert mounted["/boot/efi"] == [f"/dev/nvme0n1p{nums['esp']}", "vfat"], checks
    swap = next(c for c in checks if c.startswith("swap "))
    assert swap.split()[1:] == [f"/dev/nvme0n1p{nums['swap']}", "partition"], checks
    cmdline = next(c for c in checks if c.startswith("cmdline "))
    assert f"root=UUID={source.info.root_uuid}" in cmdline, cmdline
    times.total()
