"""A migration's bandwidth limit on the archive it sends: the pacer, and ``send`` paced.

The pacer is checked twice: against a fake clock (what it lets through in any
stretch of time), and in real time (8 MiB at 4 MiB/s). The streams are two
helpers on loopback, as in :mod:`test_helper_streams`: the source streams its
archive into the target over SSH, held to the rate the request gives, and
says the rate it measured. Bounds are generous (within 15 %): the cluster's
own check wants 10 % on real links.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from pathlib import Path
from typing import Any

import asyncssh
import pytest
from archives import add_file, checkpoint_archive
from ferry_helper.operations import Channel
from ferry_helper.pacing import MAX_BURST, MIN_BURST, Pacer, burst_for
from ferry_wire.migration import Checkpointed, SendRequest, Sent, TransferProgress
from ferry_wire.stored import SendStoredRequest, Stored
from helper_fakes import CONTAINER_ID, docker_only, serving
from pydantic import ValidationError

UID = "0b6f7b8e-2f3c-4f7e-9a51-3c2d1e0f9a8b"
CHECKPOINT = "4b6f7b8e-2f3c-4f7e-9a51-3c2d1e0f9a8b"
MiB = 1 << 20
TOLERANCE = 0.15
PEER_KEY = asyncssh.generate_private_key("ssh-ed25519")


class FakeTime:
    """A clock that only sleeps move."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def within(measured: float | None, configured: float) -> bool:
    return measured is not None and abs(measured - configured) <= TOLERANCE * configured


# -- the pacer


def test_a_pacer_never_lets_more_through_than_its_burst_plus_its_rate() -> None:
    fake = FakeTime()
    pacer = Pacer(1000, burst=200, clock=fake.clock, sleep=fake.sleep)
    start = fake.now
    sends: list[tuple[float, int]] = []

    async def stream() -> None:
        for size in (100, 300, 50, 50, 1000, 10):
            await pacer.spend(size)
            sends.append((fake.now - start, size))
            fake.now += 0.05  # the writes take time too
        await asyncio.sleep(0)

    asyncio.run(stream())
    sent = 0
    for at, size in sends:
        sent += size
        assert sent <= 200 + 1000 * at + 1e-6, (at, sent)
    # It starts empty: no head start, the first bytes wait for their tokens too.
    assert sends[0][0] == pytest.approx(0.1)
    assert all(
        sum(n for _, n in sends[: i + 1]) <= 1000 * at + 1e-6 for i, (at, _) in enumerate(sends)
    )
    assert pacer.sent == 1510


def test_an_idle_pacer_saves_up_its_burst_and_no_more() -> None:
    fake = FakeTime()
    pacer = Pacer(1000, burst=200, clock=fake.clock, sleep=fake.sleep)

    async def stream() -> None:
        await pacer.spend(100)  # starts empty: waits 0.1 s
        fake.now += 60  # a long stall: the bucket fills up to its burst only
        await pacer.spend(200)
        await pacer.spend(100)

    asyncio.run(stream())
    assert fake.sleeps == pytest.approx([0.1, 0.1])


def test_a_pacer_without_a_rate_only_measures() -> None:
    fake = FakeTime()
    pacer = Pacer(None, clock=fake.clock, sleep=fake.sleep)

    async def stream() -> None:
        for _ in range(64):
            await pacer.spend(MiB)
        fake.now += 2.0
        pacer.finish()
        fake.now += 10.0  # after the end: not counted

    asyncio.run(stream())
    assert fake.sleeps == []
    assert pacer.measured() == pytest.approx(32 * MiB)


def test_bursts_are_a_tenth_of_a_second_within_bounds() -> None:
    assert burst_for(4 * MiB) == MAX_BURST == 256 * 1024
    assert burst_for(1_000_000) == 100_000
    assert burst_for(1000) == MIN_BURST
    assert burst_for(None) == MAX_BURST
    with pytest.raises(ValueError, match="positive"):
        Pacer(0)
    assert Pacer(1000).measured() is None, "nothing sent, nothing measured"


def test_8_mib_at_4_mib_per_second_take_two_seconds() -> None:
    pacer = Pacer(4 * MiB)

    async def stream() -> float:
        started = time.monotonic()
        left = 8 * MiB
        while left:
            piece = min(pacer.piece, left)
            await pacer.spend(piece)
            left -= piece
        pacer.finish()
        return time.monotonic() - started

    elapsed = asyncio.run(stream())
    assert 2.0 * (1 - TOLERANCE) <= elapsed <= 2.0 * (1 + TOLERANCE), elapsed
    measured = pacer.measured()
    assert measured is not None
    assert within(measured, 4 * MiB), measured


def test_no_rate_means_no_waiting() -> None:
    pacer = Pacer(None)

    async def stream() -> float:
        started = time.monotonic()
        for _ in range(1024):
            await pacer.spend(MiB)
        return time.monotonic() - started

    assert asyncio.run(stream()) < 0.2


# -- the wire


