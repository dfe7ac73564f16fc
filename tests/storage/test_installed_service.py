"""The installed service's ExecStart runs and produces a set: install-units into a
temporary --root, the command read back from the installed resurgo-save.service and run
as systemd would run it, with the configuration file (RESURGO_CONFIG, where systemd's
run reads /etc/resurgo/resurgo.toml) naming a tree on a loop disk and a directory medium."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

import pytest

from resurgo.systemd.install import SERVICE, exec_start
from tests.support import cli
from tests.support.consts import MIB
from tests.support.loopdisks import Rig
from tests.support.trees import build_rich_tree, write

pytestmark = pytest.mark.storage


def test_the_installed_services_execstart_produces_a_set(rig: Rig, tmp_path: Path) -> None:
    system = tmp_path / "system"
    r = cli.run("install-units", "--root", system, "--enable")
    assert r.returncode == 0, r.output
    argv = shlex.split(exec_start((system / "etc/systemd/system" / SERVICE).read_text()))

    disk = rig.disk("scheduled", 64 * MIB)
    rig.sh("mkfs.ext4", "-q", "-L", "scheduled", disk.path)
    root = rig.mount(disk.path, tmp_path / "root")
    write(root / "etc/hostname", b"scheduled\n")
    build_rich_tree(root / "srv/data", many=20)
    sets = tmp_path / "sets"
    conf = tmp_path / "resurgo.toml"
    conf.write_text(f'medium = "{sets}"\nroot = "{root}"\ncatalog = false\n'
                    "[rescue]\nbuild = false\n")
    conf.chmod(0o600)
    env = cli.clean_env(tmp_path / "state", RESURGO_CONFIG=str(conf))

    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300,
                          check=False, stdin=subprocess.DEVNULL, start_new_session=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "saved recovery set " in proc.stdout

    (set_dir,) = [p for p in sets.iterdir() if not p.name.startswith(".")]
    index = json.loads((set_dir / "set.json").read_text())
    assert index["id"] == set_dir.name
    assert any(f["name"].endswith(".archive") for f in index["files"])
    assert [p.name for p in sets.iterdir()] == [set_dir.name]  # no lease, no staging left
    listed = cli.spawn("list", sets, "--json", state=tmp_path / "state")
    assert [s["id"] for s in listed.json()] == [set_dir.name]
