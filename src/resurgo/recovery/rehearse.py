"""rehearse_sets: a recovery set restored by its own rescue image onto blank virtual disks,
the recovered system booted alone and checked from inside, each phase timed.

For each set (the one named, the newest of a host, or the newest of every host):

1. the set read with every check recover makes (recovery.load: its signature with trusted
   signers, every file of it and of its chain there, its description valid, its
   manifests); sparse disk images sized as the saved disks (--grow) planned, and the
   work directory checked for room (rehearse.images);
   An encrypted set is read with --identity (every manifest's head and its sealed
   secret files decrypted: rehearse.identity), refused without one;
2. the set and the sets it builds on copied, each file checked against its digest, onto
   an ext4 image of their own (the medium disk: the rescue is told its label); the
   set's rescue image copied out (or, when the set has none, one built as `resurgo
   rescue` builds it), its kernel and initramfs read out of it; what the rescue needs
   that is secret (an encrypted set's identity, a network medium's credentials) on a
   key disk of the run's own, removed as soon as the rescue's boot ends;
3. qemu (KVM when a probe boot under it works, else TCG) boots that kernel with the
   default entry's command line and the rehearsal's words: it recovers the set
   unattended onto the blank images, tells its steps on the serial console, and powers
   off;
4. the recovered images boot alone (no network, same bus and firmware), the check the
   rescue installed reports each property and a result, and powers off;
5. the report: the phases' times, the checks, the failing step and the console's end;
   recorded for status (recovery.results) and stored beside the set (rehearsal.json,
   signed with a sign key).

Nothing but the run's own files is ever opened for writing: no real disk is touched.
qemu is stopped on every path out (rehearse.console.Guest), and the work directory is
removed unless kept.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from resurgo import run, signing
from resurgo.errors import BadInput, PreconditionFailed, ResurgoError
from resurgo.media import Medium, MediumOptions, SetInfo
from resurgo.media.setindex import RESCUE, content_pin
from resurgo.media.url import FloppySpec, parse_url
from resurgo.model import Firmware
from resurgo.packages import PACKAGES
from resurgo.recovery import results, setfiles
from resurgo.recovery.load import LoadedSet, choose_set, load_set
from resurgo.recovery.restore import totals
from resurgo.rehearse import identity, images, network
from resurgo.rehearse.console import DEAD_ENDS, RESCUE_DEAD_ENDS, Guest, tail
from resurgo.rehearse.machine import (
    Accel,
    Bus,
    Drive,
    FirmwareChoice,
    Machine,
    Ovmf,
    boot_order,
    choose_firmware,
    find_ovmf,
    plan_disks,
    qemu_argv,
)
from resurgo.rehearse.report import (
    STORED,
    STORED_SIGNATURE,
    MachineInfo,
    Rehearsal,
    RehearseReport,
)
from resurgo.rehearse.rescueboot import (
    KvmDecision,
    RescueFiles,
    command_line,
    direct,
    extract,
    kvm_decision,
    kvm_device_usable,
    probe_kvm,
    read_config,
)
from resurgo.rehearse.timeline import BootRun, Verdict, rescue_failure, verdict

log = logging.getLogger("resurgo.rehearse")

QEMU = "qemu-system-x86_64"
DEFAULT_WORK_DIR = Path("/var/tmp/resurgo-rehearse")
GiB = 1 << 30
# Timeouts, by accelerator: a recovery of the whole-cycle source (about 1 GiB of files)
# took about 4 minutes under TCG on a 2-core machine; the first boot about 40 s.
RESCUE_BASE = {Accel.TCG: 1200.0, Accel.KVM: 420.0}
RESCUE_PER_GIB = {Accel.TCG: 600.0, Accel.KVM: 120.0}
BOOT_TIMEOUT = {Accel.TCG: 900.0, Accel.KVM: 300.0}
# After the check's result, the recovered system powers itself off.
AFTER_RESULT = 60.0
# A rescue image the rehearsal builds, for the room check.
BUILT_RESCUE = 256 << 20
MEDIUM_SERIAL = "rehearse-medium"
KEYS_SERIAL = "rehearse-keys"
AHCI_PORTS = 6


@dataclass(frozen=True)
class BuildOptions:
    """How to build a rescue image for a set that holds none (as `resurgo rescue`)."""

    sysroot: Path = Path("/")
    kernel_root: Path | None = None
    kernel_version: str | None = None
    extra_modules: tuple[str, ...] = ()
    extra_programs: tuple[str, ...] = ()


@dataclass(frozen=True)
class RehearseOptions:
    # Which sets: the one named; the newest of a host; the newest of every host. None of
    # them: the newest of ``this_host``, else the newest when the medium holds one host's.
    set_id: str | None = None
    host: str | None = None
    all_hosts: bool = False
    this_host: str | None = None
    bus: Bus = Bus.VIRTIO
    firmware: FirmwareChoice = FirmwareChoice.AUTO
    # The disks this many percent larger than the saved ones.
    grow: int = 0
    memory_mib: int = 2048
    cpus: int = 2
    # kvm, tcg, or None: KVM when a probe boot under it works.
    accel: Accel | None = None
    work_dir: Path = DEFAULT_WORK_DIR
    keep: bool = False
    # Seconds the rescue and the first boot get (None: by the accelerator and the data).
    rescue_timeout: float | None = None
    boot_timeout: float | None = None
    build: BuildOptions = field(default_factory=BuildOptions)
    # Signs the report stored beside the set.
    sign_key: signing.SignKey | None = None
    # Where the result for status goes (default: the state directory), and whether.
    state_dir: Path | None = None
    record: bool = True
    # Whether the report is stored beside the set on its medium.
    store: bool = True
    # How the host reaches the medium: what the rescue of a set on the network is handed
    # (rehearse.network), with the host's S3 environment and ~/.aws.
    medium: MediumOptions = field(default_factory=MediumOptions)
    # The age identity of encrypted sets (rehearse.identity).
    identity: Path | None = None


Say = Callable[[str], None]


def check_medium_url(url: str) -> None:
    """A medium a rehearsal can hand to its rescue: a directory (as a disk of its own), an
    sftp://, s3://, nfs:// or cifs:// one (over qemu's user network: rehearse.network)."""
    spec = parse_url(url)
    if isinstance(spec, FloppySpec):
        raise BadInput(f"{url} is a floppy image: it holds a description, no data to restore")


