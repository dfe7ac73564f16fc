"""resurgo doctor: can this machine run each job (save, the rescue build, recover)?

Checked without changing anything: the programs each job runs (with the version where a
minimum matters), the kernel's filesystems and device-mapper/md support, the medium
reachable and the keys readable when given, and the compiled restore path. Every row
says what is there or what is missing, with the Debian and the Fedora package.
"""

from __future__ import annotations

import os
import platform
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resurgo import run
from resurgo.errors import ExitCode, ResurgoError
from resurgo.media import MediumOptions, open_medium, share
from resurgo.media.url import CifsSpec, DirectorySpec, MediumSpec, NfsSpec, SftpSpec, parse_url
from resurgo.needs import (
    RECOVER_LAYOUT_PROGRAMS,
    RECOVER_PROGRAMS,
    Job,
    Missing,
    rescue_lacks,
    rescue_missing,
    save_programs,
)
from resurgo.packages import COMPILER, TOOLS, Package, install_hint

if TYPE_CHECKING:
    from resurgo.engine.extensions import Loaded

JOBS: tuple[Job, ...] = (Job.SAVE, Job.RESCUE, Job.RECOVER)

# OpenSSH versions: sftp's "limits@openssh.com" and the ssh options an SFTP medium uses
# (README: 8.5 or newer); `ssh-keygen -Y find-principals` (signed sets) since 8.2.
SSH_MIN = (8, 5)
SSH_KEYGEN_MIN = (8, 2)


class State(StrEnum):
    OK = "ok"
    MISSING = "missing"  # the job cannot run
    LIMITED = "limited"  # the job runs, without something (named in the detail)


@dataclass(frozen=True)
class Row:
    job: Job
    kind: str  # program, kernel, medium, key, python
    name: str
    state: State
    detail: str = ""
    package: Package | None = None

    def data(self) -> dict[str, Any]:
        return {
            "job": str(self.job),
            "kind": self.kind,
            "name": self.name,
            "state": str(self.state),
            "detail": self.detail,
            "debian": self.package.debian if self.package else None,
            "fedora": self.package.fedora if self.package else None,
        }


@dataclass(frozen=True)
class DoctorOptions:
    jobs: tuple[Job, ...] = JOBS
    medium: str | None = None  # where save writes
    recover_medium: str | None = None  # where recover reads
    medium_options: MediumOptions | None = None
    sign_key: Path | None = None
    trust: Path | None = None
    identities: tuple[Path, ...] = ()
    encrypt: bool = False
    root: Path = Path("/")


@dataclass(frozen=True)
class DoctorReport:
    jobs: tuple[Job, ...]
    rows: tuple[Row, ...]

    def ready(self, job: Job) -> bool:
        return all(r.state is not State.MISSING for r in self.rows if r.job is job)

    @property
    def exit_code(self) -> int:
        ok = all(self.ready(j) for j in self.jobs)
        return ExitCode.OK if ok else ExitCode.PRECONDITION

    def text(self) -> str:
        lines: list[str] = []
        for job in self.jobs:
            rows = [r for r in self.rows if r.job is job]
            verdict = "can run" if self.ready(job) else "CANNOT run"
            lines.append(f"{job}: {verdict}")
            width = max((len(r.name) for r in rows), default=0)
            for r in rows:
                mark = {State.OK: "ok", State.MISSING: "MISSING", State.LIMITED: "limited"}
                lines.append(f"  {mark[r.state]:<8} {r.name:<{width}}  {r.detail}".rstrip())
                how = install_hint([r.package]) if r.package and r.state is not State.OK \
                    else None
                if how:
                    lines.append(f"  {'':<8} {'':<{width}}  install: {how}")
            lines.append("")
        missing = [r for r in self.rows if r.state is State.MISSING and r.package]
        how = install_hint(r.package for r in missing if r.package)
        if how:
            lines.append(f"to install what is missing: {how}")
        return "\n".join(lines).rstrip("\n") + "\n"

    def data(self) -> dict[str, Any]:
        return {
            "jobs": {str(j): self.ready(j) for j in self.jobs},
            "ready": self.exit_code == ExitCode.OK,
            "checks": [r.data() for r in self.rows],
        }


# ---------------------------------------------------------------- programs


def _program_rows(job: Job, needed: Iterable[tuple[str, str]], *,
                  state: State = State.MISSING) -> list[Row]:
    out = []
    for name, why in dict.fromkeys(needed):
        path = run.which(name)
        if path is None:
            out.append(Row(job, "program", name, state, f"not found: {why}", TOOLS.get(name)))
        else:
            out.append(Row(job, "program", name, State.OK, f"{path} ({why})", TOOLS.get(name)))
    return out


