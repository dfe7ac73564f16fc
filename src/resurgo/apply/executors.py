"""One executor per kind of action: how it is done, how the disks show it, what it releases.

executor() is the registry: a match over the plan's parameter types, ending in
assert_never, so a kind of action without an executor fails type checking. An executor
never runs a command on a device before the guard allowed it for its action.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Generic, TypeVar, assert_never

from resurgo import run
from resurgo.apply import commands, confine, devices, verify
from resurgo.apply.guard import Guard
from resurgo.errors import CommandFailed, OperationFailed, ResurgoError
from resurgo.model import PartitionKind
from resurgo.plan.actions import sfdisk_script
from resurgo.plan.model import (
    Action,
    LuksFormatParams,
    LuksOpenParams,
    LvParams,
    MdParams,
    MkfsParams,
    MkswapParams,
    MountParams,
    Params,
    Plan,
    PvParams,
    SubvolumeDefaultParams,
    SubvolumeParams,
    TableParams,
    VgParams,
    WipeParams,
)
from resurgo.probe import blockdev, filesystems, mounts

PROC_FILESYSTEMS = Path("/proc/filesystems")


class Warned(ResurgoError):
    """An action that cannot be done here, without which the layout is still complete."""


@dataclass(frozen=True)
class Context:
    """What every executor works with: the whole plan, its guard and the LUKS keys."""

    plan: Plan
    guard: Guard
    keys: Mapping[str, str]

    @property
    def lvm_scope(self) -> tuple[str, ...]:
        """The devices every lvm command sees: the plan's physical volumes alone."""
        return tuple(a.params.device for a in self.plan.actions
                     if isinstance(a.params, PvParams))

    def lvm(self, argv: list[str]) -> list[str]:
        return commands.lvm_scoped(argv, self.lvm_scope)


P = TypeVar("P", covariant=True, bound=Params)


class ActionExecutor(ABC, Generic[P]):
    """An action of one kind: done (run), looked for on the disks (check), and, for an
    action that rewrites devices, the devices whose recovery-own mounts go first."""

    # Destructive actions run their command again whenever they are not skipped;
    # bring-up actions first look whether what they make is already there.
    destructive: ClassVar[bool] = False

    def __init__(self, action: Action, p: P) -> None:
        self.action = action
        self.p = p

    @abstractmethod
    def run(self, x: Context) -> None: ...

    @abstractmethod
    def check(self, x: Context) -> list[str]:
        """What differs between the plan and the disks for this action (empty: as planned).

        Brings up what an earlier run made and a reboot or crash took down (the kernel's
        partitions, an md array, inactive LVs); it never writes to a device.
        """

    def releases(self) -> tuple[str, ...]:
        """The devices a destructive action rewrites, whose own mounts are released first."""
        return ()


def executor(action: Action) -> ActionExecutor[Params]:
    p = action.params
    match p:
        case WipeParams():
            return Wipe(action, p)
        case TableParams():
            return Table(action, p)
        case MdParams():
            return Md(action, p)
        case LuksFormatParams():
            return LuksFormat(action, p)
        case LuksOpenParams():
            return LuksOpen(action, p)
        case PvParams():
            return Pv(action, p)
        case VgParams():
            return Vg(action, p)
        case LvParams():
            return Lv(action, p)
        case MkfsParams():
            return Mkfs(action, p)
        case MkswapParams():
            return Mkswap(action, p)
        case SubvolumeParams():
            return Subvolume(action, p)
        case SubvolumeDefaultParams():
            return SubvolumeDefault(action, p)
        case MountParams():
            return Mount(action, p)
        case _:
            assert_never(p)


def joined(found: list[str]) -> str:
    return "; ".join(found)


# ------------------------------------------------------------ disks and tables


