"""Injected faults over HTTP: each kind as a client sees it, reproducible, never an answer."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from batchchat.simulator import key_of
from batchchat.simulator.faults import FaultPlan
from batchchat.spec import FaultSpec
from tests.simulator._client import chat, user


def faults(**probabilities: Any) -> dict[str, Any]:
    return {"faults": FaultSpec(**probabilities)}


@pytest.mark.parametrize(
    ("kind", "status", "error_type", "code"),
    [
        ("http_500", 500, "server_error", None),
        ("http_502", 502, "cf_bad_gateway", 502),
        ("http_503", 503, "server_error", None),
    ],
)
async def test_server_errors(
    simulator_factory: Any,
    http: aiohttp.ClientSession,
    kind: str,
    status: int,
    error_type: str,
    code: Any,
) -> None:
    sim = await simulator_factory(rpm=100, **faults(**{kind: 1.0}))
    reply = await chat(http, sim, user("x"))
    assert reply.status == status
    assert reply.json["error"]["type"] == error_type
    assert reply.json["error"]["code"] == code
    assert reply.headers["x-ratelimit-limit-requests"] == "100"
    stats = sim.stats()
    assert stats["faults"] == {kind: 1}
    assert stats["by_status"] == {str(status): 1}
    assert stats["answers"] == {}


async def test_injected_429_has_no_headers_at_all(
    simulator_factory: Any, http: aiohttp.ClientSession
) -> None:
    sim = await simulator_factory(rpm=100, **faults(http_429=1.0))
    reply = await chat(http, sim, user("x"))
    assert reply.status == 429
    assert reply.json["error"]["code"] == "rate_limit_exceeded"
    assert not {name for name in reply.headers if name.startswith(("retry-after", "x-ratelimit"))}
    assert sim.stats()["rate_limited"] == 0  # not the limiter's doing


@pytest.mark.parametrize("stream", [False, True])
async def test_drop_closes_the_connection_without_a_response(
    simulator_factory: Any, http: aiohttp.ClientSession, stream: bool
) -> None:
    sim = await simulator_factory(**faults(drop=1.0))
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await chat(http, sim, user("x", stream=stream))
    stats = sim.stats()
    assert stats["faults"] == {"drop": 1}
    assert stats["by_status"] == {}
    assert stats["answered"] == 0


async def test_truncate_announces_the_length_and_sends_half(
    simulator_factory: Any, http: aiohttp.ClientSession
) -> None:
    sim = await simulator_factory(**faults(truncate=1.0))
    async with http.post(sim.base_url + "/chat/completions", json=user("x")) as response:
        assert response.status == 200
        length = int(response.headers["content-length"])
        received = b""
        with pytest.raises(aiohttp.ClientPayloadError):
            async for piece in response.content.iter_any():
                received += piece
    assert 0 < len(received) == length // 2
    assert sim.stats()["answered"] == 0


async def test_truncated_stream_stops_before_done(
    simulator_factory: Any, http: aiohttp.ClientSession
) -> None:
    sim = await simulator_factory(**faults(truncate=1.0))
    received = b""
    with pytest.raises(aiohttp.ClientPayloadError):
        async with http.post(
            sim.base_url + "/chat/completions", json=user("x", stream=True)
        ) as response:
            async for piece in response.content.iter_any():
                received += piece
    assert received.startswith(b"data: {")
    assert b"[DONE]" not in received
    assert sim.stats()["answered"] == 0


async def test_stream_error_event_inside_a_200(
    simulator_factory: Any, http: aiohttp.ClientSession
) -> None:
    sim = await simulator_factory(**faults(stream_error=1.0))
    plain = await chat(http, sim, user("x"))  # not a stream: the fault does not apply
    assert plain.status == 200
    reply = await chat(http, sim, user("x", stream=True))
    assert reply.status == 200
    *_, last = reply.raw.rstrip(b"\n").split(b"\n\n")
    assert last.startswith(b'data: {"error":{"message":')
    assert b'"type":"server_error"' in last
    assert b"[DONE]" not in reply.raw
    stats = sim.stats()
    assert stats["faults"] == {"stream_error": 1}
    assert stats["answered"] == 1  # only the plain request


async def test_stall_sends_nothing_then_closes(
    simulator_factory: Any, http: aiohttp.ClientSession
) -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    sim = await simulator_factory(sleep=sleep, **faults(stall=1.0, stall_s=90))
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await chat(http, sim, user("x"))
    assert slept == [90]
    assert sim.stats()["answered"] == 0


async def test_a_stall_outlasts_the_client_timeout_and_ends_at_stop(
    simulator_factory: Any, http: aiohttp.ClientSession
) -> None:
    sim = await simulator_factory(**faults(stall=1.0))  # stall_s defaults to an hour
    with pytest.raises(TimeoutError):
        async with http.post(
            sim.base_url + "/chat/completions",
            json=user("x"),
            timeout=aiohttp.ClientTimeout(total=0.2),
        ):
            pass
    assert sim.stats()["faults"] == {"stall": 1}
    await asyncio.wait_for(sim.stop(), timeout=5)  # the stalled handler does not hold stop() up


def test_fault_draws_depend_on_seed_row_and_attempt_only() -> None:
    plan = FaultPlan(FaultSpec(http_500=0.5, seed=1))
    first = [plan.pick(f"row{i}", 0, stream=False) for i in range(40)]
    assert first == [plan.pick(f"row{i}", 0, stream=False) for i in reversed(range(40))][::-1]
    assert {None, "http_500"} == set(first)
    other_seed = FaultPlan(FaultSpec(http_500=0.5, seed=2))
    assert first != [other_seed.pick(f"row{i}", 0, stream=False) for i in range(40)]
    # a retry of a failed row draws again
    failed = first.index("http_500")
    assert any(plan.pick(f"row{failed}", attempt, stream=False) is None for attempt in range(1, 10))


def test_stacked_probabilities_share_the_draws() -> None:
    plan = FaultPlan(FaultSpec(http_500=0.2, drop=0.2, truncate=0.2))
    picks = [plan.pick(f"r{i}", 0, stream=False) for i in range(3000)]
    for kind in ("http_500", "drop", "truncate"):
        assert 0.15 < picks.count(kind) / 3000 < 0.25
    assert 0.35 < picks.count(None) / 3000 < 0.45


async def test_retrying_until_success_answers_every_row_exactly_once(
    simulator_factory: Any, http: aiohttp.ClientSession
) -> None:
    sim = await simulator_factory(
        **faults(http_500=0.2, http_503=0.1, drop=0.1, truncate=0.1, seed=5)
    )
    bodies = [user(f"row {i}") for i in range(40)]
    attempts = 0
    for body in bodies:
        while True:
            attempts += 1
            try:
                reply = await chat(http, sim, body)
            except aiohttp.ClientError:
                continue
            if reply.status == 200:
                break
    stats = sim.stats()
    assert stats["answers"] == {key_of(body): 1 for body in bodies}
    assert stats["requests"] == attempts > 40
    assert sum(stats["faults"].values()) == attempts - 40


@pytest.mark.parametrize(("seconds", "header"), [(2.0, "2"), (0.5, "0.5"), (30, "30")])
@pytest.mark.parametrize("kind", ["http_500", "http_502", "http_503"])
async def test_server_errors_may_say_retry_after(
    simulator_factory: Any, http: aiohttp.ClientSession, kind: str, seconds: float, header: str
) -> None:
    sim = await simulator_factory(**faults(**{kind: 1.0, "retry_after_s": seconds}))
    reply = await chat(http, sim, user("x"))
    assert reply.headers["retry-after"] == header
    assert "retry-after-ms" not in reply.headers


async def test_retry_after_is_off_by_default_and_never_on_the_bare_429(
    simulator_factory: Any, http: aiohttp.ClientSession
) -> None:
    plain = await simulator_factory(**faults(http_503=1.0))
    assert "retry-after" not in (await chat(http, plain, user("x"))).headers
    bare = await simulator_factory(**faults(http_429=1.0, retry_after_s=5))
    assert "retry-after" not in (await chat(http, bare, user("x"))).headers


@pytest.mark.parametrize("stream", [False, True])
async def test_trickle_sends_the_whole_answer_a_byte_per_interval(
    simulator_factory: Any, http: aiohttp.ClientSession, stream: bool
) -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    normal = await simulator_factory(sleep=sleep)
    expected = await chat(http, normal, user("x", stream=stream, seed=1))
    sim = await simulator_factory(sleep=sleep, **faults(trickle=1.0, trickle_interval_s=0.25))
    slept.clear()
    reply = await chat(http, sim, user("x", stream=stream, seed=1))
    assert reply.status == 200
    if stream:
        assert reply.headers["transfer-encoding"] == "chunked"
    else:
        assert reply.headers["content-length"] == str(len(reply.raw))
    assert reply.headers["content-type"] == expected.headers["content-type"]
    # the same answer, but for the id and created
    assert len(reply.raw) == len(expected.raw)
    assert slept == [0.25] * (len(reply.raw) - 1)  # a byte at a time, never idle longer
    stats = sim.stats()
    assert stats["faults"] == {"trickle": 1}
    assert stats["answers"] == {key_of(user("x", seed=1)): 1}


async def test_a_trickle_outlasts_the_total_deadline_not_the_idle_timeout(
    simulator_factory: Any,
) -> None:
    sim = await simulator_factory(**faults(trickle=1.0, trickle_interval_s=0.02))
    timeout = aiohttp.ClientTimeout(total=0.3, sock_read=0.2)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        received = b""
        with pytest.raises(TimeoutError):
            async with session.post(sim.base_url + "/chat/completions", json=user("x")) as r:
                assert r.status == 200  # status and headers came at once
                async for piece in r.content.iter_any():
                    received += piece
        assert 0 < len(received) < int(r.headers["content-length"])
        assert sim.stats()["connections_open"] == 1
    # the client closed the timed-out connection; the server sees it go and gives up
    await asyncio.wait_for(sim.wait_connections(0), timeout=5)
    await sim.stop()
    stats = sim.stats()
    assert (stats["faults"], stats["answered"], stats["in_flight"]) == ({"trickle": 1}, 0, 0)


async def test_stop_ends_a_trickle(simulator_factory: Any) -> None:
    sim = await simulator_factory(**faults(trickle=1.0, trickle_interval_s=3600))
    url = sim.base_url + "/chat/completions"
    async with aiohttp.ClientSession() as session, session.post(url, json=user("x")) as r:
        assert await r.content.read(1) == b"{"
        await asyncio.wait_for(sim.stop(), timeout=5)
        with pytest.raises(aiohttp.ClientPayloadError):
            await r.read()
    assert sim.stats()["answered"] == 0


def test_kinds_that_cannot_apply_let_the_request_through() -> None:
    for kind, needs in [
        ("stream_error", {"stream": False}),
        ("forced_token", {"logprobs": False}),
        ("usage_as_strings", {"usage": False}),
        ("usage_as_floats", {"usage": False}),
    ]:
        plan = FaultPlan(FaultSpec(**{kind: 1.0}))
        traits: dict[str, Any] = {"stream": True, "logprobs": True, "usage": True}
        assert plan.pick("row", 0, **traits) == kind
        assert plan.pick("row", 0, **{**traits, **needs}) is None


def test_new_kinds_leave_the_older_draws_alone() -> None:
    old = FaultPlan(FaultSpec(http_500=0.3, drop=0.2, seed=3))
    new = FaultPlan(FaultSpec(http_500=0.3, drop=0.2, trickle=0.1, empty_choices=0.1, seed=3))
    for i in range(500):
        before = old.pick(f"r{i}", 0, stream=False)
        if before is not None:
            assert new.pick(f"r{i}", 0, stream=False) == before