def _version(text: str) -> tuple[int, int] | None:
    m = re.search(r"OpenSSH_(\d+)\.(\d+)", text)
    return (int(m.group(1)), int(m.group(2))) if m else None


def openssh_version() -> tuple[int, int] | None:
    """OpenSSH's version (ssh -V writes it on stderr), None when unknown."""
    if run.which("ssh") is None:
        return None
    try:
        res = run.run(["ssh", "-V"], check=False, timeout=10)
    except (OSError, ResurgoError):
        return None
    return _version(res.stderr + res.stdout)


def _min_version(rows: list[Row], name: str, least: tuple[int, int], why: str,
                 version: Callable[[], tuple[int, int] | None]) -> list[Row]:
    """The program's row made MISSING when its version is below ``least``."""
    out = []
    for r in rows:
        if r.name == name and r.state is State.OK:
            have = version()
            shown = f"{least[0]}.{least[1]}"
            if have is None:
                r = replace(r, detail=f"{r.detail}; version unknown ({why} needs {shown})")
            elif have < least:
                r = replace(r, state=State.MISSING,
                            detail=f"OpenSSH {have[0]}.{have[1]}: {why} needs {shown} or newer")
            else:
                r = replace(r, detail=f"{r.detail}, OpenSSH {have[0]}.{have[1]}")
        out.append(r)
    return out


# ---------------------------------------------------------------- what this machine has


def _mounted_types(mounts: Path = Path("/proc/self/mounts")) -> set[str]:
    try:
        return {line.split()[2] for line in mounts.read_text().splitlines()
                if len(line.split()) > 2}
    except OSError:
        return set()


def _dm_kinds(sys_block: Path = Path("/sys/block")) -> set[str]:
    """CRYPT and LVM when device-mapper devices of these kinds exist."""
    out = set()
    for uuid in sys_block.glob("dm-*/dm/uuid"):
        try:
            out.add(uuid.read_text().split("-", 1)[0])
        except OSError:
            continue
    return out


def _md_arrays(mdstat: Path = Path("/proc/mdstat")) -> bool:
    try:
        return any(line.startswith("md") for line in mdstat.read_text().splitlines())
    except OSError:
        return False


def describe_programs(root: Path) -> list[tuple[str, str]]:
    """The programs the describe runs for what this machine has: each filesystem's own
    tool, md, LUKS and LVM, the package database the catalog reads."""
    out = []
    types = _mounted_types()
    if types & {"ext2", "ext3", "ext4"}:
        out.append(("dumpe2fs", "describe the ext filesystems"))
    if "xfs" in types:
        out.append(("xfs_db", "describe the xfs filesystems"))
    if "btrfs" in types:
        out.append(("btrfs", "describe the btrfs filesystems"))
    if _md_arrays():
        out.append(("mdadm", "describe the md arrays"))
    kinds = _dm_kinds()
    if "CRYPT" in kinds:
        out.append(("cryptsetup", "describe the LUKS volumes"))
    if "LVM" in kinds:
        out.append(("lvm", "describe the LVM volumes"))
    if (root / "var/lib/dpkg/status").is_file():
        out.append(("dpkg-query", "the catalog of package files"))
    if (root / "var/lib/rpm").is_dir() or (root / "usr/lib/sysimage/rpm").is_dir():
        out.append(("rpm", "the catalog of package files"))
    return out


# ---------------------------------------------------------------- the kernel


def _kernel_modules(listing: str) -> set[str]:
    """The modules of the running kernel that modules.dep (loadable) or modules.builtin
    (built in) lists, by name with - as _."""
    path = Path("/lib/modules") / platform.release() / listing
    try:
        text = path.read_text()
    except OSError:
        return set()
    return {Path(line.split(":", 1)[0]).name.split(".ko", 1)[0].replace("-", "_")
            for line in text.splitlines() if line.strip()}


# Drivers that register a block device type when present (built in or loaded).
_DEVICES = {"dm_mod": "device-mapper", "md_mod": "md"}


def _devices(path: Path = Path("/proc/devices")) -> set[str]:
    try:
        return {line.split()[-1] for line in path.read_text().splitlines()
                if len(line.split()) == 2}
    except OSError:
        return set()


def _filesystems(path: Path = Path("/proc/filesystems")) -> set[str]:
    try:
        return {line.split()[-1] for line in path.read_text().splitlines() if line.split()}
    except OSError:
        return set()


