"""The Python that runs resurgo in the rescue system, and resurgo itself.

The interpreter and its standard library come from the system the rescue is built
from (the running one, or ``--sysroot``): the rescue runs what the machine runs.
The standard library goes in without its test suites, GUIs and installers
(contents.keep_stdlib_file); its extension modules go in as programs, so that the
image builder brings their shared libraries (libssl, libffi, libz ...) along.
resurgo and the packages it imports (tomli_w, blake3, zstandard) come from the resurgo doing the
build, byte-compiled when the interpreter in the image is the same version (the rescue
boots under emulation too, where compiling every module at each start costs seconds).
A package's extension module (blake3's) is built for one Python: it goes in only when
the image's interpreter can import it, and its shared libraries come from the tree the
image is built from, where the rescue's dynamic linker will look for them.
"""

from __future__ import annotations

import importlib.util
import os
import re
import stat
import sys
import sysconfig
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import ModuleType

from resurgo import run
from resurgo.errors import PreconditionFailed
from resurgo.probe import rootfs
from resurgo.rescue import contents, cpio, elf
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

    @property
    def where(self) -> str:
        """The interpreter as a person finds it from the build machine."""
        return self.binary if rootfs.is_running_root(self.root) else f"{self.root}{self.binary}"


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


def extension_suffixes(py: PythonInstall) -> tuple[str, ...]:
    """The file name endings the image's interpreter imports extension modules from (as
    importlib.machinery.EXTENSION_SUFFIXES there): its own tag, read off the standard
    library's extension modules (``.cpython-311-x86_64-linux-gnu.so``), the stable ABI's
    and the bare ``.so``."""
    own = {
        "." + name.split(".", 1)[1]
        for name in (PurePosixPath(p).name for p in extension_modules(py))
        if name.count(".") >= 2 and name.split(".", 2)[1].startswith(f"{py.cache_tag}-")
    }
    if not own:
        # An interpreter without lib-dynload (all built in): this machine's platform tag
        # with the image's version.
        ext = str(sysconfig.get_config_var("EXT_SUFFIX") or ".so")
        own = {ext.replace(sys.implementation.cache_tag or "", py.cache_tag, 1)}
    return (*sorted(own), ".abi3.so", ".so")


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


def is_extension(name: str) -> bool:
    return name.endswith(".so")


# Extension modules a rescue never runs: the save's compiled path (a rescue recovers; a
# save there would take the Python path), and python-zstandard's cffi backend (its C
# backend is the one imported; the cffi one would need cffi, which is not carried).
NOT_CARRIED = ("resurgo/engine/_plainsave.", "zstandard/_cffi.", "zstandard/backend_cffi.")


def package_files(module: ModuleType) -> Iterator[tuple[str, Path]]:
    """(path below SITE_DIR, host path) of a package or module's sources and extension
    modules (what runs: no stubs, no bytecode of this machine's Python, nor NOT_CARRIED)."""
    base = _package_dir(module)
    if base.is_file():
        yield base.name, base
        return
    for top, dirs, names in os.walk(base):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(names):
            if name.endswith(".py") or name == "py.typed" or is_extension(name):
                host = Path(top, name)
                rel = f"{module.__name__}/{host.relative_to(base)}"
                if not rel.startswith(NOT_CARRIED):
                    yield rel, host


def carried_extension(host: Path, data: bytes) -> bytes:
    """An extension module as it goes into the image: without its debug sections when it
    has some and this machine has strip (python-zstandard's wheel ships an 11.6 MB module
    of which 0.9 MB is code: 2.4 MB of a zstd-compressed image against 0.4 MB), else as
    it is. The stripped copy must need the same libraries, or the original goes in."""
    if not elf.has_debug_info(data) or run.which("strip") is None:
        return data
    with tempfile.TemporaryDirectory(prefix="resurgo-strip-") as tmp:
        out = Path(tmp, "module.so")
        if run.run(["strip", "--strip-debug", "-o", str(out), str(host)],
                   check=False).returncode != 0:
            return data
        stripped = out.read_bytes()
    return stripped if elf.needed(stripped) == elf.needed(data) else data


def package_extensions(py: PythonInstall, packages: Iterable[ModuleType]) -> list[Path]:
    """The extension modules of ``packages`` (host paths), each one that the image's
    interpreter imports: a module built for another Python is refused, not carried into
    a rescue that could not restore without it."""
    suffixes = extension_suffixes(py)
    out: list[Path] = []
    for module in packages:
        for rel, host in package_files(module):
            name = PurePosixPath(rel).name
            if not is_extension(name):
                continue
            if "." + name.partition(".")[2] not in suffixes:
                version = f"{py.version[0]}.{py.version[1]}"
                needed = "resurgo" if module.__name__ == "resurgo" else (
                    f"resurgo and {module.__name__}")
                raise PreconditionFailed(
                    f"{module.__name__} here is built for another Python than the rescue's "
                    f"{py.where} (Python {version}, which imports {suffixes[0]} modules, "
                    f"not {host.name}): the rescue could not import it",
                    f"build the rescue with a Python {version} that has {needed} "
                    f"installed, or from a --sysroot whose python3 is "
                    f"{sys.version_info[0]}.{sys.version_info[1]} like this one",
                )
            out.append(host)
    return out


