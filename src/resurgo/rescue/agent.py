"""The rescue system's agent: `python3 -m resurgo.rescue.agent boot`, run by /init.

It loads the drivers, and when the kernel command line asks for it (resurgo.recover=auto
or plan, see cmdline) finds the recovery set and runs resurgo on it as a person would
at the shell, unattended: `resurgo --version`, `resurgo validate`, then `resurgo recover
--from ... --yes` (or `resurgo plan`) with the arguments of resurgo.args and the key
files and the age identity of the key medium (resurgo.keys, see rescue.keys). Everything is
written to every console (serial included) and to /run/resurgo/rescue.log, each line of
its own prefixed "resurgo-rescue:". Once a recover restored data, that log goes into the
recovered system too, as /var/log/resurgo/rescue-TIME.log beside recover's report (in RAM
it would be lost at power-off). Then it powers off, reboots or returns to /init, which
starts the shells (resurgo.after).

With resurgo.rehearse=1 (a rehearsal, `resurgo rehearse`) it also writes its steps and
recover's as lines of the rehearsal protocol on the consoles, and once the recovery
succeeded installs the check the recovered system runs at its first boot (the rehearse
package's docstring lists the lines).

`... agent poweroff` and `... agent reboot` are the rescue's poweroff and reboot.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from resurgo import __version__, digest, private, reports, run, signing
from resurgo.errors import REFUSED_SET, ExitCode, ResurgoError
from resurgo.recovery.setfiles import RESCUE
from resurgo.rehearse import protocol
from resurgo.rescue import access, cmdline, keys, locate, system
from resurgo.rescue.cmdline import After, MediumUrl, Mode, OnDevice, RescueArgs
from resurgo.rescue.layout import (
    CONFIG_PATH,
    DESCRIPTION_PATH,
    KEYS_MOUNT,
    KNOWN_HOSTS_PATH,
    LOG_PATH,
    MEDIUM_MOUNT,
    PRELOAD_MODULES,
    SCAN_DIR,
    SITE_DIR,
)

if TYPE_CHECKING:
    from resurgo.media import Medium

PREFIX = "resurgo-rescue:"
# Where recover writes its steps in rehearsal mode: its own standard output, which the
# agent copies to the consoles as it comes (lines of a few dozen bytes: each write whole).
STEP_LINES = "/proc/self/fd/1"
# A report's time is the kernel's coarse clock, which lags time.time() by up to a tick.
MTIME_SLACK = 1.0
# The agent's own exit code for a bug in it (sysexits' EX_SOFTWARE).
INTERNAL_ERROR = 70


class Console:
    """Every line to every active console and to the log file."""

    def __init__(self, sinks: list[IO[str]]) -> None:
        self.sinks = sinks

    @classmethod
    def open(cls, log_path: Path = LOG_PATH) -> Console:
        sinks: list[IO[str]] = []
        try:
            active = Path("/sys/class/tty/console/active").read_text().split()
        except OSError:
            active = []
        for name in active:
            try:
                sinks.append(open(f"/dev/{name}", "w", buffering=1))  # noqa: SIM115
            except OSError:
                continue
        if not sinks:
            sinks.append(sys.stdout)
        try:
            # 0600 in a 0700 directory, whatever the umask: the log names disks and keys.
            private.makedirs(log_path.parent)
            fd = private.open_fd(log_path, os.O_WRONLY | os.O_APPEND)
            sinks.append(open(fd, "a", buffering=1))  # noqa: SIM115
        except OSError:
            pass
        return cls(sinks)

    def write(self, text: str) -> None:
        # A console that fails (a serial port with nothing behind it) is dropped.
        for s in list(self.sinks):
            try:
                s.write(text)
                s.flush()
            except OSError:
                self.sinks.remove(s)

    def say(self, message: str) -> None:
        for line in message.splitlines() or [""]:
            self.write(f"{PREFIX} [{system.uptime():7.1f}] {line}\n")


class ConsoleLog(logging.Handler):
    """resurgo's warnings (a damaged set skipped while listing) on the consoles."""

    def __init__(self, console: Console) -> None:
        super().__init__(logging.WARNING)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, REFUSED_SET, None) is not None:
            return  # a set refused as not authentic: the agent says it (medium_candidates)
        self.console.say(f"warning: {record.getMessage()}")


