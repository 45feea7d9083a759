"""The executor with a pool of endpoints, through the transport seam: each member's network
is a named handler. Over real HTTP: tests/integration/test_pool_simulator.py.

The clock is the real one: the handlers answer at once, so a run takes milliseconds, and a
cool-down or a 429's hold (seconds) visibly outlasts it. A fake clock that jumps on every
sleep would run the router's timers -- and so the cool-downs -- forward by itself.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson

from batchchat.execute.endpoint import Target
from batchchat.execute.executor import execute
from batchchat.execute.health import PROVING_IN_FLIGHT, SUSPECT_ROWS
from batchchat.execute.pool import PoolMember, PoolSettings
from batchchat.execute.transport import HTTPRequest, HTTPResponse, MockTransport
from batchchat.models import ChatRequest, ChatResult, ExecutionStats, StopReason
from batchchat.spec import LimitsSpec, PoolEndpointSpec, RetrySpec, RoutingSpec
from tests._fake_time import FakeTime

Handler = Callable[[HTTPRequest], Any]


# -- building blocks ----------------------------------------------------------------------------


def _request(i: int) -> ChatRequest:
    body = {"model": "m", "messages": [{"role": "user", "content": f"row {i}"}], "max_tokens": 5}
    return ChatRequest(str(i), 0, f"{i}#0", body, f"h{i}", 10, 5)


def _row(request: HTTPRequest) -> int:
    return int(orjson.loads(request.body)["messages"][0]["content"].split()[1])


def _completion(content: str) -> bytes:
    return orjson.dumps(
        {
            "id": "chatcmpl-1",
            "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        }
    )


def _error(status: int, code: str | None = None, **headers: str) -> HTTPResponse:
    body = {"error": {"message": f"status {status}", "type": code, "code": code}}
    return HTTPResponse(status, headers, orjson.dumps(body))


class Member:
    """One pool member for a test: its spec, its network (a handler) and what it was sent."""

    def __init__(self, name: str, handler: Handler, **spec: Any) -> None:
        self.spec = PoolEndpointSpec(name=name, base_url=f"http://{name}.test/v1", **spec)
        self.handler = handler
        self.sent: list[HTTPRequest] = []
        self.in_flight = 0
        #: called as each request arrives, before the handler: what the router saw then
        self.on_arrival: Callable[[], None] | None = None

    async def __call__(self, request: HTTPRequest) -> HTTPResponse:
        self.sent.append(request)
        self.in_flight += 1
        if self.on_arrival is not None:
            self.on_arrival()
        try:
            await asyncio.sleep(0)  # others run meanwhile, as on a network
            response = self.handler(request)
            return await response if asyncio.iscoroutine(response) else response
        finally:
            self.in_flight -= 1

    def opened(self, price: float | None = None) -> PoolMember:
        url = f"http://{self.spec.name}.test/v1/chat/completions"
        target = Target(url=url, headers={"authorization": "Bearer k"}, display=url)
        cost = None if price is None else (lambda request, response, p=price: p)
        return PoolMember(self.spec, target, MockTransport(self), cost)


class PoolRun:
    """One execute() over a pool, and everything it produced."""

    def __init__(self, *members: Member, **routing: Any) -> None:
        self.members = {m.spec.name: m for m in members}
        self.routing = RoutingSpec.model_validate(routing)
        self.results: list[ChatResult] = []
        self.warnings: list[str] = []
        self.stats = ExecutionStats(run_id="p", started_at=datetime.now(UTC))

    async def __call__(
        self, rows: int, *, prices: dict[str, float] | None = None, **kw: Any
    ) -> ExecutionStats:
        opened = [m.opened((prices or {}).get(name)) for name, m in self.members.items()]
        return await execute(
            [_request(i) for i in range(rows)],
            limits=kw.pop("limits", LimitsSpec(max_concurrency=4)),
            retry=RetrySpec(max_attempts=4, initial_wait_s=0.5, max_wait_s=30.0),
            on_result=self.results.append,
            stats=self.stats,
            pool=PoolSettings(opened, self.routing, on_warning=self.warnings.append),
            **kw,
        )

    def answered_by(self) -> Counter[str | None]:
        return Counter(r.endpoint for r in self.results if r.ok)

    def rows(self) -> list[int]:
        return sorted(int(r.request.row_id) for r in self.results)


# -- the fake servers ---------------------------------------------------------------------------


def ok_completion(request: HTTPRequest) -> HTTPResponse:
    return HTTPResponse(200, {}, _completion(f"answer {_row(request)}"))


def always_overloaded(request: HTTPRequest) -> HTTPResponse:
    return _error(503)


def wrong_key(request: HTTPRequest) -> HTTPResponse:
    return _error(401, "invalid_api_key")


def gateway_without_db(request: HTTPRequest) -> HTTPResponse:
    """What LiteLLM's proxy answers a wrong key when it has no database: a 400."""
    return HTTPResponse(
        400, {}, b'{"error":{"message":"No connected db.","type":"no_db_connection","code":"400"}}'
    )


