"""An SFTP server as a medium, through the system's OpenSSH client.

Authentication is by key only (``--ssh-key``, or the keys ssh finds itself and
an ssh-agent); ssh runs with BatchMode=yes, so it never prompts.

Host keys: whoever answers first must not serve the sets. By default
(``strict_host_keys=True``) ssh accepts only a key already in known_hosts: with
``known_hosts`` (``--ssh-known-hosts FILE``) that file and no other, else the user's
and the system's files. ``strict_host_keys=False`` is StrictHostKeyChecking=accept-new,
kept for a first save to a server no file knows yet: the key is taken on trust on first
contact (a warning says so) and a CHANGED one is still refused.

Every connection records the host key it verified (ssh hands the server's key to a
KnownHostsCommand of ours, and the connection goes on only if the server proves it owns
it): ``SftpBackend.host_key_line()`` gives it as a known_hosts line, for the set and the
rescue image to pin, so that a recovery checks the server strictly against it.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import posixpath
import re
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import IO

from resurgo import run
from resurgo.errors import BadInput, Damaged, OperationFailed
from resurgo.media import limits
from resurgo.media import sftp_protocol as p
from resurgo.media.streams import Sink, Source
from resurgo.media.tree import TreeBackend, not_plain, parts_below
from resurgo.media.url import SftpSpec

log = logging.getLogger("resurgo.media")

# Who changed a set found refused unread here (tree.not_plain).
_CHANGED = "the server's files were changed"


@dataclass(frozen=True)
class SshOptions:
    identity: str | None = None  # --ssh-key
    known_hosts: str | None = None  # --ssh-known-hosts
    # False: accept-new, a first save's only (see the module docstring).
    strict_host_keys: bool = True
    port: int | None = None  # --ssh-port; a port in the URL wins
    connect_timeout: int = 20

    @classmethod
    def for_command(cls, identity: str | None, known_hosts: str | None, *,
                    strict: bool, writing: bool) -> SshOptions:
        """A command's options. Only a save (``writing``) may meet a server for the first
        time (accept-new, the key then recorded in the set); reading, which is what a
        recovery does, never takes the word of whoever answers; neither does anything
        given a known_hosts file, which is then the whole truth."""
        return cls(identity=identity, known_hosts=known_hosts,
                   strict_host_keys=bool(strict or known_hosts or not writing))


# What ssh's option parser takes literally in a path: it splits at blanks and quotes, and
# expands % and ${} in known_hosts paths and in the KnownHostsCommand's arguments.
_SAFE_PATH = re.compile(r"^[^\s\"'%$\\]+$")

# The KnownHostsCommand that records the key ssh was given (%K of type %t for the
# known_hosts name %H) when it looks the host up by name (%I is HOSTNAME then): it prints
# nothing, so it adds no key. An isolated interpreter, this one, without a shell.
_RECORD = (
    "import sys; a = sys.argv; "
    "a[1] == 'HOSTNAME' and open(a[5], 'a').write(' '.join(a[2:5]) + chr(10))"
)


def _checked_path(path: str, what: str) -> str:
    if not _SAFE_PATH.match(path):
        raise BadInput(
            f"{what} {path!r}: ssh would take spaces, quotes, % or $ in it for its own syntax",
            "give a path without them (a symbolic link to the file will do)",
        )
    return path


def ssh_argv(spec: SftpSpec, opts: SshOptions, record: str | None = None) -> list[str]:
    """The ssh command; with ``record``, ssh writes the host key it verified there."""
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
        known = _checked_path(opts.known_hosts, "--ssh-known-hosts")
        argv += ["-o", f"UserKnownHostsFile={known}"]
        if opts.strict_host_keys:
            # Exactly that file: not also the keys the system's file lists for the name.
            argv += ["-o", "GlobalKnownHostsFile=/dev/null"]
    if record is not None:
        python = _checked_path(sys.executable, "the Python interpreter")
        argv += ["-o", f'KnownHostsCommand={python} -I -c "{_RECORD}" %I %H %t %K {record}']
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
    if "remote host identification" in text:
        return (
            "the server's host key is not the one known for it: someone may be in the "
            "middle; if the server was reinstalled, remove its old key from known_hosts "
            "(ssh-keygen -R HOST)"
        )
    if "host key verification failed" in text:
        return (
            "the server's host key is not in known_hosts, and it is checked strictly: give "
            "the known_hosts file that holds it with --ssh-known-hosts (a set records the "
            "key its save verified), or add the key after checking its fingerprint with "
            "the server's administrator (ssh-keyscan -p PORT HOST)"
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


def fingerprint(line: str) -> str:
    """A known_hosts line's key as ssh shows it: type SHA256:base64."""
    _host, kind, blob = line.split()[:3]
    raw = hashlib.sha256(base64.b64decode(blob)).digest()
    return f"{kind} SHA256:{base64.b64encode(raw).decode().rstrip('=')}"


_KEY_LINE = re.compile(r"^\S+ [a-z0-9@.-]+ [A-Za-z0-9+/]+={0,3}$")


def _recorded_key(path: str, url: str) -> str:
    """The known_hosts line the KnownHostsCommand wrote (the last, if ssh looked twice)."""
    try:
        with open(path, encoding="ascii") as f:
            lines = f.read(64 * 1024).splitlines()
    except (OSError, UnicodeDecodeError):
        lines = []
    if not lines or not _KEY_LINE.match(lines[-1]):
        raise OperationFailed(
            f"ssh connected to {url} but did not say which host key it verified",
            "resurgo needs OpenSSH 8.5 or newer (KnownHostsCommand)",
        )
    return lines[-1]


