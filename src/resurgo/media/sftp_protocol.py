"""A small SFTP (version 3) client speaking over the pipes of the system's ssh.

OpenSSH's ``ssh -s host sftp`` starts the server's SFTP subsystem and hands us
its byte stream; this module speaks the protocol (draft-ietf-secsh-filexfer-02,
as OpenSSH implements it) on it, the way sshfs does. That gives streaming
reads and writes with requests in flight (no temporary copy, no remote shell
needed, so chrooted sftp-only accounts work), fsync and atomic rename through
OpenSSH's extensions, and no crypto of our own: ssh does all of that.
"""

from __future__ import annotations

import stat
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO

# Packet types
INIT, VERSION = 1, 2
OPEN, CLOSE, READ, WRITE, LSTAT, FSTAT = 3, 4, 5, 6, 7, 8
OPENDIR, READDIR, REMOVE, MKDIR, RMDIR, REALPATH, STAT, RENAME = 11, 12, 13, 14, 15, 16, 17, 18
STATUS, HANDLE, DATA, NAME, ATTRS = 101, 102, 103, 104, 105
EXTENDED, EXTENDED_REPLY = 200, 201

# Status codes
OK, EOF, NO_SUCH_FILE, PERMISSION_DENIED, FAILURE = 0, 1, 2, 3, 4

# Open flags
FXF_READ, FXF_WRITE, FXF_CREAT, FXF_TRUNC, FXF_EXCL = 0x1, 0x2, 0x8, 0x10, 0x20

# Attribute flags
A_SIZE, A_UIDGID, A_PERMISSIONS, A_ACMODTIME, A_EXTENDED = 0x1, 0x2, 0x4, 0x8, 0x80000000

# The protocol promises at least 32 KiB per packet everywhere; OpenSSH says more
# through limits@openssh.com.
DEFAULT_CHUNK = 32 * 1024
MAX_CHUNK = 128 * 1024
IN_FLIGHT = 16


class SftpStatus(Exception):
    """The server answered a request with an error status."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message or f"status {code}")
        self.code = code
        self.message = message


class ConnectionLost(Exception):
    """The ssh process closed its pipe (exited, was refused, lost the network)."""


@dataclass(frozen=True)
class Attrs:
    size: int | None
    mode: int | None

    @property
    def is_dir(self) -> bool:
        return self.mode is not None and stat.S_ISDIR(self.mode)

    @property
    def is_file(self) -> bool:
        return self.mode is not None and stat.S_ISREG(self.mode)


def _u32(n: int) -> bytes:
    return struct.pack(">I", n)


def _u64(n: int) -> bytes:
    return struct.pack(">Q", n)


def _string(b: bytes | str) -> bytes:
    data = b.encode("utf-8", "surrogateescape") if isinstance(b, str) else b
    return _u32(len(data)) + data


class Reader:
    """Decodes the fields of one packet."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def u32(self) -> int:
        (n,) = struct.unpack_from(">I", self.data, self.pos)
        self.pos += 4
        return int(n)

    def u64(self) -> int:
        (n,) = struct.unpack_from(">Q", self.data, self.pos)
        self.pos += 8
        return int(n)

    def string(self) -> bytes:
        n = self.u32()
        if self.pos + n > len(self.data):
            raise ValueError("truncated SFTP packet")
        s = self.data[self.pos : self.pos + n]
        self.pos += n
        return s

    def text(self) -> str:
        return self.string().decode("utf-8", "surrogateescape")

    def attrs(self) -> Attrs:
        flags = self.u32()
        size = mode = None
        if flags & A_SIZE:
            size = self.u64()
        if flags & A_UIDGID:
            self.u32()
            self.u32()
        if flags & A_PERMISSIONS:
            mode = self.u32()
        if flags & A_ACMODTIME:
            self.u32()
            self.u32()
        if flags & A_EXTENDED:
            for _ in range(self.u32()):
                self.string()
                self.string()
        return Attrs(size, mode)


NO_ATTRS = _u32(0)


def permissions(mode: int) -> bytes:
    """ATTRS carrying only permissions: what OPEN and MKDIR create a file or directory
    with (the server's umask may take bits away, never add them)."""
    return _u32(A_PERMISSIONS) + _u32(mode)


