"""The full-stack source of test_full_stack.py: a UEFI Debian 12 whose root is LVM on LUKS
on md RAID1 over two disks, unlocked at boot with a key file on a keys stick.

The host has neither md nor device-mapper, so the stack is built inside a guest, as an
administrator moves a running system onto new disks: the cached base image (its tree
trimmed as the whole-cycle sources are, zstd added, and Debian's cryptsetup-initramfs
installed with what it needs: cryptsetup and busybox, fetched with ``apt-get download``)
boots with two blank disks and the keys stick and

    vda  the builder (the base image)
    vdb  GPT: p1 ESP (vfat), p2 /boot (ext4), p3 ─┐
    vdc  GPT: p1 ────────────────────────────────┴─ md RAID1 "root" (1.2)
              └─ LUKS2 "cryptroot" (key /root.key on the stick LABEL=RESURGO-KEYS)
                 └─ PV ── VG "vgstack": LV root (ext4 /), LV swap
    vdd  the keys stick (ext4 RESURGO-KEYS: root.key)

copies its root and /boot there, and writes what the new system boots by: crypttab
(``cryptroot UUID=... /dev/disk/by-label/RESURGO-KEYS:/root.key luks,keyscript=passdev``),
mdadm.conf, fstab (by UUID), ``resume=UUID=`` (GRUB's command line and initramfs-tools'
resume), its initramfs (host-only, MODULES=dep, with the stick's and NVMe's drivers
named), GRUB for UEFI on the ESP's removable path, grub.cfg.

The result (the two disks, the stick, the identities) is cached like the other images,
keyed on the base image, the packages and these scripts.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from resurgo.finalize.chroot import Chroot
from tests.vm import guest
from tests.vm.cycle import TRIMMED, partitions_mounted, trim, zstd_digest

MiB = guest.MiB
GiB = guest.GiB
DISK_SIZE = 2 * GiB
KEYS_SIZE = 16 * MiB
KEY_LABEL = "RESURGO-KEYS"
KEY_NAME = "root.key"
HOST = "resurgo-stack"
CHECK = "RESURGO-CHECK"
#: What Debian's cryptsetup-initramfs needs that the tree lacks (bookworm, from the
#: host's apt: the tier's hosts run the guests' release).
PACKAGES = ("busybox", "cryptsetup", "cryptsetup-initramfs")
BUILD_TIMEOUT = 2400.0
#: Bump when the build changes what it makes (a part of the cache key).
STACK_VERSION = 1

#: Where the listing of digests made before the save lives in the saved system (so that
#: it travels in the set), and what it covers: the system's programs and configuration,
#: the home and data trees, the markers.
LISTING = "/var/lib/resurgo-test/listing.sha256"
LISTED = ("/etc", "/home", "/root", "/srv", "/usr/bin", "/usr/sbin", "/usr/local",
          "/var/lib/dpkg")

# The recovered system runs it at its first boot (/resurgo-test/run.sh, put there before
# the save): what it is made of, every name it reaches its storage by, and the listing
# checked.
CHECK_SCRIPT = f"""#!/bin/sh
C={CHECK}
udevadm settle
for m in / /boot /boot/efi; do
    echo "$C mount $m $(findmnt -n -o SOURCE,FSTYPE "$m" | tr -s ' ')"
done
echo "$C swap $(swapon --noheadings --show=NAME,TYPE | tr -s ' ')"
echo "$C cmdline $(cat /proc/cmdline)"
sed "s/^/$C mdstat /" /proc/mdstat
md=/dev/$(awk '/^md/ {{print $1; exit}}' /proc/mdstat)
mdadm --detail --export "$md" | sed "s/^/$C md /"
echo "$C id luks $(cryptsetup luksUUID "$md")"
for n in root swap; do
    echo "$C id $n $(blkid -p -s UUID -o value /dev/vgstack/$n)"
done
echo "$C id boot $(blkid -p -s UUID -o value "$(findmnt -n -o SOURCE /boot)")"
echo "$C id esp $(blkid -p -s UUID -o value "$(findmnt -n -o SOURCE /boot/efi)")"
cryptsetup status cryptroot | sed "s/^ */$C crypt /"
lvs --noheadings -o vg_name,lv_name,lv_active | sed "s/^ */$C lvs /"
echo "$C lvmconfig $(lvmconfig devices/use_devicesfile)"
for f in /etc/crypttab /etc/mdadm/mdadm.conf /etc/fstab /etc/default/grub \\
         /etc/initramfs-tools/conf.d/resume /etc/lvm/devices/system.devices; do
    grep -v '^[[:space:]]*#' "$f" | grep . | sed "s|^|$C file $f |"
done
grep -E '^[[:space:]]*(linux|search)[[:space:]]' /boot/grub/grub.cfg | sed "s/^/$C grub /"
# The initramfs's own copies (they unlock and assemble before / is there): one compressed
# cpio (no microcode before it), gzip'd or, made where zstd is on the PATH, zstd's.
mkdir -p /run/rt
img="/boot/initrd.img-$(uname -r)"
unpack=zcat
[ "$(head -c 2 "$img" | od -An -tx1 | tr -d ' ')" = 1f8b ] || unpack="zstd -dcq"
$unpack "$img" | cpio -i --quiet -d -D /run/rt cryptroot/crypttab \\
    etc/mdadm/mdadm.conf conf/conf.d/resume etc/lvm/devices/system.devices
