"""What save records for a rehearsal: the [rehearsal] table of the description (format
1.2, optional: older descriptions stay valid), its checks, and the canary written into
the saved system."""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import replace
from pathlib import Path

import pytest

from resurgo.fileformat import dumps
from resurgo.model import Canary, Rehearsal
from resurgo.rehearse import savefacts
from tests.support.examples import check, edit, example, example_text, found

CANARY = "/var/lib/resurgo/canary"
DIGEST = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"


def test_the_example_holds_the_rehearsal_facts() -> None:
    rh = example().rehearsal
    assert rh == Rehearsal(Canary(CANARY, DIGEST), ("smartmontools.service",))


def test_a_description_without_the_table_is_valid_and_has_none() -> None:
    text = example_text()
    text = text[:text.index("\n[rehearsal]")] + "\n"
    for version in ("1.0", "1.1", "1.2"):
        report = check(text.replace('version = "1.2"', f'version = "{version}"', 1))
        assert report.problems == [] and report.warnings == []
        assert report.description is not None and report.description.rehearsal is None


def test_unknown_units_and_no_failed_unit_are_written_apart() -> None:
    base = example()
    unknown = replace(base, rehearsal=Rehearsal(None, None))
    none_failed = replace(base, rehearsal=Rehearsal(None, ()))
    t_unknown, t_none = dumps(unknown), dumps(none_failed)
    assert "failed_units" not in t_unknown
    assert "failed_units = []" in t_none
    assert check(t_unknown).description == unknown
    assert check(t_none).description == none_failed


def test_a_1_1_reader_would_skip_the_table_with_a_warning() -> None:
    # What this resurgo does with a newer minor's table it does not know, as a 1.1
    # resurgo does with [rehearsal].
    text = example_text().replace('version = "1.3"', 'version = "1.4"', 1)
    text += "\n[rehearsal2]\nanswer = 1\n"
    report = check(text)
    assert report.problems == []
    assert "description.toml: skipped unknown field rehearsal2" in report.warnings


@pytest.mark.parametrize(
    ("old", "new", "where", "message"),
    [
        (f'sha256 = "{DIGEST}"', 'sha256 = "' + "A" * 64 + '"', "rehearsal.canary.sha256",
         f"'{'A' * 64}' is not 64 lower-case hex digits"),
        (f'sha256 = "{DIGEST}"', 'sha256 = "abc"', "rehearsal.canary.sha256",
         "'abc' is not 64 lower-case hex digits"),
        (f'path = "{CANARY}"', 'path = "var/lib/canary"', "rehearsal.canary.path",
         "'var/lib/canary' is not an absolute path"),
        (f'path = "{CANARY}"', 'path = "/var/../etc/shadow"', "rehearsal.canary.path",
         "'/var/../etc/shadow' is not a normal path: it holds '..'"),
        ('"smartmontools.service"', '"a b.service"', "rehearsal.failed_units[0]",
         "'a b.service' is not a systemd unit name"),
        ('"smartmontools.service"', '"noservice"', "rehearsal.failed_units[0]",
         "'noservice' is not a systemd unit name"),
        ('"smartmontools.service"', '"x;rm -rf.service"', "rehearsal.failed_units[0]",
         "'x;rm -rf.service' is not a systemd unit name"),
        ('"smartmontools.service"', '"' + "u" * 300 + '.service"', "rehearsal.failed_units[0]",
         f"'{'u' * 80}' is not a systemd unit name"),
        ('"smartmontools.service"', '"bad\\nname.service"', "rehearsal.failed_units[0]",
         "holds the control character '\\n'"),
    ],
)
def test_validation_refuses_bad_rehearsal_values(old: str, new: str, where: str,
                                                 message: str) -> None:
    text = edit(example_text(), "[rehearsal]", old, new)
    report = check(text)
    assert [(w, m) for w, m, _ in found(text, report)] == [(where, message)]


def test_template_and_escaped_unit_names_are_valid() -> None:
    names = '"getty@tty1.service", "dev-disk-by\\\\x2duuid-ab.swap", "sys-fs.mount"'
    text = edit(example_text(), "[rehearsal]", '"smartmontools.service"', names)
    report = check(text)
    assert report.problems == []
    assert report.description is not None and report.description.rehearsal is not None
    assert report.description.rehearsal.failed_units == (
        "getty@tty1.service", "dev-disk-by\\x2duuid-ab.swap", "sys-fs.mount")


# ------------------------------------------------------------------ the failed units


