"""The pacing bucket: never more than the limit in a minute, starts full, takes corrections."""

from __future__ import annotations

import asyncio
import time as wall

import pytest
from hypothesis import given
from hypothesis import strategies as st

from batchchat.execute.pacing import Pacer, slower
from tests._fake_time import FakeTime


def pacer(per_minute: float, time: FakeTime | None = None) -> Pacer:
    time = time or FakeTime()
    return Pacer(per_minute, clock=time.clock, sleep=time.sleep)


@given(st.floats(min_value=2, max_value=1e8))
def test_a_pacer_never_lets_a_minute_hold_more_than_the_limit(per_minute: float) -> None:
    bucket = pacer(per_minute)
    assert bucket.capacity >= 1
    # burst capacity + a minute at the paced rate stays within the limit
    assert bucket.capacity + bucket.rate_per_s * 60 <= per_minute * (1 + 1e-9)


def test_a_pacer_of_a_large_limit_runs_within_a_fraction_of_a_percent_of_it() -> None:
    assert pacer(60_000).rate_per_s * 60 >= 0.99 * 60_000


def test_a_pacer_starts_full_so_a_long_job_has_no_opening_burst() -> None:
    assert pacer(600).wait_s(1) > 0


def test_a_pacer_takes_refunds_and_extra_charges() -> None:
    bucket = pacer(600_000)
    bucket.adjust(-bucket.capacity)
    assert bucket.wait_s(bucket.capacity * 0.99) == 0
    bucket.adjust(bucket.capacity * 3)  # more than the capacity: a debt
    assert bucket.wait_s(1) != 0


async def test_a_pacer_accepts_amounts_larger_than_its_capacity() -> None:
    time = FakeTime()
    bucket = pacer(600_000, time)  # capacity 1000 tokens
    bucket.adjust(-bucket.capacity)  # empty
    await bucket.acquire(5_000)  # waits for an empty bucket, then owes the rest
    assert time.sleeps == []
    assert bucket.wait_s(1) != 0
    start = time.now
    await bucket.acquire(1)  # the debt is paid off at the paced rate first
    assert time.now - start == pytest.approx((5_000 + 1 - 1_000) / bucket.rate_per_s)


async def test_a_minute_of_acquires_passes_just_under_the_limit() -> None:
    time = FakeTime()
    bucket = pacer(600, time)
    start = time.now
    for _ in range(600):
        await bucket.acquire(1)
    # 600 requests take a little over a minute: the rate is lowered by the burst capacity
    assert 60.0 <= time.now - start <= 60.0 * 1.01


def test_a_slower_announced_limit_replaces_the_pacer_and_a_faster_one_does_not() -> None:
    current = pacer(600)
    assert slower(current, 1200, pacer) is current
    assert slower(current, None, pacer) is current
    assert slower(current, 0.5, pacer) is current  # not a limit one request could pass
    assert slower(current, 300, pacer).per_minute == 300  # type: ignore[union-attr]
    assert slower(None, 300, pacer).per_minute == 300  # type: ignore[union-attr]


async def test_a_retired_pacer_lets_its_sleeping_and_queued_waiters_go_at_once() -> None:
    bucket = Pacer(6, clock=wall.monotonic, sleep=asyncio.sleep)  # one per ~10 s, full
    waiters = [asyncio.create_task(bucket.acquire(1)) for _ in range(3)]
    await asyncio.sleep(0.05)
    assert not any(w.done() for w in waiters)  # the first sleeps, the others queue
    level = bucket.level()
    bucket.retire()
    await asyncio.wait_for(asyncio.gather(*waiters), timeout=5)
    assert bucket.level() <= level  # retired waiters charge nothing


async def test_a_cancelled_waiter_of_a_pacer_is_still_cancelled() -> None:
    bucket = Pacer(6, clock=wall.monotonic, sleep=asyncio.sleep)
    waiter = asyncio.create_task(bucket.acquire(1))
    await asyncio.sleep(0.05)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert not bucket.retired


def test_a_slower_pacer_retires_the_one_it_replaces() -> None:
    time = FakeTime()
    fast = pacer(600, time)
    slow = slower(fast, 60, lambda per_minute: pacer(per_minute, time))
    assert slow is not fast and slow is not None and slow.per_minute == 60
    assert fast.retired and not slow.retired
