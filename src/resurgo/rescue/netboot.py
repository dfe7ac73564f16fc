"""The network boot tree of the rescue (``resurgo rescue --netboot DIR``).

The rescue needs no ISO and no root filesystem: its initramfs is the whole system
(build.py), so a network boot is the kernel and that very initramfs, fetched by a boot
loader with the ISO's boot entries and their kernel command lines. Nothing is fetched
after the kernel starts (no squashfs or root image to download and check): what a boot
loader loaded is what runs, and the set is then found over the network as the ISO finds
it (resurgo.from=, the image's medium, DHCP). The price is memory: the machine holds the
compressed initramfs and its unpacked files at once while the kernel unpacks it.

DIR, served as the root of a TFTP server (and of an HTTP server for UEFI HTTP boot):

    vmlinuz, initrd.img         the kernel and the initramfs
    boot.ipxe                   an iPXE script: the entries as a menu, the default first
    pxelinux.0, ldlinux.c32     PXELINUX for BIOS PXE, from the build machine's syslinux
    pxelinux.cfg/default        (Debian's pxelinux and syslinux-common), when it has them
    grub/i386-pc/core.0         GRUB netboot (grub-mknetdir): BIOS PXE;
    grub/x86_64-efi/core.efi    UEFI PXE; both read grub/grub.cfg
    rescue.iso                  UEFI HTTP boot, when the ISO is built too (--to): the
                                firmware downloads it and boots it as a RAM disk
    SHA256SUMS                  every file's digest (``sha256sum -c SHA256SUMS``)
    resurgo-netboot.json        what built the tree; a later build replaces a tree only
                                where this file says it is one

UEFI HTTP boot gets the ISO, not GRUB's network image: loaded over HTTP, that image is
handed no network configuration (GRUB 2.06 takes it from the firmware's PXE, which an
HTTP boot does not run) and stops at ``grub rescue>`` ("variable `root' isn't set"), as
tried with OVMF 2022.11 and Debian 12's GRUB. The firmware boots an URL ending in .iso as
a virtual CD in RAM, and the ISO's own GRUB boots from it.

Every kernel argument goes through ``check_arg``: the configurations are line- and
word-based (an iPXE script splits on blanks and takes ``||``, ``&&``, ``;`` and ``#`` as
its own, PXELINUX reads an APPEND line to its end, GRUB quotes), so a value holding a
line break or one of those would be a command of the boot loader's, not an argument.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from resurgo import run
from resurgo.errors import BadInput
from resurgo.packages import Package, install_hint
from resurgo.rescue.iso import BootEntry, grub_cfg

KERNEL = "vmlinuz"
INITRD = "initrd.img"
IPXE_SCRIPT = "boot.ipxe"
PXELINUX_CFG = "pxelinux.cfg/default"
GRUB_DIR = "grub"
GRUB_CFG = f"{GRUB_DIR}/grub.cfg"
GRUB_BIOS_NBP = f"{GRUB_DIR}/i386-pc/core.0"
GRUB_EFI_NBP = f"{GRUB_DIR}/x86_64-efi/core.efi"
ISO = "rescue.iso"
SUMS = "SHA256SUMS"
MANIFEST = "resurgo-netboot.json"
MANIFEST_FORMAT = "resurgo-netboot"

#: PXELINUX's files, where Debian/Ubuntu (pxelinux, syslinux-common) and Fedora/RHEL
#: (syslinux) put them.
PXELINUX_SOURCES: Mapping[str, tuple[str, ...]] = {
    "pxelinux.0": ("/usr/lib/PXELINUX/pxelinux.0", "/usr/share/syslinux/pxelinux.0"),
    "ldlinux.c32": ("/usr/lib/syslinux/modules/bios/ldlinux.c32",
                    "/usr/share/syslinux/ldlinux.c32"),
}
PXELINUX_PACKAGE = Package("pxelinux syslinux-common", "syslinux")
MKNETDIR = ("grub-mknetdir", "grub2-mknetdir")
MKNETDIR_PACKAGE = Package("grub-common", "grub2-tools")

#: x86's COMMAND_LINE_SIZE, less room for what the loaders add (BOOT_IMAGE=, initrd=).
MAX_CMDLINE = 2048 - 64
#: Pieces of a word an iPXE script reads as its own (exec.c: command_terminator).
_IPXE_TERMINATORS = frozenset({"||", "&&", ";"})


@dataclass(frozen=True)
class Loaders:
    """The boot loaders' files this machine has: PXELINUX's (name in DIR: source) and
    the name of grub-mknetdir; None where it lacks them."""

    pxelinux: Mapping[str, Path] | None
    mknetdir: str | None

    @staticmethod
    def find(root: Path = Path("/")) -> Loaders:
        found: dict[str, Path] = {}
        for name, candidates in PXELINUX_SOURCES.items():
            path = next((root / c.lstrip("/") for c in candidates
                         if (root / c.lstrip("/")).is_file()), None)
            if path is not None:
                found[name] = path
        pxelinux = found if len(found) == len(PXELINUX_SOURCES) else None
        mknetdir = next((name for name in MKNETDIR if run.which(name)), None)
        return Loaders(pxelinux, mknetdir)


@dataclass(frozen=True)
class NetbootReport:
    """What the tree holds."""

    directory: Path
    files: tuple[str, ...]  # the tree's files but GRUB's modules, relative to it
    loaders: tuple[str, ...]  # ipxe, pxelinux, grub-bios, grub-efi
    size: int  # every file's bytes
    initrd_size: int
    #: The files each way of booting starts with (what a DHCP server names).
    boot_files: Mapping[str, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    def data(self) -> dict[str, Any]:
        return {
            "directory": str(self.directory),
            "files": list(self.files),
            "loaders": list(self.loaders),
            "boot_files": dict(self.boot_files),
            "size": self.size,
            "initramfs_size": self.initrd_size,
            "warnings": list(self.warnings),
        }


# -------------------------------------------------------------------------------------
# the kernel arguments, and the configurations (pure)


def check_arg(word: str) -> None:
    """Raise BadInput unless ``word`` is one kernel argument every boot configuration of
    the tree carries as it is: no line break or other control character, no quote,
    nothing an iPXE script would read as a setting (``${``), a comment or the end of a
    command."""
    if not word:
        raise BadInput("an empty kernel argument")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in word):
        raise BadInput(f"a kernel argument cannot hold a line break or another control "
                       f"character: {word!r}")
    if '"' in word or "'" in word:
        raise BadInput(f"a kernel argument cannot hold quotes: {word!r}")
    if "${" in word:
        raise BadInput(f"a kernel argument cannot hold '${{' (an iPXE setting): {word!r}")
    pieces = word.split()
    if any(p in _IPXE_TERMINATORS or p.startswith("#") for p in pieces[1:]):
        raise BadInput(f"a kernel argument cannot hold a blank-separated '||', '&&', ';' or "
                       f"'#...' (iPXE's own): {word!r}")
    if pieces and pieces[0].startswith("#"):
        raise BadInput(f"a kernel argument cannot begin with '#': {word!r}")


def kernel_word(word: str) -> str:
    """``word`` as the kernel reads it from a command line: in double quotes when it
    holds blanks (the kernel drops them: lib/cmdline.c)."""
    check_arg(word)
    return f'"{word}"' if any(c.isspace() for c in word) else word


def command_line(args: Sequence[str]) -> str:
    line = " ".join(kernel_word(a) for a in args)
    if len(line) > MAX_CMDLINE:
        raise BadInput(f"the kernel command line is {len(line)} characters long: the kernel "
                       f"takes {MAX_CMDLINE} at most")
    return line


def _ipxe_text(text: str) -> str:
    check_arg(text)
    return text


def ipxe_script(entries: Sequence[BootEntry], *, timeout: int, label: str) -> str:
    """boot.ipxe: a menu of ``entries`` (the first the default) that waits ``timeout``
    seconds (-1: for a key; 0: no menu). Paths are relative to the script's own URL, so
    the tree may be served over TFTP or HTTP, at any path. An iPXE without menus boots
    the default; Esc at the menu takes the shell entry, which writes nothing."""
    ids = [e.id for e in entries]
    if not entries or len(set(ids)) != len(ids):
        raise ValueError("boot entries need distinct ids")
    default = entries[0].id
    safe = next((e.id for e in entries if e.id == "shell"), default)
    lines = ["#!ipxe", f"# {_ipxe_text(label)}", ""]
    if timeout != 0:
        lines.append(f"menu {_ipxe_text(label)} || goto {default}")
        lines += [f"item {e.id} {_ipxe_text(e.title)}" for e in entries]
        wait = "" if timeout < 0 else f" --timeout {timeout * 1000}"
        lines += [f"choose --default {default}{wait} entry || goto {safe}",
                  "goto ${entry}"]
    else:
        lines.append(f"goto {default}")
    for e in entries:
        lines += [
            "",
            f":{e.id}",
            "echo Loading the resurgo rescue system ...",
            # initrd= names the initramfs for a kernel started as an EFI program (iPXE
            # on UEFI); on BIOS, iPXE takes it the same way.
            f"kernel {KERNEL} initrd={INITRD} {command_line(e.args)}",
            f"initrd {INITRD}",
            "boot || goto failed",
        ]
    lines += ["", ":failed",
              "echo The resurgo rescue did not start (too little memory for the initramfs?)",
              "exit 1"]
    return "\n".join(lines) + "\n"


def pxelinux_cfg(entries: Sequence[BootEntry], *, timeout: int, label: str) -> str:
    """pxelinux.cfg/default: the entries as labels at PXELINUX's boot: prompt (the
    default first), listed on the console; ``timeout`` seconds (-1: for ever; 0: no
    prompt). Paths are relative to pxelinux.0's directory."""
    lines = [f"# {_ipxe_text(label)}", "SERIAL 0 115200", f"DEFAULT {entries[0].id}"]
    if timeout == 0:
        lines.append("PROMPT 0")
    else:
        lines += ["PROMPT 1", f"TIMEOUT {0 if timeout < 0 else timeout * 10}"]
    lines.append(f"SAY {_ipxe_text(label)}")
    lines += [f"SAY   {e.id}: {_ipxe_text(e.title)}" for e in entries]
    for e in entries:
        lines += [
            "",
            f"LABEL {e.id}",
            f"  LINUX {KERNEL}",
            f"  INITRD {INITRD}",
            f"  APPEND {command_line(e.args)}",
        ]
    return "\n".join(lines) + "\n"


