"""Admission control: the server's hold, what 200s and 429s teach, and congestion."""

from __future__ import annotations

import asyncio
import math
import time as wall
from collections.abc import Callable

import pytest

from batchchat.errors import (
    ClientError,
    ConnectTimeout,
    DeadlineExceeded,
    NetworkError,
    QuotaExceededError,
    RateLimitError,
    RequestTooLargeError,
    ServerError,
)
from batchchat.execute.admission import FIRST_QUIET_PAUSE_S, LONGEST_QUIET_PAUSE_S, Admission
from batchchat.execute.pacing import Pacer
from batchchat.spec import LimitsSpec
from tests._fake_time import FakeTime


def _admission(time: FakeTime, **limits: object) -> Admission:
    return Admission(LimitsSpec.model_validate(limits), clock=time.clock, sleep=time.sleep)


def _rl(**values: str) -> dict[str, str]:
    return {f"x-ratelimit-{key.replace('_', '-')}": value for key, value in values.items()}


def _429(retry_after: float | None = None, headers: dict[str, str] | None = None) -> RateLimitError:
    return RateLimitError("429", retry_after=retry_after, status=429, headers=headers)


# -- holds --------------------------------------------------------------------------------------


async def test_a_429_holds_every_new_attempt_for_its_retry_after() -> None:
    time = FakeTime()
    admission = _admission(time)
    admission.on_failure(_429(retry_after=2.5), sent_at=time.now)
    start = time.now
    await admission.admit(10)
    assert time.now - start == pytest.approx(2.5)
    admission.release()
    await admission.admit(10)  # the hold is over: no more waiting
    assert time.sleeps == [pytest.approx(2.5)]


async def test_a_429_without_advice_holds_longer_while_429s_go_on() -> None:
    time = FakeTime()
    admission = _admission(time)
    pauses = []
    for _ in range(8):  # one storm after another, nothing got through in between
        sent = time.now
        time.now += 0.01
        admission.on_failure(_429(), sent_at=sent)
        pauses.append(round(admission.paused_until - time.now, 6))
        time.now = admission.paused_until
    assert pauses == [1, 2, 4, 8, 16, 32, 60, 60]
    assert (FIRST_QUIET_PAUSE_S, LONGEST_QUIET_PAUSE_S) == (1.0, 60.0)
    admission.on_success(charged=1)  # one got through: the window has room again
    admission.on_failure(_429(), sent_at=time.now)
    assert admission.paused_until - time.now == pytest.approx(1.0)


async def test_a_storm_of_429s_sent_before_the_hold_does_not_extend_it() -> None:
    time = FakeTime()
    admission = _admission(time)
    sent = time.now
    time.now += 0.01
    admission.on_failure(_429(), sent_at=sent)
    held = admission.paused_until
    time.now += 0.2
    admission.on_failure(_429(), sent_at=sent)  # sent before the hold: the same storm
    assert admission.paused_until == held
    admission.on_failure(_429(retry_after=3.0), sent_at=sent)  # explicit advice always counts
    assert admission.paused_until == pytest.approx(time.now + 3.0)


@pytest.mark.parametrize("kind", [QuotaExceededError, RequestTooLargeError])
async def test_429s_that_waiting_cannot_fix_do_not_hold_the_run(kind: type[Exception]) -> None:
    time = FakeTime()
    admission = _admission(time)
    admission.on_failure(kind("cannot pass", retry_after=60.0, status=429), sent_at=time.now)
    await admission.admit(1)
    assert time.sleeps == []
    assert admission.concurrency.limit == admission.concurrency.maximum


async def test_a_503_retry_after_holds_the_run_too() -> None:
    time = FakeTime()
    admission = _admission(time)
    admission.on_failure(ServerError("busy", status=503, retry_after=2.0), sent_at=time.now)
    assert admission.paused_until == pytest.approx(time.now + 2.0)
    assert admission.congested


