"""The retry policy: whether a failed attempt is tried again, and after how long.

Built from tenacity's composable strategies, so it reads as a sentence::

    retry_if_exception(is_retryable)
    stop_after_attempt(max_attempts) | stop_if_server_wait_exceeds(max_wait_s)
    wait_retry_after(otherwise=wait_random_exponential(initial_wait_s, max=max_wait_s),
                     cap=max_wait_s)

Whether an error is worth another attempt is decided by its type alone
(:func:`batchchat.errors.is_retryable`). The executor does not run a tenacity loop per
request -- a request waiting for its retry must not hold a worker -- it asks
:meth:`RetryPolicy.next_wait` after each failure and schedules the retry itself.
"""

from __future__ import annotations

import random

from tenacity import Future as Outcome
from tenacity import RetryCallState, Retrying
from tenacity.retry import retry_if_exception
from tenacity.stop import stop_after_attempt, stop_base
from tenacity.wait import wait_base, wait_random_exponential

from batchchat.errors import is_retryable
from batchchat.spec import RetrySpec

#: a server-advised wait is stretched by up to this share, so rows told the same
#: retry-after do not all come back in the same millisecond
RETRY_AFTER_JITTER = 0.1


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
        stretched = advice * (1.0 + random.uniform(0.0, RETRY_AFTER_JITTER))
        return max(advice, min(stretched, self.cap))


class stop_if_server_wait_exceeds(stop_base):  # lower-case like tenacity's strategies
    """Give up when the server asks for a longer wait than ``max_wait_s`` (a daily quota)."""

    def __init__(self, max_wait_s: float) -> None:
        self.max_wait_s = max_wait_s

    def __call__(self, retry_state: RetryCallState) -> bool:
        advice = _server_advice(retry_state)
        return advice is not None and advice > self.max_wait_s


class RetryPolicy:
    """A job's ``retry:`` settings as tenacity strategies, asked once per failed attempt."""

    def __init__(self, spec: RetrySpec) -> None:
        self.max_attempts = spec.max_attempts
        #: the policy as a tenacity object (also usable to drive a tenacity loop directly)
        self.retrying = Retrying(
            retry=retry_if_exception(is_retryable),
            stop=stop_after_attempt(spec.max_attempts)
            | stop_if_server_wait_exceeds(spec.max_wait_s),
            wait=wait_retry_after(
                otherwise=wait_random_exponential(
                    multiplier=spec.initial_wait_s, max=spec.max_wait_s
                ),
                cap=spec.max_wait_s,
            ),
            reraise=True,
        )

    def next_wait(self, error: BaseException, attempt: int) -> float | None:
        """Seconds to wait before attempt ``attempt + 1`` after ``error``; None: give up."""
        state = RetryCallState(self.retrying, fn=None, args=(), kwargs={})
        state.attempt_number = attempt
        state.outcome = Outcome.construct(attempt, error, has_exception=True)
        state.outcome_timestamp = state.start_time
        if not self.retrying.retry(state) or self.retrying.stop(state):
            return None
        return float(self.retrying.wait(state))
