"""A plan for people (tables and bars to scale), as JSON, and its hash.

The hash is the sha256 of the canonical JSON of everything recover will do (see
canonical()). `recover --plan-hash H` refuses a plan whose hash is not H.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shlex
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from resurgo.plan.model import Action, DiskLayout, DiskMatch, Plan, PlannedCommand
from resurgo.restoreunits import BUILTIN_PREFIX
from resurgo.units import human

if TYPE_CHECKING:
    # Types only: the finalize package imports the plan.
    from resurgo.finalize.model import FinalizeReport

BAR_WIDTH = 60


def _plain(obj: Any) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(json.dumps(dataclasses.asdict(obj)))
    return out


def action_data(a: Action, *, with_summary: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": a.id,
        "kind": str(a.kind),
        "writes": list(a.writes),
        "depends_on": list(a.depends_on),
        "before": a.before,
        "after": a.after,
        "params": _plain(a.params),
    }
    if with_summary:
        out["summary"] = a.summary
    return out


def identity_data(m: DiskMatch) -> dict[str, Any]:
    return {
        "saved": m.saved,
        "path": m.path,
        "kname": m.kname,
        "size": m.size,
        "logical_sector_size": m.logical_sector_size,
        "wwn": m.wwn,
        "serial": m.serial,
        "model": m.model,
    }


def command_data(c: PlannedCommand, *, with_description: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {
        "seq": c.seq,
        "program": c.program,
        "args": list(c.args),
        "on_failure": c.on_failure,
        "target": c.target,
    }
    if with_description:
        out["command"] = words(c.argv)
        out["description"] = c.description
    return out


def finalize_data(r: FinalizeReport) -> dict[str, Any]:
    """What finalize will do, as the hash covers it: the steps it runs, every line it will
    rewrite, the interfaces it pairs, the commands it runs (the bootloader's, an
    initramfs rebuild, one a preview shows as if-needed too). Its reasons, notes and
    warnings are for people."""
    return {
        # The preview runs these in order; the driver check of the restored initramfs
        # (and its rebuild in a chroot when a module is missing) is one of them.
        "steps": ["storage configuration", "network", "drivers", "bootloader"],
        "files": [
            {
                "path": f.path,
                "created": f.created,
                "changes": [[c.line, c.before, c.after] for c in f.changes],
            }
            for f in r.files
            if f.changes or f.created
        ],
        "nics": [[n.old_name, n.old_mac, n.new_name, n.new_mac] for n in r.nics],
        "commands": [{"argv": list(c.argv), "chroot": c.chroot} for c in r.commands],
    }


def canonical(
    actions: Sequence[Action],
    matches: Sequence[DiskMatch],
    commands: Sequence[PlannedCommand] = (),
    finalize: FinalizeReport | None = None,
    root: str = "",
) -> bytes:
    """The bytes the plan hash is taken of: JSON with sorted keys, no whitespace, ASCII.

    It covers everything recover will do, and nothing that is only said:
      - the layout actions in order, with every parameter and the disks each writes;
      - the identity of each actual disk matched (path, size, sector size, WWN, serial,
        model), so that a plan approved for one disk never runs on another;
      - the root everything is mounted under (and given to the commands as RESURGO_ROOT);
      - every command of the description in the order it runs: its sequence number,
        program, arguments and on_failure, and where it writes (its target);
      - finalize's planned actions (finalize_data), or null when finalize will not run.
    Not covered: summaries, reasons, notes, warnings and the description's timestamps.
    """
    data = {
        "actions": [action_data(a, with_summary=False) for a in actions],
        "disks": [identity_data(m) for m in sorted(matches, key=lambda m: m.saved)],
        "root": root,
        "commands": [command_data(c, with_description=False) for c in commands],
        "finalize": None if finalize is None else finalize_data(finalize),
    }
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def plan_hash(plan: Plan) -> str:
    """The hash of what the plan will do, from the plan's own fields (canonical())."""
    digest = hashlib.sha256(
        canonical(plan.actions, plan.matches, plan.commands, plan.finalize, plan.root)
    )
    return "sha256:" + digest.hexdigest()


def with_finalize(plan: Plan, report: FinalizeReport | None) -> Plan:
    """The plan with what finalize will do (None: it will not run), hashed again."""
    out = dataclasses.replace(plan, finalize=report)
    return dataclasses.replace(out, hash=plan_hash(out))


def words(argv: Sequence[str]) -> str:
    """argv as a shell would take it (shlex.join); an argument with a character that is
    not printable (a control character, an escape sequence, a bidi override) is written
    $'...' with the bytes of that character escaped, as execve gets them, so that no
    argument can hide or rewrite the display."""
    return " ".join(shlex.quote(a) if a.isprintable() else _escaped(a) for a in argv)


