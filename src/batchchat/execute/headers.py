"""What a server's headers say about its limits. Pure: time is passed in.

Servers spell the same advice many ways: ``retry-after`` (seconds or an HTTP date),
``retry-after-ms``, provider-prefixed copies such as LiteLLM's ``llm_provider-retry-after``;
``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` with resets written as ``1s``,
``6m0s``, ``20ms``, plain seconds or a Unix time. Some send limits and remaining counts
but no reset at all (LiteLLM's calendar-minute windows).
"""

from __future__ import annotations

import email.utils
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|h|m|s)")
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
#: plain numbers above this are Unix timestamps, not durations
_EPOCH_FLOOR = 1e9
#: the window of x-ratelimit limits (RPM and TPM)
WINDOW_S = 60.0


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


def retry_after_s(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """The server's advice in seconds, however spelled (lower-case header names).

    ``retry-after-ms`` first, then ``retry-after`` (seconds or an HTTP date), then a
    provider-prefixed copy of either (``llm_provider-retry-after``).
    """
    for name in ("retry-after-ms", "retry-after"):
        advice = _advice(name, headers.get(name), now)
        if advice is not None:
            return advice
    for name, value in headers.items():
        if name.endswith(("-retry-after-ms", "-retry-after")):
            advice = _advice(name, value, now)
            if advice is not None:
                return advice
    return None


def _advice(name: str, value: str | None, now: float | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value) / (1000.0 if name.endswith("-ms") else 1.0)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


@dataclass(frozen=True, slots=True)
class Quota:
    """One ``x-ratelimit-*`` family (requests or tokens): what the server announced."""

    limit: float | None
    remaining: float | None
    #: seconds until the window frees up, when the server says
    reset_s: float | None

    @property
    def known(self) -> bool:
        return self.limit is not None or self.remaining is not None


def read_quota(headers: Mapping[str, str], kind: str) -> Quota:
    """The ``x-ratelimit-*-{kind}`` headers (``kind``: requests or tokens)."""
    return Quota(
        _number(headers.get(f"x-ratelimit-limit-{kind}")),
        _number(headers.get(f"x-ratelimit-remaining-{kind}")),
        parse_duration(headers.get(f"x-ratelimit-reset-{kind}")),
    )


def has_rate_limit_headers(headers: Mapping[str, str]) -> bool:
    return "x-ratelimit-remaining-requests" in headers or "x-ratelimit-remaining-tokens" in headers


def wait_for_room_s(headers: Mapping[str, str], *, tokens_needed: float = 0.0) -> float:
    """Seconds until the server has room for one more request (0: room now), per its headers.

    Servers disagree on what ``reset`` means: OpenAI's is the time until the whole window
    is free again, others' the time until the oldest charge expires. Both agree with
    "the missing amount at the per-minute rate, but no later than reset", so that is used.
    Without a reset header there is no timing advice here.
    """
    wait = 0.0
    requests = read_quota(headers, "requests")
    if requests.remaining is not None and requests.remaining < 1:
        wait = _refill_s(requests, 1.0 - requests.remaining)
    tokens = read_quota(headers, "tokens")
    if tokens.remaining is not None and tokens.remaining < tokens_needed:
        wait = max(wait, _refill_s(tokens, tokens_needed - tokens.remaining))
    return wait


def _refill_s(quota: Quota, missing: float) -> float:
    if quota.reset_s is None:
        return 0.0  # no timing advice: a 429, if it comes, will say
    if not quota.limit:
        return quota.reset_s
    return min(quota.reset_s, missing * WINDOW_S / quota.limit)


def _number(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None