def rate_limited_for(seconds: int) -> Handler:
    def rate_limited(request: HTTPRequest) -> HTTPResponse:
        return _error(429, "rate_limit_exceeded", **{"retry-after": str(seconds)})

    return rate_limited


def refuses_row(row: int, response: HTTPResponse) -> Handler:
    def handler(request: HTTPRequest) -> HTTPResponse:
        return response if _row(request) == row else ok_completion(request)

    return handler


# -- failover and health ------------------------------------------------------------------------


async def test_a_failing_endpoint_is_cooled_down_after_a_handful_its_rows_go_elsewhere() -> None:
    run = PoolRun(Member("good", ok_completion), Member("bad", always_overloaded))
    stats = await run(300)
    assert run.rows() == list(range(300)) and all(r.ok for r in run.results)
    assert run.answered_by() == Counter({"good": 300})
    bad = stats.endpoints["bad"]
    assert bad.requests_sent <= 10 and bad.cooldowns >= 1  # not once per row
    assert bad.results_error == 0 and bad.removed is None
    assert stats.endpoints["good"].results_ok == 300
    assert stats.stop_reason == StopReason.COMPLETED


async def test_a_rejected_key_takes_its_endpoint_out_with_a_warning_naming_it() -> None:
    run = PoolRun(Member("good", ok_completion), Member("stale-key", wrong_key))
    stats = await run(100)
    assert all(r.ok for r in run.results) and len(run.results) == 100
    assert run.answered_by() == Counter({"good": 100})
    assert stats.endpoints["stale-key"].requests_sent <= PROVING_IN_FLIGHT
    assert stats.endpoints["stale-key"].removed is not None
    (warning,) = run.warnings
    assert warning.startswith("endpoint 'stale-key' (http://stale-key.test/")
    assert "out of the pool for this run: AuthenticationError: HTTP 401" in warning


async def test_a_pool_where_every_key_is_wrong_stops_fast_with_every_reason() -> None:
    run = PoolRun(Member("a", wrong_key), Member("b", wrong_key), Member("c", gateway_without_db))
    stats = await run(1000)
    assert stats.stop_reason == StopReason.FATAL
    assert stats.requests_sent <= 3 * 4  # a couple each, not a thousand
    assert stats.fatal_error is not None
    assert stats.fatal_error.startswith("every endpoint of the pool is out:")
    for name in ("'a'", "'b'", "'c'", "AuthenticationError", "No connected db."):
        assert name in stats.fatal_error
    # the rows the last endpoint refused while it was still on trial are error rows (as
    # with a single endpoint: a re-run sends them again); the rest were never sent
    assert len(run.results) <= SUSPECT_ROWS + PROVING_IN_FLIGHT
    assert not any(r.ok for r in run.results)


async def test_a_gateway_refusing_a_key_with_a_400_is_dropped_its_rows_answered_elsewhere() -> None:
    run = PoolRun(Member("good", ok_completion), Member("no-db", gateway_without_db))
    stats = await run(100)
    assert all(r.ok for r in run.results) and len(run.results) == 100
    assert stats.endpoints["no-db"].removed is not None
    assert "No connected db." in run.warnings[0]


async def test_a_row_level_400_is_that_rows_error_and_is_not_sprayed() -> None:
    bad_row = refuses_row(7, _error(400, "invalid_request_error"))
    run = PoolRun(Member("a", bad_row), Member("b", bad_row), Member("c", bad_row))
    stats = await run(40, limits=LimitsSpec(max_concurrency=1))
    (seven,) = [r for r in run.results if r.request.row_id == "7"]
    assert not seven.ok and seven.attempts == 1 and seven.http_status == 400
    assert sum(r.ok for r in run.results) == 39
    assert stats.status_counts[400] == 1
    assert all(counts.removed is None for counts in stats.endpoints.values())


async def test_too_long_a_prompt_never_fails_over_even_to_an_unproven_endpoint() -> None:
    too_long = refuses_row(0, _error(400, "context_length_exceeded"))
    run = PoolRun(Member("a", too_long), Member("b", too_long))
    stats = await run(1)
    (result,) = run.results
    assert not result.ok and result.attempts == 1
    assert type(result.error).__name__ == "ContextLengthError"
    assert stats.requests_sent == 1


