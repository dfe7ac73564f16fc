"""The compiled parts of resurgo: the plain-file paths of the restore and of the save (see
their sources).

Optional: without a C compiler (or Python's headers) pip says the build of the extensions
failed and installs resurgo without them; the restore and the save then take their Python
paths, slower and the same, and the restore says so once. Everything else is in
pyproject.toml.
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
        ),
        Extension(
            "resurgo.engine._plainsave",
            ["src/resurgo/engine/_plainsave.c"],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-pthread"],
            extra_link_args=["-pthread"],
            optional=True,
        ),
    ]
)