@pytest.mark.parametrize(
    "error",
    [_429(retry_after=3600.0), ServerError("down", status=503, retry_after=86400.0)],
    ids=["429", "503"],
)
async def test_advice_longer_than_max_wait_holds_nothing(error: Exception) -> None:
    # the attempt fails without a retry (retry.max_wait_s); holding every other row for
    # max_wait_s each would only turn a quick failure into hours of waiting
    time = FakeTime()
    admission = Admission(LimitsSpec(), max_pause_s=5.0, clock=time.clock, sleep=time.sleep)
    admission.on_failure(error, sent_at=time.now)  # type: ignore[arg-type]
    assert admission.paused_until <= time.now


async def test_a_reset_header_cannot_hold_the_run_past_max_pause() -> None:
    time = FakeTime()
    admission = Admission(LimitsSpec(), max_pause_s=5.0, clock=time.clock, sleep=time.sleep)
    headers = _rl(remaining_requests="0", reset_requests="6h")
    admission.on_response(headers, sent_at=time.now, send=1, charged=1)
    assert admission.paused_until == pytest.approx(time.now + 5.0)


# -- what the headers of any answer teach -------------------------------------------------------


async def test_headers_saying_no_room_hold_the_run_from_when_the_attempt_was_sent() -> None:
    time = FakeTime()
    admission = _admission(time)
    headers = _rl(remaining_requests="0", reset_requests="1s", limit_requests="600")
    admission.on_response(headers, sent_at=time.now - 0.05, send=1, charged=10)
    assert admission.saw_rate_headers
    assert admission.paused_until == pytest.approx(time.now + 0.05)
    await admission.admit(10)
    assert sum(time.sleeps) == pytest.approx(0.05)


async def test_headers_with_room_change_nothing() -> None:
    time = FakeTime()
    admission = _admission(time)
    admission.on_response(
        _rl(remaining_requests="100", reset_requests="1s"), sent_at=0, send=1, charged=1
    )
    assert admission.paused_until < time.now
    assert admission.window.left == math.inf  # it says when it resets: holds handle it


async def test_a_spent_window_without_a_reset_lets_one_probe_through_at_a_time() -> None:
    # a LiteLLM gateway: limit and remaining on its 200s, no reset, calendar-minute windows
    time = FakeTime()
    admission = _admission(time, max_concurrency=8)
    sends = [await admission.admit(1) for _ in range(3)]
    # the first answer says 3 were left when it arrived; two more went out after it, and a
    # gateway refuses while still announcing one: none is left
    admission.on_response(
        _rl(limit_requests="60", remaining_requests="3"), sent_at=0, send=sends[0], charged=1
    )
    assert admission.window.left == 0
    for _ in sends:
        admission.release()
    probe = await admission.admit(1)
    waiting = asyncio.create_task(admission.admit(1))
    await asyncio.sleep(0)
    assert not waiting.done()  # one probe at a time
    # the probe's answer shows a new window: the others go, as many as it has left
    admission.on_response(
        _rl(limit_requests="60", remaining_requests="58"), sent_at=0, send=probe, charged=1
    )
    await asyncio.wait_for(waiting, 1)
    assert admission.window.left == 56


async def test_a_gateways_refusal_holds_until_its_window_has_room_not_a_minute_more() -> None:
    # LiteLLM says "retry after 60" on every refusal, counted from the refusal; a window
    # that counted our first attempt of this minute has room a minute after that attempt
    time = FakeTime()
    admission = _admission(time, max_concurrency=8)
    began = time.now
    first = await admission.admit(1)
    admission.on_response(
        _rl(limit_requests="5", remaining_requests="4"), sent_at=began, send=first, charged=1
    )
    time.now += 5.0  # the window's other sends went, then the probe was refused
    admission.on_failure(_429(retry_after=60.0), sent_at=time.now)
    assert admission.paused_until == pytest.approx(began + 60.0)
    # after the hold, the next send begins the next window; a refusal a minute after the
    # window began means the window is not what we thought: the advice counts then
    time.now = began + 60.0
    await admission.admit(1)
    time.now += 61.0
    admission.on_failure(_429(retry_after=60.0), sent_at=time.now)
    assert admission.paused_until == pytest.approx(time.now + 60.0)


async def test_without_a_window_model_the_advice_is_heeded_as_given() -> None:
    time = FakeTime()
    admission = _admission(time)
    await admission.admit(1)
    time.now += 5.0
    admission.on_failure(_429(retry_after=60.0), sent_at=time.now)
    assert admission.paused_until == pytest.approx(time.now + 60.0)


