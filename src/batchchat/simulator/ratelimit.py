"""Sliding-window RPM/TPM limits, OpenAI's ``x-ratelimit-*`` headers and 429s. Pure.

Time is passed in. A request is admitted when, within the last 60 s, the
requests so far plus one stay within RPM and the tokens so far plus its charge
(prompt + max output tokens × n, as OpenAI charges at admission) stay within
TPM. A rejected request is not charged. ``reset`` is the time until capacity starts to free
(the oldest charge in the window expires); a 429's ``retry-after`` is the time
until *this* request would fit.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol

WINDOW_S = 60.0
#: how many charges a prefilled token window is split into (evenly spread over the window)
_PREFILL_SLICES = 600


class SlidingWindow:
    """Charges made in the last ``window`` seconds, against a limit."""

    def __init__(self, limit: int, window: float = WINDOW_S) -> None:
        self.limit = limit
        self.window = window
        self._charges: deque[tuple[float, int]] = deque()  # (time charged, amount), oldest first
        self._used = 0  # sum of the amounts in _charges

    def prefill(self, now: float) -> None:
        """Fill the window to its limit with charges spread evenly over the past window.

        The oldest slice expires ``window / slices`` from now, so capacity frees at
        exactly the limit's rate: the steady state of a long job.
        """
        slices = min(self.limit, _PREFILL_SLICES)
        step = self.window / slices
        base, extra = divmod(self.limit, slices)
        for i in range(slices):
            self._charges.append((now - self.window + (i + 1) * step, base + (i < extra)))
        self._used = self.limit

    def used(self, now: float) -> int:
        charges = self._charges
        while charges and charges[0][0] + self.window <= now:
            self._used -= charges.popleft()[1]
        return self._used

    def wait_for(self, amount: int, now: float) -> float:
        """Seconds until ``amount`` fits (0 when it fits now; inf when it never can)."""
        if amount > self.limit:
            return math.inf
        excess = self.used(now) + amount - self.limit
        if excess <= 0:
            return 0.0
        for charged_at, charged in self._charges:  # oldest first: they expire in this order
            excess -= charged
            if excess <= 0:
                return charged_at + self.window - now
        return 0.0  # unreachable: the charges add up to at least the excess

    def charge(self, amount: int, now: float) -> None:
        self.used(now)
        self._charges.append((now, amount))
        self._used += amount

    def reset_after(self, now: float) -> float:
        """Seconds until the oldest charge expires (0 when the window is empty)."""
        self.used(now)
        return self._charges[0][0] + self.window - now if self._charges else 0.0


@dataclass(frozen=True, slots=True)
class Admission:
    admitted: bool
    #: seconds until the request would fit (0 when admitted; inf when it never can)
    retry_after: float
    #: which limit refused it: "requests" or "tokens" (None when admitted)
    limit_type: str | None
    limit: int
    used: int
    requested: int


class Limiter(Protocol):
    """What the server asks of a rate-limit style (OpenAI's here, a gateway's in ``gateway``)."""

    def prefill(self, now: float) -> None:
        """Start with the limits used up, as in the middle of a long job."""

    def admit(self, prompt_tokens: int, charge: int, now: float) -> Admission:
        """Count one request (``charge``: prompt + max output tokens × n) if there is room."""

    def charge_usage(self, tokens: int, now: float) -> None:
        """Count the usage ``total_tokens`` of an answer (styles that charge after the fact)."""

    def headers(self, now: float) -> dict[str, str]:
        """The rate-limit headers of an answer."""

    def error_headers(self, now: float) -> dict[str, str]:
        """The rate-limit headers of an error reply (not the limiter's own 429)."""

    def refusal(
        self, model: str, admission: Admission, now: float
    ) -> tuple[dict[str, Any], dict[str, str]]:
        """The body and headers of the 429 of a refused ``admission``."""


class RateLimiter:
    """OpenAI's style: RPM and TPM sliding windows together; either may be absent."""

    def __init__(self, rpm: int | None, tpm: int | None) -> None:
        self.requests = SlidingWindow(rpm) if rpm else None
        self.tokens = SlidingWindow(tpm) if tpm else None

    def prefill(self, now: float) -> None:
        for window in (self.requests, self.tokens):
            if window is not None:
                window.prefill(now)

    def admit(self, prompt_tokens: int, charge: int, now: float) -> Admission:
        """Charge one request of ``charge`` tokens if both windows have room; say why not."""
        checks = [(self.requests, 1, "requests"), (self.tokens, charge, "tokens")]
        for window, amount, name in checks:
            if window is not None:
                wait = window.wait_for(amount, now)
                if wait > 0:
                    return Admission(False, wait, name, window.limit, window.used(now), amount)
        for window, amount, _ in checks:
            if window is not None:
                window.charge(amount, now)
        return Admission(True, 0.0, None, 0, 0, charge)

    def headers(self, now: float) -> dict[str, str]:
        """``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` for the configured limits."""
        headers = {}
        for window, name in ((self.requests, "requests"), (self.tokens, "tokens")):
            if window is not None:
                headers[f"x-ratelimit-limit-{name}"] = str(window.limit)
                headers[f"x-ratelimit-remaining-{name}"] = str(
                    max(0, window.limit - window.used(now))
                )
                headers[f"x-ratelimit-reset-{name}"] = format_duration(window.reset_after(now))
        return headers

    def charge_usage(self, tokens: int, now: float) -> None:
        pass  # OpenAI charges at admission only

    def error_headers(self, now: float) -> dict[str, str]:
        return self.headers(now)  # OpenAI sends them on every reply

    def refusal(
        self, model: str, admission: Admission, now: float
    ) -> tuple[dict[str, Any], dict[str, str]]:
        headers = self.headers(now)
        if not math.isinf(admission.retry_after):  # waiting cannot help a request too large
            headers.update(retry_headers(admission.retry_after))
        return rate_limited_body(model, admission), headers


def rate_limited_body(model: str, admission: Admission) -> dict[str, Any]:
    """A 429 of the RPM/TPM limits; "Request too large" when waiting can never help."""
    kind = admission.limit_type or "requests"
    name = "requests per min (RPM)" if kind == "requests" else "tokens per min (TPM)"
    where = f"for {model} in organization org-simulator on {name}"
    if math.isinf(admission.retry_after):
        message = (
            f"Request too large {where}: Limit {admission.limit}, Requested "
            f"{admission.requested}. The input or output tokens must be reduced in order to "
            "run successfully."
        )
    else:
        message = (
            f"Rate limit reached {where}: Limit {admission.limit}, Used {admission.used}, "
            f"Requested {admission.requested}. "
            f"Please try again in {format_duration(admission.retry_after)}."
        )
    error = {"message": message, "type": kind, "param": None, "code": "rate_limit_exceeded"}
    return {"error": error}


def retry_headers(wait: float) -> dict[str, str]:
    """``retry-after`` (whole seconds, at least 1) and the precise ``retry-after-ms``."""
    wait = min(wait, WINDOW_S)
    return {
        "retry-after": str(max(1, math.ceil(wait))),
        "retry-after-ms": str(math.ceil(wait * 1000)),
    }


def format_duration(seconds: float) -> str:
    """A duration the way OpenAI writes resets: ``0s``, ``20ms``, ``1s``, ``8.64s``, ``6m0s``."""
    if seconds <= 0:
        return "0s"
    if seconds < 1:
        return f"{max(1, math.ceil(seconds * 1000))}ms"
    milliseconds = math.ceil(seconds * 1000)
    hours, rest = divmod(milliseconds, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"
