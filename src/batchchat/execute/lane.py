"""One endpoint as the executor sends to it: its URL, headers and transport, its own
admission (limits learned from its own headers and 429s), and, in a pool, its name,
model mapping, prices, place in the pool and health."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from batchchat.execute.admission import Admission
from batchchat.execute.health import Health
from batchchat.execute.reask import AnswerPrice
from batchchat.execute.transport import HTTPRequest, Transport
from batchchat.models import ChatRequest, ChatResult, EndpointStats

Pricer = Callable[[ChatResult], float | None]


class Lane:
    """Where one attempt goes: an endpoint and everything that is its own."""

    __slots__ = (
        "admission",
        "cost_of",
        "display",
        "headers",
        "health",
        "models",
        "name",
        "price",
        "priority",
        "stats",
        "transport",
        "url",
        "weight",
    )

    def __init__(
        self,
        *,
        url: str,
        headers: Mapping[str, str],
        transport: Transport,
        admission: Admission,
        display: str,
        cost_of: Pricer | None = None,
        name: str | None = None,
        models: Mapping[str, str] | None = None,
        weight: float = 1.0,
        priority: int = 1,
        health: Health | None = None,
        price: AnswerPrice | None = None,
    ) -> None:
        self.url = url
        self.headers = {"content-type": "application/json", **headers}
        self.transport = transport
        self.admission = admission
        #: the endpoint as people know it (no credentials), for messages
        self.display = display
        self.cost_of = cost_of
        #: a pool member's prices of each answer (a re-asked row sums its answers')
        self.price = price
        #: the pool member's name (None: the job's single endpoint)
        self.name = name
        #: the request's model name → this endpoint's name for it
        self.models = dict(models or {})
        self.weight = weight
        self.priority = priority
        #: None for a single endpoint: it is never taken out, the run stops instead
        self.health = health
        #: its counters in the run's stats (pool members only)
        self.stats = EndpointStats()

    def request_for(self, request: ChatRequest, body: bytes) -> HTTPRequest:
        """The HTTP request of one attempt here; ``body`` is ``request.body`` encoded."""
        model = request.body.get("model")
        if self.models and isinstance(model, str) and model in self.models:
            body = orjson.dumps(_with_model(request.body, self.models[model]))
        return HTTPRequest(self.url, body, self.headers, request.stream)

    def ready_in_s(self, tokens: int, now: float) -> float:
        """Seconds until an attempt charging ``tokens`` may start here without waiting
        (0: now; inf: not before something ends, or never: removed)."""
        health = self.health
        if health is not None:
            cap = health.in_flight_cap(now)
            if cap == 0:
                return health.back_in_s(now)
            if cap is not None and self.admission.concurrency.in_use >= cap:
                return math.inf
        return self.admission.ready_in_s(tokens)

    def awaits_verdict(self, now: float) -> bool:
        """Whether it is on trial with attempts in flight and nothing else holding it (no
        429's hold): not saturated -- their answers will say whether it can take more."""
        health = self.health
        return (
            health is not None
            and health.on_trial
            and self.admission.concurrency.in_use > 0
            and self.admission.paused_until <= now
        )

    @property
    def alive(self) -> bool:
        """Whether it may still take attempts in this run (not removed)."""
        return self.health is None or self.health.removed is None

    def __repr__(self) -> str:  # never the headers: they hold the key
        return f"Lane(name={self.name!r}, url={self.display!r})"


def _with_model(body: Mapping[str, Any], model: str) -> dict[str, Any]:
    return {**body, "model": model}