async def test_limits_announced_on_200s_are_not_taken_for_pacing() -> None:
    # a 200's numbers say what is left of this window; pacing smoothly at a gateway's
    # limit would spread a window's burst over a minute, and a daily limit means nothing
    time = FakeTime()
    admission = _admission(time)
    headers = _rl(limit_requests="100", remaining_requests="99", limit_tokens="5000")
    admission.on_response(headers, sent_at=time.now, send=1, charged=1)
    assert admission.rpm is None and admission.tpm is None


async def test_a_server_counting_a_tighter_limit_than_the_spec_governs_alone() -> None:
    # limits.rpm 3x too high: its bucket would spread what the gateway's window takes
    time = FakeTime()
    admission = _admission(time, rpm=180, tpm=1_000_000)
    headers = _rl(limit_requests="60", remaining_requests="50", limit_tokens="2000000")
    admission.on_response(headers, sent_at=time.now, send=1, charged=1)
    assert admission.rpm is None  # the server's own window (and its counts) govern
    assert admission.tpm is not None and admission.tpm.per_minute == 1_000_000  # ours is lower


async def test_attempts_queued_in_a_spec_bucket_go_once_the_server_governs() -> None:
    # seen on LiteLLM with limits.rpm 3x its own: the attempts already waiting in the
    # spec's bucket kept its spacing after the bucket was dropped (84 s instead of 60)
    admission = Admission(LimitsSpec(rpm=6), clock=wall.monotonic, sleep=asyncio.sleep)
    assert admission.rpm is not None
    admission.rpm.adjust(-admission.rpm.capacity)  # room for one now, the next in ~10 s
    send = await admission.admit(1)
    queued = [asyncio.create_task(admission.admit(1)) for _ in range(3)]
    await asyncio.sleep(0.05)
    assert not any(task.done() for task in queued)
    headers = _rl(limit_requests="2", remaining_tokens="1000")
    admission.on_response(headers, sent_at=wall.monotonic(), send=send, charged=1)
    assert sorted(await asyncio.wait_for(asyncio.gather(*queued), timeout=5)) == [2, 3, 4]


async def test_a_429_announcing_a_lower_limit_is_adopted_for_pacing() -> None:
    time = FakeTime()
    admission = _admission(time, rpm=6000)
    announced = _rl(limit_requests="1200", limit_tokens="90000", remaining_requests="0")
    admission.on_failure(_429(retry_after=0.1, headers=announced), sent_at=time.now)
    assert admission.rpm is not None and admission.rpm.per_minute == 1200
    assert admission.tpm is not None and admission.tpm.per_minute == 90000


async def test_a_429_announcing_a_higher_limit_than_ours_is_ignored() -> None:
    time = FakeTime()
    admission = _admission(time, rpm=600)
    headers = _rl(limit_requests="14400", remaining_requests="0")
    admission.on_failure(_429(retry_after=0.1, headers=headers), sent_at=time.now)
    assert admission.rpm is not None and admission.rpm.per_minute == 600


async def test_success_corrects_the_tpm_charge_by_the_real_prompt_count() -> None:
    admission = _admission(FakeTime(), tpm=6_000_000)  # capacity 10,000 tokens
    assert admission.tpm is not None
    assert admission.tpm.wait_s(5000) != 0
    admission.on_success(charged=9_000, counted=3_000)  # the prompt was overestimated
    assert admission.tpm.wait_s(5_000) == 0


# -- congestion ---------------------------------------------------------------------------------

CONGESTION_CASES = [
    (_429(), True),  # no rate-limit headers: AIMD is all we have
    (_429(headers={"x-ratelimit-remaining-requests": "0"}), False),
    (ServerError("503", status=503, retry_after=1.0), True),  # overloaded, and says so
    (ServerError("529", status=529), True),
    (ServerError("503", status=503), False),  # one plain 503 alone: bad luck, not load
    (ServerError("500", status=500), False),
    (DeadlineExceeded("slow"), False),
    (NetworkError("reset"), False),
    (ClientError("bad", status=400), False),
]


