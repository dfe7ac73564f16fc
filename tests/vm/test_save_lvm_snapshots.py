"""`save --snapshot auto` of a system on LVM while SQLite databases are written in a
tight loop (vm tier: the build host has no device-mapper).

The guest is the cached base image (guest.guest_disk, shared with the other vm tests)
with one blank disk, on which the script builds the system that is saved, as root
mounted at /mnt/sys (the running guest's own root is not on LVM: building and caching a
second bootable image with its root on LVM would cost minutes for the same code path;
the save sees a root on LVM either way, through --root):

    vdb1 ── PV ── vgsave ─┬─ root  linear 300 MiB, ext4   /           (classic snapshot)
                          ├─ data  linear 300 MiB, XFS    /data       (classic, nouuid)
                          └─ pool  thin pool 200 MiB ── srv thin 320 MiB, ext4  /srv
                                                                       (thin snapshot)

A SQLite database (WAL) on / and one on /srv are each written by a process of their
own, one row per transaction (rows numbered 1, 2, ... and a total updated in the same
transaction), in a tight loop from before save 2 to after it (they are paused, SIGSTOP,
for saves 1 and 3, whose checks do not involve them: on the one vCPU a guest gets in CI
they took most of the CPU those saves needed). Then, in the guest:

1. a save whose post-save hook (run once the snapshots are taken) kills it with SIGKILL:
   its three snapshots stay behind, tagged; their ext4 superblocks are noted (lvcreate
   froze the filesystems, for the classic and the thin snapshot: clean journals) and
   the two decoys beside them (a snapshot named like ours without our tags, one with our
   tag and no set tag) are made;
2. a save that removes the leftovers (not the decoys), reads / and /data from classic
   snapshots and /srv from a thin one, while the writers go on (their totals before and after it);
3. a save with a snapshot too small for what its post-save hook writes to / (24 MiB into
   the one extent of --snapshot-size 1): the snapshot overflows, the save fails (exit 1)
   naming it, no set is added, no snapshot is left.

On the host: the databases restored from set 2 (resurgo restore) pass `PRAGMA
integrity_check`, and each holds rows 1..N with total N, N between the writer's totals
before and after the save: a state that existed.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from pathlib import Path
from typing import Any

import blake3
import pytest
import tomli_w

from tests.support import cli
from tests.vm import guest

pytestmark = pytest.mark.vm

REPO = Path(__file__).resolve().parents[2]
MiB = guest.MiB
SET_ID = re.compile(r"^[0-9]{8}T[0-9]{6}Z-[0-9a-z]{4,16}$")

WRITER = """\
import hashlib, os, sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("PRAGMA journal_mode=WAL")
db.execute("CREATE TABLE IF NOT EXISTS rows (n INTEGER PRIMARY KEY, payload BLOB NOT NULL)")
db.execute("CREATE TABLE IF NOT EXISTS total (k INTEGER PRIMARY KEY CHECK (k = 0), "
           "n INTEGER NOT NULL)")
db.execute("INSERT OR IGNORE INTO total VALUES (0, 0)")
n = db.execute("SELECT n FROM total").fetchone()[0]
while True:
    n += 1
    db.execute("BEGIN IMMEDIATE")
    db.execute("INSERT INTO rows VALUES (?, ?)", (n, hashlib.sha256(b"%d" % n).digest() * 8))
    db.execute("UPDATE total SET n = ?", (n,))
    db.execute("COMMIT")
"""

COUNT = """\
import sqlite3, sys
db = sqlite3.connect("file:" + sys.argv[1] + "?mode=ro", uri=True)
print(db.execute("SELECT n FROM total").fetchone()[0])
"""

SCRIPT = r"""#!/bin/sh
set -u
X="$RESURGO_EXCHANGE"
install -m 0755 "$X/zstd" /usr/local/bin/zstd
udevadm settle
step() { echo "== $*"; }
step layout
printf 'label: gpt\n,,E6D6D379-F507-44C2-A23C-238F2A3DF928\n' | sfdisk -q /dev/vdb || exit 10
udevadm settle
pvcreate -q /dev/vdb1 && vgcreate -q vgsave /dev/vdb1 || exit 11
lvcreate -q -n root -L 300M vgsave && lvcreate -q -n data -L 300M vgsave \
    && lvcreate -q --type thin-pool -n pool -L 200M vgsave \
    && lvcreate -q -n srv -V 320M --thinpool pool vgsave || exit 12
mkfs.ext4 -q -L sysroot /dev/vgsave/root && mkfs.ext4 -q -L srv /dev/vgsave/srv \
    && mkfs.xfs -q -L data /dev/vgsave/data || exit 13
mkdir -p /mnt/sys && mount /dev/vgsave/root /mnt/sys && mkdir -p /mnt/sys/srv /mnt/sys/data \
    && mount /dev/vgsave/srv /mnt/sys/srv && mount /dev/vgsave/data /mnt/sys/data || exit 14
