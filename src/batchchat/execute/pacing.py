"""Pacing under per-minute limits: a leaky bucket that starts full and takes corrections.

The bucket is written here rather than borrowed: a TPM budget is charged with an
estimate at admission and corrected with the real usage afterwards (refunds and extra
charges), and it must start full, as the server's window is in the middle of a long
job. One waiter at a time sleeps, on one timer; the others queue behind it in order.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable

#: the bucket holds this much of a second's rate: enough to catch up after an event-loop
#: hiccup (a sink write), small enough not to look like a burst to a per-second limiter
_BURST_S = 0.1


class Pacer:
    """A leaky bucket for one per-minute limit (requests or tokens).

    Its rate is lowered by its small capacity so that no 60 s window ever holds more
    than the limit, however the server counts (sliding log or token bucket).
    """

    def __init__(
        self,
        per_minute: float,
        *,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
    ) -> None:
        #: the limit this bucket keeps under
        self.per_minute = per_minute
        #: the most the bucket holds; a request may ask for more (it then owes the rest)
        self.capacity = max(1.0, min(2.0, per_minute / 100), per_minute / 60 * _BURST_S)
        #: how fast the bucket empties, per second
        self.rate_per_s = max(per_minute - self.capacity, per_minute / 2) / 60
        self._clock = clock
        self._sleep = sleep
        #: what the bucket holds at ``_at`` (above ``capacity`` when a charge ran over)
        self._level = self.capacity
        #: clock time of ``_level``; None until the first use (the clock may not run yet)
        self._at: float | None = None
        #: one waiter sleeps at a time; the others wait here, in order
        self._turn = asyncio.Lock()
        #: replaced (the server's own limit governs now): waiters leave at once
        self.retired = False
        self._napping: asyncio.Future[None] | None = None

    def level(self) -> float:
        """What the bucket holds now."""
        now = self._clock()
        if self._at is None:
            self._at = now
        self._level = max(0.0, self._level - (now - self._at) * self.rate_per_s)
        self._at = now
        return self._level

    def wait_s(self, amount: float) -> float:
        """Seconds until ``amount`` fits (more than the capacity needs an empty bucket)."""
        excess = self.level() + min(amount, self.capacity) - self.capacity
        # a rounding error's worth is no reason to sleep (nor to sleep again and again)
        return excess / self.rate_per_s if excess > self.capacity * 1e-9 else 0.0

    @property
    def busy(self) -> bool:
        """Whether an acquire is waiting its turn (a new one would queue behind it)."""
        return self._turn.locked()

    async def acquire(self, amount: float = 1) -> None:
        """Wait until ``amount`` fits, then charge it; return at once, charging nothing,
        once the pacer is retired (the caller then turns to whatever replaced it)."""
        async with self._turn:
            while not self.retired and (wait := self.wait_s(amount)) > 0:
                await self._nap(wait)
            if not self.retired:
                self.adjust(amount)

    def retire(self) -> None:
        """Stop pacing: every waiter, the sleeping one too, returns now."""
        self.retired = True
        if self._napping is not None:
            self._napping.cancel()

    async def _nap(self, seconds: float) -> None:
        napping = self._napping = asyncio.ensure_future(self._sleep(seconds))
        try:
            await napping
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not self.retired or (task is not None and task.cancelling()):
                raise  # our caller is being cancelled, not woken by retire()
        finally:
            self._napping = None

    def adjust(self, delta: float) -> None:
        """Charge (positive) or refund (negative) ``delta`` without waiting."""
        self._level = max(0.0, self.level() + delta)


def slower(
    current: Pacer | None, per_minute: float | None, make: Callable[[float], Pacer]
) -> Pacer | None:
    """The pacer to use once a server announced ``per_minute``: a new one when that is lower
    than ``current``'s limit (or there is none), else ``current``."""
    if per_minute is None or not math.isfinite(per_minute) or per_minute < 1:
        return current
    if current is not None and current.per_minute <= per_minute:
        return current
    if current is not None:
        current.retire()  # its waiters queue again on the slower one
    return make(per_minute)
