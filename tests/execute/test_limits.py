"""Rate limiting: header parsing, pacing buckets, AIMD, and the run-wide cool-down."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from batchchat.errors import (
    ClientError,
    DeadlineExceeded,
    NetworkError,
    QuotaExceededError,
    RateLimitError,
    RequestTooLargeError,
    ServerError,
)
from batchchat.execute.limits import (
    DEFAULT_COOL_DOWN_S,
    AdaptiveConcurrency,
    Pacer,
    RateLimiter,
    TimeoutShare,
    parse_duration,
    wait_for_room_s,
)
from batchchat.spec import LimitsSpec
from tests._fake_time import FakeTime

DURATIONS = [
    ("1s", 1.0),
    ("20ms", 0.02),
    ("6m0s", 360.0),
    ("1m30.5s", 90.5),
    ("2h0m1s", 7201.0),
    ("8.64s", 8.64),
    ("250us", 0.00025),
    ("0s", 0.0),
    ("0.5", 0.5),  # plain seconds
    ("  3  ", 3.0),
    ("1700000030", 30.0),  # a Unix time, 30 s after "now"
    ("", None),
    ("soon", None),
    ("5 s", None),
    ("1x", None),
    ("s", None),
    (None, None),
]


@pytest.mark.parametrize(("text", "expected"), DURATIONS)
def test_reset_durations_are_parsed(text: str | None, expected: float | None) -> None:
    parsed = parse_duration(text, now=1_700_000_000.0)
    assert parsed == pytest.approx(expected) if expected is not None else parsed is None


def _rl(**values: str) -> dict[str, str]:
    return {f"x-ratelimit-{key.replace('_', '-')}": value for key, value in values.items()}


ROOM_CASES = [
    # (headers, tokens needed, seconds until the server has room)
    ({}, 100, 0.0),
    (_rl(remaining_requests="5", reset_requests="6s", limit_requests="600"), 0, 0.0),
    # out of requests: one request's share of the minute, no later than reset
    (_rl(remaining_requests="0", reset_requests="6s", limit_requests="600"), 0, 0.1),
    (_rl(remaining_requests="0", reset_requests="20ms", limit_requests="10"), 0, 0.02),
    (_rl(remaining_requests="0", reset_requests="1s"), 0, 1.0),  # no limit: wait for reset
    (_rl(remaining_requests="0", limit_requests="10"), 0, 0.0),  # no timing advice at all
    (_rl(remaining_tokens="100", reset_tokens="30s", limit_tokens="60000"), 500, 0.4),
    (_rl(remaining_tokens="1000", reset_tokens="30s", limit_tokens="60000"), 500, 0.0),
    (
        _rl(
            remaining_requests="0",
            reset_requests="50ms",
            limit_requests="6000",
            remaining_tokens="0",
            reset_tokens="2s",
            limit_tokens="600000",
        ),
        1000,
        0.1,
    ),
    (_rl(remaining_requests="lots", reset_requests="1s"), 0, 0.0),
]


@pytest.mark.parametrize(("headers", "needed", "expected"), ROOM_CASES)
def test_wait_for_room_from_rate_limit_headers(
    headers: dict[str, str], needed: int, expected: float
) -> None:
    assert wait_for_room_s(headers, tokens_needed=needed) == pytest.approx(expected)


# -- pacing buckets -----------------------------------------------------------------------------


@given(st.floats(min_value=2, max_value=1e8))
def test_a_pacer_never_lets_a_minute_hold_more_than_the_limit(per_minute: float) -> None:
    pacer = Pacer(per_minute)
    rate_per_minute = pacer.max_rate / pacer.time_period * 60
    assert pacer.max_rate >= 1
    # burst capacity + a minute at the paced rate stays within the limit
    assert pacer.max_rate + rate_per_minute <= per_minute * (1 + 1e-9)


def test_a_pacer_of_a_large_limit_runs_within_a_fraction_of_a_percent_of_it() -> None:
    pacer = Pacer(60_000)
    assert pacer.max_rate / pacer.time_period * 60 >= 0.99 * 60_000


async def test_a_pacer_starts_full_so_a_long_job_has_no_opening_burst() -> None:
    pacer = Pacer(600)
    pacer.adjust(0)  # primes the bucket in the running loop
    assert not pacer.has_capacity(1)


async def test_a_pacer_takes_refunds_and_extra_charges() -> None:
    pacer = Pacer(600_000)
    pacer.adjust(-pacer.max_rate)
    assert pacer.has_capacity(pacer.max_rate * 0.99)
    pacer.adjust(pacer.max_rate * 3)  # more than the capacity: a debt
    assert not pacer.has_capacity(1)


async def test_a_pacer_accepts_amounts_larger_than_its_capacity() -> None:
    pacer = Pacer(600_000)  # capacity 1000 tokens
    pacer.adjust(-pacer.max_rate)  # empty
    await pacer.acquire(5_000)  # does not raise ValueError like a plain AsyncLimiter
    assert not pacer.has_capacity(1)


# -- adaptive concurrency -----------------------------------------------------------------------


async def test_concurrency_admits_up_to_the_limit_then_queues() -> None:
    gate = AdaptiveConcurrency(2)
    await gate.acquire()
    await gate.acquire()
    third = asyncio.create_task(gate.acquire())
    await asyncio.sleep(0)
    assert not third.done()
    gate.release()
    await asyncio.wait_for(third, 1)
    assert gate.in_use == 2


async def test_decrease_halves_at_most_once_per_second() -> None:
    gate = AdaptiveConcurrency(64)
    gate.decrease(now=10.0)
    gate.decrease(now=10.5)  # the same burst of errors
    assert gate.limit == 32
    gate.decrease(now=11.0)
    assert gate.limit == 16
    for second in range(12, 30):
        gate.decrease(now=float(second))
    assert gate.limit == 1  # never below one


async def test_increase_adds_one_slot_per_window_of_successes() -> None:
    gate = AdaptiveConcurrency(64)
    gate.decrease(now=0.0)
    assert gate.limit == 32
    for _ in range(32):
        gate.increase()
    assert 32.9 < gate.limit < 33.1
    for _ in range(10_000):
        gate.increase()
    assert gate.limit == 64  # never above the maximum


async def test_a_lower_limit_holds_waiters_until_in_use_drops_below_it() -> None:
    gate = AdaptiveConcurrency(4)
    for _ in range(4):
        await gate.acquire()
    gate.decrease(now=0.0)  # limit 2, four in use
    waiter = asyncio.create_task(gate.acquire())
    gate.release()
    gate.release()
    await asyncio.sleep(0)
    assert not waiter.done()  # two in use = the limit
    gate.release()
    await asyncio.wait_for(waiter, 1)
    assert gate.in_use == 2


async def test_a_cancelled_waiter_gives_its_place_back() -> None:
    gate = AdaptiveConcurrency(1)
    await gate.acquire()
    waiter = asyncio.create_task(gate.acquire())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    gate.release()
    assert gate.in_use == 0
    await gate.acquire()
    assert gate.in_use == 1


# -- the run's limiter --------------------------------------------------------------------------


def _limiter(time: FakeTime, **limits: object) -> RateLimiter:
    return RateLimiter(LimitsSpec.model_validate(limits), clock=time.clock, sleep=time.sleep)


def _429(retry_after: float | None = None, headers: dict[str, str] | None = None) -> RateLimitError:
    return RateLimitError("429", retry_after=retry_after, status=429, headers=headers)


async def test_a_429_pauses_every_new_attempt_for_its_retry_after() -> None:
    time = FakeTime()
    limiter = _limiter(time)
    limiter.on_failure(_429(retry_after=2.5), sent_at=time.now)
    start = time.now
    await limiter.admit(10)
    assert time.now - start == pytest.approx(2.5)
    limiter.release()
    await limiter.admit(10)  # the pause is over: no more waiting
    assert time.sleeps == [pytest.approx(2.5)]


async def test_a_429_without_advice_pauses_briefly_and_its_storm_does_not_extend_it() -> None:
    time = FakeTime()
    limiter = _limiter(time)
    sent = time.now
    time.now += 0.01
    limiter.on_failure(_429(), sent_at=sent)
    assert limiter.paused_until == pytest.approx(time.now + DEFAULT_COOL_DOWN_S)
    time.now += 0.2
    limiter.on_failure(_429(), sent_at=sent)  # sent before the pause: the same storm
    assert limiter.paused_until == pytest.approx(time.now - 0.2 + DEFAULT_COOL_DOWN_S)
    limiter.on_failure(_429(retry_after=3.0), sent_at=sent)  # explicit advice always counts
    assert limiter.paused_until == pytest.approx(time.now + 3.0)


@pytest.mark.parametrize("kind", [QuotaExceededError, RequestTooLargeError])
async def test_429s_that_waiting_cannot_fix_do_not_pause_the_run(kind: type[Exception]) -> None:
    time = FakeTime()
    limiter = _limiter(time)
    limiter.on_failure(kind("cannot pass", retry_after=60.0, status=429), sent_at=time.now)
    await limiter.admit(1)
    assert time.sleeps == []
    assert limiter.concurrency is None or limiter.concurrency.limit == limiter.concurrency.maximum


CONGESTION_CASES = [
    (_429(), True),  # no rate-limit headers: AIMD is all we have
    (_429(headers={"x-ratelimit-remaining-requests": "0"}), False),
    (ServerError("503", status=503), True),
    (ServerError("529", status=529), True),
    (ServerError("500", status=500), False),
    (DeadlineExceeded("slow"), False),  # one timeout alone: bad luck, not congestion
    (NetworkError("reset"), False),
    (ClientError("bad", status=400), False),
]


@pytest.mark.parametrize(("error", "shrinks"), CONGESTION_CASES)
async def test_which_failures_shrink_concurrency(error: Exception, shrinks: bool) -> None:
    time = FakeTime()
    limiter = _limiter(time, max_concurrency=64)
    limiter.on_failure(error, sent_at=time.now)  # type: ignore[arg-type]
    assert limiter.concurrency is not None
    assert limiter.concurrency.limit == (32 if shrinks else 64)


def _answers(limiter: RateLimiter, count: int) -> None:
    for _ in range(count):
        limiter.on_success(charged=10)


async def test_an_isolated_timeout_among_many_answers_does_not_shrink_concurrency() -> None:
    time = FakeTime()
    limiter = _limiter(time, max_concurrency=64)
    assert limiter.concurrency is not None
    for _ in range(5):  # 1 % of attempts stall: a timeout every 100 attempts, 5 s apart
        _answers(limiter, 99)
        limiter.on_failure(DeadlineExceeded("stalled"), sent_at=time.now)
        time.now += 5.0
    assert limiter.concurrency.limit == pytest.approx(64)


async def test_a_burst_of_timeouts_shrinks_concurrency() -> None:
    time = FakeTime()
    limiter = _limiter(time, max_concurrency=64)
    assert limiter.concurrency is not None
    _answers(limiter, 500)
    for _ in range(20):  # the server stopped answering: every attempt in flight times out
        limiter.on_failure(DeadlineExceeded("slow"), sent_at=time.now)
    assert limiter.concurrency.limit == 32
    time.now += 1.0
    limiter.on_failure(DeadlineExceeded("slow"), sent_at=time.now)  # still timing out
    assert limiter.concurrency.limit == 16


async def test_a_few_timeouts_among_the_first_attempts_shrink_concurrency() -> None:
    time = FakeTime()
    limiter = _limiter(time, max_concurrency=64)
    assert limiter.concurrency is not None
    _answers(limiter, 10)
    limiter.on_failure(DeadlineExceeded("slow"), sent_at=time.now)
    limiter.on_failure(DeadlineExceeded("slow"), sent_at=time.now)
    assert limiter.concurrency.limit == 64
    limiter.on_failure(DeadlineExceeded("slow"), sent_at=time.now)  # 3 of 13: congestion
    assert limiter.concurrency.limit == 32


SHARE_CASES = [
    # (outcomes oldest first, T = timed out; congested after the last one?)
    ("T", False),
    ("TT", False),
    ("TTT", True),  # the minimum count, when few attempts have ended yet
    ("." * 57 + "TTT", True),  # 3 of 60 = 5 %
    ("." * 58 + "TTT", False),  # 3 of 61
    ("." * 190 + "T" * 10, True),  # a full window: 10 of 200
    ("." * 191 + "T" * 9, False),
    ("T" * 10 + "." * 200, False),  # old timeouts leave the window
    ("T" * 5 + "." * 195 + "T" * 5, False),  # the first five just left
    ("T" * 5 + "." * 194 + "T" * 6, False),
    ("." * 100 + "T" * 5 + "." * 90 + "T" * 5, True),
]


@pytest.mark.parametrize(("outcomes", "congested"), SHARE_CASES)
def test_timeouts_are_congestion_when_they_are_a_share_of_recent_attempts(
    outcomes: str, congested: bool
) -> None:
    share = TimeoutShare(200, share=0.05, minimum=3)
    for outcome in outcomes:
        share.record(outcome == "T")
    assert share.is_congested() is congested
    assert share.timeouts == outcomes[-200:].count("T")


async def test_not_adaptive_means_no_concurrency_gate() -> None:
    limiter = _limiter(FakeTime(), adaptive=False)
    assert limiter.concurrency is None
    limiter.on_failure(ServerError("503", status=503), sent_at=0.0)
    await limiter.admit(1)


async def test_headers_saying_no_room_hold_the_run_from_when_the_attempt_was_sent() -> None:
    time = FakeTime()
    limiter = _limiter(time)
    headers = _rl(remaining_requests="0", reset_requests="1s", limit_requests="600")
    limiter.on_response(headers, sent_at=time.now - 0.05, charged=10)
    assert limiter.saw_rate_headers
    assert limiter.paused_until == pytest.approx(time.now + 0.05)
    await limiter.admit(10)
    assert sum(time.sleeps) == pytest.approx(0.05)


async def test_headers_with_room_change_nothing() -> None:
    time = FakeTime()
    limiter = _limiter(time)
    limiter.on_response(_rl(remaining_requests="100", reset_requests="1s"), sent_at=0, charged=1)
    assert limiter.paused_until < time.now


async def test_success_corrects_the_tpm_charge_by_the_real_prompt_count() -> None:
    limiter = _limiter(FakeTime(), tpm=6_000_000)  # capacity 10,000 tokens
    assert limiter.tpm is not None
    limiter.tpm.adjust(0)
    assert not limiter.tpm.has_capacity(5_000)
    limiter.on_success(charged=9_000, counted=3_000)  # the prompt was overestimated
    assert limiter.tpm.has_capacity(5_000)


async def test_a_429_announcing_a_lower_limit_is_adopted_for_pacing() -> None:
    time = FakeTime()
    limiter = _limiter(time, rpm=6000)
    announced = _rl(limit_requests="1200", limit_tokens="90000", remaining_requests="0")
    limiter.on_failure(_429(retry_after=0.1, headers=announced), sent_at=time.now)
    assert limiter.rpm is not None and limiter.rpm.per_minute == 1200
    assert limiter.tpm is not None and limiter.tpm.per_minute == 90000


async def test_announced_limits_without_a_429_or_higher_than_ours_are_ignored() -> None:
    time = FakeTime()
    limiter = _limiter(time, rpm=600)
    headers = _rl(limit_requests="14400", remaining_requests="14000")  # a daily limit, say
    limiter.on_response(headers, sent_at=time.now, charged=1)
    limiter.on_failure(_429(retry_after=0.1, headers=headers), sent_at=time.now)
    assert limiter.rpm is not None and limiter.rpm.per_minute == 600
    assert limiter.tpm is None


async def test_one_piece_of_advice_cannot_pause_the_run_past_max_pause() -> None:
    time = FakeTime()
    limiter = RateLimiter(LimitsSpec(), max_pause_s=5.0, clock=time.clock, sleep=time.sleep)
    limiter.on_failure(_429(retry_after=3600.0), sent_at=time.now)
    assert limiter.paused_until == pytest.approx(time.now + 5.0)
