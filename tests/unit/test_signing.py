"""Signed recovery sets: ssh-keygen signatures over set.json, checked before anything is read.

Real keys (ssh-keygen), real sets on a directory medium, the real CLI: a set that is
unsigned, signed by another key, or changed after signing is refused with exit code 4.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from resurgo import signing
from resurgo.errors import BadInput, ExitCode, NotAuthentic
from resurgo.media import Medium, SetMeta
from resurgo.media.directory import directory_backend
from resurgo.media.setindex import content_pin
from resurgo.recovery.load import choose_set
from tests.support import cli
from tests.support.sshkeys import allowed, keypair

ROOT = Path("/")

pytestmark = pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="needs ssh-keygen")


def save(medium_dir: Path, key: Path | None, payload: bytes = b"data", host: str = "h1",
         set_id: str | None = None) -> str:
    medium = Medium(directory_backend(str(medium_dir)))
    sign_key = signing.SignKey.load(key) if key else None
    with medium.begin_set(SetMeta(host=host), sign_key=sign_key, set_id=set_id) as w:
        w.write_bytes("description.toml", payload)
        return w.commit().id


@pytest.fixture()
def keys(tmp_path: Path) -> tuple[Path, Path, Path]:
    d = tmp_path / "keys"
    d.mkdir()
    good = keypair(d, "admin")
    other = keypair(d, "intruder")
    return good, other, allowed(d, good)


def test_a_signed_set_is_read_and_names_its_signer(tmp_path: Path, keys: tuple[Path, ...]) -> None:
    good, _, trusted = keys
    set_id = save(tmp_path / "m", good)
    assert (tmp_path / "m" / set_id / "set.json.sig").is_file()
    medium = Medium(directory_backend(str(tmp_path / "m")), signing.Trust.load(trusted))
    [info] = medium.list_sets()
    assert info.signed_by == "admin@test"
    assert medium.open_set(set_id).read_bytes("description.toml") == b"data"
    # The signature is not one of the set's files (it signs the index that lists them).
    assert "set.json.sig" not in [f.name for f in medium.open_set(set_id).files()]


@pytest.mark.parametrize("attack", ["unsigned", "other_key", "index_changed", "sig_swapped",
                                    "wrong_namespace", "garbage_sig", "sig_is_symlink"])
def test_sets_that_trusted_signers_did_not_sign_are_refused(
        tmp_path: Path, keys: tuple[Path, ...], attack: str) -> None:
    good, other, trusted = keys
    m = tmp_path / "m"
    if attack == "unsigned":
        set_id = save(m, None)
    elif attack == "other_key":
        set_id = save(m, other)
    elif attack == "wrong_namespace":
        set_id = save(m, good)
        trusted = allowed(tmp_path / "keys", good, namespace="file")
    else:
        set_id = save(m, good)
    index = m / set_id / "set.json"
    sig = m / set_id / "set.json.sig"
    if attack == "index_changed":
        # One byte of a digest: the file it names could now be anything.
        doc = json.loads(index.read_text())
        d = doc["files"][0]["blake3"]
        doc["files"][0]["blake3"] = ("0" if d[0] != "0" else "1") + d[1:]
        index.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    elif attack == "sig_swapped":
        # A genuine signature by the trusted key, of another set.
        donor = save(tmp_path / "m2", good, payload=b"other")
        shutil.copyfile(tmp_path / "m2" / donor / "set.json.sig", sig)
    elif attack == "garbage_sig":
        sig.write_bytes(b"-----BEGIN SSH SIGNATURE-----\nAAAA\n-----END SSH SIGNATURE-----\n")
    elif attack == "sig_is_symlink":
        sig.unlink()
        sig.symlink_to("/dev/zero")
    medium = Medium(directory_backend(str(m)), signing.Trust.load(trusted))
    with pytest.raises(NotAuthentic) as e:
        medium.open_set(set_id)
    assert e.value.exit_code == ExitCode.NOT_AUTHENTIC == 4
    assert medium.list_sets() == []
    assert [i for i, _ in medium.refused] == [set_id]
    with pytest.raises(NotAuthentic):
        choose_set(medium, None)
    # Without trusted signers the same set reads (signatures are then not asked for),
    # except where the change broke the index itself.
    if attack not in ("index_changed",):
        assert Medium(directory_backend(str(m))).open_set(set_id).id == set_id


def test_the_newest_trusted_set_wins_over_a_newer_planted_one(
        tmp_path: Path, keys: tuple[Path, ...]) -> None:
    good, other, trusted = keys
    m = tmp_path / "m"
    mine = save(m, good)
    planted = save(m, other, set_id="20991231T000000Z-beef")  # dated 2099
    medium = Medium(directory_backend(str(m)), signing.Trust.load(trusted))
    assert choose_set(medium, None).id == mine
    with pytest.raises(NotAuthentic):
        choose_set(medium, planted)


def test_cli_exit_code_4_and_the_trusted_view(tmp_path: Path, keys: tuple[Path, ...]) -> None:
    good, other, trusted = keys
    m = tmp_path / "m"
    planted = save(m, other)
    r = cli.run("list", m, "--trust", trusted, cwd=ROOT)
    assert r.returncode == 4, r.stderr
    assert planted in r.stderr and "does not trust" in r.stderr
    r = cli.run("plan", "--from", m, "--trust", trusted, cwd=ROOT)
    assert r.returncode == 4, r.stderr
    mine = save(m, good)
    r = cli.run("list", m, "--trust", trusted, "--json", cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert [(s["id"], s["signed_by"]) for s in json.loads(r.stdout)] == [(mine, "admin@test")]
    r = cli.run("list", m, "--json", cwd=ROOT)
    assert sorted(s["id"] for s in json.loads(r.stdout)) == sorted([mine, planted])


def test_bad_trust_files_are_bad_input(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("# nothing\n")
    with pytest.raises(BadInput):
        signing.Trust.load(empty)
    with pytest.raises(BadInput):
        signing.Trust.load(tmp_path / "missing")
    link = tmp_path / "link"
    link.symlink_to("/dev/zero")
    with pytest.raises(BadInput):
        signing.Trust.load(link)
    r = cli.run("list", tmp_path, "--trust", tmp_path / "missing", cwd=ROOT)
    assert r.returncode == 2


def test_a_key_the_signers_do_not_trust_stops_save_before_it_starts(
        tmp_path: Path, keys: tuple[Path, ...]) -> None:
    _, other, trusted = keys
    with pytest.raises(NotAuthentic):
        signing.trust_for_save(signing.SignKey.load(other), signing.Trust.load(trusted))
    own = signing.trust_for_save(signing.SignKey.load(other), None)
    assert own is not None and b'namespaces="resurgo-set"' in own.text


def test_the_signing_key_never_reaches_argv_in_clear(tmp_path: Path,
                                                     keys: tuple[Path, ...]) -> None:
    good, _, _ = keys
    secret = good.read_text()
    seen: list[list[str]] = []
    import resurgo.run as runner

    real = runner.run

    def spy(argv: list[str], **kw: object) -> runner.Result:
        seen.append([str(a) for a in argv])
        return real(argv, **kw)  # type: ignore[arg-type]

    runner.run = spy  # type: ignore[assignment]
    try:
        signing.SignKey.load(good).sign(b"x")
    finally:
        runner.run = real  # type: ignore[assignment]
    assert seen and all(secret.strip() not in " ".join(a) for a in seen)


def test_the_pin_covers_every_file_but_the_image(tmp_path: Path) -> None:
    from resurgo.media.setindex import FileEntry

    files = [FileEntry("a", 1, "0" * 64), FileEntry("rescue.iso", 9, "1" * 64)]
    pin = content_pin("20261206T000000Z-ab12", files, "rescue.iso")
    assert pin == content_pin("20261206T000000Z-ab12", files[:1], "rescue.iso")
    assert pin != content_pin("20261206T000000Z-ab13", files, "rescue.iso")
    assert pin != content_pin("20261206T000000Z-ab12", [FileEntry("a", 1, "2" * 64)],
                              "rescue.iso")


def test_an_unsigned_save_where_signers_are_trusted_is_refused(
        keys: tuple[Path, ...]) -> None:
    _, _, trusted = keys
    with pytest.raises(BadInput, match="--sign-key"):
        signing.trust_for_save(None, signing.Trust.load(trusted))
    assert signing.trust_for_save(None, None) is None


def test_a_changed_set_signed_by_a_key_of_several_principals_is_refused(
        tmp_path: Path, keys: tuple[Path, ...]) -> None:
    """Each principal of the key is tried in turn (they were once written to one file name
    per principal length: two of one length gave a traceback instead of a refusal)."""
    good, _, _ = keys
    kind, blob = Path(f"{good}.pub").read_text().split()[:2]
    signers = tmp_path / "several"
    signers.write_text(f'aaaa@site,bbbb@site namespaces="resurgo-set" {kind} {blob}\n')
    trust = signing.Trust.load(signers)
    signature = signing.SignKey.load(good).sign(b"the index\n")
    assert trust.verify(b"the index\n", signature, "x") == "aaaa@site"
    with pytest.raises(NotAuthentic, match="does not match its signature"):
        trust.verify(b"the index, changed\n", signature, "x")
