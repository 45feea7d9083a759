"""One rate limit for a whole cluster: a coordinator that leases capacity, and the workers' side.

The :class:`Coordinator` (one named Ray actor per run) keeps, for each per-minute limit,
the very bucket a local run keeps (a :class:`~batchchat.execute.pacing.Pacer`, used
without waiting), the run-wide hold a 429 sets, the part of the job's budget each worker
holds (:class:`~batchchat.cluster.budget.SharedBudget`), and why it stops. A worker's
:class:`LeasedPacer` takes the bucket's capacity in small slices (a lease), spends them
on its own attempts, and gives back what it has not used within
:data:`LEASE_S`; so however many workers there are, together they take no more than the
one bucket lets out. A hold travels both ways within a round trip: a worker tells the
coordinator, and every worker is waiting on :meth:`Coordinator.watch`, which answers as
soon as the hold or the stop changes (or, at the latest, every :data:`WATCH_S`).

Everything here is plain asyncio: the Ray engine wraps :class:`Coordinator` in an actor
and talks to it through a :class:`CoordinatorClient`; tests use it in-process.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from batchchat.execute.pacing import Pacer
from batchchat.execute.share import Quota

#: capacity leased and not spent for this long goes back to the coordinator
LEASE_S = 0.25
#: a lease asks for this much of the limit's rate (or what the attempt needs, if more)
SLICE_S = 0.05
#: the longest a watch waits before it answers anyway
WATCH_S = 1.0


@dataclass(frozen=True)
class Watch:
    """What a worker learns from the coordinator: the hold and the stop."""

    #: no attempt starts before this wall-clock time (time.time())
    hold_until: float
    #: why the run stops (a StopReason value), or None while it goes on
    stop: str | None
    #: what stopped it, for people (a fatal error's message)
    message: str | None
    #: the class of the error that stopped the run (a BatchchatError's name), if one did
    error: str | None = None


class Coordinator:
    """The run's one copy of its limits: buckets, hold, budget, stop (a Ray actor's state)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        #: one bucket per limit, as (what it counts, per minute): a lower limit a server
        #: announces gets a bucket of its own, which every worker adopting it shares
        self._buckets: dict[tuple[str, float], Pacer] = {}
        self._hold_until = -math.inf
        self._stop: str | None = None
        self._message: str | None = None
        self._error: str | None = None
        #: USD of the job's budget lent to workers and not given back: never past the budget
        self.budget_lent_usd = 0.0
        #: set (and replaced) whenever the hold or the stop changes
        self._changed: asyncio.Event | None = None
        #: each worker's latest counters (JSON of its ExecutionStats), by name: the
        #: driver's progress, between the batches that bring them back too
        self.counters: dict[str, bytes] = {}
        #: capacity granted so far, per limit (for the tests and the report of a run)
        self.granted: dict[tuple[str, float], float] = {}

    def _bucket(self, kind: str, per_minute: float) -> Pacer:
        key = (kind, per_minute)
        if key not in self._buckets:
            self._buckets[key] = Pacer(per_minute, clock=self._clock, sleep=asyncio.sleep)
        return self._buckets[key]

    def lease(self, kind: str, per_minute: float, need: float, want: float) -> tuple[float, float]:
        """Grant ``need`` and up to ``want`` now: (granted, 0); or (0, seconds to wait until
        ``need`` fits). More than the bucket holds is granted once it is empty (owed)."""
        bucket = self._bucket(kind, per_minute)
        wait = bucket.wait_s(need)
        if wait > 0:
            return 0.0, wait
        room = max(0.0, bucket.capacity - bucket.level())
        granted = max(need, min(want, room))
        bucket.adjust(granted)
        key = (kind, per_minute)
        self.granted[key] = self.granted.get(key, 0.0) + granted
        return granted, 0.0

    def give_back(self, kind: str, per_minute: float, amount: float) -> None:
        """Capacity leased and not used: the bucket has that much room again."""
        self._bucket(kind, per_minute).adjust(-amount)
        key = (kind, per_minute)
        self.granted[key] = self.granted.get(key, 0.0) - amount

    def hold(self, until: float) -> None:
        """Hold every worker until wall-clock time ``until`` (unless a hold lasts longer)."""
        if until > self._hold_until:
            self._hold_until = until
            self._notify()

    def lease_budget(self, max_cost_usd: float, need: float, want: float) -> float:
        """Lend ``need`` and up to ``want`` of a ``max_cost_usd`` budget; 0 when ``need``
        does not fit in what no worker holds (so the workers together never pass it)."""
        room = max_cost_usd - self.budget_lent_usd
        if need > room:
            return 0.0
        granted = max(need, min(want, room))
        self.budget_lent_usd += granted
        return granted

    def give_back_budget(self, usd: float) -> None:
        """A worker no longer needs ``usd`` of what it was lent (it was not spent)."""
        self.budget_lent_usd = max(0.0, self.budget_lent_usd - usd)

    def stop(self, reason: str, message: str | None = None, error: str | None = None) -> None:
        """Every worker stops sending; the first reason given is the run's (``error``: the
        class of the error that stopped it)."""
        if self._stop is None:
            self._stop, self._message, self._error = reason, message, error
            self._notify()

    def report(self, worker: str, counters: bytes) -> None:
        """A worker's counters so far."""
        self.counters[worker] = counters

    def latest_counters(self) -> dict[str, bytes]:
        return dict(self.counters)

    def state(self) -> Watch:
        stop, message, error = self._stop, self._message, self._error
        return Watch(self._hold_until, stop, message, error)

    async def watch(self, hold_until: float, stop: str | None) -> Watch:
        """Answer once the hold or the stop differs from what the caller knows, or after
        :data:`WATCH_S` at the latest (a long poll: nothing is polled in a loop)."""
        if self._hold_until == hold_until and self._stop == stop:
            if self._changed is None:
                self._changed = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), WATCH_S)
        return self.state()

    def _notify(self) -> None:
        changed, self._changed = self._changed, None
        if changed is not None:
            changed.set()