mkdir -p /mnt/sys/etc /mnt/sys/var/lib/app /mnt/sys/srv/app "$X/sets"
echo data >/mnt/sys/data/file
echo lvmguest >/mnt/sys/etc/hostname
cp -a /etc/passwd /etc/group /mnt/sys/etc/
python3 "$X/writer.py" /mnt/sys/var/lib/app/db.sqlite 2>"$X/writer-root.err" &
W1=$!
python3 "$X/writer.py" /mnt/sys/srv/app/db.sqlite 2>"$X/writer-srv.err" &
W2=$!
count() { python3 "$X/count.py" "$1" 2>/dev/null || echo 0; }
for i in $(seq 1 120); do
    [ "$(count /mnt/sys/var/lib/app/db.sqlite)" -gt 20 ] \
        && [ "$(count /mnt/sys/srv/app/db.sqlite)" -gt 20 ] && break
    sleep 1
done
lvs_json() { lvs -a --reportformat json -o lv_name,lv_tags,origin,lv_attr vgsave >"$X/$1"; }
save() {
    name=$1; shift
    start=$(date +%s.%N)
    PYTHONPATH="$X/py" python3 -m resurgo save --to "$X/sets" --root /mnt/sys --no-rescue \
        --no-catalog --json "$@" >"$X/$name.json" 2>"$X/$name.err"
    echo $? >"$X/$name.rc"
    echo "$start $(date +%s.%N)" >"$X/$name.time"
}

# The writers pause (SIGSTOP) for saves 1 and 3, whose checks do not read the databases:
# on one emulated vCPU the two of them took most of the CPU those saves needed.
kill -STOP "$W1" "$W2"
step "save 1, killed once its snapshots are taken"
save killed --post-save 'sh -c "kill -9 $PPID"'
lvs_json lvs-killed.json
lvs --noheadings -o lv_name,origin vgsave | grep resurgo-snap- | while read -r lv origin; do
    echo "$origin $(dumpe2fs -h "/dev/vgsave/$lv" 2>/dev/null | grep -i '^Filesystem features')"
done >"$X/features-snapshot.txt"
for lv in root srv; do
    echo "$lv $(dumpe2fs -h "/dev/vgsave/$lv" 2>/dev/null | grep -i '^Filesystem features')"
done >"$X/features-origin.txt"
lvcreate -q -s -n resurgo-snap-decoy vgsave/srv || exit 15
lvcreate -q -s -n resurgo-snap-20260101T000000Z-abcd-0 --addtag resurgo-snapshot vgsave/srv \
    || exit 16

kill -CONT "$W1" "$W2"
step "save 2, while the databases are written"
count /mnt/sys/var/lib/app/db.sqlite >"$X/before-root"
count /mnt/sys/srv/app/db.sqlite >"$X/before-srv"
save saved --snapshot auto
count /mnt/sys/var/lib/app/db.sqlite >"$X/after-root"
count /mnt/sys/srv/app/db.sqlite >"$X/after-srv"
lvs_json lvs-saved.json

kill -STOP "$W1" "$W2"
step "save 3, its classic snapshot overflowing"
ls "$X/sets" >"$X/sets-before-overflow.txt"
save overflow --snapshot-size 1 \
    --post-save 'dd if=/dev/zero of=/mnt/sys/fill bs=1M count=24 conv=fsync status=none'
ls "$X/sets" >"$X/sets-after-overflow.txt"
lvs_json lvs-overflow.json
rm -f /mnt/sys/fill

