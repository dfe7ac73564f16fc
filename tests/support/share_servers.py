"""Real NFS and SMB servers for the share media's vm tests, on 127.0.0.1 alone:
NFS-Ganesha (a userspace NFSv4 server: this host's kernel has no nfsd, and no NFS client
either, so a guest mounts it) and Samba's smbd.

Each runs in the foreground with a throw-away configuration under a temporary directory,
on a free port, serving a directory of it (``root``), and is stopped by the fixture that
started it, also when a test fails. A guest reaches them as 10.0.2.2 over qemu's user
network, which turns its connections into connections to the host's loopback.
"""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path

from tests.support.media_servers import LOCALHOST, find_program, free_ports, stop, wait_for_port

#: The NFSv4 pseudo path Ganesha serves ``root`` at.
NFS_PSEUDO = "/sets"
#: The SMB share that is ``root``.
SMB_SHARE = "sets"
#: The SMB account: the Unix user the share's files belong to on the host.
SMB_USER = "root"


class Ganesha:
    """ganesha.nfsd -F: NFSv4 over TCP only (no rpcbind, no NLM), no grace period."""

    def __init__(self, base: Path) -> None:
        nfsd = find_program("ganesha.nfsd", "/usr/bin", "/usr/sbin")
        self.base = base
        self.root = base / "export"
        self.root.mkdir(mode=0o755)
        (base / "recovery").mkdir()
        self.port = free_ports(1)[0]
        config = base / "ganesha.conf"
        config.write_text(f"""
NFS_CORE_PARAM {{
    Protocols = 4;
    NFS_Port = {self.port};
    Bind_addr = {LOCALHOST};
    Enable_NLM = false;
    Enable_RQUOTA = false;
}}
NFSV4 {{
    Graceless = true;
    RecoveryRoot = {base / "recovery"};
}}
EXPORT {{
    Export_Id = 1;
    Path = {self.root};
    Pseudo = {NFS_PSEUDO};
    Access_Type = RW;
    Squash = No_Root_Squash;
    SecType = sys;
    Protocols = 4;
    Transports = TCP;
    FSAL {{ Name = VFS; }}
}}
""")
        self.log = base / "ganesha.log"
        self.proc = subprocess.Popen(
            [nfsd, "-F", "-f", str(config), "-L", str(self.log), "-p", str(base / "pid"),
             "-N", "NIV_EVENT"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        try:
            wait_for_port(self.port, self.proc, "ganesha.nfsd", 30)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        stop(self.proc)


class Smbd:
    """smbd --foreground: one share, ``root``, for one account with a random password."""

    def __init__(self, base: Path) -> None:
        smbd = find_program("smbd", "/usr/sbin")
        pdbedit = find_program("pdbedit", "/usr/bin", "/usr/sbin")
        self.base = base
        self.root = base / "share"
        self.root.mkdir(mode=0o755)
        for d in ("private", "lock", "state", "cache", "pid", "ncalrpc"):
            (base / d).mkdir()
        self.port = free_ports(1)[0]
        self.user = SMB_USER
        self.password = "pw," + secrets.token_hex(8) + " =x"  # a comma, a space, an =
        self.config = base / "smb.conf"
        self.config.write_text(f"""[global]
    server role = standalone server
    smb ports = {self.port}
    interfaces = {LOCALHOST}
    bind interfaces only = yes
    disable netbios = yes
    private dir = {base / "private"}
    lock directory = {base / "lock"}
    state directory = {base / "state"}
    cache directory = {base / "cache"}
    pid directory = {base / "pid"}
    ncalrpc dir = {base / "ncalrpc"}
    passdb backend = tdbsam:{base / "private" / "passdb.tdb"}
    log file = {base / "log.%m"}
    load printers = no
    printing = bsd
    printcap name = /dev/null
    disable spoolss = yes
    map to guest = never
[{SMB_SHARE}]
    path = {self.root}
    read only = no
    valid users = {self.user}
""")
        subprocess.run([pdbedit, "-s", str(self.config), "-a", "-u", self.user, "-t"],
                       input=f"{self.password}\n{self.password}\n".encode(), check=True,
                       capture_output=True)
        self.log = open(base / "smbd.log", "wb")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [smbd, "--foreground", "--no-process-group", "--debug-stdout",
             "-s", str(self.config)],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
            # smbd signals its whole process group when it stops: a group of its own.
            start_new_session=True)
        try:
            wait_for_port(self.port, self.proc, "smbd", 30)
        except BaseException:
            self.close()
            raise

    def credentials(self) -> bytes:
        """A mount.cifs credentials file's text for the account."""
        return f"username={self.user}\npassword={self.password}\n".encode()

    def close(self) -> None:
        stop(self.proc)
        self.log.close()
