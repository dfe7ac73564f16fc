"""The drivers this machine's disks need, and whether the restored initramfs has them.

The rescue runs on the target hardware, so its /sys shows the controllers the restored
system will boot from. For each target disk, every driver between the disk and the root
of the device tree is needed (nvme; virtio_blk + virtio_pci; sd_mod + ahci; sd_mod +
usb_storage + xhci_pci), with the dependencies the restored kernel's modules.dep names.
The restored initramfs is listed (lsinitramfs for initramfs-tools, lsinitrd for dracut)
and only a gap makes a rebuild worth its minutes: the modules are named in the
generator's configuration (initramfs-tools' modules file, a dracut.conf.d snippet) and
the image is regenerated for that kernel alone, in a chroot. So is an image that carries
a copy of a file finalize rewrote (``carried_in_image``): a root on LUKS or md is
unlocked and assembled by the initramfs from its own crypttab and mdadm.conf, before
the restored ones are there to read.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from resurgo.finalize import lines
from resurgo.finalize.model import LineChange, Rewrite
from resurgo.finalize.tree import RootTree
from resurgo.model import Driver, DriverClass, initramfs_paths
from resurgo.probe.hardware import KernelModules, module_name
from resurgo.probe.sysfs import link_name


class Generator(StrEnum):
    INITRAMFS_TOOLS = "initramfs-tools"
    DRACUT = "dracut"


# ---------------------------------------------------------------------------------------
# what the hardware needs


def device_chain_modules(kname: str, sysfs: Path = Path("/sys")) -> list[tuple[str, str]]:
    """(module, device) of every driver from block device kname up to the root of the
    device tree, nearest first. A built-in driver has no module link: its driver name
    is given in the kernel's module spelling (the restored kernel decides whether it is
    built in there too)."""
    block = sysfs / "class" / "block" / kname
    if not os.path.lexists(block):
        return []
    real = Path(os.path.realpath(block))
    if (real / "partition").exists():
        real = real.parent
    if not (real / "device").exists():
        return []
    top = os.path.realpath(sysfs / "devices")
    cur = Path(os.path.realpath(real / "device"))
    out: list[tuple[str, str]] = []
    while str(cur).startswith(top + "/"):
        driver = link_name(cur / "driver")
        if driver is not None:
            module = link_name(cur / "driver" / "module") or driver
            out.append((module_name(module), cur.name))
        cur = cur.parent
    return out


def needed_modules(knames: Iterable[str], sysfs: Path = Path("/sys")) -> dict[str, str]:
    """Module -> why, for the drivers of the given disks (kernel names on this machine)."""
    out: dict[str, str] = {}
    for kname in knames:
        for module, device in device_chain_modules(kname, sysfs):
            out.setdefault(module, f"{kname}: driver of {device}")
    return out


@dataclass(frozen=True)
class Gap:
    """What one kernel's initramfs lacks of what the disks need."""

    # Module -> why; dependencies included, built-ins left out.
    needed: dict[str, str]
    present: tuple[str, ...]
    missing: tuple[str, ...]
    builtin: tuple[str, ...]
    # Modules the rescue uses that this kernel does not have at all.
    unknown: tuple[str, ...]
    # The drivers to name in the generator's configuration: those of the devices whose
    # module or a dependency is missing (the generator adds the dependencies itself).
    add: tuple[str, ...] = ()


def decide_gap(needed: Mapping[str, str], in_image: Iterable[str], kernel: KernelModules) -> Gap:
    """Which needed modules (with their dependencies in this kernel) the image lacks.

    A module built into the kernel needs nothing; one the kernel does not know is
    reported (it cannot be added) rather than counted missing.
    """
    have = set(in_image)
    full: dict[str, str] = {}
    builtin: list[str] = []
    unknown: list[str] = []
    for module, why in needed.items():
        if module in kernel.builtin:
            builtin.append(module)
            continue
        if kernel.found and module not in kernel.deps:
            unknown.append(module)
            continue
        full.setdefault(module, why)
        for dep in kernel.dependencies(module):
            if dep not in kernel.builtin:
                full.setdefault(dep, f"needed by {module}")
    present = tuple(m for m in full if m in have)
    missing = tuple(m for m in full if m not in have)
    add = tuple(
        m
        for m in needed
        if m in full and (m not in have or any(d in missing for d in kernel.dependencies(m)))
    )
    return Gap(full, present, missing, tuple(builtin), tuple(unknown), add)


