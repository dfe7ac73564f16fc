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
    with the test runner unit installed; ``base_image`` caches one such image.
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

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
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

_GPT_BIOS_BOOT: Final = "21686148-6E69-6F6D-6E65-6564454649"
_GPT_ESP: Final = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
_GPT_ROOT_X86_64: Final = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"

_PATH: Final = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_STAMP: Final = "COMPLETE.json"

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


def _key(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
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
    key = _key(suite, "minbase", sorted(packages))
    final = cache_dir / f"debian-{suite}-{key}"
    if (final / _STAMP).is_file():
        return final / "root"
    require_tools("debootstrap")
    with _locked(cache_dir / f"{final.name}.lock"):
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
        for attempt in range(10):
            if run_cmd(["losetup", "--detach", dev], check=False).returncode == 0:
                break
            time.sleep(0.2 * (attempt + 1))
        else:
            log.error("could not detach %s", dev)


def partition_nodes(loop: Path, count: int) -> list[Path]:
    """Tell the kernel about ``loop``'s partitions (``partx``) and wait for their nodes."""
    if run_cmd(["partx", "--add", loop], check=False).returncode != 0:
        run_cmd(["partx", "--update", loop])
    nodes = [Path(f"{loop}p{n}") for n in range(1, count + 1)]
    _wait_for_nodes(nodes)
    return nodes


@contextlib.contextmanager
def mounted_image(image: Path, *, read_only: bool = True) -> Iterator[Path]:
    """Loop-mount a whole-disk file system image (an exchange disk) on a temporary dir."""
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="resurgo-mnt-")))
        dev = stack.enter_context(loop_device(image, read_only=read_only))
        options = ["ro"] if read_only else []
        yield stack.enter_context(mounted(dev, tmp / "mnt", options=options))
