"""The per-node migration limit: pure asyncio logic, no cluster."""

from __future__ import annotations

import asyncio

from ferry_operator.slots import NodeSlots


def test_a_full_node_makes_the_next_migration_wait_until_one_ends() -> None:
    async def scenario() -> list[str]:
        slots = NodeSlots(limit=1)
        heard: list[str] = []

        async def on_wait(full: list[str]) -> None:
            heard.append(",".join(full))

        await slots.acquire("m1", ["a", "b"])
        second = asyncio.create_task(slots.acquire("m2", ["c", "b"], on_wait=on_wait))
        await asyncio.sleep(0.05)
        assert not second.done()
        assert slots.in_flight("c") == 0, "a waiting migration holds nothing"
        await slots.release("m1")
        await asyncio.wait_for(second, 1)
        assert (slots.in_flight("a"), slots.in_flight("b"), slots.in_flight("c")) == (0, 1, 1)
        return heard

    assert asyncio.run(scenario()) == ["b"], "told once, naming the full node"


def test_opposite_directions_do_not_deadlock() -> None:
    async def scenario() -> None:
        slots = NodeSlots(limit=1)
        await slots.acquire("ab", ["a", "b"])
        ba = asyncio.create_task(slots.acquire("ba", ["b", "a"]))
        await asyncio.sleep(0.05)
        assert not ba.done()
        assert slots.in_flight("a") == slots.in_flight("b") == 1
        await slots.release("ab")
        await asyncio.wait_for(ba, 1)

    asyncio.run(scenario())


def test_a_resumed_frozen_migration_takes_its_slots_over_the_limit() -> None:
    async def scenario() -> None:
        slots = NodeSlots(limit=1)
        await slots.acquire("running", ["a", "b"])
        await asyncio.wait_for(slots.acquire("frozen", ["a", "b"], force=True), 1)
        assert slots.in_flight("a") == 2

    asyncio.run(scenario())


def test_acquire_is_idempotent_and_release_of_a_stranger_is_harmless() -> None:
    async def scenario() -> None:
        slots = NodeSlots(limit=2)
        await slots.acquire("m", ["a", "b"])
        await slots.acquire("m", ["a", "b"])
        assert slots.in_flight("a") == 1
        await slots.release("nobody")
        await slots.release("m")
        await slots.release("m")
        assert slots.in_flight("a") == 0

    asyncio.run(scenario())


def test_zero_means_no_limit() -> None:
    async def scenario() -> None:
        slots = NodeSlots(limit=0)
        for n in range(20):
            await asyncio.wait_for(slots.acquire(f"m{n}", ["a", "b"]), 1)
        assert slots.in_flight("a") == 20

    asyncio.run(scenario())