def require_tools(*, build: bool) -> None:
    """The programs a rehearsal runs, there before anything is made (exit 3)."""
    needed = [QEMU, "mke2fs", "xorriso"]
    missing = [p for p in needed if run.which(p) is None]
    if missing:
        packages = sorted({PACKAGES.get(p) or p for p in missing})
        raise PreconditionFailed(
            f"rehearse needs {', '.join(missing)}, not installed here",
            f"install them: apt-get install {' '.join(packages)}",
        )
    if build:
        from resurgo.rescue.iso import require_tools as rescue_tools

        try:
            rescue_tools()
        except ResurgoError as e:
            raise PreconditionFailed(
                f"the set holds no rescue image, and one cannot be built here: {e.message}",
                e.hint) from None


def chosen_sets(medium: Medium, opts: RehearseOptions) -> list[SetInfo]:
    if opts.set_id is not None:
        return [choose_set(medium, opts.set_id)]
    every = medium.list_sets()
    if opts.all_hosts or opts.host is not None:
        newest: dict[str, SetInfo] = {}
        for s in every:  # oldest first: the last of each host wins
            newest[s.host or "?"] = s
        if opts.host is not None:
            if opts.host not in newest:
                raise BadInput(f"{medium.url} holds no set of host {opts.host}",
                               "resurgo list MEDIUM shows the sets and their hosts")
            return [newest[opts.host]]
        if not newest:
            choose_set(medium, None)  # says why (none, or none authentic)
        return [newest[h] for h in sorted(newest)]
    mine = [s for s in every if opts.this_host is not None and s.host == opts.this_host]
    if mine:
        return [mine[-1]]
    return [choose_set(medium, None)]