def netboot_grub_cfg(entries: Sequence[BootEntry], *, timeout: int, label: str) -> str:
    """grub/grub.cfg: the ISO's menu, the kernel and initramfs at the served root."""
    check_arg(label)  # a comment line of its own
    for e in entries:
        command_line(e.args)
    return grub_cfg(entries, timeout=timeout, label=label, kernel=f"/{KERNEL}",
                    initrd=f"/{INITRD}")


# -------------------------------------------------------------------------------------
# the tree


def _is_ours(directory: Path) -> bool:
    try:
        data = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("format") == MANIFEST_FORMAT


def check_directory(directory: Path) -> None:
    """Raise BadInput unless ``directory`` is missing, empty, or a tree resurgo wrote:
    the tree's names (grub/, pxelinux.cfg/ ...) would replace another's files."""
    if directory.is_symlink():
        raise BadInput(f"--netboot {directory}: a symbolic link", "name the directory itself")
    if not directory.exists():
        return
    if not directory.is_dir():
        raise BadInput(f"--netboot {directory}: not a directory")
    names = [n for n in os.listdir(directory) if not n.startswith(".resurgo-netboot-")]
    if names and not _is_ours(directory):
        raise BadInput(
            f"--netboot {directory}: holds other files, and no {MANIFEST}",
            "give an empty directory (or a tree written by resurgo); serve it as the "
            "TFTP/HTTP root or below it")