class Wipe(ActionExecutor[WipeParams]):
    destructive = True

    def releases(self) -> tuple[str, ...]:
        return (self.p.device,)

    def run(self, x: Context) -> None:
        a, p = self.action, self.p
        x.guard.check(a, p.device)
        disk = devices.kname(p.device)
        # The old partitions' signatures first: a new partition at the same offset would
        # otherwise show the old filesystem or md superblock again.
        for _n, part in sorted(blockdev.partitions_of(disk).items()):
            path = f"/dev/{part.kname}"
            if devices.exists(path):
                x.guard.check(a, path)
                run.run(["wipefs", "--all", path])
        run.run(["wipefs", "--all", p.device])
        # The kernel forgets the old partitions (the new table, if any, brings its own).
        run.run(["partx", "--delete", p.device], check=False)

    def check(self, x: Context) -> list[str]:
        p = self.p
        sig = verify.read_signature(p.device)
        if not sig.get("TYPE") and not sig.get("PTTYPE"):
            return []
        # Not blank: it must be what a later action of this plan put on the disk itself.
        for later in x.plan.actions:
            if later.id == self.action.id or not _writes_directly(later, p.device):
                continue
            if not executor(later).check(x):
                return []
        what = sig.get("PTTYPE") or sig.get("TYPE")
        return [f"{p.device} holds a {what} that is not the plan's"]


def _writes_directly(a: Action, disk: str) -> bool:
    p = a.params
    if isinstance(p, TableParams | MkfsParams | MkswapParams | LuksFormatParams | PvParams):
        return p.device == disk
    if isinstance(p, MdParams):
        return disk in p.members or disk in p.spares
    return False


class Table(ActionExecutor[TableParams]):
    destructive = True

    def releases(self) -> tuple[str, ...]:
        return (self.p.device,)

    def run(self, x: Context) -> None:
        a, t = self.action, self.p
        x.guard.check(a, t.device)
        run.run(
            ["sfdisk", "--quiet", "--wipe", "always", "--wipe-partitions", "always",
             "--no-reread", "--no-tell-kernel", t.device],
            input=sfdisk_script(t),
        )
        _sync_kernel(t)
        for e in t.partitions:
            if e.kind != PartitionKind.EXTENDED:
                x.guard.check(a, e.device)
                run.run(["wipefs", "--all", e.device])

    def check(self, x: Context) -> list[str]:
        t = self.p
        found = verify.table_differences(verify.read_table(t.device), t)
        if found:
            return found
        if verify.kernel_differences(devices.kernel_partitions(t.device), t):
            _sync_kernel(t)
        return []


def _sync_kernel(t: TableParams) -> None:
    """Make the kernel use the table's partitions (no udevd: partx) and wait for nodes."""
    run.run(["partx", "--update", t.device], check=False)
    nodes = [e.device for e in t.partitions if e.kind != PartitionKind.EXTENDED]
    if verify.kernel_differences(devices.kernel_partitions(t.device), t):
        # A partition the kernel would not resize in place: drop them all, add again.
        run.run(["partx", "--delete", t.device], check=False)
        run.run(["partx", "--add", t.device], check=False)
    devices.wait_for_nodes(nodes)
    found = verify.kernel_differences(devices.kernel_partitions(t.device), t)
    if found:
        raise OperationFailed(
            f"the kernel does not use the new partitions of {t.device}: {joined(found)}",
            "something holds the old ones (mounted, swap, md, dm); release it and rerun",
        )


# ------------------------------------------------------------ md, LUKS, LVM


def _holders(paths: list[str]) -> set[str]:
    out: set[str] = set()
    for path in paths:
        if devices.exists(path):
            out |= set(blockdev.read_device(devices.kname(path)).holders)
    return out


def _knames(paths: list[str]) -> set[str]:
    return {devices.kname(p) for p in paths if devices.exists(p)}


