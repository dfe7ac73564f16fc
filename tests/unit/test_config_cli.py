"""The configuration file on the command line: --config, the keys as the options'
defaults (the command line wins, and adds to arrays), the medium made optional,
`config show` and `config check`."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest

from resurgo.cli import configured
from resurgo.cli.main import ArgumentParser
from resurgo.config import Config, check_bytes, loader
from tests.support import cli
from tests.support.configs import parsed


def conf(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "resurgo.toml"
    path.write_text(text)
    path.chmod(0o644)
    return path


def test_a_missing_config_file_is_an_error_the_default_one_not(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    proc = cli.run("--config", tmp_path / "none.toml", "list", tmp_path)
    assert proc.returncode == 2
    assert proc.stderr == f"resurgo: error: the configuration file {tmp_path}/none.toml " \
        "does not exist\n"
    # RESURGO_CONFIG unset: the default file, missing, is no error.
    monkeypatch.setattr(loader, "DEFAULT_PATH", tmp_path / "none.toml")
    proc = cli.run("list", tmp_path, env={"RESURGO_CONFIG": None})
    assert proc.returncode == 0, proc.stderr


def test_an_invalid_file_stops_every_command_with_all_its_problems(tmp_path: Path) -> None:
    f = conf(tmp_path, 'medium = 1\n\n[rescue]\nafter = "halt"\n')
    for argv in (["list", tmp_path], ["config", "show"], ["save", "--to", tmp_path]):
        proc = cli.run(*argv, "--config", f)
        assert proc.returncode == 2
        assert proc.stdout == ""
        assert f"{f} (line 1): medium: must be a string, not an integer" in proc.stderr
        assert f"{f} (line 4): rescue.after: 'halt' is not one of" in proc.stderr
        assert "Traceback" not in proc.stderr
    # --help still helps.
    assert cli.run("--config", f, "save", "--help").returncode == 0


def test_the_medium_of_the_file_fills_list_and_the_command_line_wins(tmp_path: Path) -> None:
    sets = tmp_path / "sets"
    sets.mkdir()
    f = conf(tmp_path, f'medium = "{sets}"\n')
    proc = cli.run("--config", f, "list")
    assert (proc.returncode, proc.stdout) == (0, f"no recovery sets on {sets}\n")
    proc = cli.run("--config", f, "list", tmp_path / "elsewhere")
    assert proc.returncode == 1
    assert f"the medium {tmp_path}/elsewhere does not exist" in proc.stderr


@pytest.mark.parametrize(
    ("argv", "needs"),
    [
        (["save"], "save needs a medium: give --to MEDIUM, or set medium in the "
         "configuration file"),
        (["list"], "list needs a medium: give MEDIUM, or"),
        (["plan"], "plan needs a medium: give --from SOURCE, or"),
        (["verify", "--root", "/"], "verify needs a medium: give --from SOURCE, or"),
    ],
)
def test_without_a_medium_one_clear_message(argv: list[str], needs: str) -> None:
    proc = cli.run(*argv)
    assert proc.returncode == 2
    assert f"resurgo: error: {needs}" in proc.stderr
    assert proc.stderr.startswith("usage: resurgo ")


def test_the_medium_fills_every_from_and_to() -> None:
    text = 'medium = "s3://bucket-1/sets"\n'
    assert parsed(text, "save").medium == "s3://bucket-1/sets"
    assert parsed(text, "list").medium == "s3://bucket-1/sets"
    assert parsed(text, "plan").source == "s3://bucket-1/sets"
    assert parsed(text, "recover", "--yes").source == "s3://bucket-1/sets"
    assert parsed(text, "verify", "--root", "/mnt").source == "s3://bucket-1/sets"
    assert parsed(text, "ls").source == "s3://bucket-1/sets"
    assert parsed(text, "restore", "--path", "/etc", "--to", "/tmp/x").source == \
        "s3://bucket-1/sets"
    assert parsed(text, "prune").source == "s3://bucket-1/sets"
    assert parsed(text, "rescue", "--to", "/r.iso").from_url == "s3://bucket-1/sets"
    # A description file on the command line, as before.
    assert parsed(text, "plan", "--from", "/tmp/d.toml").source == "/tmp/d.toml"
    assert parsed(text, "save", "--to", "/srv").medium == "/srv"


def test_options_override_the_file_and_arrays_add_to_it() -> None:
    text = """\