kill "$W1" "$W2"
kill -CONT "$W1" "$W2"
wait
# Deactivated here, the group does not hold the guest's shutdown (lvm2-monitor) for long.
umount /mnt/sys/srv /mnt/sys/data /mnt/sys && vgchange -q -an vgsave
exit 0
"""


def lv_rows(path: Path) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = json.loads(path.read_text())["report"][0]["lv"]
    return rows


def ours(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """The LVs with our name form and both our tags."""
    out = []
    for r in rows:
        m = re.fullmatch(r"resurgo-snap-(\S+)-[0-9]+", r["lv_name"])
        tags = set(r["lv_tags"].split(","))
        if m and SET_ID.match(m.group(1)) and {"resurgo-snapshot",
                                               f"resurgo-set-{m.group(1)}"} <= tags:
            out.append(r)
    return out


def features(path: Path) -> dict[str, str]:
    """origin -> the ext4 features dumpe2fs names (empty for another filesystem)."""
    out = {}
    for line in path.read_text().splitlines():
        lv, _, rest = line.partition(" ")
        out[lv] = rest
    return out


def rows_of(db_path: Path) -> tuple[str, list[int], int]:
    db = sqlite3.connect(db_path)
    try:
        check = db.execute("PRAGMA integrity_check").fetchone()[0]
        numbers = [n for (n,) in db.execute("SELECT n FROM rows ORDER BY n")]
        total = db.execute("SELECT n FROM total").fetchone()[0]
        return check, numbers, total
    finally:
        db.close()


@pytest.mark.vm
def test_save_reads_lvm_volumes_from_snapshots_while_databases_are_written(
        tmp_path: Path) -> None:
    files: dict[str, guest.ExchangeFile] = {
        "writer.py": WRITER,
        "count.py": COUNT,
        "zstd": Path("/usr/bin/zstd"),
        "py/resurgo": REPO / "src" / "resurgo",
        "py/tomli_w": Path(tomli_w.__file__).parent,
        "py/blake3": Path(blake3.__file__).parent,
    }
    started = time.monotonic()
    data_disk = guest.Drive(guest.blank_disk(tmp_path / "vdb.img", 1024 * MiB),
                            serial="rsg-lvm")
    run = guest.run_in_guest(SCRIPT, image=guest.guest_disk(tmp_path), workdir=tmp_path,
                             files=files, extra_disks=[data_disk], timeout=1200).check()
    print(f"guest run: {time.monotonic() - started:.0f} s (host)")
    x = run.exchange

    def result(name: str) -> tuple[int, dict[str, Any] | None, str]:
        rc = int((x / f"{name}.rc").read_text())
        out = (x / f"{name}.json").read_text()
        begin, end = map(float, (x / f"{name}.time").read_text().split())
        print(f"{name}: exit {rc}, {end - begin:.0f} s in the guest")
        return rc, json.loads(out) if out.strip() else None, (x / f"{name}.err").read_text()

    # 1. Killed with SIGKILL once its snapshots existed: both left, tagged as ours.
    rc, _, _ = result("killed")
    assert rc == 137
    left = ours(lv_rows(x / "lvs-killed.json"))
    assert sorted(r["origin"] for r in left) == ["data", "root", "srv"], left
    # lvcreate froze each ext4 while it took its snapshot, classic and thin: the
    # snapshot's journal is clean (no needs_recovery), the mounted origin's in use.
    origin = features(x / "features-origin.txt")
    snapshot = features(x / "features-snapshot.txt")
    for lv in ("root", "srv"):
        assert "needs_recovery" in origin[lv], origin
        assert "has_journal" in snapshot[lv] and "needs_recovery" not in snapshot[lv], snapshot

    # 2. The next save removed them (not the decoys) and read both from snapshots.
    rc, report, err = result("saved")
    assert rc == 0, err[-3000:]
    assert report is not None
    names = {r["lv_name"] for r in lv_rows(x / "lvs-saved.json")}
    assert not ours(lv_rows(x / "lvs-saved.json")), names
    assert {"resurgo-snap-decoy", "resurgo-snap-20260101T000000Z-abcd-0"} <= names
    assert any(f"vgsave/{r['lv_name']}" in w and "earlier" in w
               for r in left for w in report["warnings"]), report["warnings"]
    assert sum("not a snapshot this resurgo can prove its own" in w
               for w in report["warnings"]) == 2, report["warnings"]
    read_from = {u["mountpoint"]: u["read_from"] for u in report["units"]}
    assert read_from["/"].startswith("an LVM snapshot of vgsave/root"), read_from
    assert read_from["/srv"].startswith("an LVM thin snapshot of vgsave/srv"), read_from
    assert read_from["/data"].startswith("an LVM snapshot of vgsave/data"), read_from

    # The databases restored from the set: whole, and a state that existed.
    restored = tmp_path / "restored"
    restored.mkdir()
    out = cli.run("restore", "--from", x / "sets", "--set", report["set"]["id"],
                  "--path", "/var/lib/app", "--path", "/srv/app", "--to", restored)
    assert out.returncode == 0, out.stderr
    for where, db in (("root", "var/lib/app/db.sqlite"), ("srv", "srv/app/db.sqlite")):
        before = int((x / f"before-{where}").read_text())
        after = int((x / f"after-{where}").read_text())
        assert after > before > 0, f"the {where} writer did not write during the save"
        check, numbers, total = rows_of(restored / db)
        assert check == "ok"
        assert numbers == list(range(1, total + 1))
        assert before <= total <= after, (where, before, total, after)
        print(f"{where}: {before} rows before the save, {total} restored, {after} after")

    # 3. An overflowed classic snapshot fails the save; no set, no snapshot left.
    rc, _, err = result("overflow")
    assert rc == 1, err[-3000:]
    assert "overflowed" in err, err[-3000:]
    assert (x / "sets-after-overflow.txt").read_text() == \
        (x / "sets-before-overflow.txt").read_text()
    assert not ours(lv_rows(x / "lvs-overflow.json"))