class Md(ActionExecutor[MdParams]):
    destructive = True

    def releases(self) -> tuple[str, ...]:
        return (*self.p.members, *self.p.spares)

    def run(self, x: Context) -> None:
        a, p = self.action, self.p
        members = [*p.members, *p.spares]
        for m in members:
            x.guard.check(a, m)
        # An array an earlier, interrupted run made of these very members: stop it to
        # create it afresh (it was not journaled, so nothing can rely on it).
        for holder in sorted(_holders(members)):
            if holder.startswith("md") and set(devices.slaves(holder)) <= _knames(members):
                run.run(["mdadm", "--stop", f"/dev/{holder}"])
        run.run(commands.md_create(p))
        devices.wait_for_nodes([p.device])

    def check(self, x: Context) -> list[str]:
        p = self.p
        found = verify.read_md(p.device)
        if not found and all(devices.exists(m) for m in p.members):
            run.run(commands.md_assemble(p), check=False)
            found = verify.read_md(p.device)
        return verify.md_differences(found, p)


def _key(x: Context, volume: str) -> str:
    key = x.keys.get(volume)
    if key is None:
        raise OperationFailed(f"no key for the LUKS volume {volume}",
                              f"give one with --key-file {volume}=FILE")
    return key


class LuksFormat(ActionExecutor[LuksFormatParams]):
    destructive = True

    def releases(self) -> tuple[str, ...]:
        return (self.p.device,)

    def run(self, x: Context) -> None:
        a, p = self.action, self.p
        x.guard.check(a, p.device)
        # A mapping an interrupted run opened on it: close it to format afresh.
        ours = {b.params.name for b in x.plan.actions if isinstance(b.params, LuksOpenParams)}
        for holder in sorted(_holders([p.device])):
            name = devices.dm_name(holder)
            if name is not None and name in ours:
                run.run(["cryptsetup", "close", name])
        run.run(commands.luks_format(p), input=_key(x, p.volume))

    def check(self, x: Context) -> list[str]:
        p = self.p
        return verify.signature_differences(
            verify.read_signature(p.device), p.device, "crypto_LUKS", p.uuid,
            version=str(p.version))


class LuksOpen(ActionExecutor[LuksOpenParams]):
    def run(self, x: Context) -> None:
        a, p = self.action, self.p
        x.guard.check(a, p.device)
        if devices.exists(p.mapped):
            raise OperationFailed(
                f"{p.mapped} exists but is not {p.device} opened",
                f"close it (cryptsetup close {p.name}) and run again")
        run.run(commands.luks_open(p), input=_key(x, p.volume))
        devices.wait_for_nodes([p.mapped])

    def check(self, x: Context) -> list[str]:
        p = self.p
        if not devices.exists(p.mapped):
            return [f"{p.mapped} is not open"]
        under = devices.slaves(devices.kname(p.mapped))
        if not devices.exists(p.device) or under != (devices.kname(p.device),):
            return [f"{p.mapped} is not {p.device} opened"]
        return []


class Pv(ActionExecutor[PvParams]):
    destructive = True

    def releases(self) -> tuple[str, ...]:
        return (self.p.device,)

    def run(self, x: Context) -> None:
        x.guard.check(self.action, self.p.device)
        run.run(x.lvm(commands.pv_create(self.p)))

    def check(self, x: Context) -> list[str]:
        p = self.p
        return verify.signature_differences(
            verify.read_signature(p.device), p.device, "LVM2_member", p.uuid)


def _vg_on(x: Context, name: str, devs: tuple[str, ...]) -> bool:
    # One row per physical volume of the group.
    rows = verify.read_lvm("vg", "vg_name,pv_name", name, x.lvm_scope)
    ours = _knames(list(devs))
    pvs = {devices.kname(r["pv_name"]) for r in rows if devices.exists(r.get("pv_name", ""))}
    return bool(pvs) and pvs <= ours


