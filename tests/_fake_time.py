"""A fake clock and sleep for engine tests: sleeping advances the clock instead of waiting."""

from __future__ import annotations

import asyncio


class FakeTime:
    """``clock()`` reads ``now``; ``await sleep(s)`` records ``s`` and moves ``now`` on by it."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(0.0, seconds)
        await asyncio.sleep(0)  # still a suspension point, like the real thing