for f in cryptroot/crypttab etc/mdadm/mdadm.conf conf/conf.d/resume \\
         etc/lvm/devices/system.devices; do
    [ -e "/run/rt/$f" ] || continue
    grep -v '^[[:space:]]*#' "/run/rt/$f" | grep . | sed "s|^|$C initramfs $f |"
done
cd /
echo "$C listing $(sha256sum {LISTING} | cut -d' ' -f1)"
sha256sum --quiet -c {LISTING} 2>/dev/null | sed "s/^/$C differs /"
echo "$C listed $(wc -l <{LISTING})"
"""

# In the builder guest (vdb, vdc: the stack's disks; vdd: the keys stick).
BUILD_SCRIPT = f"""#!/bin/sh
set -eux
X="$RESURGO_EXCHANGE"
udevadm settle
sfdisk --quiet /dev/vdb <<EOF
label: gpt
start=1MiB, size=63MiB, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=esp
size=192MiB, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=boot
type=A19D880F-05FC-4D3B-A006-743F0F84911E, name=raid-a
EOF
sfdisk --quiet /dev/vdc <<EOF
label: gpt
start=1MiB, type=A19D880F-05FC-4D3B-A006-743F0F84911E, name=raid-b
EOF
udevadm settle
# Blank disks: both halves are zeros already, no resync needed.
mdadm --create /dev/md/root --run --assume-clean --metadata=1.2 --level=1 \\
    --homehost={HOST} --raid-devices=2 /dev/vdb3 /dev/vdc1
mkdir -p /run/keys
mount -o ro LABEL={KEY_LABEL} /run/keys
# A light PBKDF: the guest's CPU is emulated.
cryptsetup luksFormat --batch-mode --type luks2 --pbkdf argon2id --pbkdf-memory 65536 \\
    --iter-time 300 --key-file /run/keys/{KEY_NAME} /dev/md/root
cryptsetup open --key-file /run/keys/{KEY_NAME} /dev/md/root cryptroot
pvcreate /dev/mapper/cryptroot
vgcreate vgstack /dev/mapper/cryptroot
lvcreate --yes -n swap -L 96M vgstack
lvcreate --yes -n root -l 100%FREE vgstack
mkfs.ext4 -q -L root /dev/vgstack/root
mkswap -L swap /dev/vgstack/swap
mkfs.ext4 -q -L boot /dev/vdb2
mkfs.vfat -n ESP /dev/vdb1
N=/mnt/new
mkdir -p $N
mount /dev/vgstack/root $N
mkdir -p $N/boot
mount /dev/vdb2 $N/boot
tar -C / --one-file-system --xattrs --acls -cf - . | tar -C $N --xattrs --acls -xpf -
mkdir -p $N/boot/efi
mount /dev/vdb1 $N/boot/efi
luks=$(cryptsetup luksUUID /dev/md/root)
root=$(blkid -p -s UUID -o value /dev/vgstack/root)
swap=$(blkid -p -s UUID -o value /dev/vgstack/swap)
boot=$(blkid -p -s UUID -o value /dev/vdb2)
esp=$(blkid -p -s UUID -o value /dev/vdb1)
cat >$N/etc/fstab <<EOF
UUID=$root / ext4 errors=remount-ro 0 1
UUID=$boot /boot ext4 defaults 0 2
UUID=$esp /boot/efi vfat umask=0077,nofail 0 1
UUID=$swap none swap sw 0 0
EOF
echo "cryptroot UUID=$luks /dev/disk/by-label/{KEY_LABEL}:/{KEY_NAME} \\
luks,discard,keyscript=passdev" >$N/etc/crypttab
md=$(mdadm --detail --export /dev/md/root | sed -n 's/^MD_UUID=//p')
echo "ARRAY /dev/md/root metadata=1.2 UUID=$md name={HOST}:root" >>$N/etc/mdadm/mdadm.conf
echo "RESUME=UUID=$swap" >$N/etc/initramfs-tools/conf.d/resume
sed -i "s/^GRUB_CMDLINE_LINUX=.*/GRUB_CMDLINE_LINUX=\\"resume=UUID=$swap\\"/" \\
    $N/etc/default/grub
echo {HOST} >$N/etc/hostname
printf '127.0.0.1 localhost\\n127.0.1.1 {HOST}\\n' >$N/etc/hosts
# Host-only (MODULES=dep: a MODULES=most image takes many minutes to build under
# emulation, here and in every recovery that rebuilds it), with the drivers the
# administrator names for the keys stick and for the NVMe disks the system moves to.
sed -i 's/^MODULES=.*/MODULES=dep/' $N/etc/initramfs-tools/initramfs.conf
printf 'virtio_pci\nvirtio_blk\nnvme\n' >>$N/etc/initramfs-tools/modules
for d in dev proc sys run; do mount --rbind /$d $N/$d; done
chroot $N update-initramfs -u -k all
chroot $N grub-install --target=x86_64-efi --efi-directory=/boot/efi --removable \\
    --no-nvram
