"""Seeded misbehaviour: which fault (if any) hits a request, and how long it waits. Pure.

A fault is a function of ``(fault seed, request key, how many times that
request arrived before)``, not of arrival order, so a run with concurrency
sees the same faults on the same rows each time, and a retry of a failed row
draws again instead of failing forever.
"""

from __future__ import annotations

import hashlib
import math
import random

from batchchat.spec import FaultSpec, LatencySpec

#: the fault kinds, in the order their probabilities are stacked (new kinds go last, so a
#: seed keeps drawing the same faults of the older kinds)
FAULT_KINDS = (
    "http_500",
    "http_502",
    "http_503",
    "http_429",
    "drop",
    "truncate",
    "stall",
    "stream_error",
    "forced_token",
    "usage_as_strings",
    "usage_as_floats",
    "empty_choices",
    "no_message",
    "trickle",
)
#: kinds that only make sense for some requests → what the request needs for them
_NEEDS = {
    "stream_error": "stream",  # an error event needs a stream to live in
    "forced_token": "logprobs",
    "usage_as_strings": "usage",  # a stream has usage only with include_usage
    "usage_as_floats": "usage",
}


class FaultPlan:
    """Decides the fault of each request arrival from the seed and the probabilities."""

    def __init__(self, spec: FaultSpec) -> None:
        self.spec = spec
        self._stacked: list[tuple[float, str]] = []  # (cumulative probability, kind)
        total = 0.0
        for kind in FAULT_KINDS:
            total += getattr(spec, kind)
            self._stacked.append((total, kind))
        self.active = total > 0

    def pick(
        self, key: str, arrival: int, stream: bool, *, logprobs: bool = False, usage: bool = True
    ) -> str | None:
        """The fault for the ``arrival``-th (0-based) arrival of request ``key``, or None.

        A kind drawn for a request it cannot apply to (see ``_NEEDS``) lets it go through.
        """
        if not self.active:
            return None
        seed = f"{self.spec.seed}\x1f{key}\x1f{arrival}".encode()
        draw = int.from_bytes(hashlib.blake2b(seed, digest_size=8).digest(), "big") / 2**64
        has = {"stream": stream, "logprobs": logprobs, "usage": usage}
        for bound, kind in self._stacked:
            if draw < bound:
                need = _NEEDS.get(kind)
                return kind if need is None or has[need] else None
        return None


class LatencyModel:
    """Samples the delay before an answer (before the first token, for streams)."""

    def __init__(self, spec: LatencySpec, seed: int) -> None:
        self.spec = spec
        self._rng = random.Random(seed)

    def sample(self) -> float:
        """Seconds to wait; never negative."""
        spec = self.spec
        mean = spec.mean_ms / 1000
        jitter = spec.jitter_ms / 1000
        if mean <= 0 and jitter <= 0:
            return 0.0
        if spec.distribution == "uniform":
            return max(0.0, self._rng.uniform(mean - jitter, mean + jitter))
        if spec.distribution == "exponential":
            return self._rng.expovariate(1 / mean) if mean > 0 else 0.0
        if spec.distribution == "lognormal" and mean > 0:
            sigma = jitter / mean
            # mu chosen so the distribution's mean is `mean`
            return self._rng.lognormvariate(math.log(mean) - sigma * sigma / 2, sigma)
        return mean
