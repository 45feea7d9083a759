"""Which endpoint of a pool takes the next attempt, and waiting until one has room.

**The choice.** Tiers by priority: the first tier with an endpoint that has room now (its
own limits, its health) takes the attempt, so a fallback tier gets traffic only while the
tiers before it are saturated or out. (An endpoint still on trial -- new, with a couple of
attempts in flight, no good answer yet and nothing else holding it -- is neither: the next
tier waits for its verdict. Held by a 429 before its first good answer, it is saturated.)
Within the tier, a weighted random choice among the endpoints with room. The endpoint whose
failure sent the row back is passed over when another has room; endpoints that refused the
row with a client error never see it again.

**Stickiness** (``routing.sticky``): the endpoints of the tier are put in the row's own
order by weighted rendezvous hashing of its key (its row id, or its prompt's first
``prefix_chars`` characters), and the first with room takes it -- or, when its only
wait is a rate bucket's next refill (within :data:`STICKY_GRACE_S`), waits for it at its
admission. So the same rows keep reaching the same endpoint's prompt cache while it has
room, and go to the next one in their order rather than queue when it does not.

**Waiting.** When no endpoint has room, attempts wait in line, first come first served.
One timer rings at the earliest moment some endpoint will have room by the clock (a rate
bucket refills, a 429's hold or a cool-down ends); an attempt ending and a change of
health wake the first in line. Only the first in line looks; when it finds room it
passes the turn on. Attempts that some endpoints refused (their own choice is narrower)
wait apart and look at every wake-up, so they never hold up the line nor starve.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import random
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Sequence

import orjson

from batchchat.execute.lane import Lane
from batchchat.models import ChatRequest
from batchchat.spec import RoutingSpec

#: the longest a sticky row waits for its endpoint's rate bucket rather than go elsewhere
STICKY_GRACE_S = 1.0


class Router:
    """Chooses a lane of a pool for each attempt, waiting in line while none has room."""

    def __init__(
        self,
        lanes: Sequence[Lane],
        routing: RoutingSpec,
        *,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
        rng: random.Random | None = None,
    ) -> None:
        self.lanes = list(lanes)
        levels = sorted({lane.priority for lane in lanes})
        self._tiers = [[lane for lane in lanes if lane.priority == level] for level in levels]
        self._sticky = routing.sticky
        self._prefix_chars = routing.prefix_chars
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        #: attempts waiting in line for room, first come first served
        self._line: deque[asyncio.Future[None]] = deque()
        #: attempts with a narrower choice (some lanes refused them), woken on every change
        self._apart: list[asyncio.Future[None]] = []
        #: the one timer, and the clock time it rings at
        self._timer: asyncio.Task[None] | None = None
        self._timer_at = math.inf
        #: set when the run stops sending, or no lane is left: waiting attempts get None
        self.closed = False

    # -- the choice -------------------------------------------------------------------------

    def sticky_key(self, request: ChatRequest) -> str | None:
        """The key that keeps ``request`` on one endpoint (None: no stickiness)."""
        if self._sticky == "row":
            return request.row_id
        if self._sticky == "prefix":
            messages = orjson.dumps(request.body.get("messages"), option=orjson.OPT_NON_STR_KEYS)
            return messages[: self._prefix_chars].decode("utf-8", "replace")
        return None

    def pick(
        self,
        tokens: int,
        *,
        key: str | None = None,
        avoid: Lane | None = None,
        refused: Collection[str] = (),
    ) -> Lane | None:
        """The lane for an attempt charging ``tokens`` now, or None when none has room."""
        now = self._clock()
        for tier in self._tiers:
            lanes = [lane for lane in tier if lane.alive and lane.name not in refused]
            if key is not None:
                chosen = self._sticky_choice(lanes, key, tokens, now, avoid)
            else:
                chosen = self._weighted_choice(lanes, tokens, now, avoid)
            if chosen is not None:
                return chosen
            if any(lane.awaits_verdict(now) for lane in lanes):
                return None  # not saturated, on trial: the next tier waits for its verdict
        return None

    def _weighted_choice(
        self, lanes: list[Lane], tokens: int, now: float, avoid: Lane | None
    ) -> Lane | None:
        ready = [lane for lane in lanes if lane.ready_in_s(tokens, now) <= 0]
        if len(ready) > 1 and avoid in ready:
            ready.remove(avoid)
        if len(ready) <= 1:
            return ready[0] if ready else None
        return self._rng.choices(ready, weights=[lane.weight for lane in ready])[0]

    def _sticky_choice(
        self, lanes: list[Lane], key: str, tokens: int, now: float, avoid: Lane | None
    ) -> Lane | None:
        ordered = sorted(lanes, key=lambda lane: _rendezvous(key, lane), reverse=True)
        if len(ordered) > 1 and avoid in ordered:
            ordered.remove(avoid)
            ordered.append(avoid)
        waits = [lane.ready_in_s(tokens, now) for lane in ordered]
        for lane, wait in zip(ordered, waits, strict=True):
            if wait <= 0 or (wait <= STICKY_GRACE_S and _only_refilling(lane, now)):
                return lane
        return None

    # -- waiting ----------------------------------------------------------------------------

    async def route(
        self,
        tokens: int,
        *,
        key: str | None = None,
        avoid: Lane | None = None,
        refused: Collection[str] = (),
    ) -> Lane | None:
        """The lane for an attempt, once one has room; None once :attr:`closed`, or once no
        lane is left that the attempt may use (the others refused it, or are out for good)."""
        if not self.closed and (refused or not self._line):
            lane = self.pick(tokens, key=key, avoid=avoid, refused=refused)
            if lane is not None:
                return lane
        first_time = True
        while not self.closed and self.reachable(refused):
            future = asyncio.get_running_loop().create_future()
            if refused:
                self._apart.append(future)
            elif first_time:
                self._line.append(future)
            else:
                self._line.appendleft(future)  # it keeps its place in line
            self._arm(tokens, refused)
            try:
                await future
            except asyncio.CancelledError:
                self._forget(future)
                raise
            first_time = False
            if self.closed:
                break
            lane = self.pick(tokens, key=key, avoid=avoid, refused=refused)
            if lane is not None:
                if not refused:
                    self.wake()  # room may be left for the next in line
                return lane
        return None

    def reachable(self, refused: Collection[str] = ()) -> bool:
        """Whether some lane may still take an attempt that ``refused`` refused."""
        return any(lane.alive and lane.name not in refused for lane in self.lanes)

    def wake(self) -> None:
        """Something changed (an attempt ended, a lane's health): the first in line looks,
        and so does every attempt waiting apart."""
        apart, self._apart = self._apart, []
        for future in apart:
            if not future.done():
                future.set_result(None)
        while self._line:
            future = self._line.popleft()
            if not future.done():
                future.set_result(None)
                return

    def close(self) -> None:
        """No more attempts: every waiting one gets None."""
        self.closed = True
        for future in [*self._line, *self._apart]:
            if not future.done():
                future.set_result(None)
        self._line.clear()
        self._apart.clear()
        if self._timer is not None:
            self._timer.cancel()

    def _forget(self, future: asyncio.Future[None]) -> None:
        if future.done() and not future.cancelled():
            self.wake()  # woken just as it was cancelled: the turn goes on
        if future in self._line:
            self._line.remove(future)
        if future in self._apart:
            self._apart.remove(future)

    def _arm(self, tokens: int, refused: Collection[str]) -> None:
        """Set the timer for the earliest moment a lane this attempt may use has room by
        the clock (a refill, the end of a hold or of a cool-down); one timer at a time."""
        now = self._clock()
        soonest = min(
            (
                lane.ready_in_s(tokens, now)
                for lane in self.lanes
                if lane.alive and lane.name not in refused
            ),
            default=math.inf,
        )
        if not math.isfinite(soonest) or now + soonest >= self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = now + soonest
        self._timer = asyncio.create_task(self._ring(soonest))

    async def _ring(self, delay: float) -> None:
        await self._sleep(delay)
        self._timer, self._timer_at = None, math.inf
        self.wake()

    async def aclose(self) -> None:
        """Stop the timer (the end of the run)."""
        self.close()
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
            await asyncio.gather(timer, return_exceptions=True)


def _rendezvous(key: str, lane: Lane) -> float:
    """Weighted rendezvous score of ``lane`` for ``key``: the highest wins, each lane in
    proportion to its weight, and removing a lane moves only the keys it had."""
    digest = hashlib.blake2b(f"{key}\x1f{lane.name}".encode(), digest_size=8).digest()
    unit = (int.from_bytes(digest, "big") + 0.5) / 2.0**64
    return -lane.weight / math.log(unit)


def _only_refilling(lane: Lane, now: float) -> bool:
    """Whether all ``lane`` waits for is its rate buckets' next refill (no hold, no health
    cap, nobody else already waiting at its buckets)."""
    return lane.admission.paused_until <= now and (
        lane.health is None or lane.health.in_flight_cap(now) is None
    )