chroot $N update-grub
grep -q "resume=UUID=$swap" $N/boot/grub/grub.cfg
mdadm --detail --export /dev/md/root >"$X/md.env"
cp $N/etc/crypttab $N/etc/fstab $N/etc/mdadm/mdadm.conf "$X/"
umount -R $N || umount -R -l $N
vgchange -an vgstack
cryptsetup close cryptroot
mdadm --stop /dev/md/root
cat >"$X/ids.json" <<EOF
{{"luks": "$luks", "root": "$root", "swap": "$swap", "boot": "$boot", "esp": "$esp"}}
EOF
sync
"""


@dataclass(frozen=True)
class Stack:
    """The stack source: its two disks and keys stick (copies of the cache's, for one
    test to boot and change), the identities its build gave, and its kernel."""

    disk_a: Path
    disk_b: Path
    keys: Path
    key: bytes
    ids: dict[str, str]
    md: dict[str, str]
    kernel: str


def _debs(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(["apt-get", "download", *PACKAGES], cwd=directory, check=True,
                   capture_output=True, timeout=600)
    debs = sorted(directory.glob("*.deb"))
    assert len(debs) == len(PACKAGES), debs
    return debs


def _candidates() -> list[str]:
    """The versions apt would fetch (a part of the cache key)."""
    out = subprocess.run(["apt-cache", "policy", *PACKAGES], capture_output=True, text=True,
                         check=True).stdout
    return [line.split()[-1] for line in out.splitlines() if "Candidate:" in line]


def _prepare_builder(image: Path, debs: list[Path], kernel: str) -> None:
    """The builder's root, on the host: the packages installed, trimmed, zstd added."""
    with partitions_mounted(image, {"root": 3}, read_only=False) as m:
        root = m["root"]
        staged = root / "tmp/debs"
        staged.mkdir(parents=True, exist_ok=True)
        for deb in debs:
            shutil.copy2(deb, staged / deb.name)
        shutil.copy2("/usr/bin/zstd", root / "usr/local/bin/zstd")
        with Chroot(root) as ch:
            ch.execute(["dpkg", "-i", *(f"/tmp/debs/{d.name}" for d in debs)])
        guest.remove_tree(staged)
        trim(root, kernel)
        guest.run_cmd(["sync", "-f", root])


def stack_source(work: Path) -> Stack:
    """The stack source (built on first use, cached), copied to ``work``."""
    base = guest.base_image()
    digest = guest.cache_key(base.path.name, STACK_VERSION, BUILD_SCRIPT, PACKAGES,
                             _candidates(), TRIMMED, DISK_SIZE, zstd_digest())
    final = guest.DEFAULT_CACHE_DIR / f"full-stack-{digest}"
    with guest.locked(final.with_suffix(".lock")):
        if not (final / "COMPLETE").exists():
            partial = final.with_suffix(".partial")
            guest.remove_tree(partial)
            partial.mkdir(parents=True)
            builder = guest.copy_image(base, work / "builder.raw")
            _prepare_builder(builder.path, _debs(work / "debs"), base.kernel)
            disks = [guest.blank_disk(partial / f"disk-{n}.raw", DISK_SIZE) for n in "ab"]
            key = os.urandom(64)
            keys = guest.make_exchange_disk(partial / "keys.img", {KEY_NAME: key},
                                            size=KEYS_SIZE)
            guest.run_cmd(["e2label", keys, KEY_LABEL])
            run = guest.run_in_guest(
                BUILD_SCRIPT,
                image=guest.Drive(builder.path, serial="resurgo-builder"),
                workdir=work / "stack-build",
                extra_disks=[
                    guest.Drive(disks[0], serial="resurgo-stack-a"),
                    guest.Drive(disks[1], serial="resurgo-stack-b"),
                    guest.Drive(keys, serial="resurgo-keys"),
                ],
                firmware="uefi",
                timeout=BUILD_TIMEOUT,
            )
            assert run.exit_status == 0, run.output[-4000:] or guest._tail(run.boot.text, 60)
            for name in ("md.env", "ids.json", "crypttab", "fstab", "mdadm.conf"):
                shutil.copyfile(run.exchange / name, partial / name)
            (partial / "kernel").write_text(base.kernel)
            builder.path.unlink()
            (partial / "COMPLETE").write_text("")
            partial.rename(final)
    copies = {
        name: guest.copy_image(dataclasses.replace(base, path=final / name), work / name).path
        for name in ("disk-a.raw", "disk-b.raw", "keys.img")
    }
    md = dict(line.split("=", 1) for line in (final / "md.env").read_text().splitlines()
              if "=" in line)
    with guest.mounted_image(copies["keys.img"]) as mnt:
        key = (mnt / KEY_NAME).read_bytes()
    return Stack(copies["disk-a.raw"], copies["disk-b.raw"], copies["keys.img"], key,
                 json.loads((final / "ids.json").read_text()), md,
                 (final / "kernel").read_text().strip())
