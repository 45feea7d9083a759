"""The retry policy: whether a failed attempt is tried again, and after how long.

Built from tenacity's composable strategies, so it reads as a sentence. Two kinds of
failure are told apart:

* **Rate limits** (a 429 that waiting can fix) never cost a row its life: they do not
  count against ``retry.max_attempts``. The row waits for the server's advice (the
  run's admission holds every other attempt meanwhile too) or, without advice, goes
  back soon and waits at admission; it gives up only when it has been refused for
  longer than ``retry.rate_limit_patience_s``, or when the server asks for a longer
  wait than ``retry.max_wait_s`` (a daily quota)::

    stop_if_server_wait_exceeds(max_wait_s) | stop_when_limited_longer_than(patience)

* **Everything else worth retrying** (5xx, dropped or stalled connections, cut bodies)
  counts as an attempt. Independent faults come back at once (a little jitter apart);
  only while the server shows load do retries back off, so a flaky server's 500s do
  not queue behind waits meant for an overloaded one::

    stop_after_attempt(max_attempts) | stop_if_server_wait_exceeds(max_wait_s)
    wait_retry_after(otherwise=wait_random_exponential(initial, max) if congested
                               else wait_random(0, QUICK_RETRY_S))

* **In a pool, with another endpoint to go to** (``elsewhere``), a failed row does not wait
  for the endpoint that failed it: that endpoint's own admission holds it (a 429's
  retry-after) or its health takes it out (5xx, a rejected key), and the row goes back at
  once, a little jitter apart, to whichever endpoint has room::

    stop_after_attempt(max_attempts)              (rate limits: patience alone)
    wait_random(0, QUICK_RETRY_S)

Whether an error is worth another attempt is decided by its type alone
(:func:`batchchat.errors.is_retryable`; in a pool, :func:`batchchat.errors.may_fail_over`).
The executor does not run a tenacity loop per request -- a request waiting for its retry
must not hold a worker -- it asks
:meth:`RetryPolicy.next_wait` after each failure and schedules the retry itself.
"""

from __future__ import annotations

import random

from tenacity import Future as Outcome
from tenacity import RetryCallState, Retrying
from tenacity.retry import retry_always, retry_if_exception
from tenacity.stop import stop_after_attempt, stop_base
from tenacity.wait import wait_base, wait_random, wait_random_exponential

from batchchat.errors import RateLimitError, is_retryable, may_fail_over
from batchchat.spec import RetrySpec

#: a server-advised wait is stretched by up to this share (and no more than
#: RETRY_AFTER_JITTER_MAX_S), so rows told the same retry-after do not all come back in
#: the same millisecond -- nor a minute's advice late by six seconds
RETRY_AFTER_JITTER = 0.1
RETRY_AFTER_JITTER_MAX_S = 0.5
#: the most an independent fault's retry waits when the server shows no load (and no more
#: than ``retry.initial_wait_s``)
QUICK_RETRY_S = 0.25


def _server_advice(retry_state: RetryCallState) -> float | None:
    """The retry-after (seconds) the failed attempt's server sent, if any."""
    outcome = retry_state.outcome
    error = outcome.exception() if outcome is not None else None
    advice = getattr(error, "retry_after", None)
    return float(advice) if advice is not None else None


class wait_retry_after(wait_base):  # lower-case like tenacity's strategies
    """The server's retry-after when it sent one (plus a little jitter, within ``cap``),
    else ``otherwise``."""

    def __init__(self, otherwise: wait_base, *, cap: float = float("inf")) -> None:
        self.otherwise = otherwise
        self.cap = cap

    def __call__(self, retry_state: RetryCallState) -> float:
        advice = _server_advice(retry_state)
        if advice is None:
            return self.otherwise(retry_state)
        spread = min(advice * RETRY_AFTER_JITTER, RETRY_AFTER_JITTER_MAX_S)
        return max(advice, min(advice + random.uniform(0.0, spread), self.cap))