@pytest.mark.parametrize(("error", "shrinks"), CONGESTION_CASES)
async def test_which_single_failures_shrink_concurrency(error: Exception, shrinks: bool) -> None:
    time = FakeTime()
    admission = _admission(time, max_concurrency=64)
    admission.on_failure(error, sent_at=time.now)  # type: ignore[arg-type]
    assert admission.concurrency.limit == (32 if shrinks else 64)


def _answers(admission: Admission, count: int) -> None:
    for _ in range(count):
        admission.on_success(charged=10)


async def test_independent_faults_never_shrink_concurrency() -> None:
    # 15 % of attempts fail at random (5xx, dropped connections, stalls): not congestion
    time = FakeTime()
    admission = _admission(time, max_concurrency=64)
    faults = [ServerError("500", status=500), NetworkError("drop"), DeadlineExceeded("stall")]
    for i in range(2_000):
        if i % 7 == 3:
            admission.on_failure(faults[i % 3], sent_at=time.now)  # type: ignore[arg-type]
        else:
            admission.on_success(charged=10)
        time.now += 0.01
    assert admission.concurrency.limit == pytest.approx(64)
    assert not admission.congested


async def test_a_server_failing_most_requests_shrinks_concurrency() -> None:
    time = FakeTime()
    admission = _admission(time, max_concurrency=64)
    _answers(admission, 100)
    for _ in range(60):  # overloaded: it drops or times out most of what it is sent
        admission.on_failure(DeadlineExceeded("slow"), sent_at=time.now)
        _answers(admission, 1)
    assert 32 <= admission.concurrency.limit < 34  # halved once (a success adds a little)
    assert admission.congested
    time.now += 1.0
    admission.on_failure(NetworkError("reset"), sent_at=time.now)  # still failing
    assert 16 <= admission.concurrency.limit < 17


async def test_stalls_that_end_together_are_not_congestion_while_later_requests_are_answered() -> (
    None
):
    # 64 requests sent together, a few stall; meanwhile the slots turn over and requests
    # sent after them are answered: when the stalls' deadlines pass at once, that is no
    # sign of load, however many of the last answers they are
    time = FakeTime()
    admission = _admission(time, max_concurrency=64)
    stalled_at = time.now
    time.now += 1.0
    admission.on_response({}, sent_at=time.now, send=2, charged=10)
    admission.on_success(charged=10)
    time.now += 4.0
    for _ in range(60):
        admission.on_failure(DeadlineExceeded("stalled"), sent_at=stalled_at)
    assert admission.concurrency.limit == pytest.approx(64)
    assert not admission.congested


@pytest.mark.parametrize(
    "error", [DeadlineExceeded("slow"), ConnectTimeout("no connection")], ids=["total", "connect"]
)
async def test_timeouts_count_when_nothing_sent_after_them_was_answered(
    error: Exception,
) -> None:
    time = FakeTime()
    admission = _admission(time, max_concurrency=64)
    admission.on_response({}, sent_at=time.now, send=1, charged=10)
    _answers(admission, 20)
    # a server falling behind: what was sent since the last answer times out; a connect
    # timeout counts even then (the server's accept queue is full)
    sent_at = time.now + (0.5 if isinstance(error, DeadlineExceeded) else -0.5)
    time.now += 5.0
    for _ in range(20):
        admission.on_failure(error, sent_at=sent_at)  # type: ignore[arg-type]
    assert admission.concurrency.limit == pytest.approx(32)
    assert admission.congested


async def test_not_adaptive_means_a_fixed_limit() -> None:
    admission = _admission(FakeTime(), adaptive=False)
    admission.on_failure(ServerError("529", status=529), sent_at=0.0)
    assert admission.concurrency.limit == admission.concurrency.maximum
    await admission.admit(1)


# -- limits shared with other executors ---------------------------------------------------------


class _InProcessShare:
    """A LimitShare for executors in one process: one pacer per limit, holds told to all."""

    def __init__(self, time: FakeTime) -> None:
        self.time = time
        self.pacers: dict[tuple[str, float], Pacer] = {}
        self.holders: list[Callable[[float], object]] = []
        self.told: list[float] = []

    def pacer(self, kind: str, per_minute: float) -> Pacer:
        key = (kind, per_minute)
        if key not in self.pacers:
            self.pacers[key] = Pacer(per_minute, clock=self.time.clock, sleep=self.time.sleep)
        return self.pacers[key]

    def attach(self, hold_until: Callable[[float], object]) -> None:
        self.holders.append(hold_until)

    def held(self, until: float) -> None:
        self.told.append(until)
        for hold_until in self.holders:
            hold_until(until)

    def window_part(self, left: float) -> float:
        return left // 2  # two executors


