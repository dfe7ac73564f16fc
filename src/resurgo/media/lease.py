"""Leases: how saves on several machines share one medium without harming each other.

A save takes a lease for its set before it writes anything of it, renews it as it writes,
and releases it once the set is committed (or dropped). The lease is a small JSON file
(an object on S3) beside the sets, ``.lease-<set id>``, naming its holder (host, pid, a
random token), the set's parent (an incremental save needs it whole) and when it expires.

What respects it:

- the cleaning of leftovers: a staged set (``.incomplete-<id>/`` on a tree medium, a key
  prefix without index on S3) whose lease is live belongs to a save running now, on this
  machine or another, and is left alone; only one without a live lease is a leftover;
- deleting (prune): a set that a running save builds on (its parent, and the parent's
  chain) is kept.

An expired lease (its holder died, or stalled longer than LEASE_SECONDS without writing)
is broken, with a message naming its holder; its holder, if it still runs, finds that at
its next renewal or at its commit and fails without writing its index.

Taken with the medium's atomic primitive: an exclusive create on a directory or an SFTP
server (O_EXCL, SSH_FXF_EXCL); on S3 a conditional PUT (If-None-Match: *, which AWS,
SeaweedFS and MinIO honour), then read back, so that a server ignoring the condition is
still caught unless two saves PUT the same key in the same instant (the key names the set,
whose id carries the second and 16 random bits). Renewed by replacing the file (a rename
over it on a tree medium, a PUT on S3).

Time: expiries are UTC times of the holder's clock; a lease is taken for expired only
SKEW seconds after its expiry, so clocks that differ by less than that (NTP) never break a
live lease. The bound on the one remaining race: at its commit a save renews its lease and
reads it back before it writes its index; a save elsewhere could break it only
LEASE_SECONDS + SKEW later (35 minutes), so the index would have to take that long to write.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from resurgo.errors import OperationFailed
from resurgo.media import setindex

log = logging.getLogger("resurgo.media")

PREFIX = ".lease-"
# How long a lease lasts from its last renewal; renewed (as data is written) once a third
# of it has passed.
LEASE_SECONDS = 1800
RENEW_AFTER = LEASE_SECONDS // 3
# How far apart the clocks of machines sharing a medium may be.
SKEW = 300
# A lease is a few hundred bytes: read no more than this of one.
MAX_LEASE = 4096
#: The kernel's largest pid_max (PID_MAX_LIMIT on 64-bit).
PID_MAX = 1 << 22

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class LeaseStore(Protocol):
    """What a medium does for leases (one per set id, stored beside the sets)."""

    def lease_create(self, set_id: str, data: bytes) -> bool:
        """Create the lease only if there is none; False when there is one."""

    def lease_read(self, set_id: str) -> bytes | None:
        """The lease's bytes (at most MAX_LEASE), or None when there is none."""

    def lease_replace(self, set_id: str, data: bytes) -> None:
        """Replace the lease in one step (a reader sees the old one or the new one)."""

    def lease_remove(self, set_id: str) -> None:
        """Remove the lease; no error when there is none."""

    def lease_ids(self) -> list[str]:
        """The set ids that have a lease."""


def lease_name(set_id: str) -> str:
    return PREFIX + set_id


def lease_id(name: str) -> str | None:
    """The set id of a lease's file name, None for any other name."""
    if name.startswith(PREFIX) and setindex.is_set_id(name[len(PREFIX):]):
        return name[len(PREFIX):]
    return None


@dataclass(frozen=True)
class Holder:
    """Who holds a lease, until when."""

    set_id: str
    host: str
    pid: int
    token: str
    expires: datetime
    parent: str | None = None
    # The kernel's boot id: a pid names a process only on the host and boot it was read on.
    boot: str = ""

    def encode(self) -> bytes:
        return json.dumps({
            "version": 1,
            "set": self.set_id,
            "host": self.host,
            "pid": self.pid,
            "token": self.token,
            "expires": self.expires.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "parent": self.parent,
            "boot": self.boot,
        }, indent=1).encode() + b"\n"

    @classmethod
    def decode(cls, data: bytes) -> Holder | None:
        """The holder a lease names; None for anything that is not a lease of ours (it is
        read from a medium: nothing in it is trusted beyond its shape)."""
        try:
            raw: Any = json.loads(data.decode("utf-8"))
            if not isinstance(raw, dict) or raw.get("version") != 1:
                return None
            set_id, host, pid, token = raw["set"], raw["host"], raw["pid"], raw["token"]
            parent = raw.get("parent")
            boot = raw.get("boot", "")
            if not isinstance(boot, str) or len(boot) > 64:
                return None
            if not (isinstance(set_id, str) and setindex.is_set_id(set_id)
                    and isinstance(host, str) and len(host) <= 255 and host.isprintable()
                    # a pid the kernel can have (os.kill overflows on a larger one)
                    and type(pid) is int and 0 < pid <= PID_MAX
                    and isinstance(token, str) and len(token) <= 64 and token.isprintable()
                    and (parent is None or (isinstance(parent, str)
                                            and setindex.is_set_id(parent)))):
                return None
            expires = datetime.strptime(raw["expires"], "%Y-%m-%dT%H:%M:%SZ").replace(
                tzinfo=UTC)
        except (UnicodeDecodeError, ValueError, KeyError, TypeError):
            return None
        return cls(set_id, host, pid, token, expires, parent, boot)

    def who(self) -> str:
        return f"host {self.host}, pid {self.pid}"

    def expired(self, now: datetime) -> bool:
        return now > self.expires + timedelta(seconds=SKEW)

    def dead_here(self) -> bool:
        """Its save ran on this machine, since its last boot, and its process is gone (a
        killed save's lease need not wait for its expiry)."""
        if not self.boot or self.boot != boot_id() or self.host != socket.gethostname():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except OSError:
            return False
        return False


def boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            return f.read(64).strip()
    except OSError:
        return ""


def live_holder(store: LeaseStore, set_id: str, url: str,
                now: Clock | None = None) -> Holder | None:
    """The holder of the set's lease while it is live. An expired (or unreadable) lease is
    broken here, with a message: its save is dead or has stalled beyond its lease."""
    data = store.lease_read(set_id)
    if data is None:
        return None
    holder = Holder.decode(data)
    when = (now or utc_now)()
    if holder is not None and holder.set_id == set_id and not holder.expired(when):
        if not holder.dead_here():
            return holder
        log.warning("breaking the lease of set %s on %s held by %s: that process, of this "
                    "machine, is gone; what it left is removed", set_id, url, holder.who())
    elif holder is None or holder.set_id != set_id:
        log.warning("breaking the lease of set %s on %s: it is not a lease resurgo wrote",
                    set_id, url)
    else:
        log.warning(
            "breaking the lease of set %s on %s held by %s: it expired at %s (now %s); "
            "that save died or stalled, and what it left is removed",
            set_id, url, holder.who(), f"{holder.expires:%Y-%m-%d %H:%M:%S}Z",
            f"{when:%Y-%m-%d %H:%M:%S}Z")
    store.lease_remove(set_id)
    return None


def live_holders(store: LeaseStore, url: str, now: Clock | None = None) -> list[Holder]:
    """The live leases on the medium (expired ones are broken on the way)."""
    out = []
    for set_id in store.lease_ids():
        holder = live_holder(store, set_id, url, now)
        if holder is not None:
            out.append(holder)
    return out


class Lease:
    """A lease this process holds, for one set being saved."""

    def __init__(self, store: LeaseStore, url: str, holder: Holder, now: Clock,
                 seconds: int) -> None:
        self._store = store
        self._url = url
        self.holder = holder
        self._now = now
        self._seconds = seconds
        self._renewed = now()
        self.released = False

    @classmethod
    def take(cls, store: LeaseStore, url: str, set_id: str, parent: str | None, *,
             now: Clock | None = None, seconds: int | None = None) -> Lease | None:
        """The set's lease, or None when another save holds one for that id. ``now`` and
        ``seconds`` default to the module's utc_now and LEASE_SECONDS (tests change them)."""
        now = now or utc_now
        seconds = seconds or LEASE_SECONDS
        holder = Holder(set_id, socket.gethostname(), os.getpid(), secrets.token_hex(16),
                        now() + timedelta(seconds=seconds), parent, boot_id())
        if not store.lease_create(set_id, holder.encode()):
            return None
        lease = cls(store, url, holder, now, seconds)
        log.debug("lease of set %s taken on %s until %s", set_id, url, holder.expires)
        return lease

    def _lost(self, found: Holder | None) -> OperationFailed:
        now = "another save holds it now" if found else "it is gone"
        return OperationFailed(
            f"recovery set {self.holder.set_id} was not committed: its lease on {self._url} "
            f"is no longer its own ({now}: broken as expired), and what was staged of it "
            "may be gone",
            "the save stalled longer than its lease; save again (and see why it stalled: "
            "a hung medium, a suspended machine, a clock far off)",
        )

    def _current(self) -> Holder | None:
        data = self._store.lease_read(self.holder.set_id)
        return Holder.decode(data) if data is not None else None

    def renew(self) -> None:
        """Extend the lease; fails when it is no longer this save's."""
        found = self._current()
        if found is None or found.token != self.holder.token:
            raise self._lost(found)
        now = self._now()
        self.holder = Holder(self.holder.set_id, self.holder.host, self.holder.pid,
                             self.holder.token, now + timedelta(seconds=self._seconds),
                             self.holder.parent, self.holder.boot)
        self._store.lease_replace(self.holder.set_id, self.holder.encode())
        self._renewed = now
        log.debug("lease of set %s renewed on %s until %s", self.holder.set_id, self._url,
                  self.holder.expires)

    def renew_if_due(self) -> None:
        if (self._now() - self._renewed).total_seconds() >= self._seconds / 3:
            self.renew()

    def check(self) -> None:
        """Before the commit: renewed, read back as this save's, and far from its end."""
        self.renew()
        found = self._current()
        if found is None or found.token != self.holder.token:
            raise self._lost(found)
        left = (found.expires - self._now()).total_seconds()
        if left < self._seconds / 2:
            raise self._lost(found)

    def release(self) -> None:
        """Give the lease up (never raises: a lease left behind expires)."""
        if self.released:
            return
        self.released = True
        try:
            found = self._current()
            if found is not None and found.token == self.holder.token:
                self._store.lease_remove(self.holder.set_id)
        except OperationFailed as e:
            log.warning("could not release the lease of set %s on %s (it expires at %s): %s",
                        self.holder.set_id, self._url, self.holder.expires, e.message)
