"""The kernel of the rescue image, its modules and their firmware.

From the running system by default; from another tree with ``kernel_root`` (a machine
whose running kernel has no modules on disk, or the tree of the machine to rescue).
"""

from __future__ import annotations

import logging
import os
import platform
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from resurgo import run
from resurgo.errors import PreconditionFailed
from resurgo.model import Description, DriverClass
from resurgo.probe import hardware, rootfs
from resurgo.rescue import contents

log = logging.getLogger("resurgo.rescue")

FIRMWARE_DIRS = ("/lib/firmware/updates", "/lib/firmware")
_FIRMWARE_SUFFIXES = ("", ".xz", ".zst")


@dataclass(frozen=True)
class Kernel:
    root: Path
    version: str
    image: str  # path inside root
    modules_dir: str  # path inside root, resolved (/usr/lib/modules/VERSION)

    @property
    def host_image(self) -> Path:
        return rootfs.host_path(self.root, self.image)

    @property
    def host_modules_dir(self) -> Path:
        return rootfs.host_path(self.root, self.modules_dir)


def _version_key(version: str) -> list[tuple[int, str]]:
    return [(int(p), "") if p.isdigit() else (-1, p) for p in re.split(r"[.-]", version)]


def kernel_images(root: Path) -> dict[str, str]:
    """version -> kernel image (inside root) of every kernel whose modules are there."""
    found: dict[str, str] = {}
    boot = rootfs.host_path(root, "/boot")
    for name in sorted(os.listdir(boot)) if boot.is_dir() else []:
        if name.startswith("vmlinuz-"):
            found.setdefault(name.removeprefix("vmlinuz-"), f"/boot/{name}")
    modules = rootfs.resolve(root, "/lib/modules")
    if modules is None:
        return {}
    mods_host = rootfs.host_path(root, modules)
    for version in sorted(os.listdir(mods_host)) if mods_host.is_dir() else []:
        # Fedora, Arch: the image sits beside the modules.
        if (mods_host / version / "vmlinuz").is_file():
            found.setdefault(version, f"{modules}/{version}/vmlinuz")
    return {v: img for v, img in found.items() if (mods_host / v / "modules.dep").is_file()}


def find_kernel(root: Path, version: str | None = None) -> Kernel:
    """The kernel to boot: ``version``, else the running one if root has it, else the
    newest in root."""
    images = kernel_images(root)
    if version is None:
        running = platform.release()
        if running in images and rootfs.is_running_root(root):
            version = running
        elif images:
            version = max(images, key=_version_key)
    where = "the running system" if rootfs.is_running_root(root) else str(root)
    if version is None or version not in images:
        wanted = f"no kernel {version}" if version else "no kernel"
        raise PreconditionFailed(
            f"{where} has {wanted} with its modules (/boot/vmlinuz-VERSION and "
            "/lib/modules/VERSION/modules.dep)",
            "install the distribution's kernel package (apt-get install linux-image-amd64), "
            "or take the kernel from another tree: --kernel-root DIR",
        )
    modules_dir = rootfs.resolve(root, f"/lib/modules/{version}")
    assert modules_dir is not None
    return Kernel(root, version, images[version], modules_dir)


def machine_modules(sysfs: Path, modules: hardware.KernelModules, warnings: list[str]) -> list[str]:
    """Modules of this machine's storage and network controllers (as the probe sees them)."""
    out: list[str] = []
    for d in hardware.probe_drivers(sysfs=sysfs, modules=modules, warnings=warnings):
        if d.device_class in (DriverClass.STORAGE, DriverClass.NETWORK) and d.module:
            out.append(d.module)
    return out


def description_modules(desc: Description | None) -> list[str]:
    """Modules the described machine used for its controllers, filesystems and volumes."""
    if desc is None:
        return []
    names = [
        d.module
        for d in desc.drivers
        if d.module and d.device_class in (DriverClass.STORAGE, DriverClass.NETWORK)
    ]
    names += [m.name for m in desc.modules]
    return names


def module_files(kernel: Kernel) -> dict[str, Path]:
    """name -> host path of every module of the kernel (from its modules.dep)."""
    try:
        text = (kernel.host_modules_dir / "modules.dep").read_text()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        path, sep, _ = line.partition(":")
        if sep:
            out[hardware.module_name(path.strip())] = kernel.host_modules_dir / path.strip()
    return out


def firmware_names(kernel: Kernel, modules: Sequence[str]) -> list[str]:
    """Firmware files the modules say they may load (modinfo -F firmware on their files:
    the tree's own symlinks may point anywhere on this host)."""
    files = module_files(kernel)
    paths = [str(files[m]) for m in modules if m in files]
    if not paths or run.which("modinfo") is None:
        return []
    res = run.run(["modinfo", "-F", "firmware", *paths], check=False)
    return sorted({line.strip() for line in res.stdout.splitlines() if line.strip()})


def firmware_files(root: Path, names: Iterable[str]) -> list[tuple[str, Path]]:
    """(path in the image, host path) of the firmware files present in root."""
    out: list[tuple[str, Path]] = []
    for name in names:
        for d in FIRMWARE_DIRS:
            base = rootfs.resolve(root, d)
            if base is None:
                continue
            hit = None
            for suffix in _FIRMWARE_SUFFIXES:
                real = rootfs.resolve(root, f"{base}/{name}{suffix}")
                if real is not None and rootfs.host_path(root, real).is_file():
                    hit = (f"{base}/{name}{suffix}", rootfs.host_path(root, real))
                    break
            if hit:
                out.append(hit)
                break
    return out


@dataclass(frozen=True)
class ModulePlan:
    choice: contents.ModuleChoice
    present: tuple[str, ...]  # of the machine's own controllers (their firmware goes in)


def plan_modules(
    kernel: Kernel,
    index: hardware.KernelModules,
    *,
    description: Description | None,
    extra: Sequence[str],
    sysfs: Path,
    warnings: list[str],
) -> ModulePlan:
    present = machine_modules(sysfs, index, warnings) + description_modules(description)
    wanted = [*contents.COMMON_MODULES, *present, *extra]
    choice = contents.choose_modules(wanted, index.deps, index.builtin)
    unknown_extra = [m for m in extra if m.replace("-", "_") in choice.unknown]
    if unknown_extra:
        raise PreconditionFailed(
            f"kernel {kernel.version} has no module {', '.join(unknown_extra)}",
            "check the names with: modinfo -k VERSION NAME",
        )
    present_mods = tuple(m for m in dict.fromkeys(present) if m in choice.modules)
    return ModulePlan(choice, present_mods)
