"""Throw-away Debian guests under qemu for resurgo's vm test tier.

The host this runs on has no device-mapper, no md, no udevd and no KVM, so everything that
needs those runs inside a qemu (TCG) guest booted from a debootstrapped Debian image.
This module is a small library for that, meant to be used from pytest fixtures and from
scripts such as ``record_fixtures.py``:

``debian_tree(cache_dir)``
    a debootstrapped bookworm tree (kernel, systemd, udev, grub, storage tools, python3),
    cached between runs and keyed on the package list.
``build_image(tree, image)`` / ``base_image(cache_dir)``
    a bootable raw disk (GPT: bios_grub + ESP + ext4 root named by UUID), BIOS and UEFI,
    or an MBR for BIOS (``label="dos"``), with the test runner unit installed;
    ``base_image`` caches one GPT image.
``overlay(base, path)``, ``blank_disk(path, size)``, ``make_exchange_disk(path, files)``
    the disks a test boots with.
``boot(image, extra_disks, timeout=...)``
    runs qemu until the guest powers off, the serial console captured to a file.
``run_in_guest(script, image=..., workdir=...)``
    all of the above in one call: the script runs inside the guest, files it writes to
    ``$RESURGO_EXCHANGE`` come back to ``workdir/exchange``.

Inside the guest, ``resurgo-test.service`` (after multi-user.target) runs ``run.sh`` from
the exchange disk (ext4, label ``resurgo-xchg``) or else ``/resurgo-test/run.sh``, prints
markers to the serial console and powers the guest off.

Every loop device, mount and qemu process made here is released in a ``finally``.
Only the standard library is used; all external programs run through ``run_cmd`` (argv
lists, a clean environment, ``+ cmd`` debug logging, errors naming the command).
"""

from __future__ import annotations

import compileall
import contextlib
import ctypes
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import py_compile
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Final, Literal

log = logging.getLogger(__name__)

KiB: Final = 1024
MiB: Final = 1024 * KiB
GiB: Final = 1024 * MiB

DEFAULT_CACHE_DIR: Final = Path(os.environ.get("RESURGO_TEST_CACHE", "/var/cache/resurgo-tests"))
SUITE: Final = "bookworm"

#: What the guest carries besides minbase: a kernel that boots, systemd + udev, both GRUB
#: platforms, and the storage stack resurgo describes and recreates.
GUEST_PACKAGES: Final[tuple[str, ...]] = (
    "linux-image-amd64",
    "systemd-sysv",
    "udev",
    "kmod",
    "grub-pc",
    "grub-efi-amd64-bin",
    "e2fsprogs",
    "dosfstools",
    "xfsprogs",
    "btrfs-progs",
    "fdisk",
    "util-linux",
    "mdadm",
    "cryptsetup-bin",
    "lvm2",
    "thin-provisioning-tools",
    "python3",
    # ssh-keygen checks signed sets; a rescue built from this tree carries it
    "openssh-client",
)

#: Bump when the layout or the guest-side files of ``build_image`` change: it is part of
#: the key of the cached base image.
IMAGE_LAYOUT_VERSION: Final = 1

EXCHANGE_LABEL: Final = "resurgo-xchg"
MARK_BEGIN: Final = "RESURGO-TEST-BEGIN"
MARK_EXIT: Final = "RESURGO-TEST-EXIT"
MARK_NO_SCRIPT: Final = "RESURGO-TEST-NO-SCRIPT"

OVMF_FD: Final = Path("/usr/share/ovmf/OVMF.fd")
OVMF_CODE: Final = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS: Final = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")

_GPT_BIOS_BOOT: Final = "21686148-6449-6E6F-744E-656564454649"
_GPT_ESP: Final = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
_GPT_ROOT_X86_64: Final = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"
_GPT_LINUX: Final = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
_GPT_HOME: Final = "933AC7E1-2EB4-4F13-B844-0E14E2AEF915"
_GPT_SWAP: Final = "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F"

_PATH: Final = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_STAMP: Final = "COMPLETE.json"
_PR_SET_PDEATHSIG: Final = 1

Firmware = Literal["bios", "uefi"]
Interface = Literal["virtio", "nvme", "scsi", "ide"]


class HarnessError(RuntimeError):
    """Something on the host side of the harness failed (a command, a missing tool)."""


class GuestError(RuntimeError):
    """The guest did not boot, did not finish in time, or its script failed."""