@dataclass(frozen=True)
class Config:
    """What the builder wrote into the image (/etc/resurgo/rescue.json)."""

    build_id: str = ""
    from_url: str | None = None
    description_sha256: str | None = None
    host: str | None = None
    set_id: str | None = None
    set_pin: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path = CONFIG_PATH) -> Config:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return cls()
        return cls(
            build_id=str(data.get("build_id", "")),
            from_url=data.get("from_url"),
            description_sha256=data.get("description_sha256"),
            host=data.get("host"),
            set_id=_text(data.get("set_id")),
            set_pin=_text(data.get("set_pin")),
            extra=data,
        )

    @property
    def embedded(self) -> locate.Embedded | None:
        if not DESCRIPTION_PATH.is_file():
            return None
        # Digested as a set index digests its files, to be compared with theirs.
        return locate.Embedded(digest.hex_of(DESCRIPTION_PATH.read_bytes()), self.host,
                               self.set_id, self.set_pin, trust() is not None)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def pinned_hosts() -> Path | None:
    """The SFTP host keys the image carries (save records the server's), if any."""
    return KNOWN_HOSTS_PATH if KNOWN_HOSTS_PATH.is_file() else None


def open_set_medium(url: str) -> Medium:
    """A medium as the rescue reads it: sets checked against the image's signers, an
    SFTP server against the host key the image was saved with (strictly: without one, no
    key is accepted)."""
    from resurgo.media import MediumOptions, SshOptions, open_medium

    hosts = pinned_hosts()
    ssh = SshOptions(known_hosts=str(hosts) if hosts else None, strict_host_keys=True)
    return open_medium(url, MediumOptions(ssh=ssh, trust_file=trust_file()))


def trust_file() -> Path | None:
    """The signers this image trusts (the builder wrote them where every resurgo command
    looks): then every set is checked, here and by the commands the agent runs."""
    return signing.DEFAULT_TRUST if signing.DEFAULT_TRUST.exists() else None


def trust() -> signing.Trust | None:
    path = trust_file()
    return None if path is None else signing.Trust.load(path)


