"""A 1.44 MB FAT image as a medium: the description and its digest, nothing else.

It is the small medium an operator attaches through a server's virtual media
(or writes to a USB floppy) so the rescue system finds the description; the
archives live on another medium. The host may not mount vfat, so the image is
read and written with mtools. Layout inside the image: one directory per set,
``/<set id>/{description.toml, description.toml.sha256, set.json}``. The image is made
0600 (it holds a description); one that is not a file or a block device, or is larger
than any floppy, is refused unread, and its files are read one by one, each no further
than its cap.

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
import subprocess
import tempfile
from pathlib import Path

from resurgo import run
from resurgo.errors import BadInput, CommandFailed, Damaged, OperationFailed
from resurgo.media import limits, setindex
from resurgo.media.base import Backend, Staging
from resurgo.media.streams import BytesSource, Sink, Source

log = logging.getLogger("resurgo.media")

ALLOWED = ("description.toml", "description.toml.sha256")
CAPACITY = 1474560


class FloppyBackend(Backend):
    def __init__(self, path: str) -> None:
        run.require("mcopy", "mformat", "mmd", "mdeltree", "mdir", "mtype")
        self.path = Path(path).absolute()
        self.url = f"floppy:{self.path}"
        self.private = limits.Private(str(self.path.parent))

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

    # --- reading: one file at a time, never more than the image can hold ---
    #
    # The image may come from anyone (virtual media): its FAT may give a file any size,
    # or have many entries share one cluster chain. So nothing is extracted whole: the
    # image itself is bounded (check_image), and each file is read through mtype's
    # output, no further than a file of the image can be.

    def check_image(self) -> bool:
        """Whether the image exists; refused if it is neither a regular file nor a block
        device (a FIFO would hang mtools) or larger than any floppy (limits.FLOPPY_IMAGE)."""
        try:
            st = os.stat(self.path)
            if stat.S_ISBLK(st.st_mode):
                fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    size = os.lseek(fd, 0, os.SEEK_END)
                finally:
                    os.close(fd)
            elif stat.S_ISREG(st.st_mode):
                size = st.st_size
            else:
                raise OperationFailed(
                    f"{self.url} is neither a file nor a block device: refused unread",
                    "give the path of a FAT floppy image, or of a floppy drive",
                )
        except FileNotFoundError:
            return False
        except OSError as e:
            raise OperationFailed(f"cannot read {self.url}: {e.strerror}") from None
        if size > limits.FLOPPY_IMAGE:
            raise limits.too_large("the image", self.url, size, limits.FLOPPY_IMAGE)
        return True

    def _listing(self, where: str) -> list[str] | None:
        """The names in the image's directory ::/where (directories end with /), or None
        if it does not exist."""
        result = run.run(["mdir", "-b", "-i", str(self.path), f"::/{where}"], check=False,
                         env={"MTOOLS_SKIP_CHECK": "1"})
        if result.returncode != 0:
            if "not found" in result.stderr:
                return None
            raise self._fail(CommandFailed(list(result.argv), result.returncode,
                                           result.stderr), "reading it")
        prefix = f"::/{where}/" if where else "::/"
        return [line.removeprefix(prefix) for line in result.stdout.splitlines()
                if line.startswith(prefix) and line != prefix]

    def _read(self, set_id: str, name: str) -> bytes | None:
        """A file of a set, or None if it does not exist; refused beyond its cap."""
        cap = min(limits.READ_WHOLE.get(name, limits.FLOPPY_IMAGE), limits.FLOPPY_IMAGE)
        argv = ["mtype", "-i", str(self.path), f"::/{set_id}/{name}"]
        with tempfile.TemporaryFile() as err:
            proc = run.spawn(argv, stdout=subprocess.PIPE, stderr=err,
                             env={"MTOOLS_SKIP_CHECK": "1"})
            assert proc.stdout is not None
            try:
                data = proc.stdout.read(cap + 1)
            finally:
                proc.stdout.close()
                if len(data) > cap:
                    proc.kill()
                code = proc.wait()
            err.seek(0)
            stderr = err.read().decode("utf-8", "replace")
        if len(data) > cap:
            raise limits.too_large(f"{set_id}/{name}", self.url, f"more than {cap}", cap)
        if code != 0:
            if "not found" in stderr:
                return None
            raise self._fail(CommandFailed(argv, code, stderr), "reading it")
        return data

    def candidate_ids(self) -> list[str]:
        if not self.check_image():
            return []
        names = self._listing("") or []
        return sorted(n.rstrip("/") for n in names
                      if n.endswith("/") and setindex.is_set_id(n.rstrip("/")))

    def read_index(self, set_id: str) -> bytes | None:
        if not self.check_image():
            return None
        return self._read(set_id, setindex.INDEX_NAME)

    def open_file(self, set_id: str, name: str) -> Source:
        data = self._read(set_id, name) if self.check_image() else None
        if data is None:
            raise Damaged(
                f"{set_id}/{name} is missing on {self.url}", "the set is incomplete"
            )
        return BytesSource(data)

    def file_sizes(self, set_id: str) -> dict[str, int]:
        names = self._listing(set_id) if self.check_image() else None
        sizes: dict[str, int] = {}
        for name in names or []:
            if name.endswith("/") or name == setindex.INDEX_NAME:
                continue
            data = self._read(set_id, name)
            if data is not None:
                sizes[name] = len(data)
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
            if self.check_image():
                with open(self.path, "rb") as src, os.fdopen(os.open(
                        tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                        limits.FILE_MODE), "wb") as dst:
                    shutil.copyfileobj(src, dst)
            else:
                self._mtools(
                    ["mformat", "-f", "1440", "-C", "-i", str(tmp), "::"],
                    "formatting a fresh image",
                )
            for argv in edit:
                self._mtools([str(tmp) if a == "IMAGE" else a for a in argv], "writing it")
            fd = os.open(tmp, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                # Private whatever the umask (mformat made it by it): it holds a description.
                self.private.make(fd, limits.FILE_MODE)
                os.fsync(fd)
            finally:
                os.close(fd)
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

    def begin(self, set_id: str) -> Staging:
        self.clean_leftovers()
        return FloppyStaging(self, set_id)

    def delete(self, set_id: str) -> None:
        self.change(set_id, [["mdeltree", "-i", "IMAGE", f"::/{set_id}"]])


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
