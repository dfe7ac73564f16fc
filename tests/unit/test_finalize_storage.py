"""finalize: the identities of recreated devices, and the storage file rewrites."""

from __future__ import annotations

import dataclasses

import pytest

from resurgo.finalize import cmdline, identity, storageconf
from resurgo.finalize.identity import Identities, Identity, Kind
from resurgo.model import Disk, LuksVolume, RaidArray
from resurgo.plan import make_plan
from resurgo.plan.model import PlanOptions
from tests.support.builders import (
    BY_ID,
    actual,
    description,
    disk,
    ext4,
    part,
    vda_to_nvme,
)
from tests.support.consts import RAID

ROOT_UUID = "11111111-2222-4333-8444-001575145378"
BOOT_UUID = "11111111-2222-4333-8444-000719716148"
SWAP_UUID = "33333333-4444-4555-8666-777777777777"
PARTUUID2 = "00000000-0000-4000-8000-000000000002"


def changed(ids: Identities, record: str, **kw: str | None) -> Identities:
    """ids with one identity as blkid might read it after recreation."""
    items = tuple(dataclasses.replace(i, **kw) if i.record == record else i for i in ids.items)
    return Identities(items, ids.links)


# ---------------------------------------------------------------------------- identities


def test_planned_identities_carry_old_and_new_paths_uuids_and_partuuids() -> None:
    ids, _ = vda_to_nvme()
    root = ids.by_record("fs.vda3")
    assert root is not None
    assert root.kind == Kind.FILESYSTEM
    assert root.old_paths == ("/dev/vda3", f"{BY_ID}-part3")
    assert root.new_path == "/dev/nvme0n1p3"
    assert root.old_uuid == root.new_uuid == ROOT_UUID
    assert root.mountpoints == ("/",)
    esp = ids.by_record("fs.vda1")
    assert esp is not None and esp.old_uuid == "ABCD-1234" == esp.new_uuid
    sw = ids.by_record("swap.vda4")
    assert sw is not None and sw.kind == Kind.SWAP and sw.new_path == "/dev/nvme0n1p4"
    p2 = ids.by_record("part.vda2")
    assert p2 is not None and p2.old_partuuid == p2.new_partuuid == PARTUUID2


def test_probe_takes_what_blkid_reads_and_keeps_the_plan_where_nothing_is_there() -> None:
    ids, _ = vda_to_nvme()
    read = {
        "/dev/nvme0n1p1": {
            "UUID": "5E7F-0A1B",
            "LABEL": "EFI",
            "TYPE": "vfat",
            "PART_ENTRY_UUID": "00000000-0000-4000-8000-000000000001",
        },
        "/dev/nvme0n1p3": {
            "UUID": ROOT_UUID,
            "LABEL": "root",
            "TYPE": "ext4",
            "PART_ENTRY_UUID": "00000000-0000-4000-8000-000000000003",
        },
    }
    probed = identity.probe(ids, blkid=lambda d: read[d], exists=lambda d: d in read)
    esp = probed.by_record("fs.vda1")
    assert esp is not None and esp.old_uuid == "ABCD-1234" and esp.new_uuid == "5E7F-0A1B"
    boot = probed.by_record("fs.vda2")
    assert boot == ids.by_record("fs.vda2")  # /dev/nvme0n1p2 not there: the plan's values
    p1 = probed.by_record("part.vda1")
    assert p1 is not None and p1.new_partuuid == "00000000-0000-4000-8000-000000000001"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("/dev/vda3", f"UUID={ROOT_UUID}"),
        (f"{BY_ID}-part3", f"UUID={ROOT_UUID}"),
        (f"UUID={ROOT_UUID}", None),
        (f"UUID={ROOT_UUID.upper()}", None),
        (f"/dev/disk/by-uuid/{ROOT_UUID}", None),
        ("LABEL=root", None),
        ("/dev/nvme0n1p3", None),
        ("/dev/mapper/vg0-root", None),
        ("tmpfs", None),
        ("UUID=99999999-0000-4000-8000-000000000000", None),
    ],
)
def test_resolve_rewrites_only_names_that_no_longer_lead_to_the_device(
    spec: str, expected: str | None
) -> None:
    ids, _ = vda_to_nvme()
    assert identity.resolve(spec, ids, [Kind.FILESYSTEM]).spec == expected


