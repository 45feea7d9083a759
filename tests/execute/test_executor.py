"""The executor through the transport seam: named handlers play the server, time is fake."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import UTC
from typing import Any

import orjson
import pytest

from batchchat.errors import (
    ClientError,
    InputError,
    NetworkError,
    ServerError,
    SinkError,
)
from batchchat.execute.budget import Budget
from batchchat.execute.executor import execute
from batchchat.execute.transport import HTTPRequest, HTTPResponse, MockTransport
from batchchat.models import ChatRequest, ChatResult, ExecutionStats, StopReason
from batchchat.spec import JobSpec
from tests._fake_time import FakeTime

URL = "http://api.test/v1/chat/completions"


# -- building blocks ----------------------------------------------------------------------------


def _spec(**overrides: Any) -> JobSpec:
    data: dict[str, Any] = {
        "name": "t",
        "input": {"path": "in.jsonl"},
        "request": {"model": "m", "messages": []},
        "retry": {"max_attempts": 4, "initial_wait_s": 0.5, "max_wait_s": 5.0},
        "limits": {"max_concurrency": 4},
    }
    for key, value in overrides.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return JobSpec.model_validate(data)


def _request(i: int, **body: Any) -> ChatRequest:
    payload = {"model": "m", "messages": [{"role": "user", "content": f"row {i}"}], **body}
    return ChatRequest(str(i), 0, f"{i}#0", payload, f"h{i}", 10, 20)


def _requests(n: int, **body: Any) -> list[ChatRequest]:
    return [_request(i, **body) for i in range(n)]


def _row(request: HTTPRequest) -> int:
    content = orjson.loads(request.body)["messages"][0]["content"]
    return int(content.split()[1])


def _completion(
    content: str = "ok", finish: str = "stop", usage: tuple[int, int] = (10, 5)
) -> bytes:
    return orjson.dumps(
        {
            "id": "chatcmpl-1",
            "model": "m",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": finish,
                }
            ],
            "usage": {
                "prompt_tokens": usage[0],
                "completion_tokens": usage[1],
                "total_tokens": sum(usage),
            },
        }
    )


def _error(
    status: int, code: str | None = None, headers: dict[str, str] | None = None
) -> HTTPResponse:
    body = orjson.dumps({"error": {"message": f"status {status}", "type": code, "code": code}})
    return HTTPResponse(status, headers or {}, body)


class Run:
    """One execute() call's inputs and everything it produced."""

    def __init__(self, **spec: Any) -> None:
        self.spec = _spec(**spec)
        self.time = FakeTime()
        self.results: list[ChatResult] = []
        self.stats = ExecutionStats(run_id="r", started_at=FakeTime().now)  # type: ignore[arg-type]

    async def __call__(self, handler: Any, requests: Any, **kw: Any) -> ExecutionStats:
        return await execute(
            requests,
            limits=self.spec.limits,
            retry=self.spec.retry,
            keep_raw=self.spec.output.keep_raw,
            transport=MockTransport(handler),
            url=URL,
            headers={"authorization": "Bearer sk-test"},
            on_result=self.results.append,
            stats=self.stats,
            sleep=self.time.sleep,
            clock=self.time.clock,
            **kw,
        )

    def by_row(self) -> dict[int, ChatResult]:
        return {int(r.request.row_id): r for r in self.results}


# -- named handlers (the fake server) ------------------------------------------------------------


def ok_completion(request: HTTPRequest) -> HTTPResponse:
    return HTTPResponse(
        200, {"content-type": "application/json"}, _completion(f"answer {_row(request)}")
    )


def length_cut(request: HTTPRequest) -> HTTPResponse:
    return HTTPResponse(200, {}, _completion("half an ans", finish="length"))


def bad_request(request: HTTPRequest) -> HTTPResponse:
    return _error(400, "invalid_request_error")


def always_overloaded(request: HTTPRequest) -> HTTPResponse:
    return _error(503)


def no_quota(request: HTTPRequest) -> HTTPResponse:
    return _error(429, "insufficient_quota")


