"""The records a restore keeps for its end: the same, in order and in reverse, whether
they stay in memory or go to the unnamed file on the target beyond the memory bound."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from resurgo.engine import kept
from resurgo.engine.kept import Kept


@pytest.mark.parametrize("memory", [kept.MEMORY, 1000, 0])
def test_records_come_back_in_order_and_in_reverse(tmp_path: Path, memory: int,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kept, "MEMORY", memory)
    records = [os.urandom(n) for n in (0, 1, 5, 300, 70000, 2, 0, 9)] * 5
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    k = Kept(fd)
    try:
        for r in records:
            k.append(r)
        assert list(k) == records
        assert list(reversed(k)) == records[::-1]
        assert os.listdir(tmp_path) == []  # the file beyond the memory bound has no name
    finally:
        k.close()
        os.close(fd)
