"""The built-in demo: describe this machine, validate the description, show it.

Later stages of the product extend it to the whole save -> recover -> verify
cycle on demo disks.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from resurgo.cli.main import main as cli


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="resurgo-demo.") as tmp:
        out = Path(tmp) / "description.toml"
        steps = [
            ["describe", "--output", str(out)],
            ["validate", str(out)],
            ["show", str(out)],
        ]
        for step in steps:
            print(f"\n$ resurgo {' '.join(step)}", flush=True)
            code = cli(step)
            if code != 0:
                return code
        files = sorted(p.name for p in Path(tmp).iterdir())
        print(f"\nthe recovery description and its companions: {', '.join(files)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