class FirstAttemptFails:
    """Each row's first attempt gets ``failure`` (a response, or an exception to raise)."""

    def __init__(self, failure: HTTPResponse | Exception) -> None:
        self.failure = failure
        self.attempts: Counter[int] = Counter()
        self.sent_at: list[tuple[int, float]] = []

    def __call__(self, request: HTTPRequest) -> HTTPResponse:
        row = _row(request)
        self.attempts[row] += 1
        if self.attempts[row] > 1:
            return ok_completion(request)
        if isinstance(self.failure, Exception):
            raise self.failure
        return self.failure


def rate_limited_then_ok() -> FirstAttemptFails:
    return FirstAttemptFails(_error(429, "rate_limit_exceeded", {"retry-after-ms": "200"}))


def drops_connection() -> FirstAttemptFails:
    return FirstAttemptFails(NetworkError("connection reset by peer"))


def server_error_then_ok() -> FirstAttemptFails:
    return FirstAttemptFails(_error(500))


def truncated_then_ok() -> FirstAttemptFails:
    return FirstAttemptFails(HTTPResponse(200, {}, _completion()[:30]))


# -- outcomes -----------------------------------------------------------------------------------


async def test_every_request_gets_one_result() -> None:
    run = Run()
    stats = await run(ok_completion, _requests(50))
    assert sorted(run.by_row()) == list(range(50))
    assert all(r.ok and r.attempts == 1 and r.http_status == 200 for r in run.results)
    assert run.by_row()[7].response is not None
    assert run.by_row()[7].response.choices[0].content == "answer 7"
    assert (stats.requests_sent, stats.retries, stats.results_ok, stats.results_error) == (
        50,
        0,
        50,
        0,
    )
    assert stats.status_counts == {200: 50}
    assert stats.stop_reason == "completed"
    assert (stats.prompt_tokens, stats.completion_tokens) == (500, 250)
    assert sum(b.ok for b in stats.timeline) == 50
    assert sum(b.tokens for b in stats.timeline) == 750


async def test_requests_carry_the_url_headers_and_encoded_body() -> None:
    seen: list[HTTPRequest] = []

    def recording(request: HTTPRequest) -> HTTPResponse:
        seen.append(request)
        return ok_completion(request)

    await Run()(recording, [_request(3, temperature=0.5)])
    (request,) = seen
    assert request.url == URL
    assert request.headers == {
        "content-type": "application/json",
        "authorization": "Bearer sk-test",
    }
    assert orjson.loads(request.body) == _request(3, temperature=0.5).body
    assert request.stream is False


async def test_an_async_iterable_of_requests_works_too() -> None:
    async def produce() -> AsyncIterator[ChatRequest]:
        for request in _requests(5):
            yield request

    run = Run()
    await run(ok_completion, produce())
    assert sorted(run.by_row()) == [0, 1, 2, 3, 4]


async def test_an_empty_input_completes_at_once() -> None:
    run = Run()
    stats = await run(ok_completion, [])
    assert run.results == [] and stats.requests_sent == 0 and stats.stop_reason == "completed"


@pytest.mark.parametrize(
    ("handler", "status"),
    [
        (rate_limited_then_ok, 429),
        (drops_connection, 0),
        (server_error_then_ok, 500),
        (truncated_then_ok, 200),
    ],
)
async def test_retryable_failures_are_retried_to_success(handler: Any, status: int) -> None:
    run = Run()
    stats = await run(handler(), _requests(6))
    assert all(r.ok and r.attempts == 2 and r.http_status == 200 for r in run.results)
    assert len(run.results) == 6
    assert stats.retries == 6 and stats.requests_sent == 12
    assert stats.status_counts[status] == 6 + (6 if status == 200 else 0)
    assert stats.rate_limited == (6 if status == 429 else 0)


async def test_a_retry_goes_ahead_of_the_rows_queued_before_it() -> None:
    # 30 rows wait in the queue; row 0's second attempt must not wait behind all of them
    run = Run(limits={"max_concurrency": 1})
    failing = server_error_then_ok()
    order: list[int] = []

    async def server(request: HTTPRequest) -> HTTPResponse:
        order.append(_row(request))
        for _ in range(3):  # the network: the retry's timer runs meanwhile
            await asyncio.sleep(0)
        return failing(request) if _row(request) == 0 else ok_completion(request)

    await run(server, _requests(30))
    assert sorted(run.by_row()) == list(range(30)) and run.by_row()[0].attempts == 2
    assert order.index(0, 1) <= 2  # right after the attempt in flight when it failed