def check_iso_place(iso: Path, directory: Path) -> None:
    """The ISO (--to) is not written inside the tree, which gets a copy of its own."""
    if Path(os.path.abspath(iso)).is_relative_to(os.path.abspath(directory)):
        raise BadInput(f"--to {iso} is inside --netboot {directory}: the tree gets a copy "
                       f"of the ISO of its own ({ISO})", "write the ISO outside the tree")


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.is_file() and not p.is_symlink())


def _copy(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)


def _write(dest: Path, text: str) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(text)


def _mknetdir(program: str, stage: Path) -> None:
    """GRUB's network images and modules for the platforms installed (BIOS and UEFI),
    their prefix /grub on the server they were loaded from."""
    run.run([program, f"--net-directory={stage}", f"--subdir={GRUB_DIR}", "--fonts=",
             "--locales=", "--themes="], timeout=300)


def write_tree(
    directory: Path,
    *,
    kernel: Path,
    initrd: Path,
    entries: Sequence[BootEntry],
    timeout: int,
    label: str,
    manifest: Mapping[str, Any],
    loaders: Loaders,
    private_initrd: bool = False,
    iso: Path | None = None,
) -> NetbootReport:
    """Write the tree into ``directory`` (made when missing; see check_directory), the
    configurations last, so that a loader never finds one naming a file not yet there.
    ``private_initrd``: the initramfs carries credentials, and is made 0600 (and the ISO,
    which holds it). ``iso``: the rescue ISO of the same build, for UEFI HTTP boot."""
    check_directory(directory)
    configs = {
        IPXE_SCRIPT: ipxe_script(entries, timeout=timeout, label=label),
        GRUB_CFG: netboot_grub_cfg(entries, timeout=timeout, label=label),
    }
    warnings: list[str] = []
    if loaders.pxelinux is not None:
        configs[PXELINUX_CFG] = pxelinux_cfg(entries, timeout=timeout, label=label)
    else:
        warnings.append(
            "no PXELINUX in the tree: this machine has no pxelinux.0 and ldlinux.c32 (install "
            f"them: {install_hint([PXELINUX_PACKAGE])}); iPXE and GRUB boot it all the same")
    if loaders.mknetdir is None:
        configs.pop(GRUB_CFG)
        warnings.append(
            "no GRUB netboot in the tree (BIOS and UEFI PXE through GRUB, UEFI HTTP boot): "
            f"this machine has no grub-mknetdir (install it: {install_hint([MKNETDIR_PACKAGE])})")
    if iso is None:
        warnings.append(f"no {ISO} in the tree for UEFI HTTP boot (it boots the ISO): "
                        "give --to as well")
    if not directory.exists():
        directory.mkdir(parents=True)
        os.chmod(directory, 0o755)  # made here: the server reads it (an existing one is kept)
    stage = Path(tempfile.mkdtemp(prefix=".resurgo-netboot-", dir=directory))
    try:
        _copy(kernel, stage / KERNEL)
        _copy(initrd, stage / INITRD)
        loaded: list[str] = ["ipxe"]
        boot_files = {"ipxe": IPXE_SCRIPT}
        if loaders.pxelinux is not None:
            for name, src in loaders.pxelinux.items():
                _copy(src, stage / name)
            loaded.append("pxelinux")
            boot_files["pxelinux"] = "pxelinux.0"
        if loaders.mknetdir is not None:
            _mknetdir(loaders.mknetdir, stage)
            for platform, nbp in (("grub-bios", GRUB_BIOS_NBP), ("grub-efi", GRUB_EFI_NBP)):
                if (stage / nbp).is_file():
                    loaded.append(platform)
                    boot_files[platform] = nbp
        if iso is not None:
            _copy(iso, stage / ISO)
            loaded.append("uefi-http")
            boot_files["uefi-http"] = ISO
        for name, text in configs.items():
            _write(stage / name, text)
        names = _files(stage)
        sums = "".join(f"{_digest(stage / n)}  {n}\n" for n in names)
        _write(stage / SUMS, sums)
        initrd_size = (stage / INITRD).stat().st_size
        tops = _top(names)
        _write(stage / MANIFEST, json.dumps(
            {**manifest, "format": MANIFEST_FORMAT, "loaders": loaded,
             "boot_files": boot_files, "names": tops}, indent=2) + "\n")
        size = sum((stage / n).stat().st_size for n in [*names, SUMS, MANIFEST])
        _served_modes(stage, private={INITRD, ISO} if private_initrd else set())
        _move_in(stage, directory, order=[KERNEL, INITRD, *tops, MANIFEST],
                 old=_old_names(directory))
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    shown = [n for n in [*names, SUMS, MANIFEST] if not _is_grub_module(n)]
    return NetbootReport(directory=directory, files=tuple(shown), loaders=tuple(loaded),
                         size=size, initrd_size=initrd_size, boot_files=boot_files,
                         warnings=tuple(warnings))