async def test_a_429_holds_only_its_endpoint() -> None:
    run = PoolRun(Member("limited", rate_limited_for(20)), Member("free", ok_completion))
    stats = await run(200)  # retry.max_wait_s is 30: its admission heeds the 20 s
    assert all(r.ok for r in run.results) and len(run.results) == 200
    limited = stats.endpoints["limited"]
    assert 1 <= limited.rate_limited == limited.requests_sent <= PROVING_IN_FLIGHT + 1
    assert limited.cooldowns == 0 and limited.removed is None  # held by its admission
    assert max(r.latency_ms for r in run.results) < 20_000  # no row waited out the hold


async def test_advice_longer_than_max_wait_puts_the_endpoint_out_for_as_long() -> None:
    # a row of a single endpoint would fail at once; a pool has somewhere else to go
    run = PoolRun(Member("quota", rate_limited_for(3600)), Member("free", ok_completion))
    stats = await run(200)
    assert all(r.ok for r in run.results) and len(run.results) == 200
    quota = stats.endpoints["quota"]
    assert quota.requests_sent <= PROVING_IN_FLIGHT + 1 and quota.cooldowns >= 1


# -- routing ------------------------------------------------------------------------------------


async def test_the_fallback_tier_gets_traffic_only_while_the_first_is_saturated() -> None:
    async def slow_completion(request: HTTPRequest) -> HTTPResponse:
        # slow in turns of the event loop, not in seconds: the same interleaving however
        # loaded the machine is (a real sleep let a cheap answer land between the fallback
        # being chosen and its handler looking)
        for _ in range(20):
            await asyncio.sleep(0)
        return ok_completion(request)

    cheap = Member("cheap", slow_completion, limits={"max_concurrency": 2})
    fallback = Member("fallback", ok_completion, priority=2)
    seen_cheap_busy: list[int] = []
    fallback.on_arrival = lambda: seen_cheap_busy.append(cheap.in_flight)
    run = PoolRun(cheap, fallback)
    await run(60)
    assert all(r.ok for r in run.results) and len(run.results) == 60
    assert run.answered_by()["cheap"] >= 2 and run.answered_by()["fallback"] > 0
    assert set(seen_cheap_busy) == {2}  # only ever while the cheap tier was full


async def test_the_fallback_tier_is_idle_while_the_first_has_room() -> None:
    cheap = Member("cheap", ok_completion, limits={"max_concurrency": 256})
    run = PoolRun(cheap, Member("fallback", ok_completion, priority=2))
    await run(200)
    assert run.answered_by() == Counter({"cheap": 200})


async def test_the_fallback_tier_takes_over_when_the_first_is_out() -> None:
    run = PoolRun(Member("cheap", wrong_key), Member("fallback", ok_completion, priority=2))
    stats = await run(50)
    assert run.answered_by() == Counter({"fallback": 50})
    assert stats.endpoints["cheap"].removed is not None


async def test_a_first_tier_held_by_a_429_before_any_answer_hands_its_rows_to_the_fallback() -> (
    None
):
    # as the LiteLLM proxy does when its minute is used up: 429s and a 60 s retry-after from
    # the first request on. Held, the tier is saturated: the fallback must not wait it out
    run = PoolRun(
        Member("cheap", rate_limited_for(20)), Member("fallback", ok_completion, priority=2)
    )
    stats = await asyncio.wait_for(run(50), timeout=10)
    assert run.answered_by() == Counter({"fallback": 50})
    assert stats.endpoints["cheap"].requests_sent <= PROVING_IN_FLIGHT
    assert max(r.latency_ms for r in run.results) < 10_000


async def test_each_endpoint_is_sent_its_own_model_name_and_prices_its_own_answers() -> None:
    run = PoolRun(
        Member("azure", ok_completion, model={"m": "my-deployment"}),
        Member("openai", ok_completion),
    )
    await run(100, prices={"azure": 2.0, "openai": 1.0})
    models = {
        name: {orjson.loads(r.body)["model"] for r in member.sent}
        for name, member in run.members.items()
    }
    assert models == {"azure": {"my-deployment"}, "openai": {"m"}}
    assert all(r.cost_usd == {"azure": 2.0, "openai": 1.0}[r.endpoint] for r in run.results)  # type: ignore[index]
    assert sum(run.answered_by().values()) == 100 and len(run.answered_by()) == 2


