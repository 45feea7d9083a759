"""The retry policy: what is retried (a table of every case in the issue) and how long it waits."""

from __future__ import annotations

import orjson
import pytest

from batchchat.errors import (
    ConnectTimeout,
    DeadlineExceeded,
    FirstByteTimeout,
    IdleTimeout,
    NetworkError,
    RateLimitError,
    RequestError,
    ResponseFormatError,
    StreamError,
    is_retryable,
    may_fail_over,
)
from batchchat.execute.parse import status_error
from batchchat.execute.retry import (
    QUICK_RETRY_S,
    RETRY_AFTER_JITTER,
    RETRY_AFTER_JITTER_MAX_S,
    RetryPolicy,
)
from batchchat.spec import RetrySpec


def _status(status: int, code: str | None = None, message: str = "x") -> RequestError:
    body = orjson.dumps({"error": {"message": message, "type": code, "code": code}})
    return status_error(status, {}, body)


CASES: list[tuple[str, RequestError, bool]] = [
    ("connect timeout", ConnectTimeout("t"), True),
    ("first-byte timeout", FirstByteTimeout("t"), True),
    ("idle timeout", IdleTimeout("t"), True),
    ("deadline", DeadlineExceeded("t"), True),
    ("connection reset / dropped", NetworkError("reset"), True),
    ("408", _status(408), True),
    ("409", _status(409), True),
    ("429 rate_limit_exceeded", _status(429, "rate_limit_exceeded"), True),
    ("429 slow_down", _status(429, "slow_down"), True),
    ("429 without a body", status_error(429, {}, b""), True),
    ("500", _status(500), True),
    ("502", _status(502), True),
    ("503", _status(503), True),
    ("504", _status(504), True),
    ("529", _status(529), True),
    ("truncated body", ResponseFormatError("truncated"), True),
    ("incomplete stream", ResponseFormatError("no finish_reason"), True),
    ("error event in a 200 stream", StreamError("boom"), True),
    ("400", _status(400), False),
    ("401", _status(401, "invalid_api_key"), False),
    ("403", _status(403), False),
    ("404", _status(404, "model_not_found"), False),
    ("413", _status(413), False),
    ("422", _status(422), False),
    ("429 insufficient_quota", _status(429, "insufficient_quota"), False),
    ("429 credit_balance_exhausted", _status(429, "credit_balance_exhausted"), False),
    ("400 context_length_exceeded", _status(400, "context_length_exceeded"), False),
    (
        "429 request too large",
        _status(429, "rate_limit_exceeded", "Request too large for x"),
        False,
    ),
]


@pytest.mark.parametrize(("case", "error", "retried"), CASES, ids=[c[0] for c in CASES])
def test_what_is_retried(case: str, error: RequestError, retried: bool) -> None:
    policy = RetryPolicy(RetrySpec(max_attempts=6))
    wait = policy.next_wait(error, attempt=1)
    assert (wait is not None) is retried, case


def test_gives_up_after_max_attempts() -> None:
    policy = RetryPolicy(RetrySpec(max_attempts=3))
    error = NetworkError("reset")
    assert policy.next_wait(error, attempt=1) is not None
    assert policy.next_wait(error, attempt=2) is not None
    assert policy.next_wait(error, attempt=3) is None


def test_one_attempt_means_no_retry() -> None:
    assert RetryPolicy(RetrySpec(max_attempts=1)).next_wait(NetworkError("x"), 1) is None


@pytest.mark.parametrize("attempt", [1, 2, 3, 4, 5, 8, 12])
def test_backoff_is_full_jitter_within_the_exponential_window_and_the_cap(attempt: int) -> None:
    spec = RetrySpec(max_attempts=20, initial_wait_s=0.5, max_wait_s=10.0)
    policy = RetryPolicy(spec)
    window = min(spec.max_wait_s, spec.initial_wait_s * 2 ** (attempt - 1))
    # while the server shows load, a 503 backs off exponentially
    waits = [policy.next_wait(_status(503), attempt, congested=True) for _ in range(400)]
    assert all(w is not None and 0.0 <= w <= window for w in waits)
    # full jitter: spread over the whole window, not bunched at its top
    assert min(w for w in waits if w is not None) < 0.2 * window
    assert max(w for w in waits if w is not None) > 0.8 * window


def test_the_servers_retry_after_wins_over_backoff() -> None:
    policy = RetryPolicy(RetrySpec(initial_wait_s=30.0, max_wait_s=120.0))
    error = RateLimitError("429", retry_after=0.25, status=429)
    waits = [policy.next_wait(error, attempt=4) for _ in range(200)]
    assert all(w is not None and 0.25 <= w <= 0.25 * (1 + RETRY_AFTER_JITTER) for w in waits)


def test_retry_after_applies_to_any_status_carrying_it() -> None:
    policy = RetryPolicy(RetrySpec(initial_wait_s=0.01, max_wait_s=120.0))
    wait = policy.next_wait(status_error(503, {"retry-after": "2"}, b""), 1)
    assert wait is not None and 2.0 <= wait <= 2.0 * (1 + RETRY_AFTER_JITTER)
    # a day is longer than anyone waits: the row fails at once, not three times later
    assert policy.next_wait(status_error(503, {"retry-after": "86400"}, b""), 1) is None


