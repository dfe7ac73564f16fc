"""Execute a plan's actions on the disks, exactly as planned; resumable after any crash.

For each action, in the plan's order:

  - journaled by an earlier run of this plan, nothing it depends on redone now, and
    still true on the disks (apply.verify): skipped as "verified";
  - otherwise done: destructive actions (wipe, partition table, md, LUKS format, PV, VG,
    LV, mkfs, mkswap) run their command again; bring-up actions (LUKS open, subvolumes,
    default subvolume, mount) first look whether what they make is already there.
    Before each command the guard checks the device lies on the plan's target disks;
    afterwards the result is checked on the disks, and only then journaled.

A destructive action that runs marks everything depending on it as not skippable.

Testing aid: when RESURGO_TEST_STALL=N, the N-th action (1-based, in plan order) stops
after its commands ran and before it is journaled: it writes "resurgo: test stall
after ACTION_ID" to stderr and sleeps, so a test can kill the process at that point.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from resurgo import run
from resurgo.apply import commands, confine, devices, verify
from resurgo.apply.guard import Guard
from resurgo.apply.journal import Journal
from resurgo.errors import CommandFailed, OperationFailed, ResurgoError
from resurgo.model import PartitionKind
from resurgo.plan.actions import sfdisk_script
from resurgo.plan.model import (
    Action,
    ActionKind,
    LuksFormatParams,
    LuksOpenParams,
    LvParams,
    MdParams,
    MkfsParams,
    MkswapParams,
    MountParams,
    Plan,
    PvParams,
    SubvolumeDefaultParams,
    SubvolumeParams,
    TableParams,
    VgParams,
    WipeParams,
)
from resurgo.probe import blockdev, filesystems, mounts

ENV_TEST_STALL = "RESURGO_TEST_STALL"
PROC_FILESYSTEMS = Path("/proc/filesystems")

DESTRUCTIVE = frozenset(
    {
        ActionKind.WIPE,
        ActionKind.PARTITION_TABLE,
        ActionKind.MD_CREATE,
        ActionKind.LUKS_FORMAT,
        ActionKind.PV_CREATE,
        ActionKind.VG_CREATE,
        ActionKind.LV_CREATE,
        ActionKind.MKFS,
        ActionKind.MKSWAP,
    }
)


class Status(StrEnum):
    # Done now.
    DONE = "done"
    # Done by an earlier run of this plan, and checked on the disks: skipped.
    VERIFIED = "verified"
    # Could not be done on this machine, but the layout is complete without it.
    WARNING = "warning"
    FAILED = "failed"
    # Not reached: an earlier action failed.
    NOT_RUN = "not-run"


@dataclass(frozen=True)
class ActionResult:
    id: str
    kind: str
    summary: str
    status: Status
    message: str = ""
    seconds: float = 0.0


@dataclass
class Outcome:
    plan_hash: str
    journal: str
    resumed: bool
    results: list[ActionResult] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and all(r.status != Status.FAILED for r in self.results)


class Warned(ResurgoError):
    """An action that cannot be done here, without which the layout is still complete."""


Report = Callable[[int, int, ActionResult], None]


def _text(found: list[str]) -> str:
    return "; ".join(found)


class Executor:
    def __init__(
        self,
        plan: Plan,
        journal: Journal,
        keys: Mapping[str, str],
        report: Report | None = None,
    ) -> None:
        self.plan = plan
        self.journal = journal
        self.keys = keys
        self.report = report
        self.guard = Guard(plan)
        self.by_id = {a.id: a for a in plan.actions}
        # Actions whose result is new in this run: what depends on them cannot be skipped.
        self.dirty: set[str] = set()

    # ------------------------------------------------------------ the loop

    def run(self) -> Outcome:
        self.journal.open()
        outcome = Outcome(self.plan.hash, str(self.journal.path), self.journal.resumed)
        self._drop_stale_private_mounts()
        stall = _stall_index()
        total = len(self.plan.actions)
        for n, a in enumerate(self.plan.actions, 1):
            start = time.monotonic()
            try:
                status, message = self._one(a, stall == n)
            except Warned as e:
                status, message = Status.WARNING, e.message
            except ResurgoError as e:
                result = ActionResult(a.id, str(a.kind), a.summary, Status.FAILED, str(e),
                                      time.monotonic() - start)
                outcome.results.append(result)
                self._report(n, total, result)
                outcome.error = f"{a.id} failed: {e}"
                for m, rest in enumerate(self.plan.actions[n:], n + 1):
                    skipped = ActionResult(rest.id, str(rest.kind), rest.summary, Status.NOT_RUN)
                    outcome.results.append(skipped)
                    self._report(m, total, skipped)
                return outcome
            result = ActionResult(a.id, str(a.kind), a.summary, status, message,
                                  time.monotonic() - start)
            outcome.results.append(result)
            self._report(n, total, result)
        return outcome

    def _report(self, n: int, total: int, result: ActionResult) -> None:
        if self.report is not None:
            self.report(n, total, result)

    def _one(self, a: Action, stall: bool) -> tuple[Status, str]:
        depends_dirty = any(d in self.dirty for d in a.depends_on)
        note = ""
        if a.id in self.journal.done and not depends_dirty:
            found = self.check(a)
            if not found:
                return Status.VERIFIED, ""
            note = f"redone: an earlier run did it, but now {_text(found)}"
        if depends_dirty:
            self.dirty.add(a.id)
        if a.kind in DESTRUCTIVE:
            self.release(a)
            self.do(a)
            self.dirty.add(a.id)
        else:
            # Bring-up actions: whatever is already as planned is left as it is.
            if self.check(a):
                self.do(a)
        found = self.check(a)
        if found:
            raise OperationFailed(f"{a.id} ran, but the disks do not show it: {_text(found)}")
        if stall:
            print(f"resurgo: test stall after {a.id}", file=sys.stderr, flush=True)
            time.sleep(3600)
        self.journal.record(a.id, str(a.kind))
        return Status.DONE, note

    # ------------------------------------------------------------ dispatch

    def do(self, a: Action) -> None:
        p = a.params
        if isinstance(p, WipeParams):
            self.wipe(a, p)
        elif isinstance(p, TableParams):
            self.table(a, p)
        elif isinstance(p, MdParams):
            self.md(a, p)
        elif isinstance(p, LuksFormatParams):
            self.luks_format(a, p)
        elif isinstance(p, LuksOpenParams):
            self.luks_open(a, p)
        elif isinstance(p, PvParams):
            self.guard.check(a, p.device)
            run.run(commands.pv_create(p))
        elif isinstance(p, VgParams):
            self.vg(a, p)
        elif isinstance(p, LvParams):
            self.lv(a, p)
        elif isinstance(p, MkfsParams):
            self._format(a, p.device, commands.mkfs(p))
        elif isinstance(p, MkswapParams):
            self._format(a, p.device, commands.mkswap(p))
        elif isinstance(p, SubvolumeParams):
            self.subvolume(a, p)
        elif isinstance(p, SubvolumeDefaultParams):
            self.subvolume_default(a, p)
        elif isinstance(p, MountParams):
            self.mount(a, p)
        else:  # pragma: no cover - the Params union is exhaustive
            raise AssertionError(f"no executor for {a.kind}")

    def check(self, a: Action) -> list[str]:
        """What differs between the plan and the disks for this action (empty: as planned).

        Brings up what an earlier run made and a reboot or crash took down (the kernel's
        partitions, an md array, inactive LVs); it never writes to a device.
        """
        p = a.params
        if isinstance(p, WipeParams):
            return self.check_wipe(a, p)
        if isinstance(p, TableParams):
            return self.check_table(p)
        if isinstance(p, MdParams):
            found = verify.read_md(p.device)
            if not found and all(devices.exists(m) for m in p.members):
                run.run(commands.md_assemble(p), check=False)
                found = verify.read_md(p.device)
            return verify.md_differences(found, p)
        if isinstance(p, LuksFormatParams):
            return verify.signature_differences(
                verify.read_signature(p.device), p.device, "crypto_LUKS", p.uuid,
                version=str(p.version))
        if isinstance(p, LuksOpenParams):
            return self.check_luks_open(p)
        if isinstance(p, PvParams):
            return verify.signature_differences(
                verify.read_signature(p.device), p.device, "LVM2_member", p.uuid)
        if isinstance(p, VgParams):
            return self.check_vg(p)
        if isinstance(p, LvParams):
            return self.check_lv(p)
        if isinstance(p, MkfsParams):
            return verify.signature_differences(
                verify.read_signature(p.device), p.device, str(p.type), p.uuid, p.label)
        if isinstance(p, MkswapParams):
            return verify.signature_differences(
                verify.read_signature(p.device), p.device, "swap", p.uuid, p.label)
        if isinstance(p, SubvolumeParams):
            return self.check_subvolume(p)
        if isinstance(p, SubvolumeDefaultParams):
            return self.check_default(p)
        if isinstance(p, MountParams):
            num = devices.devnum(devices.kname(p.device)) if devices.exists(p.device) else None
            return verify.mounted_as_planned(mounts.read_mountinfo(), p, num)
        raise AssertionError(f"no check for {a.kind}")  # pragma: no cover

    # ------------------------------------------------------------ releasing our own uses

    def release(self, a: Action) -> None:
        """Before rewriting a device: unmount recovery's own mounts of it and what is on it.

        A rerun may redo an action whose device an earlier run mounted under the root (or
        under the private run directory). Any other use is left alone: the command fails.
        """
        p = a.params
        if isinstance(p, MdParams):
            targets = [*p.members, *p.spares]
        elif isinstance(p, VgParams):
            targets = list(p.devices)
        elif isinstance(p, LvParams):
            return
        else:
            targets = [p.device]
        names: set[str] = set()
        for t in targets:
            if devices.exists(t):
                names |= devices.built_on(devices.kname(t))
        if not names:
            return
        entries = mounts.read_mountinfo()
        ours = [e for e in devices.mounts_on(names, entries)
                if devices.is_ours(e.mountpoint, self.plan.root)]
        for e in sorted(ours, key=lambda e: e.mountpoint.count("/"), reverse=True):
            run.run(["umount", "--recursive", e.mountpoint], check=False)

    def _drop_stale_private_mounts(self) -> None:
        """Top-level btrfs mounts an earlier run left in the run directory when killed.

        Only those on this plan's disks: another recovery may be running beside this one.
        """
        entries = mounts.read_mountinfo()
        prefix = str(devices.RUN_DIR) + "/"
        targets = set(self.guard.targets.values())
        for e in reversed(entries):
            if not e.mountpoint.startswith(prefix) or not e.source.startswith("/dev/"):
                continue
            if not devices.exists(e.source) or not devices.disks_under(e.source) <= targets:
                continue
            run.run(["umount", e.mountpoint], check=False)
            with contextlib.suppress(OSError):
                os.rmdir(e.mountpoint)

    # ------------------------------------------------------------ disks and tables

    def wipe(self, a: Action, p: WipeParams) -> None:
        self.guard.check(a, p.device)
        disk = devices.kname(p.device)
        # The old partitions' signatures first: a new partition at the same offset would
        # otherwise show the old filesystem or md superblock again.
        for _n, part in sorted(blockdev.partitions_of(disk).items()):
            path = f"/dev/{part.kname}"
            if devices.exists(path):
                self.guard.check(a, path)
                run.run(["wipefs", "--all", path])
        run.run(["wipefs", "--all", p.device])
        # The kernel forgets the old partitions (the new table, if any, brings its own).
        run.run(["partx", "--delete", p.device], check=False)

    def check_wipe(self, a: Action, p: WipeParams) -> list[str]:
        sig = verify.read_signature(p.device)
        if not sig.get("TYPE") and not sig.get("PTTYPE"):
            return []
        # Not blank: it must be what a later action of this plan put on the disk itself.
        for later in self.plan.actions:
            if later.id == a.id or not _writes_directly(later, p.device):
                continue
            if not self.check(later):
                return []
        what = sig.get("PTTYPE") or sig.get("TYPE")
        return [f"{p.device} holds a {what} that is not the plan's"]

    def table(self, a: Action, t: TableParams) -> None:
        self.guard.check(a, t.device)
        run.run(
            ["sfdisk", "--quiet", "--wipe", "always", "--wipe-partitions", "always",
             "--no-reread", "--no-tell-kernel", t.device],
            input=sfdisk_script(t),
        )
        self._sync_kernel(t)
        for e in t.partitions:
            if e.kind != PartitionKind.EXTENDED:
                self.guard.check(a, e.device)
                run.run(["wipefs", "--all", e.device])

    def _sync_kernel(self, t: TableParams) -> None:
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
                f"the kernel does not use the new partitions of {t.device}: {_text(found)}",
                "something holds the old ones (mounted, swap, md, dm); release it and rerun",
            )

    def check_table(self, t: TableParams) -> list[str]:
        found = verify.table_differences(verify.read_table(t.device), t)
        if found:
            return found
        if verify.kernel_differences(devices.kernel_partitions(t.device), t):
            self._sync_kernel(t)
        return []

    # ------------------------------------------------------------ md, LUKS, LVM

    def md(self, a: Action, p: MdParams) -> None:
        members = [*p.members, *p.spares]
        for m in members:
            self.guard.check(a, m)
        # An array an earlier, interrupted run made of these very members: stop it to
        # create it afresh (it was not journaled, so nothing can rely on it).
        for holder in sorted(self._holders(members)):
            if holder.startswith("md") and set(self._md_members(holder)) <= self._knames(members):
                run.run(["mdadm", "--stop", f"/dev/{holder}"])
        run.run(commands.md_create(p))
        devices.wait_for_nodes([p.device])

    def _holders(self, paths: list[str]) -> set[str]:
        out: set[str] = set()
        for path in paths:
            if devices.exists(path):
                out |= set(blockdev.read_device(devices.kname(path)).holders)
        return out

    def _knames(self, paths: list[str]) -> set[str]:
        return {devices.kname(p) for p in paths if devices.exists(p)}

    def _md_members(self, md: str) -> tuple[str, ...]:
        return devices.slaves(md)

    def luks_format(self, a: Action, p: LuksFormatParams) -> None:
        self.guard.check(a, p.device)
        # A mapping an interrupted run opened on it: close it to format afresh.
        for holder in sorted(self._holders([p.device])):
            name = devices.dm_name(holder)
            if name is not None and name in self._luks_names():
                run.run(["cryptsetup", "close", name])
        run.run(commands.luks_format(p), input=self._key(p.volume))

    def _luks_names(self) -> set[str]:
        return {a.params.name for a in self.plan.actions if isinstance(a.params, LuksOpenParams)}

    def _key(self, volume: str) -> str:
        key = self.keys.get(volume)
        if key is None:
            raise OperationFailed(f"no key for the LUKS volume {volume}",
                                  f"give one with --key-file {volume}=FILE")
        return key

    def luks_open(self, a: Action, p: LuksOpenParams) -> None:
        self.guard.check(a, p.device)
        if devices.exists(p.mapped):
            raise OperationFailed(
                f"{p.mapped} exists but is not {p.device} opened",
                f"close it (cryptsetup close {p.name}) and run again")
        run.run(commands.luks_open(p), input=self._key(p.volume))
        devices.wait_for_nodes([p.mapped])

    def check_luks_open(self, p: LuksOpenParams) -> list[str]:
        if not devices.exists(p.mapped):
            return [f"{p.mapped} is not open"]
        under = devices.slaves(devices.kname(p.mapped))
        if not devices.exists(p.device) or under != (devices.kname(p.device),):
            return [f"{p.mapped} is not {p.device} opened"]
        return []

    def vg(self, a: Action, p: VgParams) -> None:
        for d in p.devices:
            self.guard.check(a, d)
        if verify.read_lvm("vg", "vg_name", p.name):
            # A group of this name made by an interrupted run on these very PVs goes;
            # one anywhere else is not ours to touch.
            if not self._vg_on(p.name, p.devices):
                raise OperationFailed(
                    f"a volume group {p.name} already exists on other devices",
                    "rename it (vgrename) or remove it, then run again")
            run.run(["lvm", "vgremove", "--yes", "--force", p.name])
        run.run(commands.vg_create(p))

    def _vg_on(self, name: str, devs: tuple[str, ...]) -> bool:
        # One row per physical volume of the group.
        rows = verify.read_lvm("vg", "vg_name,pv_name", name)
        ours = self._knames(list(devs))
        pvs = {devices.kname(r["pv_name"]) for r in rows if devices.exists(r.get("pv_name", ""))}
        return bool(pvs) and pvs <= ours

    def check_vg(self, p: VgParams) -> list[str]:
        rows = verify.read_lvm("vg", "vg_name,vg_extent_size,pv_count", p.name)
        found = verify.vg_differences(rows, p.name, p.extent_size, len(p.devices))
        if not found and not self._vg_on(p.name, p.devices):
            found = [f"{p.name} is not on {', '.join(p.devices)}"]
        return found

    def lv(self, a: Action, p: LvParams) -> None:
        vg = next((x.params for x in self.plan.actions
                   if isinstance(x.params, VgParams) and x.params.name == p.vg_name), None)
        for d in (vg.devices if vg is not None else p.devices):
            self.guard.check(a, d)
        if verify.read_lvm("lv", "lv_name", f"{p.vg_name}/{p.name}"):
            run.run(["lvm", "lvremove", "--yes", "--force", f"{p.vg_name}/{p.name}"])
        run.run(commands.lv_create(p))
        if p.type != "thin-pool":
            devices.wait_for_nodes([p.device])

    def check_lv(self, p: LvParams) -> list[str]:
        fields = "lv_name,vg_name,segtype,lv_active"
        rows = verify.read_lvm("lv", fields, f"{p.vg_name}/{p.name}")
        found = verify.lv_differences(rows, p)
        if found or p.type == "thin-pool":
            return found
        if not verify.lv_active(rows):
            run.run(commands.vg_activate(p.vg_name), check=False)
            rows = verify.read_lvm("lv", fields, f"{p.vg_name}/{p.name}")
            if not verify.lv_active(rows):
                return [f"{p.vg_name}/{p.name} is not active"]
        return []

    # ------------------------------------------------------------ filesystems

    def _format(self, a: Action, device: str, argv: list[str]) -> None:
        self.guard.check(a, device)
        # Old signatures go first: mkfs.btrfs refuses a UUID it still sees on the device.
        run.run(["wipefs", "--all", device])
        run.run(argv)

    @contextlib.contextmanager
    def top_level(self, a: Action, device: str) -> Iterator[str]:
        """The btrfs's top level mounted privately (subvolume ids differ from the saved ones,
        so subvolumes are made and found by path)."""
        self.guard.check(a, device)
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

    def subvolume(self, a: Action, p: SubvolumeParams) -> None:
        with self.top_level(a, p.device) as top:
            path = confine.under_root(top, p.path)
            if not verify.is_subvolume(path):
                confine.make_dirs(top, os.path.dirname(path))
                run.run(["btrfs", "subvolume", "create", path])
            if p.readonly:
                run.run(["btrfs", "property", "set", "-ts", path, "ro", "true"])

    def check_subvolume(self, p: SubvolumeParams) -> list[str]:
        a = self._action_of(p)
        with self.top_level(a, p.device) as top:
            path = confine.under_root(top, p.path)
            if not verify.is_subvolume(path):
                return [f"there is no subvolume {p.path} on {p.device}"]
            ro = run.output(["btrfs", "property", "get", "-ts", path, "ro"]).strip()
            if (ro == "ro=true") != p.readonly:
                return [f"subvolume {p.path} is {ro}"]
        return []

    def subvolume_default(self, a: Action, p: SubvolumeDefaultParams) -> None:
        with self.top_level(a, p.device) as top:
            # The saved default was an id; ids are not kept, so it is found by its path.
            new_id = verify.parse_rootid(
                run.output(["btrfs", "inspect-internal", "rootid",
                            confine.under_root(top, p.path)]))
            run.run(["btrfs", "subvolume", "set-default", str(new_id), top])

    def check_default(self, p: SubvolumeDefaultParams) -> list[str]:
        a = self._action_of(p)
        with self.top_level(a, p.device) as top:
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

    def _action_of(self, p: object) -> Action:
        return next(a for a in self.plan.actions if a.params is p)

    def mount(self, a: Action, p: MountParams) -> None:
        self.guard.check(a, p.device)
        # The mountpoint joined to the root again, as a check: the plan's target must be
        # it, under the root, and reached through directories only (mount follows links).
        target = confine.under_root(self.plan.root, p.mountpoint)
        if target != os.path.normpath(p.target):
            raise OperationFailed(f"refusing to mount on {p.target}: the root {self.plan.root} "
                                  f"and mountpoint {p.mountpoint} name {target}")
        confine.make_dirs(self.plan.root, target)
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


def _writes_directly(a: Action, disk: str) -> bool:
    p = a.params
    if isinstance(p, TableParams | MkfsParams | MkswapParams | LuksFormatParams | PvParams):
        return p.device == disk
    if isinstance(p, MdParams):
        return disk in p.members or disk in p.spares
    return False


def _kernel_knows(fstype: str, proc: Path = PROC_FILESYSTEMS) -> bool:
    try:
        text = proc.read_text()
    except OSError:
        return True
    return any(line.split()[-1] == fstype for line in text.splitlines() if line.split())


def _stall_index() -> int | None:
    value = os.environ.get(ENV_TEST_STALL, "")
    return int(value) if value.isdigit() else None
