"""Client-side rate limiting of one run: RPM/TPM pacing, server feedback, cool-down, AIMD.

Every attempt passes four gates, cheapest first; each waits on one timer or future,
never in a polling loop:

1. the run-wide **cool-down**, set by a 429 (its retry-after, else a short default) or by
   ``x-ratelimit-remaining-*`` headers saying the server is out of room;
2. the **adaptive concurrency** limit: additive increase per success, multiplicative
   decrease on 429s without rate-limit headers, 503/529 and timeouts (servers such as
   vLLM, Ollama and many gateways say nothing else) -- a timeout only when timeouts are a
   real share of the recent attempts, since one stalled connection is not congestion;
3. the **RPM** bucket and 4. the **TPM** bucket, charged with the planner's estimate at
   admission and corrected with the real usage afterwards.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping

from aiolimiter import AsyncLimiter

from batchchat.errors import (
    RateLimitError,
    RequestError,
    RequestTimeout,
    ServerError,
    is_retryable,
)
from batchchat.spec import LimitsSpec

#: cool-down after a 429 that carries no retry-after
DEFAULT_COOL_DOWN_S = 0.5
#: the bucket holds this much of a second's rate: enough to catch up after an event-loop
#: hiccup (a sink write), small enough not to look like a burst to a per-second limiter
_BURST_S = 0.1
#: the adaptive limit shrinks at most once per this many seconds (one "round trip"), so
#: one burst of errors from requests sent together counts as one signal, not fifty
_DECREASE_EVERY_S = 1.0
_DECREASE_FACTOR = 0.5
#: timeouts count as congestion when at least this share of the last _TIMEOUT_WINDOW
#: attempts timed out, and at least _MIN_TIMEOUTS did: with 1 % of attempts stalling at
#: random, a run of 5,000 attempts reaches that by chance about once in 30 runs
_TIMEOUT_WINDOW = 200
_TIMEOUT_SHARE = 0.05
_MIN_TIMEOUTS = 3
#: the window of x-ratelimit limits (RPM and TPM)
_WINDOW_S = 60.0
#: statuses that mean "overloaded" rather than "broken"
_OVERLOADED = frozenset({503, 529})


# -- the rate-limit headers ---------------------------------------------------------------------

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|h|m|s)")
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
#: plain numbers above this are Unix timestamps, not durations
_EPOCH_FLOOR = 1e9


def parse_duration(text: str | None, *, now: float | None = None) -> float | None:
    """Seconds in a reset header: ``1s``, ``20ms``, ``6m0s``, ``1m30.5s``, ``0.5`` or a Unix time.

    None when absent or not understood.
    """
    if text is None:
        return None
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        if value > _EPOCH_FLOOR:
            value -= time.time() if now is None else now
        return max(0.0, value) if math.isfinite(value) else None
    total, end = 0.0, 0
    for match in _DURATION_PART.finditer(text):
        if match.start() != end:
            return None
        total += float(match[1]) * _UNIT_S[match[2]]
        end = match.end()
    return total if end and end == len(text) else None


def has_rate_limit_headers(headers: Mapping[str, str]) -> bool:
    return "x-ratelimit-remaining-requests" in headers or "x-ratelimit-remaining-tokens" in headers


def wait_for_room_s(headers: Mapping[str, str], *, tokens_needed: float = 0.0) -> float:
    """Seconds until the server has room for one more request (0: room now), per its headers.

    Servers disagree on what ``reset`` means: OpenAI's is the time until the whole window
    is free again, others' the time until the oldest charge expires. Both agree with
    "the missing amount at the per-minute rate, but no later than reset", so that is used.
    """
    wait = 0.0
    remaining = _number(headers.get("x-ratelimit-remaining-requests"))
    if remaining is not None and remaining < 1:
        wait = _refill_s(headers, "requests", 1.0 - remaining)
    remaining = _number(headers.get("x-ratelimit-remaining-tokens"))
    if remaining is not None and remaining < tokens_needed:
        wait = max(wait, _refill_s(headers, "tokens", tokens_needed - remaining))
    return wait


def _refill_s(headers: Mapping[str, str], kind: str, missing: float) -> float:
    reset = parse_duration(headers.get(f"x-ratelimit-reset-{kind}"))
    if reset is None:
        return 0.0  # no timing advice: a 429, if it comes, will say
    limit = _number(headers.get(f"x-ratelimit-limit-{kind}"))
    if not limit:
        return reset
    return min(reset, missing * _WINDOW_S / limit)


def _number(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        return None


# -- pacing -------------------------------------------------------------------------------------


class Pacer(AsyncLimiter):
    """A leaky bucket for one per-minute limit that starts full and takes corrections.

    Starting full means no opening burst: in the middle of a long job the server's window
    is already full. The rate is lowered by the bucket's small capacity so that no 60 s
    window ever holds more than the limit, however the server counts (sliding log or
    token bucket).
    """

    def __init__(self, per_minute: float) -> None:
        #: the limit this bucket keeps under
        self.per_minute = per_minute
        capacity = max(1.0, min(2.0, per_minute / 100), per_minute / 60 * _BURST_S)
        rate_per_s = max(per_minute - capacity, per_minute / 2) / 60
        super().__init__(capacity, capacity / rate_per_s)
        #: False until the bucket was filled in the running loop
        self._primed = False

    async def acquire(self, amount: float = 1) -> None:
        """Wait for ``amount``; more than the capacity waits for an empty bucket, then owes."""
        if not self._primed:
            self._prime()
        take = min(amount, self.max_rate)
        await super().acquire(take)
        if amount > take:
            self.adjust(amount - take)

    def adjust(self, delta: float) -> None:
        """Charge (positive) or refund (negative) ``delta`` without waiting."""
        if not self._primed:
            self._prime()
        self._leak()
        self._level = max(0.0, self._level + delta)
        if delta < 0:
            self._wake_next()

    def _prime(self) -> None:
        self._leak()  # stamps the current loop time
        self._level = float(self.max_rate)
        self._primed = True


class AdaptiveConcurrency:
    """How many attempts may be in flight: AIMD between 1 and ``maximum``."""

    def __init__(self, maximum: int) -> None:
        self.maximum = maximum
        #: the current limit; fractional so additive increase can be +1 per window
        self.limit = float(maximum)
        #: attempts holding a slot now
        self.in_use = 0
        #: tasks waiting for a slot, oldest first; a granted future already owns its slot
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._last_decrease = -math.inf

    async def acquire(self) -> None:
        if self.in_use < int(self.limit) and not self._waiters:
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
        if self.limit < self.maximum:
            self.limit = min(float(self.maximum), self.limit + 1.0 / self.limit)
            self._grant()

    def decrease(self, now: float) -> None:
        """A congestion signal: halve, at most once per :data:`_DECREASE_EVERY_S`."""
        if now - self._last_decrease >= _DECREASE_EVERY_S:
            self.limit = max(1.0, self.limit * _DECREASE_FACTOR)
            self._last_decrease = now

    def _grant(self) -> None:
        while self._waiters and self.in_use < int(self.limit):
            future = self._waiters.popleft()
            if not future.done():
                self.in_use += 1
                future.set_result(None)


class TimeoutShare:
    """Which of the last ``window`` attempts timed out: are timeouts a real share of them?"""

    def __init__(
        self,
        window: int = _TIMEOUT_WINDOW,
        *,
        share: float = _TIMEOUT_SHARE,
        minimum: int = _MIN_TIMEOUTS,
    ) -> None:
        #: the last ``window`` attempts, oldest first: True for one that timed out
        self._recent: deque[bool] = deque(maxlen=window)
        #: how many of ``_recent`` are True
        self.timeouts = 0
        self._share = share
        self._minimum = minimum

    def record(self, timed_out: bool) -> None:
        """One attempt ended (timed out, or answered in any way)."""
        recent = self._recent
        if len(recent) == recent.maxlen and recent[0]:
            self.timeouts -= 1  # the oldest leaves the window as this one enters
        recent.append(timed_out)
        self.timeouts += timed_out

    def is_congested(self) -> bool:
        """True when timeouts are at least ``share`` of the window and ``minimum`` in number."""
        return self.timeouts >= max(self._minimum, self._share * len(self._recent))


# -- the run's admission control ----------------------------------------------------------------


class RateLimiter:
    """Admission control for one run: cool-down, adaptive concurrency, RPM and TPM."""

    def __init__(
        self,
        spec: LimitsSpec,
        *,
        max_pause_s: float = math.inf,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.rpm = Pacer(spec.rpm) if spec.rpm else None
        self.tpm = Pacer(spec.tpm) if spec.tpm else None
        self.concurrency = AdaptiveConcurrency(spec.max_concurrency) if spec.adaptive else None
        #: the recent attempts' timeouts, which decide whether a timeout is congestion
        self.timeout_share = TimeoutShare()
        self._clock = clock
        self._sleep = sleep
        #: the longest cool-down one piece of server advice can impose (retry.max_wait_s)
        self._max_pause_s = max_pause_s
        #: no attempt starts before this clock time
        self.paused_until = -math.inf
        #: when the current cool-down began: 429s of attempts sent before it are old news
        self._pause_began = -math.inf
        #: True once any response carried x-ratelimit headers
        self.saw_rate_headers = False

    async def admit(self, tokens: int) -> None:
        """Wait until one attempt charging ``tokens`` against TPM may start."""
        if self.paused_until > self._clock():
            await self._cool_down()
        if self.concurrency is not None:
            await self.concurrency.acquire()
        try:
            if self.rpm is not None:
                await self.rpm.acquire(1)
            if self.tpm is not None:
                await self.tpm.acquire(tokens)
            # a 429 may have arrived while this attempt waited for the buckets
            if self.paused_until > self._clock():
                await self._cool_down()
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        """The attempt admitted last by this caller has ended."""
        if self.concurrency is not None:
            self.concurrency.release()

    async def _cool_down(self) -> None:
        # re-checked after each sleep: another 429 may have extended the pause meanwhile
        while (left := self.paused_until - self._clock()) > 0:
            await self._sleep(left)

    def hold_until(self, when: float) -> None:
        """No attempt of the run may start before clock time ``when``."""
        when = min(when, self._clock() + self._max_pause_s)
        if when > self.paused_until:
            if self.paused_until <= self._clock():
                self._pause_began = self._clock()
            self.paused_until = when

    # -- feedback ---------------------------------------------------------------------------

    def on_response(self, headers: Mapping[str, str], *, sent_at: float, charged: int) -> None:
        """Any HTTP answer: if its rate-limit headers say the server is out of room, hold."""
        if has_rate_limit_headers(headers):
            self.saw_rate_headers = True
            wait = wait_for_room_s(headers, tokens_needed=charged)
            if wait > 0:
                # the server counted this attempt on arrival, about when it was sent
                self.hold_until(sent_at + wait)

    def on_success(self, *, charged: int, counted: int | None = None) -> None:
        """A completion arrived: grow concurrency, correct the TPM charge.

        ``counted`` is what the server charged at admission as far as the usage tells:
        the real prompt tokens plus the same output allowance (servers charge max_tokens
        up front and keep it), so only the prompt estimate's error is corrected.
        """
        if self.concurrency is not None:
            self.timeout_share.record(False)
            self.concurrency.increase()
        if counted is not None and self.tpm is not None and counted != charged:
            self.tpm.adjust(counted - charged)

    def on_failure(self, error: RequestError, *, sent_at: float) -> None:
        """An attempt failed: cool the run down on 429, shrink concurrency on congestion."""
        timed_out = isinstance(error, RequestTimeout)
        if self.concurrency is not None:
            self.timeout_share.record(timed_out)
        if isinstance(error, RateLimitError):
            if not is_retryable(error):
                return  # no quota, or a request above the limit: waiting cannot help
            self._cool_down_after_429(error.retry_after, sent_at)
            self._adopt_announced_limits(error.headers)
            if not has_rate_limit_headers(error.headers):
                self._signal_congestion()
        elif self._is_congestion(error):
            self._signal_congestion()

    def _is_congestion(self, error: RequestError) -> bool:
        """503/529 always; a timeout when timeouts are a real share of the recent attempts."""
        if isinstance(error, ServerError):
            return error.http_status in _OVERLOADED
        return isinstance(error, RequestTimeout) and self.timeout_share.is_congested()

    def _cool_down_after_429(self, retry_after: float | None, sent_at: float) -> None:
        now = self._clock()
        if retry_after is not None:
            self.hold_until(now + retry_after)  # the server's word, always heeded
        elif sent_at >= self._pause_began:
            # (attempts sent before the current pause began are the same storm: ignored)
            self.hold_until(now + DEFAULT_COOL_DOWN_S)

    def _adopt_announced_limits(self, headers: Mapping[str, str]) -> None:
        """Pace by the limits a 429 announces when they are lower than ours (or ours are unset).

        Only a 429 is taken as proof: ``x-ratelimit-limit-*`` are per minute at OpenAI, but
        other providers reuse the names for daily limits, which must not slow a healthy run.
        """
        rpm = _number(headers.get("x-ratelimit-limit-requests"))
        if rpm and rpm >= 1 and (self.rpm is None or rpm < self.rpm.per_minute):
            self.rpm = Pacer(rpm)
        tpm = _number(headers.get("x-ratelimit-limit-tokens"))
        if tpm and tpm >= 1 and (self.tpm is None or tpm < self.tpm.per_minute):
            self.tpm = Pacer(tpm)

    def _signal_congestion(self) -> None:
        if self.concurrency is not None:
            self.concurrency.decrease(self._clock())
