"""A gateway's rate limits: LiteLLM proxy's calendar-minute counters, headers and 429s. Pure.

Mirrors LiteLLM 1.106 (``usage-based-routing-v2``, a deployment with ``rpm``/``tpm``), as
checked against a real proxy:

* the counters are keyed by the UTC minute (``HH-MM``): they start afresh at every
  wall-clock minute, not 60 s after a request;
* a request is refused when ``requests this minute + 1 >= rpm`` (so ``rpm: 60`` admits 59 a
  minute, and ``rpm: 1`` none) or when ``tokens this minute + its prompt tokens > tpm``;
* a request is counted when admitted; its tokens only after a successful answer, by the
  usage's ``total_tokens`` (a stream's headers are sent before its tokens are counted);
* answers carry ``x-ratelimit-{remaining,limit}-{tokens,requests}`` and no reset; remaining
  is ``limit - used``, not clamped (tokens may go negative), and requests never show 0;
* a refusal is a 429 whose only rate-limit header is ``llm_provider-retry-after: 60``
  (no ``retry-after``); other errors carry no rate-limit headers at all.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

from batchchat.simulator.ratelimit import Admission

MINUTE_S = 60
#: the only rate-limit header of a gateway's 429: the upstream's retry-after, prefixed
RETRY_AFTER_HEADER = "llm_provider-retry-after"


class GatewayLimiter:
    """RPM and TPM counted per calendar minute of ``now`` (epoch seconds); either may be absent."""

    def __init__(self, rpm: int | None, tpm: int | None, *, window_s: float = MINUTE_S) -> None:
        self.rpm = rpm
        self.tpm = tpm
        #: the length of a window: a minute, as LiteLLM's (shorter ones rehearse in seconds)
        self.window_s = window_s
        self._minute: int | None = None  # the window counted: epoch seconds // window_s
        self._requests = 0  # requests admitted in _minute
        self._tokens = 0  # total_tokens of the answers given in _minute

    def prefill(self, now: float) -> None:
        self._roll(now)
        self._requests = self.rpm - 1 if self.rpm else 0  # the most the gateway admits
        self._tokens = self.tpm or 0

    def admit(self, prompt_tokens: int, charge: int, now: float) -> Admission:
        """Count one request if the minute has room for it and its prompt; say why not."""
        self._roll(now)
        if self.rpm is not None and self._requests + 1 >= self.rpm:
            return self._refused("requests", self.rpm, self._requests, 1, now)
        if self.tpm is not None and self._tokens + prompt_tokens > self.tpm:
            return self._refused("tokens", self.tpm, self._tokens, prompt_tokens, now)
        self._requests += 1
        return Admission(True, 0.0, None, 0, 0, prompt_tokens)

    def charge_usage(self, tokens: int, now: float) -> None:
        self._roll(now)
        self._tokens += tokens

    def headers(self, now: float) -> dict[str, str]:
        """The headers of an answer, in the order LiteLLM writes them."""
        self._roll(now)
        headers = {}
        if self.tpm is not None:
            headers["x-ratelimit-remaining-tokens"] = str(self.tpm - self._tokens)
            headers["x-ratelimit-limit-tokens"] = str(self.tpm)
        if self.rpm is not None:
            headers["x-ratelimit-remaining-requests"] = str(self.rpm - self._requests)
            headers["x-ratelimit-limit-requests"] = str(self.rpm)
        return headers

    def error_headers(self, now: float) -> dict[str, str]:
        return {}

    def refusal(
        self, model: str, admission: Admission, now: float
    ) -> tuple[dict[str, Any], dict[str, str]]:
        self._roll(now)
        return self.refusal_body(model), {RETRY_AFTER_HEADER: f"{self.window_s:g}"}

    def refusal_body(self, model: str) -> dict[str, Any]:
        """LiteLLM's "No deployments available" 429, with this minute's counters in it."""
        deployment = hashlib.sha256(model.encode()).hexdigest()  # a model id, as LiteLLM's
        usage = (
            f"{{'current_tpm': {self._tokens}, 'tpm_limit': {_limit(self.tpm)}, "
            f"'current_rpm': {self._requests}, 'rpm_limit': {_limit(self.rpm)}}}"
        )
        message = (
            "litellm.RateLimitError: No deployments available for selected model. "
            f"Passed model={model}. Deployments={{'{deployment}': {usage}}}\n\n"
            f"LiteLLM: model group '{model}' failed with the error above. "
            "No fallback was attempted."
        )
        error = {"message": message, "type": "throttling_error", "param": None, "code": "429"}
        return {"error": error}

    def _roll(self, now: float) -> None:
        minute = math.floor(now / self.window_s)
        if minute != self._minute:
            self._minute, self._requests, self._tokens = minute, 0, 0

    def _refused(self, kind: str, limit: int, used: int, requested: int, now: float) -> Admission:
        never = kind == "tokens" and requested > limit
        wait = math.inf if never else self.window_s - now % self.window_s  # until the next one
        return Admission(False, wait, kind, limit, used, requested)


def _limit(limit: int | None) -> str:
    return "inf" if limit is None else str(limit)  # LiteLLM prints an unset limit as float inf
