"""The rescue image's pure parts: the kernel command line, what goes into the image, the
cpio writer, ELF needs, choosing the recovery set, the boot menu."""

from __future__ import annotations

import _ssl
import ast
import io
import json
import stat
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import blake3
import pytest
import tomli_w
import zstandard
from hypothesis import given
from hypothesis import strategies as st

import resurgo
from resurgo import run
from resurgo.engine import _plainfiles, _plainsave
from resurgo.errors import PreconditionFailed, ToolMissing
from resurgo.rescue import (
    build,
    cmdline,
    contents,
    cpio,
    elf,
    iso,
    kernel,
    locate,
    python,
    system,
)
from resurgo.rescue import keys as rkeys
from resurgo.rescue.access import Access
from resurgo.rescue.agent import recover_argv
from resurgo.rescue.cmdline import After, Dhcp, Embedded, MediumUrl, Mode, OnDevice, StaticIp
from resurgo.rescue.layout import SITE_DIR

# ----------------------------------------------------------------- the kernel command line


def test_split_like_the_kernel() -> None:
    # GRUB quotes a whole argument holding spaces; a person quotes the value.
    assert cmdline.split('a "resurgo.args=--map x=y" b') == ["a", "resurgo.args=--map x=y", "b"]
    assert cmdline.split('resurgo.args="--map x=y"  c') == ["resurgo.args=--map x=y", "c"]
    assert cmdline.split("  one\ttwo\n") == ["one", "two"]
    assert cmdline.split('empty="" x') == ["empty=", "x"]
    assert cmdline.split('""') == [""]
    assert cmdline.split("") == []


def test_parse_the_unattended_run() -> None:
    text = (
        "BOOT_IMAGE=/boot/vmlinuz console=ttyS0,115200 console=tty0 resurgo.recover=auto "
        '"resurgo.args=--target /dev/vdb --map disk.sda=/dev/vdb" resurgo.after=poweroff '
        "resurgo.from=LABEL=backup:/sets/db1 resurgo.wait=30 quiet\n"
    )
    a = cmdline.parse(text)
    assert a.recover is Mode.AUTO
    assert a.after is After.POWEROFF
    assert a.args == ("--target", "/dev/vdb", "--map", "disk.sda=/dev/vdb")
    assert a.source == OnDevice("LABEL=backup", "/sets/db1")
    assert a.wait == 30.0
    assert a.problems == ()


def test_defaults_are_a_shell_and_nothing_else() -> None:
    a = cmdline.parse("BOOT_IMAGE=/boot/vmlinuz console=tty0")
    assert a == cmdline.RescueArgs()
    assert a.recover is Mode.OFF and a.after is After.SHELL and a.source is None


def test_args_add_up_and_keep_shell_quoting() -> None:
    a = cmdline.parse(
        "resurgo.args=--layout-only \"resurgo.args=--map 'disk.sda=/dev/disk/by-id/a b'\""
    )
    assert a.args == ("--layout-only", "--map", "disk.sda=/dev/disk/by-id/a b")


def test_bad_values_are_problems_never_guesses() -> None:
    a = cmdline.parse(
        "resurgo.recover=yes resurgo.after=halt resurgo.from=nowhere resurgo.wait=-1 "
        '"resurgo.args=--map \'unclosed" resurgo.form=/x ip=1.2.3:x nameserver=dns'
    )
    assert a.recover is Mode.OFF and a.after is After.SHELL and a.source is None
    joined = "\n".join(a.problems)
    for word in (
        "resurgo.recover=yes",
        "resurgo.after=halt",
        "resurgo.from=nowhere",
        "resurgo.wait=-1",
        "resurgo.args=",
        "resurgo.form: unknown option",
        "ip=1.2.3:x",
        "nameserver=dns",
    ):
        assert word in joined, word
    assert len(a.problems) == 8


def test_other_words_are_ignored() -> None:
    assert cmdline.parse("resurgo.test=keep root=/dev/sda1 ro single").problems == ()


@pytest.mark.parametrize(
    ("value", "source"),
    [
        ("embedded", Embedded()),
        ("/mnt/usb/sets", MediumUrl("/mnt/usb/sets")),
        ("sftp://backup@10.0.0.5/srv/sets", MediumUrl("sftp://backup@10.0.0.5/srv/sets")),
        ("s3://bucket/host1", MediumUrl("s3://bucket/host1")),
        ("/dev/sdb1", OnDevice("/dev/sdb1")),
        ("/dev/sdb1:/resurgo", OnDevice("/dev/sdb1", "/resurgo")),
        ("UUID=1234-ABCD", OnDevice("UUID=1234-ABCD")),
        ("PARTUUID=5e5c0e00-01:/x/y", OnDevice("PARTUUID=5e5c0e00-01", "/x/y")),
    ],
)
def test_sources(value: str, source: cmdline.Source) -> None:
    assert cmdline.parse_source(value) == source


@pytest.mark.parametrize("value", ["", "relative/dir", "LABEL=", "LABEL=x:relative"])
def test_bad_sources(value: str) -> None:
    with pytest.raises(ValueError):
        cmdline.parse_source(value)


def test_key_medium_is_a_filesystem() -> None:
    a = cmdline.parse('resurgo.recover=auto resurgo.keys=LABEL=KEYS:/luks "resurgo.args=--yes"')
    assert a.keys == OnDevice("LABEL=KEYS", "/luks") and a.problems == ()
    assert cmdline.parse("resurgo.keys=/dev/sdc1").keys == OnDevice("/dev/sdc1")
    assert cmdline.parse("").keys is None
    # A directory or a URL is not a medium the agent mounts: a problem, no guess.
    for bad in ("/root/keys", "sftp://h/keys", "LABEL="):
        a = cmdline.parse(f"resurgo.recover=auto resurgo.keys={bad}")
        assert a.keys is None and len(a.problems) == 1, bad
        assert a.problems[0].startswith(f"resurgo.keys={bad}: "), a.problems


def test_key_files_by_volume_id_or_luks_uuid() -> None:
    vols = [
        rkeys.Volume("luks.md127", "5d0c7e1a-2b3c-4d5e-8f90-a1b2c3d4e5f6"),
        rkeys.Volume("luks.sda3", "6e1d8f2b-3c4d-4e5f-9a01-b2c3d4e5f6a7"),
        rkeys.Volume("luks.sdb1", "7f2e9a3c-4d5e-4f60-8b12-c3d4e5f6a7b8"),
    ]
    names = [
        "luks.md127.key",
        "luks.md127",  # the .key name is preferred
        "6e1d8f2b-3c4d-4e5f-9a01-b2c3d4e5f6a7",
        "luks.other.key",  # another machine's: not ours, not passed
    ]
    argv, lines = rkeys.key_file_args(vols, names, Path("/run/resurgo/keys/k"), ["--yes"])
    assert argv == [
        "--key-file",
        "luks.md127=/run/resurgo/keys/k/luks.md127.key",
        "--key-file",
        "luks.sda3=/run/resurgo/keys/k/6e1d8f2b-3c4d-4e5f-9a01-b2c3d4e5f6a7",
    ]
    assert lines[:2] == [
        "luks.md127: key file /run/resurgo/keys/k/luks.md127.key",
        "luks.sda3: key file /run/resurgo/keys/k/6e1d8f2b-3c4d-4e5f-9a01-b2c3d4e5f6a7",
    ]
    assert lines[2].startswith("luks.sdb1: no key file in /run/resurgo/keys/k (looked for ")
    assert "7f2e9a3c-4d5e-4f60-8b12-c3d4e5f6a7b8.key" in lines[2]


