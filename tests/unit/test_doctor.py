"""resurgo doctor, the tools each job needs checked up front, the one package table."""

from __future__ import annotations

import ast
import logging
import os
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

import resurgo
from resurgo import doctor, needs, packages, run
from resurgo.engine import plainsave, writer
from resurgo.media import setindex
from resurgo.media.base import SetInfo
from resurgo.media.setindex import FileEntry, SetMeta
from resurgo.packages import TOOLS
from resurgo.plan import checks
from resurgo.rescue import contents, iso
from tests.support.cli import run as cli

SOURCE = Path(resurgo.__file__).parent
README = SOURCE.parents[1] / "README.md"


# ----------------------------------------------------------------- the package table


def _literal_programs(tree: ast.AST) -> set[str]:
    """Programs named as literals where resurgo runs or requires them: run.run([...]),
    run.output/spawn likewise, run.require/which("..."), ToolMissing("..."), and the argv
    builders of apply/commands.py (lists returned that start with a program)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        names: list[object] = []
        if (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
                and func.value.id in ("run", "runner")):
            if func.attr in ("require", "which"):
                names = [a.value for a in node.args if isinstance(a, ast.Constant)]
            elif func.attr in ("run", "output", "spawn") and node.args:
                argv = node.args[0]
                if isinstance(argv, ast.List) and argv.elts and isinstance(argv.elts[0],
                                                                           ast.Constant):
                    names = [argv.elts[0].value]
        elif isinstance(func, ast.Name) and func.id == "ToolMissing" and node.args:
            first = node.args[0]
            names = [first.value] if isinstance(first, ast.Constant) else []
        found.update(n for n in names if isinstance(n, str) and "/" not in n)
    return found


def _argv_builders(tree: ast.AST) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.List) and node.elts and isinstance(node.elts[0], ast.Constant):
            first = node.elts[0].value
            if isinstance(first, str) and re.fullmatch(r"[a-z][a-z0-9_.-]*", first):
                found.add(first)
    return found


def programs_resurgo_runs() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for f in sorted(SOURCE.rglob("*.py")):
        tree = ast.parse(f.read_text())
        names = _literal_programs(tree)
        if f.relative_to(SOURCE).as_posix() == "apply/commands.py":
            names |= _argv_builders(tree)
        # mkfs programs are chosen by name (plan/filesystems.py)
        names |= {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)
                  and isinstance(n.value, str) and re.fullmatch(r"mkfs\.[a-z0-9]+", n.value)}
        for name in names:
            found.setdefault(name, set()).add(f.relative_to(SOURCE).as_posix())
    return found


def test_every_program_resurgo_runs_has_its_packages() -> None:
    found = programs_resurgo_runs()
    # the scan sees them, in each of its forms
    assert {"sfdisk", "unshare", "dracut", "xz", "rpm", "cryptsetup",
            "mkfs.xfs"} <= set(found)
    tables = {
        *found,
        *contents.program_names(),
        *iso.MKRESCUE[:1], *iso.TOOLS,
        *(p for tools in checks.TOOLS.values() for p in tools),
        *(name for name, _ in needs.SAVE_PROGRAMS + needs.RECOVER_PROGRAMS
          + needs.RECOVER_LAYOUT_PROGRAMS),
    }
    missing = {n: sorted(found.get(n, {"a table"})) for n in tables if n not in TOOLS}
    assert not missing, f"add to packages.TOOLS (Debian and Fedora names): {missing}"


def test_every_entry_names_a_package() -> None:
    for name, p in TOOLS.items():
        assert p.debian or p.fedora, name
        for n in (p.debian, p.fedora):
            assert n is None or re.fullmatch(r"[a-z0-9][a-z0-9.+-]*", n), (name, n)
    # the ones a minimal system lacks, which sent this table its Fedora column
    assert TOOLS["xz"] == packages.Package("xz-utils", "xz")
    assert TOOLS["ssh-keygen"] == packages.Package("openssh-client", "openssh-clients")
    assert TOOLS["cryptsetup"].fedora == "cryptsetup"
    assert packages.PACKAGES["xz"] == "xz-utils"


def test_install_hint_names_both_families() -> None:
    assert packages.hint_for("xz", "zstd") == (
        "apt-get install xz-utils zstd (Debian, Ubuntu); dnf install xz zstd (Fedora, RHEL)")
    assert packages.hint_for("lsinitramfs") == "apt-get install initramfs-tools-core " \
        "(Debian, Ubuntu)"
    assert packages.hint_for("no-such-program") is None
    e = run.ToolMissing("xz", None)
    assert "apt-get install xz-utils" in str(e) and "dnf install xz " in str(e)


def test_the_rescue_carries_programs_with_the_table_packages() -> None:
    for p in contents.PROGRAMS:
        assert p.package == TOOLS[p.name].debian, p.name


# ----------------------------------------------------------------- a PATH without a tool


@pytest.fixture
def path_without(tmp_path: Path,
                 monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Path]]:
    """A PATH of this machine's programs but the ones named: resurgo's PATH is set to it."""
    monkeypatch.setattr(run, "is_root", lambda: True)

    def make(*gone: str) -> Path:
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        for d in run.PATH.split(":"):
            if not os.path.isdir(d):
                continue
            for name in os.listdir(d):
                if name in gone or (bin_dir / name).exists() or (bin_dir / name).is_symlink():
                    continue
                real = os.path.join(d, name)
                if os.access(real, os.X_OK) and not os.path.isdir(real):
                    (bin_dir / name).symlink_to(real)
        monkeypatch.setattr(run, "PATH", str(bin_dir))
        return bin_dir

    yield make


def _rows(result_json: dict[str, object], name: str) -> list[dict[str, object]]:
    checks_ = result_json["checks"]
    assert isinstance(checks_, list)
    return [r for r in checks_ if r["name"] == name]


def test_doctor_names_xz_for_the_rescue(path_without: Callable[..., Path]) -> None:
    path_without("xz")
    r = cli("doctor", "--job", "rescue", "--json")
    assert r.returncode == 3, r.output
    data = r.json()
    assert data["jobs"] == {"rescue": False} and data["ready"] is False
    [xz] = _rows(data, "xz")
    assert xz["state"] == "missing" and xz["job"] == "rescue"
    assert (xz["debian"], xz["fedora"]) == ("xz-utils", "xz")
    text = cli("doctor", "--job", "rescue")
    assert text.returncode == 3
    assert re.search(r"MISSING +xz ", text.stdout)
    assert "apt-get install xz-utils (Debian, Ubuntu); dnf install xz (Fedora, RHEL)" \
        in text.stdout


def test_doctor_exit_codes_for_save(path_without: Callable[..., Path], tmp_path: Path) -> None:
    path_without("zstd")
    r = cli("doctor", "--job", "save", "--json")
    assert r.returncode == 3, r.output
    [zstd] = _rows(r.json(), "zstd")
    assert zstd["state"] == "missing" and zstd["debian"] == "zstd"
    # every program there: save can run
    os.symlink(run.shutil.which("zstd") or "/usr/bin/zstd", Path(run.PATH) / "zstd")
    medium = tmp_path / "sets"
    medium.mkdir()
    r = cli("doctor", "--job", "save", "--to", str(medium), "--json")
    assert r.returncode == 0, r.output
    [row] = [c for c in r.json()["checks"] if c["kind"] == "medium"]
    assert row["state"] == "ok" and "0 set(s)" in row["detail"]
    assert r.json()["jobs"] == {"save": True}


def test_doctor_medium_and_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run, "is_root", lambda: True)
    r = cli("doctor", "--job", "save", "--to", str(tmp_path / "no/such/dir"),
            "--sign-key", str(tmp_path / "nokey"), "--json")
    assert r.returncode == 3
    got = {c["kind"]: c for c in r.json()["checks"] if c["kind"] in ("medium", "key")}
    assert got["medium"]["state"] == "missing" and "no such directory" in got["medium"]["detail"]
    assert got["key"]["state"] == "missing" and "nokey" in got["key"]["name"]
    identity = tmp_path / "id.txt"
    identity.write_text("AGE-SECRET-KEY-1...\n")
    r = cli("doctor", "--job", "recover", "--identity", str(identity), "--json")
    [key] = [c for c in r.json()["checks"] if c["kind"] == "key"]
    assert key["state"] == "ok"


def test_doctor_bad_job_is_bad_input() -> None:
    assert cli("doctor", "--job", "backup").returncode == 2


def test_only_missing_rows_fail_a_job() -> None:
    rows = (doctor.Row(needs.Job.SAVE, "program", "zstd", doctor.State.OK),
            doctor.Row(needs.Job.RECOVER, "program", "efibootmgr", doctor.State.LIMITED),
            doctor.Row(needs.Job.RESCUE, "program", "xz", doctor.State.MISSING,
                       package=TOOLS["xz"]))
    report = doctor.DoctorReport((needs.Job.SAVE, needs.Job.RECOVER), rows)
    assert report.exit_code == 0
    report = doctor.DoctorReport(tuple(needs.Job), rows)
    assert report.exit_code == 3
    assert "rescue: CANNOT run" in report.text() and "save: can run" in report.text()
    assert report.text().rstrip().endswith(
        "to install what is missing: apt-get install xz-utils (Debian, Ubuntu); "
        "dnf install xz (Fedora, RHEL)")


# ----------------------------------------------------------------- save checks up front


def test_save_require_rescue_is_refused_before_writing(path_without: Callable[..., Path],
                                                       tmp_path: Path) -> None:
    path_without("xz")
    (tmp_path / "root").mkdir()
    medium = tmp_path / "sets"
    r = cli("save", "--to", str(medium), "--root", str(tmp_path / "root"),
            "--require-rescue", state=tmp_path / "state")
    assert r.returncode == 3, r.output
    assert "xz" in r.stderr and "apt-get install" in r.stderr and "xz-utils" in r.stderr
    assert "nothing was written" in r.stderr
    assert not medium.exists() or not any(medium.iterdir())


def test_save_without_a_program_it_runs_is_refused(path_without: Callable[..., Path],
                                                   tmp_path: Path) -> None:
    path_without("zstd")
    (tmp_path / "root").mkdir()
    medium = tmp_path / "sets"
    r = cli("save", "--to", str(medium), "--root", str(tmp_path / "root"), "--no-rescue",
            state=tmp_path / "state")
    assert r.returncode == 3, r.output
    assert "zstd" in r.stderr and "compress the archives" in r.stderr
    assert not medium.exists() or not any(medium.iterdir())


def test_require_rescue_and_no_rescue_contradict(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run, "is_root", lambda: True)
    r = cli("save", "--to", str(tmp_path), "--require-rescue", "--no-rescue")
    assert r.returncode == 2 and "contradict" in r.stderr


def test_a_set_says_whether_it_has_its_rescue_image() -> None:
    def info(*names: str) -> SetInfo:
        files = [FileEntry(n, 1, "0" * 64) for n in ("description.toml", *names)]
        idx = setindex.build("20261125T233000Z-ab12", datetime(2026, 11, 25, tzinfo=UTC),
                             SetMeta(), files)
        return SetInfo.of(idx)

    assert info("rescue.iso").has_rescue
    assert not info().has_rescue


# ----------------------------------------------------------------- the compiled part


def test_without_the_compiled_path_the_restore_says_so_once(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(writer, "make_plain", writer._make_none)
    monkeypatch.setattr(writer, "_slow_said", False)
    assert not writer.compiled()
    with caplog.at_level(logging.WARNING):
        writer.warn_if_slow()
        writer.warn_if_slow()
    said = [r for r in caplog.records if "slower" in r.getMessage()]
    assert len(said) == 1
    row = doctor._compiled_row(needs.Job.RECOVER)
    assert row.state is doctor.State.LIMITED and row.package == packages.COMPILER


def test_the_save_row_says_whether_its_compiled_path_is_built(
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert doctor._compiled_save_row().state is doctor.State.OK
    monkeypatch.setattr(plainsave, "save_run", None)
    row = doctor._compiled_save_row()
    assert row.state is doctor.State.LIMITED and row.package == packages.COMPILER
    assert row.job is needs.Job.SAVE and "small files" in row.detail


def test_readme_lists_doctor_and_the_install_section() -> None:
    text = README.read_text()
    assert "| `resurgo doctor" in text
    section = text.split("## Install on a server", 1)[1].split("\n## ", 1)[0]
    for program in ("xz", "grub-mkrescue", "dracut", "zstd"):
        p = TOOLS[program]
        assert p.debian and p.debian in section, program
        assert p.fedora and p.fedora in section, program


def test_doctor_checks_the_jobs_as_configured(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run, "is_root", lambda: True)
    sets = tmp_path / "sets"
    sets.mkdir()
    conf = tmp_path / "resurgo.toml"
    identity = tmp_path / "age.key"
    identity.write_text("AGE-SECRET-KEY-1...\n")
    conf.write_text(f'medium = "{sets}"\nsign_key = "{tmp_path}/nokey"\n'
                    f'identity = "{identity}"\n[rescue]\nbuild = false\n')
    r = cli("doctor", "--json", env={"RESURGO_CONFIG": str(conf)})
    assert r.returncode == 3, r.output  # the sign key is missing
    data = r.json()
    assert set(data["jobs"]) == {"save", "recover"}  # no rescue build is configured
    media = [c for c in data["checks"] if c["kind"] == "medium"]
    assert [(c["job"], c["name"], c["state"]) for c in media] == [
        ("save", str(sets), "ok"), ("recover", str(sets), "ok")]
    keys = {c["job"]: c for c in data["checks"] if c["kind"] == "key"}
    assert keys["save"]["state"] == "missing" and keys["save"]["name"].endswith("/nokey")
    assert keys["recover"]["state"] == "ok" and keys["recover"]["name"].endswith("age.key")
    conf.write_text("medium = 3\n")
    bad = cli("doctor", env={"RESURGO_CONFIG": str(conf)})
    assert bad.returncode == 2 and "line 1" in bad.stderr
