"""The one compiled part of resurgo: the restore's plain-file path (see its source).

Optional: without a C compiler (or Python's headers) pip says the build of the extension
failed and installs resurgo without it; the restore then takes its Python path, slower
and the same, and says so once. Everything else is in pyproject.toml.
"""

from setuptools import Extension, setup

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
            extra_compile_args=["-O2", "-Wall", "-Wextra"],
            optional=True,
        )
    ]
)
