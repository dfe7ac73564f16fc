"""The engine's compiled modules (resurgo.engine.extensions): used only when built from
the source beside them; stale, missing or broken ones leave the Python path, with the
reason, one debug line from the save, and a doctor row that says what to do."""

from __future__ import annotations

import hashlib
import importlib
import logging
import sys
import types
from pathlib import Path

import pytest

from resurgo import doctor, packages
from resurgo.engine import extensions, plainsave, save, writer
from resurgo.needs import Job

NAME = "_resurgo_test_fake"
SOURCE = b"/* a compiled path */\n"


def built(monkeypatch: pytest.MonkeyPatch, api: int = 1, source: bytes | None = SOURCE) -> None:
    """A module resurgo.engine.NAME as a build from ``source`` would be."""
    module = types.ModuleType(f"resurgo.engine.{NAME}")
    module.API = api  # type: ignore[attr-defined]
    if source is not None:
        module.SOURCE_SHA256 = hashlib.sha256(source).hexdigest()  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, f"resurgo.engine.{NAME}", module)


def checkout(tmp_path: Path, source: bytes = SOURCE, *, setup: bool = True) -> Path:
    """src/resurgo/engine of a source tree (setup.py at its top), or without setup.py the
    engine directory of an installed resurgo, where pip copied the .c file too."""
    engine = tmp_path / "src/resurgo/engine"
    engine.mkdir(parents=True, exist_ok=True)
    (engine / f"{NAME}.c").write_bytes(source)
    if setup:
        (tmp_path / "setup.py").write_text("")
    return engine


def test_an_installed_copy_beside_another_source_is_checked_by_its_api_alone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    built(monkeypatch)
    installed = checkout(tmp_path, SOURCE + b"/* not what it was built from */\n", setup=False)
    assert extensions.load(NAME, 1, installed).module is not None
    monkeypatch.delitem(sys.modules, f"resurgo.engine.{NAME}")
    missing = extensions.load(NAME, 1, installed)
    assert missing.module is None and missing.why.startswith("not built (no C compiler")


def test_a_module_built_from_the_source_beside_it_is_used(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    built(monkeypatch)
    loaded = extensions.load(NAME, 1, checkout(tmp_path))
    assert loaded.module is sys.modules[f"resurgo.engine.{NAME}"] and loaded.why == ""
    # Installed (no source beside it): the API alone is checked.
    built(monkeypatch, source=None)
    assert extensions.load(NAME, 1, tmp_path / "none").module is not None


def test_a_module_built_from_another_source_is_stale(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    built(monkeypatch)
    loaded = extensions.load(NAME, 1, checkout(tmp_path, SOURCE + b"/* changed */\n"))
    assert loaded.module is None and not loaded.compiler
    assert loaded.why == (f"stale: {NAME} was built from another version of "
                          f"{tmp_path / 'src/resurgo/engine' / NAME}.c than the one there now")
    assert "pip install -e ." in loaded.fix
    # One built before the modules said their source (none given) is stale as well.
    built(monkeypatch, source=None)
    assert extensions.load(NAME, 1, checkout(tmp_path)).why.startswith("stale:")
    # Another API: stale, wherever it is.
    built(monkeypatch, api=7)
    loaded = extensions.load(NAME, 1, tmp_path / "none")
    assert loaded.module is None and "(API 7, this resurgo takes 1)" in loaded.why
    assert loaded.fix == extensions.REINSTALL


def test_a_module_not_built_or_broken_is_absent_with_its_reason(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, f"resurgo.engine.{NAME}", raising=False)
    loaded = extensions.load(NAME, 1, checkout(tmp_path))
    assert loaded.module is None and loaded.compiler
    assert loaded.why == f"not built from {tmp_path / 'src/resurgo/engine' / NAME}.c"
    assert extensions.load(NAME, 1, tmp_path / "none").why == (
        "not built (no C compiler when resurgo was installed)")
    real = importlib.import_module
    for error in (ImportError(f"{NAME}.so: undefined symbol: crc_init"),
                  SystemError("initialization of _plainsave raised unreported exception")):
        def broken(name: str, package: str | None = None,
                   error: Exception = error) -> types.ModuleType:
            if name.endswith(NAME):
                raise error
            return real(name, package)

        monkeypatch.setattr(importlib, "import_module", broken)
        loaded = extensions.load(NAME, 1, checkout(tmp_path))
        assert loaded.module is None and not loaded.compiler
        assert loaded.why == f"{NAME} cannot be imported ({type(error).__name__}: {error})"


def stale(monkeypatch: pytest.MonkeyPatch) -> extensions.Loaded:
    loaded = extensions.Loaded(None, "stale: _plainsave was built from another version of "
                               "src/resurgo/engine/_plainsave.c", extensions.REBUILD)
    monkeypatch.setattr(plainsave, "LOADED", loaded)
    monkeypatch.setattr(plainsave, "save_run", None)
    monkeypatch.setattr(plainsave, "_said", False)
    return loaded


def test_a_save_without_its_compiled_path_says_why_in_one_debug_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    stale(monkeypatch)
    src = tmp_path / "src"
    src.mkdir()
    for i in range(20):
        (src / f"f{i}").write_bytes(b"x" * i)
    with caplog.at_level(logging.DEBUG, logger="resurgo"):
        for n in range(2):
            with open(tmp_path / f"a{n}", "wb") as a, open(tmp_path / f"m{n}", "wb") as m:
                result = save.save_tree(src, a, m, set_id="s")
            assert result.entries == 21
    said = [r for r in caplog.records if "compiled save path" in r.getMessage()]
    assert [r.levelno for r in said] == [logging.DEBUG]
    assert "stale: _plainsave was built" in said[0].getMessage()
    assert "pip install -e ." in said[0].getMessage()


def test_doctor_says_a_stale_build_is_stale_and_how_to_rebuild(
        monkeypatch: pytest.MonkeyPatch) -> None:
    stale(monkeypatch)
    row = doctor._compiled_save_row()
    assert row.state is doctor.State.LIMITED and row.package is None
    assert row.detail == ("stale: _plainsave was built from another version of "
                          "src/resurgo/engine/_plainsave.c: saving many small files is "
                          f"slower; {extensions.REBUILD}")
    monkeypatch.setattr(writer, "make_plain", writer._make_none)
    monkeypatch.setattr(writer, "LOADED", extensions.Loaded(
        None, "not built (no C compiler when resurgo was installed)", extensions.REINSTALL,
        compiler=True))
    row = doctor._compiled_row(Job.RECOVER)
    assert row.package == packages.COMPILER and "the restore is slower" in row.detail