def test_key_files_as_the_saved_crypttab_names_them() -> None:
    # The stick the system unlocks its root with at boot (passdev) serves the rescue too.
    crypttab = (
        "# <target> <source> <key> <options>\n"
        "cryptroot UUID=5D0C7E1A-2b3c-4d5e-8f90-a1b2c3d4e5f6 "
        "/dev/disk/by-label/KEYS:/keys/root.key:30 luks,keyscript=passdev\n"
        "cryptdata /dev/md1 /etc/keys/data.key luks\n"
        'cryptquoted UUID="7f2e9a3c-4d5e-4f60-8b12-c3d4e5f6a7b8" /etc/keys/q.key luks\n'
        "cryptswap /dev/sda2 /dev/urandom swap\n"
        "cryptask UUID=11111111-2222-4333-8444-555555555555 none luks\n"
        "cryptdot UUID=22222222-2222-4333-8444-555555555555 /etc/keys/.. luks\n"
        "short /dev/sdz\n"
    )
    named = rkeys.crypttab_keys(crypttab)
    assert named == {
        "cryptroot": "root.key",
        "5d0c7e1a-2b3c-4d5e-8f90-a1b2c3d4e5f6": "root.key",
        "cryptdata": "data.key",
        "cryptquoted": "q.key",
        "7f2e9a3c-4d5e-4f60-8b12-c3d4e5f6a7b8": "q.key",
    }
    root = rkeys.Volume("luks.md127", "5d0c7e1a-2b3c-4d5e-8f90-a1b2c3d4e5f6",
                        rkeys.crypttab_key(named, None, "5D0C7E1A-2B3C-4D5E-8F90-A1B2C3D4E5F6"))
    data = rkeys.Volume("luks.md1", "6e1d8f2b-3c4d-4e5f-9a01-b2c3d4e5f6a7",
                        rkeys.crypttab_key(named, "cryptdata", "6e1d8f2b"))
    assert root.crypttab_key == "root.key" and data.crypttab_key == "data.key"
    assert rkeys.file_names(root)[-1] == "root.key"
    # The names resurgo gives come first; the crypttab's only when it is on the medium.
    argv, lines = rkeys.key_file_args([root, data], ["root.key", "luks.md1.key", "data.key"],
                                      Path("/k"), [])
    assert argv == ["--key-file", "luks.md127=/k/root.key",
                    "--key-file", "luks.md1=/k/luks.md1.key"]
    assert lines == ["luks.md127: key file /k/root.key", "luks.md1: key file /k/luks.md1.key"]
    # A crypttab whose key field climbs out of the directory yields its base name alone.
    assert rkeys.crypttab_keys("c UUID=1-2 /dev/sdb1:/../../etc/shadow luks\n") == {
        "c": "shadow", "1-2": "shadow"}


def test_a_key_file_in_resurgo_args_wins() -> None:
    vols = [rkeys.Volume("luks.md127", "u1"), rkeys.Volume("luks.sda3", "u2")]
    given = ["--key-file", "luks.md127=/x", "--key-file=luks.sda3=/y", "--key-file", "bad"]
    assert rkeys.given(given) == {"luks.md127", "luks.sda3"}
    argv, lines = rkeys.key_file_args(vols, ["luks.md127.key", "u2"], Path("/k"), given)
    assert argv == []
    assert lines == [
        "luks.md127: its key file is given in resurgo.args",
        "luks.sda3: its key file is given in resurgo.args",
    ]
    assert rkeys.given(["--key-file"]) == set()


def test_the_key_mediums_age_identity_unless_resurgo_args_gives_one() -> None:
    where = Path("/run/resurgo/keys/k")
    argv, lines = rkeys.identity_args(["luks.md127.key", "age-identity"], where, ["--yes"])
    assert argv == ["--identity", "/run/resurgo/keys/k/age-identity"]
    assert lines == ["age identity: /run/resurgo/keys/k/age-identity"]
    # None there: nothing said (a set in clear needs none; recover says so of another).
    assert rkeys.identity_args(["age.key", "identity"], where, []) == ([], [])
    for given_args in (["--identity", "/mnt/x"], ["--identity=/mnt/x"]):
        assert rkeys.identity_args(["age-identity"], where, given_args) == (
            [], ["age identity: given in resurgo.args"])


