"""build_rescue_image: the bootable rescue ISO of this machine (or of a system tree).

How it is made:

1. dracut collects the programs (contents.PROGRAMS that the machine has, and the Python
   interpreter's extension modules), their shared libraries and the kernel modules
   (common drivers, the machine's own controllers, filesystems, md, dm, crypto) with
   their dependencies, from the system at ``sysroot`` (dracut --sysroot) and the kernel
   at ``kernel_root``. Only dracut's "bash" module: no dracut init, no udev, no hooks.
2. resurgo writes a second cpio archive (cpio.py): /init, the Python standard library,
   resurgo, tomli_w and blake3 (whose extension module's libraries dracut brought in
   step 1), firmware of the devices present, the set's description, and the small
   configuration files (layout.py).
3. Both archives, one after the other, are compressed once: the initramfs, which is the
   whole rescue system (no root filesystem: it boots wherever the kernel boots).
4. grub-mkrescue puts the kernel, the initramfs and a boot menu into a hybrid ISO
   (BIOS and UEFI, CD and USB stick); with ``netboot``, the same kernel, initramfs and
   boot entries go into a network boot tree (netboot.py), with or without the ISO.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from types import ModuleType
from typing import Any

from resurgo import __version__, run, signing
from resurgo.errors import BadInput, OperationFailed, PreconditionFailed, ToolMissing
from resurgo.fileformat import document
from resurgo.model import Description
from resurgo.packages import hint_for
from resurgo.probe import hardware, rootfs
from resurgo.rescue import (
    contents,
    cpio,
    elf,
    iso,
    kernel,
    keys,
    layout,
    netboot,
    python,
    secureboot,
)
from resurgo.rescue.access import SECRETS, ImageAccess
from resurgo.rescue.cmdline import After
from resurgo.units import human

log = logging.getLogger("resurgo.rescue")

DRACUT_BASEDIR = Path("/usr/lib/dracut")
CA_BUNDLES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt")
GRUB_DATA = ("/usr/lib/grub/i386-pc", "/usr/lib/grub/x86_64-efi")
# Prebuilt whole-GRUB EFI images (the input of the distribution's signing), not needed
# by grub-install: 16 MB.
GRUB_SKIP = frozenset({"monolithic"})
#: zstd level of the initramfs: 9 is within 20% of 19's size at a tenth of its time.
DEFAULT_ZSTD_LEVEL = 9


class Compression(StrEnum):
    ZSTD = "zstd"
    XZ = "xz"
    GZIP = "gzip"


@dataclass(frozen=True)
class RescueOptions:
    """What to build. Paths are on the build machine."""

    #: The description of the recovery set the image belongs to (copied in, with its
    #: digest; the unattended recovery prefers the set that holds this very file).
    description: Path | None = None
    #: Where that set lives (a medium URL), tried first by the unattended recovery.
    from_url: str | None = None
    #: The default boot entry recovers unattended (resurgo.recover=auto), then ``after``.
    unattended: bool = False
    after: After = After.POWEROFF
    #: Appended to every boot entry's kernel command line (resurgo.args=..., ip=...).
    kernel_args: tuple[str, ...] = ()
    #: Seconds the boot menu waits (-1: for ever).
    menu_timeout: int = 5
    #: Programs, libraries and Python from this system tree.
    sysroot: Path = Path("/")
    #: Kernel, modules and firmware from this tree (default: sysroot).
    kernel_root: Path | None = None
    kernel_version: str | None = None
    extra_modules: tuple[str, ...] = ()
    extra_programs: tuple[str, ...] = ()
    compression: Compression | None = None  # default: the best the kernel unpacks
    compression_level: int | None = None
    #: The devices whose drivers (and firmware) count as the machine's own.
    sysfs: Path = Path("/sys")
    #: An allowed-signers file's text: the image then refuses sets not signed by them.
    trusted_signers: bytes | None = None
    #: The set the image belongs to (save builds it into the set): its id, and the pin
    #: of its files (media.setindex.content_pin), which the unattended recovery prefers.
    set_id: str | None = None
    set_pin: str | None = None
    #: known_hosts lines of the SFTP server the set lives on: the rescue checks it strictly.
    known_hosts: bytes | None = None
    #: How the rescue reaches a network medium: S3 endpoint, region, CA bundle and, only
    #: with --embed-credentials, the credentials (rescue.access).
    access: ImageAccess | None = None
    #: Whether the UEFI path goes through the distribution's signed shim and GRUB.
    secure_boot: secureboot.SecureBootMode = secureboot.SecureBootMode.AUTO
    #: Also (or only) write the network boot tree there (netboot.py).
    netboot: Path | None = None


# known_hosts lines for one server: far below this.
MAX_KNOWN_HOSTS = 1 << 20


def read_known_hosts(path: Path) -> bytes:
    """The known_hosts lines of a file given for RescueOptions.known_hosts, bounded."""
    if not path.is_file():
        raise BadInput(f"--ssh-known-hosts {path}: not a file")
    try:
        with path.open("rb") as f:
            data = f.read(MAX_KNOWN_HOSTS + 1)
    except OSError as e:
        raise BadInput(f"--ssh-known-hosts {path}: {e.strerror}") from None
    if len(data) > MAX_KNOWN_HOSTS:
        raise BadInput(f"--ssh-known-hosts {path}: larger than 1 MiB")
    if not data.strip():
        raise BadInput(f"--ssh-known-hosts {path}: no host key in it")
    return data


@dataclass(frozen=True)
class RescueReport:
    """What was built, how big, how long, and what it holds."""

    path: Path | None  # the ISO; None when only the network boot tree was written
    size: int  # of the ISO (0 without one)
    kernel_version: str
    kernel_size: int
    initramfs_size: int
    initramfs_uncompressed: int
    compression: str
    seconds: float
    timings: dict[str, float]
    build_id: str
    programs: tuple[str, ...]
    missing_programs: tuple[tuple[str, str], ...]  # (program, package)
    modules: tuple[str, ...]
    builtin_modules: tuple[str, ...]
    unknown_modules: tuple[str, ...]
    machine_modules: tuple[str, ...]
    firmware: tuple[str, ...]
    python: python.PythonReport
    description_sha256: str | None
    host: str | None
    from_url: str | None
    unattended: bool
    boot_entries: tuple[str, ...]
    default_entry: str
    # What the unattended entry does once done (the text names it; the JSON has the
    # entries' ids).
    after: After = After.POWEROFF
    warnings: tuple[str, ...] = ()
    #: Whether the image boots with Secure Boot on, and why not when it does not.
    secure_boot: bool = False
    secure_boot_reasons: tuple[str, ...] = ()
    secure_boot_chain: tuple[str, ...] = ()  # shim, GRUB (paths in their tree)
    netboot: netboot.NetbootReport | None = None

    def text(self) -> str:
        if self.path is not None:
            head = f"{self.path}: {human(self.size)}, built in {self.seconds:.0f} s"
        else:
            head = f"rescue system built in {self.seconds:.0f} s"
        lines = [
            head,
            f"  kernel {self.kernel_version} ({human(self.kernel_size)}), initramfs "
            f"{human(self.initramfs_size)} ({self.compression}, "
            f"{human(self.initramfs_uncompressed)} unpacked)",
            f"  {len(self.programs)} programs, {len(self.modules)} kernel modules, "
            f"{len(self.firmware)} firmware files, Python {self.python.version}",
        ]
        if self.description_sha256:
            digest = self.description_sha256[:16]
            lines.append(f"  description of host {self.host or '?'} (sha256 {digest}...)")
        default = f"recover unattended, then {self.after}" if self.unattended else "a shell"
        lines.append(f"  boot menu: {', '.join(self.boot_entries)}; default: {default}")
        if self.path is None:
            pass
        elif self.secure_boot:
            lines.append(f"  Secure Boot: yes (shim {self.secure_boot_chain[0]} -> signed GRUB "
                         f"{self.secure_boot_chain[1]} -> signed kernel)")
        else:
            lines.append("  Secure Boot: NO, the image will not boot with Secure Boot on: "
                         + "; ".join(self.secure_boot_reasons))
        if self.netboot is not None:
            nb = self.netboot
            lines.append(f"  network boot tree {nb.directory}: {human(nb.size)}, "
                         f"{', '.join(nb.loaders)}")
            lines += [f"    {how}: {name}" for how, name in nb.boot_files.items()]
            lines.append("    UEFI network boot goes through an unsigned GRUB: with Secure "
                         "Boot on, use the ISO")
        if self.missing_programs:
            missing = ", ".join(f"{p} ({pkg})" for p, pkg in self.missing_programs)
            lines.append(f"  not on this machine, so not in the image: {missing}")
        if self.unknown_modules:
            lines.append(f"  modules the kernel does not have: {', '.join(self.unknown_modules)}")
        lines += [f"  warning: {w}" for w in self.warnings]
        return "".join(line + "\n" for line in lines)

    def data(self) -> dict[str, Any]:
        return {
            "path": str(self.path) if self.path is not None else None,
            "size": self.size,
            "seconds": self.seconds,
            "timings": self.timings,
            "build_id": self.build_id,
            "kernel": {
                "version": self.kernel_version,
                "size": self.kernel_size,
            },
            "initramfs": {
                "size": self.initramfs_size,
                "uncompressed": self.initramfs_uncompressed,
                "compression": self.compression,
            },
            "programs": list(self.programs),
            "missing_programs": [{"program": p, "package": k} for p, k in self.missing_programs],
            "modules": {
                "included": list(self.modules),
                "builtin": list(self.builtin_modules),
                "not_in_kernel": list(self.unknown_modules),
                "machine": list(self.machine_modules),
            },
            "firmware": list(self.firmware),
            "python": {
                "version": self.python.version,
                "binary": self.python.binary,
                "stdlib_files": self.python.stdlib_files,
                "extension_modules": self.python.extension_modules,
                "compiled": self.python.compiled,
                "package_files": self.python.package_files,
                "packages": [
                    {
                        "name": p.name,
                        "version": p.version,
                        "files": p.files,
                        "extension_modules": list(p.extension_modules),
                    }
                    for p in self.python.packages
                ],
                "libraries": list(self.python.libraries),
            },
            "description_sha256": self.description_sha256,
            "host": self.host,
            "from_url": self.from_url,
            "unattended": self.unattended,
            "boot_entries": list(self.boot_entries),
            "default_entry": self.default_entry,
            "warnings": list(self.warnings),
            "secure_boot": {
                "capable": self.secure_boot,
                "reasons": list(self.secure_boot_reasons),
                "shim": self.secure_boot_chain[0] if self.secure_boot_chain else None,
                "grub": self.secure_boot_chain[1] if self.secure_boot_chain else None,
            },
            "netboot": self.netboot.data() if self.netboot is not None else None,
        }


# -------------------------------------------------------------------------------------
# pure choices


def choose_compression(
    config: dict[str, str] | Any, available: set[str], wanted: Compression | None = None
) -> Compression:
    """The compression of the initramfs: what the kernel unpacks (CONFIG_RD_*; an unknown
    config is taken to have them all) and, for zstd, what this machine can write."""

    def kernel_has(c: Compression) -> bool:
        return not config or config.get(f"CONFIG_RD_{c.name}") == "y"

    if wanted is not None:
        if not kernel_has(wanted):
            raise PreconditionFailed(f"the kernel cannot unpack a {wanted} initramfs")
        if wanted is Compression.ZSTD and "zstd" not in available:
            raise ToolMissing("zstd", "zstd")
        return wanted
    if kernel_has(Compression.ZSTD) and "zstd" in available:
        return Compression.ZSTD
    if kernel_has(Compression.XZ):
        return Compression.XZ
    if kernel_has(Compression.GZIP):
        return Compression.GZIP
    raise PreconditionFailed("the kernel unpacks neither a zstd, an xz nor a gzip initramfs")


def volume_date(now: datetime) -> str:
    """xorriso's 16-digit volume date (YYYYMMDDhhmmsscc), the ISO's blkid UUID."""
    return now.strftime("%Y%m%d%H%M%S") + f"{now.microsecond // 10000:02d}"


# -------------------------------------------------------------------------------------
# finding things in the system tree


def find_program(root: Path, name: str) -> str | None:
    """The path (inside root) of a program on the usual PATH, or None."""
    candidates = [name] if name.startswith("/") else [f"{d}/{name}" for d in contents.PATH_DIRS]
    for inside in candidates:
        real = rootfs.resolve(root, inside)
        if real is None:
            continue
        host = rootfs.host_path(root, real)
        try:
            st = host.stat()
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and st.st_mode & 0o111:
            return inside
    return None


def image_path(root: Path, inside: str) -> str:
    """Where ``inside`` lands in the image: through the tree's directory symlinks
    (/lib/firmware is /usr/lib/firmware on a merged-/usr system). The second archive
    must never hold a directory where the first holds a symlink: the kernel would
    replace the symlink by it."""
    parent, _, name = inside.rstrip("/").rpartition("/")
    real_parent = rootfs.resolve(root, parent or "/", missing_ok=True) or parent
    return f"{real_parent.rstrip('/')}/{name}"


@dataclass
class Collected:
    programs: list[str] = field(default_factory=list)  # paths inside the tree
    names: list[str] = field(default_factory=list)
    missing: list[tuple[str, str]] = field(default_factory=list)


def collect_programs(root: Path, extra: Sequence[str]) -> Collected:
    out = Collected()
    required_missing: list[contents.Program] = []
    asked = (contents.Program(n, contents.Need.REQUIRED) for n in extra)
    wanted = [*contents.PROGRAMS, *asked]
    for prog in wanted:
        path = find_program(root, prog.name)
        if path is None:
            if prog.need is contents.Need.REQUIRED:
                required_missing.append(prog)
            else:
                out.missing.append((prog.name, prog.package))
            continue
        if path not in out.programs:
            out.programs.append(path)
            out.names.append(prog.name)
    if required_missing:
        where = "this machine" if rootfs.is_running_root(root) else str(root)
        names = ", ".join(p.name for p in required_missing)
        how = hint_for(*(p.name for p in required_missing))
        raise PreconditionFailed(
            f"{where} lacks {names}, which the rescue system cannot do without",
            f"install it: {how}" if how else None,
        )
    return out


def carried_packages() -> list[ModuleType]:
    """resurgo and the packages it imports, as installed with the resurgo doing the build."""
    try:
        import blake3
        import tomli_w
    except ImportError as e:
        raise PreconditionFailed(
            f"{e.name} is not installed with this resurgo, and the rescue needs it",
            f"install it: pip install {(e.name or '').replace('_', '-')}",
        ) from None

    import resurgo

    carried: list[ModuleType] = [resurgo, tomli_w, blake3]
    try:
        import zstandard
    except ImportError:  # without it the pool's members are decoded by the zstd program
        pass
    else:
        carried.append(zstandard)
    return carried


def load_description(path: Path) -> tuple[bytes, str, Description]:
    """The description file, checked: valid, and matching its digest when it has one."""
    raw = document.load_bytes(path)
    digest = document.read_digest(path)
    report = document.check_bytes(raw, str(path), expected_digest=digest)
    if report.description is None:
        raise BadInput(
            f"{path} is not a valid recovery description:\n  " + "\n  ".join(report.messages()),
            f"see: resurgo validate {path}",
        )
    return raw, document.sha256_hex(raw), report.description


# -------------------------------------------------------------------------------------
# the steps


def require_build_tools(*, iso_image: bool = True) -> None:
    if run.which("dracut") is None or not (DRACUT_BASEDIR / "dracut-install").exists():
        raise ToolMissing("dracut", "dracut-core")
    if iso_image:
        iso.require_tools()


@contextmanager
def _timed(timings: dict[str, float], name: str) -> Iterator[None]:
    started = time.monotonic()
    try:
        yield
    finally:
        timings[name] = round(time.monotonic() - started, 2)


def run_dracut(
    out: Path,
    *,
    work: Path,
    sysroot: Path,
    kern: kernel.Kernel,
    modules: Sequence[str],
    programs: Sequence[str],
) -> None:
    """dracut's uncompressed archive of the programs, their libraries and the modules."""
    empty = work / "empty"
    empty.mkdir()
    dracut_tmp = work / "dracut-tmp"
    dracut_tmp.mkdir()
    argv = [
        "dracut",
        "--force",
        "--no-hostonly",
        "--no-hostonly-cmdline",
        "--no-early-microcode",
        "--no-compress",
        "--conf",
        "/dev/null",
        "--confdir",
        str(empty),
        "--tmpdir",
        str(dracut_tmp),
        "--kver",
        kern.version,
        "--kmoddir",
        str(kern.host_modules_dir),
        # firmware comes in resurgo's own archive, for the devices present only
        "--fwdir",
        str(empty),
        "--modules",
        "bash",
        "--drivers",
        " ".join(modules),
        "--install",
        " ".join(programs),
    ]
    env = {}
    if not rootfs.is_running_root(sysroot):
        argv += ["--sysroot", str(sysroot)]
        # Otherwise dracut looks for its own scripts inside the tree.
        env["dracutbasedir"] = str(DRACUT_BASEDIR)
    argv.append(str(out))
    run.run(argv, env=env, timeout=1800)
    if not out.is_file():
        raise OperationFailed(f"dracut wrote no {out}")