# --------------------------------------------------------------------------------------
# running programs


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def run_cmd(
    argv: Sequence[str | os.PathLike[str]],
    *,
    check: bool = True,
    input: str | None = None,
    output: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run one program: argv list, clean environment, stdin closed unless ``input``.

    stdout and stderr are captured (or both appended to ``output``, for long logs).
    On a non-zero exit with ``check``, raise HarnessError naming the command, its exit
    code and the last lines of what it printed.
    """
    args = [os.fspath(a) for a in argv]
    full_env = {"LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "PATH": _PATH}
    if env:
        full_env.update(env)
    log.debug("+ %s", " ".join(args))
    stdin = subprocess.DEVNULL if input is None else None
    try:
        if output is None:
            proc = subprocess.run(
                args,
                input=input,
                stdin=stdin,
                capture_output=True,
                text=True,
                env=full_env,
                timeout=timeout,
                check=False,
            )
        else:
            with output.open("a") as out:
                proc = subprocess.run(
                    args,
                    input=input,
                    stdin=stdin,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    text=True,
                    env=full_env,
                    timeout=timeout,
                    check=False,
                )
    except FileNotFoundError as exc:
        raise HarnessError(f"{args[0]}: not found ({exc})") from exc
    except subprocess.TimeoutExpired as exc:
        raise HarnessError(f"{' '.join(args)}: timed out after {timeout} s") from exc
    if check and proc.returncode != 0:
        if output is not None:
            detail = _tail(output.read_text(errors="replace"))
        else:
            detail = _tail((proc.stderr or "") + (proc.stdout or ""))
        raise HarnessError(f"{' '.join(args)}: exit code {proc.returncode}\n{detail}")
    return proc


def require_tools(*names: str) -> None:
    """Fail with one clear message if a host program is missing."""
    missing = [n for n in names if shutil.which(n, path=_PATH) is None]
    if missing:
        raise HarnessError(
            "missing host programs: " + ", ".join(missing) + " (apt-get install debootstrap "
            "qemu-system-x86 qemu-utils ovmf fdisk dosfstools mtools e2fsprogs)"
        )


# --------------------------------------------------------------------------------------
# the Debian tree


def _deb822_paragraphs(text: str) -> list[dict[str, str]]:
    paragraphs: list[dict[str, str]] = []
    current: dict[str, str] = {}
    key: str | None = None
    for raw in text.splitlines():
        if raw.startswith("#"):
            continue
        if not raw.strip():
            if current:
                paragraphs.append(current)
            current, key = {}, None
            continue
        if raw[0] in " \t" and key is not None:
            current[key] += " " + raw.strip()
            continue
        name, sep, value = raw.partition(":")
        if sep:
            key = name.strip().lower()
            current[key] = value.strip()
    if current:
        paragraphs.append(current)
    return paragraphs


def find_mirror(suite: str = SUITE, apt_dir: Path = Path("/etc/apt")) -> str:
    """The Debian mirror apt on this host already uses for ``suite``.

    Read from the deb822 ``*.sources`` files (the ``URIs:`` of an enabled ``deb`` entry
    whose ``Suites:`` include ``suite``), then from one-line ``sources.list`` files.
    ``RESURGO_TEST_MIRROR`` in the environment overrides both.
    """
    override = os.environ.get("RESURGO_TEST_MIRROR")
    if override:
        return override
    sources_d = apt_dir / "sources.list.d"
    for path in sorted(sources_d.glob("*.sources")) if sources_d.is_dir() else []:
        for para in _deb822_paragraphs(path.read_text(errors="replace")):
            if para.get("enabled", "yes").lower() == "no":
                continue
            if "deb" not in para.get("types", "").split():
                continue
            if suite in para.get("suites", "").split() and para.get("uris"):
                return para["uris"].split()[0]
    lists = [apt_dir / "sources.list"]
    if sources_d.is_dir():
        lists += sorted(sources_d.glob("*.list"))
    for path in lists:
        if not path.is_file():
            continue
        for line in path.read_text(errors="replace").splitlines():
            line = re.sub(r"\[[^]]*\]", " ", line.split("#", 1)[0])
            words = line.split()
            if len(words) >= 3 and words[0] == "deb" and words[2] == suite:
                return words[1]
    raise HarnessError(
        f"no apt source for {suite} in {apt_dir}/sources.list.d/*.sources or sources.list; "
        "set RESURGO_TEST_MIRROR"
    )


def cache_key(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]


@contextlib.contextmanager
def locked(lock_path: Path) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("w") as fd:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)


def _mounts_under(path: Path) -> list[Path]:
    """Mount points at or below ``path``, deepest first."""
    base = os.path.realpath(path)
    found: list[Path] = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mnt = line.split()[4].encode().decode("unicode_escape")
            if mnt == base or mnt.startswith(base.rstrip("/") + "/"):
                found.append(Path(mnt))
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def remove_tree(path: Path) -> None:
    """Delete a directory tree that may still hold mounts (a killed debootstrap or build).

    Everything mounted below it is unmounted first, and ``rm --one-file-system`` never
    crosses into another file system (a bind-mounted /dev, say).
    """
    if not path.exists():
        return
    for mnt in _mounts_under(path):
        _umount(mnt)
    run_cmd(["rm", "-rf", "--one-file-system", "--", path])


def debian_tree(
    cache_dir: Path = DEFAULT_CACHE_DIR,
    *,
    packages: Sequence[str] = GUEST_PACKAGES,
    suite: str = SUITE,
    mirror: str | None = None,
) -> Path:
    """A debootstrapped ``suite`` (minbase + ``packages``) under ``cache_dir``; its root path.

    Built once per package list (the cache key) and reused while its stamp file exists.
    A run that dies half-way leaves no stamp, so the next one starts over. Concurrent
    callers serialise on a lock file.
    """
    key = cache_key(suite, "minbase", sorted(packages))
    final = cache_dir / f"debian-{suite}-{key}"
    if (final / _STAMP).is_file():
        return final / "root"
    require_tools("debootstrap")
    with locked(cache_dir / f"{final.name}.lock"):
        if (final / _STAMP).is_file():
            return final / "root"
        work = cache_dir / f"{final.name}.partial"
        remove_tree(final)
        remove_tree(work)
        work.mkdir(parents=True)
        source = mirror or find_mirror(suite)
        started = time.monotonic()
        try:
            run_cmd(
                [
                    "debootstrap",
                    "--variant=minbase",
                    "--include=" + ",".join(packages),
                    suite,
                    work / "root",
                    source,
                ],
                output=work / "debootstrap.log",
                env={"DEBIAN_FRONTEND": "noninteractive"},
                timeout=3600,
            )
            # The .debs are not needed to boot; dropping them saves ~300 MB per image copy.
            for deb in (work / "root/var/cache/apt/archives").glob("*.deb"):
                deb.unlink()
            stamp = {
                "suite": suite,
                "packages": sorted(packages),
                "mirror": source,
                "seconds": round(time.monotonic() - started, 1),
                "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
            (work / _STAMP).write_text(json.dumps(stamp, indent=2) + "\n")
            work.rename(final)
        except BaseException:
            remove_tree(work)
            raise
        log.info("debootstrap of %s took %.0f s", suite, time.monotonic() - started)
    return final / "root"


def tree_info(tree: Path) -> dict[str, object]:
    """The stamp written when ``tree`` (a ``debian_tree`` result) was built."""
    data: dict[str, object] = json.loads((tree.parent / _STAMP).read_text())
    return data


# --------------------------------------------------------------------------------------
# loop devices and mounts


def _umount(target: Path) -> None:
    for attempt in range(10):
        proc = run_cmd(["umount", target], check=False)
        if proc.returncode == 0 or not os.path.ismount(target):
            return
        time.sleep(0.2 * (attempt + 1))
    log.warning("%s stays busy; detaching it lazily", target)
    run_cmd(["umount", "--lazy", target])


@contextlib.contextmanager
def mounted(
    source: str | os.PathLike[str],
    target: Path,
    *,
    options: Sequence[str] = (),
    fstype: str | None = None,
) -> Iterator[Path]:
    """Mount ``source`` on ``target`` (created if needed) for the ``with`` block."""
    target.mkdir(parents=True, exist_ok=True)
    argv: list[str | os.PathLike[str]] = ["mount"]
    if fstype:
        argv += ["-t", fstype]
    if options:
        argv += ["-o", ",".join(options)]
    run_cmd([*argv, source, target])
    try:
        yield target
    finally:
        _umount(target)


def _wait_for_nodes(nodes: Sequence[Path], timeout: float = 10.0) -> None:
    """Wait for device nodes (no udevd here: devtmpfs makes them, or we do)."""
    deadline = time.monotonic() + timeout
    while True:
        missing = [n for n in nodes if not n.exists()]
        if not missing:
            return
        for node in missing:
            dev = Path("/sys/class/block", node.name, "dev")
            if dev.exists() and time.monotonic() > deadline - timeout / 2:
                major, minor = (int(x) for x in dev.read_text().split(":"))
                os.mknod(node, 0o660 | 0o060000, os.makedev(major, minor))
        if time.monotonic() > deadline:
            raise HarnessError("device nodes did not appear: " + ", ".join(map(str, missing)))
        time.sleep(0.1)


@contextlib.contextmanager
def loop_device(image: Path, *, read_only: bool = False) -> Iterator[Path]:
    """Attach ``image`` to a free loop device for the ``with`` block; always detached."""
    argv = ["losetup", "--find", "--show"]
    if read_only:
        argv.append("--read-only")
    dev = Path(run_cmd([*argv, os.fspath(image)]).stdout.strip())
    try:
        _wait_for_nodes([dev])
        yield dev
    finally:
        # Detached, a loop device keeps the partitions partx gave it: drop them, or the
        # next image attached there starts with this one's.
        run_cmd(["partx", "--delete", dev], check=False)
        for attempt in range(10):
            if run_cmd(["losetup", "--detach", dev], check=False).returncode == 0:
                break
            time.sleep(0.2 * (attempt + 1))
        else:
            log.error("could not detach %s", dev)


def partition_nodes(loop: Path, count: int | Sequence[int]) -> list[Path]:
    """Tell the kernel about ``loop``'s partitions (``partx``) and wait for their nodes:
    partitions 1 to ``count``, or the numbers given (an MBR's logicals start at 5)."""
    numbers = range(1, count + 1) if isinstance(count, int) else count
    nodes = [Path(f"{loop}p{n}") for n in numbers]
    # Under load (or after a stale table on a reused loop device) the kernel can miss a
    # partition on the first read; asking again is cheap, failing a 5-minute vm test is not.
    # Stale partitions go first: the kernel refuses a partition overlapping one of them
    # (an MBR's logical partition inside another image's old swap partition).
    for attempt in range(3):
        run_cmd(["partx", "--delete", loop], check=False)
        if run_cmd(["partx", "--add", loop], check=False).returncode != 0:
            run_cmd(["partx", "--update", loop], check=False)
        try:
            _wait_for_nodes(nodes)
            return nodes
        except HarnessError:
            if attempt == 2:
                raise
            time.sleep(1)
    raise AssertionError("unreachable")


@contextlib.contextmanager
def scratch_dir(prefix: str = "resurgo-vm-") -> Iterator[Path]:
    """A temporary directory that is safe to hold mounts: on exit, whatever is still
    mounted below it is unmounted before anything is deleted (never through a mount)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        remove_tree(path)


@contextlib.contextmanager
def mounted_image(image: Path, *, read_only: bool = True) -> Iterator[Path]:
    """Loop-mount a whole-disk file system image (an exchange disk) on a temporary dir."""
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(scratch_dir("resurgo-mnt-"))
        dev = stack.enter_context(loop_device(image, read_only=read_only))
        options = ["ro"] if read_only else []
        yield stack.enter_context(mounted(dev, tmp / "mnt", options=options))


# --------------------------------------------------------------------------------------
# the bootable image

#: Runs inside the guest as resurgo-test.service. Kept to POSIX sh and util-linux.
GUEST_RUNNER: Final = f"""#!/bin/sh
# resurgo vm test runner (installed by tests/vm/guest.py as resurgo-test.service).
# Runs run.sh from the exchange disk (ext4 labelled {EXCHANGE_LABEL}) or else
# /resurgo-test/run.sh, prints markers on the serial console, and powers the guest off
# unless the kernel command line has resurgo.test=keep.
X=/resurgo-test/exchange
up() {{ cut -d' ' -f1 /proc/uptime; }}
dmesg --console-level warn 2>/dev/null
echo "{MARK_BEGIN} uptime=$(up)"
script=/resurgo-test/run.sh
out=
dev=$(blkid -l -o device -t LABEL={EXCHANGE_LABEL} 2>/dev/null)
if [ -n "$dev" ] && mkdir -p "$X" && mount -t ext4 "$dev" "$X"; then
    out="$X/output.log"
    if [ -f "$X/run.sh" ]; then script="$X/run.sh"; fi
fi
if [ -f "$script" ]; then
    export RESURGO_EXCHANGE="$X"
    cd "$(dirname "$script")" || exit 1
    {{ if [ -x "$script" ]; then "$script"; else sh "$script"; fi
       echo $? >/run/resurgo-test.rc; }} </dev/null 2>&1 | tee $out
    rc=$(cat /run/resurgo-test.rc 2>/dev/null || echo 255)
else
    echo "{MARK_NO_SCRIPT}"
    rc=127
fi
cd /
if [ -n "$out" ]; then
    echo "$rc" >"$X/exit-status"
    sync
    umount "$X"
fi
echo "{MARK_EXIT} $rc uptime=$(up)"
# (not "systemctl poweroff": without dbus it first fails to reach logind, noisily)
grep -qw resurgo.test=keep /proc/cmdline ||
    systemctl --no-block --job-mode=replace-irreversibly start poweroff.target
"""

#: DefaultDependencies=no keeps multi-user.target from being ordered after this unit
#: (targets order themselves after what they want), so After=multi-user.target holds.
GUEST_UNIT: Final = """[Unit]
Description=resurgo vm test runner
DefaultDependencies=no
Requires=sysinit.target
After=sysinit.target multi-user.target
Conflicts=shutdown.target
Before=shutdown.target

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/resurgo-test-runner
StandardInput=null
StandardOutput=tty
StandardError=tty
TTYPath=/dev/ttyS0
TTYReset=no
TTYVHangup=no
TimeoutStartSec=infinity
Environment=LANG=C.UTF-8

[Install]
WantedBy=multi-user.target
"""

#: On the kernel command line of every guest the tier boots: the guest kernel's
#: speculation mitigations cost a little under TCG (300 fork+exec of a small dynamic
#: program, one vCPU, idle host: 6.8 s with them, 6.25 s without). Nothing a test checks
#: depends on them; the guests run only the tier's own programs.
FAST_TCG: Final = "mitigations=off"

GRUB_DEFAULTS: Final[Mapping[str, str]] = {
    "GRUB_TIMEOUT": "0",
    "GRUB_CMDLINE_LINUX_DEFAULT": f'"console=ttyS0 panic=-1 {FAST_TCG}"',
    "GRUB_CMDLINE_LINUX": '""',
    "GRUB_TERMINAL": '"serial console"',
    "GRUB_SERIAL_COMMAND": '"serial --unit=0 --speed=115200"',
    "GRUB_DISABLE_OS_PROBER": "true",
}


@dataclasses.dataclass(frozen=True)
class ImageInfo:
    """What ``build_image`` made."""

    path: Path
    size: int
    root_uuid: str
    esp_uuid: str | None
    kernel: str
    seconds: float
    #: Filesystem UUIDs of the optional partitions (``boot``, ``home``, ``swap``).
    uuids: dict[str, str] = dataclasses.field(default_factory=dict)

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        data["path"] = os.fspath(self.path)
        return json.dumps(data, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, path: Path) -> ImageInfo:
        data = json.loads(text)
        data["path"] = path
        return cls(**data)


def _chroot(root: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return run_cmd(["chroot", root, *argv], env={"DEBIAN_FRONTEND": "noninteractive"})


def _set_shell_vars(path: Path, values: Mapping[str, str]) -> None:
    """Set ``KEY=value`` lines in a shell-style config file (``/etc/default/grub``)."""
    lines = path.read_text().splitlines() if path.exists() else []
    todo = dict(values)
    out: list[str] = []
    for line in lines:
        m = re.match(r"\s*#?\s*([A-Z_][A-Z0-9_]*)=", line)
        if m and m.group(1) in todo:
            out.append(f"{m.group(1)}={todo.pop(m.group(1))}")
        else:
            out.append(line)
    out += [f"{k}={v}" for k, v in todo.items()]
    path.write_text("\n".join(out) + "\n")


def _configure_guest(
    root: Path,
    *,
    root_uuid: str,
    esp_uuid: str | None,
    hostname: str,
    run_script: str | None,
    uuids: Mapping[str, str] | None = None,
) -> None:
    uuids = uuids or {}
    fstab = f"UUID={root_uuid} / ext4 errors=remount-ro 0 1\n"
    if "boot" in uuids:
        fstab += f"UUID={uuids['boot']} /boot ext4 defaults 0 2\n"
    if "home" in uuids:
        fstab += f"UUID={uuids['home']} /home ext4 defaults 0 2\n"
    if "swap" in uuids:
        fstab += f"UUID={uuids['swap']} none swap sw 0 0\n"
    if esp_uuid:
        (root / "boot/efi").mkdir(parents=True, exist_ok=True)
        fstab += f"UUID={esp_uuid} /boot/efi vfat umask=0077,nofail 0 1\n"
    (root / "etc/fstab").write_text(fstab)
    (root / "etc/hostname").write_text(hostname + "\n")
    (root / "etc/hosts").write_text(f"127.0.0.1 localhost\n127.0.1.1 {hostname}\n")
    _set_shell_vars(root / "etc/default/grub", GRUB_DEFAULTS)

    systemd = root / "etc/systemd/system"
    (systemd / "multi-user.target.wants").mkdir(parents=True, exist_ok=True)
    # serial-getty's vhangup on ttyS0 would cut the runner's console output.
    getty = systemd / "serial-getty@ttyS0.service"
    getty.unlink(missing_ok=True)
    getty.symlink_to("/dev/null")
    (systemd / "resurgo-test.service").write_text(GUEST_UNIT)
    wants = systemd / "multi-user.target.wants/resurgo-test.service"
    wants.unlink(missing_ok=True)
    wants.symlink_to("/etc/systemd/system/resurgo-test.service")
    runner = root / "usr/local/sbin/resurgo-test-runner"
    runner.parent.mkdir(parents=True, exist_ok=True)
    runner.write_text(GUEST_RUNNER)
    runner.chmod(0o755)
    (root / "resurgo-test").mkdir(exist_ok=True)
    # qemu's default machine has a floppy controller without a disk: probing it costs
    # boot time and logs I/O errors.
    (root / "etc/modprobe.d/resurgo-test.conf").write_text("blacklist floppy\n")
    if run_script is not None:
        script = root / "resurgo-test/run.sh"
        script.write_text(run_script)
        script.chmod(0o755)


def _kernel_version(root: Path) -> str:
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    if not kernels:
        raise HarnessError(f"no kernel in {root}/boot")
    return kernels[-1].name.removeprefix("vmlinuz-")


def disk_layout(
    label: Literal["gpt", "dos"], *, uefi: bool, sizes: Mapping[str, int]
) -> tuple[str, dict[str, int]]:
    """The sfdisk script of a ``build_image`` disk and its partitions' numbers by name.

    GPT: bios_grub, the ESP (``uefi``), then ``sizes`` (boot, swap, home) in order, the
    root on the rest. MBR: /boot a bootable primary (1), swap and /home logicals (5, 6)
    in an extended partition (2), the root a primary on the rest (3): a table with all
    three kinds of MBR partition, the root last so that it can grow.
    """
    if label == "gpt":
        lines = ["label: gpt", f"start=1MiB, size=1MiB, type={_GPT_BIOS_BOOT}, name=bios_grub"]
        names = ["bios_grub"]
        if uefi:
            lines.append(f"size=63MiB, type={_GPT_ESP}, name=esp")
            names.append("esp")
        types = {"boot": _GPT_LINUX, "swap": _GPT_SWAP, "home": _GPT_HOME}
        for name, size_ in sizes.items():
            lines.append(f"size={size_ // MiB}MiB, type={types[name]}, name={name}")
            names.append(name)
        lines.append(f"type={_GPT_ROOT_X86_64}, name=root")
        names.append("root")
        return "\n".join(lines) + "\n", {n: i for i, n in enumerate(names, 1)}
    lines = ["label: dos"]
    numbers: dict[str, int] = {}
    start = 1  # MiB
    primary = 1
    if "boot" in sizes:
        lines.append(f"p1 : start={start}MiB, size={sizes['boot'] // MiB}MiB, type=83, bootable")
        numbers["boot"] = primary
        start += sizes["boot"] // MiB
        primary += 1
    logicals = [n for n in ("swap", "home") if n in sizes]
    if logicals:
        # Each logical partition has its EBR in the MiB before it.
        ext_size = sum(sizes[n] // MiB + 1 for n in logicals)
        lines.append(f"p{primary} : start={start}MiB, size={ext_size}MiB, type=5")
        numbers["extended"] = primary
        pos = start
        for number, name in enumerate(logicals, 5):
            kind = "82" if name == "swap" else "83"
            lines.append(
                f"p{number} : start={pos + 1}MiB, size={sizes[name] // MiB}MiB, type={kind}"
            )
            numbers[name] = number
            pos += sizes[name] // MiB + 1
        start += ext_size
        primary += 1
    bootable = "" if "boot" in sizes else ", bootable"
    lines.append(f"p{primary} : start={start}MiB, type=83{bootable}")
    numbers["root"] = primary
    return "\n".join(lines) + "\n", numbers


def build_image(
    tree: Path,
    image: Path,
    *,
    size: int = 3 * GiB,
    uefi: bool = True,
    label: Literal["gpt", "dos"] = "gpt",
    hostname: str = "resurgo-guest",
    run_script: str | None = None,
    boot_size: int | None = None,
    swap_size: int | None = None,
    home_size: int | None = None,
) -> ImageInfo:
    """Make ``image``, a raw disk that boots ``tree`` under qemu.

    GPT: 1 MiB bios_grub, a 63 MiB ESP (when ``uefi``) and an ext4 root on the rest.
    GRUB for BIOS is installed with grub-install on the loop device; for UEFI a standalone
    GRUB goes to EFI/BOOT/BOOTX64.EFI on the ESP (written with mtools: no vfat mount
    here). Kernel console on ttyS0, the root named by UUID, GRUB_TIMEOUT=0, the
    resurgo-test.service runner enabled and ``run_script`` (if given) at
    /resurgo-test/run.sh. ``boot_size``, ``swap_size``, ``home_size``: also an ext4
    /boot, a swap partition and an ext4 /home of that size (before the root), in fstab
    by UUID (``ImageInfo.uuids``). ``label="dos"``: an MBR instead (see ``disk_layout``;
    BIOS only).
    """
    tools = ["sfdisk", "partx", "losetup", "mkfs.ext4", "chroot", "mount", "umount"]
    require_tools(*tools, *(["mkfs.vfat", "mmd", "mcopy"] if uefi else []))
    started = time.monotonic()
    root_uuid = str(uuid.uuid4())
    esp_serial = uuid.uuid4().hex[:8].upper()
    esp_uuid = f"{esp_serial[:4]}-{esp_serial[4:]}" if uefi else None

    if label == "dos" and uefi:
        raise HarnessError("build_image: no ESP on an MBR disk here (pass uefi=False)")
    extra = {
        name: size_
        for name, size_ in (("boot", boot_size), ("swap", swap_size), ("home", home_size))
        if size_ is not None
    }
    uuids = {name: str(uuid.uuid4()) for name in extra}
    script, numbers = disk_layout(label, uefi=uefi, sizes=extra)

    image.parent.mkdir(parents=True, exist_ok=True)
    image.unlink(missing_ok=True)
    with image.open("wb") as f:
        f.truncate(size)
    try:
        with contextlib.ExitStack() as stack:
            loop = stack.enter_context(loop_device(image))
            run_cmd(["sfdisk", "--quiet", "--wipe", "always", loop], input=script)
            nodes = dict(zip(numbers, partition_nodes(loop, list(numbers.values())), strict=True))
            root_dev, esp_dev = nodes["root"], nodes.get("esp")
            run_cmd(["mkfs.ext4", "-q", "-F", "-U", root_uuid, "-L", "root", root_dev])
            if esp_dev is not None:
                run_cmd(["mkfs.vfat", "-n", "ESP", "-i", esp_serial, esp_dev])
            extra_dev = {name: nodes[name] for name in extra}
            for name, dev in extra_dev.items():
                if name == "swap":
                    run_cmd(["mkswap", "-U", uuids[name], "-L", name, dev])
                else:
                    run_cmd(["mkfs.ext4", "-q", "-F", "-U", uuids[name], "-L", name, dev])

            mnt = stack.enter_context(scratch_dir("resurgo-image-")) / "root"
            stack.enter_context(mounted(root_dev, mnt))
            for name in ("boot", "home"):
                if name in extra_dev:
                    stack.enter_context(mounted(extra_dev[name], mnt / name))
            run_cmd(["cp", "-a", f"{tree}/.", mnt], timeout=1800)
            _configure_guest(
                mnt,
                root_uuid=root_uuid,
                esp_uuid=esp_uuid,
                hostname=hostname,
                run_script=run_script,
                uuids=uuids,
            )
            stack.enter_context(mounted("/dev", mnt / "dev", options=["bind"]))
            stack.enter_context(mounted("proc", mnt / "proc", fstype="proc"))
            stack.enter_context(mounted("sysfs", mnt / "sys", fstype="sysfs"))

            _chroot(mnt, "grub-install", "--target=i386-pc", os.fspath(loop))
            _chroot(mnt, "update-grub")
            # Without udevd there is no /dev/disk/by-uuid, so grub-mkconfig names the loop
            # partition: replace it by the UUID or the guest will not find its root.
            cfg = mnt / "boot/grub/grub.cfg"
            text, n = re.subn(r"root=/dev/loop\d+p\d+", f"root=UUID={root_uuid}", cfg.read_text())
            if "root=UUID=" not in text:
                raise HarnessError(f"grub.cfg names no root=UUID= ({n} replacements)")
            cfg.write_text(text)

            if esp_dev is not None:
                esp_cfg = mnt / "tmp/resurgo-esp.cfg"
                # A separate /boot holds grub/ at its top.
                grub_fs, grub_dir = (
                    (uuids["boot"], "/grub") if "boot" in uuids else (root_uuid, "/boot/grub")
                )
                esp_cfg.write_text(
                    "insmod part_gpt\ninsmod ext2\n"
                    f"search --no-floppy --fs-uuid --set=root {grub_fs}\n"
                    f"configfile ($root){grub_dir}/grub.cfg\n"
                )
                _chroot(
                    mnt,
                    "grub-mkstandalone",
                    "-O",
                    "x86_64-efi",
                    "-o",
                    "/tmp/BOOTX64.EFI",
                    "boot/grub/grub.cfg=/tmp/resurgo-esp.cfg",
                )
                mtools = {"MTOOLS_SKIP_CHECK": "1"}
                run_cmd(["mmd", "-i", esp_dev, "::/EFI", "::/EFI/BOOT"], env=mtools)
                run_cmd(
                    ["mcopy", "-i", esp_dev, mnt / "tmp/BOOTX64.EFI", "::/EFI/BOOT/BOOTX64.EFI"],
                    env=mtools,
                )
                esp_cfg.unlink()
                (mnt / "tmp/BOOTX64.EFI").unlink()
            kernel = _kernel_version(mnt)
            run_cmd(["sync", "-f", mnt])
    except BaseException:
        image.unlink(missing_ok=True)
        raise
    info = ImageInfo(
        path=image,
        size=size,
        root_uuid=root_uuid,
        esp_uuid=esp_uuid,
        kernel=kernel,
        seconds=round(time.monotonic() - started, 1),
        uuids=uuids,
    )
    log.info("built %s in %.0f s", image, info.seconds)
    return info


def base_image(
    cache_dir: Path = DEFAULT_CACHE_DIR,
    *,
    tree: Path | None = None,
    size: int = 3 * GiB,
    uefi: bool = True,
) -> ImageInfo:
    """A cached ``build_image`` of ``debian_tree(cache_dir)`` (built on first use).

    Never boot it directly (that would change the cache): boot an ``overlay`` of it.
    """
    tree = tree or debian_tree(cache_dir)
    return cached_image(
        "image",
        (size, uefi),
        lambda path: build_image(tree, path, size=size, uefi=uefi),
        tree=tree,
        cache_dir=cache_dir,
    )


def cached_image(
    name: str,
    key: Sequence[object],
    make: Callable[[Path], ImageInfo],
    *,
    tree: Path,
    cache_dir: Path = DEFAULT_CACHE_DIR,
) -> ImageInfo:
    """The image ``make(path)`` builds, cached under ``cache_dir`` as ``name-KEY.raw``.

    KEY digests ``key`` (what the caller's build depends on: its arguments, the scripts
    and files it puts in, JSON values) with the tree and this module's guest-side files, so a change
    to any of them builds anew. Never boot or write the cached file: ``copy_image`` it.
    """
    digest = cache_key(
        tree.parent.name,
        IMAGE_LAYOUT_VERSION,
        GUEST_RUNNER,
        GUEST_UNIT,
        dict(GRUB_DEFAULTS),
        *key,
    )
    final = cache_dir / f"{name}-{digest}.raw"
    meta = final.with_suffix(".json")
    if final.exists() and meta.exists():
        return ImageInfo.from_json(meta.read_text(), final)
    with locked(cache_dir / f"{name}-{digest}.lock"):
        if final.exists() and meta.exists():
            return ImageInfo.from_json(meta.read_text(), final)
        partial = cache_dir / f"{name}-{digest}.partial"
        info = make(partial)
        info = dataclasses.replace(info, path=final)
        meta.write_text(info.to_json())
        partial.rename(final)
    return info


def copy_image(info: ImageInfo, path: Path) -> ImageInfo:
    """A private, writable copy of a cached image (sparse: seconds for a few GiB)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    run_cmd(["cp", "--sparse=always", info.path, path])
    return dataclasses.replace(info, path=path)


# --------------------------------------------------------------------------------------
# disks


def blank_disk(path: Path, size: int) -> Path:
    """A sparse raw disk of ``size`` bytes (zeros)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    with path.open("wb") as f:
        f.truncate(size)
    return path


def overlay(base: Path, path: Path) -> Path:
    """A qcow2 copy-on-write overlay of the raw ``base`` (which stays untouched)."""
    require_tools("qemu-img")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    run_cmd(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", base.resolve(), path])
    return path


def guest_disk(workdir: Path, cache_dir: Path = DEFAULT_CACHE_DIR) -> Path:
    """A fresh bootable guest disk (overlay of the cached base image) in ``workdir``."""
    return overlay(base_image(cache_dir).path, workdir / "guest.qcow2")


ExchangeFile = bytes | str | Path


def make_exchange_disk(
    path: Path,
    files: Mapping[str, ExchangeFile],
    *,
    size: int = 256 * MiB,
) -> Path:
    """An ext4 image labelled ``resurgo-xchg`` holding ``files`` (name -> content).

    A content is bytes, text, or a host Path (a file or a directory, copied). ``run.sh``
    on it is what the guest runner executes. Made with ``mkfs.ext4 -d``: no mount needed.
    """
    require_tools("mkfs.ext4")
    with scratch_dir("resurgo-xchg-") as staging:
        for name, content in files.items():
            target = staging / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, Path):
                if content.is_dir():
                    shutil.copytree(content, target, symlinks=True,
                                    ignore=shutil.ignore_patterns("__pycache__"))
                    _compiled(target)
                else:
                    shutil.copy2(content, target)
            elif isinstance(content, str):
                target.write_text(content)
            else:
                target.write_bytes(content)
        if (staging / "run.sh").exists():
            (staging / "run.sh").chmod(0o755)
        blank_disk(path, size)
        run_cmd(
            [
                "mkfs.ext4",
                "-q",
                "-F",
                "-L",
                EXCHANGE_LABEL,
                "-E",
                "root_owner=0:0",
                "-d",
                staging,
                path,
            ]
        )
    return path


def _compiled(tree: Path) -> None:
    """The Python modules under ``tree`` with their bytecode beside them, compiled here.

    A guest that imports them (resurgo from the exchange disk) would otherwise compile each
    one at its first import on its emulated CPU: seconds of every guest run that starts
    resurgo, where this host takes a fraction of one. Checked by the source's hash, not its
    time (the exchange disk's file times do not matter); the guest's Python (Debian 12's
    3.11) takes them when this one is a 3.11 too, and ignores them otherwise.
    """
    compileall.compile_dir(tree, quiet=2,
                           invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH)


def read_exchange(path: Path, dest: Path) -> Path:
    """Copy everything on exchange disk ``path`` to ``dest`` (loop-mounted read-only)."""
    dest.mkdir(parents=True, exist_ok=True)
    with mounted_image(path) as mnt:
        shutil.copytree(
            mnt,
            dest,
            symlinks=True,
            dirs_exist_ok=True,
            ignore=shutil.ignore_patterns("lost+found"),
        )
    return dest


# --------------------------------------------------------------------------------------
# booting


@dataclasses.dataclass(frozen=True)
class Drive:
    """One disk of a guest. ``format`` defaults from the suffix (.qcow2 or raw);
    ``interface`` from ``boot(interface=...)``; ``serial`` shows up in the guest's
    /sys/block/*/serial (virtio) or as the NVMe serial."""

    path: Path
    format: Literal["raw", "qcow2"] | None = None
    interface: Interface | None = None
    serial: str | None = None
    read_only: bool = False

    @property
    def image_format(self) -> str:
        if self.format:
            return self.format
        return "qcow2" if self.path.suffix == ".qcow2" else "raw"


@dataclasses.dataclass(frozen=True)
class BootResult:
    """How a ``boot`` went. Times are host seconds since qemu started."""

    serial_log: Path
    returncode: int | None
    timed_out: bool
    seconds: float
    begin_at: float | None
    exit_at: float | None
    exit_status: int | None

    @property
    def text(self) -> str:
        return self.serial_log.read_text(errors="replace")

    @property
    def reached_runner(self) -> bool:
        """The guest booted to multi-user and started resurgo-test.service."""
        return self.begin_at is not None

    def check(self) -> BootResult:
        """Raise GuestError (with the tail of the serial log) unless the script exited 0."""
        if self.timed_out or self.exit_status != 0:
            if self.timed_out:
                what = f"timed out after {self.seconds:.0f} s"
            elif self.begin_at is None:
                what = f"never reached the test runner (qemu exit code {self.returncode})"
            elif self.exit_status is None:
                what = "stopped before the test script finished"
            else:
                what = f"test script exited {self.exit_status}"
            raise GuestError(f"guest {what}; serial log {self.serial_log}:\n{_tail(self.text, 40)}")
        return self


class _SerialPump(threading.Thread):
    """Copies qemu's stdout (the serial console) to the log, noting marker times."""

    def __init__(self, stream: IO[bytes], sink: IO[bytes], started: float) -> None:
        super().__init__(daemon=True)
        self.stream, self.sink, self.started = stream, sink, started
        self.begin_at: float | None = None
        self.exit_at: float | None = None
        self.exit_status: int | None = None

    def _line(self, raw: bytes) -> None:
        line = raw.decode(errors="replace")
        now = round(time.monotonic() - self.started, 1)
        if MARK_BEGIN in line and self.begin_at is None:
            self.begin_at = now
            log.info("guest runner started at %.1f s", now)
        elif m := re.search(rf"{MARK_EXIT} (\d+)", line):
            self.exit_at = now
            self.exit_status = int(m.group(1))

    def run(self) -> None:
        pending = b""
        fd = self.stream.fileno()
        while chunk := os.read(fd, 65536):
            self.sink.write(chunk)
            self.sink.flush()
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                self._line(raw)
        if pending:
            self._line(pending)


def _die_with_parent() -> None:
    """In the qemu child: get SIGKILL when the harness dies, even by SIGKILL."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def spawn_qemu(argv: list[str], *, stdin: int) -> subprocess.Popen[bytes]:
    """qemu in a session of its own that dies with this process, its console (serial and
    messages) on its stdout."""
    return subprocess.Popen(
        argv,
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={"LANG": "C.UTF-8", "PATH": _PATH},
        start_new_session=True,
        preexec_fn=_die_with_parent,
    )


def default_cpus() -> int:
    """Two vCPUs when this process has the machine to itself; one when pytest-xdist runs
    several workers (./dev test: two, on two cores), so that the guests of two workers
    do not fight over the cores (with one vCPU each they share them without stalls)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    return 1 if workers > 1 else 2


def new_ovmf_vars(path: Path) -> Path:
    """A fresh copy of OVMF's NVRAM template, for ``boot(ovmf_vars=...)``."""
    shutil.copyfile(OVMF_VARS, path)
    return path


def qemu_command(
    disks: Sequence[Drive],
    *,
    firmware: Firmware = "bios",
    interface: Interface = "virtio",
    memory_mib: int = 2048,
    cpus: int = 2,
    ovmf_vars: Path | None = None,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """The qemu-system-x86_64 argv for ``boot`` (the first disk is the boot disk)."""
    argv = [
        "qemu-system-x86_64",
        "-accel",
        "tcg",
        "-m",
        str(memory_mib),
        "-smp",
        str(cpus),
        "-nographic",
        "-no-reboot",
        "-nic",
        "none",
        # no floppy drive behind the default machine's controller (saves its probing)
        "-global",
        "isa-fdc.fdtypeA=none",
    ]
    if firmware == "uefi":
        if ovmf_vars is None:
            argv += ["-bios", os.fspath(OVMF_FD)]
        else:
            argv += [
                "-drive",
                f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
                "-drive",
                f"if=pflash,format=raw,unit=1,file={ovmf_vars}",
            ]
    scsi_bus = False
    # A kernel given on the command line boots first (qemu's loader takes bootindex 0), and
    # so does a device of extra_args given a bootindex (a NIC booting by PXE).
    direct = "-kernel" in extra_args or any("bootindex=" in a for a in extra_args)
    for n, disk in enumerate(disks):
        kind = disk.interface or interface
        drive = f"file={disk.path},format={disk.image_format},if=none,id=d{n},cache=unsafe"
        if disk.read_only:
            drive += ",readonly=on"
        argv += ["-drive", drive]
        serial = disk.serial or f"resurgo-d{n}"
        boot = ",bootindex=0" if n == 0 and not direct else ""
        if kind == "virtio":
            argv += ["-device", f"virtio-blk-pci,drive=d{n},serial={serial}{boot}"]
        elif kind == "nvme":
            argv += ["-device", f"nvme,drive=d{n},serial={serial}{boot}"]
        elif kind == "scsi":
            if not scsi_bus:
                argv += ["-device", "virtio-scsi-pci,id=scsi0"]
                scsi_bus = True
            argv += ["-device", f"scsi-hd,drive=d{n},bus=scsi0.0,serial={serial}{boot}"]
        else:
            argv += ["-device", f"ide-hd,drive=d{n},serial={serial}{boot}"]
    return [*argv, *extra_args]


def boot(
    image: Path | Drive,
    extra_disks: Sequence[Path | Drive] = (),
    *,
    timeout: float = 600.0,
    serial_log: Path | None = None,
    firmware: Firmware = "bios",
    interface: Interface = "virtio",
    memory_mib: int = 2048,
    cpus: int | None = None,
    ovmf_vars: Path | None = None,
    extra_args: Sequence[str] = (),
) -> BootResult:
    """Boot ``image`` with ``extra_disks`` under qemu (TCG) until the guest powers off.

    ``cpus`` vCPUs, by default ``default_cpus()``: TCG runs each vCPU on a host thread, and a
    vCPU starved of host CPU has stalled guests (NVMe queues in a soft lockup). The boots
    of a recovered NVMe target always ask for one.

    The serial console goes to ``serial_log`` (default: next to the image). qemu is
    killed when ``timeout`` passes or anything goes wrong; the result says which
    (``BootResult.check()`` turns a failure into an exception).
    """
    require_tools("qemu-system-x86_64")
    disks = [d if isinstance(d, Drive) else Drive(Path(d)) for d in (image, *extra_disks)]
    for disk in disks:
        if not disk.path.exists():
            raise HarnessError(f"no such disk image: {disk.path}")
    argv = qemu_command(
        disks,
        firmware=firmware,
        interface=interface,
        memory_mib=memory_mib,
        cpus=default_cpus() if cpus is None else cpus,
        ovmf_vars=ovmf_vars,
        extra_args=extra_args,
    )
    log_path = serial_log or disks[0].path.with_name(disks[0].path.name + ".serial.log")
    log.debug("+ %s", " ".join(argv))
    started = time.monotonic()
    timed_out = False
    with log_path.open("wb") as sink:
        proc = spawn_qemu(argv, stdin=subprocess.DEVNULL)
        assert proc.stdout is not None
        pump = _SerialPump(proc.stdout, sink, started)
        pump.start()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            log.warning("guest timed out after %.0f s; killing qemu", timeout)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            pump.join(timeout=10)
            proc.stdout.close()
    return BootResult(
        serial_log=log_path,
        returncode=None if timed_out else proc.returncode,
        timed_out=timed_out,
        seconds=round(time.monotonic() - started, 1),
        begin_at=pump.begin_at,
        exit_at=pump.exit_at,
        exit_status=pump.exit_status,
    )


@dataclasses.dataclass(frozen=True)
class GuestRun:
    """A script run inside a guest: the boot, and what came back on the exchange disk."""

    boot: BootResult
    exchange: Path

    @property
    def exit_status(self) -> int | None:
        status = self.exchange / "exit-status"
        if status.exists():
            return int(status.read_text().strip())
        return self.boot.exit_status

    @property
    def output(self) -> str:
        """What the script printed (stdout and stderr), without kernel console noise."""
        out = self.exchange / "output.log"
        return out.read_text(errors="replace") if out.exists() else ""

    def check(self) -> GuestRun:
        if self.boot.timed_out or self.exit_status != 0:
            self.boot.check()
            raise GuestError(f"guest script exited {self.exit_status}:\n{_tail(self.output, 40)}")
        return self


def run_in_guest(
    script: str,
    *,
    image: Path | Drive,
    workdir: Path,
    files: Mapping[str, ExchangeFile] | None = None,
    extra_disks: Sequence[Path | Drive] = (),
    timeout: float = 900.0,
    exchange_size: int = 256 * MiB,
    firmware: Firmware = "bios",
    interface: Interface = "virtio",
    extra_args: Sequence[str] = (),
) -> GuestRun:
    """Run ``script`` (sh, or any ``#!``) inside a guest booted from ``image``.

    The script and ``files`` travel on an exchange disk attached after ``extra_disks``
    (so those are vdb, vdc, ... in order). The script starts in the exchange directory,
    ``$RESURGO_EXCHANGE``; whatever it leaves there is copied back to
    ``workdir/exchange`` with ``output.log`` (its stdout+stderr) and ``exit-status``.
    Pass an ``overlay``/``guest_disk`` as ``image``, not the cached base.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    xchg = make_exchange_disk(
        workdir / "exchange.img", {**(files or {}), "run.sh": script}, size=exchange_size
    )
    disks = [*extra_disks, Drive(xchg, serial="resurgo-xchg")]
    result = boot(
        image,
        disks,
        timeout=timeout,
        serial_log=workdir / "serial.log",
        firmware=firmware,
        interface=interface,
        extra_args=extra_args,
    )
    exchange = workdir / "exchange"
    if exchange.exists():
        shutil.rmtree(exchange)
    read_exchange(xchg, exchange)
    return GuestRun(boot=result, exchange=exchange)
