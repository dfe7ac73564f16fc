"""A rehearsal's report: pass or fail, the step that failed and the console's last lines,
the time of each phase, the checks of the recovered system, the set's age; as JSON (the
file --report names, rehearsal.json beside the set on its medium) and as a few lines for
people.

    {
      "format": "resurgo-rehearsal", "version": 1,
      "set": "20261207T020000Z-ab12", "host": "web1", "medium": "/mnt/backup/resurgo",
      "saved": "2026-12-07T02:00:00Z", "set_age_seconds": 7300,
      "time": "2026-12-07T04:01:40Z",            # when the rehearsal ended (UTC)
      "ok": false, "failed_step": "check", "reason": "...", "console_tail": ["..."],
      "phases": {"rescue_boot": 24.8, "set_checks": 3.1, "layout": 4.2, "restore": 61.0,
                 "finalize": 118.3, "check": 5.2, "recovery": 240.7, "first_boot": 41.5,
                 "total": 301.0},                 # seconds; null: the phase did not run
      "checks": [{"name": "mounts", "ok": false, "detail": "..."}],
      "machine": {"accel": "tcg", "accel_reason": "...", "firmware": "uefi", "bus": "nvme",
                  "memory_mib": 2048, "cpus": 2, "rescue": "set",
                  "medium_reach": "a disk of its own",
                  "disks": [{"saved": "disk.vda", "size": 2684354560, "sector_size": 512}]},
      "recovery_exit": 0
    }
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from resurgo.durations import format_duration
from resurgo.errors import ExitCode
from resurgo.rehearse.machine import DiskImage
from resurgo.rehearse.timeline import PHASES, Verdict
from resurgo.units import human

FORMAT = "resurgo-rehearsal"
VERSION = 1
# The name of the stored report beside the set on its medium (and its signature).
STORED = "rehearsal.json"
STORED_SIGNATURE = "rehearsal.json.sig"
_TIME = "%Y-%m-%dT%H:%M:%SZ"
_TITLES = {
    "rescue_boot": "rescue boot",
    "set_checks": "set checks",
    "layout": "layout",
    "restore": "restore",
    "finalize": "finalize",
    "check": "check (restored trees)",
    "recovery": "recovery (rescue, whole)",
    "first_boot": "first boot",
    "total": "total",
}


@dataclass(frozen=True)
class MachineInfo:
    accel: str
    accel_reason: str
    firmware: str
    bus: str
    memory_mib: int
    cpus: int
    # Where the rescue came from: "set" (its own image) or "built" (none in the set).
    rescue: str
    disks: tuple[DiskImage, ...]
    # How the rescue reached the set: "a disk of its own", or a network medium's URL
    # as the rescue opened it, over qemu's user network.
    medium_reach: str = "a disk of its own"

    def data(self) -> dict[str, Any]:
        return {"accel": self.accel, "accel_reason": self.accel_reason,
                "firmware": self.firmware, "bus": self.bus, "memory_mib": self.memory_mib,
                "cpus": self.cpus, "rescue": self.rescue, "medium_reach": self.medium_reach,
                "disks": [{"saved": d.saved_id, "size": d.size, "sector_size": d.sector_size}
                          for d in self.disks]}


@dataclass(frozen=True)
class Rehearsal:
    set_id: str
    host: str | None
    medium: str
    saved: datetime
    time: datetime
    verdict: Verdict
    machine: MachineInfo
    console_tail: tuple[str, ...] = ()
    # Where its files are, when they were kept (--keep).
    kept: str | None = None
    # Said about the run, not its verdict (the stored report could not be written...).
    warnings: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return self.verdict.ok

    @property
    def age(self) -> float:
        return max(0.0, (self.time - self.saved).total_seconds())

    def data(self) -> dict[str, Any]:
        v = self.verdict
        return {
            "format": FORMAT,
            "version": VERSION,
            "set": self.set_id,
            "host": self.host,
            "medium": self.medium,
            "saved": self.saved.astimezone(UTC).strftime(_TIME),
            "set_age_seconds": round(self.age),
            "time": self.time.astimezone(UTC).strftime(_TIME),
            "ok": self.ok,
            "failed_step": None if v.failure is None else v.failure.step,
            "reason": None if v.failure is None else v.failure.reason,
            "console_tail": list(self.console_tail) if not self.ok else [],
            "phases": {p: v.phases.get(p) for p in PHASES},
            "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in v.checks],
            "machine": self.machine.data(),
            "recovery_exit": v.recovery_exit,
            "kept": self.kept,
        }

    def encoded(self) -> bytes:
        return (json.dumps(self.data(), indent=2, sort_keys=False) + "\n").encode()

    def text(self) -> str:
        v, m = self.verdict, self.machine
        verdict = "PASSED" if self.ok else f"FAILED at {v.failure.step}" if v.failure else ""
        lines = [f"rehearsal of set {self.set_id} (host {self.host or '?'}, saved "
                 f"{format_duration(self.age)} ago) from {self.medium}: {verdict}"]
        if v.failure is not None:
            lines.append(f"  {v.failure.reason}")
        disks = ", ".join(f"{d.saved_id} {human(d.size)}" for d in m.disks)
        lines.append(f"  machine: {m.accel_reason}; {m.firmware}, {m.bus}, "
                     f"{m.memory_mib} MiB, {m.cpus} vCPU; disks {disks}; rescue image "
                     + ("of the set" if m.rescue == "set" else "built for the rehearsal")
                     + f"; the set on {m.medium_reach}")
        for phase in PHASES:
            seconds = v.phases.get(phase)
            shown = "-" if seconds is None else f"{seconds:.1f} s"
            lines.append(f"  {_TITLES[phase]:<26}{shown:>10}")
        if v.checks:
            lines.append("  checks: " + ", ".join(
                f"{c.name} {'ok' if c.ok else 'FAILED'}" for c in v.checks))
            lines += [f"    {c.name}: {c.detail}" for c in v.checks if not c.ok and c.detail]
        if not self.ok and self.console_tail:
            lines.append("  the console's last lines:")
            lines += [f"    | {line}" for line in self.console_tail]
        if self.kept:
            lines.append(f"  files kept in {self.kept}")
        elif not self.ok:
            lines.append("  (rehearse again with --keep to keep the images and whole consoles)")
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class RehearseReport:
    """Every set rehearsed by one run (one with --set, one per host with --all-hosts)."""

    rehearsals: tuple[Rehearsal, ...]
    # Sets that could not be rehearsed at all (--all-hosts): set id, why, exit code.
    errors: tuple[tuple[str, str, int], ...] = ()

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.rehearsals) and not self.errors

    @property
    def exit_code(self) -> int:
        if self.ok:
            return ExitCode.OK
        if not self.rehearsals and len(self.errors) == 1:
            return self.errors[0][2]
        return ExitCode.FAILED

    @property
    def warnings(self) -> tuple[str, ...]:
        return tuple(w for r in self.rehearsals for w in r.warnings)

    def text(self) -> str:
        out = "".join(r.text() for r in self.rehearsals)
        out += "".join(f"set {s}: not rehearsed: {why}\n" for s, why, _ in self.errors)
        return out

    def data(self) -> dict[str, Any]:
        return {"ok": self.ok,
                "rehearsals": [r.data() for r in self.rehearsals],
                "errors": [{"set": s, "error": why, "exit_code": code}
                           for s, why, code in self.errors]}