class SftpConnection:
    """One SFTP session over a pair of pipes. Not thread-safe."""

    def __init__(self, to_server: IO[bytes], from_server: IO[bytes]) -> None:
        self._out = to_server
        self._in = from_server
        self._next_id = 1
        self._replies: dict[int, tuple[int, Reader]] = {}
        self._ignored: set[int] = set()
        self.extensions: dict[str, bytes] = {}
        self.chunk = DEFAULT_CHUNK

    # --- framing ---

    def _send(self, kind: int, payload: bytes) -> None:
        try:
            self._out.write(_u32(len(payload) + 1) + bytes([kind]) + payload)
            self._out.flush()
        except (BrokenPipeError, ConnectionResetError, ValueError, OSError) as e:
            raise ConnectionLost(str(e)) from None

    def _read_exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            try:
                part = self._in.read(n - len(buf))
            except (OSError, ValueError) as e:
                raise ConnectionLost(str(e)) from None
            if not part:
                raise ConnectionLost("the ssh connection closed")
            buf += part
        return buf

    def _recv(self) -> tuple[int, Reader]:
        (length,) = struct.unpack(">I", self._read_exact(4))
        if not 1 <= length <= 4 * 1024 * 1024:
            raise ConnectionLost(f"bad SFTP packet length {length}: is the login shell printing?")
        body = self._read_exact(length)
        return body[0], Reader(body[1:])

    def handshake(self) -> None:
        self._send(INIT, _u32(3))
        kind, r = self._recv()
        if kind != VERSION:
            raise ConnectionLost(f"the server did not answer the SFTP handshake (type {kind})")
        r.u32()
        while r.pos < len(r.data):
            name = r.text()
            self.extensions[name] = r.string()
        if "limits@openssh.com" in self.extensions:
            self._send(EXTENDED, _u32(self._take_id()) + _string("limits@openssh.com"))
            kind, r = self._wait(self._next_id - 1)
            if kind == EXTENDED_REPLY:
                r.u64()  # max packet length
                r.u64()  # max read length
                max_write = r.u64()
                if max_write:
                    self.chunk = max(DEFAULT_CHUNK, min(MAX_CHUNK, max_write))

    # --- requests ---

    def _take_id(self) -> int:
        rid = self._next_id
        self._next_id = (self._next_id + 1) & 0xFFFFFFFF or 1
        return rid

    def send(self, kind: int, payload: bytes) -> int:
        rid = self._take_id()
        self._send(kind, _u32(rid) + payload)
        return rid

    def _wait(self, rid: int) -> tuple[int, Reader]:
        while rid not in self._replies:
            kind, r = self._recv()
            got = r.u32()
            if got in self._ignored:
                self._ignored.discard(got)
                continue
            self._replies[got] = (kind, r)
        return self._replies.pop(rid)

    def ignore(self, rid: int) -> None:
        """Drop the reply of a request whose answer no longer matters."""
        if self._replies.pop(rid, None) is None:
            self._ignored.add(rid)

    def reply(self, rid: int, expect: int) -> Reader:
        kind, r = self._wait(rid)
        if kind == STATUS:
            code = r.u32()
            message = r.text() if r.pos < len(r.data) else ""
            if expect == STATUS and code == OK:
                return r
            raise SftpStatus(code, message)
        if kind != expect:
            raise ConnectionLost(f"unexpected SFTP reply type {kind}")
        return r

    def call(self, kind: int, payload: bytes, expect: int = STATUS) -> Reader:
        return self.reply(self.send(kind, payload), expect)

    # --- operations ---

    def stat(self, path: str, *, follow: bool = False) -> Attrs | None:
        try:
            return self.call(STAT if follow else LSTAT, _string(path), ATTRS).attrs()
        except SftpStatus as e:
            if e.code == NO_SUCH_FILE:
                return None
            raise

    def listdir(self, path: str) -> list[tuple[str, Attrs]]:
        handle = self.call(OPENDIR, _string(path), HANDLE).string()
        out: list[tuple[str, Attrs]] = []
        try:
            while True:
                try:
                    r = self.call(READDIR, _string(handle), NAME)
                except SftpStatus as e:
                    if e.code == EOF:
                        break
                    raise
                for _ in range(r.u32()):
                    name = r.text()
                    r.string()  # longname, for humans
                    attrs = r.attrs()
                    if name not in (".", ".."):
                        out.append((name, attrs))
        finally:
            self.close_handle(handle)
        return out

    def open(self, path: str, flags: int, mode: int | None = None) -> bytes:
        attrs = NO_ATTRS if mode is None else permissions(mode)
        return self.call(OPEN, _string(path) + _u32(flags) + attrs, HANDLE).string()

    def fstat(self, handle: bytes) -> Attrs:
        return self.call(FSTAT, _string(handle), ATTRS).attrs()

    def close_handle(self, handle: bytes) -> None:
        self.call(CLOSE, _string(handle))

    def send_write(self, handle: bytes, offset: int, data: bytes) -> int:
        return self.send(WRITE, _string(handle) + _u64(offset) + _string(data))

    def send_read(self, handle: bytes, offset: int, length: int) -> int:
        return self.send(READ, _string(handle) + _u64(offset) + _u32(length))

    def fsync(self, handle: bytes) -> None:
        if "fsync@openssh.com" in self.extensions:
            self.call(EXTENDED, _string("fsync@openssh.com") + _string(handle))

    def mkdir(self, path: str, mode: int | None = None) -> None:
        self.call(MKDIR, _string(path) + (NO_ATTRS if mode is None else permissions(mode)))

    def rmdir(self, path: str) -> None:
        self.call(RMDIR, _string(path))

    def remove(self, path: str) -> None:
        self.call(REMOVE, _string(path))

    def rename(self, src: str, dst: str) -> None:
        if "posix-rename@openssh.com" in self.extensions:
            self.call(EXTENDED, _string("posix-rename@openssh.com") + _string(src) + _string(dst))
        else:
            self.call(RENAME, _string(src) + _string(dst))