def _add_file(w: cpio.Writer, path: str, data: bytes, perm: int = 0o644) -> None:
    w.ensure_dirs(path)
    w.add(cpio.Entry.file(path, data, perm))


def add_files(w: cpio.Writer, files: Sequence[tuple[str, bytes, int]]) -> None:
    """Files (path in the image, content, mode); a private one (no access for others)
    goes in a directory of its own that is private too."""
    for path, data, perm in files:
        parent = path.lstrip("/").rpartition("/")[0]
        if perm & 0o077 == 0 and parent not in w.names:
            w.ensure_dirs(parent)
            w.add(cpio.Entry.directory(parent, 0o700))
        _add_file(w, path.lstrip("/"), data, perm)


def _add_host_tree(w: cpio.Writer, root: Path, inside: str, skip: frozenset[str]) -> int:
    """A directory of the tree (its files and links, as they are) at the same place."""
    host = rootfs.host_path(root, rootfs.resolve(root, inside) or inside)
    if not host.is_dir():
        return 0
    return w.add_tree(host, image_path(root, inside), skip=skip)


def write_resurgo_archive(
    out: Path,
    *,
    sysroot: Path,
    py: python.PythonInstall,
    config: dict[str, Any],
    description: bytes | None,
    digest: str | None,
    firmware: Sequence[tuple[str, Path]],
    grub: bool,
    packages: Sequence[ModuleType],
    package_libraries: Sequence[str] = (),
    extra_files: Sequence[tuple[str, bytes, int]] = (),
) -> python.PythonReport:
    interpreter = py.binary
    with out.open("wb") as f:
        w = cpio.Writer(f)
        _add_file(w, "init", layout.init_script(interpreter).encode(), 0o755)
        bindir = image_path(sysroot, "/usr/bin/x").rpartition("/")[0]
        sbindir = image_path(sysroot, "/usr/sbin/x").rpartition("/")[0]
        _add_file(w, f"{bindir}/resurgo", layout.wrapper(interpreter, "resurgo").encode(), 0o755)
        for action in ("poweroff", "reboot"):
            script = layout.wrapper(interpreter, f"resurgo.rescue.agent {action}")
            _add_file(w, f"{sbindir}/{action}", script.encode(), 0o755)
        if Path(interpreter).name != "python3":
            w.ensure_dirs(f"{bindir}/python3")
            w.add(cpio.Entry.symlink(f"{bindir}/python3", Path(interpreter).name))
        etc = {
            "etc/passwd": layout.PASSWD,
            "etc/group": layout.GROUP,
            "etc/nsswitch.conf": layout.NSSWITCH,
            "etc/hosts": layout.HOSTS,
            "etc/hostname": layout.HOSTNAME + "\n",
            "etc/os-release": layout.os_release(__version__),
            "etc/motd": layout.MOTD,
            "etc/profile": layout.profile(),
            "etc/lvm/lvm.conf": layout.LVM_CONF,
            str(layout.CONFIG_PATH).lstrip("/"): json.dumps(config, indent=2) + "\n",
        }
        signers = config.get("trusted_signers")
        if isinstance(signers, str):
            # Where every resurgo command in the rescue looks for trusted signers.
            etc[str(signing.DEFAULT_TRUST).lstrip("/")] = signers
        known_hosts = config.get("known_hosts")
        if isinstance(known_hosts, str):
            etc[str(layout.KNOWN_HOSTS_PATH).lstrip("/")] = known_hosts
        for path, text in etc.items():
            _add_file(w, path, text.encode())
        add_files(w, extra_files)
        w.add(cpio.Entry.symlink("etc/mtab", "/proc/self/mounts"))
        for bundle in CA_BUNDLES:
            real = rootfs.resolve(sysroot, bundle)
            if real and rootfs.host_path(sysroot, real).is_file():
                _add_file(
                    w, image_path(sysroot, bundle), rootfs.host_path(sysroot, real).read_bytes()
                )
        if description is not None and digest is not None:
            desc_path = str(layout.DESCRIPTION_PATH).lstrip("/")
            _add_file(w, desc_path, description)
            _add_file(
                w, desc_path + document.DIGEST_SUFFIX, f"{digest}  description.toml\n".encode()
            )
        for inside, host in firmware:
            _add_file(w, image_path(sysroot, inside), host.read_bytes())
        if grub:
            for d in GRUB_DATA:
                _add_host_tree(w, sysroot, d, GRUB_SKIP)
        report = python.add_to_archive(w, py, packages, libraries=package_libraries)
        w.close()
    return report