def rehearse_sets(medium: Medium, opts: RehearseOptions, say: Say) -> RehearseReport:
    """Rehearse the sets the options choose, one after the other."""
    check_medium_url(medium.url)
    sets = chosen_sets(medium, opts)
    require_tools(build=not all(s.has_rescue for s in sets))
    done: list[Rehearsal] = []
    errors: list[tuple[str, str, int]] = []
    state = _RunState()
    for info in sets:
        try:
            done.append(rehearse_one(medium, info, opts, say, state))
        except ResurgoError as e:
            if len(sets) == 1:
                raise
            say(f"set {info.id}: not rehearsed: {e}")
            errors.append((info.id, str(e), int(e.exit_code)))
            _record(opts, medium, info, None, str(e))
    return RehearseReport(tuple(done), tuple(errors))


@dataclass
class _RunState:
    """What one run decides once for all its sets."""

    accel: KvmDecision | None = None


def data_bytes(loaded: LoadedSet) -> int:
    """What the recovery will write: the file data the manifests list (else what the
    description says the filesystems held)."""
    total = 0
    for unit in loaded.units:
        amount = totals(loaded, unit)
        if amount is not None:
            total += amount.bytes
    if total == 0:
        total = sum(f.state.used_bytes or 0 for f in loaded.description.filesystems
                    if f.state is not None)
    return total


def rehearse_one(medium: Medium, info: SetInfo, opts: RehearseOptions, say: Say,
                 state: _RunState) -> Rehearsal:
    started = time.monotonic()
    # What the rescue needs to reach and open the set (an encrypted set's identity, what
    # a network medium needs), or why it cannot be had: before the set is read.
    age_key = _identity(info, opts)
    reach = _network(medium, opts)
    on_key_disk = dict(reach.secrets) if reach is not None else {}
    if age_key is not None:
        on_key_disk[identity.AGE_IDENTITY] = age_key
    say(f"set {info.id} (host {info.host or '?'}): reading it with its checks"
        + (", its archives opened with --identity" if age_key is not None else ""))
    loaded = load_set(medium, info.id,
                      identity=opts.identity if age_key is not None else None)
    desc = loaded.description
    firmware = choose_firmware(opts.firmware, desc)
    disks = plan_disks(desc, opts.grow)
    extra_disks = (1 if reach is None else 0) + (1 if on_key_disk else 0)
    if opts.bus is Bus.SATA and len(disks) + extra_disks > AHCI_PORTS:
        raise BadInput(f"--disk-bus sata: the set has {len(disks)} disks, and an AHCI "
                       f"controller {AHCI_PORTS} ports with the medium's and key disks",
                       "use --disk-bus virtio, nvme or scsi")
    ovmf = _ovmf(firmware)
    chain = list(loaded.chain.values())
    rescue_entry = loaded.reader.index.file(RESCUE)
    room = images.room_needed(
        data_bytes(loaded), len(desc.filesystems) + len(desc.swaps), disks,
        sum(r.index.size for r in chain) if reach is None else 0,
        rescue_entry.size if rescue_entry is not None else BUILT_RESCUE)
    try:
        opts.work_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        raise PreconditionFailed(f"cannot make the work directory {opts.work_dir}: "
                                 f"{e.strerror}", "give another with --work-dir DIR") from None
    images.check_room(opts.work_dir, room)
    say(f"room in {opts.work_dir}: {room.text()} needed")
    with images.work_dir(opts.work_dir, info.id, opts.keep) as work:
        medium_drive = None
        if reach is None:
            say("copying the set onto its disk, every file checked")
            staged = images.stage_sets(medium, chain, work / "medium")
            medium_drive = Drive(images.medium_disk(work / "medium", work / "medium.img",
                                                    staged), MEDIUM_SERIAL, read_only=True)
            images.remove_tree(work / "medium")
        files, rescue_from = _rescue(loaded, opts, work, say, reach,
                                     age_key is not None)
        if state.accel is None:
            state.accel = _accel(opts, files, work)
        accel = state.accel
        say(f"virtual machine: {accel.reason}; {firmware}, {opts.bus}")
        ordered = boot_order(desc, disks)
        drives = tuple(Drive(images.sparse_image(work / d.file, d.size), d.serial,
                             d.sector_size) for d in ordered)
        machine = Machine(accel.accel, firmware, opts.bus, opts.memory_mib, opts.cpus,
                          drives, ovmf, _ovmf_vars(ovmf, work))
        reach_text = _reach_text(reach, on_key_disk)
        try:
            extra = [] if medium_drive is None else [medium_drive]
            if reach is not None or on_key_disk:
                say(f"the rescue reaches {reach_text}")
            if on_key_disk:
                extra.append(Drive(network.key_disk(work / "keys", work / "keys.img",
                                                    on_key_disk),
                                   KEYS_SERIAL, read_only=True))
            rescue_run = _rescue_boot(machine, files, info.id, tuple(extra), reach,
                                      bool(on_key_disk), work, opts, data_bytes=room.data,
                                      say=say)
        finally:
            if on_key_disk:
                # Nothing secret outlives the rescue's boot, whatever happened, --keep or not.
                (work / "keys.img").unlink(missing_ok=True)
        boot_run = None
        if rescue_failure(rescue_run) is None:
            boot_run = _first_boot(machine, work, opts, say)
        result = verdict(rescue_run, boot_run, time.monotonic() - started)
        failed_log = (work / "first-boot.log" if boot_run is not None
                      else work / "rescue.log")
        console_tail = tuple(tail(failed_log)) if not result.ok else ()
        rehearsal = Rehearsal(
            info.id, info.host, medium.url, info.created, datetime.now(UTC), result,
            MachineInfo(str(accel.accel), accel.reason, str(firmware), str(opts.bus),
                        opts.memory_mib, opts.cpus, rescue_from, ordered, reach_text),
            console_tail, str(work) if opts.keep else None)
    warnings = _store(medium, rehearsal, opts)
    if warnings:
        rehearsal = Rehearsal(**{**rehearsal.__dict__, "warnings": tuple(warnings)})
    _record(opts, medium, info, rehearsal.verdict, None)
    return rehearsal


