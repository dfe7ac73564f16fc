"""resurgo's built-in restore program: archives of file system trees, saved and restored.

API
===

``save_filesystem(mountpoint, archive, manifest, *, set_id, ...)``
    Save one file system (one btrfs subvolume) as it is under the mounts on top of it.
``save_tree(root, archive, manifest, *, set_id, ...)``
    Save a directory tree without crossing into other file systems.
``restore_tree(target, manifest, archives, *, identity=None, writers=None, select=None)``
    Restore the tree a manifest describes, from the archives of its chain (``select``:
    only the entries whose path it accepts, each archive read up to the last of them).
``verify_tree(root, manifest, *, identity=None, content=True)``
    Every difference between a tree and a manifest (content and metadata).
``verify.verify_entries(root, entries, *, content=True)``
    The same for some entries of a manifest (what a selection restored).

The writers take any object with ``write(bytes)`` (a medium's file writer, an open file)
and never close it; the readers take a ``Source``: a name (shown in errors) and a
function that opens the stream from its start (anything with ``read(n)`` and
``close()``); nothing ever seeks, so archives can stream from S3 or SFTP. Every problem
a user can meet is an ``ArchiveError`` (a resurgo.errors.OperationFailed) naming the
archive and the files concerned; ``ArchiveDamaged`` for damaged bytes, ``DecryptionFailed``
for a missing or wrong age identity, ``UnsafePath`` for an archive that would write
outside the target.

Pipeline
========

On save: walk → records → ``zstd -T0`` → ``age -r RECIPIENT...`` (optional) → writer.
On restore: reader → ``age -d -i IDENTITY`` → ``zstd -d`` → records → files. All
streaming; the manifest goes the same way. The system programs are used rather than a
Python binding because they are what a small rescue image has, and ``zstd -T0``
compresses on every core in its own process, beside our reading and hashing.

Archive format, version 3
=========================

The plaintext inside zstd (and age) is a sequence of records; integers are little
endian::

    start   "RSGOARC\\0"  u16 version (3)  u16 n  set id (n bytes, UTF-8)  u32 crc32
    entry   "E"  u32 n  u64 p  header (n bytes)  u32 crc32(frame+header)  payload (p bytes)
    block   "B"  u32 n  u64 p  u32 entries  u64 their payload bytes  parent (n - 12 bytes)
                 u32 crc32(frame+parent)  entries (p bytes, p <= 4 MiB, 1 to 1024 entries)
    end     "Z"  u64 number of entries  u64 payload bytes  u32 crc32

    header  u8 kind  u32 st_mode  u32 uid  u32 gid  i64 mtime_ns  i64 atime_ns  u64 rdev
            u64 size  u32 path length  u32 target length  u16 xattr count
            u32 extent count  path  target
            xattr count x (u16 name length  u32 value length  name  value)
            extent count x (u64 offset  u64 length)

    payload (kind f only): the bytes of each extent in order, then the 32-byte digest of
            the file's content as a reader sees it (holes read as zeros): BLAKE3, see
            resurgo.digest (version 1 had sha256 there, and is not read)

    block   consecutive entries of one directory (the parent path; ``.`` for the root),
            none of them a directory or a hard link, with their payloads: a restore reads
            a block whole and hands it on (see Parallelism). Each entry keeps its own frame
            and crc; the block's frame says how many entries and payload bytes it holds,
            and a reader checks that it holds exactly those, all in that directory.
            A save puts every entry it can in a block: files of up to 1 MiB without
            holes, symlinks, devices and fifos (version 2 had no blocks, and is not read)

Kinds: ``f`` regular file, ``d`` directory, ``l`` symlink (target = link text), ``h`` hard
link (target = the path of the group's first file, earlier in the same archive), ``c``/``b``
character/block device (rdev), ``p`` fifo. Sockets are never saved. Paths are relative
to the saved root (the root itself is ``.``), components joined by ``/``, any bytes but
``/`` and NUL, never ``..`` or empty; they are checked on reading. Extents list the data
of a sparse file (SEEK_DATA/SEEK_HOLE); a restore truncates the file to its size and
writes only them, so holes stay holes. Extended attributes of every namespace are kept
by name: user.*, trusted.*, security.* (SELinux labels, file capabilities) and the POSIX
ACLs as system.posix_acl_access/default.

Entries are in walk order: depth first, pre-order, names sorted as bytes — the order of
the tuples of path components (names.walk_key) — strictly, each path once, nothing after
an entry that is not a directory is inside it, and the root is a directory. The crc32s
find a damaged header before it is believed; the digest after each file finds damaged
data; the end record tells a complete archive from a truncated one. A reader refuses any
other version.

Bounds, checked before anything is allocated or made (records, names): a name (path
component) of at most 255 bytes (NAME_MAX), a path of at most 32 KiB (deeper than
PATH_MAX on purpose: a restore opens one directory at a time), a symlink's text under
4096 bytes, an attribute's name of at most 255 bytes and value of at most 64 KiB, the names
of one entry's attributes together at most 64 KiB (the kernel's XATTR_*_MAX) and their
values at most 1 MiB, at most 65536 data extents (a save stores the holes past the last
as zeros), a header of at most records.MAX_HEADER (about 2.3 MiB); the st_mode's file
type is the kind's.

Confinement
===========

Whatever an archive (and its manifest, written by the same hand) says, a restore changes
nothing outside its target: paths are relative and checked; directories are opened one
component at a time with O_NOFOLLOW from the target's descriptor (targets); an entry out
of walk order or listed twice is refused (UnsafePath) before it is made — the writers check
their run's lines, the reader the order from one run to the next — so no two processes
ever make one name; a hard link names an earlier path only. Files are created with
O_CREAT|O_EXCL|O_NOFOLLOW and get their metadata through that descriptor; a fifo or
device gets it through an O_PATH|O_NOFOLLOW descriptor of the node just made, checked
with fstat (writer.pinned); a symlink only by calls that do not follow it. setuid,
setgid, sticky and the file capability come last, on the object just made. The writer
processes run an isolated interpreter (``python -I``, resurgo's own path given
explicitly): nothing is imported from the directory a restore is started in.

A sparse file's holes are hashed (its digest covers them) in time proportional to their
size: each process of a restore hashes at most the target's size or 2 TiB of holes,
whichever is more (writer.HOLE_FLOOR), and a size beyond what a file on the target can
have is refused when its size is set, before any data.

Manifest format, version 3
==========================

See resurgo.engine.manifest: zstd-compressed (and age-encrypted with the archive) UTF-8
text, one line per entry in walk order with kind, path, st_mode, owner, size, mtime,
ctime, inode, rdev, content digest, xattr digest, the set holding the entry and the link
target; a header naming the chain of sets; the files that changed while they were read
(``#changed`` lines, new in version 3; version 2 is read too); an end line with the count.

Files changed while read
========================

A save without a snapshot reads a live tree. Each regular file's size, mtime and ctime
are taken by fstat before and after it is read (one system call more per file); a file
that moved is read once more (a small file: its record is made from the second read; a
large one, already streamed, is hashed again and stands if that read is steady and finds
what was stored), and one that moves again is listed as changed in the manifest and the
save's result (SaveResult.changed): its content may be torn. Its entry keeps the
metadata seen before the read it stores, so the next incremental save reads it again.

Incremental sets
================

Each set's manifest lists the complete tree at its time and, per entry, which set of its
chain holds its record. An incremental save stores the entries that changed by the rule
of save.unchanged (kind, mode, owner, size, mtime_ns, ctime_ns, inode and rdev all
equal: ctime moves on every change of content or metadata and cannot be set back) and
copies the other lines. A restore reads only the last manifest: for each set of the
chain, oldest first, it streams that set's archive and extracts the entries the manifest
says it holds. Files deleted since are absent (no manifest lists them), renamed files
come from the set that saved them under their new name, and each file is written once.

Parallelism
===========

Saving: one thread walks, reads and hashes (big os.read calls, records gathered into one
os.writev), ``zstd -T0`` compresses on every core beside it. The plain files of a full
save (regular, up to 1 MiB, one link, no attributes or holes, a name the manifest writes
as it is: most files of a system) are read by a compiled path (_plainsave.c, when built),
a directory's run of them at a time: the system calls tar makes for each (fstatat,
openat, read, fstat, close) and flistxattr, without the GIL, the opens and reads of a
long run shared with a helper thread (tar reads on one core; zstd leaves most of the
other free), and their records and manifest lines made byte for byte as the general path
makes them, with no Python object per file but the digest. It stops at anything else
and at a file that moved while it was read (its fstatat and its fstat after the read
differ, or the inode is another), which the general path then takes: every note,
refusal and changed file is the general path's. Restoring: one thread reads
the stream (and writes large files, hashing them in a second thread); each block goes
whole, with its manifest lines, into a slot of shared memory, and writer processes (one
per CPU) check its entries against the frame and the lines and create the files, so the
many small system calls of small files run on every core, not behind one GIL, and the
reading thread does one step per block, not per file.

Memory
======

Save: nothing grows with the number of files except the names of one directory (sorted),
the inodes of files with more than one link (for hard links) and the paths of the files
that changed while they were read (the manifest's last lines).

Restore, under any input: the slots (3 per writer process, 5 MiB each: a block, its
manifest lines and path), one decoded header at a time per process (MAX_HEADER bytes,
its extents as up to 65536 pairs), 8 chunks of 256 KiB of a large file in flight, a
manifest line (1 MiB) and header (65536 lines), and the records kept for the end (one
encoded header per directory, one pair of paths per hard link): at most 64 MiB in memory,
the rest in an unnamed file on the target (engine.kept). zstd -d takes at most its
default window limit (128 MiB) however a frame is made. So a restore's reading process
stays within about 120 MiB beside its slots, and each writer within about 20 MiB beside
its share of them, whatever an archive holds.
"""

from __future__ import annotations

from resurgo.engine.errors import (
    ArchiveDamaged,
    ArchiveError,
    DecryptionFailed,
    RestoreFailed,
    SaveFailed,
    UnsafePath,
)
from resurgo.engine.pipes import Written
from resurgo.engine.restore import RestoreResult, restore_tree
from resurgo.engine.save import SYSTEM_EMPTY_DIRS, SaveResult, save_filesystem, save_tree
from resurgo.engine.source import Source
from resurgo.engine.verify import Mismatch, verify_tree

__all__ = [
    "SYSTEM_EMPTY_DIRS",
    "ArchiveDamaged",
    "ArchiveError",
    "DecryptionFailed",
    "Mismatch",
    "RestoreFailed",
    "RestoreResult",
    "SaveFailed",
    "SaveResult",
    "Source",
    "UnsafePath",
    "Written",
    "restore_tree",
    "save_filesystem",
    "save_tree",
    "verify_tree",
]
