"""Gateway-style rate limits (LiteLLM proxy): calendar minutes, rpm − 1, its headers and 429s."""

from __future__ import annotations

import hashlib
import math
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from typing import Any

import aiohttp
import orjson
import pytest

from batchchat.planning.tokens import estimate_prompt_tokens
from batchchat.simulator import SimulatorServer
from batchchat.simulator.gateway import GatewayLimiter
from batchchat.spec import FaultSpec, SimulatorSpec
from tests.conftest import ManualClock
from tests.simulator._client import chat, user

#: a wall-clock time at the start of a calendar minute (1_800_000_000 = 30_000_000 minutes)
MINUTE_START = 1_800_000_000.0
GatewayFactory = Callable[..., Any]


@pytest.fixture
def wall() -> ManualClock:
    return ManualClock(start=MINUTE_START + 10)


@pytest.fixture
async def gateway(wall: ManualClock) -> AsyncIterator[GatewayFactory]:
    """``await gateway(rpm=5, ...)``: a gateway-style simulator on the manual wall clock."""
    async with AsyncExitStack() as stack:

        async def start(**knobs: Any) -> SimulatorServer:
            spec = SimulatorSpec(rate_limit_style="gateway", **knobs)
            return await stack.enter_async_context(SimulatorServer(spec, wall_clock=wall))

        yield start


def refusal_body(model: str, tokens: int, tpm: str, requests: int, rpm: str) -> bytes:
    """The 429 body the real LiteLLM 1.106 proxy sent, byte for byte, with these counters."""
    deployment = hashlib.sha256(model.encode()).hexdigest()
    message = (
        "litellm.RateLimitError: No deployments available for selected model. "
        f"Passed model={model}. Deployments={{'{deployment}': {{'current_tpm': {tokens}, "
        f"'tpm_limit': {tpm}, 'current_rpm': {requests}, 'rpm_limit': {rpm}}}}}\n\n"
        f"LiteLLM: model group '{model}' failed with the error above. No fallback was attempted."
    )
    error = {"message": message, "type": "throttling_error", "param": None, "code": "429"}
    return orjson.dumps({"error": error})


def rate_headers(reply: Any) -> dict[str, str]:
    return {
        name: value
        for name, value in reply.headers.items()
        if "ratelimit" in name or "retry-after" in name
    }


async def test_rpm_admits_one_less_per_calendar_minute(
    gateway: GatewayFactory, wall: ManualClock, http: aiohttp.ClientSession
) -> None:
    sim = await gateway(rpm=5)
    seen = []
    tokens = 0  # counted even without a TPM limit, as LiteLLM does
    for _ in range(4):
        reply = await chat(http, sim, user("hi"))
        assert reply.status == 200
        seen.append(rate_headers(reply))
        tokens += reply.json["usage"]["total_tokens"]
        wall.advance(1)
    assert seen == [
        {"x-ratelimit-remaining-requests": str(left), "x-ratelimit-limit-requests": "5"}
        for left in (4, 3, 2, 1)  # never 0: the next one is refused at "1 remaining"
    ]
    refused = await chat(http, sim, user("hi"))
    assert refused.status == 429
    assert rate_headers(refused) == {"llm_provider-retry-after": "60"}
    assert refused.headers["content-type"] == "application/json"
    assert refused.raw == refusal_body("gpt-4o-mini", tokens, "inf", 4, "5")
    # the minute ends at :00 of the wall clock, 46 s later here, not 60 s after the first
    wall.now = MINUTE_START + 59.999
    assert (await chat(http, sim, user("hi"))).status == 429
    wall.now = MINUTE_START + 60
    again = await chat(http, sim, user("hi"))
    assert again.status == 200
    assert again.headers["x-ratelimit-remaining-requests"] == "4"
    stats = sim.stats()
    assert (stats["rate_limited"], stats["by_status"]) == (2, {"200": 5, "429": 2})