def _served_modes(stage: Path, private: set[str]) -> None:
    """Readable by the TFTP or HTTP server's user whatever the umask (a save under
    systemd runs with 0077), but ``private``, which only its owner reads."""
    for path in [*stage.rglob("*"), stage]:  # the top last: private files are so first
        if path.is_symlink():
            continue
        if path.is_dir():
            os.chmod(path, 0o755)
        else:
            name = str(path.relative_to(stage))
            os.chmod(path, 0o600 if name in private else 0o644)


def _is_grub_module(name: str) -> bool:
    parts = name.split("/")
    return parts[0] == GRUB_DIR and len(parts) > 2 and parts[-1] not in ("core.0", "core.efi")


def _top(names: Iterable[str]) -> list[str]:
    """The top-level names, the configurations' directories last."""
    tops = list(dict.fromkeys(n.split("/")[0] for n in names))
    late = {IPXE_SCRIPT, "pxelinux.cfg", SUMS}
    return [n for n in tops if n not in late] + [n for n in tops if n in late] + [SUMS]


def _old_names(directory: Path) -> list[str]:
    """The top-level names an earlier tree in ``directory`` wrote (its manifest's)."""
    try:
        names = json.loads((directory / MANIFEST).read_text()).get("names", [])
    except (OSError, ValueError, AttributeError):
        return []
    return [n for n in names if isinstance(n, str) and n and "/" not in n
            and n not in (".", "..")]


def _move_in(stage: Path, directory: Path, *, order: Sequence[str],
             old: Sequence[str]) -> None:
    """Each top-level name of ``stage`` into ``directory`` (a rename: the same
    filesystem), replacing what was there; what the older tree had (``old``) and this
    one has not is removed, anything else left alone."""
    trash = Path(tempfile.mkdtemp(prefix=".resurgo-netboot-old-", dir=directory))
    try:
        new = set()
        for name in dict.fromkeys(order):
            src = stage / name
            if not src.exists():
                continue
            new.add(name)
            dest = directory / name
            if dest.is_dir() and not dest.is_symlink():
                os.rename(dest, trash / name)
            os.replace(src, dest)
        for name in old:
            path = directory / name
            if name in new or not os.path.lexists(path):
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
    finally:
        shutil.rmtree(trash, ignore_errors=True)