class Vg(ActionExecutor[VgParams]):
    destructive = True

    def releases(self) -> tuple[str, ...]:
        return self.p.devices

    def run(self, x: Context) -> None:
        a, p = self.action, self.p
        for d in p.devices:
            x.guard.check(a, d)
        if verify.read_lvm("vg", "vg_name", p.name, x.lvm_scope):
            # A group of this name made by an interrupted run on these very PVs goes;
            # one anywhere else is not ours to touch.
            if not _vg_on(x, p.name, p.devices):
                raise OperationFailed(
                    f"a volume group {p.name} already exists on other devices",
                    "rename it (vgrename) or remove it, then run again")
            run.run(x.lvm(["lvm", "vgremove", "--yes", "--force", p.name]))
        run.run(x.lvm(commands.vg_create(p)))

    def check(self, x: Context) -> list[str]:
        p = self.p
        rows = verify.read_lvm("vg", "vg_name,vg_extent_size,pv_count", p.name, x.lvm_scope)
        found = verify.vg_differences(rows, p.name, p.extent_size, len(p.devices))
        if not found and not _vg_on(x, p.name, p.devices):
            found = [f"{p.name} is not on {', '.join(p.devices)}"]
        return found


class Lv(ActionExecutor[LvParams]):
    # Rewrites only inside its group: no device of its own to release.
    destructive = True

    def run(self, x: Context) -> None:
        a, p = self.action, self.p
        vg = next((b.params for b in x.plan.actions
                   if isinstance(b.params, VgParams) and b.params.name == p.vg_name), None)
        for d in (vg.devices if vg is not None else p.devices):
            x.guard.check(a, d)
        if verify.read_lvm("lv", "lv_name", f"{p.vg_name}/{p.name}", x.lvm_scope):
            run.run(x.lvm(["lvm", "lvremove", "--yes", "--force", f"{p.vg_name}/{p.name}"]))
        run.run(x.lvm(commands.lv_create(p)))
        if p.type != "thin-pool":
            devices.wait_for_nodes([p.device])

    def check(self, x: Context) -> list[str]:
        p = self.p
        fields = "lv_name,vg_name,segtype,lv_active"
        rows = verify.read_lvm("lv", fields, f"{p.vg_name}/{p.name}", x.lvm_scope)
        found = verify.lv_differences(rows, p)
        if found or p.type == "thin-pool":
            return found
        if not verify.lv_active(rows):
            run.run(x.lvm(commands.vg_activate(p.vg_name)), check=False)
            rows = verify.read_lvm("lv", fields, f"{p.vg_name}/{p.name}", x.lvm_scope)
            if not verify.lv_active(rows):
                return [f"{p.vg_name}/{p.name} is not active"]
        return []


# ------------------------------------------------------------ filesystems


def _format(x: Context, a: Action, device: str, argv: list[str]) -> None:
    x.guard.check(a, device)
    # Old signatures go first: mkfs.btrfs refuses a UUID it still sees on the device.
    run.run(["wipefs", "--all", device])
    run.run(argv)


class Mkfs(ActionExecutor[MkfsParams]):
    destructive = True

    def releases(self) -> tuple[str, ...]:
        return (self.p.device,)

    def run(self, x: Context) -> None:
        _format(x, self.action, self.p.device, commands.mkfs(self.p))

    def check(self, x: Context) -> list[str]:
        p = self.p
        return verify.signature_differences(
            verify.read_signature(p.device), p.device, str(p.type), p.uuid, p.label)


class Mkswap(ActionExecutor[MkswapParams]):
    destructive = True

    def releases(self) -> tuple[str, ...]:
        return (self.p.device,)

    def run(self, x: Context) -> None:
        _format(x, self.action, self.p.device, commands.mkswap(self.p))

    def check(self, x: Context) -> list[str]:
        p = self.p
        return verify.signature_differences(
            verify.read_signature(p.device), p.device, "swap", p.uuid, p.label)


