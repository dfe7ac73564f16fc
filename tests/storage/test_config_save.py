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
