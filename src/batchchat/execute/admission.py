"""Admission control of one run: when may the next attempt go, and what the answers teach.

Every attempt passes four gates, cheapest first; each waits on one timer or future,
never in a polling loop:

1. the run-wide **hold**, set by the server: a 429's retry-after (in any spelling), a
   429 without advice (a pause that grows while 429s go on: the window may be a whole
   minute), or ``x-ratelimit-*`` headers saying the window is spent until its reset;
2. the **concurrency gate** (AIMD on congestion when ``limits.adaptive``);
3. the **RPM** and **TPM** buckets: the spec's limits, lowered to any lower limit a 429
   announces (dropped when the server's own window is tighter); charged with the
   planner's estimate at admission and corrected with the real usage afterwards;
4. the **window allowance**: a server that counts requests without saying when its
   window resets (a LiteLLM gateway's calendar minute) is sent no more than it has left,
   and one probe at a time once it has none.
"""

from __future__ import annotations

import asyncio
import functools
import math
import time
from collections.abc import Awaitable, Callable, Mapping

from batchchat.errors import (
    APIStatusError,
    ConnectTimeout,
    RateLimitError,
    RequestError,
    RequestTimeout,
    ServerError,
    is_retryable,
)
from batchchat.execute.concurrency import ConcurrencyGate, FailureShare, WindowAllowance
from batchchat.execute.headers import (
    WINDOW_S,
    has_rate_limit_headers,
    read_quota,
    wait_for_room_s,
)
from batchchat.execute.pacing import Pacer, slower
from batchchat.execute.share import LimitShare, Quota
from batchchat.spec import LimitsSpec

#: the first pause after a 429 that gives no advice; it doubles while 429s go on
FIRST_QUIET_PAUSE_S = 1.0
#: the longest such pause: a gateway's window may be a whole calendar minute
LONGEST_QUIET_PAUSE_S = 60.0
#: statuses that say "overloaded" whatever their headers
_OVERLOADED = frozenset({529})


