"""How large the files of a set that are read whole may be, and the modes of what a medium
makes.

A medium may be written by anyone who can plug in a disk or reach a server: the files a
reader holds in memory whole are refused beyond these caps before they are read (a
``set.json`` that is a link to /dev/zero must not fill the rescue's memory). Streamed
files (archives, manifests) are bounded by the size the index records (streams.FileReader).
"""

from __future__ import annotations

import errno
import logging
import os

from resurgo import signing
from resurgo.errors import OperationFailed

log = logging.getLogger("resurgo.media")

KiB = 1024
MiB = 1024 * KiB

# set.json lists every file of the set with its size and digest, about 150 bytes each; a
# set holds two files per filesystem or subvolume and a few more. 16 MiB is some 100,000
# files, far beyond any set, and still little to hold in a rescue system's memory.
INDEX = 16 * MiB

# description.toml: the layout (a few KB per disk) and configuration files of at most
# 1 MiB each, a few dozen; the same bound as the one its parser applies
# (fileformat.bounds.MAX_BYTES).
DESCRIPTION = 64 * MiB

# description.toml.sha256: one line, a hex digest and a file name.
DESCRIPTION_DIGEST = 4 * KiB

# A floppy image: the largest floppy format holds 2.88 MB; with room to spare, and small
# enough that no FAT trick (entries sharing clusters) makes reading it costly.
FLOPPY_IMAGE = 4 * MiB

# The files of a set that readers take whole, by name, with their caps (the signature's
# is the signing module's).
READ_WHOLE = {
    "set.json": INDEX,
    "description.toml": DESCRIPTION,
    "description.toml.sha256": DESCRIPTION_DIGEST,
    signing.SIGNATURE_NAME: signing.MAX_SIGNATURE,
}

# Whatever else is read whole (read() of a FileReader without a size) is refused beyond
# the largest of the caps: archives and manifests are streamed, never held whole.
ANY_WHOLE = max(READ_WHOLE.values())

# What a medium creates is private whatever the umask: a set holds /etc/shadow and the
# host's keys (unless encrypted), its description the configuration of the machine.
DIR_MODE = 0o700
FILE_MODE = 0o600

# What fchmod says on a filesystem without Unix modes (vfat, exfat: a USB stick), whose
# mount options alone decide who may read.
_NO_MODES = (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP)


class Private:
    """Makes what one medium creates private, and says once (for that medium, as long as
    it is open) when its filesystem keeps no modes."""

    def __init__(self, where: str) -> None:
        self.where = where
        self._warned = False

    def make(self, fd: int, mode: int) -> None:
        """Set the mode the umask cut at creation (the umask may also have left the owner
        without write). On a filesystem that keeps no modes, say what decides instead."""
        try:
            os.fchmod(fd, mode)
        except OSError as e:
            if e.errno not in _NO_MODES:
                raise
            if not self._warned:
                self._warned = True
                log.warning(
                    "%s keeps no Unix file modes (%s): who may read the sets there depends "
                    "on its mount options (for vfat or exfat: uid=0,fmask=0177,dmask=0077)",
                    self.where, os.strerror(e.errno or 0),
                )


def too_large(what: str, where: str, size: int | str, cap: int) -> OperationFailed:
    """The error for a file of a set larger than a reader takes."""
    return OperationFailed(
        f"{what} on {where} has {size} bytes, more than the {cap} such a file may have: "
        "refused unread",
        "the medium was changed by hand or by someone else: use another set or medium",
    )
