"""Reading a recovery set from its medium, everything checked before any disk is touched.

``load_set`` chooses the set, checks it and every set its incremental chain reads from
(every file present with its recorded size), reads and validates the description, makes
sure each ``resurgo:restore`` command has its archive and manifest, refuses an encrypted
set without an identity, and reads the head of every manifest (which proves the identity
opens it and names the sets its archives come from). Nothing here writes anything.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from resurgo import fileformat
from resurgo.engine import Source
from resurgo.engine.source import ManifestStream
from resurgo.errors import BadInput, Damaged, NotAuthentic, OperationFailed, PreconditionFailed
from resurgo.media import Medium, SetInfo, SetReader
from resurgo.model import Description
from resurgo.pool import lists as pool_lists
from resurgo.pool import needs as pool_needs
from resurgo.recovery import secrets, setfiles
from resurgo.restoreunits import Unit, units

log = logging.getLogger("resurgo.recovery")


@dataclass(frozen=True)
class LoadedSet:
    medium: Medium
    reader: SetReader
    # The sets an incremental chain reads from, by id (this one included).
    chain: dict[str, SetReader]
    description: Description
    description_sha256: str
    units: tuple[Unit, ...]
    encrypted: bool
    identity: Path | None
    warnings: tuple[str, ...] = ()
    # What a package-aware set needs from its medium's pool (resurgo.pool).
    pool: pool_needs.PoolNeeds | None = None
    # Each tree's pooled list as first read (and checked): the restore and the check
    # after it use that very list, without reading and parsing it again.
    _pooled: dict[str, list[pool_lists.PooledFile]] = field(
        default_factory=dict, compare=False, repr=False)

    @property
    def id(self) -> str:
        return self.reader.id

    @property
    def info(self) -> SetInfo:
        return self.reader.info

    def manifest(self, unit: Unit) -> Source:
        return file_source(self.reader, unit.manifest_name)

    def pooled(self, unit: Unit) -> list[pool_lists.PooledFile]:
        """The tree's files its packages give back (none in a set without a pool)."""
        if self.pool is None or self.reader.index.file(unit.pooled_name) is None:
            return []
        found = self._pooled.get(unit.pooled_name)
        if found is None:
            found = pool_needs.read_pooled(file_source(self.reader, unit.pooled_name),
                                           self.identity)
            self._pooled[unit.pooled_name] = found
        return list(found)

    def archives(self, unit: Unit) -> Callable[[str], Source]:
        def lookup(set_id: str) -> Source:
            reader = self.chain.get(set_id)
            if reader is None:
                raise KeyError(set_id)
            return file_source(reader, unit.archive_name)

        return lookup


def file_source(reader: SetReader, name: str) -> Source:
    return Source(f"{name} of set {reader.id}", lambda: reader.open(name))


def choose_set(medium: Medium, set_id: str | None) -> SetInfo:
    """The set named, or the newest one (when the medium holds one host's sets)."""
    sets = medium.list_sets()
    if set_id is not None:
        for s in sets:
            if s.id == set_id:
                return s
        medium.open_set(set_id)  # says why (bad id, no such set)
        raise OperationFailed(f"there is no recovery set {set_id} on {medium.url}")
    if not sets and medium.refused:
        raise NotAuthentic(
            f"no recovery set on {medium.url} is signed by a trusted key: "
            + ", ".join(i for i, _ in medium.refused) + " refused",
            "recover from a set signed by a trusted key (see --trust)",
        )
    if not sets:
        raise OperationFailed(
            f"there is no recovery set on {medium.url}",
            "save one first (resurgo save --to MEDIUM), or check the medium's URL",
        )
    hosts = sorted({s.host or "?" for s in sets})
    if len(hosts) > 1:
        raise BadInput(
            f"{medium.url} holds the sets of several hosts ({', '.join(hosts)})",
            "choose one with --set ID (resurgo list MEDIUM shows them)",
        )
    return sets[-1]


def set_chain(medium: Medium, reader: SetReader) -> dict[str, SetReader]:
    """The set and every parent it builds on, each checked complete."""
    chain = {reader.id: reader}
    current = reader
    while current.info.parent is not None:
        parent = current.info.parent
        if parent in chain:
            raise OperationFailed(f"the sets on {medium.url} name each other as parents")
        try:
            current = medium.open_set(parent)
        except OperationFailed:
            raise OperationFailed(
                f"recovery set {reader.id} builds on set {parent}, which is not on "
                f"{medium.url}",
                "restore from a full set, or from an incremental one whose chain is complete",
            ) from None
        chain[parent] = current
    for r in chain.values():
        r.check()
    return chain


def checked_description(reader: SetReader) -> tuple[Description, str, list[str]]:
    """The set's description as it was saved (an encrypted set's secret config files
    still sealed), checked, with its digest (of the bytes in the set) and warnings."""
    raw = reader.read_bytes(setfiles.DESCRIPTION)
    expected = None
    if reader.index.file(setfiles.DESCRIPTION_DIGEST) is not None:
        text = reader.read_bytes(setfiles.DESCRIPTION_DIGEST).decode("ascii", "replace").split()
        expected = text[0] if text else ""
    name = f"{setfiles.DESCRIPTION} of set {reader.id}"
    report = fileformat.check_bytes(raw, name, expected_digest=expected)
    if report.description is None:
        raise OperationFailed(
            f"the description in recovery set {reader.where} is not valid: "
            + "; ".join(str(p) for p in report.problems[:5]),
            "use another set",
        )
    return report.description, hashlib.sha256(raw).hexdigest(), list(report.warnings)


