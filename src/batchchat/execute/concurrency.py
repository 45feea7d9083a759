"""How many attempts may be in flight: a gate with an AIMD limit, and what counts as congestion.

A server that is overloaded says so (a 429 without rate-limit headers, a 503 with a
``retry-after``, a 529), or shows it: failures become a large share of what it answers.
Independent failures of single requests -- a 500 here, a dropped connection or a stalled
request there -- are not congestion: at a steady 15 % of random faults the limit must
stay where it is, or a run collapses to a crawl for nothing. Rising latency alone is not
taken as congestion either: servers with continuous batching (vLLM, llama.cpp) answer
each request more slowly as they answer more at once, and throughput still grows.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque

#: the limit shrinks at most once per this many seconds (one "round trip"), so one burst
#: of errors from requests sent together counts as one signal, not fifty
_DECREASE_EVERY_S = 1.0
_DECREASE_FACTOR = 0.5
#: failures are congestion when at least this share of the last _WINDOW answers failed,
#: and at least _MIN_FAILURES did: 15 % of independent faults reach 30 % of a hundred
#: attempts about once in ten thousand windows; an overloaded server refuses half or more
_WINDOW = 100
_CONGESTED_SHARE = 0.3
_MIN_FAILURES = 10


class ConcurrencyGate:
    """Admits attempts while fewer than ``limit`` are in flight, in order of arrival.

    ``limit`` moves between 1 and ``maximum``: additive increase per success, halving on
    congestion, when ``adaptive``.
    """

    def __init__(self, maximum: int, *, adaptive: bool = True) -> None:
        self.maximum = maximum
        self.adaptive = adaptive
        #: the current limit; fractional so additive increase can be +1 per window
        self.limit = float(maximum)
        #: attempts holding a slot now
        self.in_use = 0
        #: tasks waiting for a slot, oldest first; a granted future already owns its slot
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._last_decrease = -math.inf

    @property
    def allowed(self) -> int:
        """How many attempts may be in flight now."""
        return int(self.limit)

    def has_room(self) -> bool:
        """Whether an attempt would be admitted at once."""
        return self.in_use < self.allowed and not self._waiters

    async def acquire(self) -> None:
        if self.in_use < self.allowed and not self._waiters:
            self.in_use += 1
            return
        future = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()  # granted just as we were cancelled: hand it on
            else:
                self._waiters.remove(future)
            raise

    def release(self) -> None:
        self.in_use -= 1
        self._grant()

    def increase(self) -> None:
        """One success: +1 per ``limit`` successes, i.e. one more slot per round trip."""
        if self.adaptive and self.limit < self.maximum:
            self.limit = min(float(self.maximum), self.limit + 1.0 / self.limit)
            self._grant()

    def decrease(self, now: float) -> None:
        """A congestion signal: halve, at most once per :data:`_DECREASE_EVERY_S`."""
        if self.adaptive and now - self._last_decrease >= _DECREASE_EVERY_S:
            self.limit = max(1.0, self.limit * _DECREASE_FACTOR)
            self._last_decrease = now

    def _grant(self) -> None:
        while self._waiters and self.in_use < self.allowed:
            future = self._waiters.popleft()
            if not future.done():
                self.in_use += 1
                future.set_result(None)


class FailureShare:
    """Which of the last ``window`` answered attempts failed: is the server congested?"""

    def __init__(
        self,
        window: int = _WINDOW,
        *,
        share: float = _CONGESTED_SHARE,
        minimum: int = _MIN_FAILURES,
    ) -> None:
        #: the last ``window`` attempts, oldest first: True for one that failed
        self._recent: deque[bool] = deque(maxlen=window)
        #: how many of ``_recent`` are True
        self.failures = 0
        self._share = share
        self._minimum = minimum

    def record(self, failed: bool) -> None:
        """One attempt ended: answered, or failed in a way that may be the server's load."""
        recent = self._recent
        if len(recent) == recent.maxlen and recent[0]:
            self.failures -= 1  # the oldest leaves the window as this one enters
        recent.append(failed)
        self.failures += failed

    def is_congested(self) -> bool:
        """True when failures are at least ``share`` of the window and ``minimum`` in number."""
        return self.failures >= max(self._minimum, self._share * len(self._recent))


class WindowAllowance:
    """How many more requests the server's current window takes, when it says so but not
    when the window resets (a LiteLLM gateway's calendar minute).

    Unknown until an answer tells; then each send spends one. While nothing is left, one
    probe at a time goes out (only when none of ours is in flight): its answer tells that
    a new window began, or its 429 says how long to wait.
    """

    def __init__(self) -> None:
        #: sends the window still takes (inf: the server never said)
        self.left = math.inf
        #: admitted attempts not answered yet
        self.in_flight = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    def has_room(self) -> bool:
        """Whether a send would be allowed at once."""
        return self._may_send() and not self._waiters

    async def acquire(self) -> None:
        if self._may_send() and not self._waiters:
            self._take()
            return
        future = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()  # granted just as we were cancelled: hand it on
            else:
                self._waiters.remove(future)
            raise

    def release(self) -> None:
        self.in_flight -= 1
        self._grant()

    def update(self, left: float) -> None:
        """An answer says the window takes ``left`` more sends (after ours in flight)."""
        self.left = left
        self._grant()

    def _may_send(self) -> bool:
        return self.left > 0 or self.in_flight == 0

    def _take(self) -> None:
        self.left -= 1
        self.in_flight += 1

    def _grant(self) -> None:
        while self._waiters and self._may_send():
            future = self._waiters.popleft()
            if not future.done():
                self._take()
                future.set_result(None)
