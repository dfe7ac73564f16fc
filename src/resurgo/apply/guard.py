"""The last line of defence: no destructive command runs on a device outside the plan.

The planner already confines every action to the matched disks; this checks it again
against the kernel, right before each command, by resolving the device it writes to
down to whole disks through /sys (a partition's disk, the slaves of md and dm devices).
"""

from __future__ import annotations

from pathlib import Path

from resurgo.apply import devices
from resurgo.errors import OperationFailed
from resurgo.plan.model import Action, Plan
from resurgo.probe.blockdev import SYS_CLASS_BLOCK


class Refused(OperationFailed):
    """A command would have written outside the plan's target disks."""


class Guard:
    def __init__(self, plan: Plan, sys_block: Path = SYS_CLASS_BLOCK) -> None:
        self.sys_block = sys_block
        # Target disk path -> its kernel name now.
        self.targets = {m.path: devices.kname(m.path) for m in plan.matches}

    def check(self, action: Action, device: str) -> None:
        """Refuse unless device lies only on target disks that the action may write."""
        outside = [w for w in action.writes if w not in self.targets]
        if outside:
            raise Refused(
                f"refusing {action.id}: it would write to {', '.join(outside)}, "
                "which is not a target disk of the plan"
            )
        allowed = {self.targets[w] for w in action.writes}
        below = devices.disks_under(device, self.sys_block)
        if not below or not below <= allowed:
            where = ", ".join(f"/dev/{d}" for d in sorted(below - allowed)) or "no disk"
            raise Refused(
                f"refusing {action.id}: {device} lies on {where}, outside the disks this "
                f"action may write ({', '.join(sorted(action.writes))})",
                "the devices changed since the plan was made; run `resurgo plan` again",
            )
