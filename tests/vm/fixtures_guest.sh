#!/bin/sh
# Runs INSIDE the qemu guest (see record_fixtures.py): builds an md + LUKS + LVM stack on
# the blank disks vdb, vdc, vdd and records the storage tools' output about it into
# $RESURGO_EXCHANGE/fixtures, one file per command, with COMMANDS.tsv naming each command.
#
#   vdb, vdc (GPT)  p1 320 MiB ─┬─ md0  RAID1, metadata 1.2, name "data"
#                               └─ LUKS2 "cryptdata" ── PV ─┐
#   vdb, vdc, vdd   p2 128 MiB ─── md1  RAID5, chunk 128 KiB, name "scratch" ── ext4
#   vdd (MBR)       p1 200 MiB ─── PV ──────────────────────┴─ VG vg0 (8 MiB extents):
#                   p5 64 MiB (logical) ── LUKS1 "cryptswap" ── swap (in use)
#       data   linear 64 MiB ─ ext4, mounted on /mnt/data
#       stripe striped, 2 stripes of 64 KiB, 32 MiB ─ vfat
#       pool   thin pool 48 MiB ── thin1 thin LV, 128 MiB virtual ─ btrfs
#       mirror raid1 (-m 1), 16 MiB ─ nothing on it
set -eu
OUT="$RESURGO_EXCHANGE/fixtures"
rm -rf "$OUT"
mkdir -p "$OUT/blkid"
PASS=/run/resurgo-throwaway.key
step() { echo "== $(cut -d' ' -f1 /proc/uptime) $*"; }

step versions
{
    echo "kernel $(uname -r)"
    mdadm --version 2>&1
    cryptsetup --version
    lvm version | grep -v '^ *Configuration:'
    echo "thin-provisioning-tools $(thin_check --version 2>&1)"
    blkid -V
    sfdisk --version
    mke2fs -V 2>&1 | head -1
    dpkg-query -W -f '${Package} ${Version}\n' mdadm cryptsetup-bin lvm2 dmsetup \
        thin-provisioning-tools util-linux fdisk e2fsprogs btrfs-progs dosfstools udev \
        linux-image-amd64
} >"$OUT/versions.txt"

step partitions
sfdisk --quiet --wipe always /dev/vdb <<'EOF'
label: gpt
size=320MiB, type=A19D880F-05FC-4D3B-A006-743F0F84911E, name="raid1-a"
size=128MiB, type=A19D880F-05FC-4D3B-A006-743F0F84911E, name="raid5-a"
EOF
sfdisk --quiet --wipe always /dev/vdc <<'EOF'
label: gpt
size=320MiB, type=A19D880F-05FC-4D3B-A006-743F0F84911E, name="raid1-b"
size=128MiB, type=A19D880F-05FC-4D3B-A006-743F0F84911E, name="raid5-b"
EOF
sfdisk --quiet --wipe always /dev/vdd <<'EOF'
label: dos
size=200MiB, type=8e
size=128MiB, type=fd
type=5
size=64MiB, type=83
EOF
udevadm settle

step md
mdadm --create /dev/md0 --run --metadata=1.2 --level=1 --raid-devices=2 --name=data \
    /dev/vdb1 /dev/vdc1
mdadm --create /dev/md1 --run --metadata=1.2 --level=5 --raid-devices=3 --chunk=128 \
    --name=scratch /dev/vdb2 /dev/vdc2 /dev/vdd2
udevadm settle
mdadm --wait /dev/md0 /dev/md1 || true

step luks
# A throw-away passphrase in a tmpfs file; cheap KDF settings keep TCG emulation quick.
printf '%s' 'resurgo-fixture-throwaway' >"$PASS"
cryptsetup luksFormat --batch-mode --type luks2 --cipher aes-xts-plain64 --key-size 512 \
    --hash sha256 --pbkdf argon2id --pbkdf-memory 32768 --pbkdf-parallel 1 \
    --pbkdf-force-iterations 4 --label resurgo-data --subsystem resurgo-test \
    --key-file "$PASS" /dev/md0
cryptsetup open --key-file "$PASS" /dev/md0 cryptdata
cryptsetup luksFormat --batch-mode --type luks1 --cipher aes-xts-plain64 --key-size 256 \
    --hash sha256 --pbkdf-force-iterations 1000 --key-file "$PASS" /dev/vdd5
cryptsetup open --key-file "$PASS" /dev/vdd5 cryptswap
rm -f "$PASS"
mkswap --label cryptswap /dev/mapper/cryptswap
swapon /dev/mapper/cryptswap

step lvm
pvcreate --yes /dev/mapper/cryptdata /dev/vdd1
vgcreate --yes --physicalextentsize 8m vg0 /dev/mapper/cryptdata /dev/vdd1
lvcreate --yes --name data --size 64m vg0 /dev/mapper/cryptdata
lvcreate --yes --name stripe --stripes 2 --stripesize 64k --size 32m vg0
lvcreate --yes --type thin-pool --name pool --size 48m vg0 /dev/mapper/cryptdata
lvcreate --yes --name thin1 --virtualsize 128m --thinpool vg0/pool
lvcreate --yes --type raid1 --mirrors 1 --name mirror --size 16m vg0
udevadm settle

