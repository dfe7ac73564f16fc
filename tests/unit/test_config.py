"""The configuration file: its keys, its checks (every problem with its line, at once),
and docs/config.md, whose example must stay valid and which must name every key."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from resurgo import config
from resurgo.config import keys, loader
from resurgo.errors import BadInput

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs" / "config.md"


def docs_example() -> str:
    """The complete example of docs/config.md: its one ```toml block."""
    blocks = re.findall(r"^```toml\n(.*?)^```$", DOCS.read_text(), re.M | re.S)
    assert len(blocks) == 1, "docs/config.md holds one ```toml example"
    return str(blocks[0])


def problems(text: str) -> list[tuple[int | None, str, str]]:
    checked = config.check_bytes(text.encode(), "f.toml")
    assert checked.config is None
    return [(p.line, p.location(), p.message) for p in checked.problems]


def test_the_docs_example_loads_and_sets_every_key() -> None:
    checked = config.check_bytes(docs_example().encode(), "docs/config.md")
    assert checked.messages() == []
    assert checked.config is not None
    # A complete example: every key, so that a renamed or new key shows here.
    assert set(checked.config.values) == set(keys.BY_NAME)
    assert checked.config.get("medium") == "s3://backups-example/servers/web1"
    assert checked.config.get("keep_daily") == 7
    assert checked.config.get("rescue.kernel_args") == ("ip=dhcp",)


def test_the_docs_name_every_key_with_its_default() -> None:
    text = DOCS.read_text()
    for key in keys.KEYS:
        short = key.name.rpartition(".")[2]
        row = re.search(rf"^\| `{re.escape(short)}` \|([^\n]*)$", text, re.M)
        assert row, f"docs/config.md has no row for {key.name}"
        if isinstance(key.default, bool):
            assert f"`{str(key.default).lower()}`" in row.group(1), key.name
        elif isinstance(key.default, int):
            assert f"`{key.default}`" in row.group(1), key.name


def test_every_problem_is_listed_with_its_line_at_once() -> None:
    text = """\
medium = "ftp://nowhere/x"
exclude = ["/var/cache", "relative/path"]
compression_level = 25
keep_daily = true
colour = "blue"
max_age = "a day"
encrypt_to = ["age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p", "bob"]
keep_last = 0

[s3]
endpoint = "ftp://s3.example.net"
insecure_http = "yes"

[ssh]
key = "id_ed25519"
port = 22

[rescue]
after = "halt"
kernel_args = ["ip=dhcp", "it's"]
menu_timeout = -2
"""
    got = problems(text)
    assert [(line, where) for line, where, _ in got] == [
        (1, "medium"),
        (2, "exclude[1]"),
        (3, "compression_level"),
        (4, "keep_daily"),
        (5, "colour"),
        (6, "max_age"),
        (7, "encrypt_to[1]"),
        (8, "keep_last"),
        (11, "s3.endpoint"),
        (12, "s3.insecure_http"),
        (15, "ssh.key"),
        (16, "ssh.port"),
        (19, "rescue.after"),
        (20, "rescue.kernel_args[1]"),
        (21, "rescue.menu_timeout"),
    ]
    messages = dict((where, message) for _, where, message in got)
    assert "unknown kind of medium 'ftp'" in messages["medium"]
    assert messages["exclude[1]"].endswith("not an absolute path of the saved system")
    assert messages["compression_level"] == "25 is out of range: 1 to 19"
    assert messages["keep_daily"] == "must be an integer, not a boolean"
    assert messages["colour"].startswith("unknown key 'colour'; the keys at the top level "
                                         "are: catalog, compression_level,")
    assert "is not a duration" in messages["max_age"]
    assert "not an age recipient" in messages["encrypt_to[1]"]
    assert messages["keep_last"] == "0 is out of range: 1 to 1000000"
    assert messages["s3.insecure_http"] == "must be true or false, not a string"
    assert messages["ssh.key"] == "'id_ed25519' is not an absolute path"
    assert messages["ssh.port"] == ("unknown key 'port'; the keys in [ssh] are: key, "
                                    "known_hosts, strict_host_keys")
    assert messages["rescue.after"] == "'halt' is not one of: poweroff, reboot, shell"
    assert "cannot hold quotes" in messages["rescue.kernel_args[1]"]
    assert messages["rescue.menu_timeout"] == "-2 is out of range: -1 to 86400"


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ('medium = "/srv\n', 1, "not valid TOML"),
        ('medium = "/a"\nmedium = "/b"\n', 2, "not valid TOML"),
        ("s3 = 1\n", 1, "must be a table ([s3]), not an integer"),
        ("exclude = \"/var/tmp\"\n", 1, "must be an array of strings, not a string"),
        ("exclude = [1]\n", 1, "must be a string, not an integer"),
        ("exclude = [\"\"]\n", 1, "must not be empty"),
        ('medium = "/srv/a\\u001b[2J"\n', 1, "holds control characters"),
        ("medium = 2026-12-07\n", 1, "must be a string, not a date or time"),
        ('medium = "/srv/description.toml"\n', 1, "a description file is not a medium"),
        ("max_age = 1.5\n", 1, "must be a string, or an integer of seconds, not a float"),
        ("\n\nx = " + "[" * 10 + "]" * 10 + "\n", 3, "nest more than 4 deep"),
        ("a.b.c.d = 1\n", 1, "more than 3 dotted parts"),
        ('[s3]\nregion = "EU West"\n', 2, "not a region name"),
        ('exclude_disks = ["sd b"]\n', 1, "not a disk"),
        ('[rescue]\nmodules = ["../evil"]\n', 2, "not a name"),
    ],
)
def test_each_kind_of_problem_has_its_line(text: str, line: int, message: str) -> None:
    (got,) = problems(text)
    assert got[0] == line
    assert message in got[2]


