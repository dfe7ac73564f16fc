"""The vm harness's parts that boot nothing: apt sources, GRUB defaults, the qemu command
line, the recorded guest fixtures (tests/vm/guest.py, tests/vm/record_fixtures.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.vm import guest, record_fixtures

GUEST_DATA = Path(__file__).resolve().parent.parent / "data/guest"


def test_mirror_comes_from_the_deb822_entry_for_the_suite(tmp_path: Path) -> None:
    sources = tmp_path / "sources.list.d"
    sources.mkdir()
    (sources / "debian.sources").write_text(
        "# comment\n"
        "Types: deb\n"
        "URIs: http://mirror.invalid/debian-security\n"
        "Suites: bookworm-security\n"
        "Components: main\n"
        "\n"
        "Types: deb-src deb\n"
        "URIs: http://mirror.invalid/debian\n"
        "  http://other.invalid/debian\n"
        "Suites: bookworm bookworm-updates\n"
        "Components: main\n"
    )
    assert guest.find_mirror("bookworm", tmp_path) == "http://mirror.invalid/debian"


def test_disabled_and_source_only_entries_are_skipped(tmp_path: Path) -> None:
    sources = tmp_path / "sources.list.d"
    sources.mkdir()
    (sources / "a.sources").write_text(
        "Types: deb\nURIs: http://off.invalid/\nSuites: bookworm\nEnabled: no\n\n"
        "Types: deb-src\nURIs: http://src.invalid/\nSuites: bookworm\n"
    )
    (tmp_path / "sources.list").write_text(
        "deb-src http://src.invalid/ bookworm main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://one-line.invalid/debian bookworm main\n"
    )
    assert guest.find_mirror("bookworm", tmp_path) == "http://one-line.invalid/debian"


def test_no_source_for_the_suite_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "sources.list").write_text("deb http://x.invalid/ trixie main\n")
    with pytest.raises(guest.HarnessError, match="no apt source for bookworm"):
        guest.find_mirror("bookworm", tmp_path)


def test_grub_defaults_replace_existing_and_commented_lines(tmp_path: Path) -> None:
    cfg = tmp_path / "grub"
    cfg.write_text(
        'GRUB_DEFAULT=0\nGRUB_TIMEOUT=5\n#GRUB_TERMINAL=console\nGRUB_CMDLINE_LINUX=""\n'
    )
    guest._set_shell_vars(cfg, guest.GRUB_DEFAULTS)
    lines = cfg.read_text().splitlines()
    assert lines[:2] == ["GRUB_DEFAULT=0", "GRUB_TIMEOUT=0"]
    assert 'GRUB_TERMINAL="serial console"' in lines
    assert 'GRUB_CMDLINE_LINUX_DEFAULT="console=ttyS0 panic=-1 mitigations=off"' in lines
    assert sum(line.startswith("GRUB_CMDLINE_LINUX=") for line in lines) == 1


def test_qemu_command_for_uefi_nvme_with_persistent_vars() -> None:
    disks = [guest.Drive(Path("/i/root.qcow2")), guest.Drive(Path("/i/x.img"), serial="s1")]
    argv = guest.qemu_command(
        disks, firmware="uefi", interface="nvme", ovmf_vars=Path("/i/vars.fd")
    )
    joined = " ".join(argv)
    assert argv[:3] == ["qemu-system-x86_64", "-accel", "tcg"]
    assert "-no-reboot" in argv and "-nographic" in argv
    assert "file=/i/root.qcow2,format=qcow2,if=none,id=d0" in joined
    assert "nvme,drive=d0,serial=resurgo-d0,bootindex=0" in joined
    assert "nvme,drive=d1,serial=s1 " in joined + " "
    assert f"unit=1,file={Path('/i/vars.fd')}" in joined


def test_recorded_fixtures_name_their_commands_and_hold_no_secret() -> None:
    commands = record_fixtures.read_commands(GUEST_DATA)
    names = {name for name, _, _ in commands}
    on_disk = {p.relative_to(GUEST_DATA).as_posix() for p in GUEST_DATA.rglob("*") if p.is_file()}
    assert names == on_disk - {"README.md", "COMMANDS.tsv", "versions.txt"}
    assert all(rc in (0, 2) for _, rc, _ in commands)
    readme = (GUEST_DATA / "README.md").read_text()
    assert all(f"`{command.replace('|', chr(92) + '|')}`" in readme for _, _, command in commands)
    script = record_fixtures.GUEST_SCRIPT.read_text()
    record_fixtures.check_no_secrets(GUEST_DATA, record_fixtures.throwaway_passphrase(script))


def test_a_volume_key_in_dmsetup_table_is_refused(tmp_path: Path) -> None:
    (tmp_path / "dmsetup-table.txt").write_text(
        "c: 0 8 crypt aes-xts-plain64 " + "ab12" * 16 + " 0 8:1 4096\n"
    )
    with pytest.raises(record_fixtures.FixtureError, match="volume key"):
        record_fixtures.check_no_secrets(tmp_path, "pass")



def test_qemu_command_booting_a_kernel_leaves_bootindex_0_to_it() -> None:
    argv = guest.qemu_command(
        [guest.Drive(Path("/i/set.img"))],
        extra_args=["-kernel", "/k/vmlinuz", "-initrd", "/k/initrd.img", "-append", "x"],
    )
    assert "bootindex" not in " ".join(argv)
    assert argv[-6:] == ["-kernel", "/k/vmlinuz", "-initrd", "/k/initrd.img", "-append", "x"]
