"""What finalize is given and what it reports: options, file changes, commands, drivers.

Frozen records only; no I/O. Paths of files are as the restored system sees them
(/etc/fstab), never the host path under the recovery root.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path


@dataclass(frozen=True)
class FinalizeOptions:
    # Compute every file rewrite and driver check, write nothing, run nothing that changes.
    dry_run: bool = False
    # --net-map OLD=NEW pairs: saved interface name or MAC -> actual name or MAC.
    net_map: tuple[tuple[str, str], ...] = ()
    # The running (rescue) system's sysfs: its disks, NICs and controllers are the new ones.
    sysfs: Path = Path("/sys")
    network: bool = True
    drivers: bool = True
    bootloader: bool = True
    # Where the record of the recovery goes, inside the restored system.
    log_dir: str = "/var/log/resurgo"


@dataclass(frozen=True)
class LineChange:
    """One line of a file: its 1-based number in the file as it was, before and after.

    after is None for a removed line; before is None for an added one.
    """

    line: int
    before: str | None
    after: str | None
    why: str


@dataclass(frozen=True)
class Rewrite:
    """The result of a pure text transform: the new text and what changed."""

    text: str
    changes: tuple[LineChange, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        return bool(self.changes)


@dataclass(frozen=True)
class FileChange:
    path: str
    changes: tuple[LineChange, ...]
    # False in a dry run, or when writing failed (then the report has an error).
    written: bool
    # A file finalize made rather than edited (e.g. the dracut drivers snippet).
    created: bool = False
    # Made or changed by a command (update-initramfs, grub-install, grub-mkconfig), not as
    # text: no line changes are listed.
    regenerated: bool = False


class StepStatus(StrEnum):
    DONE = "done"
    SKIPPED = "skipped"
    # Would run (dry run).
    PLANNED = "planned"
    # Would run if a check made once the data is restored asks for it (a plan's preview:
    # the restored initramfs cannot be looked inside before it is there).
    IF_NEEDED = "if-needed"
    FAILED = "failed"


@dataclass(frozen=True)
class CommandRecord:
    argv: tuple[str, ...]
    why: str
    status: StepStatus
    seconds: float = 0.0
    # Run inside the restored system (chroot) rather than on the rescue system.
    chroot: bool = False
    message: str = ""


@dataclass(frozen=True)
class NicPair:
    """A saved network interface and the actual one its configuration now applies to."""

    old_name: str | None
    old_mac: str | None
    new_name: str | None
    new_mac: str | None
    # "map" (--net-map), "order" (saved and actual NICs in PCI order), "mac" (same MAC).
    by: str


@dataclass(frozen=True)
class InitramfsCheck:
    """One installed kernel's initramfs against the drivers this machine's disks need."""

    kernel: str
    image: str
    generator: str
    # Module -> why it is needed ("nvme0n1: controller 0000:00:04.0").
    needed: tuple[tuple[str, str], ...]
    present: tuple[str, ...]
    missing: tuple[str, ...]
    builtin: tuple[str, ...] = ()
    rebuilt: bool = False
    seconds: float = 0.0
    # After a rebuild: what the new image still lacks (should be empty).
    still_missing: tuple[str, ...] = ()


@dataclass(frozen=True)
class FinalizeReport:
    root: str
    dry_run: bool
    files: tuple[FileChange, ...] = ()
    commands: tuple[CommandRecord, ...] = ()
    nics: tuple[NicPair, ...] = ()
    initramfs: tuple[InitramfsCheck, ...] = ()
    notes: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()
    # The record left in the restored system, as it sees the path.
    log: str | None = None
    seconds: float = 0.0
    # Seconds each step took: ("storage config", 0.01), ("drivers", 212.4) ...
    timings: tuple[tuple[str, float], ...] = ()

    @property
    def ok(self) -> bool:
        return not self.errors
