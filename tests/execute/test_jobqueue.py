"""The workers' queue: retries overtake new jobs, each kind in order; waiting getters."""

from __future__ import annotations

import asyncio

import pytest

from batchchat.execute.jobqueue import JobQueue


async def test_retries_come_before_new_items_and_each_kind_keeps_its_order() -> None:
    queue: JobQueue[str] = JobQueue()
    for item in ("new1", "new2"):
        queue.put(item)
    queue.put_retry("retry1")
    queue.put("new3")
    queue.put_retry("retry2")
    assert len(queue) == 5
    taken = [await queue.get() for _ in range(5)]
    assert taken == ["retry1", "retry2", "new1", "new2", "new3"]
    assert len(queue) == 0


async def test_a_getter_waits_until_an_item_arrives() -> None:
    queue: JobQueue[int] = JobQueue()
    getter = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    assert not getter.done()
    queue.put_retry(7)
    assert await asyncio.wait_for(getter, 1) == 7


async def test_each_item_wakes_one_waiting_getter_in_arrival_order() -> None:
    queue: JobQueue[int] = JobQueue()
    getters = [asyncio.create_task(queue.get()) for _ in range(3)]
    await asyncio.sleep(0)
    queue.put(1)
    queue.put(2)
    await asyncio.sleep(0)
    assert [g.result() for g in getters[:2]] == [1, 2]
    assert not getters[2].done()
    getters[2].cancel()
    with pytest.raises(asyncio.CancelledError):
        await getters[2]


async def test_a_getter_cancelled_after_its_wake_up_hands_the_item_on() -> None:
    queue: JobQueue[str] = JobQueue()
    first = asyncio.create_task(queue.get())
    second = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    queue.put("only")  # wakes the first getter...
    first.cancel()  # ...which is cancelled before it can take the item
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await asyncio.wait_for(second, 1) == "only"
    assert len(queue) == 0
