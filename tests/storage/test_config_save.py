"""A configuration file alone drives a save: `resurgo --config F save`, no other option,
saves a tree on a loop disk to a directory medium, and the set is there, whole (verify
reads every file of it back against the tree)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support import cli
from tests.support.consts import MIB
from tests.support.loopdisks import Rig
from tests.support.trees import build_rich_tree, write

pytestmark = pytest.mark.storage


def test_a_configuration_file_alone_drives_a_save(rig: Rig, tmp_path: Path) -> None:
    disk = rig.disk("configured", 64 * MIB)
    rig.sh("mkfs.ext4", "-q", "-L", "configured", disk.path)
    root = rig.mount(disk.path, tmp_path / "root")
    write(root / "etc/hostname", b"configured\n")
    build_rich_tree(root / "srv/data", many=40)
    write(root / "var/cache/big.bin", b"x" * 4096)
    sets = tmp_path / "sets"
    conf = tmp_path / "resurgo.toml"
    conf.write_text(f"""\
medium = "{sets}"
root = "{root}"
exclude = ["/var/cache"]
compression_level = 3
catalog = false
[rescue]
build = false
""")
    conf.chmod(0o600)
    state = tmp_path / "state"

    r = cli.spawn("--config", conf, "save", state=state)
    assert r.returncode == 0, r.output
    assert "saved recovery set " in r.stdout
    assert "rescue:  not included (--no-rescue)" in r.stdout

    listed = cli.spawn("--config", conf, "list", "--json", state=state)
    assert listed.returncode == 0, listed.output
    (entry,) = listed.json()
    assert (sets / entry["id"] / "set.json").is_file()
    assert not (sets / entry["id"] / "rescue.iso").exists()
    assert not (sets / entry["id"] / "catalog.zst").exists()
    index = json.loads((sets / entry["id"] / "set.json").read_text())
    assert any(f["name"].endswith(".archive") for f in index["files"])

    # The set holds the tree as it is (verify, the medium from the file too, reads it all
    # back), without /var/cache as the file says: its file gone, nothing is missing;
    # a saved file gone is.
    (root / "var/cache/big.bin").unlink()
    v = cli.spawn("--config", conf, "verify", "--root", root, state=state)
    assert v.returncode == 0, v.output
    (root / "etc/hostname").unlink()
    v = cli.spawn("--config", conf, "verify", "--root", root, state=state)
    assert v.returncode == 1, v.output
    assert "/etc/hostname" in v.stdout


HOOK = """#!/bin/sh
echo "$RESURGO_HOOK ${RESURGO_SAVE:-none}" >> "$(dirname "$0")/hooks.log"
touch "$1"
echo "hook output"
exit "${2:-0}"
"""


def test_the_hooks_run_around_the_reading_of_the_archives(rig: Rig, tmp_path: Path) -> None:
    disk = rig.disk("hooked", 64 * MIB)
    rig.sh("mkfs.ext4", "-q", "-L", "hooked", disk.path)
    root = rig.mount(disk.path, tmp_path / "root")
    write(root / "etc/hostname", b"hooked\n")
    (root / "var").mkdir()
    hook = tmp_path / "hook"
    hook.write_text(HOOK)
    hook.chmod(0o755)
    sets = tmp_path / "sets"
    conf = tmp_path / "resurgo.toml"
    conf.write_text(f"""\
medium = "{sets}"
root = "{root}"
catalog = false
[hooks]
pre-save = "{hook} {root}/var/pre-marker"
post-save = "{hook} {root}/var/post-marker"
[rescue]
build = false
""")
    conf.chmod(0o600)
    state = tmp_path / "state"
    log = tmp_path / "hooks.log"

    r = cli.spawn("--config", conf, "save", "--json", state=state)
    assert r.returncode == 0, r.output
    report = r.json()
    assert [(h["hook"], h["exit"], h["output"]) for h in report["hooks"]] == [
        ("pre-save", 0, "hook output\n"), ("post-save", 0, "hook output\n")]
    assert log.read_text() == "pre-save none\npost-save ok\n"
    # The pre hook ran before the tree was read, the post hook after.
    listed = cli.spawn("--config", conf, "ls", "--json", "/var", state=state)
    assert listed.returncode == 0, listed.output
    names = {e["path"] for e in listed.json()["entries"]}
    assert names == {"/var/pre-marker"}

    # The options win over the file; a failing pre hook fails the save after the post
    # hook has run, and no set is made.
    log.unlink()
    r = cli.spawn("--config", conf, "save", "--pre-save", f"{hook} {tmp_path}/x 4",
                  state=state)
    assert r.returncode == 1, r.output
    assert "the pre-save hook failed" in r.stderr and "exit 4" in r.stderr
    assert "hook output" in r.stderr
    assert log.read_text() == "pre-save none\npost-save failed\n"
    assert len(cli.spawn("--config", conf, "list", "--json", state=state).json()) == 1

    # A hook whose program is missing: refused before anything runs (exit 3).
    log.unlink()
    r = cli.spawn("--config", conf, "save", "--post-save", f"{tmp_path}/missing",
                  state=state)
    assert r.returncode == 3, r.output
    assert "post-save hook" in r.stderr and not log.exists()