def _escaped(arg: str) -> str:
    out = []
    for ch in arg:
        if ch in "\\'":
            out.append("\\" + ch)
        elif ch.isprintable():
            out.append(ch)
        else:
            out.extend(f"\\x{b:02x}" for b in _bytes(ch))
    return "$'" + "".join(out) + "'"


def _bytes(ch: str) -> bytes:
    """A character's bytes in an argv: UTF-8, an undecodable byte as it was."""
    try:
        return ch.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return ch.encode("utf-8", "surrogatepass")


def layout_data(lay: DiskLayout) -> dict[str, Any]:
    out = _plain(lay)
    for p, fp in zip(out["partitions"], lay.partitions, strict=True):
        p["after"] = fp.after
        p["start_bytes"] = fp.start_bytes
        p["change"] = str(fp.change)
    return out


def to_data(plan: Plan) -> dict[str, Any]:
    return {
        "host": plan.host,
        "created": plan.created,
        "ok": plan.ok,
        "grow": str(plan.grow),
        "root": plan.root,
        "matches": [_plain(m) for m in plan.matches],
        "layouts": [layout_data(lay) for lay in plan.layouts],
        "volumes": [{**_plain(v), "change": str(v.change)} for v in plan.volumes],
        "actions": [action_data(a) for a in plan.actions],
        "commands": [command_data(c) for c in plan.commands],
        "identities": [{**_plain(d), "kept": d.kept} for d in plan.identities],
        "failures": [_plain(f) for f in plan.failures],
        "warnings": list(plan.warnings),
        "notes": list(plan.notes),
        "hash": plan.hash,
    }


def to_json(plan: Plan) -> str:
    return json.dumps(to_data(plan), indent=2) + "\n"


# ---------------------------------------------------------------- text


def bar(lay: DiskLayout, width: int = BAR_WIDTH) -> str:
    """The disk's partitions to scale, e.g. [EFI|boot|=====root=====|swap] ('.' is free space)."""
    total = lay.size
    if total <= 0:
        return "[" + " " * width + "]"
    if lay.label is None:
        return "[" + _segment(lay.whole or "-", width, "=") + "]"
    segs: list[tuple[str, int, str]] = []
    cursor = 0
    top = sorted((p for p in lay.partitions if p.kind != "logical"), key=lambda p: p.start_bytes)
    logicals = sorted(
        (p for p in lay.partitions if p.kind == "logical"), key=lambda p: p.start_bytes
    )
    for p in top:
        if p.start_bytes > cursor:
            segs.append(("", p.start_bytes - cursor, "."))
        if p.kind == "extended" and logicals:
            inner = p.start_bytes
            for lp in logicals:
                if lp.start_bytes > inner:
                    segs.append(("", lp.start_bytes - inner, "."))
                segs.append((lp.label, lp.after, "="))
                inner = lp.start_bytes + lp.after
            if p.start_bytes + p.after > inner:
                segs.append(("", p.start_bytes + p.after - inner, "."))
        else:
            segs.append((p.label, p.after, "="))
        cursor = p.start_bytes + p.after
    if total > cursor:
        segs.append(("", total - cursor, "."))
    # Slivers of free space (alignment gaps) are not worth a column.
    segs = [s for s in segs if s[2] != "." or s[1] * width >= total]
    least = [min(len(s[0]), 4) if s[0] else 1 for s in segs]
    widths = _columns([s[1] for s in segs], width - (len(segs) - 1), least)
    return "[" + "|".join(_segment(s[0], w, s[2]) for s, w in zip(segs, widths, strict=True)) + "]"