step filesystems
mkfs.ext4 -q -L scratch /dev/md1
mkfs.ext4 -q -L data /dev/vg0/data
mkfs.vfat -n STRIPE /dev/vg0/stripe
mkfs.btrfs -q -K -L thin /dev/vg0/thin1
mkdir -p /mnt/data
mount /dev/vg0/data /mnt/data
echo hello >/mnt/data/hello
udevadm settle

step sync
for _ in $(seq 240); do
    pct=$(lvs --noheadings -o sync_percent vg0/mirror | tr -d ' ')
    [ "$pct" = 100.00 ] && break
    sleep 0.5
done
mdadm --wait /dev/md0 /dev/md1 || true

step record
set +e
# rec FILE COMMAND: run COMMAND (a shell line) with its stdout into $OUT/FILE.
rec() {
    sh -c "$2" >"$OUT/$1" 2>"$OUT/.stderr"
    rc=$?
    printf '%s\t%s\t%s\n' "$1" "$rc" "$2" >>"$OUT/COMMANDS.tsv"
    if [ -s "$OUT/.stderr" ]; then
        { echo "## $1 (exit $rc): $2"; cat "$OUT/.stderr"; } >>"$OUT/stderr.log"
    fi
    rm -f "$OUT/.stderr"
}

rec proc-mdstat.txt 'cat /proc/mdstat'
rec proc-partitions.txt 'cat /proc/partitions'
rec proc-swaps.txt 'cat /proc/swaps'
rec proc-mountinfo.txt 'cat /proc/self/mountinfo'
for md in md0 md1; do
    rec "mdadm-detail-$md.env" "mdadm --detail --export /dev/$md"
    rec "mdadm-detail-$md.txt" "mdadm --detail /dev/$md"
done
rec mdadm-examine-vdb1.env 'mdadm --examine --export /dev/vdb1'
rec mdadm-examine-vdd2.env 'mdadm --examine --export /dev/vdd2'
rec mdadm-detail-scan.txt 'mdadm --detail --scan --verbose'

rec luks2-md0.json 'cryptsetup luksDump --dump-json-metadata /dev/md0'
rec luks2-md0-dump.txt 'cryptsetup luksDump /dev/md0'
rec luks1-vdd5-dump.txt 'cryptsetup luksDump /dev/vdd5'

rec lvm-fullreport.json 'lvm fullreport --reportformat json'
rec lvm-fullreport-bytes.json 'lvm fullreport --reportformat json --units b --nosuffix'
rec lvs.json 'lvs --reportformat json --units b --nosuffix -o lv_all,seg_all --all'
rec pvs.json 'pvs --reportformat json --units b --nosuffix -o pv_all'
rec pvs-segments.json 'pvs --reportformat json --units b --nosuffix --segments -o pv_name,pvseg_all,lv_name,lv_uuid'
rec vgs.json 'vgs --reportformat json --units b --nosuffix -o vg_all'
rec vgcfgbackup-vg0.txt 'vgcfgbackup --file /run/vg0.vgcfg vg0 >/dev/null && cat /run/vg0.vgcfg'

rec dmsetup-table.txt 'dmsetup table'
rec dmsetup-info.txt "dmsetup info --columns --noheadings --nameprefixes --separator ' ' -o name,uuid,blkdevname,major,minor,attr,open,segments,events,subsystem,vg_name,lv_name,lv_layer,devnos_used,blkdevs_used"
rec dmsetup-deps.txt 'dmsetup deps -o devname'

rec lsblk.json 'lsblk --json --bytes -O'
rec lsblk-tree.txt 'lsblk -o NAME,MAJ:MIN,TYPE,SIZE,FSTYPE,LABEL,MOUNTPOINTS /dev/vdb /dev/vdc /dev/vdd'
for disk in vdb vdc vdd; do
    rec "sfdisk-$disk.json" "sfdisk --json /dev/$disk"
done

# blkid -p of every device in the stack (not the boot disk vda, nor the exchange disk).
for sys in /sys/class/block/*; do
    name=${sys##*/}
    case $name in loop* | ram* | sr* | fd* | vda*) continue ;; esac
    grep -qsx resurgo-xchg "$sys/serial" && continue
    dev=/dev/$name
    if [ -f "$sys/dm/name" ]; then
        name=$(cat "$sys/dm/name")
        dev=/dev/mapper/$name
    fi
    rec "blkid/$name.env" "blkid -p -o export $dev"
done

rec sys-block-holders-slaves.txt 'ls -l /sys/block/*/holders/ /sys/block/*/slaves/'
rec sys-block.json "python3 $RESURGO_EXCHANGE/sysblock.py"

echo "recorded $(wc -l <"$OUT/COMMANDS.tsv") files"