class Agent:
    def __init__(self, console: Console, config: Config, args: RescueArgs,
                 prompt: Callable[[str], str] | None = None) -> None:
        self.console = console
        # How a person answers at the console (resurgo.recover=ask).
        self.prompt = prompt or self.console_prompt
        self.say = console.say
        self.config = config
        self.args = args
        self.seen_aliases: set[str] = set()
        self.network_up = False
        # Sets found but refused as not authentic: with any, nothing is done without a set.
        self.refused: list[str] = []
        # The description of the set chosen, once it is (read through the set's index).
        self.description: Path | None = None
        # The key medium's directory once mounted (resurgo.keys), and how the network
        # medium is reached (credentials from it or from the image), once asked.
        self.keys_dir: Path | None = None
        self.medium_access: access.Access | None = None

    def rehearsal(self, kind: str, **fields: str | int | bool) -> None:
        """A line of the rehearsal protocol on the consoles, in rehearsal mode."""
        if self.args.rehearse:
            self.console.write(protocol.line(kind, **fields))

    def set_step(self, ok: bool) -> None:
        self.rehearsal("step", step="set", event="end", ok=ok)

    # ---------------------------------------------------------------- setup

    def drivers(self) -> None:
        system.load_modules(list(PRELOAD_MODULES))
        n = system.coldplug(self.seen_aliases)
        self.say(f"drivers loaded for {n} device aliases")

    def mount_boot_medium(self) -> str | None:
        """Mount the medium this image booted from (an ISO 9660 filesystem holding this
        build's id) read-only: mounted, its disk counts as the running system's, which
        recovery never takes as a target (the USB stick the image was written to)."""
        if not self.config.build_id:
            return None
        for kname in system.block_devices():
            dev = f"/dev/{kname}"
            if system.probe(dev).get("TYPE") != "iso9660":
                continue
            if not system.mount_ro(dev, "iso9660", MEDIUM_MOUNT):
                continue
            try:
                data = json.loads((MEDIUM_MOUNT / "resurgo/rescue.json").read_text())
                if data.get("build_id") == self.config.build_id:
                    return dev
            except (OSError, ValueError):
                pass
            system.umount(MEDIUM_MOUNT)
        return None

    def open_medium(self, url: str) -> Medium:
        """A medium to list and read sets from; a network one with the image's settings
        and the credentials of the key medium or the image (rescue.access)."""
        if "://" not in url:
            return open_set_medium(url)
        return self.access().open(url)

    def access(self) -> access.Access:
        if self.medium_access is None:
            keys_dir = None
            if self.args.keys is not None:
                try:
                    keys_dir = self.keys_directory(self.args.keys)
                except (locate.NoChoice, ResurgoError) as e:
                    self.say(f"no credentials from the key medium: {e}")
            self.medium_access = access.rescue_access(
                self.config.extra.get("medium"), known_hosts=pinned_hosts(),
                trust_file=trust_file(), keys_dir=keys_dir)
            for line in self.medium_access.lines:
                self.say(line)
        return self.medium_access

    def ensure_network(self) -> None:
        if not self.network_up:
            self.network_up = system.bring_up(self.args.network, self.args.nameservers, self.say)

    # ---------------------------------------------------------------- finding the set

    def medium_candidates(self, url: str, device: str | None = None) -> list[locate.Candidate]:
        from resurgo.media.setindex import content_pin

        out = []
        with self.open_medium(url) as medium:
            infos = medium.list_sets()
            for set_id, why in medium.refused:
                self.say(f"refused {url} set {set_id}: {why}")
                self.refused.append(f"{url} set {set_id}")
            for info in infos:
                try:
                    reader = medium.open_set(info.id)
                except ResurgoError as e:
                    self.say(f"{url} set {info.id}: {e}")
                    continue
                entry = next((f for f in reader.files() if f.name == locate.DESCRIPTION), None)
                out.append(
                    locate.Candidate(
                        medium=url,
                        set_id=info.id,
                        created=info.created,
                        host=info.host,
                        description_digest=entry.digest if entry else None,
                        device=device,
                        pin=content_pin(info.id, reader.files(), RESCUE),
                        signed_by=info.signed_by,
                    )
                )
        return out

    def search_filesystem(self, dev: str, root: Path) -> list[locate.Candidate]:
        cands: list[locate.Candidate] = []
        if (root / "set.json").is_file():
            return self.medium_candidates(str(root.parent), dev)
        for medium_dir, _set_id in locate.find_set_dirs(root):
            url = str(medium_dir)
            if any(c.medium == url for c in cands):
                continue
            cands += self.medium_candidates(url, dev)
        return cands

    def scan_disks(self, skip: set[str]) -> tuple[list[locate.Candidate], dict[str, Path]]:
        """Mount every filesystem not searched yet read-only and look for sets."""
        cands: list[locate.Candidate] = []
        mounted: dict[str, Path] = {}
        for kname in system.block_devices():
            dev = f"/dev/{kname}"
            if dev in skip:
                continue
            info = system.probe(dev)
            fstype = info.get("TYPE")
            if fstype not in system.MOUNTABLE:
                if fstype or "PTTYPE" not in info:
                    skip.add(dev)  # a disk with a partition table may still get partitions
                continue
            skip.add(dev)
            target = SCAN_DIR / kname
            if not system.mount_ro(dev, fstype, target):
                continue
            found = self.search_filesystem(dev, target)
            if found:
                mounted[dev] = target
                cands += found
            else:
                system.umount(target)
        return cands, mounted

    def candidates(self) -> list[locate.Candidate]:
        """Every set where the command line or the image says to look, else on the disks."""
        source = self.args.source
        from_config = False
        if source is None and self.config.from_url:
            try:
                source = cmdline.parse_source(self.config.from_url)
                from_config = True
            except ValueError as e:
                self.say(f"the location in this image is unusable ({e}): searching the disks")
        if isinstance(source, MediumUrl):
            if source.url.startswith("/") and not os.path.isdir(source.url):
                if not from_config:
                    raise locate.NoChoice(f"resurgo.from={source.url}: no such directory")
                self.say(f"{source.url} (where the set was saved) is not here: searching the disks")
            else:
                if "://" in source.url:
                    self.ensure_network()
                self.say(f"looking for recovery sets on {source.url}")
                return self.medium_candidates(source.url)
        if isinstance(source, OnDevice):
            return self.on_device(source)
        return self.wait_for_disks()

    def wait_for(self, spec: str, option: str) -> str:
        """The device of filesystem ``spec``, waited for up to resurgo.wait seconds."""
        deadline = system.uptime() + self.args.wait
        dev = system.find_device(spec)
        while dev is None and system.uptime() < deadline:
            system.coldplug(self.seen_aliases, limit=1.0)
            dev = system.find_device(spec)
        if dev is None:
            raise locate.NoChoice(f"{option}: no filesystem {spec} appeared")
        return dev

    def on_device(self, source: OnDevice) -> list[locate.Candidate]:
        dev = self.wait_for(source.device, "resurgo.from")
        fstype = system.probe(dev).get("TYPE")
        if fstype not in system.MOUNTABLE:
            raise locate.NoChoice(f"{dev}: no filesystem resurgo can search ({fstype or 'none'})")
        target = SCAN_DIR / os.path.basename(dev)
        if not system.mount_ro(dev, fstype, target):
            raise locate.NoChoice(f"{dev}: cannot mount it")
        root = target / (source.path or "/").lstrip("/")
        found = self.search_filesystem(dev, root)
        if not found:
            raise locate.NoChoice(f"no recovery set on {dev} below {source.path or '/'}")
        return found

    def wait_for_disks(self) -> list[locate.Candidate]:
        self.say("searching the disks for a recovery set")
        deadline = system.uptime() + self.args.wait
        skip: set[str] = set()
        medium = system.mounted_devices().get(str(MEDIUM_MOUNT))
        if medium:
            skip.add(medium)
        cands: list[locate.Candidate] = []
        while True:
            found, _mounted = self.scan_disks(skip)
            cands += found
            if cands or system.uptime() >= deadline:
                return cands
            # A USB disk takes seconds to show up after its driver loads.
            system.coldplug(self.seen_aliases, limit=1.0)

    def description_of(self, choice: locate.Choice) -> Path:
        """The chosen set's description, read through its index (signature and digest
        checked), never straight off the disk."""
        cand = choice.candidate
        if cand is None:
            return DESCRIPTION_PATH
        dest = Path("/run/resurgo/sets") / cand.set_id / locate.DESCRIPTION
        private.makedirs(dest.parent)
        with self.open_medium(cand.medium) as medium:
            private.write_bytes(dest, medium.open_set(cand.set_id).read_bytes(locate.DESCRIPTION))
        return dest

    def not_on_saved_disks(
        self, cands: list[locate.Candidate], description: Path = DESCRIPTION_PATH,
        disk_ids: Callable[[str], set[str]] = system.disk_ids,
    ) -> list[locate.Candidate]:
        """Leave out sets on a disk that the saved layout names (same serial or WWN): the
        plan would overwrite it, and an old or ransomed disk is no place to trust."""
        if not description.is_file():
            return cands
        from resurgo import fileformat

        try:
            saved = fileformat.read(description).disks
        except ResurgoError:
            return cands
        ids = {v for d in saved for v in (d.serial, d.wwn) if v}
        out = []
        for c in cands:
            found = disk_ids(c.device) if c.device else set()
            if found & ids:
                self.say(f"{c.where}: not used, its disk is one the saved layout recreates")
            else:
                out.append(c)
        return out

    # ---------------------------------------------------------------- running resurgo

    def resurgo(self, *argv: str, interactive: bool = False) -> int:
        """Run resurgo as a command, its output on the consoles as it comes (or, for a
        person to answer it, on this console directly)."""
        # -P: never import from the working directory (PYTHONPATH names resurgo's own).
        full = [sys.executable, "-P", "-m", "resurgo", *argv]
        self.say("+ resurgo " + " ".join(argv))
        env = {"PYTHONPATH": SITE_DIR, "HOME": "/root"}
        if self.medium_access is not None:
            env.update(self.medium_access.environ())
        if interactive:
            return run.spawn(full, stdin=None, stdout=None, stderr=None, env=env).wait()
        proc = run.spawn(full, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
        assert proc.stdout is not None
        for raw in proc.stdout:
            self.console.write(raw.decode(errors="replace"))
        proc.stdout.close()
        return proc.wait()

    def validate(self, desc: Path) -> int:
        """The description checked here, as `resurgo validate` checks it: in this process,
        since a command's start costs seconds under emulation (recover checks it again)."""
        # Imported here: the shell and the menu need none of the format's code.
        from resurgo.fileformat.validation import validate_file

        self.say(f"checking the description {desc}")
        try:
            validation = validate_file(desc)
        except ResurgoError as e:
            self.say(str(e))
            return int(e.exit_code)
        self.console.write(validation.text())
        return int(validation.exit_code)

    def recover(self) -> int:
        """Find, choose and check the set, then run recover (or plan) on it; the exit
        code. In rehearsal mode the "set" step is told around the finding and checking,
        and recover tells its own steps (--step-lines) into the output copied to the
        consoles."""
        self.rehearsal("step", step="set", event="start")
        chosen = self.choose()
        if isinstance(chosen, int):
            self.set_step(False)
            return chosen
        choice, desc, extra = chosen
        self.set_step(True)
        steps = STEP_LINES if self.args.rehearse and self.args.recover is Mode.AUTO else None
        cand = choice.candidate
        reach = (self.access() if cand is not None and "://" in cand.medium
                 else access.Access(known_hosts=pinned_hosts()))
        return self.resurgo(*recover_argv(self.args.recover, choice, desc, extra,
                                          reach, steps),
                            interactive=self.args.recover is Mode.ASK)

    def choose(self) -> tuple[locate.Choice, Path, list[str]] | int:
        """The set chosen, its description (valid) and the arguments recover takes for
        it; or the exit code of what went wrong (said on the consoles)."""
        try:
            embedded = self.config.embedded
            cands = self.not_on_saved_disks(self.candidates())
            if embedded is not None and not embedded.signed and not embedded.set_pin:
                self.say("warning: this image has no trusted signers and no set of its own: "
                         "it cannot tell a genuine set from a planted one (build it with "
                         "resurgo rescue --trust, or save --sign-key)")
            if self.args.recover is Mode.ASK:
                choice = self.pick(cands)
            elif self.args.set_id is not None:
                choice = locate.choose_named(cands, self.args.set_id, embedded,
                                             signed=trust() is not None)
            else:
                choice = locate.choose(cands, embedded)
            if choice.candidate is None and self.refused:
                raise locate.NoChoice(
                    "recovery sets were found but refused as not authentic ("
                    + ", ".join(self.refused) + "): nothing was done, no disk was touched")
        except locate.NoChoice as e:
            self.say(str(e))
            return 1
        except ResurgoError as e:
            self.say(f"cannot read the recovery sets: {e}")
            return 1
        if choice.candidate is None:
            self.say(f"using the description in this image: {choice.reason}")
        else:
            self.say(f"recovery set: {choice.candidate.where} ({choice.reason})")
        try:
            desc = self.description_of(choice)
        except ResurgoError as e:
            self.say(f"cannot fetch the description: {e}")
            return 1
        rc = self.validate(desc)
        if rc != 0:
            self.say("the description is not valid: nothing was done")
            return rc
        self.description = desc
        if choice.candidate is None and self.args.recover is Mode.AUTO:
            self.say("without the set's archives only the disk layout can be recreated")
        extra = list(self.args.args)
        if self.args.keys is not None:
            try:
                extra += self.key_files(self.args.keys, desc,
                                        identity=choice.candidate is not None)
            except (locate.NoChoice, ResurgoError) as e:
                self.say(f"no keys: {e}; nothing was done")
                return 1
        return choice, desc, extra

    def recovered_target(self, since: float, report_dir: Path | None = None) -> Path | None:
        """Where the system recovered by the recover run since ``since`` is mounted, as
        its report says; None without such a report."""
        found = reports.reports(report_dir or reports.DEFAULT_DIR, "recover")
        if not found:
            return None
        try:
            if found[-1].stat().st_mtime < since - MTIME_SLACK:
                return None  # an older run's
            target = json.loads(found[-1].read_text()).get("target")
        except (OSError, ValueError, AttributeError):
            return None
        if not isinstance(target, str) or not target.startswith("/"):
            return None
        return Path(target)

    def keep_log(self, since: float, log_path: Path = LOG_PATH,
                 report_dir: Path | None = None) -> Path | None:
        """The rescue's log into the recovered system, beside the report of its recovery:
        in the rescue's RAM it is lost at power-off. Where: the system the report of the
        recover run since ``since`` was copied into (recover copies it once data was
        restored); nothing without one. The path written, or None."""
        target = self.recovered_target(since, report_dir)
        if target is None:
            return None
        try:
            data = log_path.read_bytes()
        except OSError:
            return None
        try:
            kept = reports.keep_in_target(
                target, f"rescue-{reports.stamp(datetime.now(UTC))}.log", data)
        except (OSError, ResurgoError) as e:
            self.say(f"the log could not be kept in {target}: {e}")
            return None
        self.say(f"the log and the report of this recovery are kept in {kept.parent}")
        return kept

    def console_prompt(self, question: str) -> str:
        self.console.write(question)
        return sys.stdin.readline()

    def pick(self, cands: list[locate.Candidate]) -> locate.Choice:
        """Attended: the person at the console picks one of the sets found."""
        usable = locate.by_age(c for c in cands if c.description_digest is not None)
        if not usable:
            raise locate.NoChoice("no recovery set was found")
        self.say(f"recovery sets found ({len(usable)}), newest first:")
        for line in locate.numbered(usable):
            self.say(line)
        answer = self.prompt("recover which set? its number or id, Enter for none: ")
        cand = locate.picked(usable, answer)
        if cand is None:
            raise locate.NoChoice(f"no set chosen ({answer.strip()!r}): nothing was done")
        return locate.Choice(cand, "chosen at the console")

    def key_files(self, where: OnDevice, description: Path, *, identity: bool = True
                  ) -> list[str]:
        """--key-file arguments for the LUKS volumes of ``description`` whose key files
        are on the key medium (resurgo.keys), mounted read-only at KEYS_MOUNT; with
        ``identity`` (a set's archives to read), --identity for its age identity file
        (keys.AGE_IDENTITY) when it holds one."""
        from resurgo import fileformat

        directory = self.keys_directory(where)
        try:
            names = os.listdir(directory)
        except OSError as e:
            raise locate.NoChoice(f"{directory}: {e.strerror}") from None
        desc = fileformat.read(description)
        crypttab = next((c.content for c in desc.config_files
                         if c.path == "/etc/crypttab" and c.content is not None), "")
        named = keys.crypttab_keys(crypttab)
        volumes = [keys.Volume(v.id, v.uuid, keys.crypttab_key(named, v.name, v.uuid))
                   for v in desc.luks_volumes]
        argv, lines = keys.key_file_args(volumes, names, directory, self.args.args)
        if identity:
            more, said = keys.identity_args(names, directory, self.args.args)
            argv, lines = argv + more, lines + said
        for line in lines:
            self.say(line)
        return argv

    def keys_directory(self, where: OnDevice) -> Path:
        """The key medium (resurgo.keys) mounted read-only at KEYS_MOUNT, once: the
        directory it names."""
        if self.keys_dir is None:
            dev = self.wait_for(where.device, "resurgo.keys")
            fstype = system.probe(dev).get("TYPE")
            if fstype not in system.MOUNTABLE:
                raise locate.NoChoice(
                    f"{dev}: no filesystem to read keys from ({fstype or 'none'})")
            if not system.mount_ro(dev, fstype, KEYS_MOUNT):
                raise locate.NoChoice(f"{dev}: cannot mount it")
            self.say(f"key medium {dev} mounted read-only on {KEYS_MOUNT}")
            self.keys_dir = KEYS_MOUNT / (where.path or "/").lstrip("/")
        return self.keys_dir

    def install_check(self, rc: int, since: float, report_dir: Path | None = None) -> None:
        """Rehearsal mode, once recover ended: when it recovered, the check into the
        recovered system (an "install-check" step, failed with the reason when it cannot
        be installed); then the "recovered" line: ok and exit say the recovery, check
        whether the check is installed."""
        if rc != 0:
            self.rehearsal("recovered", ok=False, exit=rc)
            return
        self.rehearsal("step", step="install-check", event="start")
        why = ""
        target = self.recovered_target(since, report_dir)
        if target is None or self.description is None:
            why = "the recovered system was not found (recover left no report naming it)"
        else:
            from resurgo import fileformat
            from resurgo.rehearse import installcheck

            try:
                values = installcheck.expected(fileformat.read(self.description), target)
                installcheck.install(target, values)
            except (ResurgoError, OSError) as e:
                why = f"the rehearsal's check could not be installed: {e}"
        if why:
            self.say(why)
            self.rehearsal("step", step="install-check", event="end", ok=False, detail=why)
        else:
            self.say(f"the rehearsal's check is installed in {target}: the recovered "
                     "system runs it at its first boot, then powers off")
            self.rehearsal("step", step="install-check", event="end", ok=True)
        self.rehearsal("recovered", ok=True, exit=rc, check=not why)

    def boot(self) -> int:
        # In rehearsal mode the host times the rescue's boot to this line.
        self.rehearsal("step", step="rescue", event="end", ok=True)
        self.say(
            f"resurgo {__version__} rescue system, kernel {platform.release()}, "
            f"Python {platform.python_version()}"
        )
        self.drivers()
        medium = self.mount_boot_medium()
        if medium:
            self.say(f"booted from {medium} (kept mounted: recovery leaves it alone)")
        for p in self.args.problems:
            self.say(f"kernel command line: {p}")
        if self.args.network:
            self.ensure_network()
        if self.args.recover is Mode.OFF and not self.args.rehearse:
            self.say("a shell (resurgo.recover=auto on the kernel command line: unattended)")
            return 0
        if self.args.problems:
            self.say("not starting the unattended recovery: fix the kernel command line")
            self.rehearsal("recovered", ok=False, exit=int(ExitCode.BAD_INPUT))
            return 2
        how = "attended" if self.args.recover is Mode.ASK else "unattended"
        self.say(f"{how}: resurgo.recover={self.args.recover}, then {self.args.after}")
        began = time.time()
        rc = self.recover()
        for line in finished(rc):
            self.say(line)
        if self.args.rehearse:
            self.install_check(rc, began)
        if self.args.recover is not Mode.PLAN:
            self.keep_log(began)
        if self.args.after is not After.SHELL:
            self.say(f"{self.args.after} now")
            system.power(str(self.args.after))
        return rc


# What the person at the console does next, for the failures that say it.
_NEXT = {
    ExitCode.DAMAGED: "recover from another copy of the set, or from another set",
    ExitCode.DECRYPT_FAILED: "give the age identity the set was saved for (the key "
    f'medium\'s {keys.AGE_IDENTITY} file, resurgo.keys=, or resurgo.args="--identity FILE")',
    ExitCode.NOT_AUTHENTIC: "recover from a set the trusted signers signed",
}


def finished(rc: int) -> list[str]:
    """How the run ended, for the console and the log: the exit code, and for a failure
    what it means (a damaged set, an identity that cannot decrypt it, a refusal to
    confirm...) and what to do next."""
    if rc == 0:
        return ["recovery finished: ok"]
    out = [f"recovery finished: FAILED (exit code {rc})"]
    try:
        code = ExitCode(rc)
    except ValueError:
        return out  # not resurgo's (a signal's, 130 for an interrupt)
    out.append(f"exit code {rc}: {code.meaning}" + (f": {_NEXT[code]}" if code in _NEXT else ""))
    return out


def recover_argv(
    mode: Mode, choice: locate.Choice, description: Path, extra: Sequence[str],
    reach: access.Access | None = None, step_lines: str | None = None,
) -> list[str]:
    """The resurgo command an unattended run executes: on the chosen set (its medium and
    id), or, with no set found, on the description alone (then only the layout). A
    network medium is reached as ``reach`` says (an SFTP server checked against the host
    key the image was saved with, the S3 endpoint, the key's path); recover writes its
    steps to ``step_lines`` (rehearsal mode)."""
    cand = choice.candidate
    if cand is None:
        source = ["--from", str(description)]
        if mode is Mode.AUTO and "--layout-only" not in extra:
            source.append("--layout-only")
    else:
        source = ["--from", cand.medium, "--set", cand.set_id]
        if reach is not None:
            source += reach.argv(cand.medium)
    if mode is Mode.PLAN:
        return ["plan", *source, *extra]
    if mode is Mode.ASK:
        return ["recover", *source, *extra]  # recover shows the plan and asks
    steps = ["--step-lines", step_lines] if step_lines else []
    return ["recover", *source, "--yes", *steps, *extra]


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    what = args[0] if args else "boot"
    if what in ("poweroff", "reboot"):
        system.power(what)
    if what != "boot":
        print(f"usage: {sys.argv[0]} boot|poweroff|reboot", file=sys.stderr)
        return 2
    console = Console.open()
    # What the media say while sets are listed (a damaged index skipped) reaches the consoles.
    logging.getLogger("resurgo").addHandler(ConsoleLog(console))
    kernel_args: RescueArgs | None = None
    try:
        kernel_args = cmdline.parse(Path("/proc/cmdline").read_text())
        return Agent(console, Config.load(), kernel_args).boot()
    except Exception:
        console.say("internal error (a bug in resurgo):\n" + traceback.format_exc())
        if kernel_args is not None and kernel_args.rehearse:
            # The host waits for this line: without it only its timeout would end the wait.
            console.write(protocol.line("recovered", ok=False, exit=INTERNAL_ERROR,
                                        detail="internal error in the rescue's agent"))
        return INTERNAL_ERROR


if __name__ == "__main__":
    raise SystemExit(main())