class stop_if_server_wait_exceeds(stop_base):  # lower-case like tenacity's strategies
    """Give up when the server asks for a longer wait than ``max_wait_s`` (a daily quota)."""

    def __init__(self, max_wait_s: float) -> None:
        self.max_wait_s = max_wait_s

    def __call__(self, retry_state: RetryCallState) -> bool:
        advice = _server_advice(retry_state)
        return advice is not None and advice > self.max_wait_s


class stop_when_limited_longer_than(stop_base):  # lower-case like tenacity's strategies
    """Give up when the row has been refused by rate limits for longer than ``patience_s``
    (the seconds since its first 429 are the retry state's idle time)."""

    def __init__(self, patience_s: float) -> None:
        self.patience_s = patience_s

    def __call__(self, retry_state: RetryCallState) -> bool:
        return (retry_state.idle_for or 0.0) > self.patience_s


class RetryPolicy:
    """A job's ``retry:`` settings as tenacity strategies, asked once per failed attempt."""

    def __init__(self, spec: RetrySpec) -> None:
        self.max_attempts = spec.max_attempts
        server_wait = stop_if_server_wait_exceeds(spec.max_wait_s)
        #: transient failures while the server shows load: back off
        self.backing_off = Retrying(
            retry=retry_if_exception(is_retryable),
            stop=stop_after_attempt(spec.max_attempts) | server_wait,
            wait=wait_retry_after(
                otherwise=wait_random_exponential(
                    multiplier=spec.initial_wait_s, max=spec.max_wait_s
                ),
                cap=spec.max_wait_s,
            ),
        )
        #: transient failures of single requests: come back at once, a little apart
        quick = min(QUICK_RETRY_S, spec.initial_wait_s, spec.max_wait_s)
        self.quick = self.backing_off.copy(
            wait=wait_retry_after(otherwise=wait_random(0, quick), cap=spec.max_wait_s)
        )
        #: rate limits: the server's advice, else soon (the run's admission holds anyway);
        #: the row only gives up on patience
        self.rate_limited = Retrying(
            retry=retry_if_exception(is_retryable),
            stop=server_wait | stop_when_limited_longer_than(spec.rate_limit_patience_s),
            wait=wait_retry_after(otherwise=wait_random(0, quick), cap=spec.max_wait_s),
        )
        #: in a pool, to another endpoint: soon (``may_fail_over`` decided it may go)
        self.failing_over = Retrying(
            retry=retry_always,
            stop=stop_after_attempt(spec.max_attempts),
            wait=wait_random(0, quick),
        )
        self.limited_failing_over = self.failing_over.copy(
            stop=stop_when_limited_longer_than(spec.rate_limit_patience_s)
        )

    def next_wait(
        self,
        error: BaseException,
        attempt: int,
        *,
        congested: bool = False,
        limited_for_s: float = 0.0,
        elsewhere: bool = False,
        endpoint_proven: bool = True,
    ) -> float | None:
        """Seconds to wait before trying again after ``error``; None: give up.

        ``attempt``: the attempts that count (rate-limited ones do not); ``congested``:
        whether the run sees the server under load now; ``limited_for_s``: how long the
        row has been refused by rate limits. In a pool: ``elsewhere``, whether another
        endpoint may take the row; ``endpoint_proven``, whether the endpoint that failed it
        had answered before (see :func:`batchchat.errors.may_fail_over`).
        """
        limited = isinstance(error, RateLimitError) and is_retryable(error)
        if elsewhere and may_fail_over(error, endpoint_proven=endpoint_proven):
            retrying = self.limited_failing_over if limited else self.failing_over
            idle = limited_for_s if limited else 0.0
        elif isinstance(error, RateLimitError):
            retrying, idle = self.rate_limited, limited_for_s
        else:
            retrying, idle = (self.backing_off if congested else self.quick), 0.0
        state = RetryCallState(retrying, fn=None, args=(), kwargs={})
        state.attempt_number = max(1, attempt)
        state.outcome = Outcome.construct(attempt, error, has_exception=True)
        state.outcome_timestamp = state.start_time
        state.idle_for = idle
        if not retrying.retry(state) or retrying.stop(state):
            return None
        return float(retrying.wait(state))
