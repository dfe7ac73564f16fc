"""The rescue in rehearsal mode (resurgo.rehearse=1): the kernel command line, the
protocol lines the agent writes, and the check it installs into the recovered system."""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from resurgo.rehearse import protocol
from resurgo.rescue import cmdline, locate
from resurgo.rescue.cmdline import Mode
from tests.support import cli
from tests.support.examples import example_text

# ----------------------------------------------------------------- the kernel command line


def test_rehearse_is_off_unless_asked() -> None:
    assert cmdline.parse("resurgo.recover=auto").rehearse is False
    a = cmdline.parse("resurgo.recover=auto resurgo.rehearse=1 resurgo.after=poweroff")
    assert a.rehearse is True and a.recover is Mode.AUTO and a.problems == ()
    assert cmdline.parse("resurgo.recover=auto resurgo.rehearse=0").rehearse is False


@pytest.mark.parametrize("value", ["yes", "2", "", "1 ", "true"])
def test_a_bad_rehearse_value_is_a_problem(value: str) -> None:
    a = cmdline.parse(f'resurgo.recover=auto "resurgo.rehearse={value}"')
    assert a.problems == (f"resurgo.rehearse={value}: expected 0 or 1",)
    assert a.rehearse is False


@pytest.mark.parametrize("mode", ["off", "plan", "ask"])
def test_a_rehearsal_is_unattended(mode: str) -> None:
    a = cmdline.parse(f"resurgo.recover={mode} resurgo.rehearse=1")
    assert a.problems == (f"resurgo.rehearse=1 needs resurgo.recover=auto, not {mode}",)
    assert cmdline.parse("resurgo.rehearse=1").problems == (
        "resurgo.rehearse=1 needs resurgo.recover=auto, not off",)


# ----------------------------------------------------------------- recover --step-lines


def test_step_events_become_protocol_lines(tmp_path: Path) -> None:
    from resurgo.recovery.events import Progress, Step, Steps
    from resurgo.rehearse.steplines import StepLines

    seen: list[object] = []
    path = tmp_path / "steps"
    with StepLines(path) as lines:
        steps = Steps(lines.wrap(seen.append))
        with steps.step(Step.LAYOUT, "recreating the layout") as s:
            steps(Progress(Step.LAYOUT, "one action"))
            s.end(True)
        with steps.step(Step.RESTORE, "restoring") as s:
            s.end(False)
    assert len(seen) == 5  # every event still reaches the caller's on_event
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    msgs = [protocol.parse(line) for line in path.read_text().splitlines()]
    assert [(m.kind, m.fields) for m in msgs if m is not None] == [
        ("step", {"step": "layout", "event": "start"}),
        ("step", {"step": "layout", "event": "end", "ok": True}),
        ("step", {"step": "restore", "event": "start"}),
        ("step", {"step": "restore", "event": "end", "ok": False}),
    ]
    assert len(msgs) == 4


def test_step_lines_go_through_a_descriptor_and_a_gone_reader_stops_them_only() -> None:
    from resurgo.recovery.events import Step, StepStarted
    from resurgo.rehearse.steplines import StepLines

    r, w = os.pipe()
    try:
        lines = StepLines(Path(f"/proc/self/fd/{w}"))
        lines.write(StepStarted(Step.FINALIZE, "finalizing", 0.0))
        assert os.read(r, 4096).decode() == protocol.line("step", step="finalize",
                                                          event="start")
        os.close(r)
        r = -1
        lines.write(StepStarted(Step.CHECK, "checking", 0.0))  # EPIPE: no error
        assert lines.file is None
        lines.close()
    finally:
        os.close(w)
        if r >= 0:
            os.close(r)


def test_recover_refuses_step_lines_it_cannot_open(tmp_path: Path) -> None:
    r = cli.run("recover", "--from", tmp_path / "d.toml", "--layout-only", "--yes",
                "--step-lines", tmp_path / "no/such/dir/steps")
    assert r.returncode == 2
    assert "--step-lines" in r.stderr and "cannot open it" in r.stderr
    assert "Traceback" not in r.stderr


# ----------------------------------------------------------------- the agent in rehearsal mode

SET_ID = "20261101T000000Z-0001"