class Admission:
    """Admission control for one run: the server's hold, concurrency, RPM and TPM."""

    def __init__(
        self,
        spec: LimitsSpec,
        *,
        max_pause_s: float = math.inf,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        share: LimitShare | None = None,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        #: the buckets and holds of other executors of the same job (None: this one alone)
        self._share = share
        self.rpm = self._pacer("requests", spec.rpm) if spec.rpm else None
        self.tpm = self._pacer("tokens", spec.tpm) if spec.tpm else None
        self.concurrency = ConcurrencyGate(spec.max_concurrency, adaptive=spec.adaptive)
        self.window = WindowAllowance()
        #: which recent attempts failed: congestion is a share of them, not one
        self.failures = FailureShare()
        #: the latest send time of an attempt the server answered (any status)
        self._answered_sent_at = -math.inf
        #: the longest hold one piece of server advice can impose (retry.max_wait_s)
        self._max_pause_s = max_pause_s
        #: no attempt starts before this clock time
        self.paused_until = -math.inf
        #: when the current hold began: 429s of attempts sent before it are old news
        self._pause_began = -math.inf
        #: the next pause after a 429 without advice, and whether one got through since
        self._quiet_pause_s = FIRST_QUIET_PAUSE_S
        self._answered_since_pause = True
        #: attempts sent so far: a response's remaining count is as of its own send
        self.sends = 0
        #: True once any response carried x-ratelimit headers
        self.saw_rate_headers = False
        #: when the first attempt since the last hold went: a per-minute window that
        #: counted it has room again a minute later, however it is aligned
        self._window_began: float | None = None
        if share is not None:
            share.attach(self._extend_hold)

    def _pacer(self, kind: Quota, per_minute: float) -> Pacer:
        if self._share is not None:
            return self._share.pacer(kind, per_minute)
        return Pacer(per_minute, clock=self._clock, sleep=self._sleep)

    # -- admission ------------------------------------------------------------------------

    async def admit(self, tokens: int) -> int:
        """Wait until one attempt charging ``tokens`` against TPM may start; returns its
        send number (for :meth:`on_response`)."""
        if self.paused_until > self._clock():
            await self._hold()
        await self.concurrency.acquire()
        try:
            await self._pace(tokens)
            # last, so that what it knows of the server's window is as fresh as can be
            await self.window.acquire()
        except BaseException:
            self.concurrency.release()
            raise
        try:
            # a 429 may have arrived while this attempt waited for the buckets
            if self.paused_until > self._clock():
                await self._hold()
        except BaseException:
            self.release()
            raise
        self.sends += 1
        if self._window_began is None:
            self._window_began = self._clock()
        return self.sends

    async def _pace(self, tokens: int) -> None:
        """Wait for the RPM and TPM buckets; a bucket replaced while we waited (a server's
        tighter limit, or none of ours any more) is waited for afresh."""
        while (rpm := self.rpm) is not None:
            await rpm.acquire(1)
            if not rpm.retired:
                break
        while (tpm := self.tpm) is not None:
            await tpm.acquire(tokens)
            if not tpm.retired:
                break

    def ready_in_s(self, tokens: int) -> float:
        """Seconds until an attempt charging ``tokens`` would be admitted without waiting
        (0: now; inf: not before an attempt in flight ends). For a router choosing among
        endpoints; nothing is charged."""
        if not (self.concurrency.has_room() and self.window.has_room()):
            return math.inf
        wait = self.paused_until - self._clock()
        for pacer, amount in ((self.rpm, 1), (self.tpm, tokens)):
            if pacer is not None:
                wait = max(wait, math.inf if pacer.busy else pacer.wait_s(amount))
        return max(wait, 0.0)

    def release(self) -> None:
        """The attempt admitted last by this caller has ended."""
        self.window.release()
        self.concurrency.release()

    async def _hold(self) -> None:
        # re-checked after each sleep: another 429 may have extended the hold meanwhile
        while (left := self.paused_until - self._clock()) > 0:
            await self._sleep(left)

    def hold_until(self, when: float) -> None:
        """No attempt of the run may start before clock time ``when``."""
        if self._extend_hold(when) and self._share is not None:
            self._share.held(self.paused_until)

    def _extend_hold(self, when: float) -> bool:
        """Hold until ``when`` unless a hold already lasts longer; True when extended."""
        when = min(when, self._clock() + self._max_pause_s)
        if when <= self.paused_until:
            return False
        if self.paused_until <= self._clock():
            self._pause_began = self._clock()
            self._answered_since_pause = False
            self._window_began = None  # the next send begins the next window
        self.paused_until = when
        return True

    @property
    def congested(self) -> bool:
        """Whether the server shows load now: retries then back off instead of coming back."""
        return self.paused_until > self._clock() or self.failures.is_congested()

    # -- feedback -------------------------------------------------------------------------

    def on_response(
        self, headers: Mapping[str, str], *, sent_at: float, send: int, charged: int
    ) -> None:
        """Any HTTP answer: learn from its rate-limit headers what is left of the window."""
        self._answered_sent_at = max(self._answered_sent_at, sent_at)
        if not has_rate_limit_headers(headers):
            return
        self.saw_rate_headers = True
        wait = wait_for_room_s(headers, tokens_needed=charged)
        if wait > 0:
            # the server counted this attempt on arrival, about when it was sent
            self.hold_until(sent_at + wait)
        requests = read_quota(headers, "requests")
        self._yield_to_the_server(requests.limit, read_quota(headers, "tokens").limit)
        if requests.remaining is not None and requests.reset_s is None:
            # no reset to wait for: send no more than the window has left, then probe. The
            # attempts sent after this one reached the server later, so its count misses
            # them; and a gateway may refuse while announcing one left: not counted on.
            left = requests.remaining - 1 - (self.sends - send)
            self.window.update(left if self._share is None else self._share.window_part(left))

    def _yield_to_the_server(self, rpm: float | None, tpm: float | None) -> None:
        """A server counting a tighter limit than the spec's: its own window governs.

        The spec's bucket would only spread requests the server counts per window anyway,
        so bursts that its window takes come later than they could (a gateway's calendar
        minute); the server's counts and resets (or its 429s) say when to stop instead.
        """
        if rpm is not None and self.rpm is not None and rpm < self.rpm.per_minute:
            self.rpm.retire()  # its waiters go now: the server's window counts for them
            self.rpm = None
        if tpm is not None and self.tpm is not None and tpm < self.tpm.per_minute:
            self.tpm.retire()
            self.tpm = None

    def on_success(self, *, charged: int, counted: int | None = None) -> None:
        """A completion arrived: grow concurrency, correct the TPM charge.

        ``counted`` is what the server charged at admission as far as the usage tells:
        the real prompt tokens plus the same output allowance (servers charge max_tokens
        up front and keep it), so only the prompt estimate's error is corrected.
        """
        self._answered_since_pause = True
        self._quiet_pause_s = FIRST_QUIET_PAUSE_S
        self.failures.record(False)
        self.concurrency.increase()
        if counted is not None and self.tpm is not None and counted != charged:
            self.tpm.adjust(counted - charged)

    def on_failure(self, error: RequestError, *, sent_at: float) -> None:
        """An attempt failed: hold the run on 429, shrink concurrency on congestion."""
        if isinstance(error, RateLimitError):
            if is_retryable(error):  # no quota, or a request above the limit: waiting cannot help
                self._on_rate_limited(error, sent_at)
            return
        if self._stalled_alone(error, sent_at):
            return
        self.failures.record(True)
        advice = error.retry_after if isinstance(error, APIStatusError) else None
        if advice is not None and advice <= self._max_pause_s:
            self.hold_until(self._clock() + advice)  # a 503's retry-after is heeded too
        overloaded = isinstance(error, ServerError) and (
            error.http_status in _OVERLOADED or advice is not None
        )
        if overloaded or self.failures.is_congested():
            self.concurrency.decrease(self._clock())

    def _stalled_alone(self, error: RequestError, sent_at: float) -> bool:
        """A timeout of an attempt sent before one the server has answered since: it stalled
        on its own, and says nothing about the server's load. A server falling behind
        answers nothing sent after a request it could not answer in time; and stalls that
        began together end together, so counting them would read a burst of single faults
        as congestion. (Connecting in time is the server's accept queue: always counted.)"""
        return (
            isinstance(error, RequestTimeout)
            and not isinstance(error, ConnectTimeout)
            and sent_at < self._answered_sent_at
        )

    def _on_rate_limited(self, error: RateLimitError, sent_at: float) -> None:
        now = self._clock()
        if error.retry_after is not None:
            # the server's word, heeded; advice longer than retry.max_wait_s holds nothing:
            # the attempt fails without a retry, and fail-fast ends the run when all do
            if error.retry_after <= self._max_pause_s:
                self.hold_until(self._window_end(now, now + error.retry_after))
        elif sent_at >= self._pause_began:
            # (attempts sent before the current hold began are the same storm: ignored)
            self.hold_until(now + self._next_quiet_pause())
        self._adopt_announced_limits(error.headers)
        if not has_rate_limit_headers(error.headers):
            self.concurrency.decrease(now)

    def _window_end(self, now: float, advised: float) -> float:
        """When a spent window without a reset header (a gateway's) has room again: at the
        latest a minute after its first attempt, whether it is a rolling window or a
        calendar minute. A gateway's advice counts from the refusal (LiteLLM always says
        60 s), so it would waste up to the whole window; it bounds the hold otherwise."""
        began = self._window_began
        if not math.isfinite(self.window.left) or began is None or began + WINDOW_S <= now:
            return advised
        return min(advised, began + WINDOW_S)

    def _next_quiet_pause(self) -> float:
        """1 s, then twice as long while no attempt got through in between, up to a minute."""
        if self._answered_since_pause:
            self._quiet_pause_s = FIRST_QUIET_PAUSE_S
        pause = self._quiet_pause_s
        self._quiet_pause_s = min(LONGEST_QUIET_PAUSE_S, pause * 2)
        return pause

    def _adopt_announced_limits(self, headers: Mapping[str, str]) -> None:
        """Pace by the limits a 429 announces when they are lower than ours (or ours are unset).

        Only a 429 is taken as proof that the announced numbers are this minute's limit:
        a 200's are taken for what is left in the window (see :meth:`on_response`).
        """
        requests, tokens = read_quota(headers, "requests"), read_quota(headers, "tokens")
        self.rpm = slower(self.rpm, requests.limit, functools.partial(self._pacer, "requests"))
        self.tpm = slower(self.tpm, tokens.limit, functools.partial(self._pacer, "tokens"))
