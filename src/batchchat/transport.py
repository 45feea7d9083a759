"""The transport seam: one method that sends one HTTP request and returns its response.

The executor talks only to a :class:`Transport`. :class:`MockTransport` turns a
plain function into a transport for unit tests (a fake network in a few lines,
like httpx's); the real aiohttp transport lives below it and is the only code
in batchchat that imports aiohttp's client. Library exceptions are converted
to batchchat's error types at exactly this boundary.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class HTTPRequest:
    """A POST of a JSON body to ``url``."""

    url: str
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    #: True when the body asks for ``stream: true`` (SSE response expected)
    stream: bool = False


@dataclass(frozen=True, slots=True)
class HTTPResponse:
    """A whole response: status, headers (lower-case names) and the complete body bytes.

    For streams the body is the raw SSE text, read to its end under the idle timeout.
    """

    status: int
    headers: Mapping[str, str]
    body: bytes


class Transport(Protocol):
    """Sends one request; raises a :class:`batchchat.errors.TransportError` when nothing usable
    came back. An HTTP error status is *not* an exception here: it is a response."""

    async def send(self, request: HTTPRequest) -> HTTPResponse: ...

    async def aclose(self) -> None: ...


Handler = Callable[[HTTPRequest], HTTPResponse | Awaitable[HTTPResponse]]


class MockTransport:
    """A transport whose network is a function from request to response (sync or async)."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler

    async def send(self, request: HTTPRequest) -> HTTPResponse:
        response = self._handler(request)
        if inspect.isawaitable(response):
            return await response
        return response

    async def aclose(self) -> None:
        return None
