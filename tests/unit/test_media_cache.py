"""The local cache of manifests a save keeps: private whatever the umask."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from resurgo.recovery.save import ManifestCache, private_file


@contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def modes(top: Path) -> dict[str, int]:
    return {str(p.relative_to(top)): stat.S_IMODE(p.lstat().st_mode)
            for p in [top, *top.rglob("*")]}


@pytest.mark.parametrize("mask", [0o022, 0o000])
def test_the_cache_is_private_whatever_the_umask(tmp_path: Path, mask: int) -> None:
    state = tmp_path / "state"  # the state directory, made by the first save
    with umask(mask):
        cache = ManifestCache(state / "manifests")
        staged = cache.staging("20261206T000000Z-abcd")
        assert staged is not None
        with private_file(staged / "root.manifest") as f:
            f.write(b"a manifest lists every file, its owner and digest\n")
        cache.commit("20261206T000000Z-abcd")
    assert modes(state) == {
        ".": 0o700,
        "manifests": 0o700,
        "manifests/20261206T000000Z-abcd": 0o700,
        "manifests/20261206T000000Z-abcd/root.manifest": 0o600,
    }


def test_a_cache_an_earlier_save_left_open_is_closed(tmp_path: Path) -> None:
    (tmp_path / "manifests").mkdir(mode=0o755)
    ManifestCache(tmp_path / "manifests").staging("20261206T000000Z-abcd")
    assert stat.S_IMODE((tmp_path / "manifests").stat().st_mode) == 0o700


def test_no_cache_through_a_link(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir(mode=0o755)
    (tmp_path / "manifests").symlink_to(tmp_path / "elsewhere")
    cache = ManifestCache(tmp_path / "manifests")
    assert cache.staging("20261206T000000Z-abcd") is None and not cache.usable
    assert list((tmp_path / "elsewhere").iterdir()) == []
