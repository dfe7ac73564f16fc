"""The one compiled part of resurgo: the restore's plain-file path (see its source).

Everything else is in pyproject.toml.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "resurgo.engine._plainfiles",
            ["src/resurgo/engine/_plainfiles.c"],
            extra_compile_args=["-O2", "-Wall", "-Wextra"],
        )
    ]
)
