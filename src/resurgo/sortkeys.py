"""Orders for names the kernel numbers (sda2 before sda10, eth2 before eth10)."""

from __future__ import annotations

import re


def natural_key(name: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key comparing the runs of digits in a name as numbers: sda2 before sda10."""
    return tuple(
        (0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", name) if part
    )