def test_the_agent_hands_recover_the_key_mediums_age_identity(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from resurgo.rescue import agent as rescue_agent
    from tests.support.examples import example_text

    keys_dir = tmp_path / "keys"
    keys_dir.mkdir()
    (keys_dir / "age-identity").write_text("AGE-SECRET-KEY-1EXAMPLE\n")
    desc = tmp_path / "description.toml"
    desc.write_text(example_text())
    cand = pinned("20261101T000000Z-0001", "db1", 1, "p" * 64, "admin")

    def chosen(words: str) -> tuple[list[str], list[str], str]:
        out = io.StringIO()
        agent = rescue_agent.Agent(rescue_agent.Console([out]), rescue_agent.Config(),
                                   cmdline.parse(f"resurgo.recover=auto resurgo.keys=LABEL=K "
                                                 f"resurgo.set={cand.set_id} {words}"))
        monkeypatch.setattr(agent, "candidates", lambda: [cand])
        monkeypatch.setattr(agent, "not_on_saved_disks", lambda cands: cands)
        monkeypatch.setattr(agent, "description_of", lambda _choice: desc)
        agent.keys_dir = keys_dir  # as mounted from LABEL=K
        got = agent.choose()
        assert not isinstance(got, int), out.getvalue()
        choice, _desc, extra = got
        return extra, recover_argv(Mode.AUTO, choice, desc, extra), out.getvalue()

    monkeypatch.setattr(rescue_agent, "trust", lambda: object())
    extra, argv, said = chosen("")
    assert extra == ["--identity", f"{keys_dir}/age-identity"]
    assert argv[-2:] == extra and argv[:2] == ["recover", "--from"]
    assert f"age identity: {keys_dir}/age-identity" in said
    assert "AGE-SECRET-KEY" not in said
    # resurgo.args's own --identity wins.
    extra, argv, said = chosen('"resurgo.args=--identity /mnt/age.txt"')
    assert extra == ["--identity", "/mnt/age.txt"]
    assert "age identity: given in resurgo.args" in said


def test_network() -> None:
    a = cmdline.parse(
        "ip=10.0.2.15::10.0.2.2:255.255.255.0:rescue:eth0:none:10.0.2.3 ip=eth1:dhcp "
        "nameserver=9.9.9.9 nameserver=10.0.2.3"
    )
    assert a.network == (
        StaticIp("10.0.2.15", 24, "10.0.2.2", "eth0", "rescue", ("10.0.2.3",)),
        Dhcp("eth1"),
    )
    assert a.nameservers == ("10.0.2.3", "9.9.9.9")
    assert cmdline.parse("ip=dhcp").network == (Dhcp(),)
    assert cmdline.parse("ip=192.168.1.9::::::none").network[0] == StaticIp(
        "192.168.1.9", 24, None, None, None
    )
    assert system.static_commands(a.network[0], "eth0") == [  # type: ignore[arg-type]
        ["ip", "link", "set", "eth0", "up"],
        ["ip", "addr", "add", "10.0.2.15/24", "dev", "eth0"],
        ["ip", "route", "add", "default", "via", "10.0.2.2", "dev", "eth0"],
    ]
    assert system.resolv_conf(a.nameservers) == "nameserver 10.0.2.3\nnameserver 9.9.9.9\n"


def test_dhcp_client_is_whatever_the_image_has() -> None:
    assert system.dhcp_command("eth0", {"dhclient": "/sbin/dhclient"}.get) == [
        "dhclient",
        "-1",
        "-4",
        "eth0",
    ]
    assert system.dhcp_command("eth0", {"dhcpcd": "/sbin/dhcpcd"}.get)[0] == "dhcpcd"  # type: ignore[index]
    assert system.dhcp_command("eth0", {}.get) is None


words = st.text(
    alphabet=st.characters(blacklist_characters="\"'", blacklist_categories=("Cs", "Cc", "Zs")),
    min_size=1,
)


@given(st.lists(st.builds(lambda k, v: f"resurgo.args={k} {v}", words, words), max_size=4))
def test_an_argument_survives_grub_and_the_kernel(args: list[str]) -> None:
    """What the builder writes into grub.cfg comes back whole from /proc/cmdline: GRUB
    drops its single quotes and double-quotes an argument holding spaces."""
    cfg_words = [cmdline.grub_quote(a) for a in args]
    proc_cmdline = " ".join(f'"{w[1:-1]}"' if w.startswith("'") else w for w in cfg_words)
    assert cmdline.split(proc_cmdline) == args


def test_grub_quote_refuses_quotes() -> None:
    assert cmdline.grub_quote("resurgo.recover=auto") == "resurgo.recover=auto"
    assert cmdline.grub_quote("resurgo.args=--map a=b") == "'resurgo.args=--map a=b'"
    with pytest.raises(ValueError):
        cmdline.grub_quote("resurgo.args='x'")


# ----------------------------------------------------------------- the boot menu


def test_boot_menu() -> None:
    entries = iso.boot_entries(unattended=False, after=After.REBOOT, extra_args=("ip=dhcp",))
    assert [e.id for e in entries] == ["shell", "recover", "plan", "ask"]
    assert "resurgo.recover=ask" in entries[3].args
    recover = entries[1]
    assert recover.args == (
        "console=ttyS0,115200",
        "console=tty0",
        "resurgo.recover=auto",
        "resurgo.after=reboot",
        "ip=dhcp",
    )
    unattended = iso.boot_entries(unattended=True, after=After.POWEROFF)
    assert unattended[0].id == "recover"
    cfg = iso.grub_cfg(unattended, timeout=10, label="test")
    assert "set timeout=10\nset default=0\n" in cfg
    assert cfg.count("menuentry ") == 4
    assert cfg.count("initrd /boot/initrd.img") == 4
    first = cfg.split("menuentry ")[1]
    assert "linux /boot/vmlinuz console=ttyS0,115200 console=tty0 resurgo.recover=auto" in first
    assert (
        "'resurgo: RECOVER this machine unattended (erases the target disks)' --id recover" in first
    )


# ----------------------------------------------------------------- contents


def test_every_program_resurgo_runs_is_in_the_rescue() -> None:
    """A program added to run.PACKAGES must be carried (or named as not needed)."""
    names = set(contents.program_names())
    missing = set(run.PACKAGES) - names - contents.NOT_IN_RESCUE
    assert not missing, f"add to rescue.contents.PROGRAMS: {sorted(missing)}"
    for p in contents.PROGRAMS:
        if p.name in run.PACKAGES:
            assert p.package == run.PACKAGES[p.name], p.name
    assert len(names) == len(contents.PROGRAMS), "a program is listed twice"


def _programs_run_in(source: Path) -> dict[str, set[str]]:
    """Programs named as literals where resurgo runs them: run.run(["prog", ...]),
    run.output/spawn likewise, run.require("prog", ...), run.which("prog")."""
    found: dict[str, set[str]] = {}
    for f in sorted(source.rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "run"
            ):
                continue
            names: list[str] = []
            if node.func.attr in ("require", "which"):
                names = [a.value for a in node.args if isinstance(a, ast.Constant)]
            elif node.func.attr in ("run", "output", "spawn") and node.args:
                argv = node.args[0]
                if isinstance(argv, ast.List) and argv.elts:
                    first = argv.elts[0]
                    if isinstance(first, ast.Constant):
                        names = [first.value]
            for name in names:
                if isinstance(name, str):
                    found.setdefault(name, set()).add(str(f.relative_to(source)))
    return found


def test_every_program_the_code_runs_is_in_the_rescue() -> None:
    import resurgo

    source = Path(resurgo.__file__).parent
    found = _programs_run_in(source)
    assert "sfdisk" in found and "unshare" in found  # the scan sees them
    names = set(contents.program_names())
    missing = {
        n: sorted(where)
        for n, where in found.items()
        if n not in names and n not in contents.NOT_IN_RESCUE and where != {"demo.py"}
    }
    assert not missing, f"add to rescue.contents.PROGRAMS: {missing}"


def test_required_programs() -> None:
    required = {p.name for p in contents.PROGRAMS if p.need is contents.Need.REQUIRED}
    # What /init and the agent run before anything else.
    assert {"bash", "mount", "modprobe", "setsid", "blkid", "mkdir", "ln", "cat"} <= required


def test_choose_modules() -> None:
    choice = contents.choose_modules(
        ["virtio-blk", "ext4", "nvme", "virtio_blk", "sd_mod", "no_such"],
        available=["virtio_blk", "ext4", "nvme"],
        builtin=["sd-mod"],
    )
    assert choice.modules == ("virtio_blk", "ext4", "nvme")
    assert choice.builtin == ("sd_mod",)
    assert choice.unknown == ("no_such",)


def test_common_modules_cover_the_issue() -> None:
    for m in (
        "virtio_blk",
        "virtio_scsi",
        "virtio_net",
        "nvme",
        "ahci",
        "sd_mod",
        "usb_storage",
        "uas",
        "e1000",
        "e1000e",
        "igb",
        "ixgbe",
        "ext4",
        "xfs",
        "btrfs",
        "vfat",
        "nls_ascii",  # an ESP on a Debian kernel (iocharset=ascii by default)
        "md_mod",
        "raid1",
        "raid456",
        "dm_mod",
        "dm_crypt",
        "dm_thin_pool",
    ):
        assert m in contents.COMMON_MODULES, m


def test_firmware_of_present_devices_only() -> None:
    deps = {"bnx2x": ("mdio", "libcrc32c"), "mdio": ()}
    fw = {"bnx2x": ("bnx2x/a.fw", "bnx2x/b.fw"), "tg3": ("tigon/tg3.bin",), "mdio": ()}
    assert contents.firmware_of(["bnx2x"], deps, fw) == ["bnx2x/a.fw", "bnx2x/b.fw"]
    assert contents.firmware_of([], deps, fw) == []


@pytest.mark.parametrize(
    ("path", "kept"),
    [
        ("os.py", True),
        ("encodings/utf_8.py", True),
        ("__pycache__/os.cpython-311.pyc", True),
        ("__pycache__/os.cpython-311.opt-1.pyc", False),
        ("__pycache__/os.cpython-312.pyc", False),
        ("json/__pycache__/decoder.cpython-311.pyc", True),
        ("test/test_os.py", False),
        ("unittest/test/test_case.py", False),
        ("idlelib/idle.py", False),
        ("tkinter/__init__.py", False),
        ("ensurepip/__init__.py", False),
        ("lib2to3/main.py", False),
        ("pydoc_data/topics.py", False),
        ("turtle.py", False),
        ("__pycache__/turtle.cpython-311.pyc", False),
        ("sitecustomize.py", False),
        ("config-3.11-x86_64-linux-gnu/Makefile", False),
        ("lib-dynload/_ssl.cpython-311-x86_64-linux-gnu.so", False),
        ("site-packages/foo.py", False),
        ("wsgiref/README", False),
    ],
)
def test_stdlib_selection(path: str, kept: bool) -> None:
    assert contents.keep_stdlib_file(path, "cpython-311", pycache=True) is kept


def test_stdlib_without_bytecode() -> None:
    assert not contents.keep_stdlib_file(
        "__pycache__/os.cpython-311.pyc", "cpython-311", pycache=False
    )


def test_extension_modules() -> None:
    assert contents.keep_dynload("_ssl.cpython-311-x86_64-linux-gnu.so")
    assert not contents.keep_dynload("_testcapi.cpython-311-x86_64-linux-gnu.so")
    assert not contents.keep_dynload("_tkinter.cpython-311-x86_64-linux-gnu.so")
    assert not contents.keep_dynload("README")


def test_this_python_is_found_with_its_stdlib() -> None:
    py = python.find_python(Path("/"))
    assert py.version == sys.version_info[:2]
    assert any(Path(d, "os.py").is_file() for d in py.stdlib)
    files = dict(python.stdlib_files(py))
    assert any(p.endswith("/os.py") for p in files)
    assert not any("/test/" in p or "/idlelib/" in p for p in files)


def test_compiled_bytecode_runs() -> None:
    py = python.find_python(Path("/"))
    code = python.compile_for(py, b"X = 6 * 7\n", "/usr/lib/resurgo/python/m.py")
    assert code is not None
    import importlib.util
    import marshal

    assert code[:4] == importlib.util.MAGIC_NUMBER
    assert int.from_bytes(code[4:8], "little") == 0b01  # hash-based, unchecked
    ns: dict[str, object] = {}
    exec(marshal.loads(code[16:]), ns)
    assert ns["X"] == 42


# ----------------------------------------------------------------- packages with extension modules

BLAKE3_SO = (
    Path(blake3.__file__).parent / f"blake3.{sys.implementation.cache_tag}-x86_64-linux-gnu.so"
)
PLAINFILES_SO = Path(_plainfiles.__file__)
ZSTANDARD_SO = Path(zstandard.__file__).parent / (
    f"backend_c.{sys.implementation.cache_tag}-x86_64-linux-gnu.so")
ABC = "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"


def test_the_rescue_carries_resurgo_and_what_it_imports() -> None:
    assert [m.__name__ for m in build.carried_packages()] == ["resurgo", "tomli_w", "blake3",
                                                               "zstandard"]
    assert blake3.blake3(b"abc").hexdigest() == ABC


def test_zstandard_goes_in_with_its_c_backend_only() -> None:
    """python-zstandard's C backend is what it imports; its cffi backend (which would need
    cffi) stays out."""
    files = dict(python.package_files(zstandard))
    assert files["zstandard/__init__.py"] == Path(zstandard.__file__)
    assert files[f"zstandard/{ZSTANDARD_SO.name}"] == ZSTANDARD_SO
    assert not [rel for rel in files if "cffi" in rel]
    assert zstandard.backend == "cext"


def test_blake3_goes_in_with_its_extension_module() -> None:
    assert BLAKE3_SO.is_file()
    files = dict(python.package_files(blake3))
    assert files["blake3/__init__.py"] == Path(blake3.__file__)
    assert files[f"blake3/{BLAKE3_SO.name}"] == BLAKE3_SO
    assert "blake3/py.typed" in files
    assert not any(rel.endswith(".pyi") or "__pycache__" in rel for rel in files)

    py = python.find_python(Path("/"))
    buf = io.BytesIO()
    w = cpio.Writer(buf)
    reports, compiled = python.add_packages(w, py, [tomli_w, blake3])
    w.close()
    entries = {e.name: e for e in cpio.read(buf.getvalue())}
    site = SITE_DIR.lstrip("/")
    so = entries[f"{site}/blake3/{BLAKE3_SO.name}"]
    assert so.data == BLAKE3_SO.read_bytes()
    assert so.mode == stat.S_IFREG | 0o755
    assert entries[f"{site}/blake3/__init__.py"].mode == stat.S_IFREG | 0o644
    assert f"{site}/blake3/__pycache__/__init__.{py.cache_tag}.pyc" in entries
    assert f"{site}/tomli_w/_writer.py" in entries
    assert compiled
    by_name = {r.name: r for r in reports}
    assert by_name["blake3"].version == blake3.__version__
    assert by_name["blake3"].files == len(files)
    assert by_name["blake3"].extension_modules == (f"{SITE_DIR}/blake3/{BLAKE3_SO.name}",)
    assert by_name["tomli_w"].extension_modules == ()


@pytest.mark.skipif(run.which("strip") is None, reason="needs strip (binutils)")
def test_an_extension_module_goes_in_without_its_debug_sections_and_still_imports(
    tmp_path: Path
) -> None:
    """python-zstandard's wheel ships its module with debug sections (most of its size):
    the image gets it stripped, and the stripped module imports and decodes."""
    original = ZSTANDARD_SO.read_bytes()
    assert elf.has_debug_info(original)
    py = python.find_python(Path("/"))
    buf = io.BytesIO()
    w = cpio.Writer(buf)
    python.add_packages(w, py, [zstandard])
    w.close()
    site = SITE_DIR.lstrip("/")
    entries = {e.name: e for e in cpio.read(buf.getvalue())}
    carried = entries[f"{site}/zstandard/{ZSTANDARD_SO.name}"].data
    assert len(carried) < len(original) // 4
    assert not elf.has_debug_info(carried)
    assert elf.needed(carried) == elf.needed(original)
    for name, entry in entries.items():
        if name.startswith(f"{site}/zstandard/") and entry.mode & stat.S_IFREG:
            out = tmp_path / name.removeprefix(f"{site}/")
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(entry.data)
    probe = ("import sys, zstandard; "
             "d = zstandard.ZstdCompressor().compress(b'resurgo' * 1000); "
             "print(zstandard.backend, zstandard.ZstdDecompressor().decompress(d) == "
             "b'resurgo' * 1000)")
    result = run.run([sys.executable, "-I", "-S", "-c",
                      f"import sys; sys.path.insert(0, {str(tmp_path)!r}); {probe}"])
    assert result.stdout.split() == ["cext", "True"]
    # A module without debug sections goes in byte for byte.
    assert python.carried_extension(BLAKE3_SO, BLAKE3_SO.read_bytes()) == BLAKE3_SO.read_bytes()


def test_the_libraries_of_the_extension_modules_on_this_machine() -> None:
    """resurgo's own (the restore's plain-file path) and blake3's, with what they need."""
    py = python.find_python(Path("/"))
    extensions = python.package_extensions(py, build.carried_packages())
    assert extensions == [PLAINFILES_SO, BLAKE3_SO, ZSTANDARD_SO]
    libs = python.package_libraries(py, extensions)
    names = [Path(lib).name for lib in libs]
    for name in {*elf.needed(BLAKE3_SO.read_bytes()), *elf.needed(PLAINFILES_SO.read_bytes())}:
        assert name in names, name
    assert "libgcc_s.so.1" in names and "libc.so.6" in names
    assert len(names) == len(set(names))
    assert all(Path(lib).is_file() for lib in libs)


def test_the_save_s_compiled_path_stays_out_of_the_rescue() -> None:
    """A rescue recovers: the save's extension module, built here, is not carried."""
    files = dict(python.package_files(resurgo))
    assert "resurgo/engine/_plainsave.c" not in files and "resurgo/engine/plainsave.py" in files
    assert not [rel for rel in files if rel.startswith("resurgo/engine/_plainsave.")]
    assert Path(_plainsave.__file__).is_file()


def _tree_with_libs(root: Path, names: list[str]) -> None:
    libdir = root / "usr/lib/x86_64-linux-gnu"
    libdir.mkdir(parents=True)
    (root / "lib").symlink_to("usr/lib")
    for name in names:
        (libdir / name).write_bytes(b"not an ELF file")  # needs nothing more


def test_the_libraries_of_blake3_come_from_the_tree(tmp_path: Path) -> None:
    """The module is read on the build machine; its libraries are looked for in the tree
    the image is built from, never on the build machine."""
    needed = elf.needed(BLAKE3_SO.read_bytes())
    assert "libgcc_s.so.1" in needed
    _tree_with_libs(tmp_path, needed)
    py = python.PythonInstall(tmp_path, "/usr/bin/python3.11", sys.version_info[:2], ())
    libs = python.package_libraries(py, [BLAKE3_SO])
    assert libs == [f"/lib/x86_64-linux-gnu/{name}" for name in needed]

    bare = tmp_path / "bare"
    _tree_with_libs(bare, [n for n in needed if n != "libgcc_s.so.1"])
    with pytest.raises(PreconditionFailed) as e:
        python.package_libraries(python.PythonInstall(bare, py.binary, py.version, ()), [BLAKE3_SO])
    assert "libgcc_s.so.1" in str(e.value) and str(bare) in str(e.value)


def _tree_with_python(root: Path, version: str, platform: str) -> python.PythonInstall:
    stdlib = root / f"usr/lib/python{version}"
    (stdlib / "lib-dynload").mkdir(parents=True)
    (stdlib / "os.py").write_text("")
    tag = version.replace(".", "")
    (stdlib / f"lib-dynload/_ssl.cpython-{tag}-{platform}.so").write_bytes(b"")
    (root / "usr/bin").mkdir(parents=True)
    (root / f"usr/bin/python{version}").write_bytes(b"")
    (root / "usr/bin/python3").symlink_to(f"python{version}")
    return python.find_python(root)


def test_extension_suffixes_of_the_images_python(tmp_path: Path) -> None:
    py = _tree_with_python(tmp_path, "3.11", "x86_64-linux-gnu")
    assert python.extension_suffixes(py) == (".cpython-311-x86_64-linux-gnu.so", ".abi3.so", ".so")
    assert python.package_extensions(py, [blake3]) == [BLAKE3_SO]


@pytest.mark.parametrize(
    ("version", "platform"), [("3.12", "x86_64-linux-gnu"), ("3.11", "aarch64-linux-gnu")]
)
def test_an_extension_module_for_another_python_stops_the_build(
    tmp_path: Path, version: str, platform: str
) -> None:
    py = _tree_with_python(tmp_path, version, platform)
    tag = version.replace(".", "")
    assert python.extension_suffixes(py)[0] == f".cpython-{tag}-{platform}.so"
    # Pure Python goes anywhere.
    assert python.package_extensions(py, [tomli_w]) == []
    with pytest.raises(PreconditionFailed) as e:
        python.package_extensions(py, build.carried_packages())
    message = str(e.value)
    assert f"Python {version}" in message and PLAINFILES_SO.name in message
    assert "has resurgo installed" in message and "--sysroot" in message
    with pytest.raises(PreconditionFailed) as e:
        python.package_extensions(py, [blake3])
    message = str(e.value)
    assert f"Python {version}" in message and BLAKE3_SO.name in message
    assert "has resurgo and blake3 installed" in message and "--sysroot" in message
    with pytest.raises(PreconditionFailed):
        python.add_packages(cpio.Writer(io.BytesIO()), py, [blake3])


# ----------------------------------------------------------------- cpio and ELF


def test_cpio_round_trip() -> None:
    buf = io.BytesIO()
    cpio.write(
        buf,
        [
            cpio.Entry.file("init", b"#!/bin/sh\n", 0o755, mtime=1700000000),
            cpio.Entry.file("usr/lib/resurgo/python/resurgo/__init__.py", b"x = 1\n"),
            cpio.Entry.symlink("etc/mtab", "/proc/self/mounts"),
            cpio.Entry.file("empty", b""),
        ],
    )
    data = buf.getvalue()
    assert len(data) % 4 == 0
    got = {e.name: e for e in cpio.read(data)}
    assert list(got) == [
        "init",
        "usr",
        "usr/lib",
        "usr/lib/resurgo",
        "usr/lib/resurgo/python",
        "usr/lib/resurgo/python/resurgo",
        "usr/lib/resurgo/python/resurgo/__init__.py",
        "etc",
        "etc/mtab",
        "empty",
    ]
    assert got["init"].data == b"#!/bin/sh\n"
    assert got["init"].mode == stat.S_IFREG | 0o755 and got["init"].mtime == 1700000000
    assert stat.S_ISDIR(got["usr/lib"].mode)
    assert stat.S_ISLNK(got["etc/mtab"].mode) and got["etc/mtab"].data == b"/proc/self/mounts"
    # Two archives one after the other (with padding) read as the kernel reads them.
    assert len(cpio.read(data + b"\0" * 12 + data)) == 2 * len(got)


def test_cpio_refuses_repeats_and_orphans() -> None:
    w = cpio.Writer(io.BytesIO())
    w.add(cpio.Entry.directory("etc"))
    with pytest.raises(ValueError, match="already"):
        w.add(cpio.Entry.directory("etc/"))
    with pytest.raises(ValueError, match="before its directory"):
        w.add(cpio.Entry.file("usr/bin/x", b""))


def test_cpio_matches_gnu_cpio(tmp_path: Path) -> None:
    """What GNU cpio (and so the kernel's newc reader) makes of it."""
    if run.which("cpio") is None:
        pytest.skip("no cpio here")
    src = tmp_path / "src"
    (src / "a/b").mkdir(parents=True)
    (src / "a/b/f.txt").write_text("hello\n")
    (src / "a/link").symlink_to("b/f.txt")
    archive = tmp_path / "x.cpio"
    with archive.open("wb") as f:
        w = cpio.Writer(f)
        assert w.add_tree(src, "top") == 1
        w.close()
    out = tmp_path / "out"
    out.mkdir()
    import subprocess

    subprocess.run(["cpio", "-idm", "--quiet", "-F", str(archive)], cwd=out, check=True)
    assert (out / "top/a/b/f.txt").read_text() == "hello\n"
    assert (out / "top/a/link").readlink() == Path("b/f.txt")


def test_elf_needed_of_a_real_extension_module() -> None:
    assert _ssl.__file__ is not None
    names = elf.needed(Path(_ssl.__file__).read_bytes())
    assert "libc.so.6" in names
    assert any(n.startswith("libssl.so") for n in names)
    assert elf.needed(b"#!/bin/sh\n") == []
    assert elf.needed(b"\x7fELF\x01\x01" + b"\0" * 60) == []  # 32-bit: not ours


def test_ld_so_conf() -> None:
    dirs, includes = elf.parse_ld_so_conf(
        "include /etc/ld.so.conf.d/*.conf\n# comment\n/usr/local/lib  # here\n\n"
    )
    assert dirs == ["/usr/local/lib"]
    assert includes == ["/etc/ld.so.conf.d/*.conf"]


def test_library_closure_in_a_tree(tmp_path: Path) -> None:
    """Libraries found inside the tree, through its own absolute symlinks."""
    assert _ssl.__file__ is not None
    root = tmp_path / "root"
    libdir = root / "usr/lib/x86_64-linux-gnu"
    libdir.mkdir(parents=True)
    (root / "lib").symlink_to("/usr/lib")  # absolute: means the tree's /usr/lib
    (root / "mod").mkdir()
    (root / "mod/_ssl.so").write_bytes(Path(_ssl.__file__).read_bytes())
    needed = elf.needed(Path(_ssl.__file__).read_bytes())
    ssl_name = next(n for n in needed if n.startswith("libssl"))
    (libdir / ssl_name).write_bytes(b"not an ELF file")
    found, missing = elf.library_closure(root, ["/mod/_ssl.so"])
    assert found == [f"/lib/x86_64-linux-gnu/{ssl_name}"]
    assert "libc.so.6" in missing


# ----------------------------------------------------------------- the build's choices


def test_compression_follows_the_kernel() -> None:
    both = {"CONFIG_RD_ZSTD": "y", "CONFIG_RD_XZ": "y", "CONFIG_RD_GZIP": "y"}
    assert build.choose_compression(both, {"zstd"}) is build.Compression.ZSTD
    assert build.choose_compression(both, set()) is build.Compression.XZ
    assert build.choose_compression({"CONFIG_RD_GZIP": "y"}, {"zstd"}) is build.Compression.GZIP
    assert build.choose_compression({}, {"zstd"}) is build.Compression.ZSTD  # config unknown
    with pytest.raises(PreconditionFailed):
        build.choose_compression({"CONFIG_RD_GZIP": "y"}, {"zstd"}, build.Compression.ZSTD)
    with pytest.raises(ToolMissing):
        build.choose_compression(both, set(), build.Compression.ZSTD)


def test_volume_date() -> None:
    assert build.volume_date(datetime(2026, 11, 25, 23, 30, 1, 990000, UTC)) == "2026112523300199"


def test_image_paths_follow_the_trees_links(tmp_path: Path) -> None:
    (tmp_path / "usr/lib").mkdir(parents=True)
    (tmp_path / "lib").symlink_to("usr/lib")
    assert build.image_path(tmp_path, "/lib/firmware/x.bin") == "/usr/lib/firmware/x.bin"
    assert build.image_path(tmp_path, "/etc/resurgo") == "/etc/resurgo"


def test_programs_found_in_a_tree(tmp_path: Path) -> None:
    (tmp_path / "usr/sbin").mkdir(parents=True)
    (tmp_path / "sbin").symlink_to("usr/sbin")
    tool = tmp_path / "usr/sbin/mke2fs"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    (tmp_path / "usr/sbin/mkfs.ext4").symlink_to("mke2fs")
    (tmp_path / "usr/sbin/notexec").write_text("")
    assert build.find_program(tmp_path, "mkfs.ext4") == "/usr/sbin/mkfs.ext4"
    assert build.find_program(tmp_path, "notexec") is None
    assert build.find_program(tmp_path, "missing") is None


def test_a_tree_without_the_basics_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PreconditionFailed) as e:
        build.collect_programs(tmp_path, [])
    assert "bash" in str(e.value) and "apt-get install" in str(e.value)
    assert "util-linux" in str(e.value) and "kmod" in str(e.value)


