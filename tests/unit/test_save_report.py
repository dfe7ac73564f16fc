"""The save's report: the files changed while they were read, counted in the summary and
listed per tree, in text and JSON."""

from __future__ import annotations

from datetime import UTC, datetime

from resurgo.media import SetInfo, SetKind
from resurgo.recovery.save import SaveReport, UnitSaved


def _report(*units: UnitSaved) -> SaveReport:
    info = SetInfo("20261207-0830-host", datetime(2026, 12, 7, tzinfo=UTC), SetKind.FULL,
                   None, "host", 1000, 5, {})
    return SaveReport(info, "/media/sets", units, 12.5, 2.0)


def _unit(key: str, changed: tuple[str, ...] = ()) -> UnitSaved:
    return UnitSaved(key, f"ext4 {key}", f"/{key}", 10, 10, 100, 50, 20, 1.0, False,
                     changed=changed, changed_count=len(changed))


def test_files_changed_while_read_are_counted_and_listed() -> None:
    report = _report(_unit("root", ("var/lib/db/main.sqlite", "var/log/syslog")),
                     _unit("home"))
    text = report.text()
    assert "  changed: 2 file(s) changed while read, their content may be torn" in text
    assert "      changed: var/lib/db/main.sqlite\n      changed: var/log/syslog\n" in text
    assert "ext4 root: 10 entries, 10 stored" in text and ", 2 changed while read\n" in text
    data = report.data()
    assert data["changed_count"] == 2
    assert data["units"][0]["changed"] == ["var/lib/db/main.sqlite", "var/log/syslog"]
    assert data["units"][0]["changed_count"] == 2
    assert data["units"][1]["changed"] == [] and data["units"][1]["changed_count"] == 0


def test_a_save_where_nothing_changed_says_so() -> None:
    report = _report(_unit("root"))
    assert "  changed: no file changed while read" in report.text()
    assert report.data()["changed_count"] == 0
