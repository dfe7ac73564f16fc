"""The restored system's files, read and written as that system will see them.

RootTree is the restored tree mounted at the recovery root: absolute symlinks inside it
mean what they will mean once it is / again (probe.rootfs resolves them so). SavedTree
is the copy of the configuration the description carries, for a preview before anything
is restored. Writes keep each file's mode and owner and replace it atomically.
"""

from __future__ import annotations

import base64
import fnmatch
import os
import posixpath
import stat
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from resurgo.errors import OperationFailed
from resurgo.model import ConfigFile, Encoding
from resurgo.probe import rootfs


class Tree(Protocol):
    def read(self, path: str) -> str | None:
        """The text of a file (absolute path inside the system), None if absent."""
        ...

    def glob(self, pattern: str) -> list[str]:
        """Regular files matching a pattern whose last component may be a glob."""
        ...


class RootTree:
    def __init__(self, root: Path) -> None:
        self.root = root

    def host(self, path: str, *, missing_ok: bool = False) -> Path | None:
        real = rootfs.resolve(self.root, path, missing_ok=missing_ok)
        return None if real is None else rootfs.host_path(self.root, real)

    def read(self, path: str) -> str | None:
        host = self.host(path)
        if host is None or not host.is_file():
            return None
        try:
            return host.read_bytes().decode("utf-8", errors="surrogateescape")
        except OSError:
            return None

    def glob(self, pattern: str) -> list[str]:
        directory, name = posixpath.split(pattern)
        host = self.host(directory)
        if host is None or not host.is_dir():
            return []
        out = []
        for entry in sorted(os.listdir(host)):
            if fnmatch.fnmatchcase(entry, name) and (host / entry).is_file():
                out.append(posixpath.join(directory, entry))
        return out

    def write(self, path: str, text: str, *, mode: int = 0o644) -> None:
        """Replace (or create) a file atomically, keeping an existing file's mode and owner."""
        host = self.host(path, missing_ok=True)
        if host is None:
            raise OperationFailed(f"{path} in {self.root} leads out of the restored tree")
        data = text.encode("utf-8", errors="surrogateescape")
        try:
            st = os.stat(host)
            mode, uid, gid = stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid
        except FileNotFoundError:
            uid = gid = 0
            host.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{host.name}.", dir=host.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chown(tmp, uid, gid)
            os.chmod(tmp, mode)
            os.replace(tmp, host)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise


class SavedTree:
    def __init__(self, files: Sequence[ConfigFile]) -> None:
        # A sealed secret file (an encrypted set read without its identity) is not known.
        self.files = {f.path: f for f in files if not f.sealed}

    def read(self, path: str) -> str | None:
        f = self.files.get(path)
        if f is None or f.content is None:
            return None
        if f.encoding == Encoding.BASE64:
            return base64.b64decode(f.content).decode("utf-8", errors="surrogateescape")
        return f.content

    def glob(self, pattern: str) -> list[str]:
        directory, name = posixpath.split(pattern)
        return sorted(
            p
            for p in self.files
            if posixpath.dirname(p) == directory
            and fnmatch.fnmatchcase(posixpath.basename(p), name)
        )
