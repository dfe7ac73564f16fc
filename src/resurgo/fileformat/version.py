"""The format's version policy.

A major version changes only when a reader of the previous major would
misread a file; a minor version only adds optional fields. So: every minor of
our major is read (newer minors with a warning, their unknown fields skipped),
an older major is refused with the resurgo version that reads it, a newer
major is refused with the resurgo version that wrote it.
"""

from __future__ import annotations

import re

FORMAT_MAJOR = 1
# 1.1: config_files[].secret; a secret file sealed in an encrypted set has no content
# (a 1.0 reader refuses such a record as missing its content: it does not misread it).
# 1.2: the optional [rehearsal] table (the canary save wrote, the units failed then); a
# 1.1 reader skips it with a warning.
# 1.3: the optional [made_at_recovery] table (save --initramfs rebuild); a 1.2
# reader skips them with a warning, and its finalize makes a missing image only when the
# disks' drivers are found (the set's rescue, of the saving resurgo, reads them).
FORMAT_MINOR = 3
FORMAT_VERSION = f"{FORMAT_MAJOR}.{FORMAT_MINOR}"

_VERSION = re.compile(r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)$")


def parse(version: str) -> tuple[int, int] | None:
    m = _VERSION.match(version)
    if m is None:
        return None
    return int(m.group(1)), int(m.group(2))
