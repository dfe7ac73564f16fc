"""The bootable rescue image: the machine's own kernel, drivers and tools, Python and
resurgo, in one initramfs on a hybrid BIOS/UEFI ISO (see build.py); and the agent that
runs inside it (agent.py).

    report = build_rescue_image(Path("rescue.iso"), RescueOptions(description=desc))
"""

from resurgo.rescue.build import Compression, RescueOptions, RescueReport, build_rescue_image
from resurgo.rescue.cmdline import After

__all__ = ["After", "Compression", "RescueOptions", "RescueReport", "build_rescue_image"]