def _columns(sizes: Sequence[int], width: int, least: Sequence[int] | None = None) -> list[int]:
    """Columns per segment, proportional to size (largest remainder), none below its least."""
    n = len(sizes)
    if n == 0:
        return []
    least = list(least) if least is not None else [1] * n
    if sum(least) > width:
        least = [1] * n
    width = max(width, n)
    total = sum(sizes) or 1
    # Proportional shares first; a segment below its least is lifted and the rest rescaled.
    base = [max(lo, width * s // total) for s, lo in zip(sizes, least, strict=True)]
    while sum(base) > width:
        i = max(range(n), key=lambda k: (base[k] - least[k], -k))
        if base[i] <= least[i]:
            break
        base[i] -= 1
    left = width - sum(base)
    order = sorted(range(n), key=lambda i: (-(width * sizes[i] % total), i))
    for i in order[: max(0, left)]:
        base[i] += 1
    return base


def _segment(label: str, width: int, fill: str) -> str:
    if not label or width < 1:
        return fill * width
    if len(label) >= width:
        return label[:width]
    pad = width - len(label)
    return fill * (pad // 2) + label + fill * (pad - pad // 2)


def _size(n: int | None) -> str:
    return "-" if n is None else human(n)


def _table(rows: list[list[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [
        indent + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in rows
    ]


def command_lines(plan: Plan) -> list[str]:
    """The description's commands: each program with its arguments exactly, and where it
    writes."""
    if not plan.commands:
        return ["restore commands: none (no data is restored)"]
    out = [
        f"restore commands ({len(plan.commands)}), run in this order as root once the "
        "layout is mounted:"
    ]
    for c in plan.commands:
        out.append(f"  {c.seq:3d}. {words(c.argv)}")
        if c.target:
            out.append(f"       into {words([c.target])}")
        elif c.program.startswith(BUILTIN_PREFIX):
            out.append("       no step built into this resurgo: it fails when reached")
        else:
            out.append(f"       a program, run with RESURGO_ROOT={words([plan.root])}")
        if c.on_failure != "abort":
            out.append(f"       on failure: {c.on_failure}")
    return out


def identity_lines(plan: Plan) -> list[str]:
    """Each saved identity seen on a disk the recovery leaves alone, or made anew."""
    out = ["identities (saved ones seen on disks left alone, and those made anew):"]
    for d in plan.identities:
        change = f"{d.saved} kept" if d.kept else f"{d.saved} -> {d.new}"
        out.append(f"  {d.record} {d.kind}: {change}")
        if d.seen_on:
            out.append(f"       seen on {', '.join(d.seen_on)}")
        out.append(f"       {d.why}")
    return out


def text(plan: Plan, source: str = "", extra: Sequence[str] = ()) -> str:
    """The plan for people; ``extra`` lines (what finalize will do) come before the
    verdict, so that the hash stays the last line."""
    out: list[str] = []
    src = f" from {source}" if source else ""
    out.append(f"Recovery plan for {plan.host} (described {plan.created}){src}")
    out.append(f"grow policy: {plan.grow}; filesystems mounted under {plan.root}")
    matches = {m.saved: m for m in plan.matches}
    for lay in plan.layouts:
        m = matches.get(lay.saved)
        out.append("")
        by = f", matched by {m.by}" if m else ""
        out.append(
            f"{lay.saved}  {human(lay.before_size)}, {lay.before_sector_size}-byte sectors"
            f"  ->  {lay.device}  {human(lay.size)}, {lay.sector_size}-byte sectors{by}"
        )
        if lay.label is None:
            out.append(f"  no partition table: {lay.whole} on the whole disk")
        else:
            out.append(f"  {lay.label} table, id {lay.table_id}")
            rows = [["#", "partition", "holds", "start", "before", "after", "change"]]
            for p in sorted(lay.partitions, key=lambda p: p.start_bytes):
                rows.append(
                    [
                        str(p.number),
                        p.id,
                        p.label,
                        human(p.start_bytes),
                        human(p.before),
                        human(p.after),
                        str(p.change) + (" (fixed)" if p.fixed and p.kind != "extended" else ""),
                    ]
                )
            out.extend(_table(rows))
        out.append("  " + bar(lay))
    if plan.volumes:
        out.append("")
        out.append("volumes:")
        rows = [["id", "kind", "device", "holds", "before", "after", "change"]]
        for v in plan.volumes:
            rows.append(
                [
                    v.id,
                    str(v.kind),
                    v.device,
                    v.label,
                    _size(v.before),
                    human(v.after),
                    str(v.change),
                ]
            )
        out.extend(_table(rows))
    out.append("")
    out.append(f"actions ({len(plan.actions)}):")
    for n, a in enumerate(plan.actions, 1):
        out.append(f"  {n:3d}. {a.summary}  [{a.id}]")
    out.append("")
    out.extend(command_lines(plan))
    if plan.identities:
        out.append("")
        out.extend(identity_lines(plan))
    if plan.warnings:
        out.append("")
        out.append("warnings:")
        out.extend(f"  - {w}" for w in plan.warnings)
    if plan.notes:
        out.append("")
        out.append("notes:")
        out.extend(f"  - {n}" for n in plan.notes)
    if extra:
        out.append("")
        out.extend(extra)
    out.append("")
    if plan.failures:
        out.append(f"cannot recover: {len(plan.failures)} precondition(s) fail:")
        for f in plan.failures:
            out.append(f"  x [{f.check}] {f.message}")
            if f.hint:
                out.append(f"      hint: {f.hint}")
    else:
        out.append("all preconditions hold: the plan can be executed")
    out.append(f"plan hash: {plan.hash}")
    return "\n".join(out) + "\n"