def test_the_limit_is_an_optional_positive_field_of_both_sends() -> None:
    peer = {"node": "b", "address": "10.0.0.2", "port": 2222, "hostKey": "ssh-ed25519 AAAA"}
    plain = SendRequest.model_validate({"uid": UID, "target": peer, "credential": "k"})
    assert plain.bandwidth_bytes_per_second is None
    assert "bandwidthBytesPerSecond" not in plain.to_json(), "older helpers read it as before"
    limited = SendStoredRequest.model_validate(
        {
            "uid": UID,
            "checkpointUid": CHECKPOINT,
            "target": peer,
            "credential": "k",
            "bandwidthBytesPerSecond": 4 * MiB,
        }
    )
    assert limited.bandwidth_bytes_per_second == 4 * MiB
    for wrong in (0, -1):
        with pytest.raises(ValidationError):
            SendRequest(
                uid=UID, target=plain.target, credential="k", bandwidth_bytes_per_second=wrong
            )
    old = Sent.model_validate({"seconds": 1.0, "bytes": 10})
    assert old.bytes_per_second is None, "a reply of an older helper still reads"


# -- the archive, streamed at the rate


def big_archive(size: int) -> bytes:
    """A checkpoint archive of about ``size`` bytes (incompressible pages)."""
    return checkpoint_archive(lambda tar: add_file(tar, "checkpoint/pages-2.img", os.urandom(size)))


def send(tmp_path: Path, archive: bytes, bandwidth: int | None) -> tuple[Any, float, Any]:
    source, _ = docker_only(tmp_path / "source")
    target, _ = docker_only(tmp_path / "target")
    source.context.staging.archive(UID).write_bytes(archive)
    checkpointed = Checkpointed(
        size_bytes=len(archive),
        sha256=hashlib.sha256(archive).hexdigest(),
        seconds=0.2,
        container_id=CONTAINER_ID,
    )
    source.context.staging.record_model(UID, "checkpoint", checkpointed)
    target.grants.authorize(UID, PEER_KEY, 60)

    async def scenario() -> tuple[Any, float]:
        async with serving(target) as (served, _), serving(source) as (_, run):
            request: dict[str, Any] = {
                "uid": UID,
                "target": served.to_json(),
                "credential": PEER_KEY.export_private_key().decode(),
            }
            if bandwidth is not None:
                request["bandwidthBytesPerSecond"] = bandwidth
            started = time.monotonic()
            events, code = await run("send", request)
            assert code == 0, events
            return events, time.monotonic() - started

    events, elapsed = asyncio.run(scenario())
    return events, elapsed, target


def test_an_archive_is_sent_at_the_rate_asked_and_says_what_it_measured(
    tmp_path: Path,
) -> None:
    archive = big_archive(3 * MiB)
    rate = 2 * MiB  # about 1.5 s
    events, elapsed, target = send(tmp_path, archive, rate)
    expected = len(archive) / rate
    assert elapsed >= expected * (1 - TOLERANCE), elapsed
    assert elapsed <= expected * (1 + TOLERANCE) + 0.5, elapsed  # + the SSH handshakes
    sent = Sent.model_validate(events[-1]["data"])
    assert sent.bytes == len(archive)
    assert within(sent.bytes_per_second, rate), sent
    progress = [TransferProgress.model_validate(e["data"]) for e in events[:-1]]
    assert len(progress) >= 2, "progress while it is paced"
    assert progress[-1].bytes_sent == progress[-1].bytes_total == len(archive)
    assert target.context.staging.archive(UID).read_bytes() == archive


def test_without_a_limit_the_archive_goes_as_fast_as_it_can(tmp_path: Path) -> None:
    archive = big_archive(3 * MiB)
    events, elapsed, target = send(tmp_path, archive, None)
    sent = Sent.model_validate(events[-1]["data"])
    assert sent.bytes_per_second is not None, "measured, limited or not"
    assert sent.bytes_per_second > 8 * MiB, sent
    assert elapsed < 1.5
    assert target.context.staging.archive(UID).read_bytes() == archive


def test_a_stored_checkpoint_is_sent_for_a_restore_at_the_rate_asked(tmp_path: Path) -> None:
    archive = big_archive(MiB)
    sha256 = hashlib.sha256(archive).hexdigest()
    source, _ = docker_only(tmp_path / "source")
    target, _ = docker_only(tmp_path / "target")
    store = source.context.store
    store.archive(CHECKPOINT).write_bytes(archive)
    stored = Stored(
        seconds=0.1,
        size_bytes=len(archive),
        sha256=sha256,
        container_name="web",
        image_id="i" * 64,
    )
    store.record_model(CHECKPOINT, "stored", stored)
    checkpointed = Checkpointed(
        size_bytes=len(archive), sha256=sha256, seconds=0.1, container_id=CONTAINER_ID
    )
    store.record_model(CHECKPOINT, "checkpoint", checkpointed)
    target.grants.authorize(UID, PEER_KEY, 60)
    rate = MiB  # about 1 s

    async def scenario() -> tuple[Any, float]:
        async with serving(target) as (peer, _):
            request = SendStoredRequest(
                uid=UID,
                checkpoint_uid=CHECKPOINT,
                target=peer,
                credential=PEER_KEY.export_private_key().decode(),
                sha256=sha256,
                bandwidth_bytes_per_second=rate,
            )
            started = time.monotonic()
            reply = await source.run(request, Channel())
            return reply, time.monotonic() - started

    sent, elapsed = asyncio.run(scenario())
    assert isinstance(sent, Sent)
    assert elapsed >= len(archive) / rate * (1 - TOLERANCE), elapsed
    assert within(sent.bytes_per_second, rate), sent
    assert target.context.staging.archive(UID).read_bytes() == archive