class WriteStream:
    """Writes one remote file front to back, keeping up to IN_FLIGHT writes unanswered."""

    def __init__(self, conn: SftpConnection, handle: bytes) -> None:
        self._c = conn
        self._handle = handle
        self._offset = 0
        self._buf = bytearray()
        self._pending: deque[int] = deque()

    def write(self, data: bytes) -> None:
        self._buf += data
        chunk = self._c.chunk
        while len(self._buf) >= chunk:
            self._send(bytes(self._buf[:chunk]))
            del self._buf[:chunk]

    def _send(self, data: bytes) -> None:
        while len(self._pending) >= IN_FLIGHT:
            self._c.reply(self._pending.popleft(), STATUS)
        self._pending.append(self._c.send_write(self._handle, self._offset, data))
        self._offset += len(data)

    def finish(self) -> None:
        if self._buf:
            self._send(bytes(self._buf))
            self._buf.clear()
        while self._pending:
            self._c.reply(self._pending.popleft(), STATUS)
        self._c.fsync(self._handle)
        self._c.close_handle(self._handle)

    def discard(self, then: Callable[[], None]) -> None:
        for rid in self._pending:
            self._c.ignore(rid)
        self._pending.clear()
        try:
            self._c.close_handle(self._handle)
        finally:
            then()


class ReadStream:
    """Reads one remote file front to back with up to IN_FLIGHT reads in flight."""

    def __init__(self, conn: SftpConnection, handle: bytes) -> None:
        self._c = conn
        self._handle = handle
        self._next = 0  # offset of the next read to send
        self._pending: deque[tuple[int, int, int]] = deque()  # id, offset, length
        self._buf = b""
        self._eof = False

    def _fill(self) -> None:
        chunk = self._c.chunk
        while not self._eof and len(self._pending) < IN_FLIGHT:
            self._pending.append(
                (self._c.send_read(self._handle, self._next, chunk), self._next, chunk)
            )
            self._next += chunk

    def read(self, size: int) -> bytes:
        while not self._buf and not self._eof:
            self._fill()
            rid, offset, length = self._pending.popleft()
            try:
                data = self._c.reply(rid, DATA).string()
            except SftpStatus as e:
                if e.code != EOF:
                    raise
                data = b""
            if len(data) < length:
                # The end of the file, or a short read: either way the reads
                # sent after this one asked for the wrong offsets. Drop them.
                for later, _, _ in self._pending:
                    self._c.ignore(later)
                self._pending.clear()
                self._next = offset + len(data)
                if not data:
                    self._eof = True
            self._buf = data
        out, self._buf = self._buf[:size], self._buf[size:]
        return out

    def close(self) -> None:
        for rid, _, _ in self._pending:
            self._c.ignore(rid)
        self._pending.clear()
        self._c.close_handle(self._handle)
