"""The built-in demo: a whole save -> recover -> verify cycle on a demo system of loop disks.

1. A demo system is built on a 1 GiB disk image: GPT with an ESP (vfat), /boot (ext4),
   / (ext4), /home (xfs) and swap, mounted under a temporary root, and filled with a few
   thousand files: hard links, extended attributes, POSIX ACLs, a sparse file, a symlink,
   a fifo, files of other owners, junk in /tmp (left out of the set).
2. ``resurgo save --to DIR --root ROOT --no-rescue`` writes a recovery set.
3. The machine "dies": its filesystems are unmounted and its disk is gone.
4. ``resurgo recover --from DIR --target BLANK --yes --root MNT`` recreates the system on
   a blank disk half as large again, printing the plan, and restores the files.
5. ``resurgo verify --from DIR --root MNT`` compares every file with the set.

Everything it makes (mounts, loop devices, images) is removed at the end, also after a
failure or Ctrl-C. It needs root (loop devices, mkfs, mount): without it, it says so and
exits 2. The ESP is recreated but not mounted on kernels without vfat (this is fine: it
holds no files here).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import stat
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType

from resurgo import parttypes, run
from resurgo.cli.main import main as cli
from resurgo.errors import ExitCode, ResurgoError
from resurgo.probe import mounts

MiB = 1 << 20
DISK_SIZE = 1024 * MiB
TARGET_SIZE = DISK_SIZE * 3 // 2
FILES = 3000
HOSTNAME = "resurgo-demo"

# GPT type GUIDs.
ESP = parttypes.gpt_guid("EFI System")
LINUX = parttypes.gpt_guid("Linux filesystem")
ROOT_X86_64 = parttypes.gpt_guid("Linux root (x86-64)")
HOME = parttypes.gpt_guid("Linux home")
SWAP = parttypes.gpt_guid("Linux swap")

# (number, size in MiB, type, name); each starts where the previous ends, from 1 MiB.
PARTITIONS = (
    (1, 64, ESP, "EFI system partition"),
    (2, 128, LINUX, "boot"),
    (3, 448, ROOT_X86_64, "root"),
    (4, 320, HOME, "home"),
    (5, 32, SWAP, "swap"),
)
TOOLS = ("losetup", "sfdisk", "partx", "wipefs", "mkfs.vfat", "mkfs.ext4", "mkfs.xfs",
         "mkswap", "mount", "umount", "setfacl", "unshare", "zstd")


class Undo:
    """What the demo made, undone in reverse order; each step runs even if another fails."""

    def __init__(self) -> None:
        self.steps: list[tuple[str, Callable[[], None]]] = []

    def push(self, what: str, step: Callable[[], None]) -> None:
        self.steps.append((what, step))

    def run(self) -> list[str]:
        failed = []
        while self.steps:
            what, step = self.steps.pop()
            try:
                step()
            except Exception as e:  # keep undoing the rest
                failed.append(f"{what}: {e}")
        return failed


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def signals_ignored() -> Iterator[None]:
    """The cleanup runs to its end: another Ctrl-C must not leave loop disks behind."""
    sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    old = {s: signal.signal(s, signal.SIG_IGN) for s in sigs}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


@contextlib.contextmanager
def signals_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP end the demo like Ctrl-C does: through the cleanup."""
    old = {s: signal.signal(s, _interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def say(text: str) -> None:
    try:
        print(text, flush=True)
    except BrokenPipeError:
        # Whoever read our output went away (| head): carry on, and clean up, in silence.
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the rest of the process


def step(title: str) -> None:
    say(f"\n=== {title}")


def umount_below(path: Path) -> None:
    """Everything mounted at or below path, deepest first."""
    real = os.path.realpath(path)
    for _ in range(3):
        found = [e.mountpoint for e in mounts.read_mountinfo()
                 if e.mountpoint == real or e.mountpoint.startswith(real + "/")]
        if not found:
            return
        for mp in sorted(found, key=lambda m: m.count("/"), reverse=True):
            if run.run(["umount", mp], check=False).returncode != 0:
                run.run(["umount", "-l", mp], check=False)


def attach(image: Path, size: int, undo: Undo) -> str:
    with open(image, "wb") as f:
        f.truncate(size)
    undo.push(f"remove {image}", lambda: image.unlink(missing_ok=True))
    dev = run.output(["losetup", "--find", "--show", "--partscan", str(image)]).strip()

    def detach() -> None:
        run.run(["partx", "-d", dev], check=False)
        run.run(["losetup", "-d", dev], check=False)

    undo.push(f"detach {dev}", detach)
    return dev


def wait_for_partitions(dev: str, count: int) -> None:
    # No udevd needed: partx tells the kernel, then we wait for the nodes.
    run.run(["partx", "-d", dev], check=False)
    run.run(["partx", "-a", dev])
    deadline = time.monotonic() + 10
    while not all(os.path.exists(f"{dev}p{n}") for n in range(1, count + 1)):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the partitions of {dev} did not appear")
        time.sleep(0.05)


def build_disk(dev: str) -> None:
    lines = ["label: gpt", f"label-id: {str(uuid.uuid4()).upper()}", "unit: sectors", ""]
    start = MiB // 512
    for number, size, ptype, name in PARTITIONS:
        sectors = size * MiB // 512
        lines.append(f'{number} : start={start}, size={sectors}, type={ptype}, name="{name}"')
        start += sectors
    run.run(["sfdisk", "--quiet", "--wipe", "always", dev], input="\n".join(lines) + "\n")
    wait_for_partitions(dev, len(PARTITIONS))
    run.run(["mkfs.vfat", "-F", "32", "-n", "ESP", f"{dev}p1"])
    run.run(["mkfs.ext4", "-q", "-L", "boot", f"{dev}p2"])
    run.run(["mkfs.ext4", "-q", "-L", "root", f"{dev}p3"])
    run.run(["mkfs.xfs", "-q", "-f", "-L", "home", f"{dev}p4"])
    run.run(["mkswap", "-L", "swap", f"{dev}p5"])


def mount(dev: str, target: Path, undo: Undo) -> bool:
    target.mkdir(parents=True, exist_ok=True)
    if run.run(["mount", dev, str(target)], check=False).returncode != 0:
        return False
    undo.push(f"umount {target}", lambda: umount_below(target))
    return True


def uuid_of(dev: str) -> str:
    for line in run.output(["blkid", "-p", "-o", "export", dev]).splitlines():
        if line.startswith("UUID="):
            return line.removeprefix("UUID=")
    return ""


def write(path: Path, data: bytes, mode: int = 0o644, owner: tuple[int, int] = (0, 0)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chown(path, *owner)
    os.chmod(path, mode)


def fill(root: Path, dev: str, esp_mounted: bool) -> int:
    """The demo system's files; returns how many entries were made."""
    for d in ("proc", "sys", "dev", "run", "tmp", "var/log", "usr/share/doc"):
        (root / d).mkdir(parents=True, exist_ok=True)
    os.chmod(root / "tmp", 0o1777)
    fstab = "".join(
        f"UUID={uuid_of(f'{dev}p{n}')} {mp} {fs} defaults 0 {p}\n"
        for n, mp, fs, p in ((3, "/", "ext4", 1), (2, "/boot", "ext4", 2),
                             (4, "/home", "xfs", 2))
    ) + f"UUID={uuid_of(f'{dev}p5')} none swap sw 0 0\n"
    if esp_mounted:
        fstab += f"UUID={uuid_of(f'{dev}p1')} /boot/efi vfat umask=0077 0 1\n"
    write(root / "etc/fstab", fstab.encode())
    write(root / "etc/hostname", f"{HOSTNAME}\n".encode())
    write(root / "etc/os-release", b'ID=debian\nVERSION_ID="12"\nPRETTY_NAME="resurgo demo"\n')
    write(root / "etc/shadow", b"root:*:19000:0:99999:7:::\n", mode=0o640, owner=(0, 42))
    write(root / "boot/grub/fonts/unicode.pf2", os.urandom(2 * MiB))
    write(root / "boot/grub/grubenv", b"# GRUB Environment Block\n" + b"#" * 998)
    rnd = os.urandom(FILES * 600)
    for i in range(FILES):
        write(root / f"usr/share/demo/{i % 10}/file{i:04d}", rnd[i * 200:i * 200 + (i % 600)])
    # hard links, in one directory and across directories
    os.link(root / "usr/share/demo/0/file0000", root / "usr/share/demo/hardlink")
    os.link(root / "usr/share/demo/1/file0001", root / "usr/share/doc/hardlink")
    # extended attributes and POSIX ACLs
    os.setxattr(root / "usr/share/demo/2/file0002", "user.origin", b"resurgo demo")
    os.setxattr(root / "usr/share/doc", "user.kind", b"documentation")
    run.run(["setfacl", "-m", "u:1000:rw,g:100:r", str(root / "usr/share/demo/3/file0003")])
    run.run(["setfacl", "-d", "-m", "u:1000:rwx", str(root / "usr/share/demo/4")])
    # a sparse file: 256 MiB long, 2 MiB of data
    (root / "var/lib").mkdir(parents=True, exist_ok=True)
    with open(root / "var/lib/sparse.img", "wb") as f:
        f.truncate(256 * MiB)
        f.seek(10 * MiB)
        f.write(os.urandom(MiB))
        f.seek(200 * MiB)
        f.write(os.urandom(MiB))
    os.symlink("../share/demo", root / "usr/share/doc/demo-link")
    os.mkfifo(root / "run/demo.fifo", 0o600)
    os.mknod(root / "dev/null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    write(root / "tmp/junk", os.urandom(MiB))  # /tmp's contents are never saved
    for user, uid in (("alice", 1000), ("bob", 1001)):
        home = root / "home" / user
        home.mkdir(parents=True)
        os.chown(home, uid, uid)
        os.chmod(home, 0o700)
        for i in range(50):
            write(home / f"notes/{i:02d}.txt", f"{user}'s note {i}\n".encode() * (i + 1),
                  mode=0o600, owner=(uid, uid))
    return FILES + 150


def demo(work: Path, undo: Undo) -> int:
    started = time.monotonic()
    state = work / "state"
    os.environ["RESURGO_STATE_DIR"] = str(state)  # journals and records stay in the demo
    sets = work / "sets"
    sets.mkdir()
    system = work / "system"
    mnt = work / "recovered"

    step("building the demo system: GPT disk (ESP, /boot, /, /home on xfs, swap)")
    disk = attach(work / "disk.img", DISK_SIZE, undo)
    build_disk(disk)
    mount(f"{disk}p3", system, undo)
    for n, where in ((2, "boot"), (4, "home")):
        if not mount(f"{disk}p{n}", system / where, undo):
            raise ResurgoError(f"cannot mount {disk}p{n} on {system / where}")
    esp_mounted = mount(f"{disk}p1", system / "boot/efi", undo)
    if not esp_mounted:
        say("(this kernel cannot mount vfat: the ESP stays unmounted; it is still recreated)")
    entries = fill(system, disk, esp_mounted)
    say(f"{disk}: {entries} files and directories under {system}")

    # The reports of the demo's runs stay in the demo (and go with it).
    kept = ["--report-dir", str(work / "reports")]
    steps = [
        ("saving the system", ["save", "--to", str(sets), "--root", str(system),
                               "--no-rescue", *kept]),
        ("the recovery sets on the medium", ["list", str(sets)]),
    ]
    for title, argv in steps:
        step(f"{title}: resurgo {' '.join(argv)}")
        code = cli(argv)
        if code != ExitCode.OK:
            return code

    step("the machine dies: its filesystems are unmounted and its disk is gone")
    umount_below(system)
    run.run(["partx", "-d", disk], check=False)
    run.run(["losetup", "-d", disk], check=False)
    (work / "disk.img").unlink()
    target = attach(work / "new-disk.img", TARGET_SIZE, undo)
    say(f"a blank disk half as large again: {target} ({TARGET_SIZE // MiB} MiB)")
    undo.push(f"umount {mnt}", lambda: umount_below(mnt))

    steps = [
        ("recovering onto the new disk", ["recover", "--from", str(sets), "--target", target,
                                          "--yes", "--root", str(mnt), *kept]),
        ("verifying every file", ["verify", "--from", str(sets), "--root", str(mnt), *kept]),
    ]
    for title, argv in steps:
        step(f"{title}: resurgo {' '.join(argv)}")
        code = cli(argv)
        if code != ExitCode.OK:
            return code
    step(f"demo complete in {time.monotonic() - started:.0f} s: the system was saved, "
         "recreated on a larger disk and verified")
    return ExitCode.OK


def main() -> int:
    if os.geteuid() != 0:
        print("resurgo demo: needs root (it makes loop disks, filesystems and mounts): "
              "run it as root (sudo ./dev demo)", file=sys.stderr)
        return ExitCode.BAD_INPUT
    try:
        run.require(*TOOLS)
    except ResurgoError as e:
        print(f"resurgo demo: {e}", file=sys.stderr)
        return ExitCode.BAD_INPUT
    undo = Undo()
    work = Path(tempfile.mkdtemp(prefix="resurgo-demo."))
    undo.push(f"remove {work}", lambda: shutil.rmtree(work, ignore_errors=True))
    code: int = ExitCode.FAILED
    try:
        with signals_interrupt():
            code = demo(work, undo)
    except KeyboardInterrupt:
        complain("interrupted")
        code = 130
    except (ResurgoError, OSError) as e:
        complain(str(e))
    finally:
        # First the cleanup, whatever happened (even to our output); then the words.
        with signals_ignored():
            failed = undo.run()
        say("\ncleaned up: unmounted, loop disks detached, images removed")
        for f in failed:
            complain(f"cleanup: {f}")
    return code


def complain(text: str) -> None:
    with contextlib.suppress(OSError, ValueError):
        print(f"resurgo demo: {text}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
