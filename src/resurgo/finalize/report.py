"""What finalize did, for people (the text also left in the restored system's logs) and
as JSON-ready data."""

from __future__ import annotations

import dataclasses
import posixpath
import shlex
from typing import Any

from resurgo.finalize.model import FileChange, FinalizeReport, NicPair, StepStatus


def _cmd(argv: tuple[str, ...]) -> str:
    return shlex.join(argv)


def _grouped(files: list[FileChange], most: int = 3) -> list[str]:
    """One line per file, or per directory of more than ``most`` (GRUB's 280 modules)."""
    by_dir: dict[str, list[FileChange]] = {}
    for f in files:
        by_dir.setdefault(posixpath.dirname(f.path), []).append(f)
    out = []
    for directory, group in by_dir.items():
        if len(group) > most:
            new = sum(1 for f in group if f.created)
            out.append(f"  {directory}/ ({len(group)} files" + (f", {new} new)" if new else ")"))
        else:
            out += [f"  {f.path}" + (" (new)" if f.created else "") for f in group]
    return out


def change_lines(f: FileChange) -> list[str]:
    """A file's line changes, each with its reason (also shown with a plan)."""
    out = []
    for c in f.changes:
        if c.before is not None:
            out.append(f"    {c.line:>4} - {c.before}")
        if c.after is not None:
            out.append(f"    {c.line:>4} + {c.after}")
        if c.why:
            out.append(f"           because {c.why}")
    return out


def nic_pair(n: NicPair) -> str:
    """'ens3 (mac) -> enp1s0 (mac)'."""
    old = " ".join(x for x in (n.old_name, n.old_mac and f"({n.old_mac})") if x)
    new = " ".join(x for x in (n.new_name, n.new_mac and f"({n.new_mac})") if x)
    return f"{old or '?'} -> {new or '?'}"


def text(r: FinalizeReport) -> str:
    out: list[str] = []
    head = "finalize (dry run: nothing written)" if r.dry_run else "finalize"
    out.append(f"{head} of the system restored at {r.root}")
    out.append("")
    out.append("files:")
    changed = [f for f in r.files if f.changes]
    regenerated = [f for f in r.files if f.regenerated]
    if not changed:
        out.append("  nothing to rewrite: every device and interface is named as it is now")
    for f in changed:
        state = "created" if f.created else ("written" if f.written else "not written")
        out.append(f"  {f.path} ({state})")
        out += change_lines(f)
    if regenerated:
        out.append("")
        out.append("made or changed by the commands below:")
        out += _grouped(regenerated)
    if r.nics:
        out.append("")
        out.append("network interfaces:")
        for n in r.nics:
            out.append(f"  {nic_pair(n)}  [{n.by}]")
    if r.initramfs:
        out.append("")
        out.append("drivers:")
        for chk in r.initramfs:
            out.append(f"  kernel {chk.kernel}: {chk.image} ({chk.generator})")
            needed = ", ".join(f"{m} ({why})" for m, why in chk.needed) or "nothing"
            out.append(f"    the disks of this machine need: {needed}")
            if chk.builtin:
                out.append(f"    built into the kernel: {', '.join(chk.builtin)}")
            if not chk.missing:
                out.append(f"    initramfs already has: {', '.join(chk.present) or '-'}")
                if chk.rebuilt:
                    out.append(
                        f"    rebuilt in {chk.seconds:.1f} s: it carries copies of files "
                        "rewritten above"
                    )
            elif chk.rebuilt:
                out.append(
                    f"    missing: {', '.join(chk.missing)}; rebuilt in {chk.seconds:.1f} s"
                    + (
                        f"; STILL missing: {', '.join(chk.still_missing)}"
                        if chk.still_missing
                        else "; now has them all"
                    )
                )
            else:
                out.append(f"    missing: {', '.join(chk.missing)} (not rebuilt)")
    if r.commands:
        out.append("")
        out.append("commands:")
        for cmd in r.commands:
            where = "[chroot] " if cmd.chroot else ""
            took = (
                f" ({cmd.seconds:.1f} s)"
                if cmd.status in (StepStatus.DONE, StepStatus.FAILED)
                else ""
            )
            out.append(f"  {cmd.status:<8} {where}{_cmd(cmd.argv)}{took}")
            out.append(f"           because {cmd.why}")
            if cmd.message:
                out += [f"           | {m}" for m in cmd.message.splitlines()]
    for title, items in (("notes", r.notes), ("warnings", r.warnings), ("errors", r.errors)):
        if items:
            out.append("")
            out.append(f"{title}:")
            out += [f"  - {i}" for i in items]
    if r.timings:
        out.append("")
        out.append(
            "time: "
            + ", ".join(f"{name} {s:.1f} s" for name, s in r.timings)
            + f"; total {r.seconds:.1f} s"
        )
    if r.log:
        out.append(f"record of this recovery: {r.log}")
    out.append("finalize " + ("done" if r.ok else "FAILED"))
    return "\n".join(out) + "\n"


def data(r: FinalizeReport) -> dict[str, Any]:
    d = dataclasses.asdict(r)
    d["ok"] = r.ok
    d["timings"] = {name: round(s, 3) for name, s in r.timings}
    d["seconds"] = round(r.seconds, 3)
    for c in d["commands"]:
        c["status"] = str(c["status"])
        c["seconds"] = round(c["seconds"], 3)
    return d
