"""status (recovery.status) on sets of a directory medium, the live layout given: current,
stale, too old, no set, a broken chain, the last check and rehearsal; the Prometheus
textfile output line by line and written atomically; durations; the command line."""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from resurgo.durations import format_duration, parse_duration
from resurgo.errors import BadInput, ExitCode
from resurgo.layoutdiff import Change, Difference
from resurgo.media import Medium, SetInfo, SetKind
from resurgo.media.directory import directory_backend
from resurgo.model import Description, Partition
from resurgo.recovery import results
from resurgo.recovery.prometheus import escape, metrics, write_metrics
from resurgo.recovery.setcheck import CheckOptions, check_sets
from resurgo.recovery.status import StatusOptions, StatusReport, set_status
from tests.support import cli
from tests.support.configs import parsed
from tests.support.examples import example
from tests.support.fakesets import HOST, save

NOW = datetime(2026, 12, 7, 6, 0, tzinfo=UTC)


def status(medium_dir: Path, live: Description | None = None, *, state: Path | None = None,
           max_age: int | None = None, now: datetime | None = None) -> StatusReport:
    medium = Medium(directory_backend(str(medium_dir)))
    shown = live or example()
    return set_status(medium, StatusOptions(root=medium_dir, max_age=max_age,
                                            state_dir=state or medium_dir.parent / "state"),
                      host=HOST, describer=lambda root, excluded: shown,
                      now=now or datetime.now(UTC))


def with_partition(desc: Description) -> Description:
    part = Partition("part.sda5", "disk.sda", 5, 133171200, 2048, 512,
                     "0FC63DAF-8483-4772-8E79-3D69D8477DE4", path="/dev/sda5")
    return replace(desc, partitions=(*desc.partitions, part))


def test_current_then_stale(tmp_path: Path) -> None:
    m = tmp_path / "m"
    set_id = save(m)
    report = status(m)
    assert report.set is not None and report.set.id == set_id
    assert report.current and report.ok and report.exit_code == ExitCode.OK
    assert report.rescue_image and report.chain == () and report.broken_chain is None
    text = report.text()
    assert "layout:   current" in text and "status:   good" in text
    assert "rescue:   included" in text

    stale = status(m, with_partition(example()))
    assert not stale.current and stale.exit_code == ExitCode.FAILED
    assert stale.differences == (Difference(Change.ADDED, "partition", "/dev/sda5",
                                            "1.0 MiB, type 0FC63DAF-8483-4772-8E79-3D69D8477DE4"),)
    text = stale.text()
    assert "layout:   STALE, changed since the set was saved:\n  partition /dev/sda5 added" in text
    assert "status:   NOT GOOD\n  stale: the layout changed since the set was saved " \
        "(1 difference(s))" in text
    data = stale.data()
    assert data["current"] is False and data["ok"] is False
    assert data["differences"][0]["kind"] == "partition"
    json.dumps(data)


def test_too_old(tmp_path: Path) -> None:
    m = tmp_path / "m"
    save(m)
    later = datetime.now(UTC) + timedelta(hours=27)
    report = status(m, max_age=26 * 3600, now=later)
    assert report.too_old and report.exit_code == ExitCode.FAILED
    assert "too old: 1d 3h, more than the 1d 2h allowed (--max-age)" in report.problems()
    assert not status(m, max_age=28 * 3600, now=later).too_old
    assert status(m, now=later).ok  # no maximum age: any age


def test_no_set_of_this_host(tmp_path: Path) -> None:
    m = tmp_path / "m"
    save(m, host="db1")
    report = status(m)
    assert report.set is None and report.exit_code == ExitCode.FAILED
    assert report.problems() == [f"there is no recovery set of host {HOST} on {m}"]
    assert "set:      none" in report.text()
    assert report.data()["set"] is None
    assert "resurgo_last_set_timestamp_seconds{" in metrics(report)


def test_the_newest_set_of_the_host_its_chain_and_its_rescue_image(tmp_path: Path) -> None:
    m = tmp_path / "m"
    full = save(m)
    inc = save(m, parent=full, rescue=False)
    save(m, host="db1")  # newer, of another host
    report = status(m)
    assert report.set is not None and report.set.id == inc
    assert report.chain == (full,) and report.broken_chain is None and report.ok
    assert not report.rescue_image
    text = report.text()
    assert f"chain:    {inc} <- {full}" in text
    assert "rescue:   MISSING: the set was saved without its rescue image" in text
    shutil.rmtree(m / full)
    broken = status(m)
    assert broken.exit_code == ExitCode.FAILED
    assert broken.broken_chain == (f"broken chain: set {inc} builds on set {full}, which is "
                                   f"not on {m}")