async def test_tpm_admits_by_prompt_and_counts_usage_after_the_answer(
    gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    sim = await gateway(tpm=200, rpm=100)
    first = await chat(http, sim, user("hi", max_tokens=1000))  # max_tokens is not charged
    assert first.status == 200
    used = first.json["usage"]["total_tokens"]
    assert list(rate_headers(first).items()) == [
        ("x-ratelimit-remaining-tokens", str(200 - used)),  # its own usage already counted
        ("x-ratelimit-limit-tokens", "200"),
        ("x-ratelimit-remaining-requests", "99"),
        ("x-ratelimit-limit-requests", "100"),
    ]
    # a stream's headers go out before its usage is counted
    streamed = await chat(http, sim, user("hi", stream=True))
    assert streamed.headers["x-ratelimit-remaining-tokens"] == str(200 - used)
    after = await chat(http, sim, user("hi"))
    assert int(after.headers["x-ratelimit-remaining-tokens"]) < 200 - 2 * used
    # a prompt that does not fit in what is left this minute is refused
    prompt = "word " * 150
    assert estimate_prompt_tokens(user(prompt)["messages"]) > 200 - 3 * used
    refused = await chat(http, sim, user(prompt))
    assert refused.status == 429
    assert b"'current_tpm': " in refused.raw
    assert b"'tpm_limit': 200, 'current_rpm': 3, 'rpm_limit': 100}" in refused.raw


async def test_remaining_tokens_may_go_negative(
    gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    tpm = estimate_prompt_tokens(user("hi")["messages"]) + 1
    sim = await gateway(tpm=tpm)  # the prompt fits; prompt + answer do not
    reply = await chat(http, sim, user("hi"))
    assert reply.status == 200
    assert int(reply.headers["x-ratelimit-remaining-tokens"]) < 0
    assert "x-ratelimit-limit-requests" not in reply.headers  # only configured limits
    refused = await chat(http, sim, user("hi"))
    assert refused.raw == refusal_body(
        "gpt-4o-mini", reply.json["usage"]["total_tokens"], str(tpm), 1, "inf"
    )


async def test_errors_carry_no_rate_limit_headers(
    gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    sim = await gateway(rpm=10, tpm=10_000, api_key="k", faults=FaultSpec(http_500=1.0))
    unauthorized = await chat(http, sim, user("hi"))
    invalid = await chat(http, sim, {"model": "m"}, {"Authorization": "Bearer k"})
    failed = await chat(http, sim, user("hi"), {"Authorization": "Bearer k"})
    assert [r.status for r in (unauthorized, invalid, failed)] == [401, 400, 500]
    for reply in (unauthorized, invalid, failed):
        assert rate_headers(reply) == {}


async def test_prefill_starts_with_the_minute_used_up(
    gateway: GatewayFactory, wall: ManualClock, http: aiohttp.ClientSession
) -> None:
    sim = await gateway(rpm=60, prefill=True)
    refused = await chat(http, sim, user("hi"))
    assert refused.raw == refusal_body("gpt-4o-mini", 0, "inf", 59, "60")
    wall.now = MINUTE_START + 60
    assert (await chat(http, sim, user("hi"))).status == 200


def test_the_limiter_counts_per_utc_minute() -> None:
    limiter = GatewayLimiter(rpm=3, tpm=None)
    assert [limiter.admit(5, 0, 120.0).admitted for _ in range(3)] == [True, True, False]
    assert limiter.admit(5, 0, 179.99).admitted is False
    assert limiter.admit(5, 0, 180.0).admitted is True
    assert GatewayLimiter(rpm=1, tpm=None).admit(1, 0, 0.0).admitted is False  # as LiteLLM
    too_big = GatewayLimiter(rpm=None, tpm=10).admit(11, 0, 0.0)
    assert (too_big.admitted, too_big.limit_type, too_big.retry_after) == (
        False,
        "tokens",
        math.inf,
    )