def test_not_text_and_too_large_are_refused_before_parsing() -> None:
    assert "invalid UTF-8" in config.check_bytes(b"medium = '\xff'", "f").messages()[0]
    assert "NUL" in config.check_bytes(b"medium = '/a'\0", "f").messages()[0]
    big = b"# " + b"x" * loader.MAX_BYTES
    assert "more than 1048576 bytes" in config.check_bytes(big, "f").messages()[0]


def test_valid_values_and_lines() -> None:
    checked = config.check_bytes(
        b'# nightly\nmedium = "sftp://backup@host/srv/sets"\nmax_age = 93600\n'
        b"[rescue]\nbuild = false\n", "f")
    assert checked.config is not None
    assert checked.config.values == {"medium": "sftp://backup@host/srv/sets",
                                     "max_age": 93600, "rescue.build": False}
    assert checked.config.lines == {"medium": 2, "max_age": 3, "rescue.build": 5}
    # Defaults for what the file does not set; None where the command decides.
    assert checked.config.get("compression_level") == 2
    assert checked.config.get("exclude") == ()
    assert checked.config.get("keep_last") is None


def write(path: Path, text: str, mode: int = 0o644) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def test_load_reads_the_chosen_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = write(tmp_path / "r.toml", 'medium = "/srv/sets"\n')
    monkeypatch.delenv(config.ENV_CONFIG, raising=False)
    assert config.load(str(f)).values == {"medium": "/srv/sets"}
    assert config.load(str(f)).path == f
    monkeypatch.setenv(config.ENV_CONFIG, str(f))
    assert config.load().values == {"medium": "/srv/sets"}
    monkeypatch.setenv(config.ENV_CONFIG, "")
    assert config.load() == config.Config()


def test_the_default_file_may_be_missing_a_named_one_not(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(config.ENV_CONFIG, raising=False)
    monkeypatch.setattr(loader, "DEFAULT_PATH", tmp_path / "none.toml")
    assert config.load() == config.Config()
    with pytest.raises(BadInput, match=r"none\.toml does not exist"):
        config.load(str(tmp_path / "none.toml"))
    monkeypatch.setenv(config.ENV_CONFIG, str(tmp_path / "none.toml"))
    with pytest.raises(BadInput, match="does not exist"):
        config.load()


def test_an_invalid_file_lists_its_problems(tmp_path: Path) -> None:
    f = write(tmp_path / "r.toml", 'medium = 1\n\nkeep_last = "3"\n')
    with pytest.raises(config.InvalidConfig) as e:
        config.load(str(f))
    assert str(e.value).startswith(f"{f} is not a valid configuration (2 problem(s))\n"
                                   f"  {f} (line 1): medium: must be a string, not an integer\n"
                                   f"  {f} (line 3): keep_last: must be an integer, not a string")


def test_what_is_not_a_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="is a directory"):
        config.load(str(tmp_path))
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(BadInput, match="not a regular file"):
        config.load(str(fifo))


def test_a_world_writable_file_is_refused(tmp_path: Path) -> None:
    f = write(tmp_path / "r.toml", 'medium = "/srv"\n', 0o646)
    with pytest.raises(BadInput, match="writable by every user"):
        config.load(str(f))


@pytest.mark.skipif(os.geteuid() != 0, reason="ownership checks apply when run as root")
def test_as_root_a_file_of_another_user_is_refused(tmp_path: Path) -> None:
    f = write(tmp_path / "r.toml", 'medium = "/srv"\n')
    os.chown(f, 1000, 0)
    with pytest.raises(BadInput, match="not owned by root"):
        config.load(str(f))
    os.chown(f, 0, 1000)
    f.chmod(0o664)
    with pytest.raises(BadInput, match="writable by its group"):
        config.load(str(f))
    f.chmod(0o644)
    assert config.load(str(f)).values == {"medium": "/srv"}
    d = tmp_path / "d"
    d.mkdir()
    g = write(d / "r.toml", 'medium = "/srv"\n')
    os.chown(d, 1000, 1000)
    with pytest.raises(BadInput, match="which another user than root can write to"):
        config.load(str(g))
    # A link in such a directory to a file of root's: the link could be pointed elsewhere.
    os.chown(d, 0, 0)
    e = tmp_path / "e"
    e.mkdir()
    (e / "link.toml").symlink_to(g)
    os.chown(e, 1000, 1000)
    with pytest.raises(BadInput, match=f"is in {e}, which another user"):
        config.load(str(e / "link.toml"))
    assert config.load(str(g)).values == {"medium": "/srv"}