def test_a_link_that_still_leads_to_the_new_device_is_kept() -> None:
    ids, _ = vda_to_nvme()
    ids = Identities(ids.items, {f"{BY_ID}-part3": "/dev/nvme0n1p3"})
    assert identity.resolve(f"{BY_ID}-part3", ids, [Kind.FILESYSTEM]).spec is None


def test_an_unknown_kernel_name_is_found_by_its_mount_point_else_warned_about() -> None:
    ids, _ = vda_to_nvme()
    res = identity.resolve("/dev/sdz9", ids, [Kind.FILESYSTEM], mountpoint="/boot")
    assert res.spec == f"UUID={BOOT_UUID}"
    res = identity.resolve("/dev/sdz9", ids, [Kind.FILESYSTEM], mountpoint="/nowhere")
    assert res.spec is None and res.warning is not None and "/dev/sdz9" in res.warning


def test_a_lost_label_becomes_the_uuid_in_the_form_it_was_written() -> None:
    ids, _ = vda_to_nvme()
    ids = changed(ids, "fs.vda1", new_label=None, new_uuid="5E7F-0A1B")
    assert identity.resolve("LABEL=EFI", ids, [Kind.FILESYSTEM]).spec == "UUID=5E7F-0A1B"
    res = identity.resolve("/dev/disk/by-label/EFI", ids, [Kind.FILESYSTEM])
    assert res.spec == "/dev/disk/by-uuid/5E7F-0A1B"


# ---------------------------------------------------------------------------- fstab

FSTAB = f"""\
# /etc/fstab: static file system information.
#
# Use 'blkid' to print the universally unique identifier for a
# device; this may be used with UUID= as a more robust way to name devices
# that works even if disks are added and removed. See fstab(5).
#
# <file system> <mount point>   <type>  <options>       <dump>  <pass>
# / was on /dev/vda3 during installation
/dev/vda3\t/\text4\terrors=remount-ro\t0\t1
# /boot was on /dev/vda2 during installation
UUID={BOOT_UUID} /boot           ext4    defaults        0       2
# /boot/efi was on /dev/vda1 during installation
UUID=ABCD-1234  /boot/efi       vfat    umask=0077      0       1
{BY_ID}-part4 none swap sw 0 0
PARTUUID={PARTUUID2}  /mnt/boot-ro  ext4  ro,noauto  0 0
LABEL=data /srv ext4 defaults,nofail 0 2
/dev/sr0        /media/cdrom0   udf,iso9660 user,noauto     0       0
tmpfs /tmp tmpfs defaults 0 0
/srv/export /exports/srv none bind 0 0
nas:/volume1/backup /mnt/backup nfs defaults,_netdev 0 0
/swapfile none swap sw 0 0
"""


def test_fstab_devices_by_kernel_name_by_id_and_changed_uuid_or_partuuid_are_rewritten() -> None:
    ids, _ = vda_to_nvme()
    ids = changed(ids, "fs.vda1", new_uuid="5E7F-0A1B")
    ids = changed(ids, "part.vda2", new_partuuid="aaaaaaaa-0000-4000-8000-000000000002")
    ids = changed(ids, "fs.vda2", new_partuuid="aaaaaaaa-0000-4000-8000-000000000002")
    rw = storageconf.rewrite_fstab(FSTAB, ids)
    expected = (
        FSTAB.replace("/dev/vda3\t/", f"UUID={ROOT_UUID}\t/")
        .replace("UUID=ABCD-1234  /boot/efi", "UUID=5E7F-0A1B  /boot/efi")
        .replace(f"{BY_ID}-part4 none", f"UUID={SWAP_UUID} none")
        .replace(f"PARTUUID={PARTUUID2}", "PARTUUID=aaaaaaaa-0000-4000-8000-000000000002")
    )
    assert rw.text == expected
    assert [c.line for c in rw.changes] == [9, 13, 14, 15]
    why = {c.line: c.why for c in rw.changes}
    assert why[9] == "fs.vda3 was /dev/vda3 and is now /dev/nvme0n1p3"
    assert why[13] == "the UUID of fs.vda1 changed from ABCD-1234 to 5E7F-0A1B"
    assert "does not lead to swap.vda4" in why[14]
    assert "PARTUUID of fs.vda2" in why[15]
    # The comment naming /dev/vda3 is a comment: left as it was.
    assert "# / was on /dev/vda3 during installation\n" in rw.text


