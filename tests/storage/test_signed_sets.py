"""Signed sets through the CLI on real loop disks: save --sign-key, recover --trust.

A set changed after it was signed (one archive byte, its index updated to match), a set
signed by another key, and a newer set planted beside the genuine one: each refused
(exit 4) or passed over before any disk is touched; the genuine set restores byte for
byte and metadata for metadata.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import blake3
import pytest

from resurgo.demo import umount_below
from tests.support import cli
from tests.support.consts import MIB
from tests.support.loopdisks import Rig
from tests.support.sshkeys import keypair
from tests.support.trees import assert_same_trees, build_rich_tree, sha256_of, snapshot, write

pytestmark = pytest.mark.storage

SIZE = 160 * MIB


def signers(path: Path, *keys: Path) -> Path:
    lines = [f'{k.name}@test namespaces="resurgo-set" '
             + " ".join(Path(f"{k}.pub").read_text().split()[:2]) + "\n" for k in keys]
    path.write_text("".join(lines))
    return path


def changed_copy(src: Path, dst: Path, set_id: str | None = None) -> None:
    """A copy of a set with one byte of its archive changed and its index updated to match:
    what anyone who can write the medium can do. Only the signature no longer matches."""
    shutil.copytree(src, dst)
    (archive,) = (dst / "archives").glob("*.archive")
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0x01
    archive.write_bytes(bytes(data))
    index = json.loads((dst / "set.json").read_text())
    for f in index["files"]:
        if f["name"] == f"archives/{archive.name}":
            f["blake3"] = blake3.blake3(bytes(data)).hexdigest()
    if set_id is not None:
        index["id"] = set_id
    (dst / "set.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


def test_signed_set_save_refusals_and_recovery(rig: Rig, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    admin, intruder = keypair(keys, "admin"), keypair(keys, "intruder")
    trusted = signers(keys / "trusted", admin)
    untrusting = signers(keys / "untrusting", intruder)
    disk = rig.disk("signed", SIZE)
    rig.sh("mkfs.ext4", "-q", "-L", "signed", disk.path)
    root = rig.mount(disk.path, tmp_path / "root")
    write(root / "etc/hostname", b"signed\n")
    build_rich_tree(root / "srv/rich", many=50)
    sets = tmp_path / "sets"
    state = tmp_path / "state"
    try:
        # A key the given signers do not trust: refused before anything is described.
        r = cli.spawn("save", "--to", sets, "--root", root, "--no-rescue", "--sign-key", admin,
                      "--trust", untrusting, state=state)
        assert r.returncode == 4, r.output
        assert not sets.exists() or not any(sets.iterdir())
        r = cli.spawn("save", "--to", sets, "--root", root, "--no-rescue", "--sign-key", admin,
                      "--json", state=state)
        assert r.returncode == 0, r.output
        set_id = r.json()["set"]["id"]
        expected = snapshot(root)
    finally:
        umount_below(root)
    rig.cleanup()
    assert (sets / set_id / "set.json.sig").is_file()
    listed = cli.spawn("list", sets, "--trust", trusted, "--json", state=state)
    assert listed.returncode == 0, listed.output
    assert [(s["id"], s["signed_by"]) for s in listed.json()] == [(set_id, "admin@test")]

    (tmp_path / "targets").mkdir()
    target_rig = Rig(tmp_path / "targets")
    mnt = tmp_path / "mnt"
    try:
        target = target_rig.disk("target", SIZE)
        before = sha256_of(target.image)
        common = ("--target", target.path, "--yes", "--root", mnt, "--no-finalize")
        # Signed, but not by a key these signers trust.
        r = cli.spawn("recover", "--from", sets, "--trust", untrusting, *common, state=state)
        assert r.returncode == 4, r.output
        assert "does not trust" in r.stderr
        assert sha256_of(target.image) == before
        # Changed after signing: one archive byte, the index updated to match.
        changed = tmp_path / "changed"
        changed.mkdir()
        changed_copy(sets / set_id, changed / set_id)
        r = cli.spawn("recover", "--from", changed, "--trust", trusted, *common, state=state)
        assert r.returncode == 4, r.output
        assert "does not match its signature" in r.stderr
        assert sha256_of(target.image) == before
        # Without --trust the same change is only found when the archive is read: the
        # signature is what stops it before the disks.
        r = cli.spawn("plan", "--from", changed, "--target", target.path, state=state)
        assert r.returncode == 0, r.output
        # A newer set planted beside the genuine one (unsigned, dated 2099): passed over.
        planted = "20991231T235959Z-dead"
        changed_copy(sets / set_id, sets / planted, set_id=planted)
        (sets / planted / "set.json.sig").unlink()
        r = cli.spawn("recover", "--from", sets, "--set", planted, "--trust", trusted, *common,
                      state=state)
        assert r.returncode == 4, r.output
        assert "not signed" in r.stderr
        assert sha256_of(target.image) == before
        r = cli.spawn("recover", "--from", sets, "--trust", trusted, *common, state=state)
        assert r.returncode == 0, r.output
        assert planted in r.stderr  # named as refused
        assert set_id in r.stdout
        assert_same_trees(expected, snapshot(mnt))
    finally:
        umount_below(mnt)
        target_rig.cleanup()


def test_a_description_recover_would_refuse_is_not_saved(rig: Rig, tmp_path: Path) -> None:
    disk = rig.disk("odd", SIZE)
    rig.sh("mkfs.ext4", "-q", "-L", "odd", disk.path)
    root = rig.mount(disk.path, tmp_path / "root")
    try:
        # An escape sequence in the host name: it would reach the console and argv.
        write(root / "etc/hostname", b"odd\x1b[2Jhost\n")
        r = cli.spawn("save", "--to", tmp_path / "sets", "--root", root, "--no-rescue",
                      state=tmp_path / "state")
    finally:
        umount_below(root)
    assert r.returncode == 1, r.output
    assert "would be refused by recover, so no set was saved" in r.stderr
    assert "\x1b" not in r.stderr
    assert not any((tmp_path / "sets").glob("*/set.json"))