def _identity(info: SetInfo, opts: RehearseOptions) -> bytes | None:
    """An encrypted set's identity for the rescue's key disk (None for a set in clear);
    refused when missing or unusable unattended."""
    if not setfiles.encrypted(info.labels):
        return None
    if opts.identity is None:
        raise identity.missing(info.id, setfiles.recipients(info.labels))
    return identity.read_identity(opts.identity)


def _reach_text(reach: network.NetworkMedium | None, on_key_disk: dict[str, bytes]) -> str:
    """How the rescue reaches the set, and what its key disk holds (names only)."""
    where = "a disk of its own" if reach is None else reach.describe(keys=False)
    if on_key_disk:
        where += f", {', '.join(sorted(on_key_disk))} on a key disk"
    return where


def _network(medium: Medium, opts: RehearseOptions) -> network.NetworkMedium | None:
    """How the rescue reaches a set on the network (None: a directory, staged on a
    disk); what cannot work is refused here, before anything is made."""
    if not network.is_network(medium.url):
        return None
    return network.plan(medium.url, opts.medium, medium.backend.host_key_line(),
                        environ=os.environ, home=Path.home())


def _ovmf(firmware: Firmware) -> Ovmf | None:
    if firmware is not Firmware.UEFI:
        return None
    found = find_ovmf()
    if found is None:
        raise PreconditionFailed("the set was saved on UEFI (or --firmware uefi), and no "
                                 "OVMF firmware is installed for qemu",
                                 "install it: apt-get install ovmf (or --firmware bios)")
    return found


def _ovmf_vars(ovmf: Ovmf | None, work: Path) -> Path | None:
    """A copy of OVMF's variables, the machine's NVRAM for both its boots."""
    if ovmf is None or ovmf.vars_template is None:
        return None
    dest = work / "OVMF_VARS.fd"
    fd = images.new_file(dest)
    with os.fdopen(fd, "wb") as out, open(ovmf.vars_template, "rb") as src:
        shutil.copyfileobj(src, out)
    return dest