def test_fstab_that_names_everything_by_uuid_is_left_byte_identical() -> None:
    ids, _ = vda_to_nvme()
    text = f"UUID={ROOT_UUID} / ext4 defaults 0 1\r\nUUID={SWAP_UUID} none swap sw 0 0"
    rw = storageconf.rewrite_fstab(text, ids)
    assert rw.text == text and not rw.changed


def test_fstab_blanks_in_mount_points_are_octal_escapes() -> None:
    ids, _ = vda_to_nvme()
    ids = Identities(
        tuple(
            dataclasses.replace(i, mountpoints=("/my data",)) if i.record == "fs.vda2" else i
            for i in ids.items
        )
    )
    rw = storageconf.rewrite_fstab("/dev/sdq2 /my\\040data ext4 defaults 0 2\n", ids)
    assert rw.text == f"UUID={BOOT_UUID} /my\\040data ext4 defaults 0 2\n"


# ---------------------------------------------------------------------------- crypttab


def luks_raid_ids() -> Identities:
    """sda+sdb: md0 (raid1) -> LUKS "cryptroot"; sda3 plain random-key swap; to vda/vdb."""
    a, b = disk("sda"), disk("sdb")
    a1, b1 = part(a, 1, 1 << 20, 1 << 30, RAID), part(b, 1, 1 << 20, 1 << 30, RAID)
    a3 = part(a, 3, (1 << 30) + (1 << 20), 1 << 30)
    md = RaidArray(
        "md.md0",
        "/dev/md0",
        "raid1",
        "1.2",
        "3a1b2c3d:4e5f6071:8293a4b5:c6d7e8f9",
        (a1.id, b1.id),
        1 << 30,
        name="host:0",
    )
    lk = LuksVolume(
        "luks.md0",
        md.id,
        2,
        "5d0c7e1a-2b3c-4d5e-8f90-a1b2c3d4e5f6",
        "aes-xts-plain64",
        512,
        name="cryptroot",
    )
    root = ext4(lk.id, "/", 1 << 28, fid="fs.dm-0")
    desc = description(
        disks=[a, b],
        partitions=[a1, b1, a3],
        raid_arrays=[md],
        luks_volumes=[lk],
        filesystems=[root],
    )
    plan = make_plan(
        desc,
        [actual("vda", transport="virtio"), actual("vdb", transport="virtio")],
        PlanOptions(
            which=str,
            maps=(("disk.sda", "/dev/vda"), ("disk.sdb", "/dev/vdb")),
            keys=frozenset({"luks.md0"}),
        ),
    )
    assert plan.ok, plan.failures
    return identity.planned(desc, plan)


CRYPTTAB = """\
# <target name>\t<source device>\t\t<key file>\t<options>
cryptroot /dev/md0 none luks,discard
cryptswap\t/dev/sda3\t/dev/urandom\tswap,cipher=aes-xts-plain64,size=512
cryptdata UUID=0e0e0e0e-0000-4000-8000-000000000000 /root/data.key luks
"""


