"""One pool endpoint's health: in, out for a while, probing, or out for the run. Pure.

An endpoint of a pool is in one of four states; the router asks :meth:`Health.in_flight_cap`
how many attempts it may have in flight now:

* **in**: as many as its admission allows. Until it has answered one request well, it
  proves itself with :data:`PROVING_IN_FLIGHT` at a time, so a wrong key or a dead server
  costs a couple of attempts, not a burst of ``max_concurrency``;
* **out** for a cool-down after ``routing.failures`` consecutive failures of the kind that
  say "this server is unwell" (5xx, timeouts, dropped or refused connections, broken
  bodies), none: the others go on meanwhile; or out for as long as a server asked, when its
  retry-after is longer than ``retry.max_wait_s`` (which would fail a row of one endpoint);
* **probing** once the cool-down is over: one attempt at a time. It succeeds: the endpoint is
  in again. It fails: out again for twice as long, up to ``routing.max_cooldown_s``;
* **removed** for the rest of the run: a rejected key or no quota (``is_fatal``), nothing
  listening (its first ``routing.failures`` connections all refused), a server that went
  away (every connection refused for :data:`LOST_SERVER_S`), or client errors from
  :data:`SUSPECT_ROWS` different rows before any success (a gateway that answers a wrong key
  with 400, a model name it does not know).

A 429 with shorter advice (or none) does not touch health: the endpoint's own admission
holds it for the server's retry-after (or its learned window) while the others go on.
"""

from __future__ import annotations

import math

from batchchat.errors import (
    ClientError,
    ConnectError,
    ConnectTimeout,
    RateLimitError,
    RequestError,
    error_type_name,
    is_fatal,
    is_retryable,
    may_fail_over,
)
from batchchat.execute.failfast import LOST_SERVER_S
from batchchat.spec import RoutingSpec

#: attempts an endpoint may have in flight before it answered one request well
PROVING_IN_FLIGHT = 2
#: different rows refused with a client error, before any success, that take it out
SUSPECT_ROWS = 3


class Health:
    """The health of one pool endpoint; ``now`` and ``sent_at`` are clock times."""

    def __init__(self, routing: RoutingSpec, *, max_wait_s: float = math.inf) -> None:
        self._routing = routing
        #: the longest a server's retry-after holds an endpoint (retry.max_wait_s); longer
        #: advice (a day-long 429 or 503) puts it out for as long as the server asked
        self._max_wait_s = max_wait_s
        #: consecutive failures that count towards a cool-down (reset by a success)
        self.failures = 0
        self.successes = 0
        #: rows refused with a client error while nothing succeeded yet, and the last refusal
        self.suspect_rows = 0
        self._suspect_error = ""
        #: whether any attempt ever got an HTTP answer, and refused connections in a row
        self.answered = False
        self._connect_failures = 0
        self._refused_since = math.inf
        #: out until this clock time; after it, probing until an attempt succeeds
        self.out_until = -math.inf
        self._out_began = -math.inf
        self.probing = False
        self._next_cooldown_s = routing.cooldown_s
        #: times it was put out for a cool-down
        self.cooldowns = 0
        #: why it is out for the rest of the run (None: it is not)
        self.removed: str | None = None
        #: the last failure it answered with, for messages
        self.last_failure = ""

    @property
    def proven(self) -> bool:
        """Whether it answered one request well: its client errors are the rows' own."""
        return self.successes > 0

    @property
    def down(self) -> bool:
        """Out for the run, or out since its last failures and not back yet (probing)."""
        return self.removed is not None or self.probing

    def state(self) -> str:
        """What it is, for messages."""
        return self.removed or f"cooling down, probed now and then; last: {self.last_failure}"

    @property
    def on_trial(self) -> bool:
        """New, not answered well yet, never out: its few attempts in flight are not all
        it can take, so its tier is not saturated -- the next tier waits for the verdict."""
        return not self.proven and not self.probing and self.removed is None

    def in_flight_cap(self, now: float) -> int | None:
        """How many attempts it may have in flight now (None: as its admission allows)."""
        if self.removed is not None or now < self.out_until:
            return 0
        if self.probing:
            return 1
        return None if self.proven else PROVING_IN_FLIGHT

    def back_in_s(self, now: float) -> float:
        """Seconds until it takes attempts again (inf: never, it was removed)."""
        if self.removed is not None:
            return math.inf
        return max(0.0, self.out_until - now)

    # -- what attempts tell -----------------------------------------------------------------

    def succeeded(self) -> None:
        self.successes += 1
        self.answered = True
        self.failures = self._connect_failures = 0
        self._refused_since = math.inf
        self.probing = False
        self._next_cooldown_s = self._routing.cooldown_s

    def failed(self, error: RequestError, *, sent_at: float, now: float) -> bool:
        """An attempt sent at ``sent_at`` failed with ``error``; True when that puts the
        endpoint out for a cool-down or removes it (:attr:`removed` then says why)."""
        if self.removed is not None:
            return False
        self.last_failure = f"{error_type_name(error)}: {error}"
        if error.http_status is not None:
            self.answered = True
            self._connect_failures = 0
            self._refused_since = math.inf
        if is_fatal(error):
            return self._remove(f"{error_type_name(error)}: {error}")
        if isinstance(error, ConnectError | ConnectTimeout) and self._lost(error, now):
            return True
        advice = getattr(error, "retry_after", None)
        if advice is not None and advice > self._max_wait_s and is_retryable(error):
            return self._out_for(advice, now)
        if isinstance(error, RateLimitError):
            return False  # its admission holds it; health is for failures
        if is_retryable(error):
            return self._failure(sent_at, now)
        if (
            isinstance(error, ClientError)
            and not self.proven
            and may_fail_over(error, endpoint_proven=False)
        ):
            return self._suspect(error)
        return False

    def _failure(self, sent_at: float, now: float) -> bool:
        if sent_at < self._out_began:
            return False  # sent before it went out: the same trouble, already counted
        self.failures += 1
        if not self.probing and self.failures < self._routing.failures:
            return False
        cooldown = self._next_cooldown_s
        self._next_cooldown_s = min(self._next_cooldown_s * 2, self._routing.max_cooldown_s)
        return self._out_for(cooldown, now)

    def _out_for(self, seconds: float, now: float) -> bool:
        self.out_until = max(self.out_until, now + seconds)
        self._out_began = now
        self.probing = True  # once the time out is over
        self.cooldowns += 1
        return True

    def _lost(self, error: RequestError, now: float) -> bool:
        """Connections refused: nothing listening at all, or a server that went away."""
        self._connect_failures += 1
        self._refused_since = min(self._refused_since, now)
        if not self.answered and self._connect_failures >= self._routing.failures:
            return self._remove(
                f"no connection: its first {self._connect_failures} attempts failed ({error}); "
                "is it running, and is its base_url right?"
            )
        if self.answered and now - self._refused_since >= LOST_SERVER_S:
            return self._remove(
                f"it stopped answering: every attempt for {now - self._refused_since:.0f}s "
                f"failed to connect ({error})"
            )
        return False

    def _suspect(self, error: RequestError) -> bool:
        kind = f"{error_type_name(error)} (HTTP {error.http_status})"
        if kind != self._suspect_error:
            self._suspect_error, self.suspect_rows = kind, 0
        self.suspect_rows += 1
        if self.suspect_rows < SUSPECT_ROWS:
            return False
        return self._remove(
            f"its first answers were all errors, {self.suspect_rows} rows in a row: {error}; "
            "check its key, base_url and model mapping"
        )

    def _remove(self, reason: str) -> bool:
        self.removed = reason
        return True
