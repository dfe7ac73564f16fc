"""resurgo prune on a directory medium holding dated sets of two hosts: the issue's check
"prune with keep-daily/weekly keeps the right sets and every chain whole", the dry run, and
the refusals; and the retention options of save."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from resurgo.cli.main import build_parser
from resurgo.cli.retention import retention
from resurgo.media import Retention, SetInfo, SetKind, SetMeta, open_medium
from tests.support import cli

START = datetime(2026, 11, 1, 2, 0, tzinfo=UTC)  # a Sunday


def make_sets(medium_dir: Path, host: str, minutes: int = 0, days: int = 35) -> list[SetInfo]:
    """Five weeks of nightly sets of HOST, Sunday Nov 1 to Saturday Dec 5: a full set the
    first night and each Tuesday, an incremental one on the previous night's set every other
    night, so that each chain crosses an ISO week's end (Sunday to Monday), and one the
    month's end (Mon Nov 30 on Tue Nov 24)."""
    out: list[SetInfo] = []
    with open_medium(str(medium_dir)) as medium:
        for day in range(days):
            when = START + timedelta(days=day, minutes=minutes)
            full = not out or when.weekday() == 1
            meta = SetMeta(SetKind.FULL if full else SetKind.INCREMENTAL,
                           None if full else out[-1].id, host)
            with medium.begin_set(meta, created=when) as w:
                w.write_bytes("description.toml", f"# {host} {when}\n".encode())
                w.write_bytes("archives/root.archive", bytes([day]) * (100 + day))
                out.append(w.commit())
    return out


def on_medium(medium_dir: Path) -> list[str]:
    with open_medium(str(medium_dir)) as medium:
        return [s.id for s in medium.list_sets()]


def chains_whole(medium_dir: Path) -> None:
    """Every set on the medium is whole, and so is the chain under it."""
    with open_medium(str(medium_dir)) as medium:
        sets = {s.id: s for s in medium.list_sets()}
        for s in sets.values():
            medium.open_set(s.id).verify()
            assert s.parent is None or s.parent in sets, f"{s.id} lost its parent"


@pytest.fixture
def medium_dir(tmp_path: Path) -> Path:
    return tmp_path / "sets"


def test_keep_daily_and_weekly_keep_the_right_sets_and_every_chain_whole(
    medium_dir: Path, tmp_path: Path
) -> None:
    a = make_sets(medium_dir, "alpha")
    b = make_sets(medium_dir, "beta", minutes=30)
    before = on_medium(medium_dir)
    argv = ("prune", "--from", medium_dir, "--host", "alpha", "--keep-daily", "3",
            "--keep-weekly", "2")
    dry = cli.run(*argv, "--dry-run", "--json", state=tmp_path / "state")
    assert dry.returncode == 0, dry.output
    assert on_medium(medium_dir) == before  # a dry run deletes nothing
    plan = dry.json()
    assert plan["dry_run"] is True and plan["removed"] == []
    assert plan["hosts"] == ["alpha"]
    assert plan["policy"] == {"keep_daily": 3, "keep_weekly": 2}
    assert plan["time_zone"] == "UTC"
    # keep-daily 3: Dec 5, 4, 3 (a[34], a[33], a[32]), on Tuesday Dec 1's full set a[30];
    # keep-weekly 2: Dec 5 for 2026-W49 (Mon Nov 30 ..), Sunday Nov 29 (a[28]) for W48, on
    # Tuesday Nov 24's full set a[23]. Monday Nov 30 (a[29]) is kept by nothing: removed,
    # though the set it builds on stays.
    kept = [s["id"] for s in plan["keep"]]
    assert kept == [s.id for s in a[23:29] + a[30:35]]
    removed = [s.id for s in reversed(a[:23] + a[29:30])]
    assert [s["id"] for s in plan["remove"]] == removed
    reasons = {s["id"]: s["reasons"] for s in plan["keep"]}
    assert reasons[a[34].id] == ["--keep-daily 3: the newest set of 2026-12-05",
                                 "--keep-weekly 2: the newest set of 2026-W49"]
    assert reasons[a[28].id] == ["--keep-weekly 2: the newest set of 2026-W48"]
    assert reasons[a[32].id] == ["--keep-daily 3: the newest set of 2026-12-03",
                                 f"{a[33].id} builds on it"]
    assert reasons[a[30].id] == [f"{a[31].id} builds on it"]
    assert reasons[a[23].id] == [f"{a[24].id} builds on it"]

    done = cli.run(*argv, "--json", state=tmp_path / "state")
    assert done.returncode == 0, done.output
    result = done.json()
    assert result["removed"] == removed
    assert [s["id"] for s in result["keep"]] == kept
    # beta's sets are another host's: untouched
    assert on_medium(medium_dir) == sorted(kept + [s.id for s in b],
                                           key=lambda i: before.index(i))
    chains_whole(medium_dir)

    # Every host, each apart: beta alone loses sets now, alpha's stay as they are.
    both = cli.run("prune", "--from", medium_dir, "--all-hosts", "--keep-daily", "3",
                   "--keep-weekly", "2", "--json")
    assert both.returncode == 0, both.output
    assert both.json()["removed"] == [s.id for s in reversed(b[:23] + b[29:30])]
    assert on_medium(medium_dir) == sorted(kept + [s.id for s in b[23:29] + b[30:]],
                                           key=lambda i: before.index(i))
    chains_whole(medium_dir)


