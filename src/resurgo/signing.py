"""Signed recovery sets: OpenSSH signatures over a set's index.

A set's index (``set.json``) lists every file of the set with its size and BLAKE3
digest, so a signature over the index covers the whole set: every file read through the
index is checked against its digest. ``save --sign-key KEY`` signs the index with
``ssh-keygen -Y sign`` in the namespace ``resurgo-set`` and stores the signature beside
it (``set.json.sig``, not listed in the index it signs). A reader given trusted signers
(an OpenSSH allowed-signers file, ``--trust FILE``) checks the signature with
``ssh-keygen -Y verify`` before anything of the set is read, and refuses a set whose
signature is missing, is made by a key the file does not list for this namespace, or
does not match the index: ``NotAuthentic``, exit code 4.

OpenSSH is already needed for SFTP media: no new dependency. The key never leaves its
file (only its path is on ssh-keygen's command line), and a key protected by a
passphrase is used through ssh-agent (give the public key's file and set
SSH_AUTH_SOCK): nothing here reads, logs or passes a passphrase.

``DEFAULT_TRUST`` is the file every command uses when ``--trust`` is not given: where it
exists (a rescue image built with trusted signers has it, and an administrator can
install one), unsigned sets are refused everywhere on that machine.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from resurgo import run
from resurgo.errors import BadInput, CommandFailed, NotAuthentic, OperationFailed

NAMESPACE = "resurgo-set"
#: The namespace of a rehearsal's report stored beside its set (rehearsal.json.sig).
REHEARSAL_NAMESPACE = "resurgo-rehearsal"
#: Beside the index, and not listed in it.
SIGNATURE_NAME = "set.json.sig"
DEFAULT_TRUST = Path("/etc/resurgo/allowed_signers")
#: An SSH signature of an ed25519 or RSA-4096 key is under 2 KiB; anything much larger
#: is not one, and is not read further.
MAX_SIGNATURE = 64 * 1024
#: An allowed-signers file with thousands of keys is still far below this.
MAX_SIGNERS_FILE = 1024 * 1024
_ARMOR = b"-----BEGIN SSH SIGNATURE-----"
_PRINCIPAL = re.compile(r"^[\x21-\x7e]{1,256}$")


@dataclass(frozen=True)
class Trust:
    """Trusted signers: the text of an allowed-signers file, read once and checked."""

    source: str  # where it came from, for messages
    text: bytes

    @classmethod
    def load(cls, path: Path) -> Trust:
        # Up front: without it every signed set would look unreadable, not refused.
        run.require("ssh-keygen")
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError as e:
            raise BadInput(f"--trust {path}: {e.strerror}",
                           "give an OpenSSH allowed-signers file (see docs/security.md)") from None
        try:
            if not _is_regular(fd):
                raise BadInput(f"--trust {path}: not a regular file")
            text = os.read(fd, MAX_SIGNERS_FILE + 1)
        finally:
            os.close(fd)
        if len(text) > MAX_SIGNERS_FILE:
            raise BadInput(f"--trust {path}: larger than {MAX_SIGNERS_FILE} bytes")
        trust = cls(str(path), text)
        if not trust.lines():
            raise BadInput(f"--trust {path}: lists no signer",
                           'one line per key: PRINCIPAL namespaces="resurgo-set" '
                           "ssh-ed25519 AAAA...")
        return trust

    def lines(self) -> list[str]:
        out = []
        for raw in self.text.decode("utf-8", "replace").splitlines():
            line = raw.strip()
            if line and not line.startswith("#"):
                out.append(line)
        return out

    def verify(self, data: bytes, signature: bytes | None, where: str) -> str:
        """The principal whose trusted key signed ``data``; NotAuthentic otherwise."""
        if signature is None:
            raise NotAuthentic(
                f"recovery set {where} is not signed, and signed sets are required "
                f"(trusted signers: {self.source})",
                "save sets with --sign-key, or use a set signed by a trusted key",
            )
        if len(signature) > MAX_SIGNATURE or not signature.lstrip().startswith(_ARMOR):
            raise NotAuthentic(f"recovery set {where}: its signature file is not an SSH "
                               "signature")
        with tempfile.TemporaryDirectory(prefix="resurgo-verify-") as tmp:
            signers = _private_file(Path(tmp) / "allowed_signers", self.text)
            sig = _private_file(Path(tmp) / "set.json.sig", signature)
            found = run.run(["ssh-keygen", "-Y", "find-principals", "-s", sig, "-f", signers],
                            check=False)
            principals = [p for p in found.stdout.split() if _PRINCIPAL.match(p)]
            if found.returncode != 0 or not principals:
                raise NotAuthentic(
                    f"recovery set {where} is signed by a key that {self.source} does not "
                    "trust",
                    "add the signing key's public key to the allowed-signers file, if you "
                    "trust it",
                )
            message = _private_file(Path(tmp) / "set.json", data)
            for principal in principals:
                argv = ["ssh-keygen", "-Y", "verify", "-f", signers, "-I", principal,
                        "-n", NAMESPACE, "-s", sig]
                if _run_with_stdin(argv, message) == 0:
                    return principal
        raise NotAuthentic(
            f"recovery set {where} does not match its signature: it was changed after it "
            "was signed",
            "use another set; this one may have been tampered with",
        )


def trust_file(given: Path | None) -> Path | None:
    """The allowed-signers file of a command: the one given (--trust), else DEFAULT_TRUST
    when it is there (a link too, so that a dangling one is refused, not passed over),
    else None: signatures are not checked."""
    if given is not None:
        return given
    if DEFAULT_TRUST.exists() or DEFAULT_TRUST.is_symlink():
        return DEFAULT_TRUST
    return None


def trusted_signers(given: Path | None) -> Trust | None:
    """The trusted signers of a command (trust_file), read."""
    path = trust_file(given)
    return None if path is None else Trust.load(path)


def _is_regular(fd: int) -> bool:
    return stat.S_ISREG(os.fstat(fd).st_mode)


def _run_with_stdin(argv: list[str], path: str) -> int:
    """The exit code of argv reading the file at path on its stdin (bytes as they are)."""
    with open(path, "rb") as f:
        proc = run.spawn(argv, stdin=f, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return proc.wait()


def _private_file(path: Path, data: bytes) -> str:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return str(path)


@dataclass(frozen=True)
class SignKey:
    """The key ``save --sign-key`` signs with: a private key file, or a public key file
    whose private half ssh-agent holds."""

    path: Path

    @classmethod
    def load(cls, path: Path) -> SignKey:
        if not path.is_file() or not os.access(path, os.R_OK):
            raise BadInput(f"--sign-key {path}: not a readable file",
                           "give an SSH ed25519 private key (ssh-keygen -t ed25519)")
        return cls(path)

    def sign(self, data: bytes, namespace: str = NAMESPACE) -> bytes:
        """An SSH signature of ``data``; in NAMESPACE for a set's index, another for
        anything else (a signature of one use is never valid for the other)."""
        with tempfile.TemporaryDirectory(prefix="resurgo-sign-") as tmp:
            message = _private_file(Path(tmp) / "set.json", data)
            try:
                run.run(["ssh-keygen", "-q", "-Y", "sign", "-f", str(self.path),
                         "-n", namespace, message], env=_agent_env())
            except CommandFailed as e:
                raise OperationFailed(
                    f"cannot sign with --sign-key {self.path}: ssh-keygen failed: "
                    + (e.stderr.strip().splitlines() or ["?"])[-1],
                    "a passphrase-protected key signs through ssh-agent: load it with ssh-add "
                    "and give its .pub file as --sign-key",
                ) from None
            signature = Path(message + ".sig").read_bytes()
        if not signature.lstrip().startswith(_ARMOR):
            raise OperationFailed(f"ssh-keygen gave no signature for --sign-key {self.path}")
        return signature

    def public_key(self) -> str:
        """'type base64' of the key, for an allowed-signers line."""
        pub = self.path if self.path.name.endswith(".pub") else Path(f"{self.path}.pub")
        if pub.is_file():
            text = pub.read_text(errors="replace").split()
        else:
            text = run.run(["ssh-keygen", "-y", "-f", str(self.path)]).stdout.split()
        if len(text) < 2:
            raise OperationFailed(f"cannot read the public key of --sign-key {self.path}")
        return f"{text[0]} {text[1]}"

    def signers_line(self, principal: str) -> str:
        return f'{principal} namespaces="{NAMESPACE}" {self.public_key()}\n'


def _agent_env() -> dict[str, str]:
    sock = os.environ.get("SSH_AUTH_SOCK")
    return {"SSH_AUTH_SOCK": sock} if sock else {}


def trust_for_save(key: SignKey | None, trust: Trust | None) -> Trust | None:
    """The signers a saved set's rescue image carries: the ones given, else the signing
    key's own. The key must sign in a way these signers accept (checked now, before a
    long save, so that no image refuses its own set)."""
    if key is None:
        if trust is not None:
            # The set would be refused by the very signers its rescue image carries.
            raise BadInput(
                f"sets are checked against trusted signers here ({trust.source}), and an "
                "unsigned set would be refused by them, its own rescue image included",
                "sign the set: --sign-key FILE",
            )
        return None
    if trust is None:
        trust = Trust("the signing key", key.signers_line("resurgo-signer").encode())
    probe = b"resurgo: can this key sign sets these signers trust?\n"
    trust.verify(probe, key.sign(probe), "(signing check)")
    return trust