def compress(source: Path, dest: Path, how: Compression, level: int | None) -> None:
    if how is Compression.ZSTD:
        run.run(
            [
                "zstd",
                "-q",
                "-f",
                "-T0",
                f"-{level or DEFAULT_ZSTD_LEVEL}",
                "-o",
                str(dest),
                str(source),
            ],
            timeout=1800,
        )
    elif how is Compression.XZ and run.which("xz"):
        # The kernel's xz decoder knows CRC32 checks only.
        with dest.open("wb") as out:
            proc = run.spawn(
                [
                    "xz",
                    "-c",
                    "-T0",
                    f"-{level or 6}",
                    "--check=crc32",
                    "--lzma2=dict=1MiB",
                    str(source),
                ],
                stdout=out,
            )
            if proc.wait() != 0:
                raise OperationFailed(f"xz could not compress {source}")
    elif how is Compression.XZ:
        import lzma

        filters = [{"id": lzma.FILTER_LZMA2, "preset": level or 6, "dict_size": 1 << 20}]
        with (
            source.open("rb") as src,
            lzma.open(
                dest, "wb", format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32, filters=filters
            ) as out_xz,
        ):
            shutil.copyfileobj(src, out_xz, 1 << 20)
    else:
        import gzip

        with source.open("rb") as src, gzip.open(dest, "wb", compresslevel=level or 9) as gz:
            shutil.copyfileobj(src, gz, 1 << 20)