async def test_non_retryable_errors_are_recorded_after_one_attempt() -> None:
    run = Run()
    stats = await run(bad_request, _requests(3))
    for result in run.results:
        assert not result.ok and result.attempts == 1
        assert type(result.error) is ClientError
        assert result.http_status == 400
    assert stats.results_error == 3 and stats.requests_sent == 3 and stats.retries == 0


async def test_quota_errors_are_not_retried_and_stop_the_run() -> None:
    run = Run(limits={"max_concurrency": 1})
    stats = await run(no_quota, _requests(3))
    assert [r.attempts for r in run.results] == [1]
    assert stats.requests_sent == 1  # every other request would repeat it: none is sent
    assert stats.stop_reason == StopReason.FATAL
    assert stats.fatal_error is not None and "QuotaExceededError" in stats.fatal_error


async def test_a_length_finish_is_an_outcome_not_a_failure() -> None:
    run = Run()
    await run(length_cut, _requests(2))
    assert all(r.ok and r.attempts == 1 for r in run.results)
    assert run.results[0].response is not None
    assert run.results[0].response.choices[0].finish_reason == "length"


async def test_exhausted_retries_record_the_last_error_unwrapped() -> None:
    run = Run()
    stats = await run(always_overloaded, _requests(2))
    for result in run.results:
        assert type(result.error) is ServerError and result.attempts == 4
        assert result.http_status == 503
    assert stats.status_counts == {503: 8} and stats.retries == 6


async def test_latency_spans_the_retries_and_times_are_utc() -> None:
    run = Run()
    await run(server_error_then_ok(), _requests(1))
    (result,) = run.results
    waited = sum(run.time.sleeps)
    assert waited > 0
    assert result.latency_ms == pytest.approx(waited * 1000, rel=1e-6)
    assert result.started_at.tzinfo is UTC
    delta = (result.finished_at - result.started_at).total_seconds()
    assert delta == pytest.approx(result.latency_ms / 1000, abs=1e-3)


async def test_a_stream_request_is_assembled() -> None:
    def streaming(request: HTTPRequest) -> HTTPResponse:
        assert request.stream
        chunks = [
            {"choices": [{"index": 0, "delta": {"content": "Hel"}, "finish_reason": None}]},
            {"choices": [{"index": 0, "delta": {"content": "lo"}, "finish_reason": "stop"}]},
        ]
        text = "".join(f"data: {orjson.dumps(c).decode()}\n\n" for c in chunks) + "data: [DONE]\n\n"
        return HTTPResponse(200, {}, b": keep-alive\n\n" + text.encode())

    run = Run()
    await run(streaming, [_request(0, stream=True)])
    assert run.results[0].response is not None
    assert run.results[0].response.choices[0].content == "Hello"


async def test_results_are_priced_before_the_sink_sees_them() -> None:
    seen: list[float | None] = []
    run = Run()

    def on_result(result: ChatResult) -> None:
        seen.append(result.cost_usd)

    await execute(
        _requests(3),
        limits=run.spec.limits,
        retry=run.spec.retry,
        keep_raw=run.spec.output.keep_raw,
        transport=MockTransport(ok_completion),
        url=URL,
        headers={},
        on_result=on_result,
        stats=run.stats,
        cost_of=lambda result: 0.01,
        sleep=run.time.sleep,
        clock=run.time.clock,
    )
    assert seen == [0.01, 0.01, 0.01]
    assert run.stats.cost_usd == pytest.approx(0.03)


# -- rate limits --------------------------------------------------------------------------------


async def test_a_429_pauses_the_whole_run_not_only_its_request() -> None:
    sent_at: list[tuple[int, float]] = []
    time = FakeTime()
    limited = {"done": False}

    def first_request_is_limited(request: HTTPRequest) -> HTTPResponse:
        sent_at.append((_row(request), time.now))
        if not limited["done"]:
            limited["done"] = True
            return _error(429, "rate_limit_exceeded", {"retry-after": "2"})
        return ok_completion(request)

    run = Run(limits={"max_concurrency": 1})
    run.time = time
    await run(first_request_is_limited, _requests(4))
    t429 = sent_at[0][1]
    assert all(at >= t429 + 2.0 for _, at in sent_at[1:])
    assert len(run.results) == 4 and all(r.ok for r in run.results)


