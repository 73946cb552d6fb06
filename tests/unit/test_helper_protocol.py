from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from ferry_helper.operations import KeyedLocks
from ferry_helper.staging import Staging
from ferry_wire import OPERATOR_USER, PEER_USER, Operation, RemoteError, allowed
from ferry_wire.framing import Event, decode, encode, parse_line
from ferry_wire.migration import SendRequest

UID = "0b6f7b8e-2f3c-4f7e-9a51-3c2d1e0f9a8b"


def test_a_peer_may_only_send_archives_in_and_take_its_pages_back() -> None:
    assert allowed(PEER_USER, Operation.RECEIVE)
    assert allowed(PEER_USER, Operation.IMAGE_RECEIVE)
    assert allowed(PEER_USER, Operation.PAGES_OUT)
    assert not allowed(OPERATOR_USER, Operation.PAGES_OUT)
    for operation in (
        Operation.PAGES_OPEN,
        Operation.PAGES_FETCH,
        Operation.PAGES_IDENTITY,
        Operation.CHECKPOINT,
        Operation.RESTORE,
        Operation.ROLLBACK,
        Operation.CLEANUP,
        Operation.FINISH_SOURCE,
        Operation.SEND,
    ):
        assert not allowed(PEER_USER, operation)


def test_the_operator_may_not_push_archives_and_strangers_nothing() -> None:
    assert allowed(OPERATOR_USER, Operation.CHECKPOINT)
    assert not allowed(OPERATOR_USER, Operation.RECEIVE)
    assert not allowed("root", Operation.PROBE)


def test_events_round_trip_as_json_lines() -> None:
    event = Event(type="progress", data={"bytesSent": 3})
    line = encode(event)
    assert line.endswith(b"\n")
    assert decode(line) == event


@pytest.mark.parametrize("uid", ["../etc", "x", "0b6f7b8e/../../root", ""])
def test_staging_refuses_anything_but_a_uid(tmp_path: Path, uid: str) -> None:
    staging = Staging(tmp_path / "staging")
    with pytest.raises(ValueError, match="UID"):
        staging.archive(uid)


def test_staging_is_private_and_journals_steps(tmp_path: Path) -> None:
    staging = Staging(tmp_path / "staging")
    directory = staging.directory(UID)
    assert directory.stat().st_mode & 0o777 == 0o700
    assert staging.recorded(UID, "checkpoint") is None
    staging.record(UID, "checkpoint", {"sha256": "x"})
    assert staging.recorded(UID, "checkpoint") == {"sha256": "x"}
    staging.remove(UID)
    assert not directory.exists()


def test_a_container_is_claimed_by_one_migration_at_a_time(tmp_path: Path) -> None:
    staging = Staging(tmp_path / "staging")
    other = "1b6f7b8e-2f3c-4f7e-9a51-3c2d1e0f9a8b"
    container = "a" * 64
    assert staging.claim(container, UID) is None
    assert staging.claim(container, UID) is None  # again: a resumed step
    assert staging.claim(container, other) == UID
    assert staging.holder(container) == UID
    staging.release(UID)
    assert staging.holder(container) is None
    assert staging.claim(container, other) is None


def test_a_bad_request_is_explained_without_echoing_its_credential() -> None:
    credential = "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA-very-secret\n"
    line = json.dumps({"uid": "u", "credential": credential, "target": "nowhere"}).encode()
    with pytest.raises(RemoteError) as refused:
        parse_line(SendRequest, line)
    assert refused.value.reason == "BadRequest"
    assert "target" in refused.value.message
    assert "very-secret" not in refused.value.message


def test_a_closed_migration_stays_closed_for_a_week_and_leaves_nothing_else(
    tmp_path: Path,
) -> None:
    staging = Staging(tmp_path / "staging")
    staging.close(UID)
    assert staging.is_closed(UID)
    assert not (tmp_path / "staging" / UID).exists(), "asking made no directory"
    now = time.time()
    assert staging.prune_closed(now=now + 6 * 24 * 3600) == []
    assert staging.prune_closed(now=now + 8 * 24 * 3600) == [UID]
    assert not staging.is_closed(UID)


def test_per_migration_locks_serialize_and_are_forgotten() -> None:
    locks = KeyedLocks()
    order: list[str] = []

    async def step(name: str, pause: float) -> None:
        async with locks.hold(UID):
            order.append(f"{name} in")
            await asyncio.sleep(pause)
            order.append(f"{name} out")

    async def both() -> None:
        first = asyncio.create_task(step("rollback", 0.05))
        await asyncio.sleep(0)
        await asyncio.gather(first, step("checkpoint", 0))

    asyncio.run(both())
    assert order == ["rollback in", "rollback out", "checkpoint in", "checkpoint out"]
    assert len(locks) == 0
