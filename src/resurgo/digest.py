"""The digest of the data a recovery set holds: BLAKE3, 256 bits.

Every byte of a tree is hashed twice on the way to a medium (each file's content for
the manifest, and the stored archive for the set index) and twice again on the way back.
sha256 runs at 1.0-1.4 GB/s even with the CPU's SHA extensions; BLAKE3 at 5-6 GB/s on
the same core, so on a two-core machine the hashing stops being a third of the work next
to zstd. It is a cryptographic hash like sha256 (collision resistant, 256-bit output),
and ``b3sum`` (Debian package b3sum) checks a stored file by hand.

The description keeps its sha256 digest file (description.toml.sha256): it is small, and
an administrator checks it with the sha256sum every system has.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NoReturn

from resurgo.errors import PreconditionFailed

if TYPE_CHECKING:
    from blake3 import blake3
else:
    try:
        from blake3 import blake3
    except ImportError:  # resurgo copied without its dependencies: say so where it is needed

        def blake3(*_: object, **__: object) -> NoReturn:
            raise PreconditionFailed(
                "the Python module blake3 is missing: resurgo checks its data with BLAKE3",
                "install resurgo with pip, which brings blake3 along",
            )

SIZE = 32  # bytes of a digest
CHUNK = 1 << 20
_ZEROS = memoryview(bytes(CHUNK))

Hasher = blake3


def new(data: bytes | bytearray | memoryview = b"") -> blake3:
    """A running digest (``update``, ``digest``, ``hexdigest``), fed ``data`` first."""
    return blake3(data)


def of(data: bytes | bytearray | memoryview) -> bytes:
    """The digest of ``data``."""
    return blake3(data).digest()


def hex_of(data: bytes | bytearray | memoryview) -> str:
    return blake3(data).hexdigest()


def update_zeros(h: blake3, n: int) -> None:
    """Feed ``n`` zero bytes to ``h``: the holes of a sparse file, as its readers see them."""
    while n > 0:
        step = min(n, CHUNK)
        h.update(_ZEROS[:step])
        n -= step
