"""The files a rehearsal makes in its work directory, and nothing else: the blank disk
images, the medium disk holding the set, the rescue's kernel and initramfs, the consoles'
logs. Every one is created anew (O_EXCL, never through a link) in a directory of the
run's own (mkdtemp, 0700): a rehearsal never opens a file it did not make, let alone a
disk.

The room needed is counted before anything is made: what the recovery will write into
the sparse images (the data the manifests list, plus the filesystems' metadata), the
medium disk (the set and the sets it builds on, staged first and then copied into an
ext4 image), and the rescue image with its kernel and initramfs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from resurgo import run, signing
from resurgo.errors import OperationFailed, PreconditionFailed
from resurgo.media import Medium, SetReader
from resurgo.media.setindex import INDEX_NAME
from resurgo.rehearse.machine import DiskImage
from resurgo.units import human

log = logging.getLogger("resurgo.rehearse")

MiB = 1 << 20
# The label of the medium disk's filesystem: the rescue is told to look there.
MEDIUM_LABEL = "resurgo-rehearse"
# What a filesystem made on a blank image writes besides the data: its journal, inode
# tables, bitmaps (ext4 makes its tables lazily; xfs and btrfs write less).
FS_METADATA = 128 * MiB
# And a share of the disks' size, for the metadata that grows with it.
METADATA_PERMILLE = 5
# Room for the medium disk's own filesystem around the set's files.
MEDIUM_SLACK = 64 * MiB
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class Room:
    """What the work directory must hold, by what, in bytes."""

    data: int
    metadata: int
    medium: int
    rescue: int

    @property
    def total(self) -> int:
        return self.data + self.metadata + self.medium + self.rescue

    def text(self) -> str:
        return (f"{human(self.total)} (the data to restore {human(self.data)}, the "
                f"filesystems' metadata {human(self.metadata)}, the set twice while it is "
                f"put on its disk {human(self.medium)}, the rescue {human(self.rescue)})")


def room_needed(data: int, filesystems: int, disks: Sequence[DiskImage], set_bytes: int,
                rescue_bytes: int) -> Room:
    disk_bytes = sum(d.size for d in disks)
    metadata = filesystems * FS_METADATA + disk_bytes * METADATA_PERMILLE // 1000
    # Staged as files, then copied into the ext4 image; the staging goes once it is.
    medium = 2 * set_bytes + MEDIUM_SLACK
    # The image copied out of the set (or built), then its kernel and initramfs.
    return Room(data, metadata, medium, 2 * rescue_bytes)


def free_bytes(directory: Path) -> int:
    st = os.statvfs(directory)
    return st.f_bavail * st.f_frsize


def check_room(directory: Path, room: Room,
               free: Callable[[Path], int] | None = None) -> None:
    have = (free or free_bytes)(directory)
    if have < room.total:
        raise PreconditionFailed(
            f"the work directory {directory} has {human(have)} free; the rehearsal needs "
            + room.text(),
            "give another one with --work-dir DIR, or free space there",
        )


def unsafe_parent(parent: Path) -> str | None:
    """Why ``parent`` is no place for the run's directory, or None. The default lies in
    /var/tmp, where any user can make it first, or a link by its name: a directory of
    someone else's would let its owner swap the run's directory for a link while root
    writes disk images into it. So: a directory itself (not a link), this user's, that
    no one else can write."""
    st = os.lstat(parent)
    if stat.S_ISLNK(st.st_mode):
        return "is a symbolic link (give the directory it names)"
    if not stat.S_ISDIR(st.st_mode):
        return "is not a directory"
    if st.st_uid != os.geteuid():
        return f"belongs to user {st.st_uid}, not to this one"
    if st.st_mode & 0o022:
        return f"can be written by others (mode {stat.S_IMODE(st.st_mode):o})"
    return None


def make_work_dir(parent: Path, set_id: str) -> Path:
    """A directory of the run's own below ``parent`` (made 0700 if missing), which must be
    this user's alone (unsafe_parent)."""
    hint = "give another one with --work-dir DIR"
    try:
        parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        why = unsafe_parent(parent)
        if why is not None:
            raise PreconditionFailed(f"the work directory {parent} {why}: refused", hint)
        return Path(tempfile.mkdtemp(prefix=f"rehearse-{set_id}-", dir=parent))
    except OSError as e:
        raise PreconditionFailed(f"cannot make a work directory in {parent}: {e.strerror}",
                                 hint) from None


