"""The finalize steps in order, each recorded: storage config, network, drivers, bootloader.

Finalizer holds what the steps share (the tree, the identities, the lazily opened
chroot) and what the report collects. A failing command ends its step with an error in
the report; the later steps still run, and the record of the recovery is written
whatever happened.
"""

from __future__ import annotations

import contextlib
import datetime
import glob
import os
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from resurgo import run
from resurgo.errors import CommandFailed, ResurgoError, ToolMissing
from resurgo.finalize import (
    bootloader,
    configs,
    drivers,
    identity,
    imagecopies,
    lvmdevices,
    netmap,
)
from resurgo.finalize import report as render
from resurgo.finalize.chroot import Chroot
from resurgo.finalize.cmdline import grub_cfg_boots, grub_cfg_roots
from resurgo.finalize.identity import Identities
from resurgo.finalize.model import (
    CommandRecord,
    FileChange,
    FinalizeOptions,
    FinalizeReport,
    InitramfsCheck,
    LineChange,
    NicPair,
    Rewrite,
    StepStatus,
)
from resurgo.finalize.tree import RootTree, Tree
from resurgo.model import BootloaderKind, Description, DriverClass, initramfs_paths
from resurgo.plan.model import Plan
from resurgo.probe.hardware import KernelModules

MODULES_FILE = "/etc/initramfs-tools/modules"
# What grub-mkconfig reads besides the disks and /boot: a change there is a new grub.cfg.
GRUB_INPUTS = ("/etc/default/grub", "/etc/grub.d/")
DRACUT_SNIPPET = "/etc/dracut.conf.d/resurgo-drivers.conf"


@dataclass(frozen=True)
class NetworkInputs:
    files: list[tuple[str, str, configs.NetFormat | None]]
    saved: list[netmap.Nic]
    actual: list[netmap.Nic]
    # The restored system names its NICs eth0, eth1, ... (net.ifnames=0).
    kernel_names: bool


