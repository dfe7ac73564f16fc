"""What every benchmark does first: from a clean clone, `python3 bench/NAME.py` runs under
the repository's venv (./dev setup) when the system's Python lacks resurgo's dependencies,
and says so in one line when there is none (the benchmarks' child processes import
resurgo, and would otherwise die with a traceback)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def reexec_in_venv(script: str) -> None:
    """Run ``script`` again under .venv/bin/python when this Python lacks blake3 or
    tomli_w; exit with a message when there is no venv either."""
    try:
        import blake3  # noqa: F401
        import tomli_w  # noqa: F401
    except ImportError as exc:
        venv = REPO / ".venv/bin/python"
        if venv.exists() and Path(sys.prefix).resolve() != (REPO / ".venv").resolve():
            os.execv(venv, [os.fspath(venv), script, *sys.argv[1:]])
        raise SystemExit(f"{Path(script).name}: resurgo's dependencies are missing ({exc}): "
                         "run ./dev setup first, or pip install the repository") from None
