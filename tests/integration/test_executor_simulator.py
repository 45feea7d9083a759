"""The executor with the real aiohttp transport against the built-in simulator on 127.0.0.1.

The simulator's ``/stats`` counts every answer it delivered per request key, which is
how these tests prove that no row is lost and none is answered twice.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest

from batchchat.errors import AuthenticationError, RequestTooLargeError
from batchchat.execute.executor import execute
from batchchat.execute.transport import AiohttpTransport
from batchchat.models import ChatRequest, ChatResult, ExecutionStats
from batchchat.planning.tokens import estimate_prompt_tokens
from batchchat.simulator import SimulatorServer, key_of
from batchchat.spec import JobSpec
from tests.conftest import SimulatorFactory


def _spec(**overrides: Any) -> JobSpec:
    data: dict[str, Any] = {
        "name": "it",
        "input": {"path": "in.jsonl"},
        "request": {"model": "m", "messages": []},
        "endpoint": {"timeout_s": 5.0},
        "retry": {"max_attempts": 10, "initial_wait_s": 0.01, "max_wait_s": 0.05},
        "limits": {"max_concurrency": 16},
    }
    for key, value in overrides.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) else value
    return JobSpec.model_validate(data)


def _requests(count: int, *, prefix: str = "row", **body: Any) -> list[ChatRequest]:
    requests = []
    for i in range(count):
        messages = [{"role": "user", "content": f"{prefix} {i}: say something about item {i}"}]
        payload = {"model": "sim-small", "messages": messages, "max_tokens": 40, **body}
        max_output = int(payload["max_tokens"]) * int(payload.get("n", 1))
        requests.append(
            ChatRequest(
                str(i),
                0,
                f"{i}#0",
                payload,
                f"h{i}",
                estimate_prompt_tokens(messages),
                max_output,
                seed=payload.get("seed"),
            )
        )
    return requests


async def _run(
    sim: SimulatorServer, spec: JobSpec, requests: list[ChatRequest], **kw: Any
) -> tuple[list[ChatResult], ExecutionStats]:
    results: list[ChatResult] = []
    stats = ExecutionStats(run_id="it", started_at=datetime.now(UTC))
    transport = AiohttpTransport(spec.endpoint, max_connections=spec.limits.max_concurrency)
    try:
        await execute(
            requests,
            limits=spec.limits,
            retry=spec.retry,
            keep_raw=spec.output.keep_raw,
            transport=transport,
            url=sim.base_url + "/chat/completions",
            headers=kw.pop("headers", {}),
            on_result=results.append,
            stats=stats,
            **kw,
        )
    finally:
        await transport.aclose()
        stats.resent = transport.stale_retries
    return results, stats


def _assert_each_answered_once(sim: SimulatorServer, requests: list[ChatRequest]) -> None:
    answers = Counter(sim.stats()["answers"])
    expected = Counter(key_of(r.body) for r in requests)
    assert answers == expected  # no row lost, none answered twice


# -- correctness ----------------------------------------------------------------------------------


async def test_every_fault_type_is_recovered_without_loss_or_duplicates(
    simulator_factory: SimulatorFactory,
) -> None:
    faults = {
        "http_500": 0.06,
        "http_502": 0.04,
        "http_503": 0.04,
        "http_429": 0.04,
        "drop": 0.04,
        "truncate": 0.04,
        "stall": 0.02,
        "stream_error": 0.06,
        "stall_s": 30.0,
        "seed": 7,
    }
    sim = await simulator_factory(faults=faults)
    spec = _spec(endpoint={"timeout_s": 0.4})
    requests = _requests(120) + _requests(60, prefix="streamed", stream=True)
    results, stats = await _run(sim, spec, requests)
    assert len(results) == 180 and all(r.ok for r in results)
    assert len({r.request.body["messages"][0]["content"] for r in results}) == 180
    _assert_each_answered_once(sim, requests)
    injected = sim.stats()["faults"]
    assert set(injected) >= {"http_500", "http_502", "http_503", "drop", "truncate"}
    # one retry per injected fault; a connection dropped at once after it was reused looks
    # like one the server had closed, and is sent again without counting an attempt
    assert stats.retries + stats.resent == sum(injected.values())
    assert stats.status_counts[0] >= injected.get("drop", 0)


async def test_streaming_aggregation_equals_the_non_streamed_answer(
    simulator: SimulatorServer,
) -> None:
    spec = _spec()
    body = {"n": 2, "logprobs": True, "top_logprobs": 2, "seed": 3}
    plain, _ = await _run(simulator, spec, _requests(8, **body))
    streamed, _ = await _run(
        simulator,
        spec,
        _requests(8, stream=True, stream_options={"include_usage": True}, **body),
    )
    by_row = {r.request.row_id: r.response for r in plain}
    for result in streamed:
        assert result.response is not None
        expected = by_row[result.request.row_id]
        assert expected is not None
        assert result.response.choices == expected.choices
        assert result.response.usage.completion_tokens == expected.usage.completion_tokens
        assert result.response.usage.prompt_tokens == expected.usage.prompt_tokens
        assert result.response.system_fingerprint == expected.system_fingerprint


async def test_streamed_tool_calls_equal_the_non_streamed_ones(simulator: SimulatorServer) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "lookup",
                "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
            },
        }
    ]
    body = {"tools": tools, "tool_choice": "required"}
    plain, _ = await _run(simulator, _spec(), _requests(3, **body))
    streamed, _ = await _run(simulator, _spec(), _requests(3, stream=True, **body))
    plain_calls = {r.request.row_id: r.response.choices for r in plain if r.response}
    for result in streamed:
        assert result.response is not None
        assert result.response.choices[0].tool_calls
        assert result.response.choices == plain_calls[result.request.row_id]


async def test_seeds_are_reproducible(simulator: SimulatorServer) -> None:
    first, _ = await _run(simulator, _spec(), _requests(5, seed=42, temperature=1.0))
    second, _ = await _run(simulator, _spec(), _requests(5, seed=42, temperature=1.0))

    def texts(results: list[ChatResult]) -> dict[str, str | None]:
        return {r.request.row_id: r.response.choices[0].content for r in results if r.response}

    assert texts(first) == texts(second)
    assert all(r.request.seed == 42 for r in first)


async def test_non_retryable_errors_are_recorded_and_not_retried(
    simulator_factory: SimulatorFactory,
) -> None:
    sim = await simulator_factory(api_key="sk-right")
    requests = _requests(5)
    results, stats = await _run(
        sim, _spec(), requests, headers={"authorization": "Bearer sk-wrong"}
    )
    assert all(type(r.error) is AuthenticationError and r.attempts == 1 for r in results)
    assert all(r.http_status == 401 for r in results)
    assert sim.stats()["requests"] == 5 and stats.retries == 0


async def test_a_stall_costs_no_more_than_the_timeout(simulator_factory: SimulatorFactory) -> None:
    sim = await simulator_factory(faults={"stall": 0.3, "stall_s": 30.0, "seed": 1})
    spec = _spec(endpoint={"timeout_s": 0.3}, retry={"initial_wait_s": 0.01, "max_wait_s": 0.02})
    requests = _requests(20)
    started = time.monotonic()
    results, _ = await _run(sim, spec, requests)
    elapsed = time.monotonic() - started
    assert all(r.ok for r in results)
    stalled = [r for r in results if r.attempts > 1]
    assert stalled, "the fault seed should stall some rows"
    for result in stalled:
        assert result.latency_ms / 1000 <= (result.attempts - 1) * (0.3 + 0.02) + 0.25
    assert elapsed < max(r.attempts for r in results) * 0.35 + 1.0
    _assert_each_answered_once(sim, requests)


async def test_a_stalled_stream_is_cut_by_the_idle_timeout(
    simulator_factory: SimulatorFactory,
) -> None:
    sim = await simulator_factory(faults={"stall": 0.5, "stall_s": 30.0, "seed": 2})
    spec = _spec(endpoint={"timeout_s": 5.0, "idle_timeout_s": 0.2, "first_byte_timeout_s": 0.2})
    started = time.monotonic()
    results, _ = await _run(sim, spec, _requests(6, stream=True))
    assert all(r.ok for r in results)
    assert time.monotonic() - started < 3.0  # not the 5 s deadline per stalled attempt


async def test_stop_mid_run_loses_nothing(simulator_factory: SimulatorFactory) -> None:
    sim = await simulator_factory(latency={"mean_ms": 50})
    stop = asyncio.Event()
    requests = _requests(200)
    results: list[ChatResult] = []
    stats = ExecutionStats(run_id="it", started_at=datetime.now(UTC))
    spec = _spec(limits={"max_concurrency": 8})
    transport = AiohttpTransport(spec.endpoint, max_connections=8)

    def on_result(result: ChatResult) -> None:
        results.append(result)
        if len(results) == 20:
            stop.set()

    try:
        await execute(
            requests,
            limits=spec.limits,
            retry=spec.retry,
            keep_raw=spec.output.keep_raw,
            transport=transport,
            url=sim.base_url + "/chat/completions",
            headers={},
            on_result=on_result,
            stats=stats,
            stop=stop,
        )
    finally:
        await transport.aclose()
    assert stats.stop_reason == "interrupted"
    assert 20 <= len(results) < 40
    answered = Counter(sim.stats()["answers"])
    assert answered == Counter(key_of(r.request.body) for r in results)  # every answer kept


# -- rate limits ----------------------------------------------------------------------------------


def _sent_rate(results: list[ChatResult]) -> float:
    """Requests per second between the first and the last first-send."""
    starts = sorted(r.started_at for r in results)
    return (len(starts) - 1) / (starts[-1] - starts[0]).total_seconds()


async def test_rpm_is_respected_at_the_limit_with_a_full_window(
    simulator_factory: SimulatorFactory,
) -> None:
    sim = await simulator_factory(rpm=1200, prefill=True)
    spec = _spec(limits={"rpm": 1200, "max_concurrency": 16})
    results, stats = await _run(sim, spec, _requests(40))
    assert all(r.ok for r in results)
    assert 0.9 * 20 <= _sent_rate(results) <= 1.02 * 20
    # the prefilled window frees capacity in 0.1 s slices: the first request may be early
    assert stats.rate_limited <= 1


async def test_tpm_is_respected_at_the_limit_with_a_full_window(
    simulator_factory: SimulatorFactory,
) -> None:
    requests = _requests(40)
    per_request = requests[0].est_tokens
    tpm = per_request * 1200  # binds at 20 requests/s
    sim = await simulator_factory(tpm=tpm, prefill=True)
    results, stats = await _run(sim, _spec(limits={"tpm": tpm}), requests)
    assert all(r.ok for r in results)
    assert 0.9 * 20 <= _sent_rate(results) <= 1.05 * 20
    assert stats.rate_limited <= 1


async def test_a_429_storm_from_unannounced_limits_is_survived(
    simulator_factory: SimulatorFactory,
) -> None:
    """The client is not told the server's limit: it learns from 429s and headers."""
    sim = await simulator_factory(rpm=1200, prefill=True)
    requests = _requests(40)
    spec = _spec(limits={"max_concurrency": 16}, retry={"max_wait_s": 2.0})
    results, stats = await _run(sim, spec, requests)
    assert all(r.ok for r in results)
    _assert_each_answered_once(sim, requests)
    assert stats.rate_limited < 40  # the run-wide pause keeps the storm short
    assert max(r.attempts for r in results) <= 4