class Finalizer:
    def __init__(
        self,
        desc: Description,
        plan: Plan,
        tree: Tree,
        root: Path | None,
        options: FinalizeOptions,
        ids: Identities,
        announce: Callable[[str], None] | None = None,
    ) -> None:
        self.desc = desc
        self.plan = plan
        self.tree = tree
        # None: a preview from the description's copy of the configuration.
        self.root = root
        self.options = options
        self.dry_run = options.dry_run or root is None
        self.ids = ids
        self.files: list[FileChange] = []
        self.commands: list[CommandRecord] = []
        self.nics: list[NicPair] = []
        self.initramfs: list[InitramfsCheck] = []
        # Initramfs images a rebuild made (or, in a dry run, would make) where the restored
        # tree had none, by kernel.
        self.images_made: dict[str, str] = {}
        # Kernels whose left-out image could not be made: not tried again by the drivers step.
        self.images_unmade: set[str] = set()
        self.notes: list[str] = []
        self.warnings: list[str] = []
        self.errors: list[str] = []
        self.timings: list[tuple[str, float]] = []
        # The text of each file written, as it was before (as restored).
        self.before: dict[str, str] = {}
        self._chroot: Chroot | None = None
        self.started = time.monotonic()
        self.stamp = datetime.datetime.now(datetime.UTC)
        # Told each command as it starts: an initramfs rebuild or grub-mkconfig takes
        # minutes on a slow machine, and the report comes only at the end.
        self.announce = announce or (lambda _line: None)

    # ------------------------------------------------------------------ bookkeeping

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        except ResurgoError as e:
            self.errors.append(f"{name}: {e}")
        finally:
            self.timings.append((name, time.monotonic() - started))

    def file(self, path: str, rw: Rewrite, *, created: bool = False) -> None:
        self.warnings.extend(f"{path}: {w}" for w in rw.warnings)
        if not rw.changed:
            return
        written = False
        if not self.dry_run and isinstance(self.tree, RootTree):
            self.before.setdefault(path, self.tree.read(path) or "")
            self.tree.write(path, rw.text)
            written = True
        self.files.append(FileChange(path, rw.changes, written, created))

    def chroot(self) -> Chroot:
        if self._chroot is None:
            assert self.root is not None
            self._chroot = Chroot(self.root).__enter__()
        return self._chroot

    def close(self) -> None:
        if self._chroot is not None:
            self._chroot.close()
            self._chroot = None

    def command(self, argv: Sequence[str], why: str, *, in_chroot: bool = True) -> bool:
        """Run one command (or plan it, in a dry run); False when it failed."""
        if self.dry_run:
            self.commands.append(
                CommandRecord(tuple(argv), why, StepStatus.PLANNED, chroot=in_chroot)
            )
            return True
        self.announce(f"  running  {'[chroot] ' if in_chroot else ''}{' '.join(argv)}")
        started = time.monotonic()
        try:
            if in_chroot:
                self.chroot().execute(argv)
            else:
                run.run(argv)
        except CommandFailed as e:
            seconds = time.monotonic() - started
            self.commands.append(
                CommandRecord(
                    tuple(argv),
                    why,
                    StepStatus.FAILED,
                    seconds,
                    in_chroot,
                    e.stderr.strip()[-2000:],
                )
            )
            self.errors.append(f"{' '.join(argv)} failed with exit code {e.returncode}")
            return False
        self.commands.append(
            CommandRecord(tuple(argv), why, StepStatus.DONE, time.monotonic() - started, in_chroot)
        )
        return True

    def report(self, log: str | None = None) -> FinalizeReport:
        return FinalizeReport(
            root=str(self.root) if self.root is not None else "(the description's copy)",
            dry_run=self.dry_run,
            files=tuple(self.files),
            commands=tuple(self.commands),
            nics=tuple(self.nics),
            initramfs=tuple(self.initramfs),
            notes=tuple(self.notes),
            warnings=tuple(dict.fromkeys(self.warnings)),
            errors=tuple(self.errors),
            log=log,
            seconds=time.monotonic() - self.started,
            timings=tuple(self.timings),
        )

    # ------------------------------------------------------------------ storage

    def rewrite_storage(self) -> None:
        esp = None
        if self.desc.system.bootloader.kind == BootloaderKind.SYSTEMD_BOOT:
            esp, _ = bootloader.esp_location(self.desc, self.plan)
        for path, rw in configs.storage_rewrites(self.tree, self.ids, esp=esp):
            self.file(path, rw)
        self.lvm_devices()

    def lvm_devices(self) -> None:
        """The LVM devices file: the recovered PVs' entries made anew (see lvmdevices)."""
        path = lvmdevices.DEVICES_FILE
        text = self.tree.read(path)
        planned = lvmdevices.planned_pvs(self.plan)
        if text is None or not planned:
            return
        if self.dry_run:
            self.notes.append(f"{path}: the entries of the recovered PVs are made anew by LVM "
                              "on this machine (the saved ones name the old disks)")
            return
        try:
            made = lvmdevices.generate(sorted(set(planned.values())))
        except (CommandFailed, ToolMissing, subprocess.TimeoutExpired) as e:
            # A missing lvm or one that hangs on a device is the same failure to the
            # restored system as one that refused: the file still names the old disks.
            detail = e.stderr.strip()[-300:] if isinstance(e, CommandFailed) else ""
            self.errors.append(
                f"{path}: LVM could not make the entries of the recovered PVs "
                f"({detail or e}); as saved it names the old disks, and LVM "
                "will not find the volume groups at boot: remove it (LVM then uses every "
                "device) or run `vgimportdevices -a`"
            )
            return
        missing = sorted(device for pv, device in planned.items() if pv not in made)
        if missing:
            self.errors.append(
                f"{path}: LVM found no recovered PV on {', '.join(missing)}; as saved the "
                "file names the old disks, and LVM will not find the volume groups at boot: "
                "remove it (LVM then uses every device) or run `vgimportdevices -a`"
            )
        saved_uuids = {pv.id: pv.uuid for pv in self.desc.physical_volumes}
        renamed = lvmdevices.renamed_pvs(self.plan, saved_uuids)
        rw = lvmdevices.rewrite(text, planned, made, renamed)
        self.file(path, replace(rw, warnings=()) if missing else rw)

    # ------------------------------------------------------------------ network

    def network_inputs(self) -> NetworkInputs:
        """The network files, the saved NICs they name, and this machine's NICs as the
        restored system will name them."""
        files = configs.network_files(self.tree)
        saved = netmap.saved_nics(configs.network_refs(files))
        actual = netmap.actual_nics(self.options.sysfs)
        cmdlines = [
            self.tree.read(p) or ""
            for p in ("/etc/default/grub", "/etc/kernel/cmdline", "/boot/grub/grub.cfg")
        ]
        cmdlines += [self.tree.read(p) or "" for p in self.tree.glob("/etc/default/grub.d/*.cfg")]
        kernel_names = bool(actual) and netmap.ifnames_off(cmdlines)
        if kernel_names:
            actual = netmap.kernel_named(actual)
        return NetworkInputs(files, saved, actual, kernel_names)

    def check_net_map(self) -> None:
        """Raises BadInput for a --net-map that names no interface here."""
        n = self.network_inputs()
        netmap.pair_nics(n.saved, n.actual, self.options.net_map)

    def map_network(self) -> None:
        n = self.network_inputs()
        files, saved, actual = n.files, n.saved, n.actual
        if n.kernel_names:
            self.notes.append(
                "the restored system boots with net.ifnames=0: its interfaces are named "
                "eth0, eth1, ... in bus order, not as this rescue system names them"
            )
        pairs = netmap.pair_nics(saved, actual, self.options.net_map, self.warnings)
        self.nics = netmap.report_pairs(pairs)
        nm = netmap.netmap(pairs)
        gone = netmap.gone_macs(saved, actual)
        for path, rw in configs.network_rewrites(files, nm, gone):
            self.file(path, rw)
        controllers = [d for d in self.desc.drivers if d.device_class == DriverClass.NETWORK]
        if not files:
            self.notes.append(
                "no network configuration files (ifupdown, NetworkManager, "
                "systemd-networkd, netplan) to map"
            )
        elif len(controllers) != len(actual):
            self.notes.append(
                f"the saved system had {len(controllers)} network controller(s), this machine "
                f"has {len(actual)} interface(s): "
                + (", ".join(n.label() for n in actual) or "none")
            )

    # ------------------------------------------------------------------ made at recovery

    def make_left_out_images(self) -> None:
        """The initramfs images the set left out (save --initramfs rebuild), made with the
        restored system's own generator, in the chroot, before the drivers step looks
        inside them. Made after the storage configuration is rewritten, an image carries
        the new names already."""
        wanted = self.desc.initramfs_made_at_recovery()
        if not wanted:
            return
        if self.root is not None:
            gen = drivers.detect_generator(self.root)
            if gen is None:
                self.errors.append(
                    "the set leaves the initramfs out for the recovery to make, but the "
                    "restored system has neither initramfs-tools nor dracut: it has none "
                    "and will not boot")
                return
        else:
            # A preview: the generator the saved configuration names, else the one whose
            # file name the set recorded.
            gen = drivers.generator_of_config([
                *self.tree.glob("/etc/initramfs-tools/*"), *self.tree.glob("/etc/dracut.conf"),
                *self.tree.glob("/etc/dracut.conf.d/*")]) or (
                drivers.Generator.DRACUT if wanted[0].path.endswith(".img")
                else drivers.Generator.INITRAMFS_TOOLS)
        if self.root is not None and self.options.drivers:
            self._name_drivers_first(gen, [i.kernel for i in wanted])
        for image in wanted:
            if self._in_tree(image.path):
                self.notes.append(f"{image.path}: there already, not made again")
                continue
            why = (f"the set leaves out the initramfs of {image.kernel} (saved with "
                   "--initramfs rebuild): made anew from the restored system")
            argv = drivers.rebuild_argv(gen, image.kernel, False)
            if not self.command(argv, why):
                self.images_unmade.add(image.kernel)
                continue
            path = drivers.image_path(self.root, gen, image.kernel) if self.root else image.path
            if not self.dry_run and not self._in_tree(path):
                self.errors.append(f"{path} is missing after {' '.join(argv)}")
                self.images_unmade.add(image.kernel)
                continue
            self.images_made[image.kernel] = path

    def _in_tree(self, path: str) -> bool:
        """Whether the restored tree holds ``path``, resolved inside it (its /boot may be a
        symbolic link the set's author made); False in a preview."""
        if self.root is None:
            return False
        host = RootTree(self.root).host(path, missing_ok=True)
        return host is not None and os.path.lexists(host)

    def _name_drivers_first(self, gen: drivers.Generator, kernels: Sequence[str]) -> None:
        """Before an image is made where there is none: the drivers of this machine's
        disks named in the generator's configuration, so that the one build has them
        (the drivers step looking inside it afterwards would otherwise make a second);
        not with initramfs-tools' MODULES=most, which puts them in every image."""
        assert self.root is not None
        if gen == drivers.Generator.INITRAMFS_TOOLS and self._modules_mode() == "most":
            return
        needed = drivers.needed_modules([m.kname for m in self.plan.matches], self.options.sysfs)
        add: list[str] = []
        for kernel in kernels:
            gap = drivers.decide_gap(needed, frozenset(), KernelModules.load(self.root, kernel))
            add += [m for m in gap.add if m not in add]
        if add:
            self._name_modules(gen, add)
            self.notes.append(f"{', '.join(add)} named in the initramfs configuration before "
                              "the images the set left out are made")

    # ------------------------------------------------------------------ drivers

    def _listing(self, gen: drivers.Generator, image: str) -> frozenset[str] | None:
        """The modules in one initramfs: listed from the rescue system when it has a lister
        (read-only, against the file), else with the restored system's own in the chroot."""
        assert self.root is not None
        found = drivers.regular_in_tree(self.root, image)
        if found is None:
            return frozenset()
        host_image = str(found)
        tools = ["lsinitrd", "lsinitramfs"]
        if gen == drivers.Generator.INITRAMFS_TOOLS:
            tools.reverse()
        for tool in tools:
            if run.which(tool):
                result = run.run([tool, host_image], check=False)
                if result.returncode == 0:
                    return drivers.parse_image_listing(result.stdout)
        if self.dry_run:
            return None
        argv = drivers.lister_argv(gen, image)
        return drivers.parse_image_listing(self.chroot().execute(argv).stdout)

    def _stale(self, gen: drivers.Generator) -> list[str]:
        """The files rewritten so far that the initramfs carries a copy of."""
        return [f.path for f in self.files if f.changes and drivers.carried_in_image(gen, f.path)]

    def preview_drivers(self) -> None:
        """Before the restore: the initramfs rebuild the drivers step will make, from the
        configuration the description carries and this machine's disks. A file rewritten
        above that the initramfs carries makes it certain (planned); drivers of this
        machine's disks that the saved system's disks did not use make it depend on what
        the restored image holds, which is looked at once it is there (if-needed)."""
        tree = self.tree
        gen = drivers.generator_of_config(
            [*tree.glob("/etc/initramfs-tools/*"), *tree.glob("/etc/initramfs-tools/conf.d/*"),
             *tree.glob("/etc/dracut.conf"), *tree.glob("/etc/dracut.conf.d/*")]
        )
        if gen is None:
            self.notes.append(
                "drivers: the restored initramfs is checked after the restore (the "
                "description carries no initramfs-tools or dracut configuration)"
            )
            return
        kernel = self.desc.system.kernel
        stale = self._stale(gen) if kernel not in self.images_made else []
        needed = drivers.needed_modules([m.kname for m in self.plan.matches], self.options.sysfs)
        used = drivers.saved_disk_modules(self.desc.drivers, [d.path for d in self.desc.disks])
        new = [m for m in needed if m not in used]
        whys = [drivers.stale_why(kernel, stale)] if stale else []
        # initramfs-tools' copies of these files are renamed in the image itself once it
        # is restored, when no driver lacks there: the rebuild is then not made.
        in_place = (
            bool(stale)
            and gen == drivers.Generator.INITRAMFS_TOOLS
            and all(imagecopies.image_path(p) for p in stale)
        )
        if in_place:
            whys[0] += (
                " (renamed in the image itself once restored if no driver lacks there, "
                "without this rebuild)"
            )
        if new:
            whys.append(
                f"the disks of this machine need {', '.join(new)}, which the saved system's "
                f"disks did not use: the restored initramfs of {kernel} is looked inside once "
                "restored, and rebuilt (with them named in "
                f"{MODULES_FILE if gen == drivers.Generator.INITRAMFS_TOOLS else DRACUT_SNIPPET})"
                f" if it lacks one{self._modules_hint(gen)}"
            )
        if not whys:
            self.notes.append(
                "drivers: the disks of this machine use the saved system's drivers ("
                + (", ".join(needed) or "none found")
                + "): the restored initramfs is checked once restored"
            )
            return
        self.commands.append(
            CommandRecord(
                tuple(drivers.rebuild_argv(gen, kernel, True)),
                "; ".join(whys),
                StepStatus.PLANNED if stale and not in_place else StepStatus.IF_NEEDED,
                chroot=True,
            )
        )

    def _modules_mode(self) -> str:
        """initramfs-tools' MODULES= (most, dep, list, netboot), as its configuration sets it."""
        texts = [self.tree.read("/etc/initramfs-tools/initramfs.conf") or ""]
        texts += [self.tree.read(p) or "" for p in self.tree.glob("/etc/initramfs-tools/conf.d/*")]
        return drivers.initramfs_modules_mode(texts)

    def _modules_hint(self, gen: drivers.Generator) -> str:
        if gen != drivers.Generator.INITRAMFS_TOOLS:
            return ""
        mode = self._modules_mode()
        if mode == "most":
            return " (MODULES=most: initramfs-tools puts most disk drivers in every image)"
        return f" (MODULES={mode}: an image made for the saved disks is likely to lack them)"

    def check_drivers(self) -> None:
        if self.root is None:
            self.preview_drivers()
            return
        gen = drivers.detect_generator(self.root)
        if gen is None:
            self.warnings.append(
                "neither initramfs-tools nor dracut in the restored system: its initramfs "
                "was not checked for this machine's drivers"
            )
            return
        knames = [m.kname for m in self.plan.matches]
        needed = drivers.needed_modules(knames, self.options.sysfs)
        stale = self._stale(gen)
        if not needed:
            self.warnings.append(
                f"no driver found in {self.options.sysfs} for the disks "
                f"{', '.join(knames) or '(none)'}: the initramfs was not checked"
            )
            if not stale:
                return
        kernels = drivers.kernels_to_check(
            drivers.installed_kernels(self.root), self.desc.system.kernel
        )
        if not kernels:
            self.errors.append("no kernel (vmlinuz with its modules) in the restored /boot")
            return
        checks: list[tuple[str, str, bool, drivers.Gap]] = []
        for kernel in kernels:
            modules = KernelModules.load(self.root, kernel)
            image = drivers.image_path(self.root, gen, kernel)
            exists = self._in_tree(image)
            if not exists and kernel in self.images_made:
                # A dry run: the recovery makes it first, and looks inside it then.
                self.notes.append(f"{image}: made by the recovery, then looked inside")
                continue
            if kernel in self.images_unmade:
                continue  # its error is reported: a second try would fail the same way
            listing = self._listing(gen, image) if exists else frozenset()
            if listing is None:
                self.notes.append(f"{image}: no lsinitramfs/lsinitrd here to look inside")
                continue
            gap = drivers.decide_gap(needed, listing, modules)
            for m in gap.unknown:
                self.warnings.append(
                    f"kernel {kernel} has no module {m} ({needed[m]}): it cannot go into "
                    "its initramfs; that kernel may not find its disks here"
                )
            checks.append((kernel, image, exists, gap))
        add = list(dict.fromkeys(m for *_, gap in checks for m in gap.add))
        if add:
            self._name_modules(gen, add)
            if gen == drivers.Generator.INITRAMFS_TOOLS:
                mode = self._modules_mode()
                self.notes.append(
                    f"initramfs-tools MODULES={mode}: "
                    + (
                        "the rebuild in the chroot looks at this machine's devices, and "
                        if mode == "dep"
                        else ""
                    )
                    + f"{MODULES_FILE} names {', '.join(add)} so that every later rebuild "
                    "keeps them"
                )
        for kernel, image, exists, gap in checks:
            rebuilt = False
            seconds = 0.0
            still: tuple[str, ...] = ()
            if kernel in self.images_made or (not gap.missing and stale and exists and
                                              self._renamed_in_image(gen, image, stale)):
                # (An image made by this recovery was made from the rewritten files.)
                stale_here: list[str] = []
            else:
                stale_here = stale
            if gap.missing or stale_here:
                whys = []
                if gap.missing:
                    whys.append(
                        f"the initramfs of {kernel} lacks {', '.join(gap.missing)}, which the "
                        "disks of this machine need to be found at boot"
                    )
                if stale_here:
                    whys.append(drivers.stale_why(kernel, stale_here))
                started = time.monotonic()
                rebuilt = self.command(drivers.rebuild_argv(gen, kernel, exists), "; ".join(whys))
                seconds = time.monotonic() - started
                if rebuilt and not exists:
                    self.images_made[kernel] = image
                if rebuilt and not self.dry_run and gap.missing:
                    after = self._listing(gen, image) or frozenset()
                    still = tuple(m for m in gap.missing if m not in after)
                    if still:
                        self.errors.append(
                            f"{image} still lacks {', '.join(still)} after the rebuild"
                        )
            self.initramfs.append(
                InitramfsCheck(
                    kernel=kernel,
                    image=image,
                    generator=str(gen),
                    needed=tuple(gap.needed.items()),
                    present=gap.present,
                    missing=gap.missing,
                    builtin=gap.builtin,
                    rebuilt=rebuilt and not self.dry_run,
                    seconds=seconds if not self.dry_run else 0.0,
                    still_missing=still,
                )
            )
            if not gap.missing and gap.present:
                self.notes.append(f"initramfs already has: {', '.join(gap.present)} ({kernel})")

    def _renamed_in_image(self, gen: drivers.Generator, image: str, stale: list[str]) -> bool:
        """The image's copies of the rewritten files renamed in the image itself, when
        they are all it needs (see imagecopies); False: it must be rebuilt."""
        if (self.dry_run or gen != drivers.Generator.INITRAMFS_TOOLS
                or not isinstance(self.tree, RootTree)):
            return False
        # Through the restored tree's resolver: a /boot that is a symlink must not lead
        # the rewrite out of the restored tree.
        host = self.tree.host(image)
        if host is None:
            self.notes.append(f"{image}: rebuilt, it leads out of the restored tree")
            return False
        changes = {f.path: f.changes for f in self.files}
        copies = [
            imagecopies.Copy(p, self.before.get(p, ""), self.tree.read(p) or "", changes[p])
            for p in stale
        ]
        saved = [
            old
            for i in self.ids.items
            for old, new in ((i.old_uuid, i.new_uuid), (i.old_partuuid, i.new_partuuid))
            if old and new and identity.norm_uuid(old) != identity.norm_uuid(new)
        ]
        self.announce(f"  renaming in {image} its copies of {', '.join(stale)}")
        started = time.monotonic()
        try:
            members = imagecopies.patch(host, copies, saved)
        except imagecopies.Unpatchable as e:
            self.notes.append(f"{image}: rebuilt, its copies not renamed in place: {e}")
            return False
        self.notes.append(
            f"{image}: its copies of {', '.join(stale)} renamed in the image "
            f"({', '.join(members) or 'none held'}; {time.monotonic() - started:.1f} s): "
            "no driver lacks, so no rebuild"
        )
        return True

    def _name_modules(self, gen: drivers.Generator, missing: list[str]) -> None:
        """Name the drivers in the generator's configuration, so that every later rebuild
        (a kernel update) keeps them."""
        comment = (
            f"added by resurgo on recovery ({self.stamp:%Y-%m-%d}): drivers of this machine's disks"
        )
        if gen == drivers.Generator.INITRAMFS_TOOLS:
            text = self.tree.read(MODULES_FILE) or ""
            self.file(MODULES_FILE, drivers.add_modules(text, missing, comment), created=not text)
            return
        old = self.tree.read(DRACUT_SNIPPET)
        new = drivers.dracut_conf(missing, comment, old)
        if new is None:
            return
        rw = Rewrite(
            new,
            tuple(
                LineChange(n, None, line, "dracut puts these drivers in every image")
                for n, line in enumerate(new.splitlines(), start=1)
            ),
        )
        self.file(DRACUT_SNIPPET, rw, created=old is None)

    # ------------------------------------------------------------------ bootloader

    def install_bootloader(self) -> None:
        efi = (self.options.sysfs / "firmware" / "efi").is_dir()
        facts = (
            bootloader.TreeFacts.of(self.root) if self.root is not None else bootloader.TreeFacts()
        )
        bp = bootloader.plan_bootloader(self.desc, self.plan, efi_available=efi, tree=facts)
        self.notes.extend(bp.notes)
        if bp.problems:
            self.errors.extend(bp.problems)
            return
        if (
            bp.esp is not None
            and self.root is not None
            and not self.dry_run
            and not os.path.ismount(self.root / bp.esp.lstrip("/"))
        ):
            self.errors.append(
                f"the ESP is not mounted at {self.root / bp.esp.lstrip('/')}: the "
                "bootloader cannot be installed into it"
            )
            return
        for step in bp.steps:
            if not self.command(step.argv, step.why, in_chroot=step.chroot):
                return
        if (
            self.desc.system.bootloader.kind == BootloaderKind.GRUB_EFI
            and efi
            and bp.bootloader_id
            and bp.loader
            and not self.dry_run
        ):
            self._check_nvram(bp)
        if bp.regenerate:
            kept = self._grub_cfg_kept(facts)
            if kept is None:
                self._grub_cfg(facts)
            else:
                self.notes.append(kept)
                self.fix_grub_cfg_text()

    def _check_nvram(self, bp: bootloader.BootPlan) -> None:
        assert bp.bootloader_id is not None and bp.loader is not None
        if not run.which("efibootmgr"):
            self.warnings.append("no efibootmgr here: the NVRAM entry was not checked")
            return
        entries = bootloader.parse_efibootmgr(run.output(["efibootmgr"]))
        if any(label == bp.bootloader_id for _, label in entries):
            self.notes.append(f"NVRAM has a boot entry {bp.bootloader_id!r}")
            return
        if bp.esp_device is None:
            self.warnings.append(
                f"no NVRAM entry {bp.bootloader_id!r}, and the ESP's disk is not known: the "
                "removable-media path is what the firmware will find"
            )
            return
        disk, number = bp.esp_device
        step = bootloader.efibootmgr_create(disk, number, bp.bootloader_id, bp.loader)
        self.command(step.argv, step.why, in_chroot=False)

    def _root_spec(self) -> str | None:
        system = self.ids.by_record(self.desc.system.system_volume or "")
        return system.stable_spec() if system is not None else None

    def fix_grub_cfg_text(self) -> None:
        """Without the bootloader step: the existing grub.cfg's device names, as text."""
        facts = (
            bootloader.TreeFacts.of(self.root) if self.root is not None else bootloader.TreeFacts()
        )
        found = configs.grub_cfg_rewrite(self.tree, facts.grub_cfg, self.ids, self._root_spec())
        if found is not None:
            self.file(*found)

    def _grub_cfg_kept(self, facts: bootloader.TreeFacts) -> str | None:
        """Why the restored grub.cfg boots this machine as it is, so that grub-mkconfig is
        not run (tens of seconds under emulation, for a file that would differ in its
        device hints only: GRUB finds /boot by UUID): every identity the file can name is
        kept, finalize changed nothing grub-mkconfig reads, and the file boots every
        installed kernel with its image (one a rebuild made included). None: it is
        regenerated."""
        moved = [d.record for d in self.plan.identities if not d.kept]
        moved += [
            i.record for i in self.ids.items
            if i.new_path and any(
                # (one not known now counts as changed)
                old and identity.norm_uuid(old) != identity.norm_uuid(new or "")
                for old, new in ((i.old_uuid, i.new_uuid), (i.old_partuuid, i.new_partuuid))
            )
        ]
        inputs = [f.path for f in self.files if f.path.startswith(GRUB_INPUTS)]
        text = self.tree.read(facts.grub_cfg)
        if moved or inputs or text is None:
            return None
        if self.root is not None:
            kernels = drivers.installed_kernels(self.root)
        else:
            kernels = [self.desc.system.kernel] if self.desc.system.kernel else []
        for kernel in kernels:
            images = [p for p in initramfs_paths(kernel) if self.tree.glob(glob.escape(p))]
            if kernel in self.images_made:
                images.insert(0, self.images_made[kernel])
            initrd = images[0].rsplit("/", 1)[1] if images else None
            if not grub_cfg_boots(text, kernel, initrd):
                return None
        if not kernels:
            return None
        return (
            f"{facts.grub_cfg} kept as restored (grub-mkconfig not run): the disks keep "
            "their identities, nothing grub-mkconfig reads was changed, and it boots "
            + ", ".join(kernels)
        )

    def _grub_cfg(self, facts: bootloader.TreeFacts) -> None:
        ok = self.command(
            (facts.grub_mkconfig, "-o", facts.grub_cfg),
            "grub.cfg regenerated for the disks and kernels as they are now",
        )
        if not ok:
            return
        root_spec = self._root_spec()
        found = configs.grub_cfg_rewrite(self.tree, facts.grub_cfg, self.ids, root_spec)
        if found is None:
            if not self.dry_run:
                self.errors.append(f"{facts.grub_cfg} is missing after grub-mkconfig")
            return
        path, rw = found
        self.file(path, rw)
        if self.dry_run:
            return
        roots = grub_cfg_roots(self.tree.read(path) or "")
        bad = [r for r in roots if identity.is_hardware_name(r)]
        if bad:
            self.errors.append(f"{path} still names the root by a kernel device: {bad[0]}")

    # ------------------------------------------------------------------ regenerated files

    def boot_state(self) -> dict[str, tuple[int, int, int]]:
        """(mtime, size, inode) of every file under the restored /boot (ESP included),
        to tell afterwards which ones the commands made or changed."""
        if self.root is None or self.dry_run:
            return {}
        out: dict[str, tuple[int, int, int]] = {}
        base = drivers.in_tree(self.root, "/boot")
        if base is None:
            return out
        for dirpath, _dirs, names in os.walk(base):
            for name in names:
                host = os.path.join(dirpath, name)
                try:
                    st = os.lstat(host)
                except OSError:
                    continue
                inside = "/boot/" + os.path.relpath(host, base)
                out[inside] = (st.st_mtime_ns, st.st_size, st.st_ino)
        return out

    def note_regenerated(self, before: dict[str, tuple[int, int, int]]) -> None:
        """List the files under /boot the commands made or changed (initramfs images,
        grub.cfg, GRUB's core image and modules, EFI loaders): a verify of the restored
        files against the backup must expect them to differ."""
        if not any(c.status == StepStatus.DONE for c in self.commands):
            return
        listed = {f.path for f in self.files}
        for path, state in sorted(self.boot_state().items()):
            if before.get(path) != state and path not in listed:
                self.files.append(FileChange(path, (), True, path not in before, True))

    # ------------------------------------------------------------------ the record

    def write_log(self) -> str | None:
        if self.dry_run or not isinstance(self.tree, RootTree):
            return None
        path = f"{self.options.log_dir.rstrip('/')}/recovery-{self.stamp:%Y%m%dT%H%M%SZ}.log"
        report = self.report(log=path)
        try:
            self.tree.write(path, render.text(report), mode=0o600)
        except (OSError, ResurgoError) as e:
            self.errors.append(f"the record of the recovery could not be written to {path}: {e}")
            return None
        return path