def read_description(reader: SetReader, identity: Path | None = None,
                     ) -> tuple[Description, str, list[str]]:
    """The set's description, checked, with its digest (of the bytes in the set) and
    warnings. With the identity, the secret config files sealed in an encrypted set are
    put back from its secrets file; without, they stay sealed (and a warning says so)."""
    saved, digest, warnings = checked_description(reader)
    desc = secrets.merged(reader, saved, digest, identity, warnings)
    for w in warnings:
        # Said as a description file's are (fileformat.read): a newer minor version, and
        # the secret files an encrypted set keeps sealed when no identity is given.
        log.warning("%s", w)
    return desc, digest, warnings


def check_identity(identity: Path | None) -> None:
    if identity is not None and (not identity.is_file() or not os.access(identity, os.R_OK)):
        raise BadInput(f"--identity {identity}: not a readable file")


def load_set(
    medium: Medium,
    set_id: str | None,
    *,
    identity: Path | None = None,
    read_manifests: bool = True,
    read_packages: bool | None = None,
) -> LoadedSet:
    """The set, checked as the module docstring says; raises before anything is written.

    ``read_manifests=False`` (for a plan, which reads no data) skips the manifests and
    does not ask for the identity of an encrypted set. ``read_packages`` (default: as
    ``read_manifests``) reads every package the set needs from the pool whole; False
    leaves the pool to the caller (ls reads no package; restore --path checks, whole,
    those of the files it restores, so a set whose pool lost a package still lists, and
    restores what does not need it).
    """
    check_identity(identity)
    info = choose_set(medium, set_id)
    reader = medium.open_set(info.id)
    chain = set_chain(medium, reader)
    encrypted = setfiles.encrypted(info.labels)
    if encrypted and identity is None and read_manifests:
        who = setfiles.recipients(info.labels)
        raise PreconditionFailed(
            f"recovery set {info.id} is encrypted (age"
            + (f", for {', '.join(who)}" if who else "")
            + ") and no --identity was given: nothing was written",
            "give the age identity file (the secret key) with --identity FILE",
        )
    if reader.index.file(setfiles.DESCRIPTION) is None:
        raise OperationFailed(
            f"recovery set {reader.where} holds no description (it is not a whole set)",
            "use another set",
        )
    desc, digest, warnings = read_description(reader, identity)
    try:
        found = tuple(units(desc))
    except BadInput as e:
        raise OperationFailed(f"the description in set {info.id}: {e.message}") from None
    for u in found:
        for name in (u.manifest_name, u.archive_name):
            if reader.index.file(name) is None:
                raise Damaged(
                    f"recovery set {reader.where} has no {name} for {u.label} "
                    f"({u.command.program} {' '.join(u.command.args)})",
                    "the set is incomplete: use another set",
                )
    # Before any disk is touched: every package the set needs is in the pool, with its
    # size; read whole and hashed when the data will be read.
    needs = pool_needs.needs_of(medium, reader)
    if needs is not None and read_packages is not False:
        pool_needs.check(needs, read=read_manifests if read_packages is None
                         else read_packages)
    for u in found:
        if reader.index.file(u.pooled_name) is not None and needs is None:
            raise Damaged(f"recovery set {reader.where} has {u.pooled_name} but no "
                          f"{pool_lists.PACKAGES_NAME}", "the set is incomplete: use another set")
    loaded = LoadedSet(medium, reader, chain, desc, digest, found, encrypted, identity,
                       tuple(warnings), needs)
    if read_manifests:
        for u in found:
            check_manifest_chain(loaded, u)
            if medium.trust is not None:
                # The restore checks every archive entry against its manifest line: a
                # manifest proven whole (the index is signed) before any write keeps a
                # changed archive from writing anything the signer did not save.
                reader.read_through(u.manifest_name)
            if needs is not None:
                loaded.pooled(u)  # whole and well formed before any write
    return loaded


def check_manifest_chain(loaded: LoadedSet, unit: Unit) -> None:
    """The manifest opens (with the identity) and every set its chain names is there."""
    with ManifestStream(loaded.manifest(unit), loaded.identity) as ms:
        chain = ms.header.chain
        pooled = ms.header.pooled
    if pooled and (loaded.pool is None or loaded.reader.index.file(unit.pooled_name) is None):
        raise Damaged(
            f"{unit.manifest_name} in set {loaded.id} leaves the package files of "
            f"{unit.label} to the package pool, and the set has no {unit.pooled_name} or "
            f"{pool_lists.PACKAGES_NAME}", "the set is incomplete: use another set")
    if chain[-1] != loaded.id:
        raise Damaged(
            f"{unit.manifest_name} in set {loaded.id} is the manifest of set {chain[-1]}",
            "the set was changed by hand: use another set",
        )
    for set_id in chain:
        reader = loaded.chain.get(set_id)
        if reader is None:
            raise Damaged(
                f"{unit.label} needs the archive of set {set_id}, which is not in the chain "
                f"of set {loaded.id} on {loaded.medium.url}",
                "restore from a set whose chain is complete",
            )
        if reader.index.file(unit.archive_name) is None:
            raise Damaged(
                f"set {set_id} has no {unit.archive_name}, which {unit.label} needs",
                "the set is incomplete: use another set",
            )
