"""probe.catalog: a fake dpkg tree built here, this machine's real /, the file format."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from resurgo.errors import BadInput, ToolMissing
from resurgo.probe import catalog, dpkg

pytestmark = pytest.mark.skipif(shutil.which("zstd") is None, reason="needs zstd")

STATUS = """\
Package: alpha
Status: install ok installed
Priority: optional
Architecture: amd64
Multi-Arch: same
Version: 1.0-1
Conffiles:
 /etc/alpha.conf 0123456789abcdef0123456789abcdef
 /etc/alpha.d/old.conf 0123456789abcdef0123456789abcdef obsolete
Description: the first
 with a long description.

Package: beta
Status: install ok installed
Architecture: all
Version: 2:3.4-5
Description: the second

Package: gamma
Status: deinstall ok config-files
Architecture: amd64
Version: 9
Conffiles:
 /etc/gamma.conf 0123456789abcdef0123456789abcdef

"""


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def put(root: Path, inside: str | bytes, data: bytes, mode: int = 0o644) -> bytes:
    rel = inside.lstrip(b"/" if isinstance(inside, bytes) else "/")
    path = os.path.join(os.fsencode(root), os.fsencode(rel))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, mode)
    return data


def fake_tree(root: Path) -> dict[str, bytes]:
    """A tiny dpkg system; returns the content of each file that belongs in the catalog."""
    (root / "usr/bin").mkdir(parents=True)
    os.symlink("usr/bin", root / "bin")  # merged /usr
    info = root / "var/lib/dpkg/info"
    info.mkdir(parents=True)
    put(root, "var/lib/dpkg/status", STATUS.encode())
    # alpha diverts beta's /usr/bin/tool and ships its own.
    put(root, "var/lib/dpkg/diversions", b"/usr/bin/tool\n/usr/bin/tool.distrib\nalpha\n")

    alpha_bin = put(root, "usr/bin/alpha", b"#!/bin/sh\necho alpha\n", 0o755)
    alpha_suid = put(root, "usr/lib/alpha/helper", b"\x7fELF helper", 0o4755)
    alpha_tool = put(root, "usr/bin/tool", b"alpha's tool\n", 0o755)
    alpha_data = b"original data\n"
    put(root, "usr/share/alpha/data", b"changed data!\n")  # modified since install
    conf = put(root, "etc/alpha.conf", b"setting=1\n")  # a conffile: never in the catalog
    os.symlink("alpha", root / "usr/bin/alpha-link")
    put(
        info,
        "alpha:amd64.md5sums",
        b"".join(
            f"{md5(data)}  {path}\n".encode()
            for path, data in [
                ("usr/bin/alpha", alpha_bin),
                ("usr/lib/alpha/helper", alpha_suid),
                ("usr/bin/tool", alpha_tool),
                ("usr/share/alpha/data", alpha_data),
                ("etc/alpha.conf", conf),
                ("usr/bin/alpha-link", alpha_bin),  # a symlink now: not a regular file
            ]
        ),
    )

    beta_tool = put(root, "usr/bin/tool.distrib", b"beta's tool\n", 0o755)
    beta_bin = put(root, "usr/bin/beta", b"beta\n", 0o755)
    copyright_ = put(root, "usr/share/doc/beta/copyright", b"GPL\n")
    odd_name = b"usr/share/beta/odd name%\xff\x01.txt"
    odd = put(root, odd_name, b"odd\n")
    put(
        info,
        "beta.md5sums",
        b"".join(
            [
                f"{md5(beta_tool)}  usr/bin/tool\n".encode(),
                f"{md5(beta_bin)}  bin/beta\n".encode(),  # listed under /bin, lives in /usr/bin
                f"{md5(copyright_)}  usr/share/doc/beta/copyright\n".encode(),
                f"{md5(b'gone')}  usr/share/beta/gone\n".encode(),  # deleted since install
                md5(odd).encode() + b"  " + odd_name + b"\n",
            ]
        ),
    )

    gamma = put(root, "usr/share/gamma/file", b"gamma\n")  # not installed any more
    put(info, "gamma.md5sums", f"{md5(gamma)}  usr/share/gamma/file\n".encode())
    put(root, "usr/local/bin/mine", b"unowned\n")
    return {
        "/usr/bin/alpha": alpha_bin,
        "/usr/lib/alpha/helper": alpha_suid,
        "/usr/bin/tool": alpha_tool,
        "/usr/bin/tool.distrib": beta_tool,
        "/usr/bin/beta": beta_bin,
        "/usr/share/doc/beta/copyright": copyright_,
        os.fsdecode(b"/" + odd_name): odd,
    }


def test_catalog_of_a_fake_dpkg_tree(tmp_path: Path) -> None:
    root = tmp_path / "root"
    expected = fake_tree(root)
    out = tmp_path / "set"
    out.mkdir()
    ref = catalog.write_catalog(root, out, workers=3)
    assert ref is not None
    assert ref.path == "catalog.zst"
    assert ref.package_manager == "dpkg"
    assert ref.files == len(expected) == 7
    assert ref.packages == 2
    data = (out / "catalog.zst").read_bytes()
    assert ref.sha256 == hashlib.sha256(data).hexdigest()

    entries = list(catalog.read_catalog(out / ref.path))
    assert [e.path for e in entries] == sorted(expected)
    by_path = {e.path: e for e in entries}
    for path, content in expected.items():
        e = by_path[path]
        assert e.sha256 == hashlib.sha256(content).hexdigest()
        assert e.digest == f"md5:{md5(content)}"
        assert e.size == len(content)
    alpha = by_path["/usr/bin/alpha"]
    assert (alpha.package, alpha.version, alpha.architecture, alpha.mode) == (
        "alpha",
        "1.0-1",
        "amd64",
        0o755,
    )
    assert by_path["/usr/lib/alpha/helper"].mode == 0o4755
    beta = by_path["/usr/bin/beta"]
    assert (beta.package, beta.version, beta.architecture) == ("beta", "2:3.4-5", "all")
    assert by_path["/usr/bin/tool"].package == "alpha"
    assert by_path["/usr/bin/tool.distrib"].package == "beta"

    # The text itself: the header, then escaped paths.
    text = subprocess.run(
        ["zstd", "-dc", str(out / "catalog.zst")], capture_output=True, check=True
    ).stdout.decode("utf-8")
    lines = text.splitlines()
    assert lines[0] == "resurgo-catalog\t1\tdpkg"
    assert len(lines) == 8
    odd_line = next(line for line in lines if "odd" in line)
    assert odd_line.endswith("\t/usr/share/beta/odd name%25%FF%01.txt")
    assert odd_line.startswith(f"md5:{md5(b'odd' + bytes([10]))}\t")
    assert not list(out.glob(".catalog*"))  # no temporary file left behind


def test_catalog_without_sha256(tmp_path: Path) -> None:
    root = tmp_path / "root"
    expected = fake_tree(root)
    result = catalog.collect(root, sha256=False)
    assert result is not None
    manager, entries = result
    assert manager == "dpkg"
    assert len(entries) == len(expected)
    assert all(e.sha256 is None for e in entries)
    catalog.write_file(tmp_path / "c.zst", manager, entries)
    assert list(catalog.read_catalog(tmp_path / "c.zst")) == entries


def test_no_package_database(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    warnings: list[str] = []
    assert catalog.write_catalog(tmp_path, tmp_path, warnings=warnings) is None
    assert len(warnings) == 1 and "no dpkg or rpm database" in warnings[0]
    assert not (tmp_path / "catalog.zst").exists()


def test_line_format_round_trip() -> None:
    e = catalog.CatalogEntry(
        path="/a b/%/\t/\n/" + os.fsdecode(b"\xfe") + "/é",
        package="p",
        version="1:2-3",
        architecture="amd64",
        size=12,
        mode=0o2755,
        digest="md5:" + "0" * 32,
        sha256="f" * 64,
    )
    line = catalog.format_entry(e)
    assert line.count("\t") == 7 and line.endswith("\n") and line.count("\n") == 1
    assert "%25" in line and "%09" in line and "%0A" in line and "%FE" in line and "é" in line
    assert catalog.parse_entry(line) == e
    assert catalog.parse_header(catalog.header("rpm")) == "rpm"


def test_reader_refuses_what_it_does_not_know(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="version '2'"):
        catalog.parse_header("resurgo-catalog\t2\tdpkg\n")
    with pytest.raises(BadInput, match="not a resurgo catalog"):
        catalog.parse_header("something else\n")
    with pytest.raises(BadInput, match="fields"):
        catalog.parse_entry("md5:00\t-\t1\n")
    bad = tmp_path / "bad.zst"
    bad.write_bytes(b"not zstd at all")
    with pytest.raises(BadInput, match="zstd"):
        list(catalog.read_catalog(bad))
    with pytest.raises(BadInput, match="no such"):
        list(catalog.read_catalog(tmp_path / "missing.zst"))


def test_rpm_query_parser() -> None:
    """The shape of ``rpm -qa --qf RPM_QUERY`` (one line per file, TAB-separated)."""
    sha = hashlib.sha256(b"x").hexdigest()
    text = "".join(
        [
            f"bash\t(none)\t5.2.15\t3.fc38\tx86_64\t8\t{sha}\t1234\t33261\t0\t/usr/bin/bash\n",
            f"bash\t(none)\t5.2.15\t3.fc38\tx86_64\t8\t{sha}\t5\t33188\t1\t/etc/skel/.bashrc\n",
            "bash\t(none)\t5.2.15\t3.fc38\tx86_64\t8\t\t0\t16877\t0\t/usr/share/doc/bash\n",
            f"bash\t(none)\t5.2.15\t3.fc38\tx86_64\t8\t{sha}\t0\t33188\t64\t/var/log/ghost\n",
            "bash\t(none)\t5.2.15\t3.fc38\tx86_64\t8\t\t0\t41471\t0\t/usr/bin/sh\n",
            f"shadow\t2\t4.13\t6.fc38\tx86_64\t1\t{'A' * 32}\t9\t32768\t0\t/usr/sbin/x y\n",
            "junk line\n",
        ]
    )
    owned, packages = catalog.parse_rpm_query(text)
    assert packages == 2
    assert [(o.path, o.algorithm, o.package, o.version, o.size) for o in owned] == [
        ("/usr/bin/bash", "sha256", "bash", "5.2.15-3.fc38", 1234),
        ("/usr/sbin/x y", "md5", "shadow", "2:4.13-6.fc38", 9),
    ]
    assert owned[1].digest == "a" * 32


def test_diversions_and_md5sums_parsers() -> None:
    assert dpkg.parse_diversions("/a\n/a.distrib\npkg\n/b\n/b.orig\n:\n") == {
        "/a": ("/a.distrib", "pkg"),
        "/b": ("/b.orig", ":"),
    }
    assert dpkg.parse_md5sums(b"0123456789ABCDEF0123456789abcdef  usr/x y\nbad\n") == [
        ("0123456789abcdef0123456789abcdef", "/usr/x y")
    ]
    pkgs = dpkg.parse_status(STATUS)
    assert [(p.name, p.installed) for p in pkgs] == [
        ("alpha", True),
        ("beta", True),
        ("gamma", False),
    ]
    assert pkgs[0].conffiles == ("/etc/alpha.conf", "/etc/alpha.d/old.conf")
    assert pkgs[0].info_names() == ("alpha:amd64", "alpha")
    assert pkgs[1].info_names() == ("beta", "beta:all")


@pytest.mark.skipif(not Path("/var/lib/dpkg/status").is_file(), reason="not a dpkg system")
def test_catalog_of_this_machine(tmp_path: Path) -> None:
    ref = catalog.write_catalog(Path("/"), tmp_path)
    assert ref is not None
    assert ref.package_manager == "dpkg"
    assert ref.files > 1000
    assert ref.packages > 50
    entries = {e.path: e for e in catalog.read_catalog(tmp_path / ref.path)}
    assert len(entries) == ref.files
    packages = {p.name: p for p in dpkg.read_status(Path("/")) or []}
    # dpkg's own binary, unless someone changed it: then it must not be there.
    dpkg_md5 = {
        path: digest
        for digest, path in dpkg.parse_md5sums(Path("/var/lib/dpkg/info/dpkg.md5sums").read_bytes())
    }
    binary = Path("/usr/bin/dpkg")
    actual = hashlib.md5(binary.read_bytes()).hexdigest()
    if actual == dpkg_md5["/usr/bin/dpkg"]:
        e = entries["/usr/bin/dpkg"]
        assert (e.package, e.version) == ("dpkg", packages["dpkg"].version)
        assert e.sha256 == hashlib.sha256(binary.read_bytes()).hexdigest()
        assert e.mode == 0o755
    else:
        assert "/usr/bin/dpkg" not in entries
    conffiles = {c for p in packages.values() for c in p.conffiles}
    assert not conffiles & set(entries)


RPM_DATA = Path(__file__).parent.parent / "data" / "catalog"


def test_rpm_query_recorded() -> None:
    owned, packages = catalog.parse_rpm_query((RPM_DATA / "rpm-qa-hello.txt").read_text())
    assert packages == 1
    # Not the %config file, the symlink, the directory or the %ghost file.
    assert [(o.path, o.algorithm, o.size) for o in owned] == [
        ("/usr/bin/hello", "sha256", 21),
        ("/usr/share/hello/README", "sha256", 11),
        ("/usr/share/hello/data", "sha256", 26),
    ]
    assert {(o.package, o.version, o.architecture) for o in owned} == {
        ("hello", "1:1.2-3", "noarch")
    }


@pytest.mark.skipif(shutil.which("rpm") is None, reason="needs rpm")
def test_catalog_of_an_rpm_tree(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    rpm = ["rpm", "--root", str(root), "--dbpath", "/var/lib/rpm"]
    subprocess.run([*rpm, "--initdb"], check=True)
    subprocess.run(
        [*rpm, "-i", "--nodeps", "--noscripts", str(RPM_DATA / "hello-1.2-3.noarch.rpm")],
        check=True,
        capture_output=True,
    )
    (root / "usr/share/hello/data").write_text("changed since install\n")
    ref = catalog.write_catalog(root, tmp_path)
    assert ref is not None
    assert (ref.package_manager, ref.files, ref.packages) == ("rpm", 2, 1)
    entries = list(catalog.read_catalog(tmp_path / ref.path))
    assert [(e.path, e.mode, e.version) for e in entries] == [
        ("/usr/bin/hello", 0o755, "1:1.2-3"),
        ("/usr/share/hello/README", 0o644, "1:1.2-3"),
    ]
    readme = (root / "usr/share/hello/README").read_bytes()
    assert entries[1].digest == f"sha256:{hashlib.sha256(readme).hexdigest()}"
    assert entries[1].sha256 == hashlib.sha256(readme).hexdigest()


def test_rpm_tree_without_rpm_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "var/lib/rpm").mkdir(parents=True)
    (tmp_path / "var/lib/rpm/rpmdb.sqlite").write_bytes(b"")
    monkeypatch.setattr(catalog.run, "which", lambda program: None)
    with pytest.raises(ToolMissing) as err:
        catalog.write_catalog(tmp_path, tmp_path)
    assert err.value.program == "rpm"
    assert "apt-get install rpm" in str(err.value)
