"""Per-migration peer keys: who may stream into this node, for which migration, until when.

The operator grants a fresh public key for one migration's UID before the
source streams; the grant ends when the migration ends on this node (cleanup,
finish or rollback) or when its time is up, whichever comes first. Grants live
in memory only: a restarted helper knows none, and the operator grants again
when it retries the step.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import asyncssh


@dataclass(frozen=True)
class Grant:
    uid: str
    expires: float


class PeerGrants:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._by_fingerprint: dict[str, Grant] = {}

    def authorize(self, uid: str, key: asyncssh.SSHKey, ttl_seconds: float) -> None:
        self._prune()
        self._by_fingerprint[key.get_fingerprint()] = Grant(uid, self._clock() + ttl_seconds)

    def uid_for(self, key: asyncssh.SSHKey) -> str | None:
        """The migration ``key`` may stream into, or None (unknown or expired)."""
        self._prune()
        grant = self._by_fingerprint.get(key.get_fingerprint())
        return grant.uid if grant else None

    def revoke(self, uid: str) -> None:
        self._by_fingerprint = {f: g for f, g in self._by_fingerprint.items() if g.uid != uid}

    def __len__(self) -> int:
        self._prune()
        return len(self._by_fingerprint)

    def _prune(self) -> None:
        now = self._clock()
        self._by_fingerprint = {f: g for f, g in self._by_fingerprint.items() if g.expires > now}