async def test_a_storm_of_429s_does_not_exhaust_retries() -> None:
    """Every request sent before the server recovers gets a 429 with retry-after 1 s; the
    run-wide pause means each row spends about one attempt on the storm, not all of them."""
    time = FakeTime()
    recovers_at = time.now + 1.0

    def storm(request: HTTPRequest) -> HTTPResponse:
        if time.now < recovers_at:
            return _error(429, "rate_limit_exceeded", {"retry-after": "1"})
        return ok_completion(request)

    run = Run(limits={"max_concurrency": 8}, retry={"max_attempts": 3})
    run.time = time
    stats = await run(storm, _requests(40))
    assert len(run.results) == 40 and all(r.ok for r in run.results)
    assert stats.rate_limited <= 8  # only the first wave of in-flight requests was refused


async def test_adaptive_concurrency_shrinks_when_the_server_says_it_is_overloaded() -> None:
    run = Run(limits={"max_concurrency": 8})
    in_flight = {"now": 0}
    after_503: list[tuple[int, int]] = []  # (in flight, stats.concurrency) after the 529

    async def overloaded_once(request: HTTPRequest) -> HTTPResponse:
        in_flight["now"] += 1
        if run.stats.status_counts.get(529):
            after_503.append((in_flight["now"], run.stats.concurrency))
        await asyncio.sleep(0)
        in_flight["now"] -= 1
        if not run.stats.status_counts.get(529) and _row(request) == 0:
            return _error(529)  # "overloaded": a congestion signal by itself
        return ok_completion(request)

    await run(overloaded_once, _requests(30))
    assert len(run.results) == 30
    # halved to 4, then +1 per window of successes: the 4 already in flight make it 5
    assert min(limit for _, limit in after_503) <= 5
    assert max(count for count, _ in after_503[:8]) <= 5  # and the sends obeyed it
    assert run.stats.concurrency > 4  # then grew back, one slot per window of successes


# -- stopping -----------------------------------------------------------------------------------


async def test_budget_stops_sending_and_finishes_in_flight() -> None:
    run = Run(limits={"max_concurrency": 1})
    budget = Budget(1.0, worst_case=lambda request: 0.3, spent=lambda: run.stats.cost_usd)
    stats = await run(ok_completion, _requests(10), budget=budget, cost_of=lambda result: 0.25)
    assert stats.stop_reason == "budget"
    assert len(run.results) == 3  # 0.75 spent; a fourth could cost 1.05
    assert stats.requests_sent == 3
    assert budget.spent_usd == pytest.approx(0.75)


async def test_budget_with_parallel_requests_never_passes_the_cap() -> None:
    run = Run(limits={"max_concurrency": 8})
    budget = Budget(1.0, worst_case=lambda request: 0.3, spent=lambda: run.stats.cost_usd)
    stats = await run(ok_completion, _requests(50), budget=budget, cost_of=lambda result: 0.1)
    assert stats.stop_reason == "budget"
    assert budget.spent_usd <= 1.0
    # in-flight reservations wait for room instead of stopping the run early
    assert len(run.results) >= 7


async def test_stop_event_stops_sending_and_waits_for_in_flight() -> None:
    stop = asyncio.Event()
    release = asyncio.Event()

    async def slow_after_two(request: HTTPRequest) -> HTTPResponse:
        if _row(request) >= 2:
            stop.set()
            await release.wait()
        return ok_completion(request)

    async def release_soon() -> None:
        await asyncio.sleep(0.01)
        release.set()

    run = Run(limits={"max_concurrency": 2})
    helper = asyncio.create_task(release_soon())
    stats = await run(slow_after_two, _requests(20), stop=stop, drain_timeout_s=5.0)
    await helper
    assert stats.stop_reason == "interrupted"
    assert stats.requests_sent <= 4  # nothing was sent after the stop
    assert len(run.results) == stats.requests_sent  # the in-flight ones finished
    assert stats.in_flight == 0


