"""Secrets kept secret, through the CLI on loop disks: a system with a Wi-Fi connection
(NetworkManager, mode 0600, psk=...) saved with --encrypt-to holds the key nowhere in
clear in its set; plan without the identity says the file is sealed; recover and verify
with it get it back. Saved without encryption, save warns once.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from resurgo import run
from resurgo.demo import umount_below
from resurgo.media.open import open_medium
from resurgo.recovery.load import load_set
from tests.support import cli
from tests.support.consts import LINUX, MIB
from tests.support.loopdisks import Rig
from tests.support.trees import write

pytestmark = pytest.mark.storage

SIZE = 256 * MIB
PSK = b"correct-horse-battery-staple-42"
WIFI = b"[connection]\nid=home\ntype=wifi\n\n[wifi-security]\nkey-mgmt=wpa-psk\npsk=" + PSK + b"\n"
WIFI_PATH = "/etc/NetworkManager/system-connections/wifi.nmconnection"


@dataclass(frozen=True)
class Saved:
    work: Path
    encrypted: Path
    clear: Path
    identity: Path
    encrypted_save: cli.Result
    clear_save: cli.Result


def table() -> str:
    return (f"label: gpt\nlabel-id: {str(uuid.uuid4()).upper()}\nunit: sectors\n\n"
            f"1 : start=2048, size={(SIZE - 2 * MIB) // 512}, type={LINUX}, name=\"root\"\n")


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory,
          rig_factory: Callable[[], Rig]) -> Iterator[Saved]:
    for tool in ("zstd", "age", "age-keygen", "unshare"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool}")
    work = tmp_path_factory.mktemp("secrets")
    # The machine's own rig, gone before anything is recovered (as in test_cycle).
    rig = rig_factory()
    disk = rig.disk("system", SIZE, table=table())
    rig.sh("mkfs.ext4", "-q", "-L", "root", disk.part(1))
    root = rig.mount(disk.part(1), work / "system")
    try:
        write(root / "etc/hostname", b"wifibox\n")
        write(root / "etc/fstab", b"LABEL=root / ext4 defaults 0 1\n")
        write(root / WIFI_PATH.lstrip("/"), WIFI, mode=0o600)
        write(root / "srv/data.txt", b"some data\n")
        identity = work / "age.key"
        run.run(["age-keygen", "-o", str(identity)])
        recipient = next(line.split(":", 1)[1].strip()
                         for line in identity.read_text().splitlines()
                         if line.startswith("# public key:"))
        encrypted, clear = work / "encrypted", work / "clear"
        enc = cli.spawn("save", "--to", encrypted, "--root", root, "--no-rescue",
                        "--encrypt-to", recipient, state=work / "state-enc")
        assert enc.returncode == 0, enc.output
        plain = cli.spawn("save", "--to", clear, "--root", root, "--no-rescue",
                          state=work / "state-clear")
        assert plain.returncode == 0, plain.output
    finally:
        umount_below(root)
        rig.cleanup()
    yield Saved(work, encrypted, clear, identity, enc, plain)


def test_the_encrypted_set_holds_the_key_nowhere_in_clear(saved: Saved) -> None:
    files = [p for p in saved.encrypted.rglob("*") if p.is_file()]
    assert any(p.name == "secrets.age" for p in files)
    assert any(p.name == "description.toml" for p in files)
    for path in files:
        assert PSK not in path.read_bytes(), path
    assert "secrets in clear" not in saved.encrypted_save.output


def test_plan_without_the_identity_says_the_file_is_sealed(saved: Saved, rig: Rig) -> None:
    target = rig.disk("plan", SIZE)
    r = cli.spawn("plan", "--from", saved.encrypted, "--target", target.path,
                  state=saved.work / "state-plan")
    assert r.returncode == 0, r.output
    assert "1 secret configuration file(s) are sealed" in r.stderr
    assert WIFI_PATH in r.stderr


def test_recover_and_verify_with_the_identity_get_it_back(saved: Saved, rig: Rig,
                                                          mnt: Path) -> None:
    with open_medium(str(saved.encrypted)) as medium:
        loaded = load_set(medium, None, identity=saved.identity)
        (nm,) = [cf for cf in loaded.description.config_files if cf.path == WIFI_PATH]
        assert nm.content is not None and nm.secret
        assert nm.content.encode() == WIFI
    target = rig.disk("target", SIZE)
    # plan reads the sealed file with the identity as recover does: the same hash.
    r = cli.spawn("plan", "--from", saved.encrypted, "--target", target.path, "--identity",
                  saved.identity, "--root", mnt, "--json",
                  state=saved.work / "state-recover")
    assert r.returncode == 0, r.output
    assert "sealed" not in r.stderr
    r = cli.spawn("recover", "--from", saved.encrypted, "--target", target.path,
                  "--plan-hash", r.json()["hash"], "--root", mnt, "--identity", saved.identity,
                  state=saved.work / "state-recover")
    assert r.returncode == 0, r.output
    assert "sealed" not in r.stderr
    restored = mnt / WIFI_PATH.lstrip("/")
    assert restored.read_bytes() == WIFI
    assert os.stat(restored).st_mode & 0o777 == 0o600
    r = cli.spawn("verify", "--from", saved.encrypted, "--root", mnt, "--identity",
                  saved.identity, state=saved.work / "state-recover")
    assert r.returncode == 0, r.output


def test_an_unencrypted_set_warns_once(saved: Saved) -> None:
    said = saved.clear_save.output
    assert said.count("the set holds secrets in clear") == 1, said
    assert "1 configuration file(s)" in said and WIFI_PATH in said
    assert "--encrypt-to" in said
    assert not list(saved.clear.glob("*/secrets.age"))