class Run:
    """An agent driven through boot() in rehearsal mode: the set found on a medium that
    is not there, resurgo's commands faked (recover writes its step lines and its
    report as the real one does), the power never cut."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                 cmdline_text: str = "resurgo.recover=auto resurgo.rehearse=1 "
                                     "resurgo.after=poweroff", recover_rc: int = 0,
                 plant: Callable[[Path], None] | None = None) -> None:
        from resurgo import reports
        from resurgo.rescue import agent as rescue_agent
        from resurgo.rescue import system

        self.out = io.StringIO()
        self.argv: list[tuple[str, ...]] = []
        self.power: list[str] = []
        self.target = tmp_path / "target"
        (self.target / "usr/lib/systemd").mkdir(parents=True)
        (self.target / "usr/lib/systemd/systemd").write_text("")
        (self.target / "etc/systemd/system").mkdir(parents=True)
        (self.target / "etc/network").mkdir()
        (self.target / "etc/network/interfaces").write_text("auto ens3\niface ens3 inet dhcp\n")
        self.desc = tmp_path / "description.toml"
        self.desc.write_text(example_text())
        report_dir = tmp_path / "reports"
        monkeypatch.setattr(reports, "DEFAULT_DIR", report_dir)
        monkeypatch.setattr(system, "power", self.power.append)
        agent = rescue_agent.Agent(rescue_agent.Console([self.out]), rescue_agent.Config(),
                                   cmdline.parse(cmdline_text))
        monkeypatch.setattr(agent, "drivers", lambda: None)
        monkeypatch.setattr(agent, "mount_boot_medium", lambda: None)
        cand = locate.Candidate(medium="/run/resurgo/disks/vdb/sets", set_id=SET_ID,
                                created=datetime(2026, 11, 1, tzinfo=UTC), host="web1",
                                description_digest="a" * 64)
        monkeypatch.setattr(agent, "candidates", lambda: [cand])
        monkeypatch.setattr(agent, "not_on_saved_disks", lambda cands: cands)
        monkeypatch.setattr(agent, "description_of", lambda choice: self.desc)

        def resurgo(*argv: str, interactive: bool = False) -> int:
            self.argv.append(argv)
            if argv[0] != "recover":
                return 0
            # What the real recover writes to the output the agent copies: its text and,
            # through --step-lines, its steps.
            for step in ("layout", "restore", "check", "finalize"):
                agent.console.write(protocol.line("step", step=step, event="start"))
                agent.console.write(f"{step}: done\n")
                agent.console.write(protocol.line("step", step=step, event="end",
                                                  ok=recover_rc == 0))
            if plant is not None:
                plant(self.target)
            reports.write_report(report_dir, "recover", {"target": str(self.target)},
                                 when=datetime.now(UTC))
            return recover_rc

        monkeypatch.setattr(agent, "resurgo", resurgo)
        self.rc = agent.boot()

    def messages(self) -> list[tuple[str, dict[str, object]]]:
        found = (protocol.parse(line) for line in self.out.getvalue().splitlines())
        return [(m.kind, m.fields) for m in found if m is not None]


def step(name: str, event: str, ok: bool | None = None) -> tuple[str, dict[str, object]]:
    fields: dict[str, object] = {"step": name, "event": event}
    if ok is not None:
        fields["ok"] = ok
    return ("step", fields)


def test_a_rehearsal_tells_each_step_and_installs_the_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    run = Run(tmp_path, monkeypatch)
    assert run.rc == 0
    assert run.messages() == [
        step("rescue", "end", True),
        step("set", "start"),
        step("set", "end", True),
        step("layout", "start"), step("layout", "end", True),
        step("restore", "start"), step("restore", "end", True),
        step("check", "start"), step("check", "end", True),
        step("finalize", "start"), step("finalize", "end", True),
        step("install-check", "start"), step("install-check", "end", True),
        ("recovered", {"ok": True, "exit": 0, "check": True}),
    ]
    recover = next(a for a in run.argv if a[0] == "recover")
    assert recover[:6] == ("recover", "--from", "/run/resurgo/disks/vdb/sets", "--set",
                           SET_ID, "--yes")
    assert recover[6:8] == ("--step-lines", "/proc/self/fd/1")
    # Protocol lines stand alone, never behind the agent's prefix.
    assert all(line.startswith(protocol.MARK) for line in run.out.getvalue().splitlines()
               if protocol.MARK in line)
    checks = run.target / "var/lib/resurgo/rehearse"
    assert (checks / "check.sh").is_file()
    expected = (checks / "expected").read_text()
    assert "hostname=web1\n" in expected and "interface=ens3\n" in expected
    assert "canary_path=/var/lib/resurgo/canary\n" in expected
    assert "failed_unit=smartmontools.service\n" in expected
    assert (run.target / "etc/systemd/system/multi-user.target.wants"
            / "resurgo-rehearse-check.service").is_symlink()
    assert run.power == ["poweroff"]
    assert "the rehearsal's check is installed in" in run.out.getvalue()


def test_a_failed_recovery_installs_no_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    run = Run(tmp_path, monkeypatch, recover_rc=5)
    assert run.rc == 5
    assert run.messages()[-1] == ("recovered", {"ok": False, "exit": 5})
    assert step("restore", "end", False) in run.messages()
    assert not (run.target / "var/lib/resurgo").exists()
    assert run.power == ["poweroff"]


def test_a_check_that_cannot_be_installed_is_said(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()

    def plant(target: Path) -> None:  # what the restored tree holds
        (target / "etc/systemd/system").rmdir()
        (target / "etc/systemd/system").symlink_to(outside)

    run = Run(tmp_path, monkeypatch, plant=plant)
    assert run.rc == 0
    *_, (kind, ended), last = run.messages()
    assert last == ("recovered", {"ok": True, "exit": 0, "check": False})
    assert kind == "step" and ended["step"] == "install-check" and ended["ok"] is False
    assert "symbolic link" in str(ended["detail"])
    assert list(outside.iterdir()) == []
    assert run.power == ["poweroff"]


def test_no_set_found_ends_the_set_step_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from resurgo.rescue import agent as rescue_agent

    def no_set(self: object) -> list[locate.Candidate]:
        raise locate.NoChoice("no recovery set was found")

    monkeypatch.setattr(rescue_agent.Agent, "candidates", no_set)
    run = Run.__new__(Run)
    out = io.StringIO()
    agent = rescue_agent.Agent(rescue_agent.Console([out]), rescue_agent.Config(),
                               cmdline.parse("resurgo.recover=auto resurgo.rehearse=1"))
    monkeypatch.setattr(agent, "drivers", lambda: None)
    monkeypatch.setattr(agent, "mount_boot_medium", lambda: None)
    assert agent.boot() == 1
    run.out = out
    assert run.messages() == [
        step("rescue", "end", True), step("set", "start"), step("set", "end", False),
        ("recovered", {"ok": False, "exit": 1}),
    ]


def test_a_bad_command_line_in_rehearsal_mode_says_recovered_failed() -> None:
    from resurgo.rescue import agent as rescue_agent

    out = io.StringIO()
    agent = rescue_agent.Agent(rescue_agent.Console([out]), rescue_agent.Config(),
                               cmdline.parse("resurgo.rehearse=1"))
    agent.drivers = lambda: None  # type: ignore[method-assign]
    agent.mount_boot_medium = lambda: None  # type: ignore[method-assign]
    assert agent.boot() == 2
    msgs = [protocol.parse(line) for line in out.getvalue().splitlines()]
    assert [(m.kind, m.fields) for m in msgs if m is not None] == [
        step("rescue", "end", True), ("recovered", {"ok": False, "exit": 2})]


def test_without_rehearsal_the_agent_writes_no_protocol_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    run = Run(tmp_path, monkeypatch, "resurgo.recover=auto resurgo.after=poweroff")
    recover = next(a for a in run.argv if a[0] == "recover")
    assert "--step-lines" not in recover
    # Only the faked recover's own lines (the real one writes none without the option).
    assert [k for k, f in run.messages() if f.get("step") in ("rescue", "set")] == []
    assert not (run.target / "var/lib/resurgo").exists()


def test_an_internal_error_in_rehearsal_mode_still_ends_with_recovered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from resurgo.rescue import agent as rescue_agent

    out = io.StringIO()
    args = cmdline.parse("resurgo.recover=auto resurgo.rehearse=1")
    monkeypatch.setattr(rescue_agent.Console, "open",
                        classmethod(lambda cls: cls([out])))
    monkeypatch.setattr(rescue_agent.cmdline, "parse", lambda text: args)

    def bug(self: object) -> int:
        raise KeyError("a bug")

    monkeypatch.setattr(rescue_agent.Agent, "boot", bug)
    assert rescue_agent.main(["boot"]) == 70
    assert "internal error (a bug in resurgo)" in out.getvalue()
    last = protocol.parse(out.getvalue().splitlines()[-1])
    assert last is not None and last.kind == "recovered"
    assert last.fields == {"ok": False, "exit": 70,
                           "detail": "internal error in the rescue's agent"}
