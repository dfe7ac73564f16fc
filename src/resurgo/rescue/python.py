"""The Python that runs resurgo in the rescue system, and resurgo itself.

The interpreter and its standard library come from the system the rescue is built
from (the running one, or ``--sysroot``): the rescue runs what the machine runs.
The standard library goes in without its test suites, GUIs and installers
(contents.keep_stdlib_file); its extension modules go in as programs, so that the
image builder brings their shared libraries (libssl, libffi, libz ...) along.
resurgo and tomli_w come from the resurgo doing the build, byte-compiled when the
interpreter in the image is the same version (the rescue boots under emulation too,
where compiling every module at each start costs seconds).
"""

from __future__ import annotations

import importlib.util
import os
import re
import stat
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from resurgo.errors import PreconditionFailed
from resurgo.probe import rootfs
from resurgo.rescue import contents, cpio
from resurgo.rescue.layout import SITE_DIR

MIN_VERSION = (3, 11)

_VERSIONED = re.compile(r"python(\d+)\.(\d+)$")


@dataclass(frozen=True)
class PythonInstall:
    """An interpreter inside a system tree; paths as seen from inside the tree."""

    root: Path
    binary: str
    version: tuple[int, int]
    stdlib: tuple[str, ...]

    @property
    def cache_tag(self) -> str:
        return f"cpython-{self.version[0]}{self.version[1]}"

    @property
    def name(self) -> str:
        return f"python{self.version[0]}.{self.version[1]}"


def _versioned(root: Path, inside: str) -> tuple[str, tuple[int, int]] | None:
    real = rootfs.resolve(root, inside)
    if real is None:
        return None
    m = _VERSIONED.search(real)
    if m is None:
        return None
    return real, (int(m.group(1)), int(m.group(2)))


def find_python(root: Path) -> PythonInstall:
    """The python3 of the tree at ``root``: for the running system, the interpreter
    running this code (a venv's base interpreter); else python3 on the tree's PATH."""
    found: tuple[str, tuple[int, int]] | None = None
    if rootfs.is_running_root(root):
        found = _versioned(Path("/"), os.path.realpath(sys.executable))
    if found is None:
        for d in contents.PATH_DIRS:
            found = _versioned(root, f"{d}/python3")
            if found is not None:
                break
    if found is None:
        raise PreconditionFailed(
            f"no python3 in {root} (looked in {', '.join(contents.PATH_DIRS)})",
            "install it: apt-get install python3",
        )
    binary, version = found
    if version < MIN_VERSION:
        raise PreconditionFailed(
            f"{root}{binary} is Python {version[0]}.{version[1]}; resurgo needs "
            f"{MIN_VERSION[0]}.{MIN_VERSION[1]} or newer",
        )
    prefix = str(Path(binary).parent.parent)
    name = f"python{version[0]}.{version[1]}"
    stdlib = tuple(
        d
        for d in (f"{prefix}/lib/{name}", f"{prefix}/lib64/{name}")
        if rootfs.host_path(root, d).is_dir()
    )
    if not any(rootfs.host_path(root, f"{d}/os.py").is_file() for d in stdlib):
        raise PreconditionFailed(
            f"the standard library of {root}{binary} is not in {prefix}/lib/{name}",
            "install it: apt-get install libpython3-stdlib",
        )
    return PythonInstall(root, binary, version, stdlib)


def extension_modules(py: PythonInstall) -> list[str]:
    """The standard library's extension modules to carry (paths inside the tree)."""
    out = []
    for d in py.stdlib:
        dynload = rootfs.host_path(py.root, f"{d}/lib-dynload")
        if dynload.is_dir():
            out += [
                f"{d}/lib-dynload/{n}"
                for n in sorted(os.listdir(dynload))
                if contents.keep_dynload(n)
            ]
    return out


def stdlib_files(py: PythonInstall, *, pycache: bool = True) -> Iterator[tuple[str, Path]]:
    """(path in the image, where the host reads it) for the pure standard library."""
    for d in py.stdlib:
        base = rootfs.host_path(py.root, d)
        for top, dirs, names in os.walk(base):
            dirs.sort()
            rel_dir = os.path.relpath(top, base)
            for name in sorted(names):
                rel = name if rel_dir == "." else f"{rel_dir}/{name}"
                if not contents.keep_stdlib_file(rel, py.cache_tag, pycache=pycache):
                    continue
                host = Path(top, name)
                if host.is_symlink():
                    real = rootfs.resolve(py.root, f"{d}/{rel}")
                    if real is None:
                        continue
                    host = rootfs.host_path(py.root, real)
                    if not host.is_file():
                        continue
                yield f"{d}/{rel}", host


def _package_dir(module: ModuleType) -> Path:
    if module.__file__ is None:
        raise PreconditionFailed(f"cannot locate the files of {module.__name__}")
    path = Path(module.__file__)
    return path.parent if path.name == "__init__.py" else path


def package_files(module: ModuleType) -> Iterator[tuple[str, Path]]:
    """(path below SITE_DIR, host path) of a pure-Python package or module's sources."""
    base = _package_dir(module)
    if base.is_file():
        yield base.name, base
        return
    for top, dirs, names in os.walk(base):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(names):
            if name.endswith(".py") or name == "py.typed":
                host = Path(top, name)
                yield f"{module.__name__}/{host.relative_to(base)}", host


def compile_for(py: PythonInstall, source: bytes, image_path: str) -> bytes | None:
    """Bytecode of a source for the image's interpreter, when this one is the same
    version (an unchecked hash .pyc: valid whatever the file times in the image)."""
    if sys.version_info[:2] != py.version:
        return None
    from importlib._bootstrap_external import _code_to_hash_pyc  # type: ignore[attr-defined]

    code = compile(source, image_path, "exec", dont_inherit=True)
    data: bytes = _code_to_hash_pyc(code, importlib.util.source_hash(source), checked=False)
    return data


@dataclass(frozen=True)
class PythonReport:
    version: str
    binary: str
    stdlib_files: int
    resurgo_files: int
    extension_modules: int
    compiled: bool


def add_to_archive(
    w: cpio.Writer, py: PythonInstall, packages: list[ModuleType], *, pycache: bool = True
) -> PythonReport:
    """Put the standard library and ``packages`` (resurgo, tomli_w) into the archive."""
    n_std = 0
    for image_path, host in stdlib_files(py, pycache=pycache):
        st = host.stat()
        w.ensure_dirs(image_path)
        w.add(cpio.Entry(image_path, stat.S_IFREG | 0o644, host.read_bytes(), int(st.st_mtime)))
        n_std += 1
    n_pkg = 0
    compiled = False
    for module in packages:
        for rel, host in package_files(module):
            image_path = f"{SITE_DIR}/{rel}"
            data = host.read_bytes()
            w.ensure_dirs(image_path)
            w.add(cpio.Entry.file(image_path, data, mtime=int(host.stat().st_mtime)))
            n_pkg += 1
            if rel.endswith(".py"):
                code = compile_for(py, data, image_path)
                if code is not None:
                    p = Path(image_path)
                    pyc = f"{p.parent}/__pycache__/{p.stem}.{py.cache_tag}.pyc"
                    w.ensure_dirs(pyc)
                    w.add(cpio.Entry.file(pyc, code))
                    compiled = True
    return PythonReport(
        version=f"{py.version[0]}.{py.version[1]}",
        binary=py.binary,
        stdlib_files=n_std,
        resurgo_files=n_pkg,
        extension_modules=len(extension_modules(py)),
        compiled=compiled,
    )
