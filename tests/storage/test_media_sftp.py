"""The SFTP medium against a real OpenSSH sshd on 127.0.0.1 (key authentication)."""

from __future__ import annotations

import itertools
import logging
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from resurgo.errors import BadInput, OperationFailed
from resurgo.media import Medium, MediumOptions, open_medium
from resurgo.media.sftp import SftpBackend, SshOptions
from tests.support.leases import LeaseContract
from tests.support.media_contract import HostileTreeContract, MediumContract
from tests.support.media_servers import LOCALHOST, Sshd, free_ports


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    server = Sshd(tmp_path_factory.mktemp("sshd"))
    try:
        yield server
    finally:
        server.close()


_count = itertools.count()


class TestSftpMedium(MediumContract, HostileTreeContract, LeaseContract):
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
        return self.open_at(self.root)

    def open_at(self, path: Path) -> Medium:
        m = open_medium(self.sshd.url(path), MediumOptions(ssh=self.sshd.options()))
        self.opened.append(m)
        return m

    # sshd runs on this machine: the server's files are local files.
    def replace(self, medium: Medium, set_id: str, name: str, data: bytes) -> None:
        (self.root / set_id / name).write_bytes(data)

    def remove(self, medium: Medium, set_id: str, name: str) -> None:
        (self.root / set_id / name).unlink()

    def leftovers(self, medium: Medium) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.name.startswith("."))

    def stage_by_hand(self, medium: Medium, set_id: str) -> None:
        (self.root / f".incomplete-{set_id}").mkdir()
        (self.root / f".incomplete-{set_id}" / "a.bin").write_bytes(b"staged")

    def is_staged(self, medium: Medium, set_id: str) -> bool:
        return (self.root / f".incomplete-{set_id}" / "a.bin").exists()

    def test_relative_path_is_in_the_home_directory(self) -> None:
        # sftp://host/~/dir is relative to the login directory: root's home here,
        # so use a name that cannot collide and remove it afterwards.
        home = Path("~" + self.sshd.user).expanduser()
        name = f"resurgo-media-test-{self.root.name}-{self.sshd.port}"
        url = f"sftp://{self.sshd.user}@{LOCALHOST}:{self.sshd.port}/~/{name}"
        medium = open_medium(url, MediumOptions(ssh=self.sshd.options()))
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
        refused = sshd.options(identity=str(sshd.other_key))
        open_medium(sshd.url(sshd.root), MediumOptions(ssh=refused))
    assert "Permission denied" in e.value.message
    assert e.value.hint is not None and "--ssh-key" in e.value.hint


def test_nothing_listening(sshd: Sshd) -> None:
    (port,) = free_ports(1)
    url = f"sftp://{sshd.user}@{LOCALHOST}:{port}/srv"
    with pytest.raises(OperationFailed) as e:
        open_medium(url, MediumOptions(ssh=sshd.options()))
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
            open_medium(sshd.url(sshd.root), MediumOptions(ssh=opts))
        assert e.value.hint is not None and "host key" in e.value.hint


def test_an_unknown_server_is_refused_by_default(sshd: Sshd, tmp_path: Path) -> None:
    # Whoever answers first must not serve the sets: a known_hosts file that does not
    # hold the server's key refuses it, with no option needed.
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    strict = SshOptions(identity=str(sshd.key), known_hosts=str(empty))
    with pytest.raises(OperationFailed, match="Host key verification failed") as e:
        open_medium(sshd.url(sshd.root), MediumOptions(ssh=strict))
    assert e.value.hint is not None and "--ssh-known-hosts" in e.value.hint
    assert empty.read_text() == ""


def test_the_pinned_key_is_accepted_and_is_the_one_recorded(sshd: Sshd) -> None:
    with open_medium(sshd.url(sshd.root), MediumOptions(ssh=sshd.options())) as medium:
        medium.list_sets()
        assert isinstance(medium.backend, SftpBackend)
        assert medium.backend.host_key_line() == sshd.host_key_line + "\n"


def test_a_first_save_takes_the_key_on_trust_and_records_it(
    sshd: Sshd, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    learned = tmp_path / "known_hosts"
    accept = SshOptions(identity=str(sshd.key), known_hosts=str(learned), strict_host_keys=False)
    with open_medium(sshd.url(sshd.root), MediumOptions(ssh=accept)) as medium:
        medium.list_sets()
        assert isinstance(medium.backend, SftpBackend)
        line = medium.backend.host_key_line()
    assert line == sshd.host_key_line + "\n"
    shown = subprocess.run(["ssh-keygen", "-lf", str(sshd.base / "host_ed25519.pub")],
                           check=True, capture_output=True, text=True).stdout.split()[1]
    assert "taken on trust" in caplog.text and shown in caplog.text
    # The recorded line pins the server: strict with exactly that file works...
    pinned = tmp_path / "pinned"
    pinned.write_text(line)
    strict = SshOptions(identity=str(sshd.key), known_hosts=str(pinned))
    with open_medium(sshd.url(sshd.root), MediumOptions(ssh=strict)) as medium:
        medium.list_sets()
    # ...and refuses another server answering at that address.
    other = Path(f"{sshd.other_key}.pub").read_text().split()
    pinned.write_text(f"[{LOCALHOST}]:{sshd.port} {other[0]} {other[1]}\n")
    with pytest.raises(OperationFailed, match=r"Host key for .* has changed"):
        open_medium(sshd.url(sshd.root), MediumOptions(ssh=strict))


def test_ssh_options_that_ssh_would_misread_are_refused(sshd: Sshd, tmp_path: Path) -> None:
    for bad in ("known hosts", "known%d", "known$HOME"):
        opts = SshOptions(identity=str(sshd.key), known_hosts=str(tmp_path / bad))
        with pytest.raises(BadInput, match="ssh would take"):
            open_medium(sshd.url(sshd.root), MediumOptions(ssh=opts))


def test_missing_directory_on_the_server(sshd: Sshd) -> None:
    url = sshd.url(sshd.root / "absent" / "deeper")
    with open_medium(url, MediumOptions(ssh=sshd.options())) as medium:
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
    with open_medium(sshd.url(link), MediumOptions(ssh=sshd.options())) as medium:
        info = MediumContract().save(medium, seed=1)
        assert [s.id for s in medium.list_sets()] == [info.id]
    assert (real / info.id / "set.json").is_file()
