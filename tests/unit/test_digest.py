"""resurgo.digest: BLAKE3, and one clear message when the blake3 module is missing."""

from __future__ import annotations

import subprocess
import sys

from resurgo import digest


def test_the_digest_is_blake3() -> None:
    # The BLAKE3 test vector of "abc".
    assert digest.hex_of(b"abc") == (
        "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85")
    h = digest.new(b"ab")
    h.update(b"c")
    assert h.digest() == digest.of(b"abc") and len(h.digest()) == digest.SIZE


def test_zeros_hash_like_the_bytes_they_stand_for() -> None:
    h = digest.new(b"x")
    digest.update_zeros(h, (3 << 20) + 5)
    assert h.digest() == digest.of(b"x" + bytes((3 << 20) + 5))


def test_a_missing_blake3_is_one_clear_error() -> None:
    """resurgo copied without its dependencies still starts; what needs a digest stops
    with a PreconditionFailed that says what is missing, not an ImportError."""
    code = (
        "import sys\n"
        "sys.modules['blake3'] = None\n"  # as if not installed
        "import resurgo.cli.main\n"
        "from resurgo import digest\n"
        "from resurgo.errors import ExitCode, PreconditionFailed\n"
        "try:\n"
        "    digest.of(b'abc')\n"
        "except PreconditionFailed as e:\n"
        "    print(e.message)\n"
        "    sys.exit(e.exit_code)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 3, done.stderr
    assert "blake3 is missing" in done.stdout
