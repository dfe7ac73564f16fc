"""A 1.44 MB FAT image as a medium: the description and its digest, nothing else.

It is the small medium an operator attaches through a server's virtual media
(or writes to a USB floppy) so the rescue system finds the description; the
archives live on another medium. The host may not mount vfat, so the image is
read and written with mtools. Layout inside the image: one directory per set,
``/<set id>/{description.toml, description.toml.sha256, set.json}``.

Atomic commit: the image is copied (or made fresh with ``mformat -f 1440``)
to a temporary file beside it, changed there, synced, and renamed over the
image; a reader sees the old image or the new one. (A block device, e.g. a
real floppy, is changed in place: that cannot be atomic.)
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import stat
import tempfile
from pathlib import Path

from resurgo import run
from resurgo.errors import BadInput, CommandFailed, OperationFailed
from resurgo.media import setindex
from resurgo.media.base import Backend, Staging
from resurgo.media.streams import BytesSource, Sink, Source

log = logging.getLogger("resurgo.media")

ALLOWED = ("description.toml", "description.toml.sha256")
CAPACITY = 1474560


class FloppyBackend(Backend):
    def __init__(self, path: str) -> None:
        run.require("mcopy", "mformat", "mmd", "mdeltree")
        self.path = Path(path).absolute()
        self.url = f"floppy:{self.path}"
        self._cache: tempfile.TemporaryDirectory[str] | None = None
        self._cache_key: tuple[int, int, int] | None = None

    @property
    def holds_archives(self) -> bool:
        return False

    def check_file_allowed(self, name: str) -> None:
        if name not in ALLOWED:
            raise BadInput(
                f"the floppy medium {self.url} holds only the description and its digest "
                f"({', '.join(ALLOWED)}), not {name}",
                "save the archives to a directory, SFTP or S3 medium",
            )

    def _fail(self, e: CommandFailed, doing: str) -> OperationFailed:
        text = e.stderr.lower()
        if "disk full" in text:
            return OperationFailed(
                f"the floppy image {self.path} is full ({CAPACITY} bytes) while {doing}",
                "delete old recovery sets from it (prune), or start a fresh image",
            )
        if "non dos media" in text or "cannot initialize" in text:
            return OperationFailed(
                f"{self.path} is not a FAT floppy image (while {doing})",
                "give the path of a FAT image, or of a new file for a fresh one",
            )
        return OperationFailed(f"mtools failed on {self.url} while {doing}: {e}")

    def _mtools(self, argv: list[str], doing: str) -> None:
        try:
            run.run(argv, env={"MTOOLS_SKIP_CHECK": "1"})
        except CommandFailed as e:
            raise self._fail(e, doing) from None

    # --- reading: the whole image extracted once per version of it ---

    def _tree(self) -> Path | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise OperationFailed(f"cannot read {self.url}: {e.strerror}") from None
        key = (st.st_ino, st.st_size, st.st_mtime_ns)
        if self._cache is None or self._cache_key != key:
            self._drop_cache()
            self._cache = tempfile.TemporaryDirectory(prefix="resurgo-floppy-")
            self._mtools(
                ["mcopy", "-s", "-n", "-i", str(self.path), "::", self._cache.name], "reading it"
            )
            self._cache_key = key
        return Path(self._cache.name)

    def _drop_cache(self) -> None:
        if self._cache is not None:
            self._cache.cleanup()
            self._cache = None
            self._cache_key = None

    def candidate_ids(self) -> list[str]:
        tree = self._tree()
        if tree is None:
            return []
        return sorted(p.name for p in tree.iterdir() if setindex.is_set_id(p.name))

    def read_index(self, set_id: str) -> bytes | None:
        tree = self._tree()
        if tree is None:
            return None
        try:
            return (tree / set_id / setindex.INDEX_NAME).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def open_file(self, set_id: str, name: str) -> Source:
        tree = self._tree()
        path = tree / set_id / name if tree else None
        if path is None or not path.is_file():
            raise OperationFailed(
                f"{set_id}/{name} is missing on {self.url}", "the set is incomplete"
            )
        return BytesSource(path.read_bytes())

    def file_sizes(self, set_id: str) -> dict[str, int]:
        tree = self._tree()
        base = tree / set_id if tree else None
        if base is None or not base.is_dir():
            return {}
        sizes = {p.name: p.stat().st_size for p in base.iterdir() if p.is_file()}
        sizes.pop(setindex.INDEX_NAME, None)
        return sizes

    # --- writing: change a copy, then rename it over the image ---

    def _is_device(self) -> bool:
        try:
            return stat.S_ISBLK(self.path.stat().st_mode)
        except FileNotFoundError:
            return False

    def _temp_image(self, tag: str) -> Path:
        return self.path.with_name(f".{self.path.name}.incomplete-{tag}")

    def clean_leftovers(self) -> None:
        if not self.path.parent.is_dir():
            return
        for p in self.path.parent.glob(f".{self.path.name}.incomplete-*"):
            log.info("removing %s, left over by an interrupted save", p)
            p.unlink(missing_ok=True)

    def change(self, tag: str, edit: list[list[str]]) -> None:
        """Apply mtools commands (with IMAGE for the image) to a copy, then replace."""
        if self._is_device():
            for argv in edit:
                self._mtools([str(self.path) if a == "IMAGE" else a for a in argv], "writing it")
            return
        if not self.path.parent.is_dir():
            raise OperationFailed(
                f"cannot create {self.url}: the directory {self.path.parent} does not exist"
            )
        tmp = self._temp_image(tag)
        try:
            if self.path.exists():
                shutil.copyfile(self.path, tmp)
            else:
                self._mtools(
                    ["mformat", "-f", "1440", "-C", "-i", str(tmp), "::"],
                    "formatting a fresh image",
                )
            for argv in edit:
                self._mtools([str(tmp) if a == "IMAGE" else a for a in argv], "writing it")
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as e:
            raise OperationFailed(f"cannot write {self.url}: {e.strerror}") from None
        finally:
            tmp.unlink(missing_ok=True)
        self._drop_cache()

    def begin(self, set_id: str) -> Staging:
        self.clean_leftovers()
        return FloppyStaging(self, set_id)

    def delete(self, set_id: str) -> None:
        self.change(set_id, [["mdeltree", "-i", "IMAGE", f"::/{set_id}"]])

    def close(self) -> None:
        self._drop_cache()


class _MemorySink:
    def __init__(self, files: dict[str, bytes], name: str) -> None:
        self._files = files
        self._name = name
        self._buf = io.BytesIO()

    def write(self, data: bytes) -> None:
        if self._buf.tell() + len(data) > CAPACITY:
            raise OperationFailed(f"{self._name} does not fit on a floppy ({CAPACITY} bytes)")
        self._buf.write(data)

    def finish(self) -> None:
        self._files[self._name] = self._buf.getvalue()

    def discard(self) -> None:
        self._buf = io.BytesIO()


class FloppyStaging(Staging):
    def __init__(self, backend: FloppyBackend, set_id: str) -> None:
        self._b = backend
        self._id = set_id
        self._files: dict[str, bytes] = {}

    def create(self, name: str) -> Sink:
        return _MemorySink(self._files, name)

    def commit(self, index: bytes) -> None:
        with tempfile.TemporaryDirectory(prefix="resurgo-floppy-") as tmp:
            edit = [["mmd", "-i", "IMAGE", f"::/{self._id}"]]
            files = {**self._files, setindex.INDEX_NAME: index}  # the index last
            for n, (name, data) in enumerate(files.items()):
                local = Path(tmp, str(n))
                local.write_bytes(data)
                edit.append(["mcopy", "-i", "IMAGE", str(local), f"::/{self._id}/{name}"])
            self._b.change(self._id, edit)

    def sizes(self) -> dict[str, int]:
        return {name: len(data) for name, data in self._files.items()}

    def abort(self) -> None:
        self._files.clear()
