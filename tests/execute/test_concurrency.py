"""The concurrency gate (AIMD and a cap) and what counts as congestion."""

from __future__ import annotations

import asyncio

import pytest

from batchchat.execute.concurrency import ConcurrencyGate, FailureShare, WindowAllowance


async def test_concurrency_admits_up_to_the_limit_then_queues() -> None:
    gate = ConcurrencyGate(2)
    await gate.acquire()
    await gate.acquire()
    third = asyncio.create_task(gate.acquire())
    await asyncio.sleep(0)
    assert not third.done()
    gate.release()
    await asyncio.wait_for(third, 1)
    assert gate.in_use == 2


async def test_decrease_halves_at_most_once_per_second() -> None:
    gate = ConcurrencyGate(64)
    gate.decrease(now=10.0)
    gate.decrease(now=10.5)  # the same burst of errors
    assert gate.limit == 32
    gate.decrease(now=11.0)
    assert gate.limit == 16
    for second in range(12, 30):
        gate.decrease(now=float(second))
    assert gate.limit == 1  # never below one


async def test_increase_adds_one_slot_per_window_of_successes() -> None:
    gate = ConcurrencyGate(64)
    gate.decrease(now=0.0)
    assert gate.limit == 32
    for _ in range(32):
        gate.increase()
    assert 32.9 < gate.limit < 33.1
    for _ in range(10_000):
        gate.increase()
    assert gate.limit == 64  # never above the maximum


async def test_a_lower_limit_holds_waiters_until_in_use_drops_below_it() -> None:
    gate = ConcurrencyGate(4)
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
    gate = ConcurrencyGate(1)
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


async def test_a_window_allowance_lets_through_what_is_left_then_one_probe() -> None:
    window = WindowAllowance()
    for _ in range(5):  # unknown: no bound
        await window.acquire()
    window.update(2)  # the server says two more fit this window
    await window.acquire()
    await window.acquire()
    blocked = asyncio.create_task(window.acquire())
    await asyncio.sleep(0)
    assert not blocked.done()
    for _ in range(7):  # everything in flight is answered: one probe may go
        window.release()
    await asyncio.wait_for(blocked, 1)
    assert window.in_flight == 1
    probe_waiter = asyncio.create_task(window.acquire())
    await asyncio.sleep(0)
    assert not probe_waiter.done()  # one probe at a time
    window.update(9)  # its answer shows a new window
    await asyncio.wait_for(probe_waiter, 1)
    assert window.left == 8


def test_not_adaptive_keeps_the_limit_where_it_is() -> None:
    gate = ConcurrencyGate(16, adaptive=False)
    gate.decrease(now=0.0)
    gate.increase()
    assert gate.limit == 16


SHARE_CASES = [
    # (outcomes oldest first, F = failed; congested after the last one?)
    ("F" * 9, False),  # too few to say anything
    ("F" * 10, True),  # the minimum count, when few attempts have ended yet
    ("." * 20 + "F" * 10, True),  # 10 of 30
    ("." * 24 + "F" * 10, False),  # 10 of 34 is under 30 %
    ("." * 70 + "F" * 30, True),  # a full window: 30 of 100
    ("." * 71 + "F" * 29, False),
    ("F" * 30 + "." * 100, False),  # old failures leave the window
    ("F.......F." * 40, False),  # 20 % of independent faults, for a long time
]


@pytest.mark.parametrize(("outcomes", "congested"), SHARE_CASES)
def test_failures_are_congestion_when_they_are_a_large_share_of_recent_attempts(
    outcomes: str, congested: bool
) -> None:
    share = FailureShare(100, share=0.3, minimum=10)
    for outcome in outcomes:
        share.record(outcome == "F")
    assert share.is_congested() is congested
    assert share.failures == outcomes[-100:].count("F")