exclude = ["/var/tmp", "/srv/cache"]
exclude_disks = ["sdz"]
encrypt_to = ["age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"]
sign_key = "/etc/resurgo/key"
compression_level = 5
catalog = false
[rescue]
build = false
"""
    args = parsed(text, "save", "--to", "/srv/sets")
    assert args.exclude == ["/var/tmp", "/srv/cache"]
    assert args.exclude_disk == ["sdz"]
    assert args.encrypt_to == ["age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"]
    # A string default goes through the option's type, as the command line does.
    assert args.sign_key == Path("/etc/resurgo/key")
    assert (args.compression_level, args.no_catalog, args.no_rescue) == (5, True, True)
    args = parsed(text, "save", "--to", "/srv/sets", "--exclude", "/home/tmp",
                  "--compression-level", "9", "--sign-key", "/root/other")
    assert args.exclude == ["/var/tmp", "/srv/cache", "/home/tmp"]
    assert args.compression_level == 9
    assert args.sign_key == Path("/root/other")
    # describe describes what save saves.
    args = parsed(text, "describe")
    assert (args.exclude_disk, args.no_catalog) == (["sdz"], True)


def test_a_key_of_one_command_leaves_the_others_alone() -> None:
    text = 'root = "/mnt/snapshot"\n'
    assert parsed(text, "save", "--to", "/s").root == Path("/mnt/snapshot")
    assert parsed(text, "describe").root == Path("/mnt/snapshot")
    # Where recover mounts what it recreates, and verify reads it, is another root.
    assert parsed(text, "recover", "--from", "/s").root == "/mnt/resurgo"
    assert parsed(text, "verify", "--from", "/s", "--root", "/mnt").root == Path("/mnt")
    text = "compression_level = 4\n[rescue]\ncompression_level = 15\nmenu_timeout = -1\n" \
        'kernel_args = ["ip=dhcp"]\nafter = "reboot"\nunattended = true\n'
    assert parsed(text, "save", "--to", "/s").compression_level == 4
    args = parsed(text, "rescue", "--to", "/r.iso", "--kernel-arg", "console=ttyS0")
    assert args.compression_level == 15
    assert (args.menu_timeout, args.after, args.unattended) == (-1, "reboot", True)
    assert args.kernel_arg == ["ip=dhcp", "console=ttyS0"]


def test_medium_options_reach_every_command_that_has_them() -> None:
    text = """\
