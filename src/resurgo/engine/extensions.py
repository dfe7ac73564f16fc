"""The engine's optional compiled modules (_plainsave.c for the save, _plainfiles.c for the
restore): used when they are built from the source this resurgo is, else the Python path
(the same files, made more slowly), with the reason for the doctor and the log.

pip builds each from setup.py when a C compiler and Python's headers are there, and
setup.py gives it the sha256 of its source (SOURCE_SHA256). In a source checkout the .c
file is beside the built module: a module built from another version of it (`pip install
-e .` not run again after a pull changed it) is stale and not used, since its arguments
or its output may not be what the Python side now expects; nor is one of another API, or
one whose import fails (built for another Python, a broken build). In an installed resurgo
(pip copies the .c files there too, but no setup.py) the API alone is checked.
"""

from __future__ import annotations

import hashlib
import importlib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).resolve().parent
REBUILD = "run `pip install -e .` in the source tree again (gcc and Python's headers needed)"
REINSTALL = "reinstall resurgo with gcc and the Python headers"


@dataclass(frozen=True)
class Loaded:
    module: ModuleType | None
    # Why it is not used ("" when it is), and what to do about it.
    why: str = ""
    fix: str = ""
    # True when it is missing for want of a compiler (doctor names the packages).
    compiler: bool = False


def load(name: str, api: int, directory: Path = HERE) -> Loaded:
    """resurgo.engine.NAME when it is built, of API ``api``, from the source beside it."""
    source = directory / f"{name}.c"
    # A source tree (src/resurgo/engine, setup.py two levels above src): pip copies the .c
    # files into an installed resurgo too, where they are no sign of a checkout.
    checkout = source.is_file() and (directory.parents[2] / "setup.py").is_file()
    try:
        module = importlib.import_module(f"resurgo.engine.{name}")
    except ModuleNotFoundError as e:
        if e.name != f"resurgo.engine.{name}":
            return _broken(name, e, checkout)
        if checkout:
            return Loaded(None, f"not built from {source}", REBUILD, compiler=True)
        return Loaded(None, "not built (no C compiler when resurgo was installed)", REINSTALL,
                      compiler=True)
    except Exception as e:  # whatever a broken build's import raises
        return _broken(name, e, checkout)
    got = getattr(module, "API", None)
    if got != api:
        return Loaded(None, f"stale: {name} was built from another version of its source "
                      f"(API {got}, this resurgo takes {api})", REBUILD if checkout else REINSTALL)
    if checkout:
        built = getattr(module, "SOURCE_SHA256", None)
        if built != hashlib.sha256(source.read_bytes()).hexdigest():
            return Loaded(None, f"stale: {name} was built from another version of {source} "
                          "than the one there now", REBUILD)
    return Loaded(module)


def _broken(name: str, e: Exception, checkout: bool) -> Loaded:
    return Loaded(None, f"{name} cannot be imported ({type(e).__name__}: {e})",
                  REBUILD if checkout else REINSTALL)


__all__ = ["Loaded", "load"]