def _rescue(loaded: LoadedSet, opts: RehearseOptions, work: Path, say: Say,
            reach: network.NetworkMedium | None, encrypted: bool) -> tuple[RescueFiles, str]:
    iso = work / "rescue.iso"
    if loaded.reader.index.file(RESCUE) is not None:
        say("copying the set's rescue image out, checked")
        images.copy_out(loaded.reader, RESCUE, iso)
        source = "set"
    else:
        say("the set holds no rescue image: building one as `resurgo rescue` would")
        _build_rescue(loaded, opts, work, iso, say)
        source = "built"
    files = extract(iso, work / "rescue")
    config = None
    if encrypted or (reach is not None and reach.medium_table is not None):
        raw = read_config(iso, work / "rescue" / "rescue.json")
        config = network.rescue_config(raw) if raw is not None else None
    if encrypted:
        identity.check_image(config)
    if reach is not None:
        network.append_overlay(files.initrd, network.overlay_files(reach, config))
    iso.unlink()
    return files, source


def _build_rescue(loaded: LoadedSet, opts: RehearseOptions, work: Path, iso: Path,
                  say: Say) -> None:
    from resurgo.recovery.setfiles import DESCRIPTION
    from resurgo.rescue import After, RescueOptions, build_rescue_image

    desc_file = work / "description.toml"
    images.copy_out(loaded.reader, DESCRIPTION, desc_file)
    trust = loaded.medium.trust
    b = opts.build
    options = RescueOptions(
        description=desc_file, unattended=True, after=After.POWEROFF, menu_timeout=0,
        sysroot=b.sysroot, kernel_root=b.kernel_root, kernel_version=b.kernel_version,
        extra_modules=b.extra_modules, extra_programs=b.extra_programs,
        trusted_signers=trust.text if trust is not None else None,
        set_id=loaded.id,
        set_pin=content_pin(loaded.id, loaded.reader.files(), RESCUE),
    )
    build_rescue_image(iso, options, lambda what: say(f"building the rescue image: {what}"))


def _accel(opts: RehearseOptions, files: RescueFiles, work: Path) -> KvmDecision:
    if opts.accel is Accel.TCG:
        return KvmDecision(Accel.TCG, "software emulation (TCG), as asked")
    if opts.accel is Accel.KVM:
        if not kvm_device_usable():
            raise PreconditionFailed("--accel kvm: /dev/kvm is not usable here",
                                     "leave --accel out: software emulation is used then")
        return KvmDecision(Accel.KVM, "KVM, as asked")
    if not kvm_device_usable():
        return kvm_decision(False, None, False)
    return probe_kvm(QEMU, files.kernel, work / "kvm-probe.log")


def _rescue_timeout(opts: RehearseOptions, accel: Accel, data: int) -> float:
    if opts.rescue_timeout is not None:
        return opts.rescue_timeout
    return RESCUE_BASE[accel] + RESCUE_PER_GIB[accel] * data / GiB


def _rescue_boot(machine: Machine, files: RescueFiles, set_id: str, extra: tuple[Drive, ...],
                 reach: network.NetworkMedium | None, keys: bool, work: Path,
                 opts: RehearseOptions, *, data_bytes: int, say: Say) -> BootRun:
    """The rescue's boot: the blank disks, the medium's disk (a directory medium) and the
    key disk (with ``keys``), and for a network medium a NIC on qemu's user network."""
    with_medium = Machine(**{**machine.__dict__, "network": reach is not None,
                             "drives": (*machine.drives, *extra)})
    keys_label = network.KEYS_LABEL if keys else None
    if reach is None:
        append = command_line(files.default_args, set_id, accel=machine.accel,
                              medium_label=images.MEDIUM_LABEL, keys_label=keys_label)
    else:
        append = command_line(files.default_args, set_id, accel=machine.accel,
                              medium_label=None, from_url=reach.url,
                              keys_label=keys_label)
    argv = qemu_argv(with_medium, direct(files, append), QEMU)
    timeout = _rescue_timeout(opts, machine.accel, data_bytes)
    say(f"booting the rescue (at most {timeout:.0f} s): it recovers the set unattended")
    with Guest(argv, work / "rescue.log", RESCUE_DEAD_ENDS) as guest:
        seen = _Progress(guest, say)
        ended = seen.wait(timeout)
        dead = guest.dead_end
        run_ = BootRun(tuple(guest.messages), round(guest.seconds, 1), not ended,
                       guest.exited, dead[1] if dead else None)
    say(f"the rescue came to a dead end ({run_.dead_end}), stopped after {run_.seconds:.0f} s"
        if run_.dead_end else
        f"the rescue {'powered off' if ended else 'was stopped'} after {run_.seconds:.0f} s")
    return run_


