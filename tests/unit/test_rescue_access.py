"""How the rescue reaches a set on SFTP or S3: what the image carries (secrets only on
--embed-credentials, 0600), the credentials from the key medium, the agent's options."""

from __future__ import annotations

import io
import json
import os
import stat
from pathlib import Path

import pytest

from resurgo.errors import BadInput
from resurgo.media import MediumOptions, SshOptions, s3config
from resurgo.rescue import cpio
from resurgo.rescue.access import (
    EMBEDDED_DIR,
    S3_CA_PATH,
    Access,
    ImageAccess,
    Settings,
    image_access,
    rescue_access,
)
from resurgo.rescue.build import add_files
from tests.support.cli import run

S3_ENV = {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "s3cr3t-v4lue"}
SSH_KEY = (b"-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk=\n"
           b"-----END OPENSSH PRIVATE KEY-----\n")


def _opts(**kw: object) -> MediumOptions:
    return MediumOptions(**kw)  # type: ignore[arg-type]


def test_the_image_carries_endpoint_region_and_ca_but_no_secret_unless_asked(
        tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_bytes(b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    env = {**S3_ENV, "AWS_CA_BUNDLE": str(ca)}
    got = image_access("s3://sets/db1", _opts(s3_endpoint="https://10.0.2.2:8333",
                                               s3_region="eu-1"),
                       embed=False, environ=env, home=tmp_path)
    assert got.config() == {"s3_endpoint": "https://10.0.2.2:8333", "s3_region": "eu-1",
                            "s3_insecure_http": False, "s3_ca": True,
                            "nfs_version": "4.2", "nfs_mount_port": None,
                            "embedded_credentials": []}
    assert got.files() == [(str(S3_CA_PATH), ca.read_bytes(), 0o644)]
    assert "s3cr3t" not in repr(got) and "AKID" not in json.dumps(got.config())


def test_embedded_s3_credentials_are_0600_and_never_in_the_config(tmp_path: Path) -> None:
    got = image_access("s3://sets/db1", _opts(s3_endpoint="http://127.0.0.1:8333",
                                               s3_insecure_http=True),
                       embed=True, environ=S3_ENV, home=tmp_path)
    files = {path: (data, mode) for path, data, mode in got.files()}
    data, mode = files[str(EMBEDDED_DIR / "s3-credentials")]
    assert mode == 0o600
    assert b"aws_access_key_id = AKIDEXAMPLE" in data and b"s3cr3t-v4lue" in data
    assert "s3cr3t" not in json.dumps(got.config()) and "s3cr3t" not in repr(got)
    assert got.config()["embedded_credentials"] == ["s3-credentials"]
    # The file read back is what the rescue's S3 client takes.
    creds_file = tmp_path / "c"
    creds_file.write_bytes(data)
    creds = s3config.credentials(environ={"AWS_SHARED_CREDENTIALS_FILE": str(creds_file),
                                          "AWS_CONFIG_FILE": os.devnull}, home=tmp_path)
    assert (creds.access_key, creds.secret_key) == ("AKIDEXAMPLE", "s3cr3t-v4lue")


def test_embedded_ssh_key_needs_a_key_and_a_network_medium(tmp_path: Path) -> None:
    key = tmp_path / "id"
    key.write_bytes(SSH_KEY)
    sftp = "sftp://backup@10.0.2.2:2222/srv/sets"
    with pytest.raises(BadInput, match="--ssh-key"):
        image_access(sftp, _opts(), embed=True, environ={}, home=tmp_path)
    with pytest.raises(BadInput, match="not an sftp://, s3:// or cifs://"):
        image_access("/srv/sets", _opts(), embed=True, environ={}, home=tmp_path)
    with pytest.raises(BadInput, match="not an sftp://, s3:// or cifs://"):
        image_access(None, _opts(), embed=True, environ={}, home=tmp_path)
    got = image_access(sftp, _opts(ssh=SshOptions(identity=str(key))), embed=True,
                       environ={}, home=tmp_path)
    assert got.files() == [(str(EMBEDDED_DIR / "ssh-key"), SSH_KEY, 0o600)]
    # Without --embed-credentials the key stays on this machine.
    plain = image_access(sftp, _opts(ssh=SshOptions(identity=str(key))), embed=False,
                         environ={}, home=tmp_path)
    assert plain.files() == [] and plain.embedded == ()


def test_embedding_without_s3_credentials_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="--embed-credentials: no S3 credentials"):
        image_access("s3://sets", _opts(s3_endpoint="https://s3.example.net"), embed=True,
                     environ={}, home=tmp_path)


def test_plain_http_s3_is_refused_at_build_time_unless_allowed(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="plain HTTP"):
        image_access("s3://sets", _opts(s3_endpoint="http://10.0.2.2:8333"), embed=False,
                     environ={}, home=tmp_path)


def test_secrets_go_in_a_private_directory_of_the_initramfs() -> None:
    buf = io.BytesIO()
    w = cpio.Writer(buf)
    add_files(w, ImageAccess(s3_ca=b"CA", s3_credentials=b"[default]\n",
                             ssh_key=SSH_KEY).files())
    w.close()
    modes = {e.name: stat.S_IMODE(e.mode) for e in cpio.read(buf.getvalue())}
    assert modes["etc/resurgo/credentials"] == 0o700
    assert modes["etc/resurgo/credentials/s3-credentials"] == 0o600
    assert modes["etc/resurgo/credentials/ssh-key"] == 0o600
    assert modes["etc/resurgo/s3-ca.pem"] == 0o644


def _dirs(tmp_path: Path) -> tuple[Path, Path, Path]:
    keys, embedded, run_dir = tmp_path / "keys", tmp_path / "embedded", tmp_path / "run"
    keys.mkdir()
    embedded.mkdir()
    return keys, embedded, run_dir


def test_credentials_from_the_key_medium_are_copied_private(tmp_path: Path) -> None:
    keys, embedded, run_dir = _dirs(tmp_path)
    (keys / "ssh-key").write_bytes(SSH_KEY)
    (keys / "ssh-key").chmod(0o755)  # as a FAT stick shows every file
    (keys / "s3-credentials").write_bytes(b"[default]\naws_access_key_id = K\n"
                                          b"aws_secret_access_key = S\n")
    (embedded / "ssh-key").write_bytes(b"the image's own")
    got = rescue_access({"s3_endpoint": "https://10.0.2.2:8333", "s3_region": "eu-1"},
                        known_hosts=Path("/etc/resurgo/known_hosts"), trust_file=None,
                        keys_dir=keys, embedded_dir=embedded, run_dir=run_dir,
                        s3_ca=tmp_path / "none")
    assert got.ssh_key == run_dir / "ssh-key" and got.ssh_key.read_bytes() == SSH_KEY
    assert stat.S_IMODE(got.ssh_key.stat().st_mode) == 0o600
    assert stat.S_IMODE(run_dir.stat().st_mode) == 0o700
    assert got.s3_credentials == run_dir / "s3-credentials"
    assert any("from the key medium" in line for line in got.lines)
    creds = s3config.credentials(environ=got.environ(), home=tmp_path)
    assert (creds.access_key, creds.secret_key) == ("K", "S")
    assert got.argv("sftp://b@h/srv") == ["--ssh-key", str(run_dir / "ssh-key"),
                                          "--ssh-known-hosts", "/etc/resurgo/known_hosts",
                                          "--ssh-strict-host-keys"]
    assert got.argv("s3://sets/x") == ["--s3-endpoint", "https://10.0.2.2:8333",
                                       "--s3-region", "eu-1"]
    assert got.argv("/run/resurgo/disks/vdb") == []
    opts = got.options()
    assert opts.ssh.identity == str(run_dir / "ssh-key") and opts.ssh.strict_host_keys
    assert (opts.s3_endpoint, opts.s3_region) == ("https://10.0.2.2:8333", "eu-1")


def test_without_a_key_medium_the_embedded_credentials_are_used(tmp_path: Path) -> None:
    _keys, embedded, run_dir = _dirs(tmp_path)
    (embedded / "s3-credentials").write_bytes(b"[default]\n")
    ca = tmp_path / "ca.pem"
    ca.write_bytes(b"CA")
    got = rescue_access(None, known_hosts=None, trust_file=None, keys_dir=None,
                        embedded_dir=embedded, run_dir=run_dir, s3_ca=ca)
    assert got.s3_credentials == embedded / "s3-credentials" and got.ssh_key is None
    assert got.environ() == {"AWS_CONFIG_FILE": os.devnull,
                             "AWS_SHARED_CREDENTIALS_FILE": str(embedded / "s3-credentials"),
                             "AWS_CA_BUNDLE": str(ca)}
    assert "ssh-key: none in this image" in got.lines
    assert not run_dir.exists()


def test_key_medium_files_that_are_links_or_huge_are_not_taken(tmp_path: Path) -> None:
    keys, embedded, run_dir = _dirs(tmp_path)
    (tmp_path / "elsewhere").write_bytes(SSH_KEY)
    (keys / "ssh-key").symlink_to(tmp_path / "elsewhere")
    (keys / "s3-credentials").write_bytes(b"x" * (65 << 10))
    got = rescue_access({}, known_hosts=None, trust_file=None, keys_dir=keys,
                        embedded_dir=embedded, run_dir=run_dir, s3_ca=tmp_path / "none")
    assert got.ssh_key is None and got.s3_credentials is None
    assert any("larger than" in line for line in got.lines)
    # With no credentials at all, S3 lookups find none (not a stray ~/.aws).
    with pytest.raises(Exception, match="no S3 credentials"):
        s3config.credentials(environ=got.environ(), home=tmp_path)


def test_a_damaged_medium_table_reads_as_no_settings() -> None:
    assert Settings.from_config("x") == Settings()
    assert Settings.from_config({"s3_endpoint": 3, "s3_insecure_http": "yes"}) == Settings()
    assert Access().argv("s3://b") == []


def test_rescue_embed_credentials_without_a_network_medium_is_exit_2(tmp_path: Path) -> None:
    res = run("rescue", "--to", tmp_path / "r.iso", "--embed-credentials",
              env={"RESURGO_CONFIG": ""})
    assert res.returncode == 2, res.stderr
    assert "--embed-credentials" in res.stderr and "Traceback" not in res.stderr
