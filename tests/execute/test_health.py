"""One pool endpoint's health as a state machine: in, out, probing, removed. Pure: time is given."""

from __future__ import annotations

import math

import pytest

from batchchat.errors import (
    AuthenticationError,
    ClientError,
    ConnectError,
    ContextLengthError,
    DeadlineExceeded,
    QuotaExceededError,
    RateLimitError,
    RequestError,
    ServerError,
)
from batchchat.execute.health import PROVING_IN_FLIGHT, SUSPECT_ROWS, Health
from batchchat.spec import RoutingSpec

ROUTING = RoutingSpec(failures=3, cooldown_s=5, max_cooldown_s=12)


def server_error() -> ServerError:
    return ServerError("HTTP 503", status=503)


def client_error(status: int = 400) -> ClientError:
    return ClientError(f"HTTP {status}: No connected db.", status=status)


def proven() -> Health:
    health = Health(ROUTING)
    health.succeeded()
    return health


def test_a_new_endpoint_proves_itself_a_few_attempts_at_a_time() -> None:
    health = Health(ROUTING)
    assert health.in_flight_cap(0.0) == PROVING_IN_FLIGHT
    health.succeeded()
    assert health.in_flight_cap(0.0) is None  # its admission decides from now on
    assert health.proven


def test_repeated_failures_put_it_out_then_one_probe_decides() -> None:
    health = proven()
    assert not health.failed(server_error(), sent_at=1.0, now=1.0)
    assert not health.failed(DeadlineExceeded("slow"), sent_at=1.0, now=1.1)
    assert health.failed(ConnectError("refused"), sent_at=1.0, now=2.0)  # the 3rd in a row
    assert health.in_flight_cap(6.9) == 0 and health.back_in_s(2.0) == 5.0
    assert health.in_flight_cap(7.0) == 1  # the cool-down is over: one probe at a time
    # a failed probe: out again, for twice as long; then once more, capped
    assert health.failed(server_error(), sent_at=7.0, now=7.5)
    assert health.back_in_s(7.5) == 10.0
    assert health.failed(server_error(), sent_at=17.5, now=18.0)
    assert health.back_in_s(18.0) == 12.0  # max_cooldown_s
    assert health.cooldowns == 3
    health.succeeded()  # a probe that works: in again, the cool-down starts over
    assert health.in_flight_cap(30.0) is None
    for _ in range(3):
        health.failed(server_error(), sent_at=31.0, now=31.0)
    assert health.back_in_s(31.0) == 5.0


def test_failures_of_attempts_sent_before_it_went_out_count_once() -> None:
    health = proven()
    for _ in range(3):
        health.failed(server_error(), sent_at=1.0, now=1.0)
    assert health.cooldowns == 1
    # the rest of the burst, sent before it went out, does not put it out again
    assert not health.failed(server_error(), sent_at=0.9, now=3.0)
    assert health.cooldowns == 1 and health.back_in_s(3.0) == 3.0


def test_a_success_in_between_resets_the_count() -> None:
    health = proven()
    for _ in range(10):
        health.failed(server_error(), sent_at=1.0, now=1.0)
        health.failed(server_error(), sent_at=1.0, now=1.0)
        health.succeeded()
    assert health.cooldowns == 0


@pytest.mark.parametrize(
    "error",
    [
        AuthenticationError("HTTP 401 invalid key", status=401),
        AuthenticationError("HTTP 403 not allowed", status=403),
        QuotaExceededError("insufficient_quota", status=429),
    ],
)
def test_a_rejected_key_or_no_quota_removes_it_at_once(error: RequestError) -> None:
    health = proven()
    assert health.failed(error, sent_at=1.0, now=1.0)
    assert health.removed is not None and type(error).__name__ in health.removed
    assert health.in_flight_cap(1e9) == 0 and health.back_in_s(0.0) == math.inf
    assert not health.failed(server_error(), sent_at=2.0, now=2.0)  # nothing more to say


def test_a_429_is_its_admissions_business() -> None:
    health = proven()
    for _ in range(10):
        assert not health.failed(RateLimitError("429", status=429), sent_at=1.0, now=1.0)
    assert health.in_flight_cap(1.0) is None and health.cooldowns == 0


def test_client_errors_before_any_success_make_it_suspect() -> None:
    health = Health(ROUTING)
    for _ in range(SUSPECT_ROWS - 1):
        assert not health.failed(client_error(), sent_at=1.0, now=1.0)
    assert health.failed(client_error(), sent_at=1.0, now=1.0)
    assert health.removed is not None
    assert "No connected db." in health.removed and "check its key" in health.removed


def test_client_errors_are_the_rows_own_once_it_answered_well() -> None:
    health = proven()
    for _ in range(SUSPECT_ROWS * 3):
        assert not health.failed(client_error(), sent_at=1.0, now=1.0)
    assert health.removed is None


def test_different_client_errors_are_no_pattern_and_too_long_a_prompt_is_never_one() -> None:
    health = Health(ROUTING)
    for status in (400, 404, 400, 404, 400):
        health.failed(client_error(status), sent_at=1.0, now=1.0)
    for _ in range(SUSPECT_ROWS * 2):
        health.failed(ContextLengthError("too long", status=400), sent_at=1.0, now=1.0)
    assert health.removed is None


def test_nothing_listening_removes_it_after_its_first_connections_fail() -> None:
    health = Health(ROUTING)
    assert not health.failed(ConnectError("refused"), sent_at=1.0, now=1.0)
    assert not health.failed(ConnectError("refused"), sent_at=1.0, now=1.0)
    assert health.failed(ConnectError("refused"), sent_at=1.0, now=1.0)
    assert health.removed is not None and health.removed.startswith("no connection")


def test_a_server_that_went_away_is_cooled_down_then_removed_after_a_minute() -> None:
    health = proven()
    now = 0.0
    while health.removed is None and now < 200:
        health.failed(ConnectError("refused"), sent_at=now, now=now)
        now += 4.0
    assert health.removed is not None and "stopped answering" in health.removed
    assert 60.0 <= now <= 68.0 and health.cooldowns >= 2


def test_advice_longer_than_max_wait_puts_it_out_for_as_long_as_asked() -> None:
    health = Health(ROUTING, max_wait_s=120)
    health.succeeded()
    assert not health.failed(RateLimitError("429", status=429, retry_after=60), sent_at=0, now=0)
    assert health.in_flight_cap(0.0) is None  # its admission holds it for a minute
    assert health.failed(ServerError("503", status=503, retry_after=3600), sent_at=0, now=0)
    assert health.back_in_s(0.0) == 3600 and health.cooldowns == 1
    assert health.in_flight_cap(3600.0) == 1  # then one probe
