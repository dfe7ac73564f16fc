"""Fixtures of the storage tier: Rigs (see loopdisks.py) that are always cleaned up."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from resurgo.demo import umount_below
from tests.support.loopdisks import Rig, require_loop_support


@pytest.fixture(scope="module")
def rig_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[], Rig]]:
    """Rigs for module-scoped fixtures; every one is cleaned up when the module is done."""
    require_loop_support()
    rigs: list[Rig] = []

    def make() -> Rig:
        rig = Rig(tmp_path_factory.mktemp("rig"))
        rigs.append(rig)
        return rig

    try:
        yield make
    finally:
        for rig in reversed(rigs):
            rig.cleanup()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    require_loop_support()
    r = Rig(tmp_path)
    try:
        yield r
    finally:
        r.cleanup()


@pytest.fixture
def mnt(tmp_path: Path) -> Iterator[Path]:
    """Where a recovery mounts what it recreates; unmounted after the test, however it ends."""
    where = tmp_path / "mnt"
    try:
        yield where
    finally:
        umount_below(where)


@pytest.fixture
def engine_tools() -> None:
    """The engine's tests restore owners (root) and compress with zstd."""
    if os.geteuid() != 0:
        pytest.skip("restoring owners needs root")
    if shutil.which("zstd") is None:
        pytest.skip("needs zstd")
