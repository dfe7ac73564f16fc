"""Progress in its three forms (resurgo.progress), driven by a fake clock on fake streams:
a terminal's refreshing line, a log's plain line at its interval, JSON lines."""

from __future__ import annotations

import io
import json
import time

import pytest

from resurgo import progress
from resurgo.cli import progress as cli_progress
from resurgo.progress import Amount, Form, Meter
from resurgo.recovery.events import Advanced, Progress, Step, StepEnded, advancing

GiB = 1 << 30


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def screen(written: str) -> str:
    """The line a terminal shows after ``written`` (one line: a carriage return goes
    back to its start, characters overwrite what is there)."""
    line: list[str] = []
    col = 0
    for ch in written:
        assert ch != "\n", "a terminal line never ends in a newline"
        if ch == "\r":
            col = 0
            continue
        if col < len(line):
            line[col] = ch
        else:
            line.append(ch)
        col += 1
    return "".join(line)


def test_a_terminal_line_is_rewritten_in_place_and_leaves_nothing_behind() -> None:
    clock, tty = Clock(), Tty()
    columns = [200]
    m = Meter(tty, Form.TERMINAL, clock=clock, width=lambda: columns[0])
    total = Amount(1000, 4 * GiB)
    m.update("save", "saving / (ext4)", Amount(), total)
    clock.now += 1.5
    m.update("save", "saving / (ext4)", Amount(100, GiB // 4), total)
    assert tty.getvalue() == "", "quiet for the first seconds"

    clock.now += 1.0  # 2.5 s in: shown
    m.update("save", "saving / (ext4)", Amount(250, GiB), total)
    first = tty.getvalue()
    assert first.startswith("\r") and "\n" not in first
    assert screen(first) == (
        "saving / (ext4): 1.0 GiB of 4.0 GiB (25%), 250 of 1000 entries, "
        "409.6 MiB/s, 0:00:08 left")

    clock.now += 0.1  # not due yet (every 0.25 s)
    m.update("save", "saving / (ext4)", Amount(260, GiB + 1), total)
    assert tty.getvalue() == first

    # A narrower terminal: the new line is shorter, and what stood beyond it is erased.
    columns[0] = 30
    clock.now += 0.5
    m.update("save", "saving / (ext4)", Amount(500, 2 * GiB), total)
    shown = screen(tty.getvalue())
    assert shown.rstrip(" ") == "saving / (ext4): 2.0 GiB of 4"
    assert len(shown) == len(screen(first)), "the old text is overwritten with spaces"
    assert set(shown[29:]) == {" "}

    # Other output first erases the line; the end of the piece too.
    m.clear()
    assert screen(tty.getvalue()).strip() == ""
    clock.now += 1
    m.update("save", "saving / (ext4)", Amount(900, 3 * GiB), total)
    assert screen(tty.getvalue()).strip() != ""
    m.end()
    assert screen(tty.getvalue()).strip() == ""
    assert "\n" not in tty.getvalue()


def test_short_work_shows_nothing_in_any_form() -> None:
    for form in Form:
        clock, out = Clock(), Tty()
        m = Meter(out, form, clock=clock)
        for _ in range(15):
            m.update("verify", "checking /", Amount(10, 10), Amount(100, 100))
            clock.now += 0.1
        m.end()
        assert out.getvalue() == "", form


def test_plain_lines_come_at_the_interval() -> None:
    clock, log = Clock(), io.StringIO()
    m = Meter(log, Form.PLAIN, clock=clock)
    assert m.interval == progress.PLAIN_EVERY == 30
    total = Amount(10_000, 100 * GiB)
    for second in range(96):
        m.update("restore", "restoring /home", Amount(second * 100, second * GiB), total)
        clock.now += 1
    m.end()
    lines = log.getvalue().splitlines(keepends=True)
    assert len(lines) == 3, lines  # at 30, 60 and 90 s
    assert all(line.endswith("\n") and "\r" not in line for line in lines)
    assert lines[0] == ("restoring /home: 30.0 GiB of 100.0 GiB (30%), 3000 of 10000 "
                        "entries, 1.0 GiB/s, 0:01:10 left\n")
    assert lines[2].startswith("restoring /home: 90.0 GiB of 100.0 GiB (90%), 9000 of")


def test_plain_lines_at_an_interval_given_and_without_totals() -> None:
    clock, log = Clock(), io.StringIO()
    m = Meter(log, Form.PLAIN, clock=clock, interval=5)
    for second in range(11):
        m.update("save", "saving /srv", Amount(second, 1000 * second))
        clock.now += 1
    assert log.getvalue().splitlines() == [
        "saving /srv: 4.9 KiB, 5 entries, 1000 B/s, 0:00:05 so far",
        "saving /srv: 9.8 KiB, 10 entries, 1000 B/s, 0:00:10 so far",
    ]


FIELDS = {"type", "step", "what", "entries_done", "entries_total", "bytes_done",
          "bytes_total", "bytes_per_second", "seconds", "seconds_left", "done"}


def test_json_lines_parse_and_carry_every_field() -> None:
    clock, out = Clock(), io.StringIO()
    m = Meter(out, Form.JSON, clock=clock)
    total = Amount(120, 12 * GiB)
    for second in range(13):
        m.update("save", "saving /", Amount(second * 10, second * GiB), total)
        clock.now += 1
    m.update("save", "saving /boot", Amount(), None)  # another piece: the first ends
    m.end()
    objects = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [o["done"] for o in objects] == [False, False, True]  # at 5 and 10 s, the end
    assert all(set(o) == FIELDS and o["type"] == "progress" for o in objects)
    assert objects[0] == {
        "type": "progress", "step": "save", "what": "saving /", "entries_done": 50,
        "entries_total": 120, "bytes_done": 5 * GiB, "bytes_total": 12 * GiB,
        "bytes_per_second": GiB, "seconds": 5.0, "seconds_left": 7.0, "done": False}
    assert objects[2]["bytes_done"] == 12 * GiB and objects[2]["seconds_left"] is None


def test_the_form_follows_the_stream_and_json() -> None:
    assert Form.choose(True, Tty()) is Form.JSON
    assert Form.choose(False, Tty()) is Form.TERMINAL
    assert Form.choose(False, io.StringIO()) is Form.PLAIN


def test_past_an_estimated_total_there_is_no_time_left() -> None:
    clock, out = Clock(), io.StringIO()
    m = Meter(out, Form.PLAIN, clock=clock, interval=1)
    m.update("save", "saving /", Amount(), Amount(10, 1000))
    clock.now += 2
    m.update("save", "saving /", Amount(20, 5000), Amount(10, 1000))
    assert out.getvalue() == "saving /: 4.9 KiB of 1000 B, 20 of 10 entries, 2.4 KiB/s, " \
        "0:00:02 so far\n"


def test_the_command_line_shows_advanced_events_and_hands_on_the_others(
        monkeypatch: pytest.MonkeyPatch) -> None:
    err = Tty()
    monkeypatch.setattr("sys.stderr", err)
    monkeypatch.setattr(progress, "QUIET", 0.0)
    monkeypatch.setattr(progress, "TERMINAL_EVERY", 0.0)
    others: list[object] = []
    with cli_progress.shown(False, others.append) as on_event:
        tally = advancing(on_event, Step.SAVE, "saving /", Amount(4, 400))
        tally(2, 200)
        assert "saving /: 200 B of 400 B (50%), 2 of 4 entries" in screen(err.getvalue())
        on_event(Progress(Step.SAVE, "a line of the step"))
        assert screen(err.getvalue()).strip() == "", "erased before other output"
        tally(4, 400)
        on_event(StepEnded(Step.SAVE, True, "", 0.0, 1.0))
    assert screen(err.getvalue()).strip() == ""
    assert [type(e) for e in others] == [Progress, StepEnded]
    assert not any(isinstance(e, Advanced) for e in others)


def test_work_that_tells_nothing_still_shows_its_time_going() -> None:
    # A rescue build's phase (dracut runs for minutes) counts neither bytes nor entries.
    clock, log = Clock(), io.StringIO()
    m = Meter(log, Form.PLAIN, clock=clock)
    m.update("rescue", "building the rescue image: dracut making the initramfs", Amount())
    clock.now += 29
    m.tick()
    assert log.getvalue() == ""
    clock.now += 2
    m.tick()
    assert log.getvalue() == "building the rescue image: dracut making the initramfs: " \
        "0:00:31 so far\n"


def test_a_line_erased_for_other_output_stays_erased_until_the_work_tells_more() -> None:
    clock, tty = Clock(), Tty()
    m = Meter(tty, Form.TERMINAL, clock=clock, quiet=0, interval=0)
    m.update("verify", "checking /", Amount(5, 50), Amount(10, 100))
    assert screen(tty.getvalue()).startswith("checking /: 50 B of 100 B (50%)")
    m.clear()
    clock.now += 5
    m.tick()  # the ticker must not write between the erasure and the other output
    assert screen(tty.getvalue()).strip() == ""
    m.update("verify", "checking /", Amount(6, 60), Amount(10, 100))
    assert screen(tty.getvalue()).startswith("checking /: 60 B of 100 B (60%)")


def test_the_ticker_ticks_and_stops() -> None:
    ticks: list[int] = []

    class Counting(Meter):
        def tick(self) -> None:
            ticks.append(1)

    m = Counting(io.StringIO(), Form.TERMINAL, interval=0)
    with m.ticking():
        while len(ticks) < 2:
            time.sleep(0.02)
    seen = len(ticks)
    time.sleep(0.3)
    assert len(ticks) == seen