def test_crypttab_plain_swap_on_a_moved_partition_gets_its_partuuid() -> None:
    ids = luks_raid_ids()
    rw = storageconf.rewrite_crypttab(CRYPTTAB, ids)
    new_pu = ids.by_record("part.sda3").new_partuuid  # type: ignore[union-attr]
    assert new_pu
    assert rw.text == CRYPTTAB.replace("cryptswap\t/dev/sda3\t", f"cryptswap\tPARTUUID={new_pu}\t")
    assert [c.line for c in rw.changes] == [3]
    assert rw.changes[0].why == "part.sda3 was /dev/sda3 and is now /dev/vda3"


def test_crypttab_luks_source_by_changed_uuid_and_by_old_kernel_name() -> None:
    ids = luks_raid_ids()
    new = "77777777-0000-4000-8000-000000000000"
    ids = changed(ids, "luks.md0", new_uuid=new)
    text = "cryptroot UUID=5d0c7e1a-2b3c-4d5e-8f90-a1b2c3d4e5f6 none luks\n"
    rw = storageconf.rewrite_crypttab(text, ids)
    assert rw.text == f"cryptroot UUID={new} none luks\n"
    # An unknown kernel name is found by the mapping's name.
    rw = storageconf.rewrite_crypttab("cryptroot /dev/sdx1 none luks\n", ids)
    assert rw.text == f"cryptroot UUID={new} none luks\n"


# ---------------------------------------------------------------------------- mdadm.conf

MDADM_CONF = """\
# mdadm.conf
#
# !NB! Run update-initramfs -u after updating this file.
# !NB! This will ensure that initramfs has an uptodate copy.
#
DEVICE /dev/sda1 /dev/sdb1 /dev/sdc*
HOMEHOST <system>
MAILADDR root

# definitions of existing MD arrays
ARRAY /dev/md/0  metadata=1.2 UUID=3a1b2c3d:4e5f6071:8293a4b5:c6d7e8f9 name=host:0
   devices=/dev/sda1,/dev/sdb1
ARRAY /dev/md/1 metadata=1.2 UUID=aaaaaaaa:bbbbbbbb:cccccccc:dddddddd name=host:1
"""


def test_mdadm_conf_devices_and_a_changed_array_uuid() -> None:
    ids = luks_raid_ids()
    ids = changed(ids, "md.md0", new_uuid="0f0e0d0c-0b0a-0908-0706-050403020100")
    rw = storageconf.rewrite_mdadm_conf(MDADM_CONF, ids)
    assert rw.text == (
        MDADM_CONF.replace("DEVICE /dev/sda1 /dev/sdb1", "DEVICE /dev/vda1 /dev/vdb1")
        .replace(
            "UUID=3a1b2c3d:4e5f6071:8293a4b5:c6d7e8f9", "UUID=0f0e0d0c:0b0a0908:07060504:03020100"
        )
        .replace("devices=/dev/sda1,/dev/sdb1", "devices=/dev/vda1,/dev/vdb1")
    )
    assert [c.line for c in rw.changes] == [6, 11, 12]
    assert "the UUID of md.md0 changed" in rw.changes[1].why


def test_mdadm_conf_of_arrays_recreated_as_they_were_is_unchanged() -> None:
    ids = luks_raid_ids()
    text = MDADM_CONF.replace("DEVICE /dev/sda1 /dev/sdb1 /dev/sdc*", "DEVICE partitions")
    text = text.replace("   devices=/dev/sda1,/dev/sdb1\n", "")
    assert storageconf.rewrite_mdadm_conf(text, ids).text == text
    assert not storageconf.rewrite_mdadm_conf(text, ids).changed


# ---------------------------------------------------------------------------- resume, cmdline


def test_resume_conf_names_the_swap_by_uuid() -> None:
    ids, _ = vda_to_nvme()
    text = "# resume from hibernation\nRESUME=/dev/vda4\n"
    assert storageconf.rewrite_resume_conf(text, ids).text == (
        f"# resume from hibernation\nRESUME=UUID={SWAP_UUID}\n"
    )
    for same in ("RESUME=none\n", f'RESUME="UUID={SWAP_UUID}"\n', "RESUME=auto\n"):
        assert not storageconf.rewrite_resume_conf(same, ids).changed