def test_the_last_check_and_rehearsal(tmp_path: Path) -> None:
    m, state = tmp_path / "m", tmp_path / "state"
    set_id = save(m)
    assert status(m, state=state).last_check is None
    assert "check:    none recorded" in status(m, state=state).text()
    medium = Medium(directory_backend(str(m)))
    check_sets(medium, CheckOptions(host=HOST, state_dir=state))
    report = status(m, state=state)
    assert report.last_check is not None and report.ok
    assert re.search(r"check:    \S+ \S+ UTC: good \(every file's size\)", report.text())
    # Damage found by the last check makes the status not good.
    (m / set_id / "archives/fs.sda1.archive").unlink()
    check_sets(medium, CheckOptions(host=HOST, state_dir=state))
    report = status(m, state=state)
    assert report.check_failed and report.exit_code == ExitCode.FAILED
    assert "archives/fs.sda1.archive is missing" in report.text()
    # A rehearsal result, where rehearse will write it.
    rehearsal = results.Result(results.Verb.REHEARSE, HOST, NOW, str(m), True,
                               (results.SetResult(set_id, True),), "booted")
    path = results.write_result(rehearsal, state)
    assert path == state / f"rehearse-{HOST}.json"
    assert status(m, state=state).last_rehearsal == rehearsal
    assert "rehearse: 2026-12-07 06:00:00 UTC: good (booted)" in status(m, state=state).text()


@pytest.mark.parametrize("content", [b"{", b"[]", b'{"format": "resurgo-result"}',
                                     b"x" * (results.MAX_BYTES + 1)])
def test_a_result_that_is_not_one_is_none(tmp_path: Path, content: bytes) -> None:
    (tmp_path / f"check-{HOST}.json").write_bytes(content)
    assert results.read_result(results.Verb.CHECK, HOST, tmp_path) is None


def test_result_files_are_named_safely(tmp_path: Path) -> None:
    assert results.result_path(results.Verb.CHECK, "../../etc/x", tmp_path).parent == tmp_path


# ---------------------------------------------------------------- prometheus

SAMPLE = re.compile(r'^(resurgo_[a-z_]+)\{host="((?:[^"\\]|\\.)*)",medium="((?:[^"\\]|\\.)*)"\} '
                    r"(-?[0-9]+(?:\.[0-9]+)?(?:e[+-]?[0-9]+)?)$")


def a_report(**changes: object) -> StatusReport:
    info = SetInfo("20261207T020000Z-ab12", datetime(2026, 12, 7, 2, 0, tzinfo=UTC),
                   SetKind.INCREMENTAL, "20261206T020000Z-0001", "web1", 123456789, 17, {})
    check = results.Result(results.Verb.CHECK, "web1", datetime(2026, 12, 7, 3, 0, tzinfo=UTC),
                           "s3://b/web1", False, (results.SetResult(info.id, True),), "sizes")
    base = StatusReport("web1", 's3://b/"web1"\\x', NOW, info, ("20261206T020000Z-0001",),
                        None, True, (Difference(Change.ADDED, "disk", "/dev/sdb"),), None,
                        26 * 3600, check, None)
    return replace(base, **changes)  # type: ignore[arg-type]


def test_prometheus_text_line_by_line() -> None:
    text = metrics(a_report())
    assert text.endswith("\n")
    lines = text.splitlines()
    assert len(lines) % 3 == 0
    values: dict[str, str] = {}
    for i in range(0, len(lines), 3):
        help_line, type_line, sample = lines[i:i + 3]
        m = re.fullmatch(r"# HELP (resurgo_[a-z_]+) (\S.*)", help_line)
        assert m, help_line
        name = m.group(1)
        assert type_line == f"# TYPE {name} gauge"
        s = SAMPLE.fullmatch(sample)
        assert s, sample
        assert s.group(1) == name and name not in values
        assert (s.group(2), s.group(3)) == ("web1", 's3://b/\\"web1\\"\\\\x')
        values[name] = s.group(4)
    assert values == {
        "resurgo_status_ok": "0",
        "resurgo_status_exit_code": "1",
        "resurgo_set_current": "0",
        "resurgo_last_set_timestamp_seconds": "1796608800",
        "resurgo_last_set_size_bytes": "123456789",
        "resurgo_last_set_files": "17",
        "resurgo_last_set_incremental": "1",
        "resurgo_last_set_chain_length": "1",
        "resurgo_last_set_chain_whole": "1",
        "resurgo_last_set_rescue_image": "1",
        "resurgo_layout_differences": "1",
        "resurgo_last_check_timestamp_seconds": "1796612400",
        "resurgo_last_check_success": "0",
        "resurgo_status_timestamp_seconds": "1796623200",
    }
    # Good, and a rehearsal recorded.
    rehearsal = results.Result(results.Verb.REHEARSE, "web1", NOW, "m", True, ())
    good = metrics(a_report(differences=(), last_rehearsal=rehearsal, last_check=None))
    assert 'resurgo_status_ok{host="web1"' in good and "} 1\n" in good
    assert "resurgo_last_check_success" not in good
    assert "# TYPE resurgo_last_rehearsal_success gauge" in good