def test_missing_dracut_names_the_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(build.run, "which", lambda name: None)
    with pytest.raises(ToolMissing) as e:
        build.build_rescue_image(tmp_path / "x.iso", build.RescueOptions(sysroot=tmp_path))
    assert e.value.package == "dracut-core"
    assert "apt-get install dracut-core" in str(e.value)


def test_missing_grub_platform_names_the_package(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(iso.run, "which", lambda name: "/usr/bin/" + name)
    monkeypatch.setattr(iso, "GRUB_LIB", tmp_path)
    with pytest.raises(PreconditionFailed) as e:
        iso.require_tools()
    assert "grub-pc-bin" in str(e.value)


# ----------------------------------------------------------------- finding the set


def _index(set_id: str, host: str, desc_digest: str) -> str:
    return json.dumps(
        {
            "format": "resurgo-set",
            "version": 2,
            "id": set_id,
            "created": "2026-11-25T23:30:00.000000Z",
            "kind": "full",
            "parent": None,
            "host": host,
            "files": [{"name": "description.toml", "size": 1, "blake3": desc_digest}],
        }
    )


def test_find_set_dirs(tmp_path: Path) -> None:
    good = tmp_path / "resurgo/db1/20261125T233000Z-ab12"
    good.mkdir(parents=True)
    (good / "set.json").write_text(_index(good.name, "db1", "a" * 64))
    (tmp_path / "resurgo/db1/.incomplete-20261126T000000Z-cd34").mkdir()
    (tmp_path / "resurgo/db1/20261126T000000Z-ef56").mkdir()  # no index: not a set
    deep = tmp_path / "a/b/c/d/e/20261125T233000Z-0000"
    deep.mkdir(parents=True)
    (deep / "set.json").write_text("{}")
    (tmp_path / "lost+found/20261125T233000Z-1111").mkdir(parents=True)
    (tmp_path / "lost+found/20261125T233000Z-1111/set.json").write_text("{}")
    assert locate.find_set_dirs(tmp_path) == [(tmp_path / "resurgo/db1", good.name)]


def cand(set_id: str, host: str | None, digest: str | None, day: int) -> locate.Candidate:
    return locate.Candidate(
        medium="/run/resurgo/disks/vdb/sets",
        set_id=set_id,
        created=datetime(2026, 11, day, tzinfo=UTC),
        host=host,
        description_digest=digest,
    )


def test_the_set_holding_this_images_description_wins() -> None:
    mine = locate.Embedded("a" * 64, "db1")
    cands = [
        cand("20261101T000000Z-0001", "db1", "a" * 64, 1),
        cand("20261103T000000Z-0003", "db1", "a" * 64, 3),  # a later save, same layout
        cand("20261105T000000Z-0005", "db1", "b" * 64, 5),  # the machine changed since
        cand("20261106T000000Z-0006", "web", "c" * 64, 6),
    ]
    choice = locate.choose(cands, mine)
    assert choice.candidate is not None and choice.candidate.set_id == "20261103T000000Z-0003"
    # Without an exact match: the newest set of the same host.
    choice = locate.choose(cands[2:], mine)
    assert choice.candidate is not None and choice.candidate.set_id == "20261105T000000Z-0005"
    assert "differs" in choice.reason
    # Only other hosts' sets: the embedded description alone, never a stranger's set.
    choice = locate.choose(cands[3:], mine)
    assert choice.candidate is None and "web" in choice.reason


def test_without_a_description_one_host_or_nothing() -> None:
    one = [
        cand("20261101T000000Z-0001", "db1", "a" * 64, 1),
        cand("20261102T000000Z-0002", "db1", "b" * 64, 2),
    ]
    choice = locate.choose(one, None)
    assert choice.candidate is not None and choice.candidate.set_id == "20261102T000000Z-0002"
    with pytest.raises(locate.NoChoice, match="several hosts"):
        locate.choose([*one, cand("20261106T000000Z-0006", "web", "c" * 64, 6)], None)
    with pytest.raises(locate.NoChoice, match="no recovery set"):
        locate.choose([cand("20261101T000000Z-0001", "db1", None, 1)], None)
    with pytest.raises(locate.NoChoice):
        locate.choose([], None)


def test_recover_command_line() -> None:
    c = cand("20261101T000000Z-0001", "db1", "a" * 64, 1)
    desc = Path("/x/description.toml")
    assert recover_argv(Mode.AUTO, locate.Choice(c, "r"), desc, ("--map", "a=b")) == [
        "recover",
        "--from",
        "/run/resurgo/disks/vdb/sets",
        "--set",
        "20261101T000000Z-0001",
        "--yes",
        "--map",
        "a=b",
    ]
    assert recover_argv(Mode.PLAN, locate.Choice(c, "r"), desc, ()) == [
        "plan",
        "--from",
        "/run/resurgo/disks/vdb/sets",
        "--set",
        "20261101T000000Z-0001",
    ]
    # The description alone recreates the layout only.
    assert recover_argv(Mode.AUTO, locate.Choice(None, "r"), desc, ()) == [
        "recover",
        "--from",
        "/x/description.toml",
        "--layout-only",
        "--yes",
    ]
    assert recover_argv(Mode.AUTO, locate.Choice(None, "r"), desc, ("--layout-only",)) == [
        "recover",
        "--from",
        "/x/description.toml",
        "--yes",
        "--layout-only",
    ]


# ----------------------------------------------------------------- kernel and firmware in a tree


def _tree_with_kernels(root: Path, *versions: str) -> None:
    (root / "usr/lib/modules").mkdir(parents=True)
    (root / "lib").symlink_to("usr/lib")
    (root / "boot").mkdir()
    for v in versions:
        (root / f"boot/vmlinuz-{v}").write_bytes(b"kernel")
        (root / f"usr/lib/modules/{v}").mkdir()
        (root / f"usr/lib/modules/{v}/modules.dep").write_text(
            "kernel/drivers/net/ethernet/broadcom/tg3.ko: kernel/drivers/net/phy/libphy.ko\n"
        )


def test_the_newest_kernel_of_a_tree(tmp_path: Path) -> None:
    _tree_with_kernels(tmp_path, "6.1.0-9-amd64", "6.1.0-10-amd64")
    (tmp_path / "boot/vmlinuz-6.5.0-1-amd64").write_bytes(b"no modules for this one")
    k = kernel.find_kernel(tmp_path)
    assert (k.version, k.image) == ("6.1.0-10-amd64", "/boot/vmlinuz-6.1.0-10-amd64")
    assert k.modules_dir == "/usr/lib/modules/6.1.0-10-amd64"
    assert kernel.find_kernel(tmp_path, "6.1.0-9-amd64").version == "6.1.0-9-amd64"
    with pytest.raises(PreconditionFailed, match=r"no kernel 6\.5\.0-1-amd64"):
        kernel.find_kernel(tmp_path, "6.5.0-1-amd64")
    assert kernel.module_files(k)["tg3"] == (
        tmp_path / "usr/lib/modules/6.1.0-10-amd64/kernel/drivers/net/ethernet/broadcom/tg3.ko"
    )


def test_a_tree_without_a_kernel(tmp_path: Path) -> None:
    with pytest.raises(PreconditionFailed) as e:
        kernel.find_kernel(tmp_path)
    assert "--kernel-root" in str(e.value)


def test_firmware_files_in_a_tree(tmp_path: Path) -> None:
    fw = tmp_path / "usr/lib/firmware"
    for d in ("tigon", "rtl_nic", "updates/rtl_nic"):
        (fw / d).mkdir(parents=True)
    (tmp_path / "lib").symlink_to("usr/lib")
    (fw / "tigon/tg3.bin.xz").write_bytes(b"compressed")
    (fw / "rtl_nic/rtl8168g-2.fw").write_bytes(b"old")
    (fw / "updates/rtl_nic/rtl8168g-2.fw").write_bytes(b"new")
    got = kernel.firmware_files(tmp_path, ["tigon/tg3.bin", "rtl_nic/rtl8168g-2.fw", "none.bin"])
    assert [(inside, host.read_bytes()) for inside, host in got] == [
        ("/usr/lib/firmware/tigon/tg3.bin.xz", b"compressed"),
        ("/usr/lib/firmware/updates/rtl_nic/rtl8168g-2.fw", b"new"),
    ]


# ----------------------------------------------------------------- the agent on a directory medium


def test_the_agent_finds_a_set_on_a_filesystem(tmp_path: Path) -> None:
    """What the agent does with a mounted filesystem: sets found below it, each with the
    digest of its description from the set's index."""
    from resurgo.media import SetKind, SetMeta, open_medium
    from resurgo.rescue.agent import Agent, Config, Console

    medium_dir = tmp_path / "fs/backups/db1"
    medium_dir.mkdir(parents=True)
    with (
        open_medium(str(medium_dir)) as medium,
        medium.begin_set(SetMeta(SetKind.FULL, host="db1")) as w,
    ):
        w.write_bytes("description.toml", b"format = 1\n")
        info = w.commit()
    out = io.StringIO()
    agent = Agent(Console([out]), Config(), cmdline.parse(""))
    (found,) = agent.search_filesystem("/dev/vdb1", tmp_path / "fs")
    assert found.medium == str(medium_dir) and found.set_id == info.id
    assert found.host == "db1" and found.device == "/dev/vdb1"
    assert found.description_digest == blake3.blake3(b"format = 1\n").hexdigest()
    # Named as the set directory itself (resurgo.from=DEV:/backups/db1/<id>).
    (again,) = agent.search_filesystem("/dev/vdb1", medium_dir / info.id)
    assert again == found
    agent.say("two\nlines")
    assert [line.split("] ", 1)[1] for line in out.getvalue().splitlines()] == ["two", "lines"]
    assert all(line.startswith("resurgo-rescue: [") for line in out.getvalue().splitlines())


# ----------------------------------------------------------------- choosing among planted sets


def pinned(set_id: str, host: str, day: int, pin: str, signed_by: str | None = None
           ) -> locate.Candidate:
    return locate.Candidate(
        medium=f"/run/resurgo/disks/vd{day}/sets", set_id=set_id,
        created=datetime(2026, 11, day, tzinfo=UTC), host=host, description_digest="a" * 64,
        pin=pin, signed_by=signed_by)


def test_an_image_saved_into_a_set_takes_that_set_and_no_planted_one() -> None:
    own = pinned("20261101T000000Z-0001", "db1", 1, "p" * 64)
    # Planted: newer, same host, same description, same id even, but other files.
    planted = [pinned("20261128T000000Z-0009", "db1", 28, "x" * 64),
               pinned("20261101T000000Z-0001", "db1", 2, "y" * 64)]
    image = locate.Embedded("a" * 64, "db1", "20261101T000000Z-0001", "p" * 64)
    choice = locate.choose([*planted, own], image)
    assert choice.candidate == own and "pin" in choice.reason
    with pytest.raises(locate.NoChoice, match=r"\(20261101T000000Z-0001\) was not found") as e:
        locate.choose(planted, image)
    assert "20261128T000000Z-0009" in str(e.value)  # the candidates are listed


def test_an_image_with_signers_takes_the_newest_signed_set_of_its_host() -> None:
    image = locate.Embedded("a" * 64, "db1", "20261101T000000Z-0001", "p" * 64, signed=True)
    own = pinned("20261101T000000Z-0001", "db1", 1, "p" * 64, "admin")
    later = pinned("20261105T000000Z-0005", "db1", 5, "q" * 64, "admin")
    other_host = pinned("20261109T000000Z-0009", "web", 9, "r" * 64, "admin")
    assert locate.choose([own, other_host], image).candidate == own
    choice = locate.choose([own, later, other_host], image)
    assert choice.candidate == later and "signed by a trusted key (admin)" in choice.reason
    with pytest.raises(locate.NoChoice, match="signed by a trusted key"):
        locate.choose([other_host], image)


def test_an_sftp_set_is_recovered_against_the_pinned_host_key() -> None:
    c = locate.Candidate(medium="sftp://backup@10.0.2.2:2222/srv/sets",
                         set_id="20261101T000000Z-0001", created=datetime(2026, 11, 1, tzinfo=UTC),
                         host="db1", description_digest="a" * 64)
    pinned = Path("/etc/resurgo/known_hosts")
    argv = recover_argv(Mode.AUTO, locate.Choice(c, "r"), Path("/d.toml"), (),
                        Access(known_hosts=pinned))
    assert argv[:7] == ["recover", "--from", c.medium, "--set", c.set_id,
                        "--ssh-known-hosts", str(pinned)]
    assert "--ssh-strict-host-keys" in argv
    # A directory medium has no host to pin.
    local = locate.Candidate(medium="/run/resurgo/disks/vdb", set_id=c.set_id,
                             created=c.created, host="db1", description_digest="a" * 64)
    assert "--ssh-known-hosts" not in recover_argv(Mode.AUTO, locate.Choice(local, "r"),
                                                   Path("/d.toml"), (), Access(known_hosts=pinned))


def test_attended_a_person_picks_the_set_and_recover_asks_before_writing() -> None:
    from resurgo.rescue.agent import Agent, Config, Console

    cands = [pinned("20261101T000000Z-0001", "db1", 1, "p" * 64, "admin"),
             pinned("20261105T000000Z-0005", "db1", 5, "q" * 64)]
    out = io.StringIO()
    asked: list[str] = []

    def answer(text: str) -> Callable[[str], str]:
        def prompt(question: str) -> str:
            asked.append(question)
            return text
        return prompt

    args = cmdline.parse("resurgo.recover=ask")
    assert args.recover is Mode.ASK
    agent = Agent(Console([out]), Config(), args, prompt=answer("2\n"))
    choice = agent.pick(cands)
    assert choice.candidate is cands[0]  # listed newest first: 2) is the older one
    listed = out.getvalue()
    assert "1) 20261105T000000Z-0005" in listed and "not signed" in listed
    assert "2) 20261101T000000Z-0001" in listed and "signed by admin" in listed
    assert asked and "which set" in asked[0]
    by_id = Agent(Console([io.StringIO()]), Config(), args, prompt=answer(cands[1].set_id))
    assert by_id.pick(cands).candidate is cands[1]
    for declined in ("\n", "9\n", "yes\n", ""):
        with pytest.raises(locate.NoChoice, match="nothing was done"):
            Agent(Console([io.StringIO()]), Config(), args, prompt=answer(declined)).pick(cands)
    # recover then runs without --yes: it shows the plan and asks on the console itself.
    argv = recover_argv(Mode.ASK, choice, Path("/d.toml"), ())
    assert argv[0] == "recover" and "--yes" not in argv


def test_a_set_on_a_disk_the_saved_layout_recreates_is_never_taken(tmp_path: Path) -> None:
    """The old (or ransomed) system disk still attached: its serial is the saved disk's,
    the plan would overwrite it, and a set on it is not used."""
    from resurgo import fileformat
    from resurgo.rescue.agent import Agent, Config, Console
    from tests.support.builders import standard

    desc_path = tmp_path / "description.toml"
    fileformat.write(standard(serial="OLD-DISK-1"), desc_path)
    on_old = locate.Candidate(medium="/run/resurgo/disks/sda3/sets",
                              set_id="20261101T000000Z-0001",
                              created=datetime(2026, 11, 1, tzinfo=UTC), host="testhost",
                              description_digest="a" * 64, device="/dev/sda3")
    on_stick = locate.Candidate(medium="/run/resurgo/disks/sdb1/sets",
                                set_id="20261101T000000Z-0001", created=on_old.created,
                                host="testhost", description_digest="a" * 64,
                                device="/dev/sdb1")
    ids = {"/dev/sda3": {"OLD-DISK-1"}, "/dev/sdb1": {"USB-STICK-9"}}
    out = io.StringIO()
    agent = Agent(Console([out]), Config(), cmdline.parse(""))
    kept = agent.not_on_saved_disks([on_old, on_stick], desc_path, lambda dev: ids[dev])
    assert kept == [on_stick]
    assert "its disk is one the saved layout recreates" in out.getvalue()
    # Without the image's description nothing is known of the saved disks.
    assert agent.not_on_saved_disks([on_old], tmp_path / "none.toml",
                                    lambda dev: ids[dev]) == [on_old]


def test_disk_ids_reads_serial_and_wwid_of_the_disk_holding_a_partition(tmp_path: Path) -> None:
    from resurgo.rescue import system

    disk = tmp_path / "devices/virtual/block/vdb"
    (disk / "device").mkdir(parents=True)
    (disk / "device/serial").write_text("OLD-DISK-1\n")
    (disk / "wwid").write_text("naa.5000c500a1b2c3d4\n")
    (disk / "vdb1").mkdir()
    (disk / "vdb1/partition").write_text("1\n")
    cls = tmp_path / "class/block"
    cls.mkdir(parents=True)
    (cls / "vdb").symlink_to(disk)
    (cls / "vdb1").symlink_to(disk / "vdb1")
    assert system.disk_ids("/dev/vdb1", cls) >= {"OLD-DISK-1", "5000c500a1b2c3d4"}
    assert system.disk_ids("/dev/vdb", cls) == system.disk_ids("/dev/vdb1", cls)


def test_a_set_named_on_the_command_line() -> None:
    a = cmdline.parse("resurgo.recover=auto resurgo.set=20261101T000000Z-0001")
    assert a.set_id == "20261101T000000Z-0001" and a.problems == ()
    bad = cmdline.parse("resurgo.set=../../etc resurgo.set=")
    assert bad.set_id is None and len(bad.problems) == 2
    assert all("not a set id" in p for p in bad.problems)


def test_a_named_set_on_an_image_with_signers_must_be_signed() -> None:
    signed = pinned("20261101T000000Z-0001", "db1", 1, "p" * 64, "admin")
    newer = pinned("20261105T000000Z-0005", "db1", 5, "q" * 64, "admin")
    other_host = pinned("20261109T000000Z-0009", "web", 9, "r" * 64, "admin")
    # Named: that set, not the newest, and of any host (no description in the image).
    choice = locate.choose_named([signed, newer, other_host], signed.set_id, None, signed=True)
    assert choice.candidate == signed
    assert "resurgo.set=20261101T000000Z-0001" in choice.reason
    assert "signed by a trusted key (admin)" in choice.reason
    assert locate.choose_named([signed, other_host], other_host.set_id,
                               locate.Embedded("a" * 64, "db1", signed=True),
                               signed=True).candidate == other_host
    unsigned = pinned("20261101T000000Z-0001", "db1", 1, "p" * 64)
    with pytest.raises(locate.NoChoice, match="not found signed by a trusted key"):
        locate.choose_named([unsigned, newer], unsigned.set_id, None, signed=True)
    with pytest.raises(locate.NoChoice, match="20261105T000000Z-0005"):  # what was found
        locate.choose_named([newer], "20261107T000000Z-0007", None, signed=True)
    twice = pinned("20261101T000000Z-0001", "db1", 2, "p" * 64, "admin")
    with pytest.raises(locate.NoChoice, match="more than once"):
        locate.choose_named([signed, twice], signed.set_id, None, signed=True)


def test_a_named_set_on_a_pinned_image_must_be_its_own() -> None:
    own = pinned("20261101T000000Z-0001", "db1", 1, "p" * 64)
    planted = pinned("20261101T000000Z-0001", "db1", 2, "y" * 64)  # same id, other files
    other = pinned("20261128T000000Z-0009", "db1", 28, "x" * 64)
    image = locate.Embedded("a" * 64, "db1", own.set_id, "p" * 64)
    choice = locate.choose_named([planted, other, own], own.set_id, image, signed=False)
    assert choice.candidate == own and "pin" in choice.reason
    with pytest.raises(locate.NoChoice, match="not the set this image was saved into"):
        locate.choose_named([planted, other, own], other.set_id, image, signed=False)
    with pytest.raises(locate.NoChoice, match="was not found"):
        locate.choose_named([planted], own.set_id, image, signed=False)


def test_a_named_set_on_an_image_with_neither() -> None:
    a = cand("20261101T000000Z-0001", "db1", "a" * 64, 1)
    b = cand("20261106T000000Z-0006", "web", "c" * 64, 6)
    no_desc = cand("20261107T000000Z-0007", "web", None, 7)
    # Several hosts: no guess without a name, the named one with it.
    choice = locate.choose_named([a, b], a.set_id, None, signed=False)
    assert choice.candidate == a
    with pytest.raises(locate.NoChoice, match="was not found"):
        locate.choose_named([a, b, no_desc], no_desc.set_id, None, signed=False)
    # An image with its description but neither signers nor a pin: its own host's sets only.
    image = locate.Embedded("a" * 64, "db1")
    assert locate.choose_named([a, b], a.set_id, image, signed=False).candidate == a
    with pytest.raises(locate.NoChoice, match="of host db1 was not found"):
        locate.choose_named([a, b], b.set_id, image, signed=False)


def test_the_agent_takes_the_set_named_on_the_command_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from resurgo.errors import OperationFailed
    from resurgo.rescue import agent as rescue_agent

    older = pinned("20261101T000000Z-0001", "db1", 1, "p" * 64, "admin")
    newer = pinned("20261105T000000Z-0005", "db1", 5, "q" * 64, "admin")
    out = io.StringIO()
    agent = rescue_agent.Agent(
        rescue_agent.Console([out]), rescue_agent.Config(),
        cmdline.parse(f"resurgo.recover=auto resurgo.set={older.set_id}"))
    monkeypatch.setattr(rescue_agent, "trust", lambda: object())
    monkeypatch.setattr(agent, "candidates", lambda: [older, newer])
    monkeypatch.setattr(agent, "not_on_saved_disks", lambda cands: cands)

    def stop(choice: locate.Choice) -> Path:
        raise OperationFailed("stop here")

    monkeypatch.setattr(agent, "description_of", stop)
    assert agent.recover() == 1
    said = out.getvalue()
    assert f"recovery set: {older.where} (the set named on the kernel command line" in said
    assert "signed by a trusted key (admin)" in said


# ----------------------------------------------------------------- the description checked


def test_the_agent_checks_the_description_in_its_own_process(tmp_path: Path) -> None:
    from resurgo.fileformat import document
    from resurgo.rescue.agent import Agent, Config, Console
    from tests.support.examples import example_text

    good = tmp_path / "good.toml"
    good.write_text(example_text())
    document.write_digest(good, document.sha256_hex(good.read_bytes()))
    out = io.StringIO()
    agent = Agent(Console([out]), Config(), cmdline.parse(""))
    assert agent.validate(good) == 0
    assert f"{good}: valid recovery description" in out.getvalue()
    # One byte changed after the digest was written: refused, as `resurgo validate` does.
    bad = tmp_path / "bad.toml"
    bad.write_bytes(good.read_bytes().replace(b'resurgo = "0.1.0"', b'resurgo = "0.1.1"', 1))
    (tmp_path / "bad.toml.sha256").write_bytes((tmp_path / "good.toml.sha256").read_bytes())
    out = io.StringIO()
    assert Agent(Console([out]), Config(), cmdline.parse("")).validate(bad) == 2
    assert "valid recovery description" not in out.getvalue()
    assert f"{bad}: " in out.getvalue() and "problem(s)" in out.getvalue()
    missing = tmp_path / "none.toml"
    out = io.StringIO()
    assert Agent(Console([out]), Config(), cmdline.parse("")).validate(missing) != 0
    assert "Traceback" not in out.getvalue() and str(missing) in out.getvalue()


def test_a_set_refused_as_not_authentic_is_said_once(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import logging

    from resurgo import signing
    from resurgo.media import SetKind, SetMeta, open_medium
    from resurgo.rescue.agent import Agent, Config, Console, ConsoleLog
    from tests.support.sshkeys import allowed, keypair

    keys = tmp_path / "keys"
    keys.mkdir()
    monkeypatch.setattr(signing, "DEFAULT_TRUST", allowed(keys, keypair(keys, "admin")))
    medium_dir = tmp_path / "backups"
    medium_dir.mkdir()
    with (open_medium(str(medium_dir)) as medium,
          medium.begin_set(SetMeta(SetKind.FULL, host="db1")) as w):
        w.write_bytes("description.toml", b"format = 1\n")
        unsigned = w.commit().id
    out = io.StringIO()
    console = Console([out])
    handler = ConsoleLog(console)
    # As the rescue's main sets it up: resurgo's warnings on the consoles.
    logging.getLogger("resurgo").addHandler(handler)
    try:
        agent = Agent(console, Config(), cmdline.parse(""))
        assert agent.medium_candidates(str(medium_dir)) == []
    finally:
        logging.getLogger("resurgo").removeHandler(handler)
    said = [line.split("] ", 1)[1] for line in out.getvalue().splitlines()]
    about = [line for line in said if unsigned in line]
    assert about == [f"refused {medium_dir} set {unsigned}: recovery set {medium_dir} set "
                     f"{unsigned} is not signed, and signed sets are required (trusted "
                     f"signers: {signing.DEFAULT_TRUST})"]
    assert agent.refused == [f"{medium_dir} set {unsigned}"]
