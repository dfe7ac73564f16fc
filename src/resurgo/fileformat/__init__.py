"""The recovery description text format: TOML, versioned, with a sha256 digest beside it."""

from resurgo.fileformat.document import (
    InvalidDescription,
    Report,
    check_bytes,
    check_file,
    dumps,
    dumps_json,
    read,
    to_data,
    write,
)
from resurgo.fileformat.version import FORMAT_VERSION

__all__ = [
    "FORMAT_VERSION",
    "InvalidDescription",
    "Report",
    "check_bytes",
    "check_file",
    "dumps",
    "dumps_json",
    "read",
    "to_data",
    "write",
]