async def test_bare_429s_without_any_advice_are_survived(
    simulator_factory: SimulatorFactory,
) -> None:
    sim = await simulator_factory(faults={"http_429": 0.3, "seed": 5})
    requests = _requests(60)
    results, stats = await _run(sim, _spec(), requests)
    assert all(r.ok for r in results)
    assert stats.rate_limited == sim.stats()["faults"]["http_429"]
    _assert_each_answered_once(sim, requests)


@pytest.mark.parametrize("adaptive", [True, False])
async def test_concurrency_never_exceeds_the_limit(
    simulator_factory: SimulatorFactory, adaptive: bool
) -> None:
    sim = await simulator_factory(latency={"mean_ms": 20})
    spec = _spec(limits={"max_concurrency": 5, "adaptive": adaptive})
    await _run(sim, spec, _requests(40))
    assert sim.stats()["max_in_flight"] <= 5


async def test_a_request_larger_than_the_tpm_limit_fails_at_once(
    simulator_factory: SimulatorFactory,
) -> None:
    sim = await simulator_factory(tpm=50)  # each request charges more than 50 tokens
    results, stats = await _run(sim, _spec(), _requests(3))
    assert all(type(r.error) is RequestTooLargeError and r.attempts == 1 for r in results)
    assert stats.requests_sent == 3