def package_libraries(py: PythonInstall, extensions: Sequence[Path]) -> list[str]:
    """The shared libraries (paths inside the tree, transitively) that the packages'
    extension modules need: the modules are read on this machine, the libraries are
    found in the tree, where the rescue's dynamic linker will look for them."""
    dirs = elf.library_dirs(py.root)
    direct: list[str] = []
    missing: list[str] = []
    for host in extensions:
        for name in elf.needed(host.read_bytes()):
            lib = elf.find_library(py.root, name, dirs)
            if lib is None:
                missing.append(f"{name} (for {host.name})")
            elif lib not in direct:
                direct.append(lib)
    deeper, not_found = elf.library_closure(py.root, direct)
    missing += not_found
    if missing:
        where = "this machine" if rootfs.is_running_root(py.root) else str(py.root)
        raise PreconditionFailed(
            f"{where} lacks {', '.join(dict.fromkeys(missing))}, which resurgo's Python "
            "packages need in the rescue",
            "install the package that has it (dpkg -S, apt-file search)",
        )
    return list(dict.fromkeys([*direct, *deeper]))


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
class PackageReport:
    """One package carried from the build machine (resurgo, tomli_w, blake3)."""

    name: str
    version: str | None
    files: int
    #: Its extension modules, as paths in the image.
    extension_modules: tuple[str, ...] = ()


@dataclass(frozen=True)
class PythonReport:
    version: str
    binary: str
    stdlib_files: int
    #: The standard library's extension modules (lib-dynload).
    extension_modules: int
    compiled: bool
    packages: tuple[PackageReport, ...] = ()
    #: The shared libraries the packages' extension modules need (paths in the tree,
    #: and so in the image).
    libraries: tuple[str, ...] = ()

    @property
    def package_files(self) -> int:
        return sum(p.files for p in self.packages)


def add_stdlib(w: cpio.Writer, py: PythonInstall, *, pycache: bool = True) -> int:
    """Put the pure standard library into the archive; the number of files."""
    n_std = 0
    for image_path, host in stdlib_files(py, pycache=pycache):
        st = host.stat()
        w.ensure_dirs(image_path)
        w.add(cpio.Entry(image_path, stat.S_IFREG | 0o644, host.read_bytes(), int(st.st_mtime)))
        n_std += 1
    return n_std


def add_packages(
    w: cpio.Writer, py: PythonInstall, packages: Sequence[ModuleType]
) -> tuple[tuple[PackageReport, ...], bool]:
    """Put ``packages`` below SITE_DIR (bytecode too when this Python can compile it):
    their reports, and whether anything was compiled."""
    package_extensions(py, packages)  # refuses a module the image could not import
    reports: list[PackageReport] = []
    compiled = False
    for module in packages:
        n_files = 0
        extensions: list[str] = []
        for rel, host in package_files(module):
            image_path = f"{SITE_DIR}/{rel}"
            data = host.read_bytes()
            w.ensure_dirs(image_path)
            mtime = int(host.stat().st_mtime)
            if is_extension(rel):
                # As pip installs it: the dynamic linker maps it, as it does a library.
                w.add(cpio.Entry.file(image_path, carried_extension(host, data), 0o755,
                                      mtime=mtime))
                extensions.append(image_path)
            else:
                w.add(cpio.Entry.file(image_path, data, mtime=mtime))
            n_files += 1
            if rel.endswith(".py"):
                code = compile_for(py, data, image_path)
                if code is not None:
                    p = Path(image_path)
                    pyc = f"{p.parent}/__pycache__/{p.stem}.{py.cache_tag}.pyc"
                    w.ensure_dirs(pyc)
                    w.add(cpio.Entry.file(pyc, code))
                    compiled = True
        version = getattr(module, "__version__", None)
        reports.append(
            PackageReport(
                module.__name__,
                version if isinstance(version, str) else None,
                n_files,
                tuple(extensions),
            )
        )
    return tuple(reports), compiled


def add_to_archive(
    w: cpio.Writer,
    py: PythonInstall,
    packages: Sequence[ModuleType],
    *,
    pycache: bool = True,
    libraries: Sequence[str] = (),
) -> PythonReport:
    """Put the standard library and ``packages`` (resurgo, tomli_w, blake3) into the
    archive. ``libraries``: what the packages' extension modules need, for the report
    (the image builder installs them with the programs)."""
    n_std = add_stdlib(w, py, pycache=pycache)
    reports, compiled = add_packages(w, py, packages)
    return PythonReport(
        version=f"{py.version[0]}.{py.version[1]}",
        binary=py.binary,
        stdlib_files=n_std,
        extension_modules=len(extension_modules(py)),
        compiled=compiled,
        packages=reports,
        libraries=tuple(libraries),
    )
