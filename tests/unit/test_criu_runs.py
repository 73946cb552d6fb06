"""CRIU runs of one helper overlap, except a page-server dump, which runs alone."""

from __future__ import annotations

import asyncio

from ferry_helper.criu_runs import CriuRuns


async def _hold(runs: CriuRuns, kind: str, log: list[str], name: str, seconds: float) -> None:
    section = runs.exclusive() if kind == "exclusive" else runs.shared()
    async with section:
        log.append(f"{name}+")
        await asyncio.sleep(seconds)
        log.append(f"{name}-")


def test_shared_runs_overlap() -> None:
    async def main() -> list[str]:
        runs, log = CriuRuns(), []
        await asyncio.gather(
            _hold(runs, "shared", log, "a", 0.05), _hold(runs, "shared", log, "b", 0.05)
        )
        return log

    assert asyncio.run(main())[:2] == ["a+", "b+"]


def test_a_page_server_dump_waits_for_runs_in_flight_and_holds_back_new_ones() -> None:
    async def main() -> list[str]:
        runs, log = CriuRuns(), []
        first = asyncio.create_task(_hold(runs, "shared", log, "restore", 0.05))
        await asyncio.sleep(0.01)
        dump = asyncio.create_task(_hold(runs, "exclusive", log, "dump", 0.05))
        await asyncio.sleep(0.01)
        later = asyncio.create_task(_hold(runs, "shared", log, "checkpoint", 0.01))
        await asyncio.gather(first, dump, later)
        return log

    assert asyncio.run(main()) == [
        "restore+",
        "restore-",
        "dump+",
        "dump-",
        "checkpoint+",
        "checkpoint-",
    ]


def test_a_dump_that_gives_up_waiting_lets_the_others_go() -> None:
    async def main() -> list[str]:
        runs, log = CriuRuns(), []
        first = asyncio.create_task(_hold(runs, "shared", log, "restore", 0.1))
        await asyncio.sleep(0.01)
        dump = asyncio.create_task(_hold(runs, "exclusive", log, "dump", 0.01))
        await asyncio.sleep(0.01)
        later = asyncio.create_task(_hold(runs, "shared", log, "checkpoint", 0.01))
        await asyncio.sleep(0.01)
        dump.cancel()
        await asyncio.wait_for(later, 0.05)  # not behind the restore: it may overlap it
        await first
        return log

    assert asyncio.run(main())[:3] == ["restore+", "checkpoint+", "checkpoint-"]