def _first_boot(machine: Machine, work: Path, opts: RehearseOptions, say: Say) -> BootRun:
    argv = qemu_argv(machine, None, QEMU)
    timeout = opts.boot_timeout or BOOT_TIMEOUT[machine.accel]
    say(f"booting the recovered disks alone (at most {timeout:.0f} s)")
    with Guest(argv, work / "first-boot.log", DEAD_ENDS) as guest:
        seen = _Progress(guest, say)
        got = seen.wait(timeout, until="result")
        dead = guest.dead_end
        if got and guest.exited is None and dead is None:
            guest.wait(min(timeout, guest.seconds + AFTER_RESULT))
        run_ = BootRun(tuple(guest.messages), round(guest.seconds, 1),
                       not got, guest.exited, dead[1] if dead else None)
    if any(t.message.kind == "result" for t in run_.messages):
        say(f"the recovered system's check is done after {run_.seconds:.0f} s")
    elif run_.dead_end is not None:
        say(f"the recovered system came to a dead end ({run_.dead_end}): stopped after "
            f"{run_.seconds:.0f} s")
    else:
        say(f"the recovered system gave no result in {run_.seconds:.0f} s")
    return run_


class _Progress:
    """Says each step as its message arrives, while waiting for the guest."""

    def __init__(self, guest: Guest, say: Say) -> None:
        self.guest, self.say, self.told = guest, say, 0

    def wait(self, timeout: float, until: str | None = None) -> bool:
        while True:
            slice_end = min(timeout, self.guest.seconds + 5.0)
            done = self.guest.wait(slice_end, until)
            self._tell()
            if done or self.guest.seconds >= timeout:
                return done

    def _tell(self) -> None:
        messages = self.guest.messages
        for t in messages[self.told:]:
            m = t.message
            if m.kind == "step":
                ok = m.flag("ok")
                what = m.text("event") + ("" if ok is None else " ok" if ok else " FAILED")
                self.say(f"  {t.at:7.1f} s  {m.text('step')}: {what}")
            elif m.kind == "check":
                self.say(f"  {t.at:7.1f} s  check {m.text('name')}: "
                         + ("ok" if m.flag("ok") else "FAILED " + m.text("detail")))
            else:
                self.say(f"  {t.at:7.1f} s  {m.kind}: "
                         + ("ok" if m.flag("ok") else "NOT ok"))
        self.told = len(messages)


def _store(medium: Medium, rehearsal: Rehearsal, opts: RehearseOptions) -> list[str]:
    """rehearsal.json beside the set (and its signature): what cannot be stored is a
    warning, the rehearsal's verdict stands."""
    if not opts.store:
        return []
    data = rehearsal.encoded()
    try:
        if opts.sign_key is not None:
            signature = opts.sign_key.sign(data, signing.REHEARSAL_NAMESPACE)
            medium.write_beside(rehearsal.set_id, STORED_SIGNATURE, signature)
        medium.write_beside(rehearsal.set_id, STORED, data)
    except ResurgoError as e:
        return [f"the report could not be stored beside set {rehearsal.set_id}: {e.message}"]
    return []


def _record(opts: RehearseOptions, medium: Medium, info: SetInfo, result: Verdict | None,
            error: str | None) -> None:
    """The result for status, in the state directory (per host of the set)."""
    if not opts.record:
        return
    ok = result is not None and result.ok
    problems: tuple[str, ...] = ()
    if error is not None:
        problems = (error,)
    elif result is not None and result.failure is not None:
        problems = (f"{result.failure.step}: {result.failure.reason}",)
    total = result.phases.get("total") if result is not None else None
    if ok:
        detail = "restored and booted" + (f" in {total:.0f} s" if total else "")
    elif result is not None and result.failure is not None:
        detail = f"failed at {result.failure.step}"
    else:
        detail = "not rehearsed"
    record = results.Result(results.Verb.REHEARSE, info.host or "?", results.now(),
                            medium.url, ok, (results.SetResult(info.id, ok, problems),),
                            detail)
    try:
        results.write_result(record, opts.state_dir)
    except OSError as e:
        log.warning("the rehearsal's result could not be recorded for status: %s", e.strerror)