# ---------------------------------------------------------------------------------------
# what the image has

_KO = re.compile(r"(?:^|[\s/])([^\s/]+\.ko(?:\.(?:xz|zst|gz|bz2|lz4))?)(?:\s|$)")


def parse_image_listing(text: str) -> frozenset[str]:
    """Module names in an initramfs listing: lsinitramfs prints one path per line,
    lsinitrd an ls -l style line ending in the path."""
    out = set()
    for line in text.splitlines():
        m = _KO.search(line)
        if m:
            out.add(module_name(m.group(1)))
    return frozenset(out)


# ---------------------------------------------------------------------------------------
# the generator's configuration


def in_tree(root: Path, inside: str) -> Path | None:
    """Where the host reaches ``inside`` of the restored tree at root (RootTree.host: links
    followed as that system will follow them, never out of it; a restored /boot or
    /lib/modules may be a link its set's author made); None when it is not there."""
    return RootTree(root).host(inside)


def regular_in_tree(root: Path, inside: str) -> Path | None:
    """The same, for a regular file only: an initramfs "image" that is a FIFO or a device
    node (a crafted set's) is never handed to a lister, which would block on it or read a
    disk."""
    found = in_tree(root, inside)
    if found is None:
        return None
    try:
        return found if stat.S_ISREG(os.lstat(found).st_mode) else None
    except OSError:
        return None


def detect_generator(root: Path) -> Generator | None:
    """Which initramfs generator the restored system uses (initramfs-tools wins a tie:
    Debian installs dracut's tools only beside it, e.g. dracut-core)."""

    def has(*paths: str) -> bool:
        return any(in_tree(root, p) is not None for p in paths)

    if has("usr/sbin/update-initramfs", "sbin/update-initramfs") and has("etc/initramfs-tools"):
        return Generator.INITRAMFS_TOOLS
    if has("usr/bin/dracut", "usr/sbin/dracut", "sbin/dracut"):
        return Generator.DRACUT
    return None


def generator_of_config(paths: Iterable[str]) -> Generator | None:
    """Which initramfs generator a saved system used, from the paths of the configuration
    files its description carries (initramfs-tools wins a tie, as in detect_generator)."""
    found = list(paths)
    if any(p.startswith("/etc/initramfs-tools/") for p in found):
        return Generator.INITRAMFS_TOOLS
    if any(p == "/etc/dracut.conf" or p.startswith("/etc/dracut.conf.d/") for p in found):
        return Generator.DRACUT
    return None


def saved_disk_modules(saved: Iterable[Driver], disk_paths: Iterable[str]) -> frozenset[str]:
    """The modules the saved system's disks were reached through, as far as its
    description tells: its storage controllers' drivers with their dependencies, and the
    SCSI disk driver when it had SCSI disks (sd_mod binds to no controller)."""
    out: set[str] = set()
    for d in saved:
        if d.device_class == DriverClass.STORAGE and d.module:
            out.add(module_name(d.module))
            out.update(module_name(m) for m in d.dependencies)
    if any(re.fullmatch(r"/dev/sd[a-z]+", p) for p in disk_paths):
        out.add("sd_mod")
    return frozenset(out)


def image_path(root: Path, generator: Generator, kernel: str) -> str:
    """The initramfs of kernel inside the restored system, as it names it."""
    candidates = list(initramfs_paths(kernel))
    if generator == Generator.DRACUT:
        candidates.reverse()
    for c in candidates:
        if in_tree(root, c) is not None:
            return c
    return candidates[0]


_MODULES_MODE = re.compile(r"^\s*MODULES=([\"']?)(\w+)\1")


def initramfs_modules_mode(texts: Sequence[str]) -> str:
    """MODULES= of initramfs.conf then conf.d/* in order (the last one wins)."""
    mode = "most"
    for text in texts:
        for line in text.splitlines():
            m = _MODULES_MODE.match(line)
            if m:
                mode = m.group(2)
    return mode


