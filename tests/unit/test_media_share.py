"""NFS and CIFS media: their URLs (hostile ones too), the credentials file, the mount
options resurgo builds, and the detached mount they stand on (its flags, and that nothing
stays open when opening fails). This host's kernel has no NFS or CIFS client: the mounts
here are tmpfs ones, made by the same code; tests/vm/test_rescue_shares.py mounts real
shares in a guest."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from resurgo import fsmount
from resurgo.errors import BadInput, OperationFailed, PreconditionFailed, ResurgoError
from resurgo.fsmount import Param
from resurgo.media import MediumOptions, SetKind, SetMeta, open_medium
from resurgo.media import share as share_mod
from resurgo.media.share import (
    CifsCredentials,
    ShareOptions,
    cifs_params,
    nfs_params,
    open_share,
    parse_cifs_credentials,
    read_cifs_credentials,
)
from resurgo.media.url import CifsSpec, NfsSpec, parse_url
from tests.support.cli import run

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="mounts need root")

CREDS = CifsCredentials("backup", "pw, with=all ")


# ------------------------------------------------------------------------------ URLs


@pytest.mark.parametrize(
    ("url", "spec"),
    [
        ("nfs://nas/srv/sets", NfsSpec("nas", "/srv/sets")),
        ("nfs://nas:2049/srv/sets/", NfsSpec("nas", "/srv/sets", 2049)),
        ("nfs://nas", NfsSpec("nas", "/")),
        ("NFS://[fd00::5]:20490/sets", NfsSpec("fd00::5", "/sets", 20490)),
        ("nfs://nas/with%20space/x", NfsSpec("nas", "/with space/x")),
        ("cifs://nas/backups", CifsSpec("nas", "backups")),
        ("cifs://alice@nas.lan:445/backups/db1/", CifsSpec("nas.lan", "backups", "db1",
                                                          "alice", 445)),
        ("cifs://nas/My%20Share/a/b", CifsSpec("nas", "My Share", "a/b")),
    ],
)
def test_good_share_urls(url: str, spec: object) -> None:
    assert parse_url(url) == spec


@pytest.mark.parametrize(
    ("url", "why"),
    [
        # options smuggled in through the server, the path, the share, the user
        ("nfs://nas,vers=2/x", "bad host name"),
        ("nfs://-o/x", "bad host name"),
        ("nfs://nas/srv,rw", "comma"),
        ("nfs://nas/srv%2Cnolock", "comma"),
        ("nfs://nas/srv%2C%2Csec=none", "comma"),
        ("cifs://nas/share,username=x/d", "comma"),
        ("cifs://nas/share/d%2Cpassword=x", "comma"),
        ("cifs://a%2Cb@nas/share", "bad user name"),
        ("cifs://alice:secret@nas/share", "passwords are not accepted"),
        ("nfs://alice@nas/x", "no user names"),
        # a name that is not one
        ("nfs://nas/a/../etc", "no . or .."),
        ("cifs://nas/share/./x", "no . or .."),
        ("nfs://nas/a%00b", "control character"),
        ("nfs://nas/a%0Ab", "control character"),
        ("nfs://nas/a\nb", "control character"),
        ("cifs://nas/a\tb/c", "control character"),
        ("nfs://nas/a%2Fb", "escaped /"),
        ("cifs://nas/share%5Cother", "SMB names"),
        ("cifs://nas/sh*re", "SMB names"),
        ("cifs://nas", "which share"),
        ("cifs://nas/", "which share"),
        (" nfs://nas/x", "spaces around"),
        ("nfs://nas:0/x", "bad port"),
        ("nfs://nas:99999/x", "bad port"),
        ("nfs://nas/x?vers=3", "no [?]query"),
        ("nfs://[fe80::1/x", "unclosed"),
    ],
)
def test_hostile_share_urls_are_refused(url: str, why: str) -> None:
    with pytest.raises(BadInput, match=why):
        parse_url(url)


def test_share_urls_display_as_typed() -> None:
    for url in ("nfs://nas:2049/srv/with%20space", "cifs://alice@[fd00::5]:445/s/a%20b"):
        assert parse_url(url).display == url  # type: ignore[union-attr]


# ------------------------------------------------------------------- credentials file


def test_credentials_keep_the_password_as_written() -> None:
    got = parse_cifs_credentials(b"# a comment\n\nusername = backup\npassword=pw, with=all \r\n"
                                 b"domain=CORP\n", "f")
    assert got == CifsCredentials("backup", "pw, with=all ", "CORP")
    assert "pw, with" not in repr(got)
    assert parse_cifs_credentials(b"user=u\npass=p\n", "f") == CifsCredentials("u", "p")


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (b"username=u\n", "needs username= and password="),
        (b"password=p\n", "needs username= and password="),
        (b"username=u\npassword=\n", "needs username= and password="),
        (b"username=u\npassword=p\nport=1\n", "line 3"),
        (b"username=u,sec=none\npassword=p\n", "a bad username"),
        (b"username=u\npassword=p\ndomain=a,b\n", "a bad domain"),
        (b"username=u\npassword=p\0q\n", "a bad password"),
        (b"username=u\npassword=\xff\n", "not UTF-8"),
        (b"just text\n", "line 1"),
    ],
)
def test_bad_credentials_are_refused_without_showing_the_password(text: bytes,
                                                                  why: str) -> None:
    with pytest.raises(BadInput, match=why) as caught:
        parse_cifs_credentials(text, "f")
    assert "=p" not in str(caught.value)


def _creds_file(tmp_path: Path, mode: int = 0o600) -> Path:
    path = tmp_path / "cifs.cred"
    path.write_bytes(b"username=backup\npassword=s3cret\n")
    path.chmod(mode)
    return path


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620, 0o602])
def test_a_credentials_file_others_may_read_or_change_is_refused(tmp_path: Path,
                                                                 mode: int) -> None:
    with pytest.raises(BadInput, match="may be read or changed by others") as caught:
        read_cifs_credentials(_creds_file(tmp_path, mode))
    assert caught.value.hint is not None and "chmod 600" in caught.value.hint


def test_a_private_credentials_file_is_read(tmp_path: Path) -> None:
    assert read_cifs_credentials(_creds_file(tmp_path, 0o400)) == CifsCredentials(
        "backup", "s3cret")


@root_only
def test_a_credentials_file_of_another_user_is_refused(tmp_path: Path) -> None:
    path = _creds_file(tmp_path)
    os.chown(path, 4321, 4321)
    with pytest.raises(BadInput, match="owner uid 4321"):
        read_cifs_credentials(path)


def test_a_credentials_file_that_is_no_file_or_huge_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="not a regular file"):
        read_cifs_credentials(tmp_path)
    with pytest.raises(BadInput, match="No such file"):
        read_cifs_credentials(tmp_path / "none")
    huge = tmp_path / "huge"
    huge.write_bytes(b"username=u\npassword=" + b"p" * (65 << 10) + b"\n")
    huge.chmod(0o600)
    with pytest.raises(BadInput, match="larger than"):
        read_cifs_credentials(huge)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(BadInput, match="not a regular file"):  # and no hang
        read_cifs_credentials(fifo)


# --------------------------------------------------------------------- mount options


def _shown(params: list[Param]) -> list[str]:
    return [p.shown() for p in params]


def test_nfs_options() -> None:
    spec = NfsSpec("nas", "/srv/sets", 20490)
    assert _shown(nfs_params(spec, "10.0.0.5", ShareOptions())) == [
        "source=nas:/srv/sets", "vers=4.2", "addr=10.0.0.5", "proto=tcp", "port=20490"]
    v3 = ShareOptions(nfs_version="3", nfs_mount_port=20048)
    assert _shown(nfs_params(NfsSpec("fd00::5", "/x"), "fd00::5", v3)) == [
        "source=[fd00::5]:/x", "vers=3", "addr=fd00::5", "proto=tcp6", "mountproto=tcp6",
        "mountport=20048", "nolock"]
    assert _shown(nfs_params(spec, "10.0.0.5", ShareOptions(), "/srv"))[0] == "source=nas:/srv"
    with pytest.raises(BadInput, match="NFS version"):
        nfs_params(spec, "10.0.0.5", ShareOptions(nfs_version="2"))


def test_cifs_options_keep_the_password_out_of_sight() -> None:
    spec = CifsSpec("nas", "backups", "db1", None, 4450)
    params = cifs_params(spec, "10.0.0.5", CifsCredentials("backup", "pw, x", "CORP"))
    assert _shown(params) == [
        "source=//nas/backups", "ip=10.0.0.5", "username=backup", "password=***",
        "domain=CORP", "port=4450", "file_mode=0600", "dir_mode=0700"]
    # One option, its value whole: the comma goes to the kernel as part of the password.
    assert [p.value for p in params if p.key == "password"] == ["pw, x"]
    assert "pw" not in repr(params)
    with pytest.raises(BadInput, match="not the credentials'"):
        cifs_params(CifsSpec("nas", "s", user="alice"), "10.0.0.5", CREDS)
    assert cifs_params(CifsSpec("nas", "s", user="backup"), "1.2.3.4", CREDS)


def test_an_option_with_a_nul_is_refused() -> None:
    with pytest.raises(ValueError, match="NUL"):
        Param("source", "nas:/a\0b")


# ---------------------------------------------------------- the mount and its closing


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@root_only
def test_a_detached_mount_is_confined_and_read_only_unless_asked() -> None:
    def failed(why: str, err: int) -> OperationFailed:
        return OperationFailed(why)

    before = _open_fds()
    fd = fsmount.detached_mount("tmpfs", [Param("size", "1m")], failed=failed,
                                attributes=fsmount.CONFINED | fsmount.MOUNT_ATTR_RDONLY)
    try:
        path = f"/proc/self/fd/{fd}"
        flags = os.statvfs(path).f_flag
        for flag in (os.ST_RDONLY, os.ST_NOSUID, os.ST_NODEV, os.ST_NOEXEC):
            assert flags & flag
        with pytest.raises(OSError) as caught:
            os.mkdir(f"{path}/x")
        assert caught.value.errno == errno.EROFS
        # Detached: in no mount table.
        assert "tmpfs /proc/self/fd" not in Path("/proc/self/mountinfo").read_text()
    finally:
        os.close(fd)
    assert _open_fds() == before


@root_only
def test_a_refused_mount_says_what_the_kernel_said_and_leaves_nothing_open() -> None:
    def failed(why: str, err: int) -> OperationFailed:
        return OperationFailed(f"{why} [{errno.errorcode[err]}]")

    before = _open_fds()
    with pytest.raises(OperationFailed, match=r"option size=lots: .*size.* \[EINVAL\]"):
        fsmount.detached_mount("tmpfs", [Param("size", "lots")], attributes=0, failed=failed)
    with pytest.raises(OperationFailed, match="ENODEV"):
        fsmount.detached_mount("resurgo-nofs", [], attributes=0, failed=failed)
    assert _open_fds() == before


@pytest.fixture
def tmpfs_shares(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[bool]]:
    """open_share's mounts made of tmpfs (this kernel has no NFS or CIFS client), by the
    same detached mount and flags; each mount's writability noted. One tmpfs for all, as
    one server would be: its top is kept open by the fixture."""
    made: list[bool] = []
    keep = fsmount.detached_mount("tmpfs", [Param("size", "8m")], attributes=0,
                                  failed=lambda why, err: OperationFailed(why))

    def mount(fstype: str, params: list[Param], display: str, writable: bool) -> int:
        made.append(writable)
        fd = os.open(f"/proc/self/fd/{keep}", os.O_PATH | os.O_CLOEXEC)
        return fd

    monkeypatch.setattr(share_mod, "_mount", mount)
    monkeypatch.setattr(share_mod, "_load_modules", lambda names: None)
    try:
        yield made
    finally:
        os.close(keep)


@root_only
def test_a_share_is_a_directory_medium_and_closing_it_releases_the_mount(
        tmp_path: Path, tmpfs_shares: list[bool]) -> None:
    creds = _creds_file(tmp_path)
    share = ShareOptions(cifs_credentials=creds)
    url = "cifs://127.0.0.1/sets/host1"
    before = _open_fds()
    with (open_medium(url, MediumOptions(share=share, writable=True)) as medium,
          medium.begin_set(SetMeta(SetKind.FULL, host="h")) as w):
        w.write_bytes("a.bin", b"data")
        set_id = w.commit().id
    assert _open_fds() == before
    with open_medium(url, MediumOptions(share=share)) as medium:
        (info,) = medium.list_sets()
        assert info.id == set_id
        with medium.open_set(set_id).open("a.bin") as f:
            assert f.read() == b"data"
    assert _open_fds() == before
    assert tmpfs_shares == [True, False]


@root_only
def test_ctrl_c_while_a_share_is_open_leaves_nothing_mounted(
        tmp_path: Path, tmpfs_shares: list[bool]) -> None:
    share = ShareOptions(cifs_credentials=_creds_file(tmp_path))
    before = _open_fds()
    with (pytest.raises(KeyboardInterrupt),
          open_medium("cifs://127.0.0.1/sets/h", MediumOptions(share=share, writable=True))
          as medium,
          medium.begin_set(SetMeta(SetKind.FULL, host="h")) as w):
        w.write_bytes("a.bin", b"data")
        raise KeyboardInterrupt
    # The mount's descriptors closed (so the kernel dropped it); the staging aborted.
    assert _open_fds() == before
    with open_medium("cifs://127.0.0.1/sets/h", MediumOptions(share=share)) as medium:
        assert medium.list_sets() == []


@root_only
def test_a_missing_directory_is_made_only_by_a_writer(
        tmp_path: Path, tmpfs_shares: list[bool]) -> None:
    share = ShareOptions(cifs_credentials=_creds_file(tmp_path))
    before = _open_fds()
    with pytest.raises(OperationFailed, match="does not exist"):
        open_medium("cifs://127.0.0.1/sets/new", MediumOptions(share=share))
    assert _open_fds() == before
    with pytest.raises(OperationFailed, match="does not exist"):  # only the last one
        open_medium("cifs://127.0.0.1/sets/a/b", MediumOptions(share=share, writable=True))
    assert _open_fds() == before
    with open_medium("cifs://127.0.0.1/sets/new", MediumOptions(share=share, writable=True)):
        pass
    assert _open_fds() == before


@root_only
def test_a_link_on_the_way_to_the_sets_is_refused(tmp_path: Path,
                                                   tmpfs_shares: list[bool]) -> None:
    share = ShareOptions(cifs_credentials=_creds_file(tmp_path))
    # The share's own files: a link pointing at this machine's /etc.
    backend = open_share(CifsSpec("127.0.0.1", "sets", "top"), share, writable=True)
    try:
        os.symlink("/etc", f"{backend.root}/sets-link")
    finally:
        backend.close()
    before = _open_fds()
    with pytest.raises(OperationFailed, match="symbolic link or not a directory"):
        open_medium("cifs://127.0.0.1/sets/top/sets-link", MediumOptions(share=share))
    assert _open_fds() == before


@root_only
def test_errors_name_the_share_and_the_path_inside_it(
        tmp_path: Path, tmpfs_shares: list[bool]) -> None:
    share = ShareOptions(cifs_credentials=_creds_file(tmp_path))
    url = "cifs://127.0.0.1/sets/host1"
    with (open_medium(url, MediumOptions(share=share, writable=True)) as medium,
          medium.begin_set(SetMeta(SetKind.FULL, host="h")) as w):
        w.write_bytes("a.bin", b"data")
        set_id = w.commit().id
    with open_medium(url, MediumOptions(share=share, writable=True)) as medium:
        backend = medium.backend
        assert isinstance(backend, share_mod.ShareBackend)
        os.unlink(f"{backend.root}/{set_id}/a.bin")
        os.symlink("/etc/shadow", f"{backend.root}/{set_id}/a.bin")
        with pytest.raises(OperationFailed) as linked:
            medium.open_set(set_id).open("a.bin")
        os.unlink(f"{backend.root}/{set_id}/a.bin")
        with pytest.raises(ResurgoError) as gone:
            backend.open_file(set_id, "a.bin")
    assert linked.value.message.startswith(f"{set_id}/a.bin on {url} is a symbolic link")
    assert gone.value.message == f"{set_id}/a.bin is missing on {url}"
    assert "/proc/self/fd" not in linked.value.message + gone.value.message


@pytest.fixture
def nfs_exports(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """open_share's NFS mounts of the directories below a local one (the exported
    tree), refused with ENOENT as a server refuses a path it does not have."""
    exported = tmp_path / "exported"
    exported.mkdir()

    def mount(fstype: str, params: list[Param], display: str, writable: bool) -> int:
        source = next(p.value for p in params if p.key == "source")
        assert source is not None and not writable
        path = exported / source.split(":", 1)[1].lstrip("/")
        if not path.is_dir():
            raise share_mod.MountRefused(f"cannot mount {display}: ENOENT", None,
                                         errno.ENOENT)
        return os.open(path, os.O_PATH | os.O_CLOEXEC)

    monkeypatch.setattr(share_mod, "_mount", mount)
    monkeypatch.setattr(share_mod, "_load_modules", lambda names: None)
    return exported


def test_doctor_takes_a_share_directory_save_would_make_as_ready(nfs_exports: Path) -> None:
    from resurgo.doctor import Job, State, medium_row

    (nfs_exports / "srv/sets").mkdir(parents=True)
    url = "nfs://127.0.0.1/srv/sets"
    row = medium_row(Job.SAVE, url + "/host1", MediumOptions())
    assert row.state is State.OK and "save makes it" in row.detail, row
    # Recover reads an existing directory only; two levels missing: save makes one.
    row = medium_row(Job.RECOVER, url + "/host1", MediumOptions())
    assert row.state is State.MISSING, row
    row = medium_row(Job.SAVE, url + "/a/b", MediumOptions())
    assert row.state is State.MISSING, row
    assert medium_row(Job.SAVE, url, MediumOptions()).detail == "reachable, 0 set(s)"
    # Nothing was made.
    assert sorted(p.name for p in nfs_exports.rglob("*")) == ["sets", "srv"]


def test_the_parent_of_a_share_url() -> None:
    assert share_mod.parent_spec(NfsSpec("h", "/srv/sets/a")) == NfsSpec("h", "/srv/sets")
    assert share_mod.parent_spec(NfsSpec("h", "/srv", 2049)) == NfsSpec("h", "/", 2049)
    assert share_mod.parent_spec(NfsSpec("h", "/")) is None
    assert share_mod.parent_spec(CifsSpec("h", "sets", "a/b", "u", 445)) == \
        CifsSpec("h", "sets", "a", "u", 445)
    assert share_mod.parent_spec(CifsSpec("h", "sets", "a")) == CifsSpec("h", "sets", "")
    assert share_mod.parent_spec(CifsSpec("h", "sets")) is None


def test_a_cifs_share_needs_credentials(tmp_path: Path) -> None:
    with pytest.raises(PreconditionFailed, match="which credentials"):
        open_medium("cifs://127.0.0.1/sets", MediumOptions())
    with pytest.raises(BadInput, match="read or changed by others"):
        open_medium("cifs://127.0.0.1/sets", MediumOptions(
            share=ShareOptions(cifs_credentials=_creds_file(tmp_path, 0o644))))


@root_only
def test_without_a_client_in_the_kernel_the_error_says_which_module() -> None:
    if "\tnfs\n" in Path("/proc/filesystems").read_text():
        pytest.skip("this kernel has an NFS client")
    before = _open_fds()
    with pytest.raises(ResurgoError, match=r"cannot mount nfs://127\.0\.0\.1/sets") as caught:
        open_medium("nfs://127.0.0.1/sets", MediumOptions())
    assert caught.value.hint is not None and "modprobe nfs" in caught.value.hint
    assert _open_fds() == before


def test_an_unknown_server_name_is_one_message() -> None:
    with pytest.raises(OperationFailed, match="cannot resolve"):
        open_medium("nfs://no-such-host.invalid/sets", MediumOptions())


# ------------------------------------------------------------------------- the CLI


def test_cli_share_options_are_checked(tmp_path: Path) -> None:
    env = {"RESURGO_CONFIG": ""}
    res = run("list", "cifs://127.0.0.1/sets", env=env)
    assert res.returncode == 3 and "--cifs-credentials" in res.stderr, res.stderr
    res = run("list", "cifs://127.0.0.1/sets", "--cifs-credentials",
              _creds_file(tmp_path, 0o644), env=env)
    assert res.returncode == 2 and "chmod 600" in res.stderr, res.stderr
    res = run("list", "nfs://127.0.0.1/sets", "--nfs-mount-port", "0", env=env)
    assert res.returncode == 2 and "--nfs-mount-port" in res.stderr, res.stderr
    res = run("list", "nfs://127.0.0.1/sets", "--nfs-version", "2", env=env)
    assert res.returncode == 2, res.stderr
    res = run("list", "nfs://h/a%2Cnolock", env=env)
    assert res.returncode == 2 and "comma" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr


# ----------------------------------------------------------------------- the rescue


def test_the_rescue_takes_cifs_credentials_from_the_key_medium(tmp_path: Path) -> None:
    from resurgo.rescue.access import rescue_access

    keys, embedded, run_dir = tmp_path / "keys", tmp_path / "embedded", tmp_path / "run"
    keys.mkdir()
    embedded.mkdir()
    (keys / "cifs-credentials").write_bytes(b"username=backup\npassword=s3cret\n")
    (keys / "cifs-credentials").chmod(0o755)  # as a FAT stick shows every file
    got = rescue_access({"nfs_version": "3", "nfs_mount_port": 20048}, known_hosts=None,
                        trust_file=None, keys_dir=keys, embedded_dir=embedded,
                        run_dir=run_dir, s3_ca=tmp_path / "none")
    copy = run_dir / "cifs-credentials"
    assert got.cifs_credentials == copy and stat.S_IMODE(copy.stat().st_mode) == 0o600
    assert read_cifs_credentials(copy) == CifsCredentials("backup", "s3cret")
    assert got.argv("cifs://nas/sets/h") == ["--cifs-credentials", str(copy)]
    assert got.argv("nfs://nas/sets") == ["--nfs-version", "3", "--nfs-mount-port", "20048"]
    share = got.options().share
    assert (share.nfs_version, share.nfs_mount_port, share.cifs_credentials) == (
        "3", 20048, copy)
    assert any(line.startswith("cifs-credentials: from the key medium") for line in got.lines)


@pytest.mark.parametrize("table", [
    {"nfs_version": "2"}, {"nfs_version": "4.2,sec=none"}, {"nfs_version": 4},
    {"nfs_mount_port": "20048"}, {"nfs_mount_port": 0}, {"nfs_mount_port": 70000},
    {"nfs_mount_port": True},
])
def test_a_damaged_nfs_table_reads_as_no_setting(table: dict[str, object]) -> None:
    from resurgo.rescue.access import Access, Settings

    settings = Settings.from_config(table)
    assert settings == Settings()
    assert Access(settings=settings).argv("nfs://nas/sets") == []


def test_embedded_cifs_credentials_are_checked_0600_and_never_in_the_config(
        tmp_path: Path) -> None:
    from resurgo.rescue.access import EMBEDDED_DIR, ImageAccess, image_access

    def access(url: str, creds: Path | None, embed: bool = True) -> ImageAccess:
        return image_access(url, MediumOptions(share=ShareOptions(cifs_credentials=creds)),
                            embed=embed, environ={}, home=tmp_path)

    got = access("cifs://nas/sets/h", _creds_file(tmp_path))
    assert got.files() == [(str(EMBEDDED_DIR / "cifs-credentials"),
                            b"username=backup\npassword=s3cret\n", 0o600)]
    assert "s3cret" not in repr(got) and "s3cret" not in str(got.config())
    assert got.config()["embedded_credentials"] == ["cifs-credentials"]
    with pytest.raises(BadInput, match="which CIFS credentials"):
        access("cifs://nas/sets/h", None)
    with pytest.raises(BadInput, match="read or changed by others"):
        access("cifs://nas/sets/h", _creds_file(tmp_path, 0o644))
    with pytest.raises(BadInput, match="not an sftp://, s3:// or cifs://"):
        access("nfs://nas/sets", None)
    assert access("nfs://nas/sets", None, embed=False).files() == []
