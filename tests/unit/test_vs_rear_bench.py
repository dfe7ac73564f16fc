"""bench/vs_rear.py's own walker, its comparison and its table (the benchmark itself boots
guests for hours and is not part of the suite)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "vs_rear.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("vs_rear", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["vs_rear"] = module
    spec.loader.exec_module(module)
    return module


vs = _load()


def _tree(top: Path) -> Path:
    (top / "d").mkdir(parents=True)
    (top / "d/a.txt").write_bytes(b"alpha\n")
    os.link(top / "d/a.txt", top / "linked")
    (top / "sym").symlink_to("d/a.txt")
    with (top / "sparse.img").open("wb") as f:
        f.truncate(8 << 20)
        f.seek(4 << 20)
        f.write(b"x" * 4096)
    os.setxattr(top / "d/a.txt", "user.note", b"kept")
    os.utime(top / "d/a.txt", ns=(1, 1_000_000_123))
    return top


def _xattrs_here(path: Path) -> bool:
    probe = path / "probe"
    probe.write_bytes(b"")
    try:
        os.setxattr(probe, "user.probe", b"1")
    except OSError:
        return False
    finally:
        probe.unlink()
    return True


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    if not _xattrs_here(tmp_path):
        pytest.skip("no user xattrs on this filesystem")
    return _tree(tmp_path / "src")


def test_the_walk_records_content_links_xattrs_and_holes(tree: Path) -> None:
    found = vs.walk(tree, "/srv")
    a = found["/srv/d/a.txt"]
    assert a.kind == "file" and a.size == 6 and a.mtime_ns == 1_000_000_123
    assert a.links == ("/srv/linked",) and found["/srv/linked"].links == ("/srv/d/a.txt",)
    assert dict(a.xattrs).keys() == {"user.note"}
    assert found["/srv/sym"].target == "d/a.txt"
    assert found["/srv/sparse.img"].sparse is True and a.sparse is False
    assert found["/srv"].kind == "dir"


def test_a_copy_that_keeps_everything_has_no_difference(tree: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(tree, copy, symlinks=True)
    os.unlink(copy / "linked")
    os.link(copy / "d/a.txt", copy / "linked")
    # copytree writes the holes' zeros; a faithful copy keeps them holes
    os.unlink(copy / "sparse.img")
    with (copy / "sparse.img").open("wb") as f:
        f.truncate(8 << 20)
        f.seek(4 << 20)
        f.write(b"x" * 4096)
    for rel in ("sparse.img", "d/a.txt", "linked", "d", "."):
        st = os.lstat(tree / rel)
        os.utime(copy / rel, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
    assert vs.diff(vs.walk(tree), vs.walk(copy)) == []


def test_each_loss_is_one_difference_named_by_path_and_field(tree: Path, tmp_path: Path) -> None:
    before = vs.walk(tree)
    os.removexattr(tree / "d/a.txt", "user.note")
    os.unlink(tree / "linked")
    (tree / "linked").write_bytes(b"alpha\n")
    (tree / "new").write_bytes(b"")
    after = vs.walk(tree)
    found = {(d.path, d.field) for d in vs.diff(before, after)}
    assert ("/d/a.txt", "xattrs") in found
    assert ("/linked", "links") in found and ("/d/a.txt", "links") in found
    assert ("/new", "extra") in found
    assert not any(path == "/sym" for path, _ in found)


def test_differences_are_counted_unless_expected_or_volatile() -> None:
    d = vs.Difference
    classes = vs.classify([
        d("/srv/bench/x", "mode", 0o644, 0o600),
        d("/boot/grub/grub.cfg", "digest", "a", "b"),
        d("/boot/initrd.img-6.1.0-28-amd64", "digest", "a", "b"),
        d("/var/log/journal/x", "missing", "file", None),
        d("/var/log", "mtime_ns", 1, 2),
        d("/home (under the mount)", "mtime_ns", 1, 2),
        d("/dev/null", "missing", "char", None),
        d("/dev", "mode", 0o755, 0o700),
    ])
    assert [x.path for x in classes["counted"]] == [
        "/srv/bench/x", "/home (under the mount)", "/dev"]
    assert len(classes["expected"]) == 2 and len(classes["volatile"]) == 3


def test_the_table_shows_medians_counts_and_the_ratio() -> None:
    saves = [
        {"tool": "rear", "ok": True, "save_s": 900, "image_bytes": 400 * vs.MiB},
        {"tool": "rear", "ok": True, "save_s": 1100, "image_bytes": 400 * vs.MiB},
        {"tool": "resurgo", "ok": True, "save_s": 300, "image_bytes": 60 * vs.MiB},
        {"tool": "resurgo", "ok": False, "save_s": None},
    ]
    cases = [
        {"tool": "rear", "case": "a", "recovered": True, "recover_s": 600, "booted": True,
         "fidelity_diffs": 10},
        {"tool": "rear", "case": "a", "recovered": False, "recover_s": None, "booted": False},
        {"tool": "resurgo", "case": "a", "recovered": True, "recover_s": 250, "booted": True,
         "fidelity_diffs": 0},
    ]
    rows = {r.label: r for r in vs.summarize(saves, cases)}
    save = rows["save: layout + backup + rescue (s)"]
    assert (save.rear, save.resurgo, save.ratio) == ("1000", "300", "0.30")
    assert rows["save succeeded"].resurgo == "1/2"
    image = rows["rescue image (MiB)"]
    assert (image.rear, image.resurgo, image.ratio) == ("400.0", "60.0", "0.15")
    assert rows["(a) recovered unattended"].rear == "1/2"
    rec = rows["(a) recovery: rescue boot to done (s)"]
    assert (rec.rear, rec.resurgo, rec.ratio) == ("600", "250", "0.42")
    fid = rows["(a) fidelity differences"]
    assert (fid.rear, fid.resurgo, fid.ratio) == ("10", "0", "0.00")
    assert rows["backup (MiB)"].ratio == "-"
    text = vs.render(vs.summarize(saves, cases))
    assert text.splitlines()[0].split()[-1] == "resurgo/ReaR"


def test_render_merges_the_results_of_several_runs(tmp_path: Path) -> None:
    first = {"firmware": "bios", "load_average_at_end": [1.0, 1.0, 1.0],
             "saves": [{"tool": "rear", "ok": True, "save_s": 900}],
             "recoveries": [{"tool": "rear", "case": "a", "recovered": True, "recover_s": 200}]}
    second = {"firmware": "bios", "load_average_at_end": [1.0, 1.0, 1.0],
              "saves": [{"tool": "rear", "ok": True, "save_s": 1100}],
              "recoveries": [{"tool": "rear", "case": "a", "recovered": False}]}
    paths = []
    for n, doc in enumerate((first, second)):
        paths.append(tmp_path / f"run{n}.json")
        paths[-1].write_text(vs.json.dumps(doc))
    text = vs.render_files(paths)
    rows = {line.split("  ")[0].strip(): line.split() for line in text.splitlines()}
    assert rows["save: layout + backup + rescue (s)"][-3] == "1000"
    assert rows["(a) recovered unattended"][-3] == "1/2"
    assert "run1.json: bios, 1 save(s), 1 recoveries" in text
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(SystemExit, match="not a results file"):
        vs.render_files([tmp_path / "bad.json"])


def test_an_acl_xattr_has_the_kernels_layout() -> None:
    value = vs.acl_xattr(4242, 4343)
    assert value[:4] == (2).to_bytes(4, "little") and len(value) == 4 + 6 * 8
    assert int.from_bytes(value[4 + 8 + 4:4 + 8 + 8], "little") == 4242