def test_independent_faults_come_back_at_once_unless_the_server_shows_load() -> None:
    policy = RetryPolicy(RetrySpec(initial_wait_s=5.0, max_wait_s=60.0))
    quick = [policy.next_wait(_status(500), 3) for _ in range(200)]
    assert all(w is not None and 0.0 <= w <= QUICK_RETRY_S for w in quick)
    slow = [policy.next_wait(_status(500), 3, congested=True) for _ in range(200)]
    assert max(w for w in slow if w is not None) > QUICK_RETRY_S


def test_rate_limits_do_not_spend_attempts_but_patience_runs_out() -> None:
    policy = RetryPolicy(RetrySpec(max_attempts=2, rate_limit_patience_s=600.0))
    error = RateLimitError("429", status=429)
    # rate-limited attempts are not counted: the counted attempt number stays where it is
    assert policy.next_wait(error, 0, limited_for_s=10.0) is not None
    assert policy.next_wait(error, 1, limited_for_s=599.0) is not None
    assert policy.next_wait(error, 1, limited_for_s=601.0) is None


def test_a_long_advice_is_stretched_by_half_a_second_at_most() -> None:
    policy = RetryPolicy(RetrySpec(max_wait_s=120.0))
    error = RateLimitError("429", retry_after=60.0, status=429)
    waits = [policy.next_wait(error, attempt=1) for _ in range(200)]
    assert all(w is not None and 60.0 <= w <= 60.0 + RETRY_AFTER_JITTER_MAX_S for w in waits)


def test_a_retry_after_longer_than_max_wait_gives_up() -> None:
    policy = RetryPolicy(RetrySpec(max_wait_s=60.0))
    assert policy.next_wait(RateLimitError("429", retry_after=3600.0, status=429), 1) is None
    assert policy.next_wait(RateLimitError("429", retry_after=59.0, status=429), 1) is not None


def test_jitter_on_the_servers_advice_stays_within_max_wait() -> None:
    policy = RetryPolicy(RetrySpec(max_wait_s=1.0))
    error = RateLimitError("429", retry_after=0.99, status=429)
    waits = [policy.next_wait(error, attempt=1) for _ in range(200)]
    assert all(w is not None and 0.99 <= w <= 1.0 for w in waits)


# -- in a pool: to another endpoint -------------------------------------------------------------

#: (case, error, from an endpoint that answered well before?, may another endpoint take it?)
FAILOVER: list[tuple[str, RequestError, bool, bool]] = [
    ("503", _status(503), True, True),
    ("connection reset", NetworkError("reset"), True, True),
    ("429 with a minute's advice", RateLimitError("429", retry_after=60.0, status=429), True, True),
    ("401 rejected key", _status(401, "invalid_api_key"), True, True),
    ("429 no quota", _status(429, "insufficient_quota"), True, True),
    ("400 from an endpoint on trial", _status(400, "no_db_connection"), False, True),
    ("404 from an endpoint on trial", _status(404, "model_not_found"), False, True),
    ("400 from a proven endpoint: the row's own", _status(400), True, False),
    ("content filter from a proven endpoint", _status(400, "content_filter"), True, False),
    ("too long a prompt, wherever", _status(400, "context_length_exceeded"), False, False),
    (
        "request above the TPM limit",
        _status(429, "rate_limit_exceeded", "Request too large"),
        False,
        False,
    ),
]


@pytest.mark.parametrize(
    ("case", "error", "proven", "fails_over"), FAILOVER, ids=[c[0] for c in FAILOVER]
)
def test_what_another_endpoint_may_take(
    case: str, error: RequestError, proven: bool, fails_over: bool
) -> None:
    assert may_fail_over(error, endpoint_proven=proven) is fails_over, case
    policy = RetryPolicy(RetrySpec(max_attempts=6, initial_wait_s=5.0))
    wait = policy.next_wait(error, 1, elsewhere=True, endpoint_proven=proven)
    if fails_over:
        # at once, a little apart: the endpoint that failed it holds (or is out) by itself
        assert wait is not None and 0.0 <= wait <= QUICK_RETRY_S, case
    elif is_retryable(error):
        assert wait is not None


def test_with_nowhere_else_to_go_a_pool_member_is_waited_for_like_one_endpoint() -> None:
    policy = RetryPolicy(RetrySpec(max_wait_s=120.0))
    advised = RateLimitError("429", retry_after=60.0, status=429)
    wait = policy.next_wait(advised, 1, elsewhere=False, endpoint_proven=True)
    assert wait is not None and wait >= 60.0
    assert policy.next_wait(_status(401), 1, elsewhere=False) is None


def test_failing_over_still_ends_after_max_attempts_and_rate_limit_patience() -> None:
    policy = RetryPolicy(RetrySpec(max_attempts=3, rate_limit_patience_s=100.0))
    assert policy.next_wait(_status(503), 2, elsewhere=True) is not None
    assert policy.next_wait(_status(503), 3, elsewhere=True) is None
    limited = RateLimitError("429", status=429)
    assert policy.next_wait(limited, 0, elsewhere=True, limited_for_s=99.0) is not None
    assert policy.next_wait(limited, 0, elsewhere=True, limited_for_s=101.0) is None
