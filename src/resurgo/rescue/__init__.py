"""The bootable rescue image: the machine's own kernel, drivers and tools, Python and
resurgo, in one initramfs on a hybrid BIOS/UEFI ISO (see build.py); and the agent that
runs inside it (agent.py).

    report = build_rescue_image(Path("rescue.iso"), RescueOptions(description=desc))

The builder is imported on first use: the agent, which starts in the rescue system
(under emulation too) with this package, needs none of it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from resurgo.rescue.build import (
        Compression,
        RescueOptions,
        RescueReport,
        build_rescue_image,
    )
    from resurgo.rescue.cmdline import After

__all__ = ["After", "Compression", "RescueOptions", "RescueReport", "build_rescue_image"]


def __getattr__(name: str) -> Any:
    if name == "After":
        from resurgo.rescue import cmdline

        return cmdline.After
    if name in __all__:
        from resurgo.rescue import build

        return getattr(build, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
