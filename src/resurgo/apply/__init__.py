"""Executing a recovery plan against real devices: idempotent, resumable, confined.

execute.Executor runs the plan's actions in order, each through the executor of its kind
(executors); guard refuses any command on a device outside the plan's target disks;
verify checks on the disks what each action made; journal records completed actions so a
rerun resumes; inuse tells the planner which uses of the target disks are recovery's own;
keys gathers the LUKS keys; report renders it.
"""

from __future__ import annotations

from resurgo.apply.execute import ActionResult, Executor, Outcome, Status
from resurgo.apply.journal import Journal

__all__ = ["ActionResult", "Executor", "Journal", "Outcome", "Status"]