def kernel_rows(job: Job, wanted: Sequence[tuple[str, str, str, bool]]) -> list[Row]:
    """(name, kind: filesystem|module, why, required) against the running kernel: built
    in or loaded, else loadable as a module."""
    filesystems = _filesystems()
    loaded = {p.name for p in Path("/sys/module").glob("*")}
    devices = _devices()
    builtin = _kernel_modules("modules.builtin")
    loadable = _kernel_modules("modules.dep")
    out = []
    for name, kind, why, required in wanted:
        if kind == "filesystem" and name in filesystems:
            out.append(Row(job, "kernel", name, State.OK, f"in /proc/filesystems ({why})"))
        elif kind != "filesystem" and (name in loaded or name in builtin
                                       or _DEVICES.get(name, "-") in devices):
            out.append(Row(job, "kernel", name, State.OK, f"in the kernel ({why})"))
        elif name in loadable:
            out.append(Row(job, "kernel", name, State.OK, f"a loadable module ({why})"))
        else:
            out.append(Row(job, "kernel", name, State.MISSING if required else State.LIMITED,
                           f"not in the running kernel {platform.release()}: {why}"))
    return out


RECOVER_KERNEL: tuple[tuple[str, str, str, bool], ...] = (
    ("ext4", "filesystem", "restore ext2/3/4 filesystems", True),
    ("xfs", "filesystem", "restore xfs filesystems", False),
    ("vfat", "filesystem", "mount an EFI system partition", False),
    ("btrfs", "filesystem", "restore btrfs filesystems", False),
    ("dm_mod", "module", "LUKS and LVM (device-mapper)", False),
    ("dm_crypt", "module", "LUKS", False),
    ("md_mod", "module", "md RAID", False),
    ("loop", "module", "loop devices: the demo", False),
)


# ---------------------------------------------------------------- medium and keys


def medium_row(job: Job, url: str, options: MediumOptions | None) -> Row:
    writing = job is Job.SAVE
    spec: MediumSpec | None = None
    try:
        spec = parse_url(url)
        if isinstance(spec, DirectorySpec) and not os.path.isdir(spec.path):
            parent = os.path.dirname(os.path.abspath(spec.path))
            if writing and os.path.isdir(parent) and os.access(parent, os.W_OK):
                return Row(job, "medium", url, State.OK, "a new directory: save makes it")
            return Row(job, "medium", url, State.MISSING, "no such directory")
        with open_medium(url, options) as medium:
            if writing and not medium.holds_archives:
                return Row(job, "medium", url, State.MISSING,
                           "holds descriptions only, not the archives of a set")
            sets = medium.list_sets()
        if isinstance(spec, DirectorySpec) and writing and not os.access(spec.path, os.W_OK):
            return Row(job, "medium", url, State.MISSING, "not writable")
        return Row(job, "medium", url, State.OK, f"reachable, {len(sets)} set(s)")
    except ResurgoError as e:
        if (writing and isinstance(spec, NfsSpec | CifsSpec) and share.missing_directory(e)
                and share.save_makes_it(spec, (options or MediumOptions()).share)):
            return Row(job, "medium", url, State.OK,
                       "a new directory on the share: save makes it")
        return Row(job, "medium", url, State.MISSING, e.message)


