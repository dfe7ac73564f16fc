"""Real ed25519 keys (ssh-keygen, no passphrase) and OpenSSH allowed-signers files for the
tests of signed sets."""

from __future__ import annotations

import subprocess
from pathlib import Path

from resurgo import signing


def keypair(d: Path, name: str) -> Path:
    """A new key ``d/name`` (and ``d/name.pub``), its comment ``name``."""
    key = d / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)],
                   check=True)
    return key


def allowed(d: Path, *keys: Path, namespace: str = signing.NAMESPACE) -> Path:
    """``d/allowed_signers`` trusting ``keys`` (as NAME@test) for ``namespace``."""
    lines = []
    for k in keys:
        kind, blob = Path(f"{k}.pub").read_text().split()[:2]
        lines.append(f'{k.name}@test namespaces="{namespace}" {kind} {blob}\n')
    path = d / "allowed_signers"
    path.write_text("# trusted\n" + "".join(lines))
    return path
