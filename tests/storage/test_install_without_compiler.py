"""A clean machine without a C compiler installs resurgo (pip install from the clone) and
runs the demo: the compiled restore and save paths are optional, and the restore says
once that it goes without."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.loopdisks import require_loop_support

pytestmark = pytest.mark.storage

TREE = Path(__file__).resolve().parents[2]
SLOWER = "compiled restore path is not used (not built (no C compiler when resurgo was installed)"
# pip's words when it cannot reach a package index (setuptools for the build, blake3...)
NO_INDEX = ("No matching distribution found", "Could not find a version",
            "Failed to establish a new connection", "Temporary failure in name resolution")


def _clone(to: Path) -> Path:
    """What pip installs from: the project's tracked files (a clone), nothing built here."""
    src = to / "resurgo"
    listed = subprocess.run(["git", "-C", str(TREE), "ls-files", "-z"], capture_output=True,
                            check=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        if rel.startswith(("tests/", "bench/")) or not (TREE / rel).is_file():
            continue
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(TREE / rel, src / rel)
    return src


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("RESURGO_") and k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(extra)
    return env


def test_without_a_compiler_resurgo_installs_and_runs_the_demo(tmp_path: Path) -> None:
    require_loop_support()
    src = _clone(tmp_path)
    venv = tmp_path / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin/python"
    # No compiler: every compile and link command is `false`.
    no_cc = _env(CC="false", CXX="false", LDSHARED="false", PIP_DISABLE_PIP_VERSION_CHECK="1")
    pip = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", str(src)],
        capture_output=True, text=True, env=no_cc, stdin=subprocess.DEVNULL, timeout=600,
        check=False)
    if pip.returncode != 0 and any(w in pip.stdout + pip.stderr for w in NO_INDEX):
        pytest.skip("no package index to install setuptools and resurgo's dependencies from")
    assert pip.returncode == 0, pip.stdout + pip.stderr
    installed = subprocess.run(
        [str(python), "-c", "import resurgo, os; print(os.path.dirname(resurgo.__file__))"],
        capture_output=True, text=True, env=_env(), cwd=tmp_path, check=True).stdout.strip()
    assert installed.startswith(str(venv)), installed
    assert not list(Path(installed).rglob("_plain*.so"))

    version = subprocess.run([str(venv / "bin/resurgo"), "--version"], capture_output=True,
                             text=True, env=_env(), cwd=tmp_path, check=False)
    assert version.returncode == 0 and version.stdout.startswith("resurgo "), version

    doctor = subprocess.run([str(venv / "bin/resurgo"), "doctor", "--job", "recover", "--json"],
                            capture_output=True, text=True, env=_env(), cwd=tmp_path,
                            check=False)
    [row] = [c for c in json.loads(doctor.stdout)["checks"]
             if c["name"] == "compiled restore path"]
    assert row["state"] == "limited" and row["fedora"] == "gcc glibc-devel python3-devel"

    demo = subprocess.run([str(python), "-m", "resurgo.demo"], capture_output=True, text=True,
                          env=_env(), cwd=tmp_path, stdin=subprocess.DEVNULL, timeout=600,
                          check=False)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "Traceback" not in demo.stdout + demo.stderr
    assert "data restored: 3 command(s)" in demo.stdout
    assert "verified: every entry of 3 tree(s) matches its manifest" in demo.stdout
    # Said once, though three trees were restored.
    assert (demo.stdout + demo.stderr).count(SLOWER) == 1, demo.stderr
