"""The rescue a rehearsal boots: the set's own image (or one built as `resurgo rescue`
builds it), its kernel and initramfs booted directly by qemu with the default menu
entry's command line and the rehearsal's words added; and whether KVM can run it.

The image's layout is rescue.iso's (grub-mkrescue): /boot/vmlinuz, /boot/initrd.img and
/boot/grub/grub.cfg, whose first entry is the default one (``set default=0``). xorriso
reads the three files out of the ISO without mounting it.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from resurgo import run
from resurgo.errors import BadInput, Damaged
from resurgo.rehearse.console import Guest
from resurgo.rehearse.machine import Accel, DirectKernel

log = logging.getLogger("resurgo.rehearse")

KERNEL = "/boot/vmlinuz"
INITRD = "/boot/initrd.img"
GRUB_CFG = "/boot/grub/grub.cfg"
# A grub.cfg of four entries is about 2 KiB.
MAX_GRUB_CFG = 256 * 1024
MAX_ARGS = 4096
# The words the rehearsal sets itself: the image's own are dropped. And the network's:
# the rescue of a rehearsal from a directory has no network card (-nic none; the medium
# reaches it as a disk), where an image's static address or DHCP would only wait for one;
# from SFTP or S3 it has one on qemu's user network, whose addresses only DHCP gives
# (which the rescue does by default for a network medium).
OWN_WORDS = ("console=", "resurgo.recover=", "resurgo.after=", "resurgo.set=",
             "resurgo.from=", "resurgo.rehearse=", "resurgo.wait=", "resurgo.keys=", "ip=",
             "nameserver=")
#: The rescue image's configuration, as grub-mkrescue's tree holds it (a few KiB).
CONFIG = "/resurgo/rescue.json"
MAX_CONFIG = 1 << 20
# Under emulation, page-table isolation flushes the emulated TLB on each system call
# (300 fork+exec in a guest on an idle host: 6.8 s with it, 6.25 s without, about 8 %):
# a rehearsal boots a throw-away machine.
FAST_TCG = "mitigations=off"
# How long a KVM guest gets to show its kernel started.
KVM_PROBE_SECONDS = 20.0
# What a kernel prints once it runs (before that, a stuck boot loader prints nothing more).
_KERNEL_STARTED = re.compile(r"Linux version \d|Command line: ")
_ESCAPE = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|[@-~])")


@dataclass(frozen=True)
class RescueFiles:
    kernel: Path
    initrd: Path
    # The default entry's kernel command line, as the image has it.
    default_args: tuple[str, ...]


def extract(iso: Path, out: Path) -> RescueFiles:
    """The kernel, initramfs and boot menu of the image, read out into ``out``."""
    run.require("xorriso")
    out.mkdir(mode=0o700, exist_ok=True)
    kernel, initrd, cfg = out / "vmlinuz", out / "initrd.img", out / "grub.cfg"
    run.run(["xorriso", "-osirrox", "on", "-indev", str(iso),
             "-extract", KERNEL, str(kernel), "-extract", INITRD, str(initrd),
             "-extract", GRUB_CFG, str(cfg)], timeout=600)
    for path in (kernel, initrd, cfg):
        if path.is_symlink() or not path.is_file():
            raise Damaged(f"the rescue image {iso} has no {path.name} where its layout "
                          "puts it", "save the set again, or rehearse with another")
    if cfg.stat().st_size > MAX_GRUB_CFG:
        raise Damaged(f"the boot menu of the rescue image {iso} is larger than "
                      f"{MAX_GRUB_CFG} bytes: not one resurgo wrote")
    return RescueFiles(kernel, initrd, default_args(cfg.read_text(errors="replace")))


def default_args(grub_cfg: str) -> tuple[str, ...]:
    """The kernel command line of the menu's default entry (the first, or the one
    ``set default=N`` names), without the kernel's path."""
    wanted = 0
    if m := re.search(r"(?m)^\s*set default=(\d{1,3})\s*$", grub_cfg):
        wanted = int(m.group(1))
    entries: list[tuple[str, ...]] = []
    inside = False
    for line in grub_cfg.splitlines():
        stripped = line.strip()
        if stripped.startswith("menuentry "):
            inside = True
        elif inside and stripped.startswith("linux "):
            try:
                words = shlex.split(stripped)[2:]
            except ValueError:
                words = []
            entries.append(tuple(words))
            inside = False
    if not entries:
        return ()
    return entries[wanted] if wanted < len(entries) else entries[0]


