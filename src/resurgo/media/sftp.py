"""An SFTP server as a medium, through the system's OpenSSH client.

Authentication is by key only (``--ssh-key``, or the keys ssh finds itself and
an ssh-agent); ssh runs with BatchMode=yes, so it never prompts.

Host keys: by default StrictHostKeyChecking=accept-new. A rescue system boots
with an empty known_hosts, so refusing unknown keys would make every recovery
fail at the first step; accept-new records the key on first contact and still
refuses a key that CHANGED. ``strict_host_keys=True`` (``--ssh-strict-host-keys``)
accepts only keys already in known_hosts (``--ssh-known-hosts FILE``).
"""

from __future__ import annotations

import os
import posixpath
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import IO

from resurgo import run
from resurgo.errors import OperationFailed
from resurgo.media import sftp_protocol as p
from resurgo.media.streams import Sink, Source
from resurgo.media.tree import TreeBackend
from resurgo.media.url import SftpSpec


@dataclass(frozen=True)
class SshOptions:
    identity: str | None = None  # --ssh-key
    known_hosts: str | None = None  # --ssh-known-hosts
    strict_host_keys: bool = False  # --ssh-strict-host-keys
    port: int | None = None  # --ssh-port; a port in the URL wins
    connect_timeout: int = 20


def ssh_argv(spec: SftpSpec, opts: SshOptions) -> list[str]:
    argv = [
        "ssh",
        "-T",  # no terminal
        "-x",  # no X11 forwarding
        "-a",  # no agent forwarding
        "-o", "BatchMode=yes",
        "-o", "StrictHostKeyChecking=" + ("yes" if opts.strict_host_keys else "accept-new"),
        "-o", f"ConnectTimeout={opts.connect_timeout}",
        "-o", "ServerAliveInterval=15",
        "-o", "ServerAliveCountMax=4",
        "-o", "LogLevel=ERROR",
    ]  # fmt: skip
    if opts.known_hosts:
        argv += ["-o", f"UserKnownHostsFile={opts.known_hosts}"]
    if opts.identity:
        argv += ["-o", "IdentitiesOnly=yes", "-i", opts.identity]
    port = spec.port or opts.port
    if port:
        argv += ["-p", str(port)]
    argv += ["-s", "--", spec.destination, "sftp"]
    return argv


def failure_hint(stderr: str) -> str:
    """What to do, from what ssh said (its exit code is 255 for every failure)."""
    text = stderr.lower()
    if "permission denied" in text or "too many authentication failures" in text:
        return "the server refused the key: give the right one with --ssh-key and check the user"
    if "host key verification failed" in text or "remote host identification" in text:
        return (
            "the server's host key is not the one known for it: if the server was "
            "reinstalled, remove its old key from known_hosts (ssh-keygen -R HOST)"
        )
    if "could not resolve" in text or "name or service not known" in text:
        return "the host name does not resolve: check it, or use the IP address"
    if "connection refused" in text:
        return "nothing listens there: check the host and port (is sshd running?)"
    if "timed out" in text or "no route" in text or "unreachable" in text:
        return "the server cannot be reached: check the network and the address"
    if "subsystem request failed" in text:
        return "the server has no sftp subsystem enabled (Subsystem sftp in sshd_config)"
    return "check the URL, the key (--ssh-key) and that the server runs sshd with SFTP"