def secure_boot_esp(sb: secureboot.SecureBootPlan, tree: Path, work: Path,
                    build_id: str) -> Path | None:
    """The ESP image of the signed boot chain (None without one), and in ``tree`` the
    file by which its grub.cfg finds this very ISO."""
    if not sb.capable:
        return None
    marker = f"resurgo/{build_id}.id"
    (tree / marker).parent.mkdir(parents=True, exist_ok=True)
    (tree / marker).write_text(build_id + "\n")
    esp = work / "esp.img"
    secureboot.make_esp(sb, esp, config=secureboot.esp_config("/" + marker))
    return esp


# The phases of a build, as its progress tells them (a build takes minutes, dracut's most).
PHASES = {
    "collect": "collecting the kernel, its modules and the programs",
    "dracut": "dracut making the initramfs",
    "python": "adding resurgo and its Python",
    "compress": "compressing the initramfs",
    "iso": "writing the ISO image",
    "netboot": "writing the network boot tree",
}


def build_rescue_image(out: Path | None, options: RescueOptions,
                       progress: Callable[[str], None] | None = None) -> RescueReport:
    """Build the rescue ISO at ``out`` (replaced only once the new one is complete) and,
    with ``options.netboot``, the network boot tree (None for ``out``: the tree alone);
    ``progress`` is told each phase (PHASES' text) as it begins."""
    if out is None and options.netboot is None:
        raise BadInput("neither an ISO nor a network boot directory to write")
    started = time.monotonic()
    timings: dict[str, float] = {}

    @contextmanager
    def phase(name: str) -> Iterator[None]:
        if progress is not None:
            progress(PHASES[name])
        with _timed(timings, name):
            yield

    warnings: list[str] = []
    sysroot = options.sysroot
    kroot = options.kernel_root or sysroot
    for what, path in (("--sysroot", sysroot), ("--kernel-root", kroot)):
        if not path.is_dir():
            raise BadInput(f"{what} {path}: no such directory")
    require_build_tools(iso_image=out is not None)
    if options.netboot is not None:
        # Before dracut's minutes: a directory that is not the tree's, an argument that
        # would be a command of a boot loader's.
        netboot.check_directory(options.netboot)
        for arg in options.kernel_args:
            netboot.check_arg(arg)
        if out is not None:
            netboot.check_iso_place(out, options.netboot)

    with phase("collect"):
        desc_raw: bytes | None = None
        digest: str | None = None
        desc: Description | None = None
        if options.description is not None:
            desc_raw, digest, desc = load_description(options.description)
            # Copied into the image as it is (its digest is what a set is matched by): a
            # description of an unencrypted set carries its secret files in clear.
            clear = [cf.path for cf in desc.config_files if cf.secret and not cf.sealed]
            if clear:
                warnings.append(
                    f"the image carries {len(clear)} secret configuration file(s) in clear "
                    f"({', '.join(clear[:3])}{' ...' if len(clear) > 3 else ''}): keep it "
                    "private, or give the description of a set saved with --encrypt-to")
        kern = kernel.find_kernel(kroot, options.kernel_version)
        sb = secureboot.plan(options.secure_boot, list(dict.fromkeys([kroot, sysroot])),
                             kern.host_image)
        secureboot.check(options.secure_boot, sb)
        index = hardware.KernelModules.load(kroot, kern.version)
        mplan = kernel.plan_modules(
            kern,
            index,
            description=desc,
            extra=options.extra_modules,
            sysfs=options.sysfs,
            warnings=warnings,
        )
        firmware = kernel.firmware_files(kroot, kernel.firmware_names(kern, mplan.present))
        progs = collect_programs(sysroot, options.extra_programs)
        py = python.find_python(sysroot)
        packages = carried_packages()
        # Before dracut's minutes: a package built for another Python stops the build.
        pkg_libraries = python.package_libraries(py, python.package_extensions(py, packages))
        dynload = python.extension_modules(py)
        # dracut resolves the libraries of executables only; extension modules are not.
        libraries, missing_libs = elf.library_closure(sysroot, dynload)
        libraries = list(dict.fromkeys([*libraries, *pkg_libraries]))
        warnings += [
            f"{name}: a library of Python's extension modules, not in {sysroot}"
            for name in missing_libs
        ]
        how = choose_compression(
            dict(index.config),
            {"zstd"} if run.which("zstd") else set(),
            options.compression,
        )

    now = datetime.now(UTC)
    build_id = f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"
    host = desc.system.hostname if desc is not None else None
    entries = iso.boot_entries(
        unattended=options.unattended, after=options.after, extra_args=options.kernel_args
    )
    config = {
        "format": "resurgo-rescue",
        "version": 1,
        "build_id": build_id,
        "built": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "resurgo": __version__,
        "kernel": kern.version,
        "from_url": options.from_url,
        "description_sha256": digest,
        "host": host,
        "unattended": options.unattended,
        "set_id": options.set_id,
        "set_pin": options.set_pin,
        "trusted_signers": (options.trusted_signers.decode("utf-8", "replace")
                            if options.trusted_signers is not None else None),
        "known_hosts": (options.known_hosts.decode("utf-8", "replace")
                        if options.known_hosts is not None else None),
        "medium": options.access.config() if options.access is not None else None,
        # The files the agent takes from a key medium by name (besides the LUKS key
        # files): a rehearsal hands an encrypted set's identity only to an image that
        # looks for it.
        "key_medium": [keys.AGE_IDENTITY, *SECRETS],
    }
    if options.access is not None and options.access.embedded:
        warnings.append(
            f"the image carries credentials ({', '.join(options.access.embedded)}, "
            "--embed-credentials): whoever has a copy of it can read and delete the sets "
            "with them; keep it as private as the credentials")

    if out is not None:
        out = out.resolve()
        out.parent.mkdir(parents=True, exist_ok=True)
    if options.netboot is not None and options.access is not None and options.access.embedded:
        warnings.append(
            "the network boot tree's initrd.img carries credentials too: it is 0600, and "
            "whoever can fetch it from your TFTP or HTTP server has them; serve it to the "
            "machines to recover alone")
    with tempfile.TemporaryDirectory(prefix="resurgo-rescue-") as tmp:
        work = Path(tmp)
        base = work / "dracut.cpio"
        with phase("dracut"):
            run_dracut(
                base,
                work=work,
                sysroot=sysroot,
                kern=kern,
                modules=mplan.choice.modules,
                programs=[py.binary, *progs.programs, *dynload, *libraries],
            )
        ours = work / "resurgo.cpio"
        with phase("python"):
            py_report = write_resurgo_archive(
                ours,
                sysroot=sysroot,
                py=py,
                config=config,
                description=desc_raw,
                digest=digest,
                firmware=firmware,
                grub=find_program(sysroot, "grub-install") is not None,
                packages=packages,
                package_libraries=pkg_libraries,
                extra_files=options.access.files() if options.access is not None else (),
            )
        tree = work / "iso"
        (tree / "boot/grub").mkdir(parents=True)
        (tree / "resurgo").mkdir()
        initrd = tree / "boot/initrd.img"
        whole = work / "initramfs.cpio"
        with phase("compress"):
            with whole.open("wb") as dst:
                for part in (base, ours):
                    with part.open("rb") as src:
                        shutil.copyfileobj(src, dst, 1 << 20)
            uncompressed = whole.stat().st_size
            base.unlink()
            ours.unlink()
            compress(whole, initrd, how, options.compression_level)
            whole.unlink()
        shutil.copyfile(kern.host_image, tree / "boot/vmlinuz")
        label = f"resurgo {__version__} rescue image {build_id} (kernel {kern.version})"
        (tree / "boot/grub/grub.cfg").write_text(
            iso.grub_cfg(entries, timeout=options.menu_timeout, label=label)
        )
        (tree / "resurgo/rescue.json").write_text(json.dumps(config, indent=2) + "\n")
        if out is not None:
            esp = secure_boot_esp(sb, tree, work, build_id)
            if desc_raw is not None and digest is not None:
                (tree / "resurgo/description.toml").write_bytes(desc_raw)
                document.write_digest(tree / "resurgo/description.toml", digest)
            partial = out.with_name(out.name + ".partial")
            with phase("iso"):
                try:
                    iso.make_iso(tree, partial, volume_date=volume_date(now), esp=esp)
                    os.replace(partial, out)
                finally:
                    partial.unlink(missing_ok=True)
        nb_report: netboot.NetbootReport | None = None
        if options.netboot is not None:
            # After the ISO: the tree holds it too, for UEFI HTTP boot.
            with phase("netboot"):
                nb_report = netboot.write_tree(
                    options.netboot, kernel=kern.host_image, initrd=initrd, entries=entries,
                    timeout=options.menu_timeout, label=label,
                    manifest={"build_id": build_id, "built": config["built"],
                              "resurgo": __version__, "kernel": kern.version, "host": host,
                              "unattended": options.unattended,
                              "default_entry": entries[0].id},
                    loaders=netboot.Loaders.find(),
                    private_initrd=bool(options.access and options.access.embedded),
                    iso=out)
            warnings += nb_report.warnings
        kernel_size = (tree / "boot/vmlinuz").stat().st_size
        initrd_size = initrd.stat().st_size

    seconds = round(time.monotonic() - started, 1)
    size = out.stat().st_size if out is not None else 0
    log.info("rescue image %s: %d bytes in %.1f s", out or options.netboot, size, seconds)
    return RescueReport(
        path=out,
        size=size,
        kernel_version=kern.version,
        kernel_size=kernel_size,
        initramfs_size=initrd_size,
        initramfs_uncompressed=uncompressed,
        compression=str(how),
        seconds=seconds,
        timings=timings,
        build_id=build_id,
        programs=tuple(progs.names),
        missing_programs=tuple(progs.missing),
        modules=mplan.choice.modules,
        builtin_modules=mplan.choice.builtin,
        unknown_modules=mplan.choice.unknown,
        machine_modules=mplan.present,
        firmware=tuple(inside for inside, _ in firmware),
        python=py_report,
        description_sha256=digest,
        host=host,
        from_url=options.from_url,
        unattended=options.unattended,
        boot_entries=tuple(e.id for e in entries),
        default_entry=entries[0].id,
        after=options.after,
        warnings=tuple(warnings),
        secure_boot=sb.capable,
        secure_boot_reasons=sb.reasons,
        secure_boot_chain=(sb.shim, sb.grub) if sb.shim and sb.grub else (),
        netboot=nb_report,
    )
