"""One request on its way through the executor: its encoded HTTP request and what its
attempts did (and, in a pool, where they went)."""

from __future__ import annotations

import math

from batchchat.errors import RequestError
from batchchat.execute.lane import Lane
from batchchat.execute.reask import Asked
from batchchat.execute.transport import HTTPRequest
from batchchat.models import ChatRequest


class Job:
    """One request on its way: the encoded HTTP request and what its attempts did."""

    __slots__ = (
        "answered_by",
        "asked",
        "attempts",
        "counted",
        "first_sent",
        "http",
        "lane",
        "last_error",
        "last_sent",
        "limited_since",
        "refused",
        "request",
        "route_key",
        "status",
    )

    def __init__(self, request: ChatRequest, http: HTTPRequest, asked: Asked | None = None) -> None:
        self.request = request
        self.http = http
        #: the row's earlier asks and answers, when its job re-asks (None: first ask)
        self.asked = asked
        #: attempts sent
        self.attempts = 0
        #: attempts that count against retry.max_attempts (rate-limited ones do not)
        self.counted = 0
        #: clock time of the first send
        self.first_sent = 0.0
        #: HTTP status of the last attempt (0: no response)
        self.status = 0
        #: clock time of the first 429 of the current run of them (inf: none)
        self.limited_since = math.inf
        # -- in a pool only --
        #: the lane of the last attempt, when it went out, and how it failed
        self.lane: Lane | None = None
        self.last_sent = 0.0
        self.last_error: RequestError | None = None
        #: names of the endpoints that refused it with a client error (never again there)
        self.refused: frozenset[str] | None = None
        #: what keeps it on one endpoint (``routing.sticky``), once worked out
        self.route_key: str | None = None
        #: a re-ask's: the endpoint that gave the row the answer it holds
        self.answered_by: str | None = None

    @property
    def body(self) -> bytes:
        """The request body as encoded once (a lane may send another model name)."""
        return self.http.body
