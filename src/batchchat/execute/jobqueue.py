"""The workers' queue of jobs: a row's next attempt first, then new rows in input order.

Up to ``max_pending`` rows are pulled in ahead of the workers (a thousand or more), so a
retry put at the back would wait behind all of them: each failed attempt of a row would
cost it a whole turn of the queue (seconds), and the rows that fail near the end of a
run would stretch it by as much. Retries are few, so taking them first delays new rows
by no more than the retries' own attempts.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class JobQueue(Generic[T]):
    """An unbounded queue where retries overtake new items; each kind in arrival order."""

    def __init__(self) -> None:
        self._retries: deque[T] = deque()
        self._new: deque[T] = deque()
        #: workers waiting for an item, oldest first
        self._getters: deque[asyncio.Future[None]] = deque()

    def __len__(self) -> int:
        return len(self._retries) + len(self._new)

    def put(self, item: T) -> None:
        """A new item, after every item queued before it."""
        self._new.append(item)
        self._wake_one()

    def put_retry(self, item: T) -> None:
        """An item tried before: ahead of every new item, behind earlier retries."""
        self._retries.append(item)
        self._wake_one()

    async def get(self) -> T:
        """The next item, waiting for one while the queue is empty."""
        while not self:
            waiter = asyncio.get_running_loop().create_future()
            self._getters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter in self._getters:
                    self._getters.remove(waiter)
                elif self:
                    self._wake_one()  # woken for an item it will not take: pass it on
                raise
        return self._retries.popleft() if self._retries else self._new.popleft()

    def _wake_one(self) -> None:
        while self._getters:
            waiter = self._getters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