def test_failed_units_are_the_first_word_of_each_line() -> None:
    text = ("● smartmontools.service loaded failed failed Self Monitoring\n"
            "foo@bar.service      loaded failed failed Foo\n"
            "\n"
            "smartmontools.service loaded failed failed again\n")
    assert savefacts.parse_failed_units(text) == ("smartmontools.service", "foo@bar.service")
    assert savefacts.parse_failed_units("") == ()


def test_no_failed_units_are_known_of_a_tree_that_is_not_running() -> None:
    assert savefacts.failed_units(live=False) is None


# ------------------------------------------------------------------ the canary


def test_the_canary_is_refused_where_the_set_leaves_it_out() -> None:
    refusal = savefacts.canary_refusal
    assert refusal(CANARY, (), ["/"]) is None
    assert refusal(CANARY, ("/var/lib",), ["/"]) == "/var/lib is left out of the set"
    assert refusal(CANARY, ("/var/lib/resurgo/canary",), ["/"]) is not None
    assert refusal(CANARY, ("/var/lib/resurgo2", "/tmp"), ["/"]) is None
    assert refusal(CANARY, (), ["/boot", "/home"]) == "no saved filesystem holds it"


def test_write_canary_writes_fresh_private_random_content(tmp_path: Path) -> None:
    first = savefacts.write_canary(tmp_path, CANARY, ["/"])
    assert isinstance(first, Canary) and first.path == CANARY
    path = tmp_path / "var/lib/resurgo/canary"
    data = path.read_bytes()
    assert hashlib.sha256(data).hexdigest() == first.sha256
    assert len(data) == 2 * savefacts.CANARY_BYTES + 1
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "var/lib/resurgo").stat().st_mode) == 0o700
    second = savefacts.write_canary(tmp_path, CANARY, ["/"])
    assert isinstance(second, Canary) and second.sha256 != first.sha256
    assert hashlib.sha256(path.read_bytes()).hexdigest() == second.sha256
    assert sorted(os.listdir(path.parent)) == ["canary"]


def test_write_canary_follows_no_symlink(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    (root / "var/lib").mkdir(parents=True)
    (root / "var/lib/resurgo").symlink_to(outside)
    result = savefacts.write_canary(root, CANARY, ["/"])
    assert isinstance(result, str) and "symbolic link" in result
    assert list(outside.iterdir()) == []
    (root / "var/lib/resurgo").unlink()
    (root / "var/lib/resurgo").mkdir()
    (root / "var/lib/resurgo/canary").symlink_to(outside / "planted")
    result = savefacts.write_canary(root, CANARY, ["/"])
    assert isinstance(result, Canary)
    assert not (outside / "planted").exists()
    assert not (root / "var/lib/resurgo/canary").is_symlink()


def test_record_writes_no_canary_into_a_tree_given_by_root(tmp_path: Path) -> None:
    got = savefacts.record(tmp_path, (), ["/"], live=False)
    assert got.rehearsal == Rehearsal(None, None)
    assert "not the running system" in got.canary
    assert not (tmp_path / "var").exists()


def test_record_says_why_an_excluded_canary_is_not_written(tmp_path: Path) -> None:
    got = savefacts.record(tmp_path, ("/var",), ["/"], live=True)
    assert got.rehearsal.canary is None
    assert got.canary == f"none at {CANARY}: /var is left out of the set"
    assert not (tmp_path / "var").exists()


def test_record_writes_the_canary_of_a_live_save(tmp_path: Path) -> None:
    got = savefacts.record(tmp_path, ("/tmp",), ["/"], live=True)
    assert got.rehearsal.canary is not None
    assert got.canary == f"written at {CANARY}"
    data = (tmp_path / "var/lib/resurgo/canary").read_bytes()
    assert hashlib.sha256(data).hexdigest() == got.rehearsal.canary.sha256


def test_show_tells_what_a_rehearsal_will_check(tmp_path: Path) -> None:
    from tests.support import cli

    path = tmp_path / "description.toml"
    path.write_text(example_text())
    r = cli.run("show", path)
    assert r.returncode == 0
    assert r.stdout.splitlines()[-1] == (
        f"rehearsal: canary {CANARY} (sha256 {DIGEST[:16]}...); failed at save time: "
        "smartmontools.service")
    for rehearsal, said in ((Rehearsal(None, None), "rehearsal: no canary; the units failed "
                                                    "at save time are not known"),
                            (Rehearsal(None, ()), "rehearsal: no canary; no unit failed at "
                                                  "save time")):
        path.write_text(dumps(replace(example(), rehearsal=rehearsal)))
        assert cli.run("show", path).stdout.splitlines()[-1] == said
