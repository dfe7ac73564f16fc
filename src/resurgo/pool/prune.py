"""Pruning the package pool: the packages no set on the medium needs any more.

After sets are deleted, a package that no set left lists in its packages.txt is removed
from the pool, and so are the leftovers of saves killed while they added one (files
under a temporary name, or on S3 unfinished multipart uploads). Every
committed set counts, whoever signed it (a set that only keeps a package can harm
nothing), and the pool is left alone while any save holds a lease on the medium (it may be
adding packages, or have found in the pool those it will need) or when a set's list cannot
be read (it might need any of them). A save that starts after the pool was looked at and
finds a package in it that this removes is not committed (saving.finish says so): saving
again fills the pool again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from resurgo.errors import ResurgoError
from resurgo.media import Medium
from resurgo.media import lease as leases
from resurgo.pool import lists
from resurgo.pool.store import PackagePool, can_hold, package_name, twin_name

log = logging.getLogger("resurgo.pool")


@dataclass(frozen=True)
class PoolPruned:
    removed: tuple[str, ...] = ()  # file names in the pool (or to be, in a dry run)
    removed_bytes: int = 0
    kept: int = 0
    # Why the pool was left alone ("" when it was pruned).
    skipped: str = ""

    def line(self, dry_run: bool) -> str:
        if self.skipped:
            return f"package pool: left alone, {self.skipped}"
        verb = "would remove" if dry_run else "removed"
        return (f"package pool: {len(self.removed)} package(s) no set needs {verb} "
                f"({self.removed_bytes} bytes), {self.kept} kept")

    def data(self) -> dict[str, Any]:
        return {"removed": list(self.removed), "removed_bytes": self.removed_bytes,
                "kept": self.kept, "skipped": self.skipped}


def prune_pool(medium: Medium, *, dry_run: bool = False) -> PoolPruned | None:
    """Remove what no set needs (see the module docstring); None for a medium without a
    pool."""
    backend = medium.backend
    if not can_hold(medium):
        return None
    pool = PackagePool(medium)
    held = pool.file_names()
    leftovers = pool.leftovers()
    if not held and not leftovers:
        return None
    store = backend.leases()
    if store is not None and leases.live_holders(store, medium.url):
        return PoolPruned(kept=len(held), skipped="a save is writing to the medium")
    needed: set[str] = set()
    everyone = Medium(backend)  # every set counts, signed or not
    for info in everyone.list_sets():
        try:
            reader = everyone.open_set(info.id)
            if reader.index.file(lists.PACKAGES_NAME) is None:
                continue
            refs = lists.decode_packages(reader.read_bytes(lists.PACKAGES_NAME))
        except (ResurgoError, lists.ListError) as e:
            log.warning("set %s: %s", info.id, e)
            return PoolPruned(kept=len(held),
                              skipped=f"the package list of set {info.id} cannot be read")
        # Twins no set reads go (a save that reads one holds its lease until its set
        # is committed): the next save that wants one makes it again.
        needed.update(package_name(r) for r in refs)
        needed.update(twin_name(r) for r in refs if r.twin_sha256)
    doomed = sorted(n for n in held if n not in needed)
    if not dry_run:
        for name in doomed:
            pool.remove(name)
        pool.clear_leftovers()
    return PoolPruned(tuple(doomed), sum(held[n] for n in doomed), len(held) - len(doomed))