def _readable(path: Path) -> str | None:
    """Why path cannot be read as a key file; None when it can."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as e:
        return e.strerror or "cannot open it"
    try:
        if not os.path.isfile(f"/proc/self/fd/{fd}"):
            return "not a regular file"
        os.read(fd, 1)
    except OSError as e:
        return e.strerror or "cannot read it"
    finally:
        os.close(fd)
    return None


def key_rows(job: Job, keys: Iterable[tuple[str, Path]]) -> list[Row]:
    out = []
    for what, path in keys:
        why = _readable(path)
        out.append(Row(job, "key", f"{what} {path}", State.OK if why is None else State.MISSING,
                       "readable" if why is None else why))
    return out


# ---------------------------------------------------------------- the jobs


def _compiled_row(job: Job) -> Row:
    from resurgo.engine import writer

    if writer.compiled():
        return Row(job, "python", "compiled restore path", State.OK, "built")
    return _not_compiled(job, "compiled restore path", writer.LOADED, "the restore is slower")


def _compiled_save_row() -> Row:
    from resurgo.engine import plainsave

    if plainsave.compiled():
        return Row(Job.SAVE, "python", "compiled save path", State.OK, "built")
    return _not_compiled(Job.SAVE, "compiled save path", plainsave.LOADED,
                         "saving many small files is slower")


def _not_compiled(job: Job, name: str, loaded: Loaded, cost: str) -> Row:
    """Why a compiled path is not used (not built, stale, not importable) and the fix:
    the job runs all the same, by the Python path."""
    from resurgo.engine import extensions

    why = loaded.why or "not built (no C compiler when resurgo was installed)"
    fix = loaded.fix or extensions.REINSTALL
    compiler = loaded.compiler or not loaded.why
    return Row(job, "python", name, State.LIMITED, f"{why}: {cost}; {fix}",
               COMPILER if compiler else None)


def _root_row(job: Job) -> Row:
    if run.is_root():
        return Row(job, "user", "root", State.OK, "running as root")
    return Row(job, "user", "root", State.MISSING, f"{job} needs root: run resurgo as root")


def save_rows(opts: DoctorOptions) -> list[Row]:
    sftp = opts.medium is not None and isinstance(_spec(opts.medium), SftpSpec)
    needed = save_programs(encrypt=opts.encrypt, sign=opts.sign_key is not None, sftp=sftp)
    rows = [_root_row(Job.SAVE)]
    rows += _program_rows(Job.SAVE, [*needed, *describe_programs(opts.root)])
    if sftp:
        rows = _min_version(rows, "ssh", SSH_MIN, "an SFTP medium", openssh_version)
    if opts.sign_key is not None:
        rows = _min_version(rows, "ssh-keygen", SSH_KEYGEN_MIN, "signing sets",
                            openssh_version)
    if opts.medium is not None:
        rows.append(medium_row(Job.SAVE, opts.medium, opts.medium_options))
    keys = [("sign key", opts.sign_key)] if opts.sign_key else []
    keys += [("trusted signers", opts.trust)] if opts.trust else []
    rows += key_rows(Job.SAVE, keys)
    rows.append(_compiled_save_row())
    return rows


def rescue_rows(opts: DoctorOptions) -> list[Row]:
    from resurgo.rescue import iso

    rows = _program_rows(Job.RESCUE, [
        ("dracut", "build the rescue image"),
        (iso.mkrescue() or iso.MKRESCUE[0], "build the rescue image"),
        *((name, "grub-mkrescue runs it") for name in iso.TOOLS),
    ])
    missing = {m.what: m for m in rescue_missing(Path("/"), opts.root)}
    rows = [r if r.name not in missing else replace(
        r, state=State.MISSING, detail=f"not found: {missing[r.name].why}") for r in rows]
    shown = {r.name for r in rows}
    rows += [_missing_row(Job.RESCUE, m) for name, m in missing.items() if name not in shown]
    rows += [_missing_row(Job.RESCUE, m, State.LIMITED) for m in rescue_lacks(Path("/"))]
    return rows


def _missing_row(job: Job, m: Missing, state: State = State.MISSING) -> Row:
    kind = "program" if m.what in TOOLS else "other"
    detail = f"not found: {m.why}" + (f" ({m.detail})" if m.detail else "")
    return Row(job, kind, m.what, state, detail, m.package)


def recover_rows(opts: DoctorOptions) -> list[Row]:
    rows = [_root_row(Job.RECOVER)]
    rows += _program_rows(Job.RECOVER, RECOVER_PROGRAMS)
    rows += _program_rows(Job.RECOVER, [(n, f"needed for {why}")
                                        for n, why in RECOVER_LAYOUT_PROGRAMS],
                          state=State.LIMITED)
    medium = opts.recover_medium
    if medium is not None and isinstance(_spec(medium), SftpSpec):
        rows = _min_version(rows, "ssh", SSH_MIN, "an SFTP medium", openssh_version)
    rows += kernel_rows(Job.RECOVER, RECOVER_KERNEL)
    rows.append(_compiled_row(Job.RECOVER))
    if medium is not None:
        rows.append(medium_row(Job.RECOVER, medium, opts.medium_options))
    keys = [("trusted signers", opts.trust)] if opts.trust else []
    keys += [("age identity", p) for p in opts.identities]
    rows += key_rows(Job.RECOVER, keys)
    return rows


def _spec(url: str) -> object | None:
    try:
        return parse_url(url)
    except ResurgoError:
        return None


CHECKS: dict[Job, Callable[[DoctorOptions], list[Row]]] = {
    Job.SAVE: save_rows, Job.RESCUE: rescue_rows, Job.RECOVER: recover_rows}


def examine(opts: DoctorOptions) -> DoctorReport:
    """Every check of the chosen jobs; nothing on this machine or the medium changes."""
    rows: list[Row] = []
    for job in opts.jobs:
        rows += CHECKS[job](opts)
    return DoctorReport(opts.jobs, tuple(rows))


__all__ = ["JOBS", "DoctorOptions", "DoctorReport", "Row", "State", "examine"]