def test_dry_run_text_says_what_and_why(medium_dir: Path) -> None:
    a = make_sets(medium_dir, "alpha", days=9)  # Nov 1 .. 9
    r = cli.run("prune", "--from", medium_dir, "--host", "alpha", "--keep-last", "1",
                "--dry-run")
    assert r.returncode == 0, r.output
    out = r.stdout
    assert "--keep-last 1 (days, weeks and months in UTC)" in out
    assert f"would keep: {a[8].id}" in out and "--keep-last 1: one of the 1 newest sets" in out
    assert f"would keep: {a[7].id}" in out and f"{a[8].id} builds on it" in out
    for s in a[:2]:
        assert f"would remove: {s.id}" in out
    assert "7 set(s) would be kept, 2 removed (dry run: nothing was deleted)" in out
    assert len(on_medium(medium_dir)) == 9


def test_the_default_host_is_this_machine(medium_dir: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    make_sets(medium_dir, "alpha", days=9)
    b = make_sets(medium_dir, "beta", minutes=30, days=9)
    monkeypatch.setattr("resurgo.cli.prune.this_host", lambda: "beta")
    r = cli.run("prune", "--from", medium_dir, "--keep-last", "1", "--json")
    assert r.returncode == 0, r.output
    assert r.json()["hosts"] == ["beta"]
    assert set(r.json()["removed"]) == {s.id for s in b[:2]}
    # no set of that host: nothing to do, said so
    monkeypatch.setattr("resurgo.cli.prune.this_host", lambda: "gamma")
    r = cli.run("prune", "--from", medium_dir, "--keep-last", "1")
    assert r.returncode == 0, r.output
    assert "no set of host gamma on the medium (the medium holds sets of alpha, beta" in r.stdout


@pytest.mark.parametrize(("extra", "message"), [
    ((), "no retention rule given"),
    (("--keep-daily", "0"), "--keep-daily 0: a rule keeps at least 1 set"),
    (("--keep-last", "-2"), "--keep-last -2: a rule keeps at least 1 set"),
    (("--keep-weekly", "x"), "invalid int value"),
    (("--keep-last", "1", "--host", "a", "--all-hosts"), "not allowed with argument"),
])
def test_refused_without_touching_a_set(medium_dir: Path, extra: tuple[str, ...],
                                        message: str) -> None:
    make_sets(medium_dir, "alpha", days=3)
    before = on_medium(medium_dir)
    r = cli.run("prune", "--from", medium_dir, "--host", "alpha", *extra)
    assert r.returncode == 2, r.output
    assert message in r.stderr and "Traceback" not in r.output
    assert on_medium(medium_dir) == before


def test_the_medium_is_needed() -> None:
    r = cli.run("prune", "--keep-last", "1")
    assert r.returncode == 2 and "give --from MEDIUM" in r.stderr


def test_an_interrupted_prune_leaves_every_chain_whole(
    medium_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_sets(medium_dir, "alpha", days=14)  # keep-last 1 keeps Nov 10 .. 14
    from resurgo.media.base import Medium

    real = Medium.delete_set
    calls = []

    def flaky(self: Medium, set_id: str) -> None:
        calls.append(set_id)
        if len(calls) == 5:
            from resurgo.errors import OperationFailed
            raise OperationFailed("the medium went away")
        real(self, set_id)

    monkeypatch.setattr(Medium, "delete_set", flaky)
    r = cli.run("prune", "--from", medium_dir, "--host", "alpha", "--keep-last", "1")
    assert r.returncode == 1
    assert "prune stopped after removing 4 of 9 set(s)" in r.stderr
    assert "the medium went away" in r.stderr
    chains_whole(medium_dir)
    assert len(on_medium(medium_dir)) == 14 - 4


def test_save_takes_the_retention_options_and_keep_is_keep_last() -> None:
    parse = build_parser().parse_args
    args = parse(["save", "--to", "/x", "--keep", "2", "--keep-monthly", "6"])
    assert retention(args) == Retention(last=2, monthly=6)
    args = parse(["save", "--to", "/x", "--keep-last", "3", "--keep-daily", "7",
                  "--keep-weekly", "4"])
    assert retention(args) == Retention(last=3, daily=7, weekly=4)
    args = parse(["save", "--to", "/x"])
    assert retention(args).empty
    # the configuration file fills these by their dests
    assert {"keep_last", "keep_daily", "keep_weekly", "keep_monthly"} <= set(vars(args))
    args = parse(["prune", "--from", "/x"])
    assert {"keep_last", "keep_daily", "keep_weekly", "keep_monthly", "source"} <= set(vars(args))


def test_save_refuses_a_rule_below_one(tmp_path: Path) -> None:
    r = cli.run("save", "--to", tmp_path / "sets", "--keep", "0", "--no-rescue")
    assert r.returncode == 2 and "--keep-last 0: a rule keeps at least 1 set" in r.stderr
    assert not (tmp_path / "sets").exists()


def test_prune_json_is_one_document(medium_dir: Path) -> None:
    make_sets(medium_dir, "alpha")
    r = cli.run("prune", "--from", medium_dir, "--host", "alpha", "--keep-monthly", "2",
                "--json")
    assert r.returncode == 0, r.output
    doc = json.loads(r.stdout)
    # keep-monthly 2: December's newest set and its chain to Tuesday Dec 1; November's
    # newest, Monday Nov 30, and its chain back to Tuesday Nov 24
    assert len(doc["keep"]) == 12 and len(doc["removed"]) == 23


def test_sets_planted_with_future_dates_do_not_push_the_genuine_ones_out(
    medium_dir: Path,
) -> None:
    """Without trusted signers anyone who can write the medium can plant sets; dated in
    2099, three of them would have been the three newest for --keep-last 3 and every
    genuine set would have gone. They are kept and counted by no rule."""
    genuine = make_sets(medium_dir, "alpha", days=5)
    planted = []
    with open_medium(str(medium_dir)) as medium:
        for n in range(3):
            when = datetime(2099, 1, 1, tzinfo=UTC) + timedelta(days=n)
            with medium.begin_set(SetMeta(SetKind.FULL, None, "alpha"), created=when) as w:
                w.write_bytes("description.toml", b"# planted\n")
                planted.append(w.commit().id)
    r = cli.run("prune", "--from", medium_dir, "--host", "alpha", "--keep-last", "3")
    assert r.returncode == 0, r.stderr
    left = set(on_medium(medium_dir))
    assert {s.id for s in genuine[-3:]} <= left, r.stdout
    assert set(planted) <= left
    assert "after this machine's clock" in r.stdout
    chains_whole(medium_dir)
