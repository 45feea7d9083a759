"""``/stats``: requests, statuses, in-flight peaks and per-request answer counters."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from batchchat.simulator import SimulatorServer, key_of
from batchchat.spec import LatencySpec
from tests.simulator._client import chat, get, user


async def test_stats_count_requests_statuses_and_answers(
    simulator: SimulatorServer, http: aiohttp.ClientSession
) -> None:
    await chat(http, simulator, user("a"))
    await chat(http, simulator, user("a"))
    await chat(http, simulator, user("b", seed=1, n=2))
    await chat(http, simulator, {"model": "m"})
    reply = await get(http, simulator.base_url.removesuffix("/v1") + "/stats")
    stats = reply.json
    assert stats == simulator.stats()
    assert stats["requests"] == 4
    assert stats["by_status"] == {"200": 3, "400": 1}
    assert stats["answered"] == 3
    assert stats["answers"] == {key_of(user("a")): 2, key_of(user("b", seed=1)): 1}
    assert stats["in_flight"] == 0
    assert stats["prompt_tokens"] > 0
    assert stats["completion_tokens"] > 0


async def test_the_same_messages_with_another_seed_are_another_request(
    simulator: SimulatorServer,
) -> None:
    assert key_of(user("a", seed=1)) != key_of(user("a", seed=2))
    assert key_of(user("a", seed=1)) == key_of(user("a", seed=1, temperature=0.5))
    assert key_of(user("a")) != key_of({**user("a"), "model": "other"})


async def test_reset_zeroes_the_counters(
    simulator: SimulatorServer, http: aiohttp.ClientSession
) -> None:
    await chat(http, simulator, user("a"))
    root = simulator.base_url.removesuffix("/v1")
    async with http.post(root + "/stats/reset") as response:
        assert response.status == 200
    stats = simulator.stats()
    assert (stats["requests"], stats["answered"], stats["answers"]) == (0, 0, {})


async def test_max_in_flight_sees_concurrent_requests(
    simulator_factory: Any, http: aiohttp.ClientSession
) -> None:
    arrived = 0
    all_in = asyncio.Event()
    release = asyncio.Event()

    async def sleep(
        seconds: float,
    ) -> None:  # the latency wait: hold every request until all arrived
        nonlocal arrived
        arrived += 1
        if arrived == 5:
            all_in.set()
        await release.wait()

    sim: SimulatorServer = await simulator_factory(latency=LatencySpec(mean_ms=10), sleep=sleep)
    tasks = [asyncio.create_task(chat(http, sim, user(f"r{i}"))) for i in range(5)]
    await all_in.wait()
    assert sim.stats()["in_flight"] == 5
    release.set()
    replies = await asyncio.gather(*tasks)
    assert [reply.status for reply in replies] == [200] * 5
    stats = sim.stats()
    assert (stats["max_in_flight"], stats["in_flight"], stats["answered"]) == (5, 0, 5)
