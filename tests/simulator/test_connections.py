"""TCP connections: counted as sockets, and closed after a stream like llama.cpp's server does."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest

from batchchat.simulator import SimulatorServer
from batchchat.simulator.connections import RETIRED_LINGER_S
from tests.simulator._client import chat, user


@pytest.fixture
async def one_connection() -> AsyncIterator[aiohttp.ClientSession]:
    """A client whose pool holds a single connection, so every request reuses it."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
        yield session


async def read_stream(
    session: aiohttp.ClientSession, sim: SimulatorServer, text: str
) -> tuple[aiohttp.ClientResponse, bytes]:
    async with session.post(sim.base_url + "/chat/completions", json=user(text, stream=True)) as r:
        return r, await r.read()


async def test_a_reused_connection_after_a_stream_is_closed_before_any_byte(
    simulator_factory: Any, one_connection: aiohttp.ClientSession
) -> None:
    sim = await simulator_factory(close_after_stream=True)
    first, body = await read_stream(one_connection, sim, "a")
    assert first.status == 200
    assert body.endswith(b"data: [DONE]\n\n")
    # the headers promise a kept-alive connection, as llama-server's do
    assert first.version == aiohttp.HttpVersion11
    assert "Connection" not in first.headers
    assert first.headers["Keep-Alive"] == "timeout=5, max=100"
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await read_stream(one_connection, sim, "b")
    stats = sim.stats()
    assert stats["max_connections_open"] == 1  # the second request went out on the same socket
    assert stats["closed_on_reuse"] == 1
    assert (stats["requests"], stats["by_status"], stats["answered"]) == (1, {"200": 1}, 1)
    # a fresh connection is served as usual
    again, _ = await read_stream(one_connection, sim, "b")
    assert again.status == 200


async def test_plain_answers_keep_the_connection(
    simulator_factory: Any, one_connection: aiohttp.ClientSession
) -> None:
    sim = await simulator_factory(close_after_stream=True)
    for text in ("a", "b", "c"):
        assert (await chat(one_connection, sim, user(text))).status == 200
    stats = sim.stats()
    assert (stats["max_connections_open"], stats["closed_on_reuse"]) == (1, 0)


async def test_without_the_knob_a_stream_keeps_the_connection(
    simulator_factory: Any, one_connection: aiohttp.ClientSession
) -> None:
    sim = await simulator_factory()
    for text in ("a", "b", "c"):
        response, _ = await read_stream(one_connection, sim, text)
        assert response.status == 200
        assert "Keep-Alive" not in response.headers
    assert sim.stats()["max_connections_open"] == 1


async def test_an_idle_retired_connection_is_closed_shortly_after(
    simulator_factory: Any, one_connection: aiohttp.ClientSession
) -> None:
    sim = await simulator_factory(close_after_stream=True)
    await read_stream(one_connection, sim, "a")
    assert sim.stats()["connections_open"] == 1
    await asyncio.wait_for(sim.wait_connections(0), timeout=RETIRED_LINGER_S + 2)
    # the client saw the close: its next request opens a new connection and succeeds
    response, _ = await read_stream(one_connection, sim, "b")
    assert response.status == 200
    assert sim.stats()["closed_on_reuse"] == 0


async def test_the_openai_client_meets_the_same_disconnect(simulator_factory: Any) -> None:
    sim = await simulator_factory(close_after_stream=True)
    client = openai.AsyncOpenAI(base_url=sim.base_url, api_key="unused", max_retries=0)
    async with client:
        first = await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "a"}], stream=True
        )
        assert [chunk async for chunk in first]
        with pytest.raises(openai.APIConnectionError):
            await client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "b"}], stream=True
            )
    assert sim.stats()["closed_on_reuse"] == 1


async def test_connections_are_counted_as_sockets_not_requests(simulator_factory: Any) -> None:
    sim = await simulator_factory()
    sessions = [aiohttp.ClientSession() for _ in range(3)]
    try:
        for session in sessions:
            for text in ("a", "b"):  # two requests per kept-alive connection
                assert (await chat(session, sim, user(text))).status == 200
        stats = sim.stats()
        assert (stats["requests"], stats["connections_open"]) == (6, 3)
        assert stats["max_connections_open"] == 3
    finally:
        for session in sessions:
            await session.close()
    await asyncio.wait_for(sim.wait_connections(0), timeout=5)
    sim.reset_stats()
    assert sim.stats()["max_connections_open"] == 0  # the peak restarts from what is open