def _sharing(time: FakeTime, share: _InProcessShare, **limits: object) -> Admission:
    spec = LimitsSpec.model_validate(limits)
    return Admission(spec, clock=time.clock, sleep=time.sleep, share=share)


async def test_admissions_that_share_take_their_buckets_from_the_share() -> None:
    time = FakeTime()
    share = _InProcessShare(time)
    first, second = _sharing(time, share, rpm=60, tpm=6000), _sharing(time, share, rpm=60)
    assert first.rpm is second.rpm is share.pacers[("requests", 60)]
    assert first.tpm is share.pacers[("tokens", 6000)]
    start = time.now
    # one request a second between them (the bucket starts full: the first waits too)
    for admission in (first, second, first, second):
        await admission.admit(10)
        admission.release()
    assert time.now - start == pytest.approx(4 / 59 * 60, rel=0.02)


async def test_a_hold_one_admission_sets_holds_the_others_and_is_not_told_back() -> None:
    time = FakeTime()
    share = _InProcessShare(time)
    limited, other = _sharing(time, share), _sharing(time, share)
    limited.on_failure(_429(retry_after=3.0), sent_at=time.now)
    assert share.told == [pytest.approx(time.now + 3.0)]  # told once: the echo is not told again
    assert other.paused_until == limited.paused_until
    start = time.now
    await other.admit(1)
    assert time.now - start == pytest.approx(3.0)


async def test_a_lower_limit_a_429_announces_comes_from_the_share_too() -> None:
    time = FakeTime()
    share = _InProcessShare(time)
    admission = _sharing(time, share, rpm=6000)
    announced = _rl(limit_requests="1200", limit_tokens="90000", remaining_requests="0")
    admission.on_failure(_429(retry_after=0.1, headers=announced), sent_at=time.now)
    assert admission.rpm is share.pacers[("requests", 1200)]
    assert admission.tpm is share.pacers[("tokens", 90000)]


async def test_admissions_that_share_take_a_part_of_what_a_gateways_window_has_left() -> None:
    time = FakeTime()
    share = _InProcessShare(time)
    first, second = _sharing(time, share, max_concurrency=8), _sharing(time, share)
    for admission in (first, second):
        send = await admission.admit(1)
        # each hears the same count of the server's one window: 41 more after this answer
        admission.on_response(
            _rl(limit_requests="60", remaining_requests="42"), sent_at=0, send=send, charged=1
        )
        admission.release()
    assert first.window.left == second.window.left == 20  # together no more than it takes


# -- readiness, for a pool's router ----------------------------------------------------------------


async def test_ready_in_says_when_an_attempt_would_pass_without_waiting() -> None:
    time = FakeTime()
    admission = _admission(time, rpm=60, max_concurrency=2)
    await admission.admit(1)  # the bucket starts full: the first attempt waited a second
    assert 0.9 < admission.ready_in_s(1) <= 1.1  # the next refill, and nothing is charged
    assert 0.9 < admission.ready_in_s(1) <= 1.1
    time.now += 1.1
    assert admission.ready_in_s(1) == 0.0
    await admission.admit(1)
    assert admission.ready_in_s(1) == math.inf  # both slots taken: not before one ends
    admission.release()
    admission.hold_until(time.now + 30)
    assert admission.ready_in_s(1) == pytest.approx(30.0)


async def test_ready_in_counts_tokens_against_tpm() -> None:
    time = FakeTime()
    admission = _admission(time, tpm=6_000)
    assert admission.ready_in_s(50) > 0.0  # the bucket starts full, as mid-job
    time.now += 60  # a minute later it is empty
    assert admission.ready_in_s(50) == 0.0
    await admission.admit(5_000)  # a big request owes most of a minute
    assert 45.0 < admission.ready_in_s(50) < 55.0
