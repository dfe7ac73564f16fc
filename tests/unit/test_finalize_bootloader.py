"""finalize: the bootloader commands planned from the description and the plan."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from resurgo.finalize import bootloader
from resurgo.finalize.bootloader import TreeFacts
from resurgo.model import Bootloader, BootloaderKind, Description
from resurgo.plan import make_plan
from resurgo.plan.model import Plan, PlanOptions
from tests.support.builders import actual, standard

FACTS = TreeFacts(grub_targets=frozenset({"i386-pc", "x86_64-efi"}))


def moved(kind: BootloaderKind, **kw: object) -> tuple[Description, Plan]:
    desc = standard(name="sda")
    system = dataclasses.replace(
        desc.system,
        bootloader=Bootloader(kind=kind, **kw),  # type: ignore[arg-type]
    )
    desc = dataclasses.replace(desc, system=system)
    plan = make_plan(desc, [actual("nvme0n1", transport="nvme")], PlanOptions(which=str))
    assert plan.ok, plan.failures
    return desc, plan


def test_grub_pc_goes_on_the_disk_that_carried_it_mapped_through_the_plan() -> None:
    desc, plan = moved(BootloaderKind.GRUB_PC, disks=("disk.sda",))
    bp = bootloader.plan_bootloader(desc, plan, efi_available=False, tree=FACTS)
    assert [s.argv for s in bp.steps] == [("grub-install", "--target=i386-pc", "/dev/nvme0n1")]
    assert bp.regenerate and bp.problems == () and bp.notes == ()


def test_grub_pc_without_saved_disks_goes_under_boot() -> None:
    desc, plan = moved(BootloaderKind.GRUB_PC)
    bp = bootloader.plan_bootloader(desc, plan, efi_available=False, tree=FACTS)
    assert [s.argv[-1] for s in bp.steps] == ["/dev/nvme0n1"]
    assert "under /boot" in bp.notes[0]


def test_grub_pc_missing_from_the_restored_tree_is_a_problem() -> None:
    desc, plan = moved(BootloaderKind.GRUB_PC, disks=("disk.sda",))
    facts = TreeFacts(grub_targets=frozenset({"x86_64-efi"}))
    bp = bootloader.plan_bootloader(desc, plan, efi_available=False, tree=facts)
    assert "grub-pc package is missing" in bp.problems[0]


def test_grub_efi_with_nvram_and_the_removable_path() -> None:
    desc, plan = moved(BootloaderKind.GRUB_EFI, efi_path="/EFI/debian/shimx64.efi")
    bp = bootloader.plan_bootloader(desc, plan, efi_available=True, tree=FACTS)
    assert [s.argv for s in bp.steps] == [
        (
            "grub-install",
            "--target=x86_64-efi",
            "--efi-directory=/boot/efi",
            "--bootloader-id=debian",
        ),
        (
            "grub-install",
            "--target=x86_64-efi",
            "--efi-directory=/boot/efi",
            "--removable",
            "--no-nvram",
        ),
    ]
    assert "NVRAM boot entry" in bp.steps[0].why and "BOOTX64.EFI" in bp.steps[1].why
    assert bp.bootloader_id == "debian" and bp.loader == "\\EFI\\debian\\shimx64.efi"
    assert bp.esp == "/boot/efi" and bp.esp_device == ("/dev/nvme0n1", 1)


def test_grub_efi_without_efi_variables_writes_no_nvram() -> None:
    desc, plan = moved(BootloaderKind.GRUB_EFI, efi_path="/EFI/BOOT/BOOTX64.EFI")
    bp = bootloader.plan_bootloader(desc, plan, efi_available=False, tree=FACTS)
    assert all("--no-nvram" in s.argv for s in bp.steps)
    assert bp.bootloader_id == "debian" and bp.loader == "\\EFI\\debian\\grubx64.efi"


def test_systemd_boot_and_none() -> None:
    desc, plan = moved(BootloaderKind.SYSTEMD_BOOT)
    bp = bootloader.plan_bootloader(desc, plan, efi_available=False, tree=FACTS)
    assert [s.argv for s in bp.steps] == [
        ("bootctl", "install", "--esp-path=/boot/efi", "--no-variables")
    ]
    assert not bp.regenerate
    desc, plan = moved(BootloaderKind.NONE)
    bp = bootloader.plan_bootloader(desc, plan, efi_available=True, tree=FACTS)
    assert bp.steps == () and "names no bootloader" in bp.notes[0]


def test_efibootmgr_listing_and_entry() -> None:
    text = (
        "BootCurrent: 0001\nTimeout: 0 seconds\nBootOrder: 0003,0001,0000\n"
        "Boot0000* UiApp\tFvVol(7cb8bdc9-f8eb-4f34-aaea-3ee4af6516a1)/FvFile(462caa21-...)\n"
        "Boot0001* UEFI QEMU NVMe Ctrl resurgo-d0 1\tPciRoot(0x0)/Pci(0x4,0x0)/NVMe(0x1,...)\n"
        "Boot0003* debian\tHD(1,GPT,6f1c...,0x800,0x100000)/File(\\EFI\\debian\\shimx64.efi)\n"
    )
    assert bootloader.parse_efibootmgr(text) == [
        ("0000", "UiApp"),
        ("0001", "UEFI QEMU NVMe Ctrl resurgo-d0 1"),
        ("0003", "debian"),
    ]
    step = bootloader.efibootmgr_create("/dev/nvme0n1", 1, "debian", "\\EFI\\debian\\grubx64.efi")
    assert step.argv == (
        "efibootmgr",
        "--create",
        "--disk",
        "/dev/nvme0n1",
        "--part",
        "1",
        "--label",
        "debian",
        "--loader",
        "\\EFI\\debian\\grubx64.efi",
    )
    assert not step.chroot


def test_tree_facts_of_a_fedora_style_tree(tmp_path: Path) -> None:
    (tmp_path / "usr/sbin").mkdir(parents=True)
    (tmp_path / "usr/sbin/grub2-install").touch()
    (tmp_path / "usr/lib/grub/x86_64-efi").mkdir(parents=True)
    facts = TreeFacts.of(tmp_path)
    assert facts.grub_install == "grub2-install" and facts.grub_cfg == "/boot/grub2/grub.cfg"
    assert facts.grub_targets == frozenset({"x86_64-efi"})
    assert TreeFacts.of(tmp_path / "none").grub_install == "grub-install"