@contextlib.contextmanager
def top_level(x: Context, a: Action, device: str) -> Iterator[str]:
    """The btrfs's top level mounted privately (subvolume ids differ from the saved ones,
    so subvolumes are made and found by path)."""
    x.guard.check(a, device)
    devices.RUN_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
    where = tempfile.mkdtemp(prefix="btrfs-", dir=devices.RUN_DIR)
    try:
        run.run(["mount", "-t", "btrfs", "-o", "subvolid=5", device, where])
        try:
            yield where
        finally:
            run.run(["umount", where], check=False)
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(where)


class Subvolume(ActionExecutor[SubvolumeParams]):
    def run(self, x: Context) -> None:
        p = self.p
        with top_level(x, self.action, p.device) as top:
            path = confine.under_root(top, p.path)
            if not verify.is_subvolume(path):
                confine.make_dirs(top, os.path.dirname(path))
                run.run(["btrfs", "subvolume", "create", path])
            if p.readonly:
                run.run(["btrfs", "property", "set", "-ts", path, "ro", "true"])

    def check(self, x: Context) -> list[str]:
        p = self.p
        with top_level(x, self.action, p.device) as top:
            path = confine.under_root(top, p.path)
            if not verify.is_subvolume(path):
                return [f"there is no subvolume {p.path} on {p.device}"]
            ro = run.output(["btrfs", "property", "get", "-ts", path, "ro"]).strip()
            if (ro == "ro=true") != p.readonly:
                return [f"subvolume {p.path} is {ro}"]
        return []


class SubvolumeDefault(ActionExecutor[SubvolumeDefaultParams]):
    def run(self, x: Context) -> None:
        p = self.p
        with top_level(x, self.action, p.device) as top:
            # The saved default was an id; ids are not kept, so it is found by its path.
            new_id = verify.parse_rootid(
                run.output(["btrfs", "inspect-internal", "rootid",
                            confine.under_root(top, p.path)]))
            run.run(["btrfs", "subvolume", "set-default", str(new_id), top])

    def check(self, x: Context) -> list[str]:
        p = self.p
        with top_level(x, self.action, p.device) as top:
            path = confine.under_root(top, p.path)
            if not verify.is_subvolume(path):
                return [f"there is no subvolume {p.path} on {p.device}"]
            want = verify.parse_rootid(
                run.output(["btrfs", "inspect-internal", "rootid", path]))
            have = filesystems.parse_get_default(
                run.output(["btrfs", "subvolume", "get-default", top]))
            if have != want:
                return [f"the default subvolume is {have}, not {p.path} ({want})"]
        return []


class Mount(ActionExecutor[MountParams]):
    def run(self, x: Context) -> None:
        p, root = self.p, x.plan.root
        x.guard.check(self.action, p.device)
        # The mountpoint joined to the root again, as a check: the plan's target must be
        # it, under the root, and reached through directories only (mount follows links).
        target = confine.under_root(root, p.mountpoint)
        if target != os.path.normpath(p.target):
            raise OperationFailed(f"refusing to mount on {p.target}: the root {root} "
                                  f"and mountpoint {p.mountpoint} name {target}")
        confine.make_dirs(root, target)
        try:
            run.run(commands.mount(p))
        except CommandFailed:
            if not _kernel_knows(p.type):
                raise Warned(
                    f"not mounted: this kernel cannot mount {p.type} (no {p.type} support); "
                    f"{p.device} is made, mount it on {p.target} where the kernel can "
                    "(the rescue image can)"
                ) from None
            raise

    def check(self, x: Context) -> list[str]:
        p = self.p
        num = devices.devnum(devices.kname(p.device)) if devices.exists(p.device) else None
        return verify.mounted_as_planned(mounts.read_mountinfo(), p, num)


def _kernel_knows(fstype: str, proc: Path = PROC_FILESYSTEMS) -> bool:
    try:
        text = proc.read_text()
    except OSError:
        return True
    return any(line.split()[-1] == fstype for line in text.splitlines() if line.split())