class SftpSession:
    """The ssh process and the SFTP connection over its pipes."""

    def __init__(self, spec: SftpSpec, opts: SshOptions) -> None:
        self.url = spec.display
        self._stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()
        env = {k: v for k, v in os.environ.items() if k in ("SSH_AUTH_SOCK", "HOME", "USER")}
        with tempfile.TemporaryDirectory(prefix="resurgo-ssh-") as tmp:
            record = _checked_path(os.path.join(tmp, "host-key"), "the temporary directory")
            self._proc = run.spawn(
                ssh_argv(spec, opts, record),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
                env=env,
            )
            assert self._proc.stdin is not None and self._proc.stdout is not None
            self.conn = p.SftpConnection(self._proc.stdin, self._proc.stdout)
            try:
                try:
                    self.conn.handshake()
                except p.ConnectionLost as e:
                    raise self.lost(e) from None
                # The session is up: the server proved it owns the key ssh was given.
                self.host_key = _recorded_key(record, self.url)
            except BaseException:
                self.close()
                raise
        if not opts.strict_host_keys:
            log.warning(
                "the host key of %s is taken on trust if known_hosts does not hold it yet "
                "(StrictHostKeyChecking=accept-new, a first save's): %s; check that "
                "fingerprint with the server's administrator, and read sets with the key "
                "pinned (--ssh-known-hosts FILE)", self.url, fingerprint(self.host_key)
            )

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
    """FileOps over one SFTP session; nothing below ``root`` is followed if a link."""

    def __init__(self, session: SftpSession, root: str) -> None:
        self.s = session
        self.url = session.url
        self.root = root

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

    def _plain(self, path: str) -> p.Attrs | None:
        """The attributes of a regular file below the root, every directory on the way and
        the file itself looked at without following a link (lstat); None if missing.

        The server opens by name, following links: a link to /dev/zero or a FIFO (whose
        open would hang the server's reply) must be refused before the open."""
        parts = parts_below(self.root, path)
        if not parts:
            raise ValueError(f"{path} is not below {self.root}")
        here = self.root
        for n, part in enumerate(parts):
            here = posixpath.join(here, part)
            attrs = self.s.conn.stat(here)  # lstat
            if attrs is None:
                return None
            if not (attrs.is_file if n == len(parts) - 1 else attrs.is_dir):
                if n < len(parts) - 1 and attrs.mode is not None and not stat.S_ISLNK(
                    attrs.mode
                ):
                    return None  # a file where a set's directory would be: no set
                raise not_plain(path, self.url, _CHANGED)
        return attrs

    def read_small(self, path: str, limit: int) -> bytes | None:
        with self._errors(f"read {path}"):
            attrs = self._plain(path)
            if attrs is None:
                return None
            if attrs.size is not None and attrs.size > limit:
                raise limits.too_large(path, self.url, attrs.size, limit)
            stream = p.ReadStream(self.s.conn, self.s.conn.open(path, p.FXF_READ))
            parts: list[bytes] = []
            got = 0
            try:
                while got <= limit and (chunk := stream.read(limit + 1 - got)):
                    parts.append(chunk)
                    got += len(chunk)
            finally:
                stream.close()
            if got > limit:  # it grew since it was looked at
                raise limits.too_large(path, self.url, f"more than {limit}", limit)
            return b"".join(parts)

    def open_read(self, path: str) -> Source:
        with self._errors(f"open {path}"):
            if self._plain(path) is None:
                raise Damaged(
                    f"{path} is missing on {self.url}", "the set is incomplete: use another set"
                )
            handle = self.s.conn.open(path, p.FXF_READ)
            if not self.s.conn.fstat(handle).is_file:  # swapped since it was looked at
                self.s.conn.close_handle(handle)
                raise not_plain(path, self.url, _CHANGED)
        return _SftpSource(self, path, p.ReadStream(self.s.conn, handle))

    def open_write(self, path: str) -> Sink:
        with self._errors(f"create {path}"):
            handle = self.s.conn.open(
                path, p.FXF_WRITE | p.FXF_CREAT | p.FXF_EXCL, limits.FILE_MODE
            )
        return _SftpSink(self, path, p.WriteStream(self.s.conn, handle))

    def mkdir(self, path: str) -> None:
        with self._errors(f"create directory {path}"):
            self.s.conn.mkdir(path, limits.DIR_MODE)

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
            attrs = self.s.conn.stat(path)  # a set directory that is a link: not listed
            if attrs is None:
                raise p.SftpStatus(p.NO_SUCH_FILE, "No such file")
            if not attrs.is_dir:
                raise not_plain(path, self.url, _CHANGED)
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
        super().__init__(spec.display, SftpFiles(self.session, spec.path), spec.path)

    def host_key_line(self) -> str:
        """The server's host key this connection verified, as a line of a known_hosts
        file ("[host]:port type key" and a newline): what a set records so that reading
        it later checks the server strictly (--ssh-known-hosts FILE)."""
        return self.session.host_key + "\n"

    def close(self) -> None:
        super().close()
        self.session.close()
