"""A save lists at most MAX_EXTENTS data extents of a file: what a restore takes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def test_a_save_lists_at_most_max_extents(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A file with more data extents than a header may list: the last one covers the
    rest, its holes read (and stored) as zeros."""
    from resurgo.engine import fsmeta

    monkeypatch.setattr(fsmeta, "MAX_EXTENTS", 3)
    path = tmp_path / "holes"
    with open(path, "wb") as f:
        for i in range(6):
            f.seek(i * (1 << 20))
            f.write(b"x" * 4096)
    fd = os.open(path, os.O_RDONLY)
    try:
        st_ = os.fstat(fd)
        extents = fsmeta.data_extents(fd, st_.st_size, st_.st_blocks)
    finally:
        os.close(fd)
    if len(extents) == 1:
        pytest.skip("this file system does not report holes")
    assert extents == ((0, 4096), (1 << 20, 4096), (2 << 20, (3 << 20) + 4096))