trust = "/etc/resurgo/signers"
identity = "/media/keys/id.txt"
[s3]
endpoint = "http://127.0.0.1:8333"
region = "eu-west-1"
insecure_http = true
[ssh]
key = "/root/.ssh/id_ed25519"
known_hosts = "/etc/resurgo/known_hosts"
strict_host_keys = true
"""
    for argv in (["save", "--to", "/s"], ["list", "/s"], ["plan"], ["verify", "--root", "/"]):
        args = parsed(text, *argv)
        assert (args.s3_endpoint, args.s3_region, args.s3_insecure_http) == (
            "http://127.0.0.1:8333", "eu-west-1", True), argv
        assert (args.ssh_key, args.ssh_known_hosts, args.ssh_strict_host_keys) == (
            "/root/.ssh/id_ed25519", "/etc/resurgo/known_hosts", True), argv
        assert args.trust == "/etc/resurgo/signers", argv
    assert parsed(text, "verify", "--root", "/").identity == Path("/media/keys/id.txt")
    args = parsed(text, "rescue", "--to", "/r.iso")
    assert (args.trust, args.ssh_known_hosts) == (
        Path("/etc/resurgo/signers"), Path("/etc/resurgo/known_hosts"))


def test_a_command_added_later_takes_the_keys_by_its_options_dests() -> None:
    """What status, check, prune and others get without code of their own."""
    parser = ArgumentParser(prog="resurgo")
    sub = parser.add_subparsers(dest="command", parser_class=ArgumentParser)
    status = sub.add_parser("status")
    status.add_argument("--from", dest="source", required=True)
    status.add_argument("--max-age", type=lambda s: f"parsed {s}")
    status.add_argument("--exclude-disk", action="append", default=[])
    prune = sub.add_parser("prune")
    prune.add_argument("--from", dest="source", required=True)
    for n in ("last", "daily", "weekly", "monthly"):
        prune.add_argument(f"--keep-{n}", type=int)
    checked = check_bytes(b'medium = "/srv/sets"\nmax_age = 93600\nkeep_daily = 7\n'
                          b'keep_monthly = 6\nexclude_disks = ["sdz"]\n', "f")
    assert checked.config is not None
    applied = configured.apply(parser, checked.config)
    args = parser.parse_args(["status"])
    assert (args.source, args.max_age, args.exclude_disk) == (
        "/srv/sets", "parsed 93600", ["sdz"])
    args = parser.parse_args(["prune", "--keep-last", "2"])
    assert (args.source, args.keep_last, args.keep_daily, args.keep_weekly,
            args.keep_monthly) == ("/srv/sets", 2, 7, None, 6)
    assert applied.missing_medium("prune", args) is None
    # Without a medium in the file, the same one message as save's.
    parser = ArgumentParser(prog="resurgo")
    sub = parser.add_subparsers(dest="command", parser_class=ArgumentParser)
    sub.add_parser("status").add_argument("--from", dest="source", required=True,
                                          metavar="MEDIUM")
    applied = configured.apply(parser, Config())
    assert applied.missing_medium("status", parser.parse_args(["status"])) == (
        "status needs a medium: give --from MEDIUM, or set medium in the configuration "
        "file (see docs/config.md)")


def test_config_show_says_where_each_value_came_from(tmp_path: Path) -> None:
    f = conf(tmp_path, '# nightly\nmedium = "/srv/sets"\nexclude = ["/var/tmp"]\n'
             "keep_daily = 7\n[rescue]\nbuild = false\n")
    proc = cli.run("--config", f, "config", "show")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == f"# configuration file: {f}"
    assert f'medium = "/srv/sets"  # {f}:2' in lines
    assert f'exclude = ["/var/tmp"]  # {f}:3' in lines
    assert "compression_level = 2  # default" in lines
    assert "# sign_key: not set  # default" in lines
    assert f"build = false  # {f}:6" in lines
    # It is TOML, and a valid configuration: what it shows can be kept as a file.
    data = tomllib.loads(proc.stdout)
    assert data["medium"] == "/srv/sets"
    assert data["rescue"]["build"] is False
    assert check_bytes(proc.stdout.encode(), "shown").messages() == []
    proc = cli.run("--config", f, "config", "show", "--json")
    shown = proc.json()
    assert shown["file"] == str(f)
    assert shown["values"]["medium"] == "/srv/sets"
    assert shown["values"]["rescue"]["build"] is False
    assert shown["origins"]["keep_daily"] == f"{f}:4"
    assert shown["origins"]["catalog"] == "default"
    assert shown["values"] == data


def test_config_show_of_a_command_merges_its_command_line(tmp_path: Path) -> None:
    f = conf(tmp_path, 'medium = "/srv/sets"\nexclude = ["/var/tmp"]\ncompression_level = 5\n')
    proc = cli.run("--config", f, "config", "show", "save", "--exclude", "/srv/cache",
                   "--compression-level", "7", "--no-catalog")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[1] == ("# the settings of: resurgo save --exclude /srv/cache "
                        "--compression-level 7 --no-catalog")
    assert f'medium = "/srv/sets"  # {f}:1' in lines
    assert f'exclude = ["/var/tmp", "/srv/cache"]  # {f}:2 + command line' in lines
    assert "compression_level = 7  # command line" in lines
    assert "catalog = false  # command line" in lines
    assert "build = true  # default" in lines
    # Only save's keys.
    assert "after" not in proc.stdout and "max_age" not in proc.stdout
    shown = cli.run("--config", f, "config", "show", "--json", "list", "/elsewhere").json()
    assert shown["command"] == ["list", "/elsewhere"]
    assert shown["values"]["medium"] == "/elsewhere"
    assert shown["origins"]["medium"] == "command line"
    proc = cli.run("--config", f, "config", "show", "save", "--compression-level", "x")
    assert proc.returncode == 2
    assert "invalid int value: 'x'" in proc.stderr


def test_config_check(tmp_path: Path) -> None:
    good = conf(tmp_path, 'medium = "/srv/sets"\nkeep_last = 3\n')
    proc = cli.run("config", "check", good)
    assert (proc.returncode, proc.stdout) == (0, f"{good}: valid configuration (2 key(s) "
                                                 "set)\n")
    bad = tmp_path / "bad.toml"
    bad.write_text('medium = "/srv/sets"\nkeep_last = 0\n[ssh]\nkey = "id"\n')
    # The file of this run, not valid: config check still reports it, all of it.
    proc = cli.run("--config", bad, "config", "check")
    assert proc.returncode == 2
    assert proc.stdout == (
        f"{bad} is not a valid configuration (2 problem(s))\n"
        f"  {bad} (line 2): keep_last: 0 is out of range: 1 to 1000000\n"
        f"  {bad} (line 4): ssh.key: 'id' is not an absolute path\n")
    data = cli.run("config", "check", "--json", bad).json()
    assert data["valid"] is False
    assert data["problems"][1] == {"line": 4, "key": "ssh.key",
                                   "message": "'id' is not an absolute path"}
    proc = cli.run("config", "check", tmp_path / "none.toml")
    assert proc.returncode == 2
    assert "does not exist" in proc.stderr
    proc = cli.run("config", "check")
    assert proc.returncode == 0
    assert proc.stdout.startswith("no configuration file ($RESURGO_CONFIG is empty)")


def test_the_environment_names_the_file(tmp_path: Path) -> None:
    f = conf(tmp_path, 'medium = "/srv/sets"\n')
    shown = cli.run("config", "show", "--json", env={"RESURGO_CONFIG": str(f)}).json()
    assert shown["values"]["medium"] == "/srv/sets"
    # --config wins over it.
    g = tmp_path / "other.toml"
    g.write_text('medium = "/srv/other"\n')
    shown = cli.run("--config", g, "config", "show", "--json",
                    env={"RESURGO_CONFIG": str(f)}).json()
    assert shown["values"]["medium"] == "/srv/other"


def test_retention_reaches_save_and_prune() -> None:
    text = 'medium = "/srv/sets"\nkeep_last = 3\nkeep_daily = 7\nkeep_monthly = 6\n'
    for argv in (["save"], ["prune"]):
        args = parsed(text, *argv)
        assert (args.keep_last, args.keep_daily, args.keep_weekly, args.keep_monthly) == (
            3, 7, None, 6), argv
    args = parsed(text, "prune", "--from", "/srv/other", "--keep-daily", "2")
    assert (args.source, args.keep_last, args.keep_daily) == ("/srv/other", 3, 2)
    assert parsed(text, "prune").source == "/srv/sets"


def test_the_rescue_table_shapes_the_image_save_builds() -> None:
    from resurgo.cli import save
    from resurgo.recovery.save import RescueChoices, image_options
    from resurgo.rescue import After

    text = ('medium = "/srv/sets"\n[rescue]\nunattended = true\nafter = "reboot"\n'
            'kernel_args = ["ip=dhcp"]\nmenu_timeout = 0\nmodules = ["ixgbe"]\n'
            'programs = ["ethtool"]\ncompression_level = 12\n')
    checked = check_bytes(text.encode(), "f")
    assert checked.config is not None
    choices = save.rescue_choices(checked.config)
    assert choices == RescueChoices(unattended=True, after="reboot", kernel_args=("ip=dhcp",),
                                    menu_timeout=0, modules=("ixgbe",), programs=("ethtool",),
                                    compression_level=12)
    image = image_options(choices)
    assert (image.unattended, image.after, image.kernel_args, image.menu_timeout,
            image.extra_modules, image.extra_programs, image.compression_level) == (
        True, After.REBOOT, ("ip=dhcp",), 0, ("ixgbe",), ("ethtool",), 12)
    # Without a file: the image as save always built it.
    assert save.rescue_choices(Config()) == RescueChoices()
    plain = image_options(RescueChoices())
    assert (plain.unattended, plain.after, plain.menu_timeout) == (False, After.POWEROFF, 5)
    args = parsed(text, "save")
    args.configuration = checked.config
    if os.geteuid() == 0:  # save's options are made for root alone
        assert save.options(args).image == choices
