"""Real servers for the media tests, on 127.0.0.1 only: OpenSSH's sshd and SeaweedFS's S3.

Each is started with a throw-away configuration in a temporary directory and
stopped (and its files removed) by the fixture that started it, also when a
test fails. FakeS3 is no S3: it answers as a test says, the way a hostile or broken
server (or something in between) would.
"""

from __future__ import annotations

import contextlib
import getpass
import http.server
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import pytest

from resurgo.media.s3client import S3Client
from resurgo.media.s3config import Credentials, S3Settings
from resurgo.media.sftp import SshOptions

LOCALHOST = "127.0.0.1"


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind((LOCALHOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def find_program(name: str, *extra_dirs: str) -> str:
    """The program's path; a missing one skips the test here and fails it in CI."""
    for d in (str(Path(sys.executable).parent), *extra_dirs):
        candidate = Path(d, name)
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    message = f"{name} is not installed (./dev installs it)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def wait_for_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection((LOCALHOST, port), 0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on port {port} within {timeout} s")


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "resurgo-test", "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
    )


class Sshd:
    """sshd -D -e on a free port with a generated host key and one authorized key."""

    def __init__(self, base: Path) -> None:
        sshd = find_program("sshd", "/usr/sbin")
        find_program("ssh")
        self.base = base
        self.port = free_ports(1)[0]
        self.user = getpass.getuser()
        self.key = base / "id_ed25519"
        self.other_key = base / "other_ed25519"
        self.known_hosts = base / "known_hosts"
        self.root = base / "srv"
        self.root.mkdir()
        _keygen(base / "host_ed25519")
        _keygen(self.key)
        _keygen(self.other_key)
        (base / "authorized_keys").write_text(Path(f"{self.key}.pub").read_text())
        # The server's key pinned: the media check host keys strictly by default.
        self.host_key_line = f"[{LOCALHOST}]:{self.port} " + " ".join(
            (base / "host_ed25519.pub").read_text().split()[:2]
        )
        self.known_hosts.write_text(self.host_key_line + "\n")
        config = base / "sshd_config"
        config.write_text(
            f"Port {self.port}\n"
            f"ListenAddress {LOCALHOST}\n"
            f"HostKey {base / 'host_ed25519'}\n"
            f"PidFile {base / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {base / 'authorized_keys'}\n"
            "PermitRootLogin prohibit-password\n"
            "PubkeyAuthentication yes\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "UsePAM no\n"
            "StrictModes no\n"
            "Subsystem sftp internal-sftp\n"
            "LogLevel ERROR\n"
        )
        # sshd insists on its privilege separation directory.
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        self.log = open(base / "sshd.log", "wb")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [sshd, "-D", "-e", "-f", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for_port(self.port, self.proc, "sshd", 20)
        except BaseException:
            self.close()
            raise

    def options(self, **changes: object) -> SshOptions:
        base = SshOptions(identity=str(self.key), known_hosts=str(self.known_hosts))
        return SshOptions(**{**base.__dict__, **changes})  # type: ignore[arg-type]

    def url(self, path: Path | str) -> str:
        return f"sftp://{self.user}@{LOCALHOST}:{self.port}{path}"

    def close(self) -> None:
        # Let the sessions of the last connections end first: a session process
        # orphaned by the listener's death is never reaped in a container.
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        deadline = time.monotonic() + 5
        with contextlib.suppress(OSError):
            while children.read_text().strip() and time.monotonic() < deadline:
                time.sleep(0.05)
        stop(self.proc)
        self.log.close()


ACCESS_KEY = "resurgotestkey"
SECRET_KEY = "resurgo-test-secret-9f8e7d6c5b4a"


class Seaweed:
    """weed server (master, volume, filer, S3) on free ports, signatures checked."""

    def __init__(self, base: Path) -> None:
        weed = find_program("weed")
        self.base = base
        data = base / "data"
        data.mkdir()
        config = base / "s3.json"
        config.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "resurgo",
                            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        }
                    ]
                }
            )
        )
        ports = free_ports(8)
        self.ports = ports
        self.port = ports[6]
        self.endpoint = f"http://{LOCALHOST}:{self.port}"
        argv = [
            weed, "server",
            f"-dir={data}", f"-ip={LOCALHOST}", f"-ip.bind={LOCALHOST}",
            f"-master.port={ports[0]}", f"-master.port.grpc={ports[1]}",
            "-master.telemetry=false", "-master.volumeSizeLimitMB=512",
            f"-volume.port={ports[2]}", f"-volume.port.grpc={ports[3]}",
            "-filer", f"-filer.port={ports[4]}", f"-filer.port.grpc={ports[5]}",
            "-s3", f"-s3.port={ports[6]}", f"-s3.port.grpc={ports[7]}",
            "-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.config={config}",
            "-webdav=false", "-volume.preStopSeconds=0",
        ]  # fmt: skip
        self.log = open(base / "weed.log", "wb")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT, cwd=base
        )
        try:
            wait_for_port(self.port, self.proc, "weed", 60)
        except BaseException:
            self.close()
            raise

    def settings(self, secret: str = SECRET_KEY) -> S3Settings:
        return S3Settings(
            "http", f"{LOCALHOST}:{self.port}", "us-east-1", Credentials(ACCESS_KEY, secret), True
        )

    def environ(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}

    def create_bucket(self, name: str) -> None:
        """Create a bucket, waiting until the volume server takes writes."""
        client = S3Client(self.settings(), name, url=f"s3://{name}")
        deadline = time.monotonic() + 60
        try:
            client.request("PUT", None, allow=(409,))
            while True:
                try:
                    client.put("probe", b"ready?")
                    client.delete("probe")
                    return
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)
        finally:
            client.close()

    def close(self) -> None:
        # A graceful stop takes 15 s; the data is thrown away anyway.
        stop(self.proc, signal.SIGKILL)
        self.log.close()
        for p in self.ports:
            for sock in Path("/tmp").glob(f"seaweedfs-*-{p}.sock"):
                sock.unlink(missing_ok=True)


