"""A server that degrades under load: slower past its capacity, 503 past twice it."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from batchchat.runner import run_job
from tests.simulator._client import chat, user
from tests.test_runner import job


async def test_past_its_capacity_answers_slow_down_and_past_twice_it_are_refused(
    simulator_factory: Any, http: aiohttp.ClientSession
) -> None:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        await asyncio.sleep(0.5)  # every request arrives while the first ones are in flight

    sim = await simulator_factory(capacity=2, latency={"mean_ms": 100}, sleep=sleep)
    replies = await asyncio.gather(*(chat(http, sim, user(f"q{i}")) for i in range(6)))
    assert Counter(reply.status for reply in replies) == {200: 4, 503: 2}
    refused = [reply.json for reply in replies if reply.status == 503]
    assert all("overloaded" in body["error"]["message"] for body in refused)
    # in flight 1, 2: the latency itself; 3 and 4: stretched by 3/2 and 4/2
    assert sorted(waits) == pytest.approx([0.1, 0.1, 0.15, 0.2])
    assert sim.stats()["rate_limited"] == 0 and len(sim.stats()["answers"]) == 4


@pytest.mark.parametrize("adaptive", [True, False])
async def test_batchchat_backs_off_a_server_that_degrades_and_finishes_every_row(
    simulator_factory: Any, tmp_path: Path, adaptive: bool
) -> None:
    sim = await simulator_factory(capacity=4, latency={"mean_ms": 20})
    spec = job(
        tmp_path,
        sim.base_url,
        rows=150,
        limits={"max_concurrency": 32, "adaptive": adaptive},
        retry={"max_attempts": 50},
    )
    outcome = await run_job(spec)
    assert outcome.exit_code == 0 and outcome.report.rows_ok == 150
    refused = sim.stats()["by_status"].get("503", 0)
    assert refused > 0  # 32 at once is four times what it serves: it turned some away
    if adaptive:  # the limit came down towards what the server serves
        assert outcome.stats.concurrency < 32
    else:
        assert outcome.stats.concurrency == 32