def add_modules(text: str, modules: Sequence[str], comment: str) -> Rewrite:
    """/etc/initramfs-tools/modules with the modules it does not list yet appended, after
    one comment line saying why; the lines there stay byte-identical."""
    listed = set()
    for line in text.splitlines():
        if not lines.is_comment(line):
            listed.add(module_name(line.split()[0]))
    todo = [m for m in modules if m not in listed]
    if not todo:
        return Rewrite(text)
    start = text if not text or text.endswith("\n") else text + "\n"
    n = len(text.splitlines())
    added = [f"# {comment}", *todo]
    changes = tuple(
        LineChange(n + i + 1, None, line, "added: the disks of this machine need it")
        for i, line in enumerate(added)
    )
    return Rewrite(start + "\n".join(added) + "\n", changes)


_ADD_DRIVERS = re.compile(r"^\s*add_drivers\+?=\s*([\"'])(.*?)\1", re.MULTILINE)


def dracut_conf(modules: Sequence[str], comment: str, old: str | None = None) -> str | None:
    """A dracut.conf.d snippet that puts the drivers in every image (hostonly or not),
    keeping those an earlier one named; None when the earlier one names them all."""
    before = [m for found in _ADD_DRIVERS.findall(old or "") for m in found[1].split()]
    if old is not None and all(m in before for m in modules):
        return None
    names = list(dict.fromkeys([*before, *modules]))
    return f'# {comment}\nadd_drivers+=" {" ".join(names)} "\n'


_CARRIED_BY_BOTH = ("/etc/crypttab", "/etc/mdadm/mdadm.conf", "/etc/mdadm.conf")


def carried_in_image(generator: Generator, path: str) -> bool:
    """Whether the initramfs ``generator`` makes carries a copy of ``path`` (or what it
    makes of it: initramfs-tools' conf.d/cryptroot from crypttab, conf.d/resume; dracut's
    host-only crypttab, mdadm.conf and fstab.sys; both LVM's devices file)."""
    if path in _CARRIED_BY_BOTH or path.startswith("/etc/lvm/"):
        # /etc/lvm: initramfs-tools copies it whole, dracut the devices file with lvm.conf
        return True
    if generator == Generator.INITRAMFS_TOOLS:
        return path == "/etc/initramfs-tools/initramfs.conf" or path.startswith(
            "/etc/initramfs-tools/conf.d/"
        )
    return path == "/etc/fstab"


def stale_why(kernel: str, stale: Sequence[str]) -> str:
    """Why an initramfs that carries copies of rewritten files is rebuilt."""
    return (f"the initramfs of {kernel} carries a copy of {', '.join(stale)}, which name "
            "the devices anew: it unlocks, assembles and resumes by its copy")


def rebuild_argv(generator: Generator, kernel: str, image_exists: bool) -> list[str]:
    """The command (to run in the chroot) that regenerates one kernel's initramfs."""
    if generator == Generator.DRACUT:
        return ["dracut", "--force", "--kver", kernel]
    return ["update-initramfs", "-u" if image_exists else "-c", "-k", kernel]


def lister_argv(generator: Generator, image: str) -> list[str]:
    return ["lsinitrd", image] if generator == Generator.DRACUT else ["lsinitramfs", image]


def installed_kernels(root: Path) -> list[str]:
    """Kernels installed in the restored tree: a vmlinuz and its /lib/modules."""
    out = []
    boot = in_tree(root, "/boot")
    try:
        names = os.listdir(boot) if boot is not None else []
    except OSError:
        return []
    for n in names:
        for prefix in ("vmlinuz-", "vmlinux-"):
            if n.startswith(prefix):
                version = n.removeprefix(prefix)
                if any((d := in_tree(root, f"{top}/{version}")) is not None and d.is_dir()
                       for top in ("/lib/modules", "/usr/lib/modules")):
                    out.append(version)
    return sorted(set(out), key=kernel_sort_key)


def kernel_sort_key(version: str) -> tuple[tuple[int, int | str], ...]:
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"[.\-+~]", version) if p)


def kernels_to_check(installed: Sequence[str], saved: str) -> list[str]:
    """The kernel GRUB boots by default (the newest) and the one the system ran when it
    was saved, when installed: the others keep their images as they are."""
    if not installed:
        return []
    out = [installed[-1]]
    if saved in installed and saved not in out:
        out.append(saved)
    return out