def sparse_image(path: Path, size: int) -> Path:
    """A new sparse file of ``size`` bytes; refused when anything is at ``path``."""
    try:
        fd = os.open(path, _CREATE, 0o600)
    except OSError as e:
        raise OperationFailed(f"cannot create the disk image {path}: {e.strerror}") from None
    try:
        os.ftruncate(fd, size)
    except OSError as e:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise OperationFailed(f"cannot size the disk image {path}: {e.strerror}") from None
    os.close(fd)
    return path


def new_file(path: Path) -> int:
    """A descriptor of a new file (0600) at ``path``, which must not exist."""
    try:
        return os.open(path, _CREATE, 0o600)
    except OSError as e:
        raise OperationFailed(f"cannot create {path}: {e.strerror}") from None


def copy_out(reader: SetReader, name: str, dest: Path) -> Path:
    """A file of the set copied to ``dest``, its size and digest checked as it is read
    (a file of another digest fails: Damaged)."""
    fd = new_file(dest)
    try:
        with os.fdopen(fd, "wb") as out, reader.open(name) as f:
            while chunk := f.read(1 << 20):
                out.write(chunk)
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    return dest


def stage_sets(medium: Medium, chain: Sequence[SetReader], stage: Path) -> int:
    """The sets laid out below ``stage`` as a directory medium lays them out (a
    directory per set id: its index, signature and files), every file read through the
    set's index and checked; the bytes staged."""
    total = 0
    stage.mkdir(mode=0o700)
    for reader in chain:
        top = stage / reader.id
        top.mkdir(mode=0o700)
        index = medium.backend.read_index(reader.id)
        if index is None:
            raise OperationFailed(f"the index of set {reader.id} vanished from {medium.url}")
        _write(top / INDEX_NAME, index)
        signature = medium.backend.read_signature(reader.id)
        if signature is not None:
            _write(top / signing.SIGNATURE_NAME, signature)
        for entry in reader.files():
            dest = top / entry.name
            for parent in reversed(dest.relative_to(top).parents[:-1]):
                (top / parent).mkdir(mode=0o700, exist_ok=True)
            copy_out(reader, entry.name, dest)
            total += entry.size
        total += len(index) + len(signature or b"")
    return total


def _write(path: Path, data: bytes) -> None:
    with os.fdopen(new_file(path), "wb") as f:
        f.write(data)


def medium_disk(stage: Path, image: Path, staged: int) -> Path:
    """An ext4 image holding ``stage``'s tree (mke2fs -d), labelled MEDIUM_LABEL."""
    size = (staged + staged // 10 + MEDIUM_SLACK + MiB - 1) // MiB * MiB
    sparse_image(image, size)
    run.run(["mke2fs", "-q", "-F", "-t", "ext4", "-L", MEDIUM_LABEL, "-m", "0",
             "-E", "root_owner=0:0", "-d", str(stage), str(image)], timeout=3600)
    return image


def remove_tree(path: Path) -> None:
    """The work directory gone; what cannot be removed is said, not raised."""
    def failed(_func: object, where: str, exc: object) -> None:
        log.warning("cannot remove %s: %s", where, exc)

    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(path, onerror=failed)


@contextlib.contextmanager
def work_dir(parent: Path, set_id: str, keep: bool) -> Iterator[Path]:
    """The run's own directory, removed at the end however it ends, unless ``keep``."""
    path = make_work_dir(parent, set_id)
    try:
        yield path
    finally:
        if keep:
            log.info("the rehearsal's files are kept in %s", path)
        else:
            remove_tree(path)