class SftpSession:
    """The ssh process and the SFTP connection over its pipes."""

    def __init__(self, spec: SftpSpec, opts: SshOptions) -> None:
        self.url = spec.display
        self._stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()
        env = {k: v for k, v in os.environ.items() if k in ("SSH_AUTH_SOCK", "HOME", "USER")}
        self._proc = run.spawn(
            ssh_argv(spec, opts),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=env,
        )
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self.conn = p.SftpConnection(self._proc.stdin, self._proc.stdout)
        try:
            self.conn.handshake()
        except p.ConnectionLost as e:
            raise self.lost(e) from None

    def _stderr_text(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode("utf-8", "replace")

    def lost(self, why: Exception) -> OperationFailed:
        try:
            code = self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            code = self._proc.wait()
        err = self._stderr_text().strip()
        tail = "\n".join("  | " + line for line in err.splitlines()[-5:])
        msg = f"cannot use the SFTP medium {self.url}: ssh exited with code {code}"
        if not err:
            msg += f" ({why})"
        return OperationFailed(msg + ("\n" + tail if tail else ""), failure_hint(err))

    def close(self) -> None:
        for pipe in (self._proc.stdin, self._proc.stdout):
            if pipe is not None:
                with suppress(OSError):
                    pipe.close()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._stderr.close()


_STATUS_HINTS = {
    p.NO_SUCH_FILE: "check the path on the server",
    p.PERMISSION_DENIED: "the user needs write permission on that directory of the server",
}


class SftpFiles:
    """FileOps over one SFTP session."""

    def __init__(self, session: SftpSession) -> None:
        self.s = session
        self.url = session.url

    @contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        try:
            yield
        except p.SftpStatus as e:
            hint = _STATUS_HINTS.get(
                e.code, "the server may be full or failing: check its free space and logs"
            )
            raise OperationFailed(f"cannot {doing} on {self.url}: {e.message}", hint) from None
        except p.ConnectionLost as e:
            raise self.s.lost(e) from None

    def listdir(self, path: str) -> list[str] | None:
        with self._errors(f"list {path}"):
            attrs = self.s.conn.stat(path, follow=True)  # the medium may be a symlink
            if attrs is None or not attrs.is_dir:
                return None
            return [name for name, _ in self.s.conn.listdir(path)]

    def read_small(self, path: str) -> bytes | None:
        with self._errors(f"read {path}"):
            if self.s.conn.stat(path) is None:
                return None
            stream = p.ReadStream(self.s.conn, self.s.conn.open(path, p.FXF_READ))
            parts = []
            while chunk := stream.read(1 << 20):
                parts.append(chunk)
            stream.close()
            return b"".join(parts)

    def open_read(self, path: str) -> Source:
        with self._errors(f"open {path}"):
            try:
                handle = self.s.conn.open(path, p.FXF_READ)
            except p.SftpStatus as e:
                if e.code == p.NO_SUCH_FILE:
                    raise OperationFailed(
                        f"{path} is missing on {self.url}", "the set is incomplete: use another set"
                    ) from None
                raise
        return _SftpSource(self, path, p.ReadStream(self.s.conn, handle))

    def open_write(self, path: str) -> Sink:
        with self._errors(f"create {path}"):
            handle = self.s.conn.open(path, p.FXF_WRITE | p.FXF_CREAT | p.FXF_EXCL)
        return _SftpSink(self, path, p.WriteStream(self.s.conn, handle))

    def mkdir(self, path: str) -> None:
        with self._errors(f"create directory {path}"):
            self.s.conn.mkdir(path)

    def rename(self, src: str, dst: str) -> None:
        with self._errors(f"rename {src}"):
            self.s.conn.rename(src, dst)

    def remove_tree(self, path: str) -> None:
        with self._errors(f"remove {path}"):
            self._remove(path)

    def _remove(self, path: str) -> None:
        attrs = self.s.conn.stat(path)
        if attrs is None:
            return
        if attrs.is_dir:
            for name, _ in self.s.conn.listdir(path):
                self._remove(posixpath.join(path, name))
            self.s.conn.rmdir(path)
        else:
            self.s.conn.remove(path)

    def file_sizes(self, path: str) -> dict[str, int]:
        out: dict[str, int] = {}
        with self._errors(f"list {path}"):
            self._walk(path, "", out)
        return out

    def _walk(self, base: str, rel: str, out: dict[str, int]) -> None:
        for name, attrs in self.s.conn.listdir(posixpath.join(base, rel) if rel else base):
            sub = posixpath.join(rel, name) if rel else name
            if attrs.is_dir:
                self._walk(base, sub, out)
            elif attrs.is_file and attrs.size is not None:
                out[sub] = attrs.size

    def sync_dir(self, path: str) -> None:
        """SFTP has no directory fsync; the server's filesystem journals the rename."""

    def hold(self, path: str) -> Callable[[], None]:
        """SFTP has no locks: two saves to one server path at once are not told apart."""
        return lambda: None

    def busy(self, path: str) -> bool:
        return False


class _SftpSink:
    def __init__(self, files: SftpFiles, path: str, stream: p.WriteStream) -> None:
        self._f = files
        self._path = path
        self._stream = stream

    def write(self, data: bytes) -> None:
        with self._f._errors(f"write {self._path}"):
            self._stream.write(data)

    def finish(self) -> None:
        with self._f._errors(f"write {self._path}"):
            self._stream.finish()

    def discard(self) -> None:
        with suppress(p.SftpStatus, p.ConnectionLost):
            self._stream.discard(lambda: self._f.s.conn.remove(self._path))


class _SftpSource:
    def __init__(self, files: SftpFiles, path: str, stream: p.ReadStream) -> None:
        self._f = files
        self._path = path
        self._stream = stream

    def read(self, size: int) -> bytes:
        with self._f._errors(f"read {self._path}"):
            return self._stream.read(size)

    def close(self) -> None:
        with suppress(p.SftpStatus, p.ConnectionLost):
            self._stream.close()


class SftpBackend(TreeBackend):
    def __init__(self, spec: SftpSpec, opts: SshOptions) -> None:
        run.require("ssh")
        self.session = SftpSession(spec, opts)
        super().__init__(spec.display, SftpFiles(self.session), spec.path)

    def close(self) -> None:
        super().close()
        self.session.close()