def command_line(default: Sequence[str], set_id: str, *, accel: Accel,
                 medium_label: str | None, wait: int = 60, from_url: str | None = None,
                 keys_label: str | None = None) -> str:
    """The rescue's kernel command line in a rehearsal: the default entry's words (the
    image's own kernel arguments among them), less those the rehearsal sets, plus a
    serial console, the unattended recovery of the set named, power off at the end,
    where the set is (the medium disk's filesystem, or a network medium's URL and the
    key disk holding its credentials), and rehearsal mode."""
    kept = [w for w in default if not w.startswith(OWN_WORDS)
            and all(c.isprintable() and not c.isspace() for c in w)]
    ours = ["console=ttyS0,115200", "resurgo.recover=auto", "resurgo.after=poweroff",
            f"resurgo.set={set_id}", "resurgo.rehearse=1", f"resurgo.wait={wait}"]
    if medium_label is not None:
        ours.append(f"resurgo.from=LABEL={medium_label}")
    if from_url is not None:
        if any(c.isspace() or c == '"' or not c.isprintable() for c in from_url):
            raise BadInput(f"{from_url!r} cannot be a word of a kernel command line")
        ours.append(f"resurgo.from={from_url}")
    if keys_label is not None:
        ours.append(f"resurgo.keys=LABEL={keys_label}")
    if accel is Accel.TCG and FAST_TCG not in kept:
        ours.append(FAST_TCG)
    line = " ".join([*kept, *ours])
    if len(line) > MAX_ARGS:
        line = " ".join(ours)
    return line


def read_config(iso: Path, out: Path) -> bytes | None:
    """The image's rescue.json (None when it has none), read out of the ISO."""
    result = run.run(["xorriso", "-osirrox", "on", "-indev", str(iso),
                      "-extract", CONFIG, str(out)], check=False, timeout=600)
    if result.returncode != 0 or out.is_symlink() or not out.is_file():
        return None
    with open(out, "rb") as f:
        return f.read(MAX_CONFIG + 1)


def direct(files: RescueFiles, append: str) -> DirectKernel:
    return DirectKernel(files.kernel, files.initrd, append)


@dataclass(frozen=True)
class KvmDecision:
    accel: Accel
    reason: str


def kvm_device_usable(path: str = "/dev/kvm") -> bool:
    return os.path.exists(path) and os.access(path, os.R_OK | os.W_OK)


def kvm_decision(device_usable: bool, probe_console: str | None,
                 probe_timed_out: bool) -> KvmDecision:
    """KVM when /dev/kvm is usable and a short boot under it got the kernel running;
    software emulation (TCG) otherwise, saying why."""
    if not device_usable:
        return KvmDecision(Accel.TCG, "software emulation (TCG): /dev/kvm is not usable "
                                      "here")
    if probe_console is not None and _KERNEL_STARTED.search(probe_console):
        return KvmDecision(Accel.KVM, "KVM (a probe boot under it started the kernel)")
    how = ("hung" if probe_timed_out else "ended") + " before the kernel started"
    # The guest's last words: not qemu's own (its "terminating on signal" when stopped),
    # without the firmware's terminal escapes.
    text = _ESCAPE.sub("", probe_console or "")
    last = [ln.strip() for ln in text.splitlines()
            if ln.strip() and not ln.startswith("qemu-system")]
    seen = f" at {last[-1][:120]!r}" if last else ""
    return KvmDecision(Accel.TCG, f"software emulation (TCG): a probe boot under KVM {how}"
                                  f"{seen}")


def probe_kvm(qemu: str, kernel: Path, log_path: Path,
              seconds: float = KVM_PROBE_SECONDS) -> KvmDecision:
    """Boot ``kernel`` alone under KVM for at most ``seconds``: no disk, no initramfs
    (the kernel panics at once, and panic=-1 with -no-reboot ends qemu)."""
    if not kvm_device_usable():
        return kvm_decision(False, None, False)
    argv = [qemu, "-accel", "kvm", "-m", "256", "-smp", "1", "-nographic", "-no-reboot",
            "-nic", "none", "-kernel", str(kernel), "-append",
            "console=ttyS0,115200 panic=-1 loglevel=7"]
    with Guest(argv, log_path) as guest:
        ended = guest.wait(seconds)
    text = log_path.read_text(errors="replace") if log_path.exists() else ""
    return kvm_decision(True, text, not ended)