GRUB_DEFAULT = """\
# If you change this file, run 'update-grub' afterwards to update
# /boot/grub/grub.cfg.
# For full documentation of the options in this file, see:
#   info -f grub -n 'Simple configuration'

GRUB_DEFAULT=0
GRUB_TIMEOUT=5
GRUB_DISTRIBUTOR=`lsb_release -i -s 2> /dev/null || echo Debian`
GRUB_CMDLINE_LINUX_DEFAULT="quiet resume=/dev/vda4"
GRUB_CMDLINE_LINUX="root=/dev/vda3  rootflags=noatime"
#GRUB_DISABLE_LINUX_UUID=true
GRUB_DISABLE_LINUX_UUID=true
# GRUB_CMDLINE_LINUX="root=/dev/vda3"
"""


def test_grub_defaults_cmdline_devices_and_uuid_switch() -> None:
    ids, _ = vda_to_nvme()
    rw = cmdline.rewrite_grub_default(GRUB_DEFAULT, ids)
    assert rw.text == (
        GRUB_DEFAULT.replace('"quiet resume=/dev/vda4"', f'"quiet resume=UUID={SWAP_UUID}"')
        .replace('"root=/dev/vda3  rootflags', f'"root=UUID={ROOT_UUID}  rootflags')
        .replace("\nGRUB_DISABLE_LINUX_UUID=true", "\nGRUB_DISABLE_LINUX_UUID=false")
    )
    assert [c.line for c in rw.changes] == [9, 10, 12]
    assert rw.changes[0].why.startswith("resume=: swap.vda4 was /dev/vda4")


def test_cmdline_luks_and_md_uuid_parameters() -> None:
    ids = luks_raid_ids()
    ids = changed(ids, "luks.md0", new_uuid="77777777-0000-4000-8000-000000000000")
    ids = changed(ids, "md.md0", new_uuid="0f0e0d0c-0b0a-0908-0706-050403020100")
    line = (
        "BOOT_IMAGE=/vmlinuz ro rd.luks.uuid=luks-5d0c7e1a-2b3c-4d5e-8f90-a1b2c3d4e5f6 "
        "rd.md.uuid=3a1b2c3d:4e5f6071:8293a4b5:c6d7e8f9 "
        "rd.luks.name=5d0c7e1a-2b3c-4d5e-8f90-a1b2c3d4e5f6=cryptroot quiet"
    )
    new, whys, warnings = cmdline.rewrite_cmdline(line, ids)
    assert new == (
        "BOOT_IMAGE=/vmlinuz ro rd.luks.uuid=luks-77777777-0000-4000-8000-000000000000 "
        "rd.md.uuid=0f0e0d0c:0b0a0908:07060504:03020100 "
        "rd.luks.name=77777777-0000-4000-8000-000000000000=cryptroot quiet"
    )
    assert len(whys) == 3 and warnings == []


def test_kernel_cmdline_file_and_loader_entry() -> None:
    ids, _ = vda_to_nvme()
    rw = cmdline.rewrite_kernel_cmdline("root=/dev/vda3 rw quiet\n", ids)
    assert rw.text == f"root=UUID={ROOT_UUID} rw quiet\n"
    entry = "title Debian\nlinux /vmlinuz\noptions root=/dev/vda3 rw\n"
    assert cmdline.rewrite_loader_entry(entry, ids).text == (
        f"title Debian\nlinux /vmlinuz\noptions root=UUID={ROOT_UUID} rw\n"
    )


# ---------------------------------------------------------------------------- grub.cfg