async def test_each_endpoint_keeps_its_own_counters() -> None:
    run = PoolRun(Member("a", ok_completion), Member("b", ok_completion))
    stats = await run(100)
    a, b = stats.endpoints["a"], stats.endpoints["b"]
    assert a.requests_sent + b.requests_sent == stats.requests_sent == 100
    assert a.results_ok + b.results_ok == 100
    assert a.status_counts == {200: a.requests_sent}
    assert stats.concurrency == 8  # both members' max_concurrency


async def test_sticky_rows_keep_their_endpoint_across_retries() -> None:
    attempts: Counter[int] = Counter()

    def first_attempt_fails(request: HTTPRequest) -> HTTPResponse:
        attempts[_row(request)] += 1
        return _error(500) if attempts[_row(request)] == 1 else ok_completion(request)

    run = PoolRun(
        Member("a", first_attempt_fails, limits={"max_concurrency": 64}),
        Member("b", first_attempt_fails, limits={"max_concurrency": 64}),
        sticky="row",
        failures=1000,
    )
    await run(60)
    assert all(r.ok and r.attempts == 2 for r in run.results)
    # the retry was passed to the other member (the one that failed is avoided), and the
    # first attempts were spread by the rows' own order
    assert 10 < run.answered_by()["a"] < 50


async def test_an_interrupt_while_attempts_wait_for_room_ends_the_run() -> None:
    stop = asyncio.Event()
    answered = 0

    def interrupted_after_three(request: HTTPRequest) -> HTTPResponse:
        nonlocal answered
        answered += 1
        if answered == 3:
            stop.set()
        return ok_completion(request)

    run = PoolRun(Member("only", interrupted_after_three, limits={"rpm": 1200}))
    stats = await asyncio.wait_for(run(500, stop=stop), 10)
    assert stats.stop_reason == StopReason.INTERRUPTED
    assert 3 <= len(run.results) < 500


async def test_a_key_a_server_echoes_is_masked_in_the_warning_and_the_counters() -> None:
    def echoes_the_key(request: HTTPRequest) -> HTTPResponse:
        body = {"error": {"message": "Incorrect API key provided: sk-proj-abcdef0123456789abcd"}}
        return HTTPResponse(401, {}, orjson.dumps(body))

    run = PoolRun(Member("good", ok_completion), Member("echo", echoes_the_key))
    stats = await run(20)
    assert "sk-proj-abcdef0123456789abcd" not in " ".join(run.warnings)
    assert stats.endpoints["echo"].removed is not None
    assert "sk-proj-abcdef0123456789abcd" not in stats.endpoints["echo"].removed


async def test_a_row_left_with_no_endpoint_that_may_take_it_gets_its_last_error() -> None:
    # row 0 is refused by "a" while "a" is on trial (a 400 that may be a's fault), so it waits
    # for "b"; then "b" turns out to have a wrong key. Nowhere is left for row 0: its own
    # last error becomes its result, and the run ends (it must not wait for ever)
    async def slow_wrong_key(request: HTTPRequest) -> HTTPResponse:
        await asyncio.sleep(0.05)
        return wrong_key(request)

    a = Member("a", refuses_row(0, _error(400, "invalid_request_error")))
    b = Member("b", slow_wrong_key, limits={"max_concurrency": 1})
    run = PoolRun(a, b)
    stats = await asyncio.wait_for(run(30), 10)
    assert stats.stop_reason == StopReason.COMPLETED
    assert run.rows() == list(range(30))
    (zero,) = [r for r in run.results if r.request.row_id == "0"]
    assert not zero.ok and zero.http_status == 400 and zero.endpoint == "a"
    assert all(r.ok for r in run.results if r.request.row_id != "0")
    assert stats.endpoints["b"].removed is not None


async def test_a_pool_whose_every_endpoint_stays_down_stops_after_a_minute() -> None:
    # the clock jumps with every sleep here, so the minute of cool-downs and probes passes
    # at once; a single endpoint's run stops the same way when its server stays away
    time = FakeTime()
    run = PoolRun(Member("a", always_overloaded), Member("b", always_overloaded))
    stats = await asyncio.wait_for(run(500, sleep=time.sleep, clock=time.clock), 10)
    assert stats.stop_reason == StopReason.FATAL
    assert stats.fatal_error is not None
    assert stats.fatal_error.startswith("every endpoint of the pool has been out for")
    assert "'a' (" in stats.fatal_error and "ServerError: HTTP 503" in stats.fatal_error
    assert stats.requests_sent < 60  # a few probes, not 500 rows × 6 attempts
    assert not any(r.ok for r in run.results)
