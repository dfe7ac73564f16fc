"""Shared test setup: tests run against the source tree."""

from __future__ import annotations

import os
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))
# Subprocesses (the CLI under test) see the same source tree.
os.environ["PYTHONPATH"] = str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", "")

# CI runs on 2 shared cores beside qemu guests: data generation can be slow there, and a
# health check about speed would fail a test that found nothing wrong.
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile("resurgo", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("resurgo")
