"""When a run should stop early because nothing suggests any request can succeed. Pure.

A cron job must not spend an hour turning a million rows into a million identical
error rows. Three signs stop a run, each with a message that says what to check:

* an error every request would repeat (a rejected key, no quota): decided by type in
  :func:`batchchat.errors.is_fatal`, at its first occurrence;
* no connection to the server: the first attempts all fail to connect (nothing is
  listening at ``base_url``), or, later, every attempt has failed to connect for a
  minute (the server went away);
* the first requests of the run all failed for good in the same way (the same error
  type and status): a wrong model name, a gateway refusing the key with a 400, a path
  that is not an API.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from batchchat.errors import (
    ConnectError,
    ConnectTimeout,
    RequestError,
    error_type_name,
    is_fatal,
)

#: consecutive failed connections, with none ever made, that say nothing is listening
FIRST_CONNECT_FAILURES = 8
#: seconds of nothing but failed connections that say the server went away mid-run
LOST_SERVER_S = 60.0
#: how many first results, all failing the same way, say that all would
SAME_FIRST_FAILURES = 20


class FailFast:
    """Watches attempts and results; :meth:`verdict` says why to stop, once it is time."""

    def __init__(self, endpoint: str, clock: Callable[[], float]) -> None:
        #: the endpoint as people know it (no credentials), for the messages
        self.endpoint = endpoint
        self._clock = clock
        #: whether any attempt ever got an HTTP answer (whatever its status)
        self._connected = False
        self._connect_failures = 0
        #: clock time of the first connect failure since the last answer
        self._failing_since = math.inf
        #: results so far, and the (error type, status) all of them failed with (None: mixed)
        self._results = 0
        self._same: tuple[str, int | None] | None = None
        self._mixed = False
        self.verdict: str | None = None

    def answered(self) -> None:
        """An attempt got an HTTP response."""
        self._connected = True
        self._connect_failures = 0
        self._failing_since = math.inf

    def attempt_failed(self, error: RequestError) -> None:
        """An attempt ended without a usable answer."""
        if not isinstance(error, ConnectError | ConnectTimeout):
            if error.http_status is not None:
                self.answered()
            return
        self._connect_failures += 1
        now = self._clock()
        self._failing_since = min(self._failing_since, now)
        if not self._connected and self._connect_failures >= FIRST_CONNECT_FAILURES:
            self._stop(
                f"no connection to {self.endpoint}: the first {self._connect_failures} "
                f"attempts failed ({error}). Is the server running, and is endpoint.base_url "
                "right?"
            )
        elif self._connected and now - self._failing_since >= LOST_SERVER_S:
            self._stop(
                f"the server at {self.endpoint} stopped answering: every attempt for "
                f"{now - self._failing_since:.0f}s failed to connect ({error})"
            )

    def finished(self, error: BaseException | None) -> None:
        """A request ended for good: ``error`` None when it succeeded."""
        if error is not None and is_fatal(error):
            self._stop(f"{type(error).__name__}: {error}")
            return
        self._results += 1
        if error is None:
            self._mixed = True
        if self._mixed or self._results > SAME_FIRST_FAILURES:
            return
        assert error is not None
        kind = (error_type_name(error), getattr(error, "http_status", None))
        if self._same is None:
            self._same = kind
        elif kind != self._same:
            self._mixed = True
            return
        if self._results == SAME_FIRST_FAILURES:
            status = f" (HTTP {kind[1]})" if kind[1] else ""
            self._stop(
                f"the first {SAME_FIRST_FAILURES} requests all failed with {kind[0]}{status}, "
                f"the last one: {error}. Nothing suggests the others would succeed: fix the "
                "cause and run again (the failed rows are retried)"
            )

    def _stop(self, message: str) -> None:
        if self.verdict is None:
            self.verdict = message
