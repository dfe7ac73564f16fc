"""Reading /sys attributes: bounded, and None (or the default) for what is not there."""

from __future__ import annotations

import os
from pathlib import Path

from resurgo.probe import sysfs


def test_attributes(tmp_path: Path) -> None:
    (tmp_path / "size").write_text("2048\n")
    (tmp_path / "model").write_bytes(b"  disk \xff\n")
    (tmp_path / "layout").write_text("left-symmetric\n")
    assert sysfs.attribute(tmp_path / "size") == "2048"
    assert sysfs.attribute(tmp_path / "model") == "disk \ufffd"
    assert sysfs.attribute(tmp_path / "missing") is None
    assert sysfs.int_attribute(tmp_path / "size") == 2048
    assert sysfs.int_attribute(tmp_path / "missing") is None
    assert sysfs.int_attribute(tmp_path / "missing", 512) == 512
    assert sysfs.int_attribute(tmp_path / "layout") is None
    assert sysfs.int_attribute(tmp_path / "layout", 0) == 0


def test_reads_are_bounded(tmp_path: Path) -> None:
    (tmp_path / "big").write_bytes(b"7" * (sysfs.MAX_ATTRIBUTE + 10))
    data = sysfs.binary_attribute(tmp_path / "big")
    assert data is not None and len(data) == sysfs.MAX_ATTRIBUTE


def test_links_and_entries(tmp_path: Path) -> None:
    os.symlink("../../bus/pci/drivers/nvme", tmp_path / "driver")
    assert sysfs.link_name(tmp_path / "driver") == "nvme"
    assert sysfs.link_name(tmp_path / "nothing") is None
    assert sorted(sysfs.entries(tmp_path)) == ["driver"]
    assert sysfs.entries(tmp_path / "nothing") == []