class CoordinatorClient(Protocol):
    """How a worker talks to the coordinator: asks that wait for an answer are awaited,
    tells are sent and not waited for."""

    def lease(
        self, kind: str, per_minute: float, need: float, want: float
    ) -> Awaitable[tuple[float, float]]: ...

    def watch(self, hold_until: float, stop: str | None) -> Awaitable[Watch]: ...

    def give_back(self, kind: str, per_minute: float, amount: float) -> None: ...

    def hold(self, until: float) -> None: ...

    def lease_budget(self, max_cost_usd: float, need: float, want: float) -> Awaitable[float]: ...

    def give_back_budget(self, usd: float) -> None: ...

    def report(self, worker: str, counters: bytes) -> None: ...

    def stop(self, reason: str, message: str | None = None, error: str | None = None) -> None: ...


class LeasedPacer(Pacer):
    """A pacer whose capacity is leased from the coordinator's bucket of the same limit."""

    def __init__(
        self,
        kind: Quota,
        per_minute: float,
        coordinator: CoordinatorClient,
        *,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
    ) -> None:
        super().__init__(per_minute, clock=clock, sleep=sleep)
        self.kind = kind
        self._coordinator = coordinator
        #: what a lease asks for beyond what is needed now
        self._slice = max(1.0, per_minute / 60 * SLICE_S)
        #: leased and not spent yet (below 0: a correction charged more than was leased)
        self.balance = 0.0
        self._give_back_at: asyncio.TimerHandle | None = None

    async def acquire(self, amount: float = 1) -> None:
        """Wait until ``amount`` is leased, then spend it (nothing once retired)."""
        async with self._turn:
            while not self.retired and self.balance < amount:
                need = amount - self.balance
                granted, wait = await self._coordinator.lease(
                    self.kind, self.per_minute, need, max(need, self._slice)
                )
                if granted:
                    self.balance += granted
                    self._give_back_later()
                elif not self.retired:
                    await self._nap(wait)
            if not self.retired:
                self.balance -= amount

    def adjust(self, delta: float) -> None:
        """A correction: a charge is taken from what is leased, a refund added to it (and
        so given back to every worker)."""
        self.balance -= delta
        if self.balance > 0:
            self._give_back_later()

    def wait_s(self, amount: float) -> float:
        """Seconds until ``amount`` could be spent, as far as this worker knows."""
        return max(0.0, amount - self.balance) / self.rate_per_s

    def retire(self) -> None:
        super().retire()
        self.give_back()

    def give_back(self) -> None:
        """Return what is leased and unspent, now."""
        if self._give_back_at is not None:
            self._give_back_at.cancel()
            self._give_back_at = None
        if self.balance > 0:
            self._coordinator.give_back(self.kind, self.per_minute, self.balance)
            self.balance = 0.0

    def _give_back_later(self) -> None:
        if self._give_back_at is None:
            loop = asyncio.get_running_loop()
            self._give_back_at = loop.call_later(LEASE_S, self._expire)

    def _expire(self) -> None:
        self._give_back_at = None
        if self._turn.locked():  # an attempt is gathering a lease: it still needs this
            self._give_back_later()
        else:
            self.give_back()


class ClusterShare:
    """A worker's :class:`~batchchat.execute.share.LimitShare`: buckets leased from the
    coordinator, holds told to it and followed from it, a server's window shared out."""

    def __init__(
        self,
        coordinator: CoordinatorClient,
        *,
        workers: int = 1,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._coordinator = coordinator
        #: how many workers send for the job (each hears the same window counts)
        self._workers = max(1, workers)
        self._clock = clock
        self._sleep = sleep
        self._wall = wall
        self.pacers: list[LeasedPacer] = []
        self._apply_hold: Callable[[float], object] | None = None
        #: what the coordinator said last
        self.known = Watch(-math.inf, None, None)

    def pacer(self, kind: Quota, per_minute: float) -> Pacer:
        pacer = LeasedPacer(
            kind, per_minute, self._coordinator, clock=self._clock, sleep=self._sleep
        )
        self.pacers.append(pacer)
        return pacer

    def attach(self, hold_until: Callable[[float], object]) -> None:
        self._apply_hold = hold_until

    def held(self, until: float) -> None:
        self._coordinator.hold(self._wall() + (until - self._clock()))

    def window_part(self, left: float) -> float:
        """An even part of what the server's window has left: each worker hears the whole
        count, and spending it all, N workers would send N times what the window takes."""
        if left <= 0 or not math.isfinite(left):
            return left
        return math.floor(left / self._workers)

    def give_back(self) -> None:
        """Return every unspent lease (the worker has nothing to send for now)."""
        for pacer in self.pacers:
            pacer.give_back()

    async def follow(self, on_stop: Callable[[str, str | None], None]) -> None:
        """Apply the coordinator's holds and stop as they come, until cancelled."""
        while True:
            known = self.known
            self.known = news = await self._coordinator.watch(known.hold_until, known.stop)
            if news.hold_until > known.hold_until and self._apply_hold is not None:
                self._apply_hold(self._clock() + (news.hold_until - self._wall()))
            if news.stop is not None and known.stop is None:
                on_stop(news.stop, news.message)
