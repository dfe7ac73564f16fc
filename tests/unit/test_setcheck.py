"""check (recovery.setcheck) on sets of a directory medium: a good set, files missing,
of another size or with another digest, a chain broken or damaged, a damaged index, a
set not signed by the trusted signers; the result recorded for status."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from resurgo import signing
from resurgo.errors import BadInput, ExitCode, OperationFailed
from resurgo.media import Medium, SetMeta
from resurgo.media.directory import directory_backend
from resurgo.recovery import results
from resurgo.recovery.setcheck import CheckOptions, SetStatus, check_sets
from tests.support import cli
from tests.support.examples import example_text
from tests.support.fakesets import HOST, save
from tests.support.sshkeys import allowed, keypair


def check(medium_dir: Path, state: Path, trust: Path | None = None,
          **options: object) -> tuple[int, list[tuple[str, SetStatus, tuple[str, ...]]]]:
    medium = Medium(directory_backend(str(medium_dir)),
                    signing.Trust.load(trust) if trust else None)
    report = check_sets(medium, CheckOptions(host=HOST, state_dir=state, **options))  # type: ignore[arg-type]
    return report.exit_code, [(s.id, s.status, s.problems) for s in report.sets]


def flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))


def test_a_good_set_and_its_record(tmp_path: Path) -> None:
    m, state = tmp_path / "m", tmp_path / "state"
    set_id = save(m)
    assert check(m, state, read_data=True) == (ExitCode.OK, [(set_id, SetStatus.GOOD, ())])
    record = results.read_result(results.Verb.CHECK, HOST, state)
    assert record is not None and record.ok and record.medium == str(m)
    assert record.about(set_id) == results.SetResult(set_id, True, ())
    assert record.detail == "every file's data read"
    assert (state / f"check-{HOST}.json").stat().st_mode & 0o777 == 0o600


def test_a_missing_file_or_another_size_is_damage(tmp_path: Path) -> None:
    m, state = tmp_path / "m", tmp_path / "state"
    set_id = save(m)
    (m / set_id / "archives/fs.sda2.archive").unlink()
    with open(m / set_id / "archives/fs.dm-1.manifest", "ab") as f:
        f.write(b"more")
    code, [(_, status, problems)] = check(m, state)
    assert (code, status) == (ExitCode.DAMAGED, SetStatus.DAMAGED)
    assert set(problems) == {"archives/fs.dm-1.manifest has 23 bytes, the set recorded 19",
                             "archives/fs.sda2.archive is missing"}
    record = results.read_result(results.Verb.CHECK, HOST, state)
    assert record is not None and not record.ok
    assert set(record.sets[0].problems) == set(problems)


def test_another_digest_is_found_by_reading_the_data(tmp_path: Path) -> None:
    m, state = tmp_path / "m", tmp_path / "state"
    set_id = save(m)
    flip(m / set_id / "archives/fs.sda1.archive")
    assert check(m, state)[0] == ExitCode.OK  # the sizes alone
    code, [(_, status, problems)] = check(m, state, read_data=True)
    assert (code, status) == (ExitCode.DAMAGED, SetStatus.DAMAGED)
    assert problems == ("archives/fs.sda1.archive is damaged: its digest differs from the "
                        "one recorded when it was saved",)


def test_a_damaged_description_is_named_once(tmp_path: Path) -> None:
    m, state = tmp_path / "m", tmp_path / "state"
    set_id = save(m)
    flip(m / set_id / "description.toml")
    code, [(_, _, problems)] = check(m, state, read_data=True)
    assert code == ExitCode.DAMAGED
    assert [p.split(" ", 1)[0] for p in problems] == ["description.toml"]


def test_a_tree_without_its_archive_in_the_index(tmp_path: Path) -> None:
    m, state = tmp_path / "m", tmp_path / "state"
    medium = Medium(directory_backend(str(m)))
    with medium.begin_set(SetMeta(host=HOST)) as w:
        w.write_bytes("description.toml", example_text().encode())
        w.commit()
    code, [(_, _, problems)] = check(m, state)
    assert code == ExitCode.DAMAGED
    assert "archives/fs.sda2.archive is missing: the set does not list it, and /boot is " \
        "restored from it" in problems


def test_chains(tmp_path: Path) -> None:
    m, state = tmp_path / "m", tmp_path / "state"
    full = save(m)
    inc = save(m, parent=full)
    inc2 = save(m, parent=inc)
    assert check(m, state, set_id=inc2) == (ExitCode.OK, [(inc2, SetStatus.GOOD, ())])
    record = results.read_result(results.Verb.CHECK, HOST, state)
    assert record is not None and [s.id for s in record.sets] == [full, inc, inc2]
    # The full set damaged: every set built on it is.
    flip(m / full / "archives/fs.sda1.archive")
    code, found = check(m, state, all=True, read_data=True)
    assert code == ExitCode.DAMAGED
    assert [(i, s) for i, s, _ in found] == [(full, SetStatus.DAMAGED),
                                             (inc, SetStatus.DAMAGED),
                                             (inc2, SetStatus.DAMAGED)]
    assert found[2][2] == (f"it builds on set {inc}, which is damaged: it builds on set "
                           f"{full}, which is damaged: archives/fs.sda1.archive is damaged: "
                           "its digest differs from the one recorded when it was saved",)
    # The full set gone: the chain is broken.
    shutil.rmtree(m / full)
    code, found = check(m, state)
    assert code == ExitCode.DAMAGED
    assert found[0][0] == inc2 and "which is damaged" in found[0][2][0]
    code, found = check(m, state, set_id=inc)
    assert found[0][2] == (f"it builds on set {full}, which is damaged: there is no recovery "
                           f"set {full} on {m}",)


def test_all_names_a_set_whose_index_is_damaged(tmp_path: Path) -> None:
    m, state = tmp_path / "m", tmp_path / "state"
    good = save(m)
    bad = save(m)
    (m / bad / "set.json").write_text("{not json")
    code, found = check(m, state, all=True)
    assert code == ExitCode.DAMAGED
    # (Saved within a second: the order of the two is not known.)
    statuses = {i: (s, p) for i, s, p in found}
    assert statuses.keys() == {good, bad}
    assert statuses[good] == (SetStatus.GOOD, ())
    assert statuses[bad][0] == SetStatus.DAMAGED
    assert "the index of recovery set" in statuses[bad][1][0]


def test_the_default_set_is_this_hosts_newest(tmp_path: Path) -> None:
    m, state = tmp_path / "m", tmp_path / "state"
    mine = save(m)
    save(m, host="db1")
    assert check(m, state)[1][0][0] == mine
    medium = Medium(directory_backend(str(m)))
    with pytest.raises(BadInput, match="several hosts"):
        check_sets(medium, CheckOptions(host="other", record=False))
    (tmp_path / "empty").mkdir()
    with pytest.raises(OperationFailed, match="no recovery set"):
        check_sets(Medium(directory_backend(str(tmp_path / "empty"))),
                   CheckOptions(all=True, record=False))


def test_no_rescue_image_is_flagged_not_damage(tmp_path: Path) -> None:
    m = tmp_path / "m"
    save(m, rescue=False)
    r = cli.run("check", "--from", m, "--state-dir", tmp_path / "state", "--json")
    assert r.returncode == 0, r.output
    (found,) = r.json()["sets"]
    assert found["rescue"] is False and found["ok"] is True
    r = cli.run("check", "--from", m, "--state-dir", tmp_path / "state")
    assert "  flagged: saved without its rescue image\n" in r.stdout


def test_the_cli_names_damaged_files_one_per_line(tmp_path: Path) -> None:
    m = tmp_path / "m"
    set_id = save(m)
    flip(m / set_id / "archives/fs.sda1.archive")
    (m / set_id / "rescue.iso").unlink()
    r = cli.run("check", "--from", m, "--read-data", "--state-dir", tmp_path / "state")
    assert r.returncode == 5, r.output
    lines = r.stdout.splitlines()
    assert lines[0] == f"checking set {set_id} (19 files, 26.5 KiB)"  # progress
    assert lines[1] == f"set {set_id} (full, host {HOST}, 19 files, 26.5 KiB): damaged"
    assert lines[2:4] == [
        "  rescue.iso is missing",
        "  archives/fs.sda1.archive is damaged: its digest differs from the one recorded "
        "when it was saved"]
    assert lines[-1].endswith(": 1 not good")


def test_a_set_the_trusted_signers_did_not_sign(tmp_path: Path) -> None:
    if shutil.which("ssh-keygen") is None:
        pytest.skip("needs ssh-keygen")

    keys = tmp_path / "keys"
    keys.mkdir()
    good, other = keypair(keys, "admin"), keypair(keys, "intruder")
    trusted = allowed(keys, good)
    m, state = tmp_path / "m", tmp_path / "state"
    signed = save(m, sign_key=good)
    assert check(m, state, trusted, set_id=signed)[0] == ExitCode.OK
    r = cli.run("check", "--from", m, "--trust", trusted, "--state-dir", state)
    assert r.returncode == 0 and ", signed by admin@test): good" in r.stdout, r.output
    forged = save(m, parent=signed, sign_key=other)
    code, found = check(m, state, trusted, all=True)
    assert code == ExitCode.NOT_AUTHENTIC
    assert {i: s for i, s, _ in found} == {signed: SetStatus.GOOD,
                                           forged: SetStatus.NOT_AUTHENTIC}
    # Built on a set that is not authentic: not authentic either.
    on_forged = save(m, parent=forged, sign_key=good)
    code, found = check(m, state, trusted, set_id=on_forged)
    assert code == ExitCode.NOT_AUTHENTIC
    assert found[0][1] == SetStatus.NOT_AUTHENTIC


def test_the_cli_options(tmp_path: Path) -> None:
    r = cli.run("check", "--from", tmp_path, "--set", "x", "--all")
    assert r.returncode == 2 and "not allowed with" in r.stderr
    r = cli.run("check", "--help")
    assert r.returncode == 0
    for code in ("0 good", "4 a set is not authentic", "5 a set is damaged or incomplete"):
        assert code in " ".join(r.stdout.split())
    r = cli.run("check", "--from", tmp_path / "m", "--set", "nope")
    assert r.returncode == 2 and "is not a recovery set id" in r.stderr


def test_an_unwritable_record_is_a_warning(tmp_path: Path) -> None:
    m = tmp_path / "m"
    save(m)
    blocker = tmp_path / "file"
    blocker.write_text("")
    r = cli.run("check", "--from", m, "--state-dir", blocker / "sub", "--json")
    assert r.returncode == 0, r.output
    assert "the result could not be recorded for status" in r.stderr
    assert json.loads(r.stdout)["recorded"] == []
