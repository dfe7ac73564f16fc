"""A save whose rescue image cannot be built: a set without one (flagged as such), or with
--require-rescue no set at all (exit 3 before writing when tools are missing, 1 when the
build fails)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from resurgo import needs
from resurgo.errors import OperationFailed
from resurgo.packages import TOOLS
from resurgo.recovery import save as save_module
from tests.support import cli
from tests.support.consts import MIB
from tests.support.loopdisks import Rig
from tests.support.trees import write

pytestmark = pytest.mark.storage


@pytest.fixture
def small_root(rig: Rig, tmp_path: Path) -> Path:
    disk = rig.disk("norescue", 64 * MIB)
    rig.sh("mkfs.ext4", "-q", disk.path)
    root = rig.mount(disk.path, tmp_path / "root")
    write(root / "etc/hostname", b"norescue\n")
    write(root / "srv/a.txt", b"a\n")
    return root


def _listed(sets: Path, state: Path) -> list[dict[str, Any]]:
    r = cli.run("list", sets, "--json", state=state)
    if r.returncode != 0:
        return []
    data: list[dict[str, Any]] = r.json()
    return data


def test_a_rescue_image_that_cannot_be_built(small_root: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    sets, state = tmp_path / "sets", tmp_path / "state"
    xz = [needs.Missing("xz", "build the rescue image: grub-mkrescue runs it", TOOLS["xz"])]
    monkeypatch.setattr(needs, "rescue_missing", lambda *a: xz)
    # Missing tools: refused before anything is written.
    r = cli.run("save", "--to", sets, "--root", small_root, "--no-catalog", "--require-rescue",
                state=state)
    assert r.returncode == 3, r.output
    assert "xz-utils" in r.stderr and "dnf install xz" in r.stderr
    assert _listed(sets, state) == []
    # Without --require-rescue: a set without the image, which says so.
    r = cli.run("save", "--to", sets, "--root", small_root, "--no-catalog", "--json",
                state=state)
    assert r.returncode == 0, r.output
    assert r.json()["set"]["has_rescue"] is False
    assert "the set has no rescue image" in r.stderr and "xz-utils" in r.stderr
    [listed] = _listed(sets, state)
    assert listed["rescue"] is False

    # The tools are there but the build fails: --require-rescue saves no set (exit 1).
    monkeypatch.setattr(needs, "rescue_missing", lambda *a: [])

    def failing(*args: object, **kwargs: object) -> str:
        raise OperationFailed("grub-mkrescue failed")

    monkeypatch.setattr(save_module, "_rescue_image", failing)
    r = cli.run("save", "--to", sets, "--root", small_root, "--no-catalog", "--require-rescue",
                state=state)
    assert r.returncode == 1, r.output
    assert "no set was saved" in r.stderr and "grub-mkrescue failed" in r.stderr
    assert len(_listed(sets, state)) == 1
    assert len([p for p in sets.iterdir() if not p.name.startswith(".")]) == 1
