"""Secrets kept secret: secret config files sealed in encrypted sets, private local files.

The sets here are written to a real directory medium with the real age and zstd; the
description is the documented example plus a Wi-Fi connection captured from a small tree.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import resource
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from resurgo import fileformat, private
from resurgo.apply.journal import ENV_STATE_DIR, Journal
from resurgo.errors import OperationFailed
from resurgo.fileformat import check_bytes, dumps
from resurgo.finalize.tree import SavedTree
from resurgo.media import Medium, SetMeta, SetReader
from resurgo.media.open import open_medium
from resurgo.model import ConfigFile, Description
from resurgo.probe import catalog, system
from resurgo.recovery import save, secrets, setfiles
from resurgo.recovery.check import Changes, save_record
from resurgo.recovery.load import read_description
from resurgo.rescue.agent import Console
from tests.support import cli
from tests.support.examples import example

PSK = "correct-horse-battery-staple-42"
WIFI = f"[connection]\nid=home\ntype=wifi\n\n[wifi-security]\nkey-mgmt=wpa-psk\npsk={PSK}\n"
WIFI_PATH = "/etc/NetworkManager/system-connections/wifi.nmconnection"


@pytest.fixture
def umask0() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


@dataclasses.dataclass(frozen=True)
class Key:
    identity: Path
    recipient: str


def age_key(path: Path) -> Key:
    if shutil.which("age-keygen") is None or shutil.which("age") is None:
        pytest.skip("needs age and age-keygen")
    subprocess.run(["age-keygen", "-o", str(path)], check=True, capture_output=True)
    recipient = next(line.split(":", 1)[1].strip() for line in path.read_text().splitlines()
                     if line.startswith("# public key:"))
    return Key(path, recipient)


@pytest.fixture
def key(tmp_path: Path) -> Key:
    return age_key(tmp_path / "age.key")


def wifi_record(tmp_path: Path) -> ConfigFile:
    """The Wi-Fi connection as describe captures it from a tree: 0600, psk=..."""
    root = tmp_path / "tree"
    path = root / WIFI_PATH.lstrip("/")
    path.parent.mkdir(parents=True)
    path.write_text(WIFI)
    path.chmod(0o600)
    (found,) = system.capture_config(root, [])
    assert found.secret and found.content == WIFI
    return found


def described(tmp_path: Path) -> Description:
    desc = example()
    return dataclasses.replace(desc, config_files=(*desc.config_files, wifi_record(tmp_path)))


def save_description(medium: Medium, desc: Description, tmp: Path,
                     recipients: tuple[str, ...]) -> tuple[SetReader, Path, list[str]]:
    """What save writes of the description into a set (the rest of a set is the engine's);
    the file the rescue image would carry; the warnings."""
    warnings: list[str] = []
    tmp.mkdir()
    labels = setfiles.labels(recipients)
    with medium.begin_set(SetMeta(host="box", labels=labels)) as w:
        carried = save._write_description(desc, w, tmp, recipients, warnings)
        info = w.commit()
    return medium.open_set(info.id), carried, warnings


def files_of(directory: Path) -> list[Path]:
    return [p for p in directory.rglob("*") if p.is_file()]


# ---------------------------------------------------------------- the format


def test_secret_is_written_only_when_true() -> None:
    plain = ConfigFile(id="cfg.etc.fstab", path="/etc/fstab", content="x\n")
    assert "secret" not in fileformat.to_data(
        dataclasses.replace(example(), config_files=(plain,)))["config_files"][0]
    marked = dataclasses.replace(plain, secret=True)
    text = dumps(dataclasses.replace(example(), config_files=(marked,)))
    assert "secret = true" in text
    assert check_bytes(text.encode(), "d", expected_digest=None).description is not None


def test_only_a_secret_file_may_be_sealed() -> None:
    def problems(cf: ConfigFile) -> list[str]:
        text = dumps(dataclasses.replace(example(), config_files=(cf,)))
        return check_bytes(text.encode(), "d", expected_digest=None).messages()

    sealed = ConfigFile(id="cfg.etc.x", path="/etc/x", mode="0600", secret=True)
    assert problems(sealed) == []
    (msg,) = problems(dataclasses.replace(sealed, secret=False))
    assert "config_files[0] (id 'cfg.etc.x').content: required field is missing" in msg


def test_a_sealed_description_plans_without_the_secret_files(tmp_path: Path) -> None:
    closed, _ = secrets.seal(described(tmp_path))
    tree = SavedTree(closed.config_files)
    assert tree.read(WIFI_PATH) is None
    assert WIFI_PATH not in tree.glob("/etc/NetworkManager/system-connections/*")
    assert tree.read("/etc/fstab") is not None


# ---------------------------------------------------------------- save and load


def test_an_encrypted_set_holds_no_secret_in_clear(tmp_path: Path, key: Key) -> None:
    desc = described(tmp_path)
    media = tmp_path / "medium"
    with open_medium(str(media)) as medium:
        reader, carried, warnings = save_description(medium, desc, tmp_path / "tmp0",
                                                     (key.recipient,))
        assert warnings == []
        names = sorted(f.name for f in reader.files())
        assert names == ["description.toml", "description.toml.sha256", "secrets.age"]
        # Every file of the set, and the description the rescue image is built with.
        for path in [*files_of(media), carried]:
            assert PSK.encode() not in path.read_bytes(), path
            assert hashlib.sha256(WIFI.encode()).hexdigest().encode() not in path.read_bytes()
        assert carried.read_bytes() == reader.read_bytes(setfiles.DESCRIPTION)

        # Without the identity (plan): the record is there, sealed, and a warning says so.
        closed, digest, warnings = read_description(reader)
        (nm,) = [cf for cf in closed.config_files if cf.path == WIFI_PATH]
        assert (nm.sealed, nm.secret, nm.mode, nm.sha256) == (True, True, "0600", None)
        assert digest == hashlib.sha256(carried.read_bytes()).hexdigest()
        (said,) = warnings
        assert "1 secret configuration file(s) are sealed" in said and WIFI_PATH in said

        # With it (recover, verify): the description as described, byte for byte.
        opened, _, warnings = read_description(reader, key.identity)
        assert opened == desc and warnings == []
        (nm,) = [cf for cf in opened.config_files if cf.path == WIFI_PATH]
        assert nm.content == WIFI


def test_the_wrong_identity_opens_no_secret(tmp_path: Path, key: Key) -> None:
    other = age_key(tmp_path / "other.key")
    with open_medium(str(tmp_path / "medium")) as medium:
        reader, _, _ = save_description(medium, described(tmp_path), tmp_path / "t",
                                        (key.recipient,))
        with pytest.raises(OperationFailed, match=r"cannot decrypt secrets\.age"):
            read_description(reader, other.identity)


def test_an_unencrypted_set_warns_once(tmp_path: Path) -> None:
    desc = described(tmp_path)
    second = dataclasses.replace(desc.config_files[-1], id="cfg.vpn", path="/etc/vpn.key")
    desc = dataclasses.replace(desc, config_files=(*desc.config_files, second))
    with open_medium(str(tmp_path / "medium")) as medium:
        reader, _, warnings = save_description(medium, desc, tmp_path / "t", ())
        (said,) = warnings
        assert said.startswith("the set holds secrets in clear: 2 configuration file(s)")
        assert WIFI_PATH in said and "--encrypt-to" in said
        assert setfiles.SECRETS not in [f.name for f in reader.files()]
        assert read_description(reader)[0] == desc


# ---------------------------------------------------------------- a secrets file not of this set


def sealed_parts(tmp_path: Path) -> tuple[Description, str, secrets.Sealed]:
    closed, files = secrets.seal(described(tmp_path))
    return closed, hashlib.sha256(dumps(closed).encode()).hexdigest(), files


def test_secrets_of_another_description_are_refused(tmp_path: Path) -> None:
    closed, digest, files = sealed_parts(tmp_path)
    raw = secrets.encode(files, "0" * 64)
    with pytest.raises(OperationFailed, match="written with another description"):
        secrets.unseal(closed, digest, raw, "secrets.age")


@pytest.mark.parametrize("change, why", [
    (lambda f: {}, "does not hold exactly the sealed files"),
    (lambda f: {**f, "cfg.etc.shadow": {"content": "x"}}, "does not hold exactly"),
    (lambda f: {k: {**v, "content": v["content"] + "x"} for k, v in f.items()},
     "does not match its digest"),
    (lambda f: {k: {**v, "mode": "4755"} for k, v in f.items()}, "is not a content"),
    (lambda f: {k: 7 for k in f}, "is not a content"),
])
def test_a_changed_secrets_document_is_refused(
        tmp_path: Path, change: Callable[[secrets.Sealed], Any], why: str) -> None:
    closed, digest, files = sealed_parts(tmp_path)
    raw = secrets.encode(change(files), digest)
    with pytest.raises(OperationFailed, match=why):
        secrets.unseal(closed, digest, raw, "secrets.age")


@pytest.mark.parametrize("raw", [
    b"", b"\xff\xfe", b"[" * 100_000, b"[]", json.dumps({"secrets": 2}).encode(),
    json.dumps({"secrets": 1, "description_sha256": 1, "files": {}}).encode(),
])
def test_a_malformed_secrets_document_is_refused(tmp_path: Path, raw: bytes) -> None:
    closed, digest, _ = sealed_parts(tmp_path)
    with pytest.raises(OperationFailed, match="is not the secrets file of this set"):
        secrets.unseal(closed, digest, raw, "secrets.age")


def test_a_document_of_many_small_containers_is_refused_before_it_is_parsed(
        tmp_path: Path) -> None:
    """32 MiB of empty lists took 844 MiB parsed: refused by its shape, unparsed."""
    closed, digest, _ = sealed_parts(tmp_path)
    raw = (b'{"secrets": 1, "description_sha256": "' + digest.encode() + b'", "files": {}, '
           b'"x": [' + b"[], " * (8 << 20) + b"[]]}")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(OperationFailed, match="more structure than a secrets document"):
        secrets.unseal(closed, digest, raw, "secrets.age")
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200 * 1024  # KiB


def test_a_content_that_no_file_has_is_refused_not_a_traceback(tmp_path: Path) -> None:
    closed, digest, files = sealed_parts(tmp_path)
    # A lone surrogate: JSON can say it, no UTF-8 encodes it.
    odd = {k: {"content": "\ud800"} for k in files}
    with pytest.raises(OperationFailed, match="is not valid base64 or UTF-8"):
        secrets.unseal(closed, digest, secrets.encode(odd, digest), "secrets.age")


def test_sealed_files_without_a_secrets_file_are_refused(tmp_path: Path, key: Key) -> None:
    closed, _, _ = sealed_parts(tmp_path)
    with open_medium(str(tmp_path / "medium")) as medium:
        # A description with sealed records saved without encryption: nothing to open.
        reader, _, _ = save_description(medium, closed, tmp_path / "t", ())
        with pytest.raises(OperationFailed, match="has sealed secret files but no secrets"):
            read_description(reader, key.identity)


# ---------------------------------------------------------------- private local files


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_a_description_file_is_private_whatever_the_umask(tmp_path: Path,
                                                          umask0: None) -> None:
    path = tmp_path / "description.toml"
    fileformat.write(example(), path)
    assert mode(path) == 0o600
    assert mode(tmp_path / "description.toml.sha256") == 0o600


def test_the_catalog_beside_it_too(tmp_path: Path, umask0: None) -> None:
    if shutil.which("zstd") is None:
        pytest.skip("needs zstd")
    path = tmp_path / "catalog.zst"
    catalog.write_file(path, "dpkg", [])
    assert mode(path) == 0o600


def test_the_journal_is_private_whatever_the_umask(tmp_path: Path, umask0: None) -> None:
    path = tmp_path / "state/deeper/journal-1.jsonl"
    journal = Journal(path, "sha256:1")
    journal.open()
    journal.record("wipe:disk.sda", "wipe")
    assert mode(path) == 0o600
    assert mode(tmp_path / "state") == mode(tmp_path / "state/deeper") == 0o700
    assert len(path.read_text().splitlines()) == 2
    # An existing journal of another plan, readable to all, is made private as it is replaced.
    other = tmp_path / "other.jsonl"
    other.write_text("{}\n")
    other.chmod(0o644)
    Journal(other, "sha256:2").open()
    assert mode(other) == 0o600


def test_a_private_file_is_not_written_through_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("keep\n")
    link = tmp_path / "journal.jsonl"
    link.symlink_to(target)
    with pytest.raises(OSError):
        private.write_text(link, "x\n")
    assert target.read_text() == "keep\n"
    with pytest.raises(OperationFailed, match="cannot write the journal"):
        Journal(link, "sha256:1").open()
    assert target.read_text() == "keep\n"


def test_the_finalize_record_is_private_whatever_the_umask(
        tmp_path: Path, umask0: None, monkeypatch: pytest.MonkeyPatch) -> None:
    state = tmp_path / "var/lib/resurgo"
    monkeypatch.setenv(ENV_STATE_DIR, str(state))
    path = save_record("20261206T220000Z-ab12", tmp_path, Changes(frozenset({"/etc/fstab"})))
    assert path is not None and path.parent == state
    assert mode(path) == 0o600
    assert mode(state) == mode(state.parent) == mode(state.parent.parent) == 0o700


def test_the_rescue_log_is_private_whatever_the_umask(tmp_path: Path, umask0: None) -> None:
    log = tmp_path / "run/resurgo/rescue.log"
    console = Console.open(log)
    try:
        console.write("resurgo: using the set on /dev/sdb1\n")
    finally:
        for sink in console.sinks:
            if sink is not sys.stdout:
                sink.close()
    assert log.read_text() == "resurgo: using the set on /dev/sdb1\n"
    assert mode(log) == 0o600
    assert mode(log.parent) == mode(log.parent.parent) == 0o700


def test_describe_output_is_private_whatever_the_umask(tmp_path: Path, umask0: None) -> None:
    wifi_record(tmp_path)  # the tree at tmp_path/tree, with its Wi-Fi connection
    out = tmp_path / "out/description.toml"
    out.parent.mkdir()
    proc = cli.run("describe", "--root", tmp_path / "tree", "--output", out, "--no-catalog")
    assert proc.returncode == 0, proc.stderr
    assert mode(out) == mode(out.with_name("description.toml.sha256")) == 0o600
    # describe --output is the machine's own copy: the secret is there, marked.
    (nm,) = [cf for cf in fileformat.read(out).config_files if cf.path == WIFI_PATH]
    assert nm.secret and nm.content == WIFI


def test_a_secrets_file_larger_than_its_files_can_make_is_refused(tmp_path: Path,
                                                                   key: Key) -> None:
    """A few bytes of zstd can expand to gigabytes: the document is read up to what its
    sealed files can take, no further."""
    closed, digest, files = sealed_parts(tmp_path)
    (cid,) = files
    huge = {cid: {"content": "a" * (8 << 20)}}
    with open_medium(str(tmp_path / "medium")) as medium:
        with medium.begin_set(SetMeta(host="box", labels=setfiles.labels((key.recipient,)))) as w:
            w.write_bytes(setfiles.DESCRIPTION, dumps(closed).encode())
            secrets.write(w, huge, digest, (key.recipient,))
            info = w.commit()
        assert medium.open_set(info.id).index.file(setfiles.SECRETS).size < 1 << 20
        with pytest.raises(OperationFailed, match="can make"):
            read_description(medium.open_set(info.id), key.identity)
