"""Per-migration peer grants: whom a helper lets stream in, for which migration, until when."""

from __future__ import annotations

import asyncssh
from ferry_helper.grants import PeerGrants


def test_a_grant_names_its_migration_until_it_expires_or_is_revoked() -> None:
    now = [1000.0]
    grants = PeerGrants(clock=lambda: now[0])
    first, second = (asyncssh.generate_private_key("ssh-ed25519") for _ in range(2))
    grants.authorize("uid-1", first, ttl_seconds=60)
    grants.authorize("uid-2", second, ttl_seconds=600)
    assert grants.uid_for(first) == "uid-1"
    assert grants.uid_for(second) == "uid-2"
    assert grants.uid_for(asyncssh.generate_private_key("ssh-ed25519")) is None

    now[0] += 61
    assert grants.uid_for(first) is None, "expired"
    assert len(grants) == 1, "expired grants are dropped"

    grants.revoke("uid-2")
    assert grants.uid_for(second) is None
    assert len(grants) == 0
