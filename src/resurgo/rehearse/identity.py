"""The age identity of an encrypted set, handed to a rehearsal's rescue the way a real
recovery's rescue takes it: as the key medium's file rescue.keys.AGE_IDENTITY, which the
agent passes to recover as ``--identity PATH`` (only the path travels; the identity stays
off the kernel command line, the initramfs, the logs and the report).

On the host, before anything is made: an encrypted set without --identity is refused
(exit 3); so is an identity the rescue could not use unattended (one protected by a
passphrase, or an age plugin's, which the rescue does not carry), and a rescue image
that does not look for the file (built before it did: its rescue.json lists the names its
agent takes from a key medium). Whether the identity opens the set is the set's load
(recovery.load: every manifest's head and the sealed secret files decrypted with it,
exit 6 when it cannot).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from resurgo import run
from resurgo.errors import PreconditionFailed
from resurgo.rescue.access import MAX_SECRET, read_bounded
from resurgo.rescue.keys import AGE_IDENTITY

__all__ = ["AGE_IDENTITY", "check_image", "missing", "read_identity"]

# An identity file encrypted with a passphrase (age -p): binary or armored.
_PASSPHRASE = (b"age-encryption.org/v1", b"-----BEGIN AGE ENCRYPTED FILE-----")
_PLUGIN = b"AGE-PLUGIN-"
_SSH_KEY = b"PRIVATE KEY-----"


def missing(set_id: str, recipients: list[str]) -> PreconditionFailed:
    """An encrypted set rehearsed without --identity."""
    who = f", for {', '.join(recipients)}" if recipients else ""
    return PreconditionFailed(
        f"set {set_id} is encrypted (age{who}) and no --identity was given: the rescue "
        "needs the identity to restore it", "give the age identity file (the secret key) "
        "with --identity FILE (or identity in the configuration)")


def read_identity(path: Path) -> bytes:
    """The identity file's content (a regular file, bounded) when the rescue can use it
    unattended; PreconditionFailed when it would ask for a passphrase or a plugin."""
    data = read_bounded(path, MAX_SECRET, "--identity")
    start = data.lstrip()
    if start.startswith(_PASSPHRASE):
        raise _unattended(path, "is protected by a passphrase")
    if any(line.strip().startswith(_PLUGIN) for line in data.splitlines()):
        raise _unattended(path, "holds an age plugin's identity (the rescue carries no "
                          "age plugins)")
    if _SSH_KEY in data:
        run.require("ssh-keygen")
        probe = run.run(["ssh-keygen", "-y", "-P", "", "-f", str(path)], check=False)
        if probe.returncode != 0:
            said = (probe.stderr or "").strip().splitlines()
            raise _unattended(path, "is an SSH key that ssh-keygen cannot read without a "
                              "passphrase" + (f" ({said[-1][:200]})" if said else ""))
    return data


def _unattended(path: Path, why: str) -> PreconditionFailed:
    return PreconditionFailed(
        f"--identity {path} {why}, and the rescue of a rehearsal recovers unattended",
        "give an identity file without a passphrase (age-keygen's, or an SSH key "
        "without one)")


def check_image(config: Mapping[str, Any] | None) -> None:
    """The rescue image (its rescue.json) takes an age identity from its key medium."""
    names = config.get("key_medium") if config is not None else None
    if isinstance(names, list) and AGE_IDENTITY in names:
        return
    raise PreconditionFailed(
        "the set's rescue image does not take an age identity from a key medium (it was "
        "built by an older resurgo): its rescue cannot be handed the identity",
        "save the set again with this resurgo, whose rescue image does")