class FaultProxy:
    """A TCP proxy on 127.0.0.1 in front of a real server that breaks the next connections.

    Each new connection takes the next fault from ``faults``: "503" answers the
    request with 503 SlowDown, "reset" drops the connection after the request,
    ("cut", N) passes the answer through but drops it after N bytes; with no
    fault left, connections pass through untouched.
    """

    _BODY = (
        b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
    )
    SLOWDOWN = (
        b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nConnection: close\r\n"
        + f"Content-Length: {len(_BODY)}\r\n\r\n".encode()
        + _BODY
    )

    def __init__(self, target_port: int) -> None:
        import threading

        self.target = target_port
        self.faults: list[object] = []
        self.connections = 0
        self.listener = socket.socket()
        self.listener.bind((LOCALHOST, 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.endpoint = f"http://{LOCALHOST}:{self.port}"
        self._threading = threading
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            fault = self.faults.pop(0) if self.faults else None
            self._threading.Thread(target=self._serve, args=(client, fault), daemon=True).start()

    @staticmethod
    def _read_request(client: socket.socket) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            part = client.recv(65536)
            if not part:
                return
            data += part
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        while len(body) < length:
            part = client.recv(65536)
            if not part:
                return
            body += part

    def _serve(self, client: socket.socket, fault: object) -> None:
        with client:
            if fault == "503":
                self._read_request(client)
                client.sendall(self.SLOWDOWN)
                return
            if fault == "reset":
                self._read_request(client)
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                return
            limit = fault[1] if isinstance(fault, tuple) else None
            with socket.create_connection((LOCALHOST, self.target)) as server:
                up = self._threading.Thread(target=self._pipe, args=(client, server, None))
                up.daemon = True
                up.start()
                self._pipe(server, client, limit)
                with contextlib.suppress(OSError):
                    client.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    server.shutdown(socket.SHUT_RDWR)

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket, limit: int | None) -> None:
        sent = 0
        with contextlib.suppress(OSError):
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if limit is not None and sent + len(data) > limit:
                    dst.sendall(data[: limit - sent])
                    break
                dst.sendall(data)
                sent += len(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.listener.close()


# What FakeS3 answers to one request: status, headers and the body's parts.
Answer = tuple[int, Mapping[str, str], Iterable[bytes]]


class FakeS3:
    """An HTTP server on 127.0.0.1 that answers every request with ``answer(method,
    path, headers)``; the body is sent part by part until the client stops reading.
    ``requests`` lists (method, path, headers) as they came."""

    def __init__(self, answer: Callable[[str, str, Mapping[str, str]], Answer]) -> None:
        fake = self
        self.requests: list[tuple[str, str, dict[str, str]]] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _any(self) -> None:
                headers = {k.lower(): v for k, v in self.headers.items()}
                fake.requests.append((self.command, self.path, headers))
                length = int(headers.get("content-length", "0"))
                if length:
                    self.rfile.read(length)
                status, extra, body = answer(self.command, self.path, headers)
                self.send_response(status)
                for k, v in extra.items():
                    self.send_header(k, v)
                # One request per connection: a body cut short ends with it.
                self.send_header("Connection", "close")
                self.close_connection = True
                self.end_headers()
                with contextlib.suppress(OSError):
                    for part in body:
                        self.wfile.write(part)

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _any

        self.server = http.server.ThreadingHTTPServer((LOCALHOST, 0), Handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False  # a handler may still be sending, to nobody
        self.port = self.server.server_address[1]
        self.endpoint = f"http://{LOCALHOST}:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
