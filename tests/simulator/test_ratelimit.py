"""RPM/TPM sliding windows: the pure window, the duration format, 429s over HTTP (manual clock)."""

from __future__ import annotations

import math
from typing import Any

import aiohttp
import pytest

from batchchat.planning.tokens import estimate_prompt_tokens
from batchchat.simulator import DEFAULT_CHARGED_COMPLETION_TOKENS
from batchchat.simulator.ratelimit import SlidingWindow, format_duration, retry_headers
from tests.conftest import ManualClock
from tests.simulator._client import chat, user

HEADER_NAMES = {
    f"x-ratelimit-{what}-{kind}"
    for what in ("limit", "remaining", "reset")
    for kind in ("requests", "tokens")
}


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (-1, "0s"),
        (0.0004, "1ms"),
        (0.02, "20ms"),
        (0.9991, "1000ms"),
        (1, "1s"),
        (8.64, "8.64s"),
        (59.5, "59.5s"),
        (60, "1m0s"),
        (360, "6m0s"),
        (90.25, "1m30.25s"),
        (3600, "1h0m0s"),
    ],
)
def test_durations_are_written_like_openai(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_retry_headers_round_up_and_never_say_zero() -> None:
    assert retry_headers(0.02) == {"retry-after": "1", "retry-after-ms": "20"}
    assert retry_headers(2.5) == {"retry-after": "3", "retry-after-ms": "2500"}


def test_a_window_frees_capacity_as_charges_expire() -> None:
    window = SlidingWindow(10)
    window.charge(4, now=0)
    window.charge(6, now=30)
    assert window.used(59) == 10
    assert window.wait_for(1, now=59) == pytest.approx(1)  # the 4 at t=0 expire at 60
    assert window.wait_for(5, now=59) == pytest.approx(31)  # needs the 6 at t=30 gone too
    assert window.wait_for(11, now=59) == math.inf
    assert window.used(60) == 6
    assert window.reset_after(60) == pytest.approx(30)
    assert window.wait_for(4, now=60) == 0


def test_prefill_spreads_the_limit_evenly_over_the_window() -> None:
    window = SlidingWindow(120)
    window.prefill(now=100)
    assert window.used(100) == 120
    assert window.wait_for(1, now=100) == pytest.approx(0.5)  # frees at exactly the limit rate
    assert window.used(100 + 30) == 60
    big = SlidingWindow(1_000_000)
    big.prefill(now=0)
    assert big.used(0) == 1_000_000
    assert big.used(6) == pytest.approx(900_000, rel=1e-3)


# -- over HTTP ----------------------------------------------------------------------------------


async def test_rpm_limit_headers_and_429(
    simulator_factory: Any, http: aiohttp.ClientSession, manual_clock: ManualClock
) -> None:
    sim = await simulator_factory(rpm=3, clock=manual_clock)
    remaining = []
    for _ in range(3):
        reply = await chat(http, sim, user("hi"))
        assert reply.status == 200
        assert reply.headers["x-ratelimit-limit-requests"] == "3"
        assert "x-ratelimit-limit-tokens" not in reply.headers  # only configured limits are sent
        remaining.append(reply.headers["x-ratelimit-remaining-requests"])
        manual_clock.advance(10)
    assert remaining == ["2", "1", "0"]
    refused = await chat(http, sim, user("hi"))
    assert refused.status == 429
    error = refused.json["error"]
    assert (error["type"], error["code"], error["param"]) == (
        "requests",
        "rate_limit_exceeded",
        None,
    )
    assert "Limit 3, Used 3, Requested 1" in error["message"]
    # the first request (at t=0) leaves the window at t=60, 30 s from now
    assert refused.headers["retry-after"] == "30"
    assert refused.headers["retry-after-ms"] == "30000"
    assert refused.headers["x-ratelimit-reset-requests"] == "30s"
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    manual_clock.advance(30)
    assert (await chat(http, sim, user("hi"))).status == 200
    stats = sim.stats()
    assert stats["rate_limited"] == 1
    assert stats["by_status"] == {"200": 4, "429": 1}


async def test_tpm_is_charged_prompt_plus_max_tokens_times_n(
    simulator_factory: Any, http: aiohttp.ClientSession, manual_clock: ManualClock
) -> None:
    sim = await simulator_factory(tpm=3000, rpm=100, clock=manual_clock)
    prompt = estimate_prompt_tokens([{"role": "user", "content": "hi"}])
    first = await chat(http, sim, user("hi", max_tokens=100, n=3))
    assert first.status == 200
    assert set(first.headers) >= HEADER_NAMES
    assert first.headers["x-ratelimit-remaining-tokens"] == str(3000 - (prompt + 300))
    assert first.headers["x-ratelimit-remaining-requests"] == "99"
    second = await chat(http, sim, user("hi"))  # no max_tokens: the default is charged
    assert second.headers["x-ratelimit-remaining-tokens"] == str(
        3000 - (prompt + 300) - (prompt + DEFAULT_CHARGED_COMPLETION_TOKENS)
    )
    refused = await chat(http, sim, user("hi", max_tokens=2000))
    assert refused.status == 429
    assert refused.json["error"]["type"] == "tokens"
    assert refused.headers["retry-after-ms"] == "60000"


async def test_a_request_larger_than_the_tpm_limit_gets_no_retry_after(
    simulator_factory: Any, http: aiohttp.ClientSession, manual_clock: ManualClock
) -> None:
    sim = await simulator_factory(tpm=1000, clock=manual_clock)
    refused = await chat(http, sim, user("hi", max_tokens=2000))
    assert refused.status == 429
    assert refused.json["error"]["message"].startswith("Request too large for gpt-4o-mini")
    assert "retry-after" not in refused.headers
    assert refused.headers["x-ratelimit-remaining-tokens"] == "1000"  # not charged


async def test_prefill_starts_in_the_steady_state(
    simulator_factory: Any, http: aiohttp.ClientSession, manual_clock: ManualClock
) -> None:
    sim = await simulator_factory(rpm=60, prefill=True, clock=manual_clock)
    statuses = []
    for _ in range(3):
        first = await chat(http, sim, user("hi"))
        assert first.headers["x-ratelimit-reset-requests"] == "1s"
        second = await chat(http, sim, user("hi"))
        statuses += [first.status, second.status]
        manual_clock.advance(1)
    # one slot frees each second (60 RPM): the first try of each second is refused...
    assert statuses == [429, 429, 200, 429, 200, 429]
    # ...because capacity frees exactly at the limit rate, one request per second
    assert sim.stats()["by_status"] == {"200": 2, "429": 4}


async def test_rate_limit_headers_ride_on_errors_too(
    simulator_factory: Any, http: aiohttp.ClientSession, manual_clock: ManualClock
) -> None:
    sim = await simulator_factory(rpm=10, tpm=10_000, api_key="k", clock=manual_clock)
    unauthorized = await chat(http, sim, user("hi"))
    invalid = await chat(http, sim, {"model": "m"}, {"Authorization": "Bearer k"})
    assert (unauthorized.status, invalid.status) == (401, 400)
    for reply in (unauthorized, invalid):
        assert set(reply.headers) >= HEADER_NAMES
        assert reply.headers["x-ratelimit-remaining-requests"] == "10"  # errors are not charged


async def test_no_limits_no_headers(simulator: Any, http: aiohttp.ClientSession) -> None:
    reply = await chat(http, simulator, user("hi"))
    assert not any(name.startswith("x-ratelimit") for name in reply.headers)