GRUB_CFG = """\
menuentry 'Debian GNU/Linux' --class debian --class gnu-linux {
\tload_video
\tinsmod ext2
\tsearch --no-floppy --fs-uuid --set=root 11111111-2222-4333-8444-000719716148
\techo\t'Loading Linux 6.1.0-50-amd64 ...'
\tlinux\t/vmlinuz-6.1.0-50-amd64 root=/dev/loop7p3 ro  console=ttyS0 resume=/dev/vda4
\techo\t'Loading initial ramdisk ...'
\tinitrd\t/initrd.img-6.1.0-50-amd64
}
"""


def test_grub_cfg_root_from_a_loop_device_becomes_the_uuid() -> None:
    ids, _ = vda_to_nvme()
    rw = cmdline.fix_grub_cfg(GRUB_CFG, ids, f"UUID={ROOT_UUID}")
    assert rw.text == GRUB_CFG.replace(
        "root=/dev/loop7p3 ro  console=ttyS0 resume=/dev/vda4",
        f"root=UUID={ROOT_UUID} ro  console=ttyS0 resume=UUID={SWAP_UUID}",
    )
    assert [c.line for c in rw.changes] == [6]
    assert cmdline.grub_cfg_roots(rw.text) == [f"UUID={ROOT_UUID}"]
    # Already right: untouched.
    assert not cmdline.fix_grub_cfg(rw.text, ids, f"UUID={ROOT_UUID}").changed


def test_grub_cfg_root_on_lvm_is_left_alone() -> None:
    ids, _ = vda_to_nvme()
    cfg = "\tlinux /vmlinuz root=/dev/mapper/vg0-root ro\n"
    assert not cmdline.fix_grub_cfg(cfg, ids, f"UUID={ROOT_UUID}").changed


def test_identity_stable_spec_prefers_uuid_then_partuuid() -> None:
    assert Identity("x", Kind.FILESYSTEM, new_uuid="u", new_partuuid="p").stable_spec() == "UUID=u"
    assert Identity("x", Kind.PARTITION, new_partuuid="p").stable_spec() == "PARTUUID=p"
    assert Identity("x", Kind.PARTITION).stable_spec() is None
    assert identity.is_hardware_name("/dev/nvme0n1p3") and identity.is_hardware_name("/dev/sda")
    assert not identity.is_hardware_name("/dev/md0")
    assert identity.mapper_path("vg-sys", "swap_1") == "/dev/mapper/vg--sys-swap_1"


def test_saved_paths_of_a_disk_include_its_by_id_link() -> None:
    d = Disk("disk.sda", "/dev/sda", 1 << 30, 512, 512, by_id="/dev/disk/by-id/ata-X_1")
    desc = description(disks=[d])
    assert identity.saved_paths(desc, "disk.sda") == ("/dev/sda", "/dev/disk/by-id/ata-X_1")


def test_root_by_an_unknown_hardware_name_is_the_filesystem_on_slash() -> None:
    ids, _ = vda_to_nvme()
    new, whys, warnings = cmdline.rewrite_cmdline(
        "root=/dev/disk/by-path/pci-0000:00:1f.2-ata-1-part3 resume=/dev/sdq4 ro", ids
    )
    assert new == f"root=UUID={ROOT_UUID} resume=/dev/sdq4 ro"
    assert len(whys) == 1 and len(warnings) == 1 and "/dev/sdq4" in warnings[0]


def test_probe_warns_when_blkid_finds_nothing_where_a_filesystem_was_made() -> None:
    ids, _ = vda_to_nvme()
    warnings: list[str] = []
    probed = identity.probe(
        ids, blkid=lambda d: {}, exists=lambda d: d == "/dev/nvme0n1p3", warnings=warnings
    )
    root = probed.by_record("fs.vda3")
    assert root is not None and root.new_uuid is None
    assert warnings == [
        "fs.vda3: blkid finds nothing on /dev/nvme0n1p3; the configuration naming it is left "
        "as it is"
    ]
    # Named by its UUID, it is then left alone rather than renamed to a guess.
    assert identity.resolve(f"UUID={ROOT_UUID}", probed, [Kind.FILESYSTEM]).spec is None
