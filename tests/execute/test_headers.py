"""What a server's headers say about its limits: durations, retry-after spellings, quotas."""

from __future__ import annotations

import pytest

from batchchat.execute.headers import parse_duration, read_quota, retry_after_s, wait_for_room_s

DURATIONS = [
    ("1s", 1.0),
    ("20ms", 0.02),
    ("6m0s", 360.0),
    ("1m30.5s", 90.5),
    ("2h0m1s", 7201.0),
    ("8.64s", 8.64),
    ("250us", 0.00025),
    ("0s", 0.0),
    ("0.5", 0.5),  # plain seconds
    ("  3  ", 3.0),
    ("1700000030", 30.0),  # a Unix time, 30 s after "now"
    ("", None),
    ("soon", None),
    ("5 s", None),
    ("1x", None),
    ("s", None),
    (None, None),
]


@pytest.mark.parametrize(("text", "expected"), DURATIONS)
def test_reset_durations_are_parsed(text: str | None, expected: float | None) -> None:
    parsed = parse_duration(text, now=1_700_000_000.0)
    assert parsed == pytest.approx(expected) if expected is not None else parsed is None


def _rl(**values: str) -> dict[str, str]:
    return {f"x-ratelimit-{key.replace('_', '-')}": value for key, value in values.items()}


ROOM_CASES = [
    # (headers, tokens needed, seconds until the server has room)
    ({}, 100, 0.0),
    (_rl(remaining_requests="5", reset_requests="6s", limit_requests="600"), 0, 0.0),
    # out of requests: one request's share of the minute, no later than reset
    (_rl(remaining_requests="0", reset_requests="6s", limit_requests="600"), 0, 0.1),
    (_rl(remaining_requests="0", reset_requests="20ms", limit_requests="10"), 0, 0.02),
    (_rl(remaining_requests="0", reset_requests="1s"), 0, 1.0),  # no limit: wait for reset
    (_rl(remaining_requests="0", limit_requests="10"), 0, 0.0),  # no timing advice at all
    (_rl(remaining_tokens="100", reset_tokens="30s", limit_tokens="60000"), 500, 0.4),
    (_rl(remaining_tokens="1000", reset_tokens="30s", limit_tokens="60000"), 500, 0.0),
    (
        _rl(
            remaining_requests="0",
            reset_requests="50ms",
            limit_requests="6000",
            remaining_tokens="0",
            reset_tokens="2s",
            limit_tokens="600000",
        ),
        1000,
        0.1,
    ),
    (_rl(remaining_requests="lots", reset_requests="1s"), 0, 0.0),
]


@pytest.mark.parametrize(("headers", "needed", "expected"), ROOM_CASES)
def test_wait_for_room_from_rate_limit_headers(
    headers: dict[str, str], needed: int, expected: float
) -> None:
    assert wait_for_room_s(headers, tokens_needed=needed) == pytest.approx(expected)


RETRY_AFTER_CASES = [
    ({}, None),
    ({"retry-after": "2"}, 2.0),
    ({"retry-after": "0.5"}, 0.5),
    ({"retry-after-ms": "250"}, 0.25),
    ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),  # the finer one wins
    ({"retry-after": "Tue, 14 Nov 2023 22:13:50 GMT"}, 30.0),  # an HTTP date, 30 s ahead
    ({"llm_provider-retry-after": "60"}, 60.0),  # LiteLLM's, with no plain retry-after
    ({"x-provider-retry-after-ms": "1500"}, 1.5),
    ({"retry-after": "soon"}, None),
    ({"retry-after": "-3"}, 0.0),
    ({"retry-after": "nan"}, None),
]


@pytest.mark.parametrize(("headers", "expected"), RETRY_AFTER_CASES)
def test_retry_after_in_every_spelling(headers: dict[str, str], expected: float | None) -> None:
    advice = retry_after_s(headers, now=1_700_000_000.0)
    assert advice == pytest.approx(expected) if expected is not None else advice is None


def test_a_quota_without_a_reset_is_read_as_such() -> None:
    quota = read_quota(_rl(limit_requests="60", remaining_requests="12"), "requests")
    assert (quota.limit, quota.remaining, quota.reset_s) == (60.0, 12.0, None)
    assert not read_quota({}, "tokens").known
