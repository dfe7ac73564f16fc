"""The SFTP medium against a real OpenSSH sshd on 127.0.0.1 (key authentication)."""

from __future__ import annotations

import itertools
import logging
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from media_contract import MediumContract
from media_servers import LOCALHOST, Sshd, free_ports

from resurgo.errors import OperationFailed
from resurgo.media import Medium, open_medium
from resurgo.media.sftp import SshOptions


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    server = Sshd(tmp_path_factory.mktemp("sshd"))
    try:
        yield server
    finally:
        server.close()


_count = itertools.count()


class TestSftpMedium(MediumContract):
    @pytest.fixture(autouse=True)
    def _root(self, sshd: Sshd) -> Iterator[None]:
        self.sshd = sshd
        self.root = sshd.root / f"t{next(_count)}"
        self.root.mkdir()
        self.opened: list[Medium] = []
        try:
            yield
        finally:
            for m in self.opened:
                m.close()

    def open_medium(self) -> Medium:
        m = open_medium(self.sshd.url(self.root), ssh=self.sshd.options())
        self.opened.append(m)
        return m

    # sshd runs on this machine: the server's files are local files.
    def replace(self, medium: Medium, set_id: str, name: str, data: bytes) -> None:
        (self.root / set_id / name).write_bytes(data)

    def remove(self, medium: Medium, set_id: str, name: str) -> None:
        (self.root / set_id / name).unlink()

    def leftovers(self, medium: Medium) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.name.startswith("."))

    def test_relative_path_is_in_the_home_directory(self) -> None:
        # sftp://host/~/dir is relative to the login directory: root's home here,
        # so use a name that cannot collide and remove it afterwards.
        home = Path("~" + self.sshd.user).expanduser()
        name = f"resurgo-media-test-{self.root.name}-{self.sshd.port}"
        url = f"sftp://{self.sshd.user}@{LOCALHOST}:{self.sshd.port}/~/{name}"
        medium = open_medium(url, ssh=self.sshd.options())
        self.opened.append(medium)
        try:
            info = self.save(medium, seed=1)
            assert (home / name / info.id / "set.json").is_file()
        finally:
            subprocess.run(["rm", "-rf", str(home / name)], check=True)

    def test_the_ssh_command_keeps_secrets_out(self, caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level(logging.DEBUG)
        with self.open_medium() as medium:
            medium.list_sets()
        (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("+ ssh")]
        assert "BatchMode=yes" in line and "-s -- " in line
        assert Path(f"{self.sshd.key}").read_text() not in line


def test_a_key_the_server_refuses(sshd: Sshd) -> None:
    with pytest.raises(OperationFailed) as e:
        open_medium(sshd.url(sshd.root), ssh=sshd.options(identity=str(sshd.other_key)))
    assert "Permission denied" in e.value.message
    assert e.value.hint is not None and "--ssh-key" in e.value.hint


def test_nothing_listening(sshd: Sshd) -> None:
    (port,) = free_ports(1)
    url = f"sftp://{sshd.user}@{LOCALHOST}:{port}/srv"
    with pytest.raises(OperationFailed) as e:
        open_medium(url, ssh=sshd.options())
    assert "Connection refused" in e.value.message
    assert e.value.hint is not None and "nothing listens" in e.value.hint


def test_a_changed_host_key_is_refused(sshd: Sshd, tmp_path: Path) -> None:
    # known_hosts records another key for this server: a man in the middle, or a reinstall.
    other = Path(f"{sshd.other_key}.pub").read_text().split()
    known = tmp_path / "known_hosts"
    known.write_text(f"[{LOCALHOST}]:{sshd.port} {other[0]} {other[1]}\n")
    for strict in (False, True):
        opts = SshOptions(identity=str(sshd.key), known_hosts=str(known), strict_host_keys=strict)
        with pytest.raises(OperationFailed) as e:
            open_medium(sshd.url(sshd.root), ssh=opts)
        assert e.value.hint is not None and "host key" in e.value.hint


def test_strict_host_keys_refuse_an_unknown_server(sshd: Sshd, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    strict = SshOptions(identity=str(sshd.key), known_hosts=str(empty), strict_host_keys=True)
    with pytest.raises(OperationFailed, match="Host key verification failed"):
        open_medium(sshd.url(sshd.root), ssh=strict)
    assert not empty.exists() or empty.read_text() == ""
    # accept-new (the default) records the key on first contact, then uses it.
    accept = SshOptions(identity=str(sshd.key), known_hosts=str(empty))
    with open_medium(sshd.url(sshd.root), ssh=accept) as medium:
        medium.list_sets()
    host_key = (sshd.base / "host_ed25519.pub").read_text().split()[1]
    assert host_key in empty.read_text()
    with open_medium(sshd.url(sshd.root), ssh=strict) as medium:
        medium.list_sets()


def test_missing_directory_on_the_server(sshd: Sshd) -> None:
    with open_medium(sshd.url(sshd.root / "absent" / "deeper"), ssh=sshd.options()) as medium:
        with pytest.raises(OperationFailed, match="does not exist"):
            medium.list_sets()
        with pytest.raises(OperationFailed) as e:
            medium.begin_set()
        assert "check the path" in str(e.value)


def test_a_symlinked_directory_is_a_medium(sshd: Sshd) -> None:
    real = sshd.root / "real-target"
    real.mkdir()
    link = sshd.root / "link"
    link.symlink_to(real)
    with open_medium(sshd.url(link), ssh=sshd.options()) as medium:
        info = MediumContract().save(medium, seed=1)
        assert [s.id for s in medium.list_sets()] == [info.id]
    assert (real / info.id / "set.json").is_file()
