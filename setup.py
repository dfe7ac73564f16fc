"""The compiled parts of resurgo: the plain-file paths of the restore and of the save (see
their sources).

Optional: without a C compiler (or Python's headers) pip says the build of the extensions
failed and installs resurgo without them; the restore and the save then take their Python
paths, slower and the same, and the restore says so once. Each is given the sha256 of its
source, by which resurgo knows a build that is stale. Everything else is in
pyproject.toml.
"""

import hashlib
from pathlib import Path

from setuptools import Extension, setup

HERE = Path(__file__).resolve().parent


def source_digest(source: str) -> list[tuple[str, str | None]]:
    """The source's sha256 as the module will say it (SOURCE_SHA256): a module built from
    another version of the source beside it is stale (resurgo.engine.extensions)."""
    digest = hashlib.sha256((HERE / source).read_bytes()).hexdigest()
    return [("RESURGO_SOURCE_SHA256", f'"{digest}"')]

# resurgo(8) and the shell completions, generated from the parser by
# `python -m resurgo.cli.manpage` and committed (tests/unit/test_manpage.py keeps them in step).
DATA_FILES = [
    ("share/man/man8", ["share/man/man8/resurgo.8"]),
    ("share/bash-completion/completions", ["share/bash-completion/completions/resurgo"]),
    ("share/zsh/site-functions", ["share/zsh/site-functions/_resurgo"]),
]

setup(
    data_files=DATA_FILES,
    ext_modules=[
        Extension(
            "resurgo.engine._plainfiles",
            ["src/resurgo/engine/_plainfiles.c"],
            define_macros=source_digest("src/resurgo/engine/_plainfiles.c"),
            extra_compile_args=["-O2", "-Wall", "-Wextra"],
            optional=True,
        ),
        Extension(
            "resurgo.engine._plainsave",
            ["src/resurgo/engine/_plainsave.c"],
            define_macros=source_digest("src/resurgo/engine/_plainsave.c"),
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-pthread"],
            extra_link_args=["-pthread"],
            optional=True,
        ),
    ]
)
