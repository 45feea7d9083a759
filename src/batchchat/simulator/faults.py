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

from batchchat.simulator.answers import find_labels
from batchchat.simulator.validate import SimRequest
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
    "invalid_json",
    "schema_mismatch",
    "off_label",
)
#: faults of the answer itself: a complete 200 whose content is wrong
ANSWER_FAULTS = frozenset({"invalid_json", "schema_mismatch", "off_label"})
#: faults whose 200 still carries the whole answer: it counts once it is all sent
ANSWERING_FAULTS = frozenset(
    {"forced_token", "usage_as_strings", "usage_as_floats", "trickle", *ANSWER_FAULTS}
)
#: kinds that only make sense for some requests → what the request needs for them
_NEEDS = {
    "stream_error": "stream",  # an error event needs a stream to live in
    "forced_token": "logprobs",
    "usage_as_strings": "usage",  # a stream has usage only with include_usage
    "usage_as_floats": "usage",
    "invalid_json": "json",  # only a JSON answer can fail to parse
    "schema_mismatch": "schema",
    "off_label": "labels",
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

    def pick_for(self, key: str, arrival: int, sim: SimRequest) -> str | None:
        """The fault for this arrival of the validated request ``sim`` (see :meth:`pick`)."""
        if not self.active:
            return None
        return self.pick(
            key,
            arrival,
            sim.stream,
            logprobs=sim.logprobs,
            usage=not sim.stream or sim.include_usage,
            json=sim.response_format != "text",
            schema=sim.response_format == "json_schema" and bool(sim.schema),
            labels=bool(find_labels(sim.messages)),
        )

    def pick(
        self,
        key: str,
        arrival: int,
        stream: bool,
        *,
        logprobs: bool = False,
        usage: bool = True,
        json: bool = False,
        schema: bool = False,
        labels: bool = False,
    ) -> str | None:
        """The fault for the ``arrival``-th (0-based) arrival of request ``key``, or None.

        A kind drawn for a request it cannot apply to (see ``_NEEDS``) lets it go through.
        """
        if not self.active:
            return None
        seed = f"{self.spec.seed}\x1f{key}\x1f{arrival}".encode()
        draw = int.from_bytes(hashlib.blake2b(seed, digest_size=8).digest(), "big") / 2**64
        has = {
            "stream": stream,
            "logprobs": logprobs,
            "usage": usage,
            "json": json,
            "schema": schema,
            "labels": labels,
        }
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