def test_escape() -> None:
    assert escape('a"b\\c\nd') == 'a\\"b\\\\c\\nd'


def test_metrics_are_written_atomically(tmp_path: Path) -> None:
    target = tmp_path / "resurgo.prom"
    target.write_text("old\n")
    os.chmod(target, 0o600)
    write_metrics(a_report(), target)
    assert target.read_text() == metrics(a_report())
    assert target.stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["resurgo.prom"]
    # Never through a link planted where the temporary file goes.
    (tmp_path / f".resurgo.prom.{os.getpid()}.tmp").symlink_to(tmp_path / "elsewhere")
    write_metrics(a_report(), target)
    assert not (tmp_path / "elsewhere").exists()
    with pytest.raises(BadInput, match="does not exist"):
        write_metrics(a_report(), tmp_path / "nowhere" / "x.prom")
    with pytest.raises(BadInput, match="is a directory"):
        write_metrics(a_report(), tmp_path)


# ---------------------------------------------------------------- durations


@pytest.mark.parametrize(("text", "seconds"), [
    ("26h", 26 * 3600), ("2d", 172800), ("90m", 5400), ("1w", 604800), ("1d12h", 129600),
    ("3600", 3600), ("45s", 45), (" 2D ", 172800)])
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "2x", "1.5h", "0", "0h", "-1d", "1h 2m"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(BadInput):
        parse_duration(text, "--max-age")


def test_format_duration() -> None:
    assert [format_duration(s) for s in (0, 59, 61, 3600, 97200, 90061)] == [
        "0s", "59s", "1m 1s", "1h", "1d 3h", "1d 1h"]


# ---------------------------------------------------------------- the command line


def test_the_cli(tmp_path: Path) -> None:
    r = cli.run("status", "--help")
    assert r.returncode == 0
    words = " ".join(r.stdout.split())
    assert "Exit 0 good; 1 stale, older than --max-age" in words
    r = cli.run("status", env={"RESURGO_CONFIG": ""})
    assert r.returncode == 2 and "status needs a medium: give --from MEDIUM" in r.stderr
    r = cli.run("status", "--from", tmp_path, "--max-age", "soon")
    assert r.returncode == 2 and "--max-age 'soon' is not a duration" in r.stderr
    r = cli.run("status", "--from", tmp_path, "--prometheus", tmp_path / "no" / "x.prom")
    assert r.returncode == 2 and "does not exist" in r.stderr


def test_the_configuration_drives_status_and_check(tmp_path: Path) -> None:

    text = 'medium = "/srv/sets"\nmax_age = 93600\nexclude_disks = ["sdz"]\n'
    from resurgo.cli.status import options as status_options

    args = parsed(text, "status")
    assert (args.source, args.max_age, args.exclude_disk) == ("/srv/sets", "93600", ["sdz"])
    opts = status_options(args)
    assert (opts.max_age, opts.exclude_disks) == (93600, ("sdz",))
    args = parsed(text, "status", "--from", "/other", "--max-age", "2d")
    assert (args.source, status_options(args).max_age) == ("/other", 172800)
    assert parsed(text, "check").source == "/srv/sets"
    assert parsed('max_age = "26h"\n', "status").max_age == "26h"


def test_a_status_that_could_not_be_taken_still_replaces_the_metrics(tmp_path: Path) -> None:
    from resurgo.recovery.prometheus import failure_metrics

    text = failure_metrics("web1", "s3://b/x", NOW, 1)
    lines = text.splitlines()
    assert lines == [
        "# HELP resurgo_status_ok 1 when resurgo status found the newest set good (exit code 0).",
        "# TYPE resurgo_status_ok gauge",
        'resurgo_status_ok{host="web1",medium="s3://b/x"} 0',
        "# HELP resurgo_status_exit_code The exit code of resurgo status (0 good, 1 not good, "
        "others: it could not tell).",
        "# TYPE resurgo_status_exit_code gauge",
        'resurgo_status_exit_code{host="web1",medium="s3://b/x"} 1',
        "# HELP resurgo_status_timestamp_seconds When resurgo status ran, in seconds since the "
        "epoch.",
        "# TYPE resurgo_status_timestamp_seconds gauge",
        'resurgo_status_timestamp_seconds{host="web1",medium="s3://b/x"} 1796623200']
    if os.geteuid() != 0:
        pytest.skip("status runs as root")
    prom = tmp_path / "resurgo.prom"
    prom.write_text("resurgo_status_ok 1\n")
    # A medium that is not there: the status cannot be taken.
    r = cli.run("status", "--from", tmp_path / "gone", "--root", tmp_path, "--prometheus", prom)
    assert r.returncode == 1, r.output
    assert re.search(r'^resurgo_status_ok\{host="[^"]*",medium="[^"]*/gone"\} 0$',
                     prom.read_text(), re.M), prom.read_text()