async def test_stop_cancels_what_does_not_finish_within_the_drain_timeout() -> None:
    stop = asyncio.Event()

    async def hangs(request: HTTPRequest) -> HTTPResponse:
        if _row(request) >= 1:
            stop.set()
            await asyncio.Event().wait()  # never answers
        return ok_completion(request)

    run = Run(limits={"max_concurrency": 3})
    stats = await asyncio.wait_for(
        run(hangs, _requests(10), stop=stop, drain_timeout_s=0.05), timeout=5
    )
    assert stats.stop_reason == "interrupted"
    assert [r.request.row_id for r in run.results] == ["0"]  # cancelled ones have no result


async def test_a_retry_waiting_when_the_run_stops_gets_no_result() -> None:
    stop = asyncio.Event()

    def fails_then_stops(request: HTTPRequest) -> HTTPResponse:
        stop.set()
        return _error(500)

    run = Run()
    stats = await run(fails_then_stops, _requests(3), stop=stop)
    assert run.results == [] and stats.stop_reason == "interrupted"


# -- memory and failures ------------------------------------------------------------------------


async def test_the_input_is_never_read_far_ahead_of_the_results() -> None:
    run = Run(limits={"max_concurrency": 4})
    pulled = itertools.count()
    ahead: list[int] = []

    def produce() -> Iterator[ChatRequest]:
        for i in range(300):
            ahead.append(i - len(run.results))
            next(pulled)
            yield _request(i)

    await run(ok_completion, produce(), max_pending=10)
    assert len(run.results) == 300
    assert max(ahead) <= 10


async def test_a_failing_sink_ends_the_run_with_its_error() -> None:
    run = Run()

    def broken_sink(result: ChatResult) -> None:
        raise SinkError("disk full")

    with pytest.raises(SinkError, match="disk full"):
        await execute(
            _requests(20),
            limits=run.spec.limits,
            retry=run.spec.retry,
            keep_raw=run.spec.output.keep_raw,
            transport=MockTransport(ok_completion),
            url=URL,
            headers={},
            on_result=broken_sink,
            stats=run.stats,
            sleep=run.time.sleep,
            clock=run.time.clock,
        )


async def test_an_input_error_reaches_the_caller() -> None:
    def produce() -> Iterator[ChatRequest]:
        yield _request(0)
        raise InputError("in.jsonl:2: not JSON")

    with pytest.raises(InputError, match=r"in\.jsonl:2"):
        await Run()(ok_completion, produce())


async def test_an_input_error_lets_the_attempts_in_flight_finish_first() -> None:
    # a malformed line far into the input: what was already sent is paid for, so it is kept
    gates = {0: asyncio.Event(), 1: asyncio.Event()}

    async def held(request: HTTPRequest) -> HTTPResponse:
        await gates[_row(request)].wait()
        return ok_completion(request)

    def produce() -> Iterator[ChatRequest]:
        yield _request(0)
        yield _request(1)
        raise InputError("in.jsonl:3: not JSON")

    async def until(condition: Any) -> None:  # a bounded spin of the loop, never a hang
        for _ in range(10_000):
            if condition():
                return
            await asyncio.sleep(0)
        raise AssertionError("the run never got there")

    run = Run(limits={"max_concurrency": 4})
    task = asyncio.create_task(run(held, produce(), max_pending=2))
    await until(lambda: run.stats.in_flight == 2)  # both sent; the feeder waits for a slot
    gates[0].set()  # row 0 answers: its slot frees, the feeder meets the bad line
    await until(lambda: task.done() or run.stats.stop_reason == "error")
    assert not task.done() and run.stats.in_flight == 1
    gates[1].set()  # row 1, still in flight when the input failed, answers too
    with pytest.raises(InputError, match=r"in\.jsonl:3"):
        await task
    assert sorted(run.by_row()) == [0, 1]
    assert all(result.ok for result in run.results)


async def test_a_stop_set_before_the_start_sends_nothing() -> None:
    stop = asyncio.Event()
    stop.set()
    run = Run()
    stats = await run(ok_completion, _requests(10), stop=stop)
    assert stats.requests_sent == 0 and run.results == []
    assert stats.stop_reason == "interrupted"
